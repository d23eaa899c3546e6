"""Text → masks: a detector's boxes decoded by a segany predictor (Grounded-SAM without compiled ops)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..engine import PromptPredictor
from ..errors import PromptError
from ..masks import stability_score
from .detectors import Detections, Detector


@dataclass(frozen=True)
class TextResult:
    """One image's text-prompted masks: the :class:`Detections` (boxes XYXY original pixels, labels,
    categories, detector scores) and per box its (H, W) bool SAM mask, SAM's predicted IoU and
    the mask's stability score."""

    detections: Detections
    masks: np.ndarray
    ious: np.ndarray
    stability: np.ndarray

    def __len__(self) -> int:
        return len(self.detections)

    @property
    def boxes(self) -> np.ndarray:
        return self.detections.boxes

    @property
    def scores(self) -> np.ndarray:
        return self.detections.scores

    @property
    def labels(self) -> list[str]:
        return self.detections.labels

    def category_names(self) -> list[str]:
        """Each mask's class name (its category in ``detections.classes``)."""
        return [self.detections.classes[i] for i in self.detections.categories]

    def records(self) -> list[dict[str, Any]]:
        """The masks as generator records (``output_mode="coco_rle"``) plus ``category``, ``label`` and
        ``detector_score``: what :func:`segany.batch.label_images` writes."""
        from ..masks import encode_rles, mask_bbox_xywh

        records, names = [], self.category_names()
        for i, rle in enumerate(encode_rles(self.masks)):
            x0, y0, x1, y1 = (float(v) for v in self.boxes[i])
            records.append({
                "segmentation": rle, "area": int(self.masks[i].sum()), "bbox": mask_bbox_xywh(self.masks[i]),
                "predicted_iou": float(self.ious[i]), "point_coords": [[(x0 + x1) / 2, (y0 + y1) / 2]],
                "stability_score": float(self.stability[i]), "crop_box": [0, 0, self.masks.shape[2], self.masks.shape[1]],
                "category": names[i], "label": self.labels[i], "detector_score": float(self.scores[i]),
            })
        return records


def _mask_threshold(predictor: Any) -> float:
    model = getattr(predictor, "model", None)
    return float(getattr(predictor, "mask_threshold", getattr(model, "mask_threshold", 0.0)))


def decode_boxes(predictor: PromptPredictor, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Single-mask SAM outputs for (N, 4) XYXY ``boxes`` on the predictor's current image:
    (N, H, W) bool masks, (N,) predicted IoUs, (N,) stability scores.

    Every box is decoded in one batch: through ``transform.apply_boxes_torch`` + ``predict_torch``
    (the official SAM 1 route), else through ``predict`` with (N, 4) boxes (SAM 2's predictor takes
    several); an engine that takes one box at a time (``classic``) gets one ``predict`` call per box.
    """
    height, width = predictor.original_size or (0, 0)
    if len(boxes) == 0:
        return np.zeros((0, height, width), bool), np.zeros(0, np.float32), np.zeros(0, np.float32)
    threshold = _mask_threshold(predictor)
    transform = getattr(predictor, "transform", None)
    if transform is not None:
        device = getattr(predictor, "device", "cpu")
        boxes_t = transform.apply_boxes_torch(torch.as_tensor(boxes, dtype=torch.float32, device=device),
                                              predictor.original_size)
        logits, ious, _ = predictor.predict_torch(None, None, boxes_t, multimask_output=False, return_logits=True)
        logits, ious = logits[:, 0].float().cpu(), ious[:, 0].float().cpu()
    else:
        try:
            masks, scores, _ = predictor.predict(box=np.asarray(boxes, np.float64), multimask_output=False,
                                                 return_logits=True)
            outputs = [(m, s) for m, s in zip(np.asarray(masks).reshape(len(boxes), -1, height, width),
                                              np.asarray(scores).reshape(len(boxes), -1))]
        except PromptError:  # one box per call
            outputs = [predictor.predict(box=np.asarray(b, np.float64), multimask_output=False, return_logits=True)[:2]
                       for b in boxes]
        logits = torch.stack([torch.as_tensor(np.asarray(m[0], np.float32)) for m, _ in outputs])
        ious = torch.tensor([float(s[0]) for _, s in outputs])
    stability = stability_score(logits, threshold, 1.0)
    return (logits > threshold).numpy(), ious.numpy().astype(np.float32), stability.numpy().astype(np.float32)


class TextPredictor:
    """Masks from a text prompt: ``TextPredictor(detector, segany.Predictor(model)).predict(image, "dog. person.")``.

    The detector's boxes (per-category NMS applied) are decoded by the predictor as one batch; the
    image's features are computed once per :meth:`predict` call.
    """

    def __init__(self, detector: Detector, predictor: PromptPredictor) -> None:
        self.detector = detector
        self.predictor = predictor

    def predict(self, image: np.ndarray, text: str | Sequence[str]) -> TextResult:
        """A :class:`TextResult` for ``image`` (HWC RGB uint8) and the classes / phrases of ``text``."""
        detections = self.detector.detect(image, text)
        self.predictor.set_image(image)
        return self.decode(detections)

    def decode(self, detections: Detections) -> TextResult:
        """The :class:`TextResult` of ``detections`` on the predictor's current image (set by
        :meth:`predict`, or already holding the image's features: no encoder run here)."""
        masks, ious, stability = decode_boxes(self.predictor, detections.boxes)
        return TextResult(detections, masks, ious, stability)


def draw_labelled_overlay(image: np.ndarray, result: TextResult) -> np.ndarray:
    """``image`` with each mask tinted (:func:`~segany.data.formats.overlay.draw_overlay`), its box
    outlined and ``label score`` written above the box in the mask's colour."""
    import cv2

    from ..data.formats.overlay import draw_overlay, mask_colors

    out = draw_overlay(image, list(result.masks))
    for box, name, score, color in zip(result.boxes, result.category_names(), result.scores, mask_colors(len(result))):
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        color_t = tuple(int(c) for c in color)
        cv2.rectangle(out, (x0, y0), (x1, y1), color_t, 1)
        text = f"{name} {float(score):.2f}"
        (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        top = max(y0 - h - base, 0)
        cv2.rectangle(out, (x0, top), (x0 + w, top + h + base), color_t, -1)
        cv2.putText(out, text, (x0, top + h), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return out
