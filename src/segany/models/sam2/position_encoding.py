"""SAM 2's parameter-free position encodings: the 2-D sine encoding of feature maps (DETR style),
the 1-D sine encoding of temporal offsets, and the axial rotary encoding (RoPE) of memory attention."""
from __future__ import annotations

import math

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """Sine / cosine encoding of each cell's (y, x) position: (B, C, H, W) → (B, num_pos_feats, H, W).

    The first half of the channels encodes y, the second x; positions are 1..H (1..W), divided by
    the last one (+1e-6) and multiplied by ``scale`` (2π) when ``normalize``.
    """

    def __init__(self, num_pos_feats: int, temperature: int = 10000, normalize: bool = True,
                 scale: float | None = None) -> None:
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError("num_pos_feats must be even")
        if scale is not None and not normalize:
            raise ValueError("normalize should be True if scale is passed")
        self.num_pos_feats = num_pos_feats // 2
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def _axis(self, n: int, device: torch.device) -> torch.Tensor:
        """(n, num_pos_feats) interleaved sin / cos features of positions 1..n."""
        embed = torch.arange(1, n + 1, dtype=torch.float32, device=device)
        if self.normalize:
            embed = embed / (embed[-1:] + 1e-6) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
        pos = embed[:, None] / dim_t
        return torch.stack((pos[:, 0::2].sin(), pos[:, 1::2].cos()), dim=2).flatten(1)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        pos_y = self._axis(h, x.device)[:, None, :].expand(h, w, -1)
        pos_x = self._axis(w, x.device)[None, :, :].expand(h, w, -1)
        pos = torch.cat((pos_y, pos_x), dim=-1).permute(2, 0, 1)
        return pos.unsqueeze(0).expand(b, -1, -1, -1)


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
