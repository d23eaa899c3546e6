"""Masks as COCO polygons (OpenCV contours), and the annotation files they are made from.

``mask_to_polygons`` traces every part of a mask with ``cv2.findContours`` (``RETR_CCOMP``: outer
boundaries and their holes) on the mask upsampled 2x, so each vertex lies a quarter pixel inside
the boundary pixels' outer edges, in COCO's frame where pixel ``i`` spans ``[i, i + 1)``, and
pycocotools' rasteriser gives the boundary pixels back (a polygon through their centres loses the
right and bottom rows). ``tolerance`` is ``cv2.approxPolyDP``'s
epsilon in pixels (0 keeps every step of the outline, which round-trips exactly); a part that
simplification would leave with fewer than 3 points keeps its full outline, so small parts (a single
pixel) survive, and a contour without 3 points is dropped.

Holes: a COCO polygon list is a union of polygons, so a hole cannot be a polygon of its own. Each
hole is instead bridged into its part's outline by a zero-width cut (out to the hole along the
shortest vertex-to-vertex segment, round the hole, back the same way): the cut's two edges cancel
and the hole stays empty under the even-odd rule that pycocotools (and OpenCV's ``fillPoly``) fill
with. A part with its holes is one flat ``[x1, y1, x2, y2, ...]`` list.

``load_instances`` reads what ``segany everything`` writes: a COCO instances file (``--format coco``'s
``annotations.json``), one SA-1B JSON, or a folder of per-image SA-1B JSONs.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ...errors import AnnotationError
from ...masks import decode_rle
from .coco import coco_instances

DEFAULT_TOLERANCE = 1.0


def mask_to_polygons(mask: np.ndarray, tolerance: float = DEFAULT_TOLERANCE) -> list[list[float]]:
    """HxW bool mask → COCO polygons: one flat ``[x1, y1, ...]`` list per part, holes bridged in."""
    check_tolerance(tolerance)
    big = cv2.resize(mask.astype(np.uint8), (2 * mask.shape[1], 2 * mask.shape[0]), interpolation=cv2.INTER_NEAREST)
    contours, hierarchy = cv2.findContours(big, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return []
    simplified = [_simplify(c, 2 * tolerance) for c in contours]
    polygons = []
    for index, (_, _, first_hole, parent) in enumerate(hierarchy[0]):
        if parent >= 0 or simplified[index] is None:
            continue
        outline = simplified[index]
        hole = first_hole
        while hole >= 0:
            if simplified[hole] is not None:
                outline = _bridge(outline, simplified[hole])
            hole = hierarchy[0][hole][0]
        points = (outline + 0.5) / 2  # upsampled pixel centres → COCO coordinates (pixel i spans [i, i + 1))
        polygons.append([round(float(v), 2) for v in points.ravel()])
    return polygons


def check_tolerance(tolerance: float) -> None:
    """Raise :class:`~segany.errors.AnnotationError` unless ``tolerance`` is a finite number >= 0."""
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise AnnotationError(f"tolerance must be a number of pixels >= 0, got {tolerance}")


def _simplify(contour: np.ndarray, epsilon: float) -> np.ndarray | None:
    """The simplified contour as (N, 2) float points; a part too small to keep 3 points simplified
    keeps its full outline, and one without 3 points at all is dropped (``None``)."""
    for points in (cv2.approxPolyDP(contour, epsilon, True) if epsilon > 0 else contour, contour):
        if len(points) >= 3:
            return points.reshape(-1, 2).astype(np.float64)
    return None


def _bridge(outline: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """``outline`` with ``hole`` spliced in through a zero-width cut between their nearest vertices."""
    distances = ((outline[:, None, :] - hole[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmin(distances)), distances.shape)
    around = np.concatenate([hole[j:], hole[: j + 1]])
    return np.concatenate([outline[: i + 1], around, outline[i:]])


def polygon_annotations(coco: dict[str, Any], tolerance: float = DEFAULT_TOLERANCE) -> tuple[dict[str, Any], int]:
    """A copy of a COCO instances dict with every RLE segmentation replaced by polygons (polygon
    ones are kept); annotations whose every part is degenerate are dropped. Returns the dict and
    how many were dropped."""
    check_tolerance(tolerance)
    annotations, dropped = [], 0
    for ann in coco["annotations"]:
        polygons = annotation_polygons(ann, tolerance)
        if not polygons:
            dropped += 1
            continue
        annotations.append({**ann, "segmentation": polygons})
    return {**coco, "annotations": annotations}, dropped


def annotation_polygons(ann: dict[str, Any], tolerance: float = DEFAULT_TOLERANCE) -> list[list[float]]:
    """The polygons of one COCO annotation, whether its segmentation is RLE or already polygons."""
    segmentation = ann.get("segmentation")
    if isinstance(segmentation, list):
        return [list(map(float, p)) for p in segmentation if len(p) >= 6]
    if not (isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation):
        raise AnnotationError(f"annotation {ann.get('id')!r} has no COCO RLE or polygon segmentation")
    try:
        mask = decode_rle(segmentation)
    except Exception as exc:  # pycocotools raises bare errors on malformed counts
        raise AnnotationError(f"annotation {ann.get('id')!r} has an unreadable RLE segmentation: {exc}") from None
    return mask_to_polygons(mask, tolerance)


def load_instances(path: str | os.PathLike) -> dict[str, Any]:
    """A COCO instances dict from a COCO file, an SA-1B JSON or a folder of SA-1B JSONs (recursive)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.json") if p.is_file())
        documents = [d for d in (_read_json(p) for p in files) if _is_sa1b(d)]
        if not documents:
            raise AnnotationError(f"no SA-1B JSON files (with 'image' and 'annotations') under {path}")
        return coco_instances(documents)
    data = _read_json(path)
    if _is_sa1b(data):
        return coco_instances([data])
    if isinstance(data, dict) and isinstance(data.get("images"), list) and isinstance(data.get("annotations"), list):
        return {**data, "categories": data.get("categories") or [{"id": 1, "name": "object"}]}
    raise AnnotationError(f"{path} is neither a COCO instances file (images, annotations) nor an SA-1B JSON (image, annotations)")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AnnotationError(f"annotation file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationError(f"cannot read {path} as JSON: {exc}") from None


def _is_sa1b(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("image"), dict) and isinstance(data.get("annotations"), list)
