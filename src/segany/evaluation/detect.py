"""The ``detect`` protocol: box and mask AP of a text route against a COCO instances file.

Every image of the file is asked for every category name (in category-id order); each returned
mask becomes a detection result with the detector's box (XYWH), its score and the mask's COCO
RLE, and pycocotools' ``COCOeval`` scores them (``bbox`` and ``segm``: AP at IoU .50:.95, AP50,
AP75). Results are only meaningful with trained weights: on random models the numbers are noise.
"""
from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from ..data.datasets import BUILTIN, data_root
from ..data.images import load_image
from ..errors import DatasetError
from ..masks import encode_rles

IOU_TYPES = ("bbox", "segm")
STATS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")


class TextResultLike(Protocol):
    boxes: np.ndarray
    scores: np.ndarray
    masks: np.ndarray

    def category_names(self) -> list[str]: ...


class TextRoute(Protocol):
    def predict(self, image: np.ndarray, text: Sequence[str]) -> TextResultLike: ...


def coco_files(name_or_path: str | os.PathLike) -> tuple[Path, Path]:
    """(instances JSON, image folder) of a built-in COCO dataset (``coco``, ``coco_val2017_tiny``), a
    COCO .json (images in ``../images`` beside its folder, else beside it) or a folder with one
    ``annotations/*.json`` and ``images/``."""
    key = str(name_or_path)
    for name, spec in BUILTIN.items():
        if spec.coco_json and key in (name, spec.folder):
            folder = data_root() / spec.folder
            if not folder.is_dir():
                raise DatasetError(f"dataset {key!r} not found at {folder}: set SEGANY_DATA to the folder holding {spec.folder}/")
            return folder / spec.coco_json, folder / "images"
    path = Path(name_or_path)
    if path.is_dir():
        jsons = sorted((path / "annotations").glob("*.json"))
        if len(jsons) != 1:
            raise DatasetError(f"{path} has no single annotations/*.json COCO instances file")
        return jsons[0], path / "images"
    if path.is_file() and path.suffix.lower() == ".json":
        beside = path.parent.parent / "images"
        return path, beside if beside.is_dir() else path.parent
    raise DatasetError(f"unknown COCO dataset {key!r}: use coco_val2017_tiny, a COCO instances .json or its folder")


def _load_gt(json_path: Path) -> Any:
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(json_path))
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as exc:
        raise DatasetError(f"{json_path} is not a readable COCO instances file: {exc}") from None


def _score(gt: Any, results: list[dict[str, Any]], image_ids: list[int], iou_type: str) -> dict[str, float]:
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {name: 0.0 for name in STATS}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        evaluator = COCOeval(gt, dt, iou_type)
        evaluator.params.imgIds = image_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(max(value, 0.0)) for name, value in zip(STATS, evaluator.stats)}


def evaluate_detect(route: TextRoute, dataset: str | os.PathLike, limit: int | None = None,
                    progress: bool = True) -> dict[str, Any]:
    """Box and mask AP of ``route`` (``predict(image, class_names)``) on the COCO ``dataset``'s first
    ``limit`` images (all by default)."""
    json_path, image_dir = coco_files(dataset)
    gt = _load_gt(json_path)
    categories = sorted(gt.loadCats(gt.getCatIds()), key=lambda c: c["id"])
    if not categories:
        raise DatasetError(f"{json_path} has no categories")
    category_id = {c["name"]: c["id"] for c in categories}
    names = [c["name"] for c in categories]
    image_ids = sorted(gt.getImgIds())[:limit]
    results: list[dict[str, Any]] = []
    for image_id in tqdm(image_ids, unit="image", desc="detect", disable=not progress):
        entry = gt.loadImgs(image_id)[0]
        image = load_image(image_dir / entry["file_name"])
        if image.shape[:2] != (entry["height"], entry["width"]):
            raise DatasetError(f"{entry['file_name']} is {image.shape[1]}x{image.shape[0]}, "
                               f"its COCO entry says {entry['width']}x{entry['height']}")
        result = route.predict(image, names)
        for box, score, name, rle in zip(result.boxes, result.scores, result.category_names(), encode_rles(result.masks)):
            x0, y0, x1, y1 = (float(v) for v in box)
            results.append({"image_id": image_id, "category_id": category_id[name], "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "score": float(score), "segmentation": rle})
    return {
        "dataset": str(dataset), "protocol": "detect", "images": len(image_ids), "detections": len(results),
        **{iou_type: _score(gt, results, image_ids, iou_type) for iou_type in IOU_TYPES},
    }


def format_detect_table(summary: dict[str, Any]) -> str:
    """The AP figures as a small text table."""
    lines = [f"{summary['dataset']}: {summary['images']} image(s), {summary['detections']} detection(s)",
             f"{'':6}" + "".join(f"{name:>10}" for name in STATS)]
    for iou_type in IOU_TYPES:
        lines.append(f"{iou_type:6}" + "".join(f"{summary[iou_type][name]:10.3f}" for name in STATS))
    return "\n".join(lines)
