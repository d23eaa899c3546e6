"""Fine-tuning SAM / MobileSAM on users' own masks: the paper's interactive recipe (``sampler``), its
losses (``losses``, equal to the official SAM 2 trainer's), datasets with augmentation (``data``),
the decoder / LoRA / full modes (``modes``) and the loop writing official-format checkpoints (``loop``)."""
from __future__ import annotations

from .loop import TrainConfig, train

__all__ = ["TrainConfig", "train"]
