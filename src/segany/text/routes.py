"""The three text routes by name, built on any segany model through :mod:`segany.engine`."""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..engine import MaskGenerator, Predictor
from ..errors import ConfigError
from .clip import CLIP_THRESHOLD, Clip, ClipTextPredictor
from .detectors import BOX_THRESHOLD, DETECTORS, OWL_THRESHOLD, TEXT_THRESHOLD, GroundingDino, Owlv2
from .labeler import TextRoute
from .predictor import TextPredictor

ROUTES = ("grounding-dino", "owlv2", "clip")
GENERATOR_OPTIONS = ("points_per_side", "pred_iou_thresh", "stability_score_thresh", "box_nms_thresh")


def route_settings(route: str, detector: str | os.PathLike | None = None, clip: str | os.PathLike | None = None,
                   box_threshold: float | None = None, text_threshold: float = TEXT_THRESHOLD,
                   clip_threshold: float = CLIP_THRESHOLD) -> dict[str, Any]:
    """Everything that decides a route's results, as plain values (what a batch job records)."""
    if route not in ROUTES:
        raise ConfigError(f"unknown text route {route!r}: choose {', '.join(ROUTES)}")
    if route == "clip":
        return {"route": route, "clip": os.fspath(clip or Clip.default_id), "clip_threshold": float(clip_threshold)}
    settings = {"route": route, "detector": os.fspath(detector or DETECTORS[route].default_id),
                "box_threshold": float(box_threshold if box_threshold is not None else
                                       (BOX_THRESHOLD if route == "grounding-dino" else OWL_THRESHOLD))}
    if route == "grounding-dino":
        settings["text_threshold"] = float(text_threshold)
    return settings


def build_route(model: Any, settings: Mapping[str, Any], device: str = "cpu") -> TextRoute:
    """The route :func:`route_settings` describes, on ``model`` (its predictor, or for ``clip`` its
    generator; ``settings`` may add generator arguments such as ``points_per_side``)."""
    route = settings["route"]
    if route == "clip":
        options = {k: v for k, v in settings.items() if k in GENERATOR_OPTIONS}
        generator = MaskGenerator(model, output_mode="coco_rle", **options)
        return ClipTextPredictor(generator, Clip(settings["clip"], device=device), settings["clip_threshold"])
    if route == "grounding-dino":
        detector: Any = GroundingDino(settings["detector"], device=device, box_threshold=settings["box_threshold"],
                                      text_threshold=settings["text_threshold"])
    else:
        detector = Owlv2(settings["detector"], device=device, threshold=settings["box_threshold"])
    return TextPredictor(detector, Predictor(model))
