"""Linear / convolution followed by GELU or ReLU as one oneDNN kernel on CPU.

The activation is applied while the output is still in cache instead of in a second pass over a
large tensor (the MLP hidden layer, TinyViT's 256x256 MBConv features): the same values up to
float rounding, 20-40% less time for the pair. :func:`linear` runs a narrow linear layer (few input
features: Hiera's early stages) the same way without an activation: oneDNN adds the bias in the
kernel, where ``addmm`` first broadcasts it into the output (a 65536 x 32 → 128 layer took 11 ms
instead of 50 ms on one Sapphire Rapids core; from ~768 input features on it is no faster).

Used only where oneDNN can run it and nothing needs the plain ops — CPU float32 or bfloat16 (where
the CPU has bf16 instructions) under
``torch.inference_mode`` (how the predictor runs), not while compiling (torch.compile fuses them
itself) — and otherwise falls back to the plain ops: training, autograd and ONNX export (run
outside inference mode) see them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_POSTOPS = {nn.GELU: "gelu", nn.ReLU: "relu"}
_MKLDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
# oneDNN's bfloat16 kernels need the CPU's bf16 instructions (AVX-512 BF16 / AMX): without them
# (e.g. AMD Zen 3) they fail to build, and bfloat16 runs the plain ops
_MKLDNN_BF16 = _MKLDNN and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _postop(act: nn.Module) -> str | None:
    name = _POSTOPS.get(type(act))
    if name == "gelu" and act.approximate != "none":
        return None
    return name


def _fusable(x: torch.Tensor) -> torch.dtype | None:
    """The dtype to run the fused kernel in, or None when it cannot run here."""
    if not _MKLDNN or x.device.type != "cpu" or not torch.is_inference_mode_enabled() or torch.compiler.is_compiling():
        return None  # no backward (nor ONNX symbol) for the fused kernel
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
    return dtype if dtype == torch.float32 or (dtype == torch.bfloat16 and _MKLDNN_BF16) else None


def dense_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, act: nn.Module | None) -> torch.Tensor:
    """``act(F.linear(x, weight, bias))`` (weight (out, in)) for GELU (exact), ReLU or no
    activation (``act`` None), fused on CPU."""
    postop = "none" if act is None else _postop(act)
    dtype = _fusable(x) if postop else None
    if dtype is None:
        y = F.linear(x, weight, bias)
        return y if act is None else act(y)
    bias = None if bias is None else bias.to(dtype)
    return torch.ops.mkldnn._linear_pointwise(x.to(dtype), weight.to(dtype), bias, postop, [None], "none")


NARROW = 256  # input features up to which :func:`linear` runs the oneDNN kernel


def linear(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """``layer(x)``; a plain ``nn.Linear`` of at most :data:`NARROW` input features runs as one
    oneDNN kernel on CPU (see the module docstring)."""
    if type(layer) is not nn.Linear or layer.in_features > NARROW:
        return layer(x)
    return dense_act(x, layer.weight, layer.bias, None)


def linear_act(x: torch.Tensor, layer: nn.Module, act: nn.Module) -> torch.Tensor:
    """``act(layer(x))``; fused on CPU for a plain ``nn.Linear`` (not, e.g., a quantised one)."""
    if type(layer) is not nn.Linear:
        return act(layer(x))
    return dense_act(x, layer.weight, layer.bias, act)


def conv_act(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, conv: nn.Conv2d, act: nn.Module
) -> torch.Tensor:
    """``act(conv2d(x, weight, bias))`` with ``conv``'s stride, padding, dilation and groups, fused on CPU.

    ``weight`` / ``bias`` are passed separately so folded parameters (convolution + BatchNorm) can
    be used; the output keeps the input's memory format.
    """
    postop = _postop(act) if isinstance(conv.padding, tuple) else None
    dtype = _fusable(x) if postop else None
    if dtype is None:
        return act(F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups))
    bias = None if bias is None else bias.to(dtype)
    return torch.ops.mkldnn._convolution_pointwise(
        x.to(dtype), weight.to(dtype), bias, list(conv.padding), list(conv.stride), list(conv.dilation),
        conv.groups, postop, [None], "none",
    )
