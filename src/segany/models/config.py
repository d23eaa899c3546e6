"""Architecture configurations: one frozen dataclass per encoder family, one for the whole model.

The prompt encoder and mask decoder are the same for every SAM variant, so only the image
encoder is configurable; the constants below are the values the official builders fix.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

IMAGE_SIZE = 1024
PROMPT_EMBED_DIM = 256
VIT_PATCH_SIZE = 16
EMBEDDING_SIZE = IMAGE_SIZE // VIT_PATCH_SIZE  # 64x64 image embedding
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ViTConfig:
    """SAM's plain ViT image encoder (ViT-B/L/H and smaller variants)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    mlp_ratio: float = 4.0
    img_size: int = IMAGE_SIZE
    patch_size: int = VIT_PATCH_SIZE
    out_chans: int = PROMPT_EMBED_DIM


@dataclass(frozen=True)
class TinyViTConfig:
    """MobileSAM's TinyViT image encoder."""

    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_sizes: tuple[int, ...]
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    img_size: int = IMAGE_SIZE
    in_chans: int = 3
    num_classes: int = 1000
    out_chans: int = PROMPT_EMBED_DIM


EncoderConfig = Union[ViTConfig, TinyViTConfig]


@dataclass(frozen=True)
class SamConfig:
    """A whole Segment Anything model: a named image encoder plus the shared prompt/decoder path."""

    name: str
    encoder: EncoderConfig
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
