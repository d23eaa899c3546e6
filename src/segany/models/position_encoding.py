"""SAM 2's parameter-free position encodings: the sine encoding of feature maps (DETR style) used by
the FPN neck of the image encoder and by the memory encoder, the 1-D sine encoding of temporal
offsets, and the axial rotary encoding (RoPE) of memory attention.

The values are computed with the official sequence of float32 operations, so they match the
official ``PositionEmbeddingSine`` to the last bit.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError


class PositionEmbeddingSine(nn.Module):
    """(B, C, H, W) feature map → its (B, num_pos_feats, H, W) sine encoding (y half, then x half).

    Cell centres are numbered 1..H and 1..W; with ``normalize`` they are divided by the last one
    (plus 1e-6) and scaled by ``scale`` (2π by default). Each half holds sin/cos pairs at the
    frequencies ``temperature ** (2 * (i // 2) / (num_pos_feats / 2))``. Holds no parameters.
    """

    def __init__(
        self, num_pos_feats: int, temperature: float = 10000, normalize: bool = True, scale: float | None = None
    ) -> None:
        super().__init__()
        if num_pos_feats % 2:
            raise ConfigError(f"num_pos_feats must be even, got {num_pos_feats}")
        if scale is not None and not normalize:
            raise ConfigError("scale is only used with normalize=True")
        self.num_pos_feats = num_pos_feats // 2
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale
        self._cache: dict[tuple[int, int, str], torch.Tensor] = {}  # by grid: the same on every image

    def encoding(self, height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
        """The (num_pos_feats, H, W) float32 encoding of an H x W grid (under ``torch.inference_mode``
        computed once per grid: trackers ask for it on every frame)."""
        if not torch.is_inference_mode_enabled():
            return self._encoding(height, width, device)
        key = (height, width, str(device))
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache[key] = self._encoding(height, width, device)
        return cached

    def _encoding(self, height: int, width: int, device: torch.device | None) -> torch.Tensor:
        y_embed = torch.arange(1, height + 1, dtype=torch.float32, device=device).view(-1, 1).expand(height, width)
        x_embed = torch.arange(1, width + 1, dtype=torch.float32, device=device).view(1, -1).expand(height, width)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[-1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
        pos_x = x_embed[:, :, None] / dim_t
        pos_y = y_embed[:, :, None] / dim_t
        pos_x = torch.stack((pos_x[:, :, 0::2].sin(), pos_x[:, :, 1::2].cos()), dim=3).flatten(2)
        pos_y = torch.stack((pos_y[:, :, 0::2].sin(), pos_y[:, :, 1::2].cos()), dim=3).flatten(2)
        return torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, num_pos_feats, H, W) in ``x``'s dtype (not a function of ``x``'s values)."""
        pos = self.encoding(x.shape[-2], x.shape[-1], x.device).to(x.dtype)
        return pos.unsqueeze(0).expand(x.shape[0], -1, -1, -1)


def get_1d_sine_pe(pos_inds: torch.Tensor, dim: int, temperature: float = 10000) -> torch.Tensor:
    """(...,) positions → (..., dim) sine features then cosine features (the Transformer paper's)."""
    pe_dim = dim // 2
    dim_t = torch.arange(pe_dim, dtype=torch.float32, device=pos_inds.device)
    dim_t = temperature ** (2 * (dim_t // 2) / pe_dim)
    pos_embed = pos_inds.unsqueeze(-1) / dim_t
    return torch.cat([pos_embed.sin(), pos_embed.cos()], dim=-1)


def compute_axial_cis(dim: int, end_x: int, end_y: int, theta: float = 10000.0,
                      device: torch.device | None = None) -> torch.Tensor:
    """Complex rotations (end_x * end_y, dim // 2) for a row-major grid: the first dim // 4 from x,
    the next dim // 4 from y."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4, device=device)[: dim // 4].float() / dim))
    t = torch.arange(end_x * end_y, dtype=torch.float32, device=device)
    t_x = t % end_x
    t_y = torch.div(t, end_x, rounding_mode="floor")
    angles = torch.cat([torch.outer(t_x, freqs), torch.outer(t_y, freqs)], dim=-1)
    return torch.polar(torch.ones_like(angles), angles)


def apply_rotary_enc(xq: torch.Tensor, xk: torch.Tensor, freqs_cis: torch.Tensor,
                     repeat_freqs_k: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate queries (B, h, N, d) and keys (B, h, M, d) by ``freqs_cis`` (N, d/2), in complex float32.

    With ``repeat_freqs_k`` the keys are M = r * N tokens (r memory frames of the same grid), each
    frame rotated like the queries.
    """
    xq_ = torch.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2))
    xq_out = torch.view_as_real(xq_ * freqs_cis).flatten(3).type_as(xq)
    if xk.shape[-2] == 0:
        return xq_out, xk
    xk_ = torch.view_as_complex(xk.float().reshape(*xk.shape[:-1], -1, 2))
    if repeat_freqs_k:
        freqs_cis = freqs_cis.repeat(xk_.shape[-2] // xq_.shape[-2], 1)
    xk_out = torch.view_as_real(xk_ * freqs_cis).flatten(3).type_as(xk)
    return xq_out, xk_out
