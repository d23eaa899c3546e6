"""Binary masks as data: COCO run-length encoding (pycocotools), areas and bounding boxes."""
from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def encode_rle(mask: np.ndarray) -> dict:
    """HxW bool mask → COCO RLE ``{"size": [H, W], "counts": str}`` (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8, copy=False)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def encode_rles(masks: np.ndarray) -> list[dict]:
    """NxHxW bool masks → N COCO RLEs, encoded in one pycocotools call."""
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8, copy=False)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def decode_rle(rle: dict) -> np.ndarray:
    """COCO RLE (compressed string or bytes counts, or uncompressed list counts) → HxW bool mask."""
    if isinstance(rle.get("counts"), list):
        rle = mask_utils.frPyObjects(rle, *rle["size"])
    elif isinstance(rle.get("counts"), str):
        rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return mask_utils.decode(rle).astype(bool)


def mask_bbox_xywh(mask: np.ndarray) -> list[int]:
    """Inclusive-pixel bounding box as COCO XYWH (``[x0, y0, x1 - x0, y1 - y0]``, SAM's convention)."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(xs) == 0:
        return [0, 0, 0, 0]
    return [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0]), int(ys[-1] - ys[0])]
