"""The public names of the official ``segment_anything`` package, backed by segany.

Replace ``from segment_anything import ...`` with ``from segany.compat.segment_anything import ...``;
the models are segany's :class:`~segany.models.sam.Sam` (the official checkpoint files load
unchanged), the predictor and generator are segany's with the official signatures.
"""
from .automatic_mask_generator import SamAutomaticMaskGenerator
from .build_sam import build_sam, build_sam_vit_b, build_sam_vit_h, build_sam_vit_l, build_sam_vit_t, sam_model_registry
from .predictor import SamPredictor
from .utils.transforms import ResizeLongestSide

__all__ = [
    "ResizeLongestSide",
    "SamAutomaticMaskGenerator",
    "SamPredictor",
    "build_sam",
    "build_sam_vit_b",
    "build_sam_vit_h",
    "build_sam_vit_l",
    "build_sam_vit_t",
    "sam_model_registry",
]
