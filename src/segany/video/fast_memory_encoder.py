"""Inference fast path of SAM 2's memory encoder (``MemoryEncoder.forward`` with
``skip_mask_sigmoid=True``, as ``Sam2.encode_memory`` calls it), with the same answers up to float
rounding (tests/test_video_fast.py compares it with the plain path).

The plain encoder runs in NCHW: every ``LayerNorm2d`` is eight element-wise passes over the map
and each ConvNeXt block permutes its map to channels-last and back. Here the stride-16 maps are
(HW, C) channels-last tokens:

- the mask downsampler's strided convolutions run as in the plain path (NCHW: its first maps have
  4 to 64 channels, where a channels-last layer norm is slower);
- the downsampler's final 1x1 convolution and ``pix_feat_proj`` are two matmuls accumulated into
  one (HW, C) token matrix (the frame features' NCHW map read as a transposed operand, not copied);
- each ConvNeXt block: the depthwise convolution on the tokens viewed as a channels-last map, one
  ``F.layer_norm``, ``pwconv1`` and its GELU as one oneDNN kernel (``models.fused.dense_act``) and
  ``pwconv2`` with the layer scale folded into its weights, accumulated into the tokens in place;
- ``out_proj`` writes the (mem_dim, HW) NCHW memory directly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.common import LayerNorm2d
from ..models.fused import dense_act
from ..models.sam2.memory_encoder import CXBlock, MaskDownSampler, MemoryEncoder
from .fast_frames import _pointwise


def _norm_last(x: torch.Tensor, norm: LayerNorm2d) -> torch.Tensor:
    """``norm`` of a channels-last (..., C) tensor over its last axis."""
    return F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps)


def _nchw(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(HW, C) tokens as a (1, C, h, w) map in channels-last memory (a view)."""
    return tokens.view(1, h, w, -1).permute(0, 3, 1, 2)


def _covered(encoder: nn.Module) -> bool:
    """Whether ``encoder`` has the layout this path computes (else the plain path runs)."""
    if type(encoder) is not MemoryEncoder or type(encoder.mask_downsampler) is not MaskDownSampler:
        return False
    steps = list(encoder.mask_downsampler.encoder)
    if len(steps) % 3 != 1 or _pointwise(steps[-1]) is None or _pointwise(encoder.pix_feat_proj) is None:
        return False
    for conv, norm, act in zip(steps[0:-1:3], steps[1:-1:3], steps[2:-1:3]):
        if type(conv) is not nn.Conv2d or type(norm) is not LayerNorm2d or type(act) is not nn.GELU \
                or act.approximate != "none" or not isinstance(conv.padding, tuple):
            return False
    fuser = encoder.fuser
    if not (type(fuser.proj) is nn.Identity or _pointwise(fuser.proj) is not None):
        return False
    if any(type(block) is not CXBlock or type(block.act) is not nn.GELU or block.act.approximate != "none"
           or block.dwconv.kernel_size[0] % 2 == 0 for block in fuser.layers):
        return False
    return type(encoder.out_proj) is nn.Identity or _pointwise(encoder.out_proj) is not None


class MemoryEncoderFast:
    """Callable like ``encoder(pix_feat, masks, skip_mask_sigmoid=True)`` (batch 1, eval, float32),
    channels-last throughout; see the module docstring. Falls back to ``encoder`` itself for other
    layouts, batches, dtypes, or with ``skip_mask_sigmoid=False``."""

    def __init__(self, encoder: nn.Module) -> None:
        self.encoder = encoder
        self.covered = _covered(encoder)

    def __call__(self, pix_feat: torch.Tensor, masks: torch.Tensor,
                 skip_mask_sigmoid: bool = False) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        enc = self.encoder
        if not (self.covered and skip_mask_sigmoid and pix_feat.shape[0] == 1 and masks.shape[0] == 1
                and pix_feat.dtype == masks.dtype == torch.float32 and not enc.training):
            return enc(pix_feat, masks, skip_mask_sigmoid=skip_mask_sigmoid)
        steps = list(enc.mask_downsampler.encoder)
        _, _, h, w = pix_feat.shape
        mask_tokens = enc.mask_downsampler.encoder[:-1](masks).flatten(2)[0].t()  # (HW, C), a transposed view
        last, proj = _pointwise(steps[-1]), _pointwise(enc.pix_feat_proj)
        tokens = torch.addmm(last.bias + proj.bias, mask_tokens, last.weight[:, :, 0, 0].t())
        tokens.addmm_(pix_feat.flatten(2)[0].t(), proj.weight[:, :, 0, 0].t())
        fuser = enc.fuser
        if type(fuser.proj) is not nn.Identity:
            p = _pointwise(fuser.proj)
            tokens = torch.addmm(p.bias, tokens, p.weight[:, :, 0, 0].t())
        for block in fuser.layers:
            y = block.dwconv(_nchw(tokens, h, w)).permute(0, 2, 3, 1).reshape(h * w, -1)
            hidden = dense_act(_norm_last(y, block.norm), block.pwconv1.weight, block.pwconv1.bias, block.act)
            w2, b2 = block.pwconv2.weight, block.pwconv2.bias
            if block.gamma is not None:
                w2, b2 = block.gamma[:, None] * w2, block.gamma * b2
            tokens.addmm_(hidden, w2.t()).add_(b2)
        if type(enc.out_proj) is nn.Identity:
            out = tokens.t().reshape(1, -1, h, w)
        else:
            o = _pointwise(enc.out_proj)
            out = torch.addmm(o.bias[:, None], o.weight[:, :, 0, 0], tokens.t()).view(1, -1, h, w)
        pos = enc.position_encoding(out).to(out.dtype)
        return {"vision_features": out, "vision_pos_enc": [pos]}
