"""YOLO segmentation labels (Ultralytics' YOLO-seg format) from a COCO instances dict.

``write_yolo(coco, out_dir)`` writes ``labels/<image path>.txt`` per image (the image's
``file_name`` with a ``.txt`` suffix; an image without objects gets an empty file, YOLO's
background image) and ``classes.txt``, one category name per line: a category's class index is
its position among the COCO categories sorted by id. Each line is ``class x1 y1 x2 y2 ...`` with
coordinates divided by the image's width and height (in [0, 1], 6 decimals). YOLO has no
multi-part objects: every part of an object is its own line (one instance per part), and holes
are bridged into their part's outline (:mod:`.polygons`), so even-odd rasterisers keep them open.
Every file is written atomically.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

from ...errors import AnnotationError
from ...fileio import atomic_write_text
from .polygons import DEFAULT_TOLERANCE, annotation_polygons, check_tolerance

LABELS = "labels"
CLASSES = "classes.txt"


def yolo_labels(coco: dict[str, Any], tolerance: float = DEFAULT_TOLERANCE) -> tuple[dict[str, str], list[str]]:
    """({relative label path: file text}, class names) for a COCO instances dict."""
    check_tolerance(tolerance)
    categories = sorted(coco.get("categories") or [], key=lambda c: c["id"])
    class_of = {c["id"]: index for index, c in enumerate(categories)}
    lines: dict[Any, list[str]] = {image["id"]: [] for image in coco["images"]}
    images = {image["id"]: image for image in coco["images"]}
    for ann in coco["annotations"]:
        image = images.get(ann.get("image_id"))
        if image is None:
            raise AnnotationError(f"annotation {ann.get('id')!r} refers to image {ann.get('image_id')!r}, which is not in the file")
        if ann.get("category_id") not in class_of:
            raise AnnotationError(f"annotation {ann.get('id')!r} has category {ann.get('category_id')!r}, which is not in the file")
        width, height = float(image["width"]), float(image["height"])
        for polygon in annotation_polygons(ann, tolerance):
            coords = [min(1.0, max(0.0, v / (width if i % 2 == 0 else height))) for i, v in enumerate(polygon)]
            lines[image["id"]].append(" ".join([str(class_of[ann["category_id"]])] + [f"{v:.6f}" for v in coords]))
    files: dict[str, str] = {}
    for image_id, image_lines in lines.items():
        name = _label_path(images[image_id]["file_name"])
        if name in files:
            raise AnnotationError(f"two images map to the same label file {name} (same name, other extension?)")
        files[name] = "".join(line + "\n" for line in image_lines)
    return files, [str(c["name"]) for c in categories]


def write_yolo(coco: dict[str, Any], out_dir: str | os.PathLike, tolerance: float = DEFAULT_TOLERANCE) -> list[Path]:
    """Write ``labels/*.txt`` and ``classes.txt`` under ``out_dir`` (see the module docstring);
    returns the label files written."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise AnnotationError(f"output {out} exists and is not a folder")
    files, names = yolo_labels(coco, tolerance)
    written = [atomic_write_text(out / LABELS / name, text) for name, text in files.items()]
    atomic_write_text(out / CLASSES, "".join(n + "\n" for n in names))
    return written


def _label_path(file_name: str) -> str:
    """``file_name`` with a .txt suffix, kept inside the labels folder (absolute or ``..`` paths
    keep only their last part)."""
    path = PurePosixPath(str(file_name).replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.name:
        path = PurePosixPath(path.name or "image")
    return str(path.with_suffix(".txt"))
