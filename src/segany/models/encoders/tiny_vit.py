"""MobileSAM's image encoder: a TinyViT (Wu et al., 2022) distilled from SAM's ViT-H
(Zhang et al., "Faster Segment Anything", 2023), with SAM's convolutional neck on top.

Layout: a convolutional stem down to 1/4 resolution, one stage of MobileNet-style inverted
residual blocks (MBConv), then transformer stages whose blocks use windowed attention with a
learned per-offset bias and a depthwise convolution between attention and MLP. Stages are joined
by convolutional patch merging; the last merging keeps the resolution, so the last stage runs at
1/16 scale, i.e. the 64x64 grid of the image embedding.

Inside the transformer stages activations stay channels-last, (B, H, W, C); the convolutions see
them through a permuted view (NCHW shape with channels-last strides), so no layout copies are made
between attention, the local convolution and the MLP. Module names, and so state-dict keys, are the
official MobileSAM ones, including the unused ImageNet classifier (``norm_head`` / ``head``) that the
checkpoints carry.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..common import LayerNorm2d
from ..config import TinyViTConfig
from ..fused import conv_act, linear_act

# PatchMerging keeps the resolution (stride 1) into stages of these widths: MobileSAM's change to
# TinyViT so that the last stage runs at 1/16 scale, as SAM's embedding needs.
_STRIDE_ONE_WIDTHS = (320, 448, 576)
_GELU = nn.GELU()  # the exact (erf) GELU of every TinyViT activation


class Conv2d_BN(nn.Module):  # noqa: N801 - official name
    """Convolution without bias followed by BatchNorm (keys ``c.*`` and ``bn.*``).

    In eval mode the BatchNorm is folded into the convolution on the fly, from the live parameters
    and running statistics, so the pair costs a single convolution and loaded weights always apply.
    """

    def __init__(
        self, in_chans: int, out_chans: int, kernel_size: int = 1, stride: int = 1, padding: int = 0, groups: int = 1
    ) -> None:
        super().__init__()
        self.c = nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chans)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight and bias of the convolution with the BatchNorm folded in (eval mode)."""
        bn = self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        return self.c.weight * scale[:, None, None, None], bn.bias - bn.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.bn(self.c(x))
        weight, bias = self.folded()
        return F.conv2d(x, weight, bias, self.c.stride, self.c.padding, self.c.dilation, self.c.groups)

    def forward_act(self, x: torch.Tensor, act: nn.Module = _GELU) -> torch.Tensor:
        """``act(self(x))``, as one fused kernel where possible (see :mod:`.fused`)."""
        if self.training:
            return act(self.bn(self.c(x)))
        weight, bias = self.folded()
        return conv_act(x, weight, bias, self.c, act)


class PatchEmbed(nn.Module):
    """Stem: two stride-2 3x3 convolutions, (B, in_chans, H, W) → (B, embed_dim, H/4, W/4)."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            Conv2d_BN(in_chans, embed_dim // 2, 3, 2, 1),
            nn.GELU(),
            Conv2d_BN(embed_dim // 2, embed_dim, 3, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, act, second = self.seq
        return second(first.forward_act(x, act))


class MBConv(nn.Module):
    """Inverted residual block on NCHW: 1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU."""

    def __init__(self, chans: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(chans * expand_ratio)
        self.conv1 = Conv2d_BN(chans, hidden)
        self.conv2 = Conv2d_BN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.conv3 = Conv2d_BN(hidden, chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2.forward_act(self.conv1.forward_act(x))
        return F.gelu(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """Downsampling between stages: 1x1 conv, 3x3 depthwise conv (stride 2, or 1 into the widths of
    ``_STRIDE_ONE_WIDTHS``), 1x1 conv. Takes NCHW (any memory format), returns (B, H', W', C')."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.stride = 1 if out_dim in _STRIDE_ONE_WIDTHS else 2
        self.conv1 = Conv2d_BN(dim, out_dim)
        self.conv2 = Conv2d_BN(out_dim, out_dim, 3, self.stride, 1, groups=out_dim)
        self.conv3 = Conv2d_BN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2.forward_act(self.conv1.forward_act(x))
        return self.conv3(x).permute(0, 2, 3, 1)


class ConvLayer(nn.Module):
    """First stage: MBConv blocks on NCHW, then patch merging to (B, H', W', C')."""

    def __init__(self, dim: int, depth: int, out_dim: int, expand_ratio: float, downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        if self.downsample is None:
            return x.permute(0, 2, 3, 1)
        return self.downsample(x)


class Mlp(nn.Module):
    """Pre-norm feed-forward block: LayerNorm → ``fc1`` → GELU → ``fc2``."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(linear_act(self.norm(x), self.fc1, _GELU))


def attention_bias_indices(height: int, width: int) -> torch.Tensor:
    """(N, N) index into the per-offset bias table, N = height * width.

    Two positions share a bias when their absolute offsets (|dy|, |dx|) agree. The official code
    numbers offsets in order of first appearance over row-major pairs; the first query (0, 0) meets
    every offset in row-major order, so that number is simply ``|dy| * width + |dx|``.
    """
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    return (ys[:, None] - ys[None, :]).abs() * width + (xs[:, None] - xs[None, :]).abs()


class Attention(nn.Module):
    """Pre-norm multi-head self-attention over windows of tokens (B', N, C), with a learned
    additive bias per head and per relative offset (LeViT-style)."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, resolution: tuple[int, int]) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        inner_dim = key_dim * num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * inner_dim)
        self.proj = nn.Linear(inner_dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution[0] * resolution[1]))
        self.register_buffer("attention_bias_idxs", attention_bias_indices(*resolution), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        # The qkv features are laid out per head as [q | k | v] (the official split).
        qkv = self.qkv(self.norm(x)).view(batch, tokens, self.num_heads, 3, self.key_dim)
        q, k, v = qkv.permute(3, 0, 2, 1, 4).unbind(0)
        # Indexed from the live parameter on every call: no cached copy can go stale.
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0))
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, -1))


class TinyViTBlock(nn.Module):
    """Windowed attention (residual), 3x3 depthwise conv, MLP (residual), on (B, H, W, C).

    Windows that overrun the grid are zero-padded *before* the attention's LayerNorm, and the
    padded tokens take part as keys, exactly as in the official code.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float, local_conv_size: int) -> None:
        super().__init__()
        if window_size <= 0:
            raise ValueError("window_size must be positive")
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.window_size = window_size
        self.attn = Attention(dim, dim // num_heads, num_heads, (window_size, window_size))
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2d_BN(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)

    def windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, chans = x.shape
        ws = self.window_size
        if height == ws and width == ws:
            return self.attn(x.reshape(batch, ws * ws, chans)).view(batch, ws, ws, chans)
        pad_b = (ws - height % ws) % ws
        pad_r = (ws - width % ws) % ws
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        n_h, n_w = (height + pad_b) // ws, (width + pad_r) // ws
        windows = x.view(batch, n_h, ws, n_w, ws, chans).transpose(2, 3).reshape(-1, ws * ws, chans)
        out = self.attn(windows).view(batch, n_h, n_w, ws, ws, chans).transpose(2, 3)
        out = out.reshape(batch, n_h * ws, n_w * ws, chans)
        return out[:, :height, :width] if pad_b or pad_r else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.windowed_attention(x)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    """A transformer stage on (B, H, W, C), optionally followed by patch merging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        local_conv_size: int,
        out_dim: int,
        downsample: bool,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, num_heads, window_size, mlp_ratio, local_conv_size) for _ in range(depth)
        )
        self.downsample = PatchMerging(dim, out_dim) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        if self.downsample is not None:
            x = self.downsample(x.permute(0, 3, 1, 2))
        return x


class TinyViT(nn.Module):
    """(B, 3, S, S) normalised image → (B, out_chans, S / patch, S / patch) image embedding
    ((B, 256, 64, 64) for the official models)."""

    def __init__(self, config: TinyViTConfig) -> None:
        super().__init__()
        dims = config.embed_dims
        num_stages = len(dims)
        if not num_stages or any(len(v) != num_stages for v in (config.depths, config.num_heads, config.window_sizes)):
            raise ValueError("embed_dims, depths, num_heads and window_sizes must have one entry per stage")
        # The official code reshapes the last stage to the 1/16 grid, which only works when every
        # merging but the last halves the resolution; check it here rather than fail in forward.
        grid = config.img_size // 4
        for out_dim in dims[1:]:
            grid = grid if out_dim in _STRIDE_ONE_WIDTHS else (grid + 1) // 2
        if grid != config.img_size // config.patch_size:
            raise ValueError(
                f"stage widths {tuple(dims)} give a {grid}x{grid} output grid, not the "
                f"{config.img_size // config.patch_size}x{config.img_size // config.patch_size} the neck expects"
            )
        self.img_size = config.img_size

        self.patch_embed = PatchEmbed(config.in_chans, dims[0])
        layers: list[nn.Module] = []
        for i in range(num_stages):
            out_dim = dims[min(i + 1, num_stages - 1)]
            downsample = i < num_stages - 1
            if i == 0:
                layers.append(ConvLayer(dims[0], config.depths[0], out_dim, config.mbconv_expand_ratio, downsample))
            else:
                layers.append(
                    BasicLayer(
                        dims[i],
                        config.depths[i],
                        config.num_heads[i],
                        config.window_sizes[i],
                        config.mlp_ratio,
                        config.local_conv_size,
                        out_dim,
                        downsample,
                    )
                )
        self.layers = nn.ModuleList(layers)
        # ImageNet classifier of the original TinyViT: in the checkpoints, unused by forward.
        self.norm_head = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], config.num_classes) if config.num_classes > 0 else nn.Identity()
        self.neck = nn.Sequential(
            nn.Conv2d(dims[-1], config.out_chans, kernel_size=1, bias=False),
            LayerNorm2d(config.out_chans),
            nn.Conv2d(config.out_chans, config.out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(config.out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last from the start: oneDNN's convolutions (the whole first stage) are much
        # faster in it, and the transformer stages' (B, H, W, C) layout is the same memory order.
        x = self.patch_embed(x.contiguous(memory_format=torch.channels_last))
        for layer in self.layers:
            x = layer(x)
        # The neck runs on plain NCHW: oneDNN's channels-last 3x3 convolution at this size rounds
        # about 3x worse (max 8e-6 vs 2.5e-6 from float64 on the embedding), for no speed gain.
        return self.neck(x.permute(0, 3, 1, 2).contiguous())
