"""The Segment Anything model: image encoder, prompt encoder and mask decoder, plus the pixel
normalisation and mask geometry that tie them to image coordinates."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import SamConfig, TinyViTConfig, ViTConfig
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .tiny_vit import TinyViT
from .transformer import TwoWayTransformer
from .vit import ImageEncoderViT


class Sam(nn.Module):
    """Holds the three networks under their official attribute names (and so state-dict keys)."""

    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(self, config: SamConfig) -> None:
        super().__init__()
        self.config = config
        if isinstance(config.encoder, ViTConfig):
            self.image_encoder: nn.Module = ImageEncoderViT(config.encoder)
        elif isinstance(config.encoder, TinyViTConfig):
            self.image_encoder = TinyViT(config.encoder)
        else:
            raise TypeError(f"unknown encoder config {type(config.encoder).__name__}")
        grid, size = config.embedding_size, config.image_size
        self.prompt_encoder = PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(size, size),
            mask_in_chans=config.mask_in_chans,
        )
        self.mask_decoder = MaskDecoder(
            transformer_dim=config.prompt_embed_dim,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                num_heads=config.decoder_num_heads,
                mlp_dim=config.decoder_mlp_dim,
                attention_downsample_rate=config.attention_downsample_rate,
            ),
            num_multimask_outputs=config.num_multimask_outputs,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        )
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1), persistent=False)

    @property
    def image_size(self) -> int:
        """Side of the square, padded input image."""
        return self.config.image_size

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a (B, 3, h, w) resized image and zero-pad it to the square input size (bottom/right)."""
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        size = self.image_size
        return F.pad(x, (0, size - w, 0, size - h))

    def postprocess_masks(
        self, masks: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
    ) -> torch.Tensor:
        """Low-res logits (B, M, low, low) → logits at the original image size (B, M, H, W).

        Official steps (bilinear to the square input size, crop the padding, bilinear to the original size),
        with two shortcuts that give identical values: only the low-res rows and columns the crop
        keeps are upsampled (the 4x scale, and so every interpolation weight, is unchanged), and the
        second resize is skipped when it would map the crop onto itself (a same-size bilinear resize
        is the identity).
        """
        factor = self.image_size // masks.shape[-1]
        rows = min(masks.shape[-2], -(-input_size[0] // factor) + 1)
        cols = min(masks.shape[-1], -(-input_size[1] // factor) + 1)
        masks = F.interpolate(
            masks[..., :rows, :cols].contiguous(), (rows * factor, cols * factor), mode="bilinear", align_corners=False
        )
        masks = masks[..., : input_size[0], : input_size[1]]
        if tuple(original_size) == tuple(input_size):
            return masks
        return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)
