"""SAM's image encoder: a plain ViT with windowed attention, decomposed relative positions
and a convolutional neck down to the image embedding (256 channels, 64x64 officially) (Kirillov et al., 2023, §3;
Li et al., ViTDet, 2022).

Activations stay channels-last, (B, H, W, C), from the patch embedding to the neck. Two
rearrangements of the official computation save work without changing the result beyond float
rounding: windowed blocks project q|k|v on the unpadded grid and give padding tokens the value the
official code computes for them (the projection of a zero token is the bias), and the output
projection runs after the windows are merged, so the padding never goes through a Linear layer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..common import LayerNorm2d, MLPBlock, layer_norm_last
from ..config import ViTConfig


class PatchEmbed(nn.Module):
    """Non-overlapping patches → tokens, laid out channels-last as (B, H, W, C)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A channels-last input makes the convolution's output (B, C, H, W)-shaped but stored as
        # (B, H, W, C), so the permute below is free.
        return self.proj(x.contiguous(memory_format=torch.channels_last)).permute(0, 2, 3, 1)


def relative_position_table(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Embeddings of every (query, key) offset along one axis: (q_size, k_size, head_dim).

    The learned table is linearly resampled when its length does not match the attention size.
    """
    max_rel_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_rel_dist:
        rel_pos = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=max_rel_dist, mode="linear"
        ).reshape(-1, max_rel_dist).permute(1, 0)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    offsets = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[offsets.long()]


class Attention(nn.Module):
    """Multi-head self-attention over a (B, H, W, C) grid with decomposed relative-position bias."""

    def __init__(self, dim: int, num_heads: int, input_size: tuple[int, int], use_rel_pos: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def relative_position_bias(self, q: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Additive bias (B, heads, H*W, H*W) from the queries (B, heads, H*W, d) and the axis tables.

        Built as a broadcast sum of two small terms (H*W x H and H*W x W), written once directly in
        the layout the fused attention kernel reads.
        """
        batch, heads, tokens, head_dim = q.shape
        table_h = relative_position_table(height, height, self.rel_pos_h)
        table_w = relative_position_table(width, width, self.rel_pos_w)
        grid_q = q.reshape(batch * heads, height, width, head_dim)
        rel_h = torch.einsum("bhwc,hkc->bhwk", grid_q, table_h).contiguous()
        rel_w = torch.einsum("bhwc,wkc->bhwk", grid_q, table_w).contiguous()
        bias = rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]  # contiguous operands: contiguous sum
        return bias.view(batch, heads, tokens, tokens)

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """Projected q|k|v (B, H, W, 3C) → attention output (B, H, W, C), before ``proj``."""
        batch, height, width, _ = qkv.shape
        qkv = qkv.reshape(batch, height * width, 3, self.num_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # strided views, (B, heads, N, d)
        bias = self.relative_position_bias(q, height, width) if self.use_rel_pos else None
        if bias is not None and bias.dtype != q.dtype:
            bias = bias.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        return out.transpose(1, 2).reshape(batch, height, width, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.attend(self.qkv(x)))


def window_partition(
    x: torch.Tensor, window_size: int, fill: torch.Tensor | None = None
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Split (B, H, W, C) into padded non-overlapping windows (B*nW, ws, ws, C).

    Padding is zeros, or ``fill`` (a (C,) vector) when given.
    """
    batch, height, width, channels = x.shape
    pad_h = (window_size - height % window_size) % window_size
    pad_w = (window_size - width % window_size) % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        if fill is not None:
            x[:, height:] = fill
            x[:, :height, width:] = fill
    hp, wp = height + pad_h, width + pad_w
    x = x.view(batch, hp // window_size, window_size, wp // window_size, window_size, channels)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, channels)
    return windows, (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`, dropping the padding."""
    hp, wp = padded_hw
    height, width = hw
    batch = windows.shape[0] // (hp * wp // window_size // window_size)
    x = windows.view(batch, hp // window_size, wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, hp, wp, -1)
    return x[:, :height, :width, :].contiguous() if (hp, wp) != (height, width) else x


class Block(nn.Module):
    """Pre-norm transformer block; windowed attention unless ``window_size`` is 0 (global)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window_size: int, input_size: tuple[int, int]):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        attn_size = input_size if window_size == 0 else (window_size, window_size)
        self.attn = Attention(dim, num_heads, input_size=attn_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.attn.qkv(self.norm1(x))
        if self.window_size > 0:
            height, width = x.shape[1], x.shape[2]
            # Padding tokens are zeros after norm1 in the official code: their q|k|v is the
            # projection of a zero token (the bias), whatever kind of Linear ``qkv`` is.
            fill = self.attn.qkv(x.new_zeros(1, x.shape[-1]))[0]
            windows, padded_hw = window_partition(qkv, self.window_size, fill=fill)
            out = window_unpartition(self.attn.attend(windows), self.window_size, padded_hw, (height, width))
        else:
            out = self.attn.attend(qkv)
        x = x + self.attn.proj(out)
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT(nn.Module):
    """(B, 3, S, S) normalised image → (B, out_chans, S / patch, S / patch) image embedding
    ((B, 256, 64, 64) for the official models)."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        grid = config.img_size // config.patch_size
        self.img_size = config.img_size
        self.patch_embed = PatchEmbed(config.patch_size, 3, config.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, config.embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                config.embed_dim,
                config.num_heads,
                config.mlp_ratio,
                window_size=0 if i in config.global_attn_indexes else config.window_size,
                input_size=(grid, grid),
            )
            for i in range(config.depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(config.embed_dim, config.out_chans, kernel_size=1, bias=False),
            LayerNorm2d(config.out_chans),
            nn.Conv2d(config.out_chans, config.out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(config.out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.forward_neck(x)

    def forward_neck(self, x: torch.Tensor) -> torch.Tensor:
        """``neck`` applied to channels-last tokens (B, H, W, C) → contiguous (B, out_chans, H, W).

        The 1x1 convolution is a matmul over channels and the LayerNorms normalise the last axis,
        so only the 3x3 convolution sees an image-shaped tensor (a channels-last view).
        """
        reduce, norm1, conv, norm2 = self.neck
        x = layer_norm_last(F.linear(x, reduce.weight.flatten(1)), norm1)
        x = conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return layer_norm_last(x, norm2).permute(0, 3, 1, 2).contiguous()
