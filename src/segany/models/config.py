"""Architecture configurations: one frozen dataclass per encoder family, one for the whole model.

Every size the networks and the code around them use comes from here: the input image side and
patch size from the encoder config, the image-embedding grid and the low-res mask side derived
from them (:class:`SamConfig` properties), the prompt / decoder widths from :class:`SamConfig`.
The defaults are the values the official builders fix for every SAM and MobileSAM variant.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from ..errors import ConfigError

DEFAULT_IMAGE_SIZE = 1024
DEFAULT_PATCH_SIZE = 16
DEFAULT_PROMPT_EMBED_DIM = 256
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
TINY_VIT_STRIDE = 16  # TinyViT's stem (/4) and two stride-2 mergings: the grid of the embedding


@dataclass(frozen=True)
class ViTConfig:
    """SAM's plain ViT image encoder (ViT-B/L/H and smaller variants)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    mlp_ratio: float = 4.0
    img_size: int = DEFAULT_IMAGE_SIZE
    patch_size: int = DEFAULT_PATCH_SIZE
    out_chans: int = DEFAULT_PROMPT_EMBED_DIM


@dataclass(frozen=True)
class TinyViTConfig:
    """MobileSAM's TinyViT image encoder (its total stride is fixed: ``patch_size`` is 16)."""

    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_sizes: tuple[int, ...]
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    img_size: int = DEFAULT_IMAGE_SIZE
    in_chans: int = 3
    num_classes: int = 1000
    out_chans: int = DEFAULT_PROMPT_EMBED_DIM

    @property
    def patch_size(self) -> int:
        return TINY_VIT_STRIDE


@dataclass(frozen=True)
class HieraConfig:
    """SAM 2's image encoder: a Hiera trunk, the FPN neck with sine position encodings, and the scalp.

    The fields are the arguments of the official ``Hiera`` (trunk), ``FpnNeck`` and its
    ``PositionEmbeddingSine`` (``position_*``), and ``ImageEncoder.scalp`` (how many of the
    lowest-resolution levels are dropped after the neck). Defaults are ``sam2.1_hiera_t``'s.
    ``backbone_channel_list`` (the trunk's stage widths, deepest first) is derived from the trunk
    arguments and checked against them, as the official ``ImageEncoder`` does.
    """

    embed_dim: int = 96
    num_heads: int = 1
    stages: tuple[int, ...] = (1, 2, 7, 2)
    global_att_blocks: tuple[int, ...] = (5, 7, 9)
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (7, 7)
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    q_pool: int = 3
    q_stride: tuple[int, int] = (2, 2)
    dim_mul: float = 2.0
    head_mul: float = 2.0
    backbone_channel_list: tuple[int, ...] = (768, 384, 192, 96)
    d_model: int = DEFAULT_PROMPT_EMBED_DIM
    fpn_top_down_levels: tuple[int, ...] = (2, 3)
    fpn_interp_model: str = "nearest"
    position_num_pos_feats: int = DEFAULT_PROMPT_EMBED_DIM
    position_temperature: float = 10000
    position_normalize: bool = True
    position_scale: float | None = None
    scalp: int = 1
    img_size: int = DEFAULT_IMAGE_SIZE

    def __post_init__(self) -> None:
        if len(self.stages) != len(self.window_spec):
            raise ConfigError(f"stages {self.stages} and window_spec {self.window_spec} must have the same length")
        if not 0 <= self.q_pool < len(self.stages):
            raise ConfigError(f"q_pool must be in [0, {len(self.stages) - 1}], got {self.q_pool}")
        if self.stage_dims[::-1] != tuple(self.backbone_channel_list):
            raise ConfigError(
                f"backbone_channel_list {tuple(self.backbone_channel_list)} does not match the trunk's "
                f"stage widths {self.stage_dims[::-1]} (deepest first)"
            )
        if self.position_num_pos_feats != self.d_model or self.d_model % 2:
            raise ConfigError("position_num_pos_feats must equal d_model, an even number")
        if not 0 <= self.scalp < len(self.stages):
            raise ConfigError(f"scalp must be in [0, {len(self.stages) - 1}], got {self.scalp}")
        if self.fpn_interp_model not in ("nearest", "bilinear", "bicubic"):
            raise ConfigError(f"unknown fpn_interp_model {self.fpn_interp_model!r}")
        if self.img_size % self.feature_strides[-1]:
            raise ConfigError(f"img_size {self.img_size} is not a multiple of the stride {self.feature_strides[-1]}")

    @property
    def stage_dims(self) -> tuple[int, ...]:
        """Width of each trunk stage, highest resolution first."""
        dims = [self.embed_dim]
        for _ in self.stages[1:]:
            dims.append(int(dims[-1] * self.dim_mul))
        return tuple(dims)

    @property
    def feature_strides(self) -> tuple[int, ...]:
        """Input pixels per cell of each trunk stage (the patch embedding is stride 4)."""
        return tuple(4 * self.q_stride[0] ** min(i, self.q_pool) for i in range(len(self.stages)))

    @property
    def out_chans(self) -> int:
        """Channels of every output level (the neck's ``d_model``)."""
        return self.d_model

    @property
    def patch_size(self) -> int:
        """Input pixels per cell of ``vision_features``, the lowest level kept after the scalp (16 officially)."""
        return self.feature_strides[len(self.stages) - 1 - self.scalp]


EncoderConfig = Union[ViTConfig, TinyViTConfig]


@dataclass(frozen=True)
class SamConfig:
    """A whole Segment Anything model: a named image encoder plus the prompt encoder and decoder.

    ``prompt_embed_dim`` is the width of the image embedding, the prompt tokens and the two-way
    transformer (the encoder's ``out_chans`` must equal it); ``decoder_*`` shape the two-way
    transformer, ``iou_head_*`` the IoU head.
    """

    name: str
    encoder: EncoderConfig
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD
    prompt_embed_dim: int = DEFAULT_PROMPT_EMBED_DIM
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256

    def __post_init__(self) -> None:
        if self.encoder.out_chans != self.prompt_embed_dim:
            raise ConfigError(
                f"the encoder's out_chans ({self.encoder.out_chans}) must equal prompt_embed_dim ({self.prompt_embed_dim})"
            )
        if self.image_size % self.patch_size:
            raise ConfigError(f"img_size {self.image_size} is not a multiple of the patch size {self.patch_size}")
        if (self.prompt_embed_dim // self.attention_downsample_rate) % self.decoder_num_heads:
            raise ConfigError("decoder_num_heads must divide prompt_embed_dim // attention_downsample_rate")
        if self.prompt_embed_dim % 8 or self.mask_in_chans % 4:
            raise ConfigError("prompt_embed_dim must be a multiple of 8 and mask_in_chans of 4")

    @property
    def image_size(self) -> int:
        """Side of the square, padded input image (1024 for every official model)."""
        return self.encoder.img_size

    @property
    def patch_size(self) -> int:
        """Input pixels per image-embedding cell along each axis."""
        return self.encoder.patch_size

    @property
    def embedding_size(self) -> int:
        """Side of the image-embedding grid (64 for the official models)."""
        return self.image_size // self.patch_size

    @property
    def low_res_size(self) -> int:
        """Side of the decoder's low-res mask logits, and so of ``mask_input`` (256 officially)."""
        return 4 * self.embedding_size

    @property
    def mask_input_size(self) -> int:
        """Side of the dense mask prompt: the low-res logits of a previous prediction."""
        return self.low_res_size
