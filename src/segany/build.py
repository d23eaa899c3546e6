"""Building models from names or configs, and loading them with weights."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .classic.model import CLASSIC_NAME, ClassicModel
from .errors import ConfigError, WeightsUnavailableError
from .models.sam import Sam
from .registry import MODELS, NameOrConfig, resolve_config
from .weights import ensure_weights, load_weights, read_state_dict


def _is_classic(name_or_config: NameOrConfig) -> bool:
    return isinstance(name_or_config, str) and name_or_config == CLASSIC_NAME


def _is_folder(name_or_config: NameOrConfig) -> bool:
    """A transformers model folder (not a zoo name that happens to name a folder too)."""
    return isinstance(name_or_config, (str, os.PathLike)) and str(name_or_config) not in MODELS and Path(name_or_config).is_dir()


def build_model(name_or_config: NameOrConfig) -> Sam | ClassicModel:
    """The architecture with freshly initialised weights, in eval mode (``"classic"``: the weight-free engine).

    Works under ``with torch.device("meta"):`` to inspect shapes without allocating memory.
    """
    if _is_classic(name_or_config):
        return ClassicModel()
    return Sam(resolve_config(name_or_config)).eval()


def load_model(
    name_or_config: NameOrConfig,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> Sam | ClassicModel:
    """Build and load weights: ``checkpoint`` if given, else the zoo's (downloaded and cached).

    ``name_or_config`` may be a transformers ``SamModel.save_pretrained`` folder: the architecture
    comes from its ``config.json`` and, without ``checkpoint``, the weights from its
    ``model.safetensors`` (or ``pytorch_model.bin``). ``"classic"`` needs no weights and returns
    the :class:`~segany.classic.ClassicModel` engine.
    """
    if _is_classic(name_or_config):
        if checkpoint is not None:
            raise ConfigError("the classic engine has no weights: drop the checkpoint")
        return ClassicModel()
    config = resolve_config(name_or_config)
    if checkpoint is None and _is_folder(name_or_config):
        checkpoint = name_or_config
    if checkpoint is None:
        if config.name not in MODELS:
            raise WeightsUnavailableError(f"model {config.name!r} is not in the zoo: pass checkpoint=PATH")
        checkpoint = ensure_weights(config.name, progress=progress)
    state_dict = read_state_dict(checkpoint)
    model = Sam(config)
    load_weights(model, state_dict, source=f"checkpoint {checkpoint}")
    return model.eval().to(device)
