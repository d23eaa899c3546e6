"""Text prompts: open-vocabulary detectors feeding SAM (Grounded-SAM), CLIP over segment-everything,
captions to labelled masks. Needs the ``text`` extra (``pip install segany[text]``: transformers).

* :class:`TextPredictor` — a detector's boxes (:class:`GroundingDino`, :class:`Owlv2`) decoded by a
  segany predictor as one batch.
* :class:`ClipTextPredictor` — the automatic generator's masks kept by CLIP similarity to the labels.
* :class:`TextLabeler` — either route as a generator for :func:`segany.batch.label_images`, with
  fixed classes or BLIP captions (:class:`BlipCaptioner`) as prompts.

This package talks to SAM only through :mod:`segany.engine` (``segany.Predictor`` / ``MaskGenerator``).
"""
from .caption import BLIP, BlipCaptioner
from .clip import CLIP, CLIP_THRESHOLD, Clip, ClipTextPredictor
from .detectors import (
                        BOX_THRESHOLD,
                        DETECTORS,
                        GROUNDING_DINO,
                        NMS_THRESHOLD,
                        OWLV2,
                        TEXT_THRESHOLD,
                        Detections,
                        Detector,
                        GroundingDino,
                        Owlv2,
                        per_category_nms,
                        split_prompt,
)
from .labeler import TextLabeler
from .predictor import TextPredictor, TextResult, decode_boxes, draw_labelled_overlay
from .routes import ROUTES, build_route, route_settings

__all__ = [
    "BLIP", "BOX_THRESHOLD", "CLIP", "CLIP_THRESHOLD", "DETECTORS", "GROUNDING_DINO", "NMS_THRESHOLD", "OWLV2",
    "ROUTES", "TEXT_THRESHOLD", "BlipCaptioner", "Clip", "ClipTextPredictor", "Detections", "Detector", "GroundingDino",
    "Owlv2", "TextLabeler", "TextPredictor", "TextResult", "build_route", "decode_boxes", "draw_labelled_overlay", "per_category_nms",
    "route_settings", "split_prompt",
]
