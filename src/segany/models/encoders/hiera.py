"""SAM 2's image encoder: a Hiera trunk (Ryali et al., 2023; the "hieradet" variant of SAM 2,
Ravi et al., 2024, §4) under an FPN neck with sine position encodings.

The trunk is a 7x7 stride-4 patch embedding, a windowed absolute position embedding (a learned
background map resized bicubically to the grid, plus one learned window tiled over it; Bolya et
al., 2023), then stages of pre-norm transformer blocks at strides 4, 8, 16, 32. Blocks attend
inside non-overlapping windows (the window size of their stage, or globally for the blocks in
``global_att_blocks``); the first block of each later stage widens the channels and max-pools the
queries 2x2 (and its shortcut), so it still uses the window of the previous stage. The neck
projects every stage to ``d_model`` channels with a 1x1 convolution and adds the 2x (nearest)
upsampled coarser level into the levels of ``fpn_top_down_levels``; ``scalp`` then drops the
coarsest levels. Activations stay channels-last, (B, H, W, C), inside the trunk. Module names,
and so state-dict keys, are the official ones (``image_encoder.trunk.*``, ``image_encoder.neck.*``).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import HieraConfig
from ..fused import linear, linear_act
from ..mask_decoder import MLP
from ..position_encoding import PositionEmbeddingSine


def padded_size(hw: tuple[int, int], window_size: int) -> tuple[int, int]:
    """(H, W) rounded up to multiples of ``window_size``."""
    return hw[0] + (-hw[0]) % window_size, hw[1] + (-hw[1]) % window_size


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) → (B * windows, window_size, window_size, C), zero-padded at the bottom / right;
    also returns the padded size (Hp, Wp)."""
    b, h, w, c = x.shape
    hp, wp = padded_size((h, w), window_size)
    if hp > h or wp > w:
        x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
    x = x.view(b, hp // window_size, window_size, wp // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c), (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, pad_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * windows, ws, ws, C) → (B, H, W, C), padding cut off."""
    hp, wp = pad_hw
    h, w = hw
    b = windows.shape[0] // (hp * wp // window_size // window_size)
    x = windows.reshape(b, hp // window_size, wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    if hp > h or wp > w:
        x = x[:, :h, :w, :]
    return x


def do_pool(x: torch.Tensor, pool: nn.Module | None) -> torch.Tensor:
    """Apply a 2-D pooling to a channels-last (B, H, W, C) map → (B, H', W', C)."""
    if pool is None:
        return x
    return pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class PatchEmbed(nn.Module):
    """(B, 3, H, W) image → (B, H/4, W/4, embed_dim) tokens: one 7x7 stride-4 convolution."""

    def __init__(self, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Self-attention over (B, H, W, dim) windows → (B, H', W', dim_out); the queries are pooled by
    ``q_pool`` (then H', W' = H / 2, W / 2), keys and values keep the full window."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_pool: nn.Module | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.dim_out = dim_out
        self.num_heads = num_heads
        self.q_pool = q_pool
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        q, k, v = linear(x, self.qkv).reshape(b, h * w, 3, self.num_heads, -1).unbind(2)  # each (B, HW, heads, hd)
        if self.q_pool is not None:
            q = do_pool(q.reshape(b, h, w, -1), self.q_pool)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        x = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return linear(x.transpose(1, 2).reshape(b, h, w, -1), self.proj)


class HieraMLP(MLP):
    """The blocks' two-layer MLP (keys ``layers.0``, ``layers.1``) with the exact (erf) GELU."""

    def __init__(self, *args: int, **kwargs: int) -> None:
        super().__init__(*args, **kwargs)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = self.layers
        return linear(linear_act(x, first, self.act), second)


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block on (B, H, W, dim) → (B, H', W', dim_out).

    ``window_size`` 0 means global attention. With ``q_stride`` the queries and the shortcut (a
    Linear dim → dim_out of the normalised input) are max-pooled, so the block halves the grid; its
    windows shrink by the same factor.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        q_stride: tuple[int, int] | None = None,
        window_size: int = 0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.dim_out = dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.pool = nn.MaxPool2d(kernel_size=q_stride, stride=q_stride) if q_stride else None
        self.attn = MultiScaleAttention(dim, dim_out, num_heads=num_heads, q_pool=self.pool)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = HieraMLP(dim_out, int(dim_out * mlp_ratio), dim_out, num_layers=2)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = do_pool(linear(x, self.proj), self.pool)
        window_size = self.window_size
        if window_size > 0:
            x, pad_hw = window_partition(x, window_size)
        x = self.attn(x)
        if window_size > 0:
            hw = tuple(shortcut.shape[1:3])
            if self.q_stride:
                window_size //= self.q_stride[0]
                pad_hw = padded_size(hw, window_size)
            x = window_unpartition(x, window_size, pad_hw, hw)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Hiera(nn.Module):
    """The trunk: (B, 3, S, S) image → one (B, C_i, S / stride_i, S / stride_i) map per stage, highest
    resolution first (strides 4, 8, 16, 32 and widths ``config.stage_dims`` officially)."""

    def __init__(self, config: HieraConfig) -> None:
        super().__init__()
        stages = config.stages
        self.window_spec = config.window_spec
        self.stage_ends = [sum(stages[:i]) - 1 for i in range(1, len(stages) + 1)]
        self.q_pool_blocks = [end + 1 for end in self.stage_ends[:-1]][: config.q_pool]
        self.global_att_blocks = tuple(config.global_att_blocks)
        embed_dim, num_heads = config.embed_dim, config.num_heads
        self.patch_embed = PatchEmbed(embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *config.window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, embed_dim, self.window_spec[0], self.window_spec[0]))

        self.blocks = nn.ModuleList()
        cur_stage = 1
        for i in range(sum(stages)):
            dim_out = embed_dim
            # The window lags one block behind the stage: a stage's first (q-pool) block still
            # partitions with the previous stage's window.
            window_size = 0 if i in self.global_att_blocks else self.window_spec[cur_stage - 1]
            if i - 1 in self.stage_ends:
                dim_out = int(embed_dim * config.dim_mul)
                num_heads = int(num_heads * config.head_mul)
                cur_stage += 1
            q_stride = tuple(config.q_stride) if i in self.q_pool_blocks else None
            block = MultiScaleBlock(embed_dim, dim_out, num_heads, q_stride=q_stride, window_size=window_size)
            self.blocks.append(block)
            embed_dim = dim_out
        self.channel_list = [self.blocks[i].dim_out for i in self.stage_ends[::-1]]

    def _get_pos_embed(self, hw: tuple[int, int]) -> torch.Tensor:
        """(1, H, W, C): the background embedding resized (bicubic) to H x W plus the tiled window embedding."""
        pos_embed = F.interpolate(self.pos_embed, size=hw, mode="bicubic")
        window = self.pos_embed_window
        pos_embed = pos_embed + window.tile([p // q for p, q in zip(pos_embed.shape, window.shape)])
        return pos_embed.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor, pos_embed: torch.Tensor | None = None) -> list[torch.Tensor]:
        """``pos_embed``: :meth:`_get_pos_embed` of the patch grid when the caller keeps it (it
        depends on the parameters and the input size only)."""
        x = self.patch_embed(x)
        x = x + (self._get_pos_embed(x.shape[1:3]) if pos_embed is None else pos_embed)
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs


class FpnNeck(nn.Module):
    """Trunk maps (highest resolution first) → the same number of (B, d_model, h_i, w_i) maps and
    their sine position encodings.

    ``convs[j]`` is the 1x1 lateral projection of the j-th deepest level (official order). Going from
    the coarsest level up, a level listed in ``fpn_top_down_levels`` adds the 2x-upsampled output of
    the level below it (``fpn_interp_model``), in float32.
    """

    def __init__(self, config: HieraConfig) -> None:
        super().__init__()
        self.position_encoding = PositionEmbeddingSine(
            config.position_num_pos_feats,
            temperature=config.position_temperature,
            normalize=config.position_normalize,
            scale=config.position_scale,
        )
        self.d_model = config.d_model
        self.backbone_channel_list = list(config.backbone_channel_list)
        self.convs = nn.ModuleList()
        for dim in self.backbone_channel_list:
            lateral = nn.Sequential()
            lateral.add_module("conv", nn.Conv2d(dim, config.d_model, kernel_size=1))
            self.convs.append(lateral)
        self.fpn_interp_model = config.fpn_interp_model
        self.fpn_top_down_levels = list(config.fpn_top_down_levels)

    def forward(self, xs: list[torch.Tensor], positions: bool = True,
                finest: int = 0) -> tuple[list[torch.Tensor | None], list[torch.Tensor | None]]:
        """The levels and, with ``positions``, their encodings (else an empty list); the levels
        finer than ``finest`` are not computed (None)."""
        n = len(self.convs) - 1
        out: list[torch.Tensor | None] = []
        pos: list[torch.Tensor | None] = []
        prev = None
        for i in range(n, finest - 1, -1):
            lateral = self.convs[n - i](xs[i])
            if i in self.fpn_top_down_levels and prev is not None:
                top_down = F.interpolate(
                    prev.to(torch.float32),
                    scale_factor=2.0,
                    mode=self.fpn_interp_model,
                    align_corners=None if self.fpn_interp_model == "nearest" else False,
                    antialias=False,
                )
                prev = lateral + top_down
            else:
                prev = lateral
            out.append(prev)
            if positions:
                pos.append(self.position_encoding(prev).to(prev.dtype))
        out += [None] * finest
        pos += [None] * (finest if positions else 0)
        return out[::-1], pos[::-1]


class Sam2EncoderOutput(NamedTuple):
    """What the official ``ImageEncoder`` returns as a dict, as a typed tuple (same field names).

    ``backbone_fpn`` and ``vision_pos_enc``: the neck's levels kept after the scalp, highest
    resolution first ((B, d_model, S/4, S/4), (B, d_model, S/8, S/8), (B, d_model, S/16, S/16)
    officially); ``vision_features`` is the last, lowest-resolution one.
    """

    vision_features: torch.Tensor
    vision_pos_enc: tuple[torch.Tensor, ...]
    backbone_fpn: tuple[torch.Tensor, ...]


class Sam2ImageEncoder(nn.Module):
    """SAM 2's ``image_encoder``: Hiera trunk + FPN neck, minus the ``scalp`` coarsest levels."""

    def __init__(self, config: HieraConfig) -> None:
        super().__init__()
        self.trunk = Hiera(config)
        self.neck = FpnNeck(config)
        self.scalp = config.scalp

    def forward(self, x: torch.Tensor, pos_embed: torch.Tensor | None = None, positions: bool = True) -> Sam2EncoderOutput:
        """(B, 3, S, S) normalised image → :class:`Sam2EncoderOutput`; ``pos_embed`` as
        :meth:`Hiera.forward`'s; without ``positions`` (the image path needs none) ``vision_pos_enc`` is empty."""
        features, pos = self.neck(self.trunk(x, pos_embed), positions)
        kept = len(features) - self.scalp
        return Sam2EncoderOutput(features[kept - 1], tuple(pos[:kept]), tuple(features[:kept]))
