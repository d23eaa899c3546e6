"""Small building blocks shared by the encoder, prompt encoder and decoder."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fused import linear_act


class MLPBlock(nn.Module):
    """Two-layer feed-forward block (``lin1`` → activation → ``lin2``)."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(linear_act(x, self.lin1, self.act))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def layer_norm_last(x: torch.Tensor, norm: LayerNorm2d) -> torch.Tensor:
    """``norm`` (a :class:`LayerNorm2d`) applied to channels-last data: over the last axis of (..., C).

    Lets channels-last code paths use the fused LayerNorm kernel with the module's own weights.
    """
    return F.layer_norm(x, norm.weight.shape, norm.weight, norm.bias, norm.eps)
