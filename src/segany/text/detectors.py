"""Open-vocabulary box detectors on Hugging Face transformers (pure PyTorch, no compiled ops).

:class:`GroundingDino` (``GroundingDinoForObjectDetection``, e.g. ``IDEA-Research/grounding-dino-tiny``)
grounds the phrases of a prompt; :class:`Owlv2` (``Owlv2ForObjectDetection``, e.g.
``google/owlv2-base-patch16-ensemble``) scores each class name. Both return :class:`Detections`
from the processors' own ``post_process_grounded_object_detection``, in original-image pixels,
followed by per-category non-maximum suppression (:func:`segany.masks.nms`).

A prompt is a list of class names or a string of phrases separated by ``.`` (``"dog. person."``,
Grounding DINO's convention); :func:`split_prompt` turns one into the other.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from ..errors import PromptError
from ..masks import nms
from .loading import load_pretrained

GROUNDING_DINO = "IDEA-Research/grounding-dino-tiny"
OWLV2 = "google/owlv2-base-patch16-ensemble"
BOX_THRESHOLD = 0.35  # Grounded-SAM's defaults
TEXT_THRESHOLD = 0.25
OWL_THRESHOLD = 0.1  # the OWLv2 processor's default: its sigmoid scores run lower than Grounding DINO's
NMS_THRESHOLD = 0.8  # Grounded-SAM's demo


def split_prompt(prompt: str | Sequence[str]) -> list[str]:
    """Class names from ``"dog. person."`` / ``"cat, dog"`` or a list, lower-cased (as Grounding DINO
    reads them), spaces collapsed, duplicates dropped; :class:`PromptError` if none is left."""
    if isinstance(prompt, str):
        parts = prompt.replace(",", ".").split(".")
    else:
        parts = list(prompt)
    classes = list(dict.fromkeys(" ".join(str(p).lower().split()) for p in parts))
    classes = [c for c in classes if c]
    if not classes:
        raise PromptError(f"the text prompt names no class: {prompt!r} (give e.g. \"dog. person.\")")
    return classes


@dataclass(frozen=True)
class Detections:
    """Boxes found in one image: (N, 4) float32 XYXY original pixels, (N,) float32 scores, and per
    box the text it grounded (``labels``) and the index of its class in ``classes`` (``categories``)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: list[str]
    categories: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, keep: np.ndarray) -> Detections:
        """The detections at indices ``keep``, in that order."""
        keep = np.asarray(keep, dtype=np.int64)
        return Detections(self.boxes[keep], self.scores[keep], [self.labels[i] for i in keep],
                          self.categories[keep], self.classes)


class Detector(Protocol):
    """What :class:`~segany.text.TextPredictor` needs of a detector."""

    name: str

    def detect(self, image: np.ndarray, prompt: str | Sequence[str]) -> Detections: ...


class TunableDetector(Detector, Protocol):
    """A detector whose thresholds can be changed per call (what ``segany serve --detector`` takes)."""

    def with_thresholds(self, box_threshold: float | None = None,
                        text_threshold: float | None = None) -> TunableDetector: ...


def per_category_nms(detections: Detections, iou_threshold: float) -> Detections:
    """Greedy NMS within each category (boxes of different categories never suppress each other),
    kept boxes in descending score order."""
    keep = []
    for category in np.unique(detections.categories):
        index = np.flatnonzero(detections.categories == category)
        kept = nms(torch.from_numpy(detections.boxes[index]), torch.from_numpy(detections.scores[index]), iou_threshold)
        keep.extend(index[kept.numpy()])
    keep_arr = np.asarray(keep, dtype=np.int64)
    order = np.argsort(-detections.scores[keep_arr], kind="stable")
    return detections.select(keep_arr[order])


def _pil(image: np.ndarray) -> Any:
    from PIL import Image

    from ..data.images import check_image_array

    return Image.fromarray(check_image_array(image))


def _clip_boxes(boxes: torch.Tensor, height: int, width: int) -> np.ndarray:
    limit = torch.tensor([width, height, width, height], dtype=boxes.dtype)
    return torch.minimum(boxes.detach().float().cpu().clamp(min=0), limit).numpy().astype(np.float32)


class _HFDetector:
    model_class_name = ""
    what = ""
    text_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, id_or_dir: str | os.PathLike, device: str = "cpu", nms_threshold: float = NMS_THRESHOLD,
                 local_files_only: bool = False) -> None:
        self.name = os.fspath(id_or_dir)
        self.device = device
        self.nms_threshold = float(nms_threshold)
        self.model, self.processor = load_pretrained(self.model_class_name, id_or_dir,
                                                     self.what, device, local_files_only)

    def raw(self, image: np.ndarray, classes: list[str]) -> tuple[Any, Any]:
        """The processor's inputs and the model's raw outputs for ``image`` and ``classes``."""
        inputs = self.processor(images=_pil(image), text=self._text(classes), return_tensors="pt",
                                **self.text_options).to(self.device)
        with torch.inference_mode():
            return inputs, self.model(**inputs)

    def detect(self, image: np.ndarray, prompt: str | Sequence[str]) -> Detections:
        """Boxes for the classes of ``prompt`` in ``image`` (HWC RGB uint8), per-category NMS applied."""
        classes = split_prompt(prompt)
        inputs, outputs = self.raw(image, classes)
        height, width = image.shape[:2]
        detections = self._post_process(inputs, outputs, classes, height, width)
        return per_category_nms(detections, self.nms_threshold)

    def _text(self, classes: list[str]) -> Any:
        raise NotImplementedError

    def _post_process(self, inputs: Any, outputs: Any, classes: list[str], height: int, width: int) -> Detections:
        raise NotImplementedError


class GroundingDino(_HFDetector):
    """Grounding DINO: boxes whose best token passes ``box_threshold``, labelled with the phrase of
    the tokens that pass ``text_threshold`` (the processor's post-processing, Grounded-SAM's
    defaults 0.35 / 0.25). A box's category is the class whose tokens it matches most strongly."""

    model_class_name = "GroundingDinoForObjectDetection"
    what = "Grounding DINO"
    default_id = GROUNDING_DINO

    def __init__(self, id_or_dir: str | os.PathLike = GROUNDING_DINO, device: str = "cpu",
                 box_threshold: float = BOX_THRESHOLD, text_threshold: float = TEXT_THRESHOLD,
                 nms_threshold: float = NMS_THRESHOLD, local_files_only: bool = False) -> None:
        super().__init__(id_or_dir, device, nms_threshold, local_files_only)
        self.box_threshold, self.text_threshold = float(box_threshold), float(text_threshold)

    def with_thresholds(self, box_threshold: float | None = None, text_threshold: float | None = None) -> GroundingDino:
        """This detector (same model, no reload) with other thresholds; ``None`` keeps the current one."""
        other = copy.copy(self)
        if box_threshold is not None:
            other.box_threshold = float(box_threshold)
        if text_threshold is not None:
            other.text_threshold = float(text_threshold)
        return other

    def _text(self, classes: list[str]) -> str:
        return " ".join(f"{c}." for c in classes)

    def chunks(self, classes: list[str]) -> list[list[str]]:
        """``classes`` in consecutive groups whose prompt fits the model's text length (a long class
        list, e.g. COCO's 80, is detected group by group)."""
        config = self.model.config
        limit = min(config.max_text_len, getattr(config.text_config, "max_position_embeddings", config.max_text_len))
        groups: list[list[str]] = [[]]
        used = 2  # [CLS] ... [SEP]
        for name in classes:
            length = len(self.processor.tokenizer(name, add_special_tokens=False)["input_ids"]) + 1  # and its "."
            if groups[-1] and used + length > limit:
                groups.append([])
                used = 2
            groups[-1].append(name)
            used += length
        return groups

    def detect(self, image: np.ndarray, prompt: str | Sequence[str]) -> Detections:
        """Boxes for the classes of ``prompt`` (group by group where they do not fit one prompt),
        per-category NMS applied."""
        classes = split_prompt(prompt)
        height, width = image.shape[:2]
        parts, offset = [], 0
        for group in self.chunks(classes):
            inputs, outputs = self.raw(image, group)
            part = self._post_process(inputs, outputs, group, height, width)
            parts.append((part, offset))
            offset += len(group)
        detections = Detections(
            np.concatenate([p.boxes for p, _ in parts]).reshape(-1, 4), np.concatenate([p.scores for p, _ in parts]),
            [label for p, _ in parts for label in p.labels],
            np.concatenate([p.categories + o for p, o in parts]).astype(np.int64), classes)
        return per_category_nms(detections, self.nms_threshold)

    def class_spans(self, input_ids: torch.Tensor, classes: list[str]) -> list[list[int]]:
        """Token positions of each class in the tokenized prompt (``input_ids`` of one image)."""
        tokenizer = self.processor.tokenizer
        ids = input_ids.tolist()
        dot = tokenizer.convert_tokens_to_ids(".")
        spans, position = [], 1  # after [CLS]
        for name in classes:
            length = len(tokenizer(name, add_special_tokens=False)["input_ids"])
            spans.append(list(range(position, position + length)))
            position += length
            if position < len(ids) and ids[position] == dot:
                position += 1
        return spans

    def _post_process(self, inputs: Any, outputs: Any, classes: list[str], height: int, width: int) -> Detections:
        result = self.processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=self.box_threshold, text_threshold=self.text_threshold,
            target_sizes=[(height, width)])[0]
        probs = torch.sigmoid(outputs.logits[0].float())
        kept = probs.max(dim=-1).values > self.box_threshold  # the boxes the processor kept, in its order
        spans = self.class_spans(inputs["input_ids"][0], classes)
        per_class = torch.stack([probs[kept][:, span].max(dim=-1).values if span
                                 else torch.zeros(int(kept.sum()), device=probs.device) for span in spans], dim=1)
        categories = per_class.argmax(dim=1).cpu().numpy().astype(np.int64)
        return Detections(_clip_boxes(result["boxes"], height, width), result["scores"].float().cpu().numpy(),
                          [str(t) for t in result["text_labels"]], categories, classes)


class Owlv2(_HFDetector):
    """OWLv2 / OWL-ViT: each box's best class, kept above ``threshold``; boxes from the
    processor's post-processing on the square the processor padded the image to, clipped to the image."""

    model_class_name = "Owlv2ForObjectDetection"
    what = "OWLv2"
    default_id = OWLV2
    text_options: ClassVar[dict[str, Any]] = {"truncation": True}  # a class name longer than the text model's 16 tokens is cut

    def __init__(self, id_or_dir: str | os.PathLike = OWLV2, device: str = "cpu", threshold: float = OWL_THRESHOLD,
                 nms_threshold: float = NMS_THRESHOLD, local_files_only: bool = False) -> None:
        super().__init__(id_or_dir, device, nms_threshold, local_files_only)
        self.threshold = float(threshold)

    def with_thresholds(self, box_threshold: float | None = None, text_threshold: float | None = None) -> Owlv2:
        """This detector (same model, no reload) with another score threshold (``box_threshold``;
        OWLv2 has no text threshold: ``text_threshold`` is ignored); ``None`` keeps the current one."""
        other = copy.copy(self)
        if box_threshold is not None:
            other.threshold = float(box_threshold)
        return other

    def _text(self, classes: list[str]) -> list[list[str]]:
        return [classes]

    def _post_process(self, inputs: Any, outputs: Any, classes: list[str], height: int, width: int) -> Detections:
        side = max(height, width)  # OWLv2 pads to a square at the bottom / right before resizing
        result = self.processor.post_process_grounded_object_detection(
            outputs, threshold=self.threshold, target_sizes=[(side, side)], text_labels=[classes])[0]
        categories = result["labels"].cpu().numpy().astype(np.int64)
        return Detections(_clip_boxes(result["boxes"], height, width), result["scores"].float().cpu().numpy(),
                          [classes[i] for i in categories], categories, classes)


DETECTORS = {"grounding-dino": GroundingDino, "owlv2": Owlv2}
