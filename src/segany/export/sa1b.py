"""SA-1B style JSON for one image: ``image`` info and ``annotations`` with COCO RLE masks.

The layout of the Segment Anything 1B dataset files, so tools written for SA-1B read it. The
annotations are the generator's records (``output_mode="coco_rle"``), numbered from 1.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

from ..errors import GeneratorArgumentError

ANNOTATION_KEYS = ("segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box")


def sa1b_document(
    records: Iterable[dict[str, Any]],
    file_name: str,
    height: int,
    width: int,
    image_id: int = 0,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One image's masks as an SA-1B document; ``extra`` lands under the ``"segany"`` key."""
    annotations = []
    for number, record in enumerate(records, start=1):
        segmentation = record["segmentation"]
        if not (isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), str)):
            raise GeneratorArgumentError("SA-1B annotations need COCO RLE segmentations: generate with output_mode='coco_rle'")
        annotation = {"id": number, **{key: record[key] for key in ANNOTATION_KEYS}}
        for key in ("predicted_iou", "stability_score"):  # NaN (an empty mask's 0/0 stability) is not JSON
            if not math.isfinite(annotation[key]):
                annotation[key] = None
        annotations.append(annotation)
    document: dict[str, Any] = {
        "image": {"image_id": image_id, "file_name": file_name, "height": int(height), "width": int(width)},
        "annotations": annotations,
    }
    if extra:
        document["segany"] = extra
    return document
