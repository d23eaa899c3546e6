"""What each fine-tuning mode trains, LoRA adapters, gradient checkpointing and the official-format export.

``decoder``: the prompt encoder and mask decoder (the image encoder frozen, its features cached);
``lora``: low-rank adapters on the image encoder's attention projections plus the prompt encoder and
decoder; ``full``: everything on the image path (SAM 2's video memory modules stay frozen; the
groups per model family are :mod:`segany.train.heads`'). The LoRA module is this file's own (a few lines; ``peft`` would add a
dependency for one wrapper): it wraps an ``nn.Linear`` and is merged into the plain weight on export, so
the checkpoint has exactly the official keys.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from .heads import SAM_FAMILY, Family, family

MODES = ("decoder", "lora", "full")
LORA_TARGETS = ("qkv", "proj")  # the attention projections of SAM's ViT, MobileSAM's TinyViT and SAM 2's Hiera
ATTENTION_CLASSES = ("Attention", "MultiScaleAttention")


class LoRALinear(nn.Module):
    """``base(x) + scale * B(A(x))`` with rank-r ``A``, ``B`` (``B`` starts at zero: no change at first)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    @property
    def weight(self) -> torch.Tensor:  # modules that read ``.weight`` directly see the merged one
        return self.merged_weight()

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def merged_weight(self) -> torch.Tensor:
        return self.base.weight + self.scale * (self.lora_b @ self.lora_a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * (x @ self.lora_a.t() @ self.lora_b.t())


def _attention_linears(encoder: nn.Module) -> list[tuple[nn.Module, str]]:
    """(parent, attribute) of every attention projection ``nn.Linear`` in the image encoder."""
    found = []
    for module in encoder.modules():
        if type(module).__name__ in ATTENTION_CLASSES:
            found += [(module, name) for name in LORA_TARGETS if isinstance(getattr(module, name, None), nn.Linear)]
    return found


def add_lora(model: nn.Module, rank: int = 4, alpha: float = 4.0) -> int:
    """Wrap the image encoder's attention projections in :class:`LoRALinear`; returns how many."""
    if rank < 1:
        raise ConfigError(f"LoRA rank must be >= 1, got {rank}")
    targets = _attention_linears(model.image_encoder)
    if not targets:
        raise ConfigError(f"{type(model.image_encoder).__name__} has no attention projections to adapt")
    for parent, name in targets:
        setattr(parent, name, LoRALinear(getattr(parent, name), rank, alpha))
    return len(targets)


def is_trained(name: str, mode: str, groups: Family = SAM_FAMILY) -> bool:
    """Whether parameter ``name`` of a model of ``groups`` (SAM 1 by default) is trained in ``mode``."""
    if name.startswith(groups.heads):
        return True
    if mode == "full":
        return name.startswith((groups.encoder, *groups.image_path)) if groups.image_path else True
    return mode == "lora" and (name.endswith((".lora_a", ".lora_b")))


def prepare_mode(model: nn.Module, mode: str, lora_rank: int = 4, lora_alpha: float = 4.0) -> list[str]:
    """Set ``requires_grad`` for ``mode`` (adding LoRA adapters for ``lora``); returns the trained parameter names."""
    if mode not in MODES:
        raise ConfigError(f"unknown training mode {mode!r}; choose from {', '.join(MODES)}")
    if mode == "lora":
        add_lora(model, lora_rank, lora_alpha)
    groups = family(model)
    trained = []
    for name, param in model.named_parameters():
        param.requires_grad_(is_trained(name, mode, groups))
        if param.requires_grad:
            trained.append(name)
    return trained


def official_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights under the official keys, LoRA adapters merged into their linears (detached, on CPU)."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            prefix = f"{name}." if name else ""
            for key in ("base.weight", "base.bias", "lora_a", "lora_b"):
                state.pop(prefix + key, None)
            state[prefix + "weight"] = module.merged_weight().detach().cpu().clone()
            if module.base.bias is not None:
                state[prefix + "bias"] = module.base.bias.detach().cpu().clone()
    return state


def _checkpointed(forward: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any) -> Any:
        if not torch.is_grad_enabled():
            return forward(*args)
        return checkpoint(forward, *args, use_reentrant=False)
    return run


def enable_gradient_checkpointing(encoder: nn.Module) -> int:
    """Recompute each encoder block in the backward pass instead of keeping its activations; returns how many blocks."""
    count = 0
    for module in encoder.modules():
        if isinstance(getattr(module, "blocks", None), nn.ModuleList):
            for block in module.blocks:
                block.forward = _checkpointed(block.forward)
                count += 1
    return count
