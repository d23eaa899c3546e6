"""Building models from names or configs, and loading them with weights."""
from __future__ import annotations

import os

import torch

from .checkpoints import ensure_weights, load_weights, read_state_dict
from .errors import WeightsUnavailableError
from .models.sam import Sam
from .zoo import MODELS, NameOrConfig, resolve_config


def build_model(name_or_config: NameOrConfig) -> Sam:
    """The architecture with freshly initialised weights, in eval mode.

    Works under ``with torch.device("meta"):`` to inspect shapes without allocating memory.
    """
    return Sam(resolve_config(name_or_config)).eval()


def load_model(
    name_or_config: NameOrConfig,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> Sam:
    """Build and load weights: ``checkpoint`` if given, else the zoo's (downloaded and cached)."""
    config = resolve_config(name_or_config)
    if checkpoint is None:
        if config.name not in MODELS:
            raise WeightsUnavailableError(f"model {config.name!r} is not in the zoo: pass checkpoint=PATH")
        checkpoint = ensure_weights(config.name, progress=progress)
    state_dict = read_state_dict(checkpoint)
    model = Sam(config)
    load_weights(model, state_dict, source=f"checkpoint {checkpoint}")
    return model.eval().to(device)
