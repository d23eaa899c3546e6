"""The built-in engine families, registered with :mod:`segany.engine` on first use.

SAM (SAM 1 ViT-B/L/H and MobileSAM: one :class:`~segany.models.sam.Sam` network), SAM 2 / 2.1
(:class:`~segany.models.sam2.Sam2`) and the weight-free classic engine. Each says which models and predictors are its own, how to build its
predictor and generator, and which official generator arguments it honours.
"""
from __future__ import annotations

from .amg.generator import GENERATOR_OPTIONS, SamMaskGenerator
from .amg.sam2_generator import SAM2_GENERATOR_OPTIONS, Sam2MaskGenerator
from .classic.generator import HONOURED_OPTIONS, SPEED_OPTIONS, ClassicMaskGenerator
from .classic.model import ClassicModel
from .classic.predictor import ClassicPredictor
from .classic.tracker import ClassicVideoPredictor
from .engine import EngineFamily, register_family
from .models.sam import Sam
from .models.sam2 import Sam2
from .predict.predictor import SamPredictor
from .predict.sam2_predictor import Sam2Predictor
from .video.sam2_video import Sam2VideoPredictor


def _sam_browser_decoder(model: Sam) -> bytes:
    """The official web demo's decoder (``return_single_mask``: for one point the best multimask token)."""
    from .deploy.onnx import decoder_bytes

    return decoder_bytes(model, return_single_mask=True)


SAM = register_family(EngineFamily(
    name="sam",
    owns=lambda obj: isinstance(obj, (Sam, SamPredictor)),
    predictor=SamPredictor,
    generator=SamMaskGenerator,
    generator_options=GENERATOR_OPTIONS,
    browser_decoder=_sam_browser_decoder,
))
CLASSIC = register_family(EngineFamily(
    name="classic",
    owns=lambda obj: isinstance(obj, (ClassicModel, ClassicPredictor)),
    predictor=ClassicPredictor,
    generator=ClassicMaskGenerator,
    generator_options=HONOURED_OPTIONS | SPEED_OPTIONS,
    video_predictor=ClassicVideoPredictor,
))
SAM2 = register_family(EngineFamily(
    name="sam2",
    owns=lambda obj: isinstance(obj, (Sam2, Sam2Predictor)),
    predictor=Sam2Predictor,
    generator=Sam2MaskGenerator,
    generator_options=SAM2_GENERATOR_OPTIONS,
    video_predictor=Sam2VideoPredictor,
))
