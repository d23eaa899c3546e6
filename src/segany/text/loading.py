"""Loading Hugging Face models by id or folder, with one clear line when they are not there."""
from __future__ import annotations

import os
from typing import Any

from ..errors import BackendError, ConfigError, WeightsUnavailableError


def hf_cache_dir() -> str:
    """Where transformers caches downloaded models (``$HF_HUB_CACHE``, ``$HF_HOME/hub`` or ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def load_pretrained(model_class: str, id_or_dir: str | os.PathLike, what: str, device: str = "cpu",
                    local_files_only: bool = False) -> tuple[Any, Any]:
    """``(transformers.<model_class>.from_pretrained(id_or_dir), AutoProcessor.from_pretrained(id_or_dir))``
    in eval mode on ``device``.

    A model that is neither a local folder nor cached nor downloadable is a
    :class:`WeightsUnavailableError` naming it and where to put it; a folder or id holding another
    kind of model is a :class:`ConfigError`.
    """
    try:
        import transformers
        from transformers import AutoConfig, AutoProcessor
    except ImportError:
        raise BackendError(f"the {what} model needs transformers: pip install 'segany[text]'") from None
    source = os.fspath(id_or_dir)
    model_class = getattr(transformers, model_class)
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=local_files_only)
        expected = model_class.config_class.model_type
        if config.model_type != expected:
            raise ConfigError(f"{source} is a {config.model_type!r} model, not a {what} ({expected!r}); "
                              f"pass a {what} model id or folder")
        model = model_class.from_pretrained(source, local_files_only=local_files_only)
        processor = AutoProcessor.from_pretrained(source, local_files_only=local_files_only)
    except (OSError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise WeightsUnavailableError(
            f"{what} model {source!r} is not available here ({type(exc).__name__}): download it once online "
            f"(`huggingface-cli download {source}`, cached in {hf_cache_dir()}) or pass a local folder written by "
            f"save_pretrained") from None
    return model.to(device).eval(), processor
