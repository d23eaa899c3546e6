"""Automatic labelling: a text route as a mask generator the batch engine drives.

:class:`TextLabeler` has the generator interface of :func:`segany.batch.label_images`:
``generate(image)`` returns COCO-RLE records, each with a ``category`` (its class name), the
grounded ``label`` and the ``detector_score``. With fixed classes every image is asked for them;
with a captioner each image's caption is the prompt, and a mask's category is the phrase the
detector grounded in it (its class where no token passed the text threshold).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from ..errors import PromptError
from .caption import BlipCaptioner
from .detectors import split_prompt
from .predictor import TextResult


class TextRoute(Protocol):
    """:class:`~segany.text.TextPredictor` or :class:`~segany.text.ClipTextPredictor`."""

    def predict(self, image: np.ndarray, text: str | Sequence[str]) -> TextResult: ...


class TextLabeler:
    """``generate(image)``: the records of ``route`` for ``classes``, or for each image's caption."""

    def __init__(self, route: TextRoute, classes: str | Sequence[str] | None = None,
                 captioner: BlipCaptioner | None = None) -> None:
        if (classes is None) == (captioner is None):
            raise PromptError("give either classes or a captioner")
        self.route, self.captioner = route, captioner
        self.classes = split_prompt(classes) if classes is not None else None

    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        if self.classes is not None:
            return self.route.predict(image, self.classes).records()
        caption = self.captioner.caption(image)  # type: ignore[union-attr]
        if not any(ch.isalnum() for ch in caption):
            return []
        records = self.route.predict(image, caption).records()
        for record in records:
            record["category"] = record["label"].strip() or record["category"]
            record["caption"] = caption
        return records
