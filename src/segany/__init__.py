"""segany: Segment Anything, complete and fast."""
from .build import build_model, load_model
from .everything import MaskGenerator
from .image import load_image
from .models import Sam, SamConfig, TinyViTConfig, ViTConfig
from .predictor import Predictor
from .zoo import MODELS

__version__ = "0.1.0"

__all__ = [
    "MODELS",
    "MaskGenerator",
    "Predictor",
    "Sam",
    "SamConfig",
    "TinyViTConfig",
    "ViTConfig",
    "build_model",
    "load_image",
    "load_model",
]
