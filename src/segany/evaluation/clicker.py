"""Simulated users: where the next click goes, given the ground truth and the current prediction.

Two published rules, both built on OpenCV's exact Euclidean distance transform with the image
border counted as boundary (the image is padded by one background pixel first):

* :func:`next_click_ritm` — the RITM / f-BRS clicker behind NoC: the false-negative and
  false-positive regions each get a distance transform; the click goes to the farthest pixel of
  the region whose farthest pixel is farther (positive for false negatives, ties go negative).
* :func:`next_click_sam` — the SAM paper's rule: the farthest pixel from the boundary of the whole
  error region (false negatives and false positives together), positive where it is a false negative.

With an empty prediction both put the first click at the point farthest from the object boundary.
Pixels already clicked are never chosen again. Coordinates are (x, y) pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Click:
    """A simulated click at pixel (x, y); ``positive`` means "this belongs to the object"."""

    x: int
    y: int
    positive: bool


def inner_distance(region: np.ndarray) -> np.ndarray:
    """Euclidean distance from each pixel of ``region`` (HxW bool) to the nearest pixel outside it,
    the outside of the image counting as outside; 0 outside the region."""
    padded = np.pad(region.astype(np.uint8), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


def _errors(gt: np.ndarray, pred: np.ndarray, ignore: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    valid = ~ignore if ignore is not None else np.ones_like(gt)
    return gt & ~pred & valid, ~gt & pred & valid


def _farthest(distance: np.ndarray, clicked: np.ndarray | None) -> tuple[float, int, int]:
    if clicked is not None:
        distance = np.where(clicked, 0.0, distance)
    index = int(np.argmax(distance))  # first maximum in row-major order
    y, x = divmod(index, distance.shape[1])
    return float(distance[y, x]), x, y


def next_click_ritm(gt: np.ndarray, pred: np.ndarray, ignore: np.ndarray | None = None,
                    clicked: np.ndarray | None = None) -> Click | None:
    """The RITM clicker's next click, or None when no error pixel is left to click."""
    fn, fp = _errors(gt, pred, ignore)
    fn_dist, fn_x, fn_y = _farthest(inner_distance(fn), clicked)
    fp_dist, fp_x, fp_y = _farthest(inner_distance(fp), clicked)
    if fn_dist == 0.0 and fp_dist == 0.0:
        return None
    if fn_dist > fp_dist:
        return Click(fn_x, fn_y, True)
    return Click(fp_x, fp_y, False)


def next_click_sam(gt: np.ndarray, pred: np.ndarray, ignore: np.ndarray | None = None,
                   clicked: np.ndarray | None = None) -> Click | None:
    """The SAM paper's next click, or None when no error pixel is left to click."""
    fn, fp = _errors(gt, pred, ignore)
    dist, x, y = _farthest(inner_distance(fn | fp), clicked)
    if dist == 0.0:
        return None
    return Click(x, y, bool(fn[y, x]))
