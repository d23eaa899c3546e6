"""SA-1B style JSON for one image: ``image`` info and ``annotations`` with COCO RLE masks.

The layout of the Segment Anything 1B dataset files, so tools written for SA-1B read it. The
annotations are the generator's records (``output_mode="coco_rle"``), numbered from 1. Scores
are always numbers: an empty mask's stability score (0/0 in the official formula) is written as
0.0, and any other NaN or infinite score (broken weights) is a :class:`NonFiniteError`.
"""
from __future__ import annotations

import hashlib
import math
from typing import Any, Iterable

from ...errors import GeneratorArgumentError, NonFiniteError

ANNOTATION_KEYS = ("segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box")
OPTIONAL_KEYS = ("category", "label", "detector_score", "caption")  # text-prompted records (segany.text) carry these


def stable_image_id(file_name: str) -> int:
    """A stable id from an image's relative name: the first 53 bits of its sha256 (a JSON-safe integer)."""
    return int.from_bytes(hashlib.sha256(file_name.encode("utf-8")).digest()[:8], "big") >> 11


def sa1b_document(
    records: Iterable[dict[str, Any]],
    file_name: str,
    height: int,
    width: int,
    image_id: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One image's masks as an SA-1B document; ``extra`` lands under the ``"segany"`` key.

    ``image_id`` defaults to :func:`stable_image_id` of ``file_name`` (``segany everything`` passes
    the id of a reference COCO file where it has one).
    """
    annotations = []
    for number, record in enumerate(records, start=1):
        segmentation = record["segmentation"]
        if not (isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), str)):
            raise GeneratorArgumentError("SA-1B annotations need COCO RLE segmentations: generate with output_mode='coco_rle'")
        annotation = {"id": number, **{key: record[key] for key in ANNOTATION_KEYS}}
        annotation.update({key: record[key] for key in OPTIONAL_KEYS if key in record})
        for key in ("predicted_iou", "stability_score"):
            if math.isfinite(annotation[key]):
                continue
            if key == "stability_score" and annotation["area"] == 0:
                annotation[key] = 0.0  # an empty mask: nothing is stable about it
            else:
                raise NonFiniteError(f"{file_name}: mask {number}'s {key} is {annotation[key]}: are the model's weights broken?")
        annotations.append(annotation)
    document: dict[str, Any] = {
        "image": {"image_id": stable_image_id(file_name) if image_id is None else image_id, "file_name": file_name, "height": int(height), "width": int(width)},
        "annotations": annotations,
    }
    if extra:
        document["segany"] = extra
    return document
