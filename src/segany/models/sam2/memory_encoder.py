"""SAM 2's memory encoder: a frame's mask is downsampled to the feature stride, added to the
projected frame features, fused by ConvNeXt blocks and compressed to the memory width."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..common import LayerNorm2d
from ..position_encoding import PositionEmbeddingSine


class MaskDownSampler(nn.Module):
    """(B, 1, H, W) mask → (B, embed_dim, H / total_stride, W / total_stride): conv-LayerNorm2d-GELU
    steps of ``stride`` (channels x stride² each), then a 1x1 conv."""

    def __init__(self, embed_dim: int = 256, kernel_size: int = 4, stride: int = 4, padding: int = 0,
                 total_stride: int = 16) -> None:
        super().__init__()
        num_layers = int(math.log2(total_stride) // math.log2(stride))
        if stride**num_layers != total_stride:
            raise ValueError(f"total_stride {total_stride} is not a power of stride {stride}")
        self.encoder = nn.Sequential()
        channels_in = channels_out = 1
        for _ in range(num_layers):
            channels_out = channels_in * stride**2
            self.encoder.append(nn.Conv2d(channels_in, channels_out, kernel_size, stride=stride, padding=padding))
            self.encoder.append(LayerNorm2d(channels_out))
            self.encoder.append(nn.GELU())
            channels_in = channels_out
        self.encoder.append(nn.Conv2d(channels_out, embed_dim, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise conv, LayerNorm2d, Linear-GELU-Linear (channels last), layer scale, residual."""

    def __init__(self, dim: int, kernel_size: int = 7, padding: int = 3, layer_scale_init_value: float = 1e-6,
                 use_dwconv: bool = True) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=padding, groups=dim if use_dwconv else 1)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim)) if layer_scale_init_value > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(y)))
        if self.gamma is not None:
            y = self.gamma * y
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    """An optional 1x1 input projection, then ``num_layers`` copies of ``layer``."""

    def __init__(self, layer: nn.Module, num_layers: int, dim: int | None = None, input_projection: bool = False) -> None:
        super().__init__()
        self.proj: nn.Module = nn.Identity()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        if input_projection:
            if dim is None:
                raise ValueError("input_projection needs dim")
            self.proj = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """Frame features (B, in_dim, h, w) + mask logits (B, 1, 16h, 16w) → memory (B, out_dim, h, w)
    and its sine position encoding."""

    def __init__(self, out_dim: int, mask_downsampler: MaskDownSampler, fuser: Fuser,
                 position_encoding: PositionEmbeddingSine, in_dim: int = 256) -> None:
        super().__init__()
        self.mask_downsampler = mask_downsampler
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = fuser
        self.position_encoding = position_encoding
        self.out_proj: nn.Module = nn.Identity()
        if out_dim != in_dim:
            self.out_proj = nn.Conv2d(in_dim, out_dim, kernel_size=1)

    def forward(self, pix_feat: torch.Tensor, masks: torch.Tensor, skip_mask_sigmoid: bool = False) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """``{"vision_features": memory, "vision_pos_enc": [position encoding]}`` (the official dict);
        ``masks`` are logits (a sigmoid is applied) unless ``skip_mask_sigmoid``."""
        if not skip_mask_sigmoid:
            masks = torch.sigmoid(masks)
        masks = self.mask_downsampler(masks)
        x = self.pix_feat_proj(pix_feat.to(masks.device)) + masks
        x = self.out_proj(self.fuser(x))
        pos = self.position_encoding(x).to(x.dtype)
        return {"vision_features": x, "vision_pos_enc": [pos]}
