"""The classic engine: promptable and automatic segmentation with no learned weights (OpenCV).

``segany.load_model("classic")`` returns a :class:`ClassicModel`; ``segany.Predictor(model)``
gives a :class:`ClassicPredictor` (GrabCut seeded by clicks, boxes and previous masks) and the mask
generator a :class:`ClassicMaskGenerator` (a region segmentation merged into object-like regions).
"""
from .generator import ClassicMaskGenerator
from .model import CLASSIC_NAME, ClassicConfig, ClassicModel
from .predictor import ClassicPredictor

__all__ = ["CLASSIC_NAME", "ClassicConfig", "ClassicMaskGenerator", "ClassicModel", "ClassicPredictor"]
