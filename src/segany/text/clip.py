"""CLIP over everything: the automatic generator's masks, each classified by CLIP against the labels.

Each mask's bounding-box region of the image is cropped and embedded by ``CLIPModel`` (e.g.
``openai/clip-vit-base-patch32``); the labels are embedded as text. A mask is kept when its best
label's **raw cosine similarity** reaches ``threshold`` (default 0.25): unlike a softmax over the
labels, a raw similarity does not force every background mask onto some label, and it means the
same with one label as with many. The kept masks' category is that best label and their score
its similarity.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..engine import AutomaticMaskGenerator
from ..masks import decode_rle
from .detectors import Detections, _pil, split_prompt
from .loading import load_pretrained
from .predictor import TextResult

CLIP = "openai/clip-vit-base-patch32"
CLIP_THRESHOLD = 0.25


class Clip:
    """``CLIPModel`` + its processor: cosine similarities of image crops to texts."""

    default_id = CLIP

    def __init__(self, id_or_dir: str | os.PathLike = CLIP, device: str = "cpu", batch_size: int = 32,
                 local_files_only: bool = False) -> None:
        self.name = os.fspath(id_or_dir)
        self.device, self.batch_size = device, int(batch_size)
        self.model, self.processor = load_pretrained("CLIPModel", id_or_dir, "CLIP", device, local_files_only)

    @staticmethod
    def _unit(features: Any) -> torch.Tensor:
        features = getattr(features, "pooler_output", features)  # transformers 5 returns model outputs
        return torch.nn.functional.normalize(features.float(), dim=-1)

    @torch.inference_mode()
    def similarity(self, crops: Sequence[np.ndarray], texts: Sequence[str]) -> np.ndarray:
        """(len(crops), len(texts)) float32 cosine similarities; crops are HWC RGB uint8."""
        if not crops:
            return np.zeros((0, len(texts)), np.float32)
        text_inputs = self.processor(text=list(texts), return_tensors="pt", padding=True).to(self.device)
        text = self._unit(self.model.get_text_features(**text_inputs))
        rows = []
        for start in range(0, len(crops), self.batch_size):
            images = [_pil(c) for c in crops[start:start + self.batch_size]]
            pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
            rows.append(self._unit(self.model.get_image_features(pixel_values=pixels)) @ text.T)
        return torch.cat(rows).cpu().numpy().astype(np.float32)


def bbox_crop(image: np.ndarray, bbox_xywh: Sequence[float]) -> np.ndarray:
    """The image region of an XYWH box (at least one pixel)."""
    x, y, w, h = (int(round(v)) for v in bbox_xywh)
    x, y = min(max(x, 0), image.shape[1] - 1), min(max(y, 0), image.shape[0] - 1)
    return image[y:y + max(h, 1), x:x + max(w, 1)]


class ClipTextPredictor:
    """Masks from a text prompt by CLIP over everything:
    ``ClipTextPredictor(segany.MaskGenerator(model), Clip()).predict(image, "cat, dog")``."""

    def __init__(self, generator: AutomaticMaskGenerator, clip: Clip, threshold: float = CLIP_THRESHOLD) -> None:
        self.generator, self.clip, self.threshold = generator, clip, float(threshold)

    def predict(self, image: np.ndarray, text: str | Sequence[str]) -> TextResult:
        """A :class:`TextResult` of the generator's masks whose best label passes the threshold."""
        classes = split_prompt(text)
        records = self.generator.generate(image)
        similarity = self.clip.similarity([bbox_crop(image, r["bbox"]) for r in records], classes)
        best = similarity.argmax(axis=1) if len(records) else np.zeros(0, np.int64)
        score = similarity[np.arange(len(records)), best] if len(records) else np.zeros(0, np.float32)
        keep = np.flatnonzero(score >= self.threshold)
        keep = keep[np.argsort(-score[keep], kind="stable")]
        masks = np.zeros((len(keep), *image.shape[:2]), bool)
        for row, i in enumerate(keep):
            segmentation = records[i]["segmentation"]
            masks[row] = decode_rle(segmentation) if isinstance(segmentation, dict) else segmentation
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (records[i]["bbox"] for i in keep)],
                         np.float32).reshape(-1, 4)
        detections = Detections(boxes, score[keep].astype(np.float32), [classes[best[i]] for i in keep],
                                best[keep].astype(np.int64), classes)
        ious = np.array([records[i]["predicted_iou"] for i in keep], np.float32)
        stability = np.array([records[i]["stability_score"] for i in keep], np.float32)
        return TextResult(detections, masks, ious, stability)
