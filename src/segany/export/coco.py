"""COCO instances JSON assembled from per-image SA-1B documents (pycocotools ``COCO()`` loads it).

Every mask becomes an annotation of the single category ``object`` with its COCO RLE, area and
XYWH box; the generator's scores ride along (``score`` = predicted IoU, ``stability_score``,
``point_coords``, ``crop_box``) so the file also works as a detection-results file.
"""
from __future__ import annotations

from typing import Any, Iterable

CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}


def coco_instances(documents: Iterable[dict[str, Any]], description: str = "segany everything") -> dict[str, Any]:
    """One COCO instances dict from SA-1B documents; images and annotations are numbered from 1."""
    images, annotations = [], []
    for image_id, document in enumerate(documents, start=1):
        info = document["image"]
        images.append({"id": image_id, "file_name": info["file_name"], "height": info["height"], "width": info["width"]})
        for ann in document["annotations"]:
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": CATEGORY["id"],
                "segmentation": ann["segmentation"],
                "area": ann["area"],
                "bbox": ann["bbox"],
                "iscrowd": 0,
                "score": ann["predicted_iou"],
                "stability_score": ann["stability_score"],
                "point_coords": ann["point_coords"],
                "crop_box": ann["crop_box"],
            })
    return {
        "info": {"description": description},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [CATEGORY],
    }
