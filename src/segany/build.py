"""Building models from names or configs, and loading them with weights."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .classic.model import CLASSIC_NAME, ClassicModel
from .errors import ConfigError, WeightsUnavailableError
from .models.sam import Sam
from .models.sam2 import Sam2, Sam2Config, build_sam2
from .registry import (HF_SAM2_MODEL_TYPES, MODELS, SAM2_MODELS, NameOrConfig, hugging_face_sam2_config,
                       resolve_config, sam2_config_of)
from .weights import ensure_weights, load_weights, read_state_dict


def _is_classic(name_or_config: NameOrConfig) -> bool:
    return isinstance(name_or_config, str) and name_or_config == CLASSIC_NAME


def _is_folder(name_or_config: NameOrConfig) -> bool:
    """A transformers model folder (not a zoo name that happens to name a folder too)."""
    return isinstance(name_or_config, (str, os.PathLike)) and str(name_or_config) not in MODELS and Path(name_or_config).is_dir()


# SAM 2's image path: what transformers' image-only ``Sam2Model`` holds (the rest is the video memory).
_SAM2_IMAGE_PATH = ("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")


def _hf_sam2_config(name_or_config: NameOrConfig) -> Sam2Config | None:
    """The SAM 2 config of a transformers ``Sam2Model`` / ``Sam2VideoModel`` folder (None otherwise)."""
    if not _is_folder(name_or_config) or not (Path(name_or_config) / "config.json").is_file():
        return None
    path = Path(name_or_config) / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model config file {path} cannot be read as JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("model_type") not in HF_SAM2_MODEL_TYPES:
        return None
    return hugging_face_sam2_config(data, name=Path(name_or_config).name)


def _load_hf_sam2(config: Sam2Config, checkpoint: str | os.PathLike) -> Sam2:
    """A SAM 2 with a transformers checkpoint: an image-only one (no memory tensors) leaves the video
    memory modules at their initial weights; any image-path key missing or left over is refused."""
    sam2 = build_sam2(config)
    state_dict = read_state_dict(checkpoint)
    memory = {k: v for k, v in sam2.state_dict().items() if not k.startswith(_SAM2_IMAGE_PATH)}
    if not any(k in state_dict for k in memory):
        state_dict = {**memory, **state_dict}
    load_weights(sam2, state_dict, source=f"checkpoint {checkpoint}")
    return sam2


def build_model(name_or_config: NameOrConfig) -> Sam | Sam2 | ClassicModel:
    """The architecture with freshly initialised weights, in eval mode (``"classic"``: the weight-free engine).

    Works under ``with torch.device("meta"):`` to inspect shapes without allocating memory.
    """
    if _is_classic(name_or_config):
        return ClassicModel()
    sam2_config = _hf_sam2_config(name_or_config) or sam2_config_of(name_or_config)
    if sam2_config is not None:
        return build_sam2(sam2_config)
    return Sam(resolve_config(name_or_config)).eval()


def load_model(
    name_or_config: NameOrConfig,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> Sam | Sam2 | ClassicModel:
    """Build and load weights: ``checkpoint`` if given, else the zoo's (downloaded and cached).

    ``name_or_config`` may be a transformers ``SamModel.save_pretrained`` folder: the architecture
    comes from its ``config.json`` and, without ``checkpoint``, the weights from its
    ``model.safetensors`` (or ``pytorch_model.bin``). ``"classic"`` needs no weights and returns
    the :class:`~segany.classic.ClassicModel` engine. SAM 2 / 2.1: a zoo name (``"sam2.1_hiera_t"``)
    or an official YAML config (or its flat JSON) with the official ``{"model": state_dict}`` checkpoint,
    or a transformers ``Sam2Model`` folder (``model_type`` ``"sam2"`` / ``"sam2_video"``; an image-only
    one leaves the video memory modules at their initial weights).
    """
    if _is_classic(name_or_config):
        if checkpoint is not None:
            raise ConfigError("the classic engine has no weights: drop the checkpoint")
        return ClassicModel()
    hf_sam2 = _hf_sam2_config(name_or_config)
    if hf_sam2 is not None:
        return _load_hf_sam2(hf_sam2, name_or_config if checkpoint is None else checkpoint).eval().to(device)
    sam2_config = sam2_config_of(name_or_config)
    if sam2_config is not None:
        if checkpoint is None:
            if sam2_config.name not in SAM2_MODELS:
                raise WeightsUnavailableError(f"SAM 2 model {sam2_config.name!r} is not in the zoo: pass checkpoint=PATH")
            checkpoint = ensure_weights(sam2_config.name, progress=progress)
        sam2 = build_sam2(sam2_config)
        load_weights(sam2, read_state_dict(checkpoint), source=f"checkpoint {checkpoint}")
        return sam2.eval().to(device)
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
