"""segany: Segment Anything, complete and fast.

``load_model(NAME)`` gives a model; ``Predictor(model)`` and ``MaskGenerator(model)`` give the
engine of its family (:mod:`segany.engine`): the SAM predictor and generator for SAM / MobileSAM,
the classic engine's for ``"classic"``.
"""
from .amg.generator import SamMaskGenerator
from .build import build_model, load_model
from .data.frames import open_frames
from .data.images import load_image
from .engine import (
    AutomaticMaskGenerator,
    ImageFeatures,
    MaskGenerator,
    Predictor,
    PromptPredictor,
    VideoPredictor,
    VideoTracker,
)
from .models import Sam, SamConfig, TinyViTConfig, ViTConfig
from .predict.predictor import SamPredictor
from .registry import MODELS
from .version import __version__

__all__ = [
    "MODELS",
    "__version__",
    "AutomaticMaskGenerator",
    "ImageFeatures",
    "MaskGenerator",
    "Predictor",
    "PromptPredictor",
    "Sam",
    "SamConfig",
    "SamMaskGenerator",
    "SamPredictor",
    "TinyViTConfig",
    "VideoPredictor",
    "VideoTracker",
    "ViTConfig",
    "build_model",
    "load_image",
    "load_model",
    "open_frames",
]
