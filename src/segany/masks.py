"""Binary masks as data: COCO run-length encoding (pycocotools), areas, boxes, NMS, stability
scores and small-region clean-up (OpenCV), with the official generator's exact semantics."""
from __future__ import annotations

import cv2
import numpy as np
import torch
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


def rle_areas(rles: list[dict]) -> list[int]:
    """Foreground pixel counts of COCO RLEs (compressed, string counts), without decoding them."""
    if not rles:
        return []
    coded = [{"size": r["size"], "counts": r["counts"].encode("ascii")} for r in rles]
    return [int(a) for a in mask_utils.area(coded)]


def mask_bbox_xywh(mask: np.ndarray) -> list[int]:
    """Inclusive-pixel bounding box as COCO XYWH (``[x0, y0, x1 - x0, y1 - y0]``, SAM's convention)."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(xs) == 0:
        return [0, 0, 0, 0]
    return [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0]), int(ys[-1] - ys[0])]


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool masks → (N, 4) int64 inclusive-pixel boxes ``[x0, y0, x1, y1]``; empty → zeros."""
    n, height, width = masks.shape
    if n == 0:
        return torch.zeros((0, 4), dtype=torch.int64, device=masks.device)
    return _boxes_from_profiles(masks.any(dim=2), masks.any(dim=1))


def _boxes_from_profiles(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Boxes from which rows (N, H) and columns (N, W) hold a mask pixel."""

    def first_last(profile: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        as_int = profile.to(torch.uint8)
        first = as_int.argmax(dim=1)
        last = profile.shape[1] - 1 - as_int.flip(1).argmax(dim=1)
        return first, last

    x0, x1 = first_last(cols)
    y0, y1 = first_last(rows)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).to(torch.int64)
    return boxes * rows.any(dim=1, keepdim=True)


def logit_statistics(
    logits: torch.Tensor, mask_threshold: float, stability_offset: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stability scores (N,) float32 and boxes (N, 4) of ``logits > mask_threshold`` for (N, H, W) logits.

    Stability is the IoU of the masks thresholded at ``mask_threshold ± stability_offset``: one
    holds the other, so it is ``count(> hi) / count(> lo)`` (NaN where both are empty), computed
    as the official generator does, without keeping the binary masks.
    """
    stability = stability_score(logits, mask_threshold, stability_offset)
    if len(logits) == 0:
        return stability, torch.zeros((0, 4), dtype=torch.int64, device=logits.device)
    rows = logits.amax(dim=2) > mask_threshold
    cols = logits.amax(dim=1) > mask_threshold
    return stability, _boxes_from_profiles(rows, cols)


def stability_score(logits: torch.Tensor, mask_threshold: float = 0.0, offset: float = 1.0) -> torch.Tensor:
    """IoU of ``logits > threshold + offset`` and ``logits > threshold - offset`` per mask, (...,) float32."""
    high = (logits > (mask_threshold + offset)).flatten(-2).sum(-1, dtype=torch.int32)
    low = (logits > (mask_threshold - offset)).flatten(-2).sum(-1, dtype=torch.int32)
    return (high / low).float()


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, block: int = 1024) -> torch.Tensor:
    """Greedy non-maximum suppression with ``torchvision.ops.nms`` semantics, vectorised.

    Boxes XYXY; scores sorted descending with a stable sort (ties keep input order); IoU is
    ``inter / ((area_i + area_j) - inter)`` in the boxes' dtype with areas ``(x2-x1)*(y2-y1)``;
    a box is dropped when its IoU with a kept, higher-scored box is strictly greater than
    ``iou_threshold`` (compared in float64). Returns kept indices (int64) in score order. IoUs
    are computed ``block`` rows at a time, so memory stays ``block * N``.
    """
    if len(boxes) == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, stable=True, descending=True).indices
    x1, y1, x2, y2 = boxes[order].cpu().unbind(dim=1)
    areas = (x2 - x1) * (y2 - y1)
    zero = torch.zeros((), dtype=boxes.dtype)
    count = len(order)
    suppressed = np.zeros(count, dtype=bool)
    keep: list[int] = []
    for start in range(0, count, block):
        stop = min(count, start + block)
        rows, cols = slice(start, stop), slice(start, None)
        width = torch.maximum(zero, torch.minimum(x2[rows, None], x2[None, cols]) - torch.maximum(x1[rows, None], x1[None, cols]))
        height = torch.maximum(zero, torch.minimum(y2[rows, None], y2[None, cols]) - torch.maximum(y1[rows, None], y1[None, cols]))
        inter = width * height
        overlaps = (inter / ((areas[rows, None] + areas[None, cols]) - inter)).double() > iou_threshold
        overlaps_np = overlaps.numpy()
        tail = suppressed[start:]
        for i in range(stop - start):
            if tail[i]:
                continue
            keep.append(start + i)
            tail |= overlaps_np[i]
    return order[torch.tensor(keep, dtype=torch.int64)].to(boxes.device)


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """``torchvision.ops.batched_nms`` with a single category, as SAM's generator calls it.

    Same kept set as :func:`nms`; above 1000 boxes torchvision re-sorts the kept indices by score
    with the default (not necessarily stable) sort, which this reproduces.
    """
    keep = nms(boxes, scores, iou_threshold)
    if boxes.numel() > 4000:
        keep = keep.sort().values
        keep = keep[scores[keep].sort(descending=True)[1]]
    return keep


def remove_small_regions(mask: np.ndarray, min_area: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or drop islands (``"islands"``) smaller than ``min_area`` pixels.

    Components are OpenCV's 8-connected ones. When every island is small, the largest is kept.
    Returns the new HxW bool mask and whether it changed.
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    fill_holes = mode == "holes"
    working = (mask != fill_holes).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(working, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    small = sizes < min_area
    if not small.any():
        return mask, False
    selected = np.zeros(count, dtype=bool)
    if fill_holes:
        selected[0] = True
        selected[1:] = small
    elif small.all():
        selected[int(np.argmax(sizes)) + 1] = True
    else:
        selected[1:] = ~small
    return selected[labels], True


def uncompressed_rles(masks: np.ndarray) -> list[dict]:
    """NxHxW bool masks → uncompressed COCO RLEs ``{"size": [H, W], "counts": [int, ...]}``.

    Counts run down the columns (Fortran order) and start with the background run, which is 0
    when the first pixel is set. One vectorised pass finds every change point.
    """
    n, height, width = masks.shape
    flat = np.ascontiguousarray(masks.transpose(0, 2, 1)).reshape(n, height * width)
    which, where = np.nonzero(flat[:, 1:] != flat[:, :-1])
    bounds = np.searchsorted(which, np.arange(n + 1))
    rles = []
    for i in range(n):
        cuts = np.concatenate([[0], where[bounds[i] : bounds[i + 1]] + 1, [height * width]])
        counts = np.diff(cuts).tolist()
        rles.append({"size": [height, width], "counts": ([0] if flat[i, 0] else []) + counts})
    return rles


def small_components(region: torch.Tensor, max_area: float) -> torch.Tensor:
    """Pixels of the 8-connected components of ``region`` ((..., H, W) bool) with at most
    ``max_area`` pixels (components touching the border too), as a bool tensor of its shape: what
    SAM 2's CUDA ``get_connected_components`` gives its callers, computed with OpenCV."""
    planes = region.reshape(-1, *region.shape[-2:]).cpu().numpy().astype(np.uint8)
    small = np.zeros(planes.shape, dtype=bool)
    for i, plane in enumerate(planes):
        _, labels, stats, _ = cv2.connectedComponentsWithStats(plane, connectivity=8)
        keep = stats[:, cv2.CC_STAT_AREA] <= max_area
        keep[0] = False  # label 0: outside the region
        small[i] = keep[labels]
    return torch.from_numpy(small).reshape(region.shape).to(region.device)


def fill_holes_in_mask_scores(mask: torch.Tensor, max_area: int) -> torch.Tensor:
    """SAM 2's hole filling (official ``utils/misc.fill_holes_in_mask_scores``) on the CPU.

    ``mask`` (N, 1, H, W) logits: every 8-connected component of the background (``<= 0``)
    with at most ``max_area`` pixels — also one touching the border — gets the score 0.1 (a
    small positive logit), the rest is unchanged. The official code needs its CUDA extension for
    the components (and silently skips the step without it); here they are OpenCV's.
    """
    if max_area <= 0:
        raise ValueError(f"max_area must be positive, got {max_area}")
    is_hole = small_components(mask <= 0, max_area)
    return torch.where(is_hole, 0.1, mask) if bool(is_hole.any()) else mask


def clean_mask_scores(masks: torch.Tensor, threshold: float, max_hole_area: float,
                      max_sprinkle_area: float) -> torch.Tensor:
    """The official ``SAM2ImagePredictor`` post-processing of (B, C, h, w) logits, on the CPU: holes
    (background components ``<= threshold`` of at most ``max_hole_area`` pixels) become
    ``threshold + 10``, then sprinkles (foreground components of at most ``max_sprinkle_area``)
    ``threshold - 10``; an area of 0 turns a step off."""
    masks = masks.float()
    if max_hole_area > 0:
        masks = torch.where(small_components(masks <= threshold, max_hole_area), threshold + 10.0, masks)
    if max_sprinkle_area > 0:
        masks = torch.where(small_components(masks > threshold, max_sprinkle_area), threshold - 10.0, masks)
    return masks
