"""How good a classic mask looks without ground truth: the engine's stand-in for SAM's predicted IoU."""
from __future__ import annotations

import cv2
import numpy as np

_RING = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))


def gradient_magnitude(bgr: np.ndarray) -> np.ndarray:
    """(H, W) float32 Sobel gradient magnitude of a BGR uint8 image, the same bits on every run.

    The derivatives are integers (``CV_16S``), their sum of squares is exact in float32 (below
    2**24) and numpy's square root is correctly rounded, so the result is a pure function of the
    image. ``cv2.magnitude`` is not: its vector and scalar paths round differently, and which
    pixels take which depends on where the output array happens to lie in memory, which made
    scores differ between identical runs.
    """
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    gx = cv2.Sobel(gray, cv2.CV_16S, 1, 0).astype(np.int32)
    gy = cv2.Sobel(gray, cv2.CV_16S, 0, 1).astype(np.int32)
    return np.sqrt((gx * gx + gy * gy).astype(np.float32))


def boundary(mask: np.ndarray) -> np.ndarray:
    """The one-pixel inner boundary of a bool mask."""
    m = mask.astype(np.uint8)
    return (m - cv2.erode(m, _RING, borderType=cv2.BORDER_REPLICATE)).astype(bool)


def boundary_contrast(mask: np.ndarray, gradient: np.ndarray) -> float:
    """In [0, 1): mean gradient magnitude on the mask's boundary relative to the image's mean gradient,
    ``b / (b + g)``; a mask whose outline follows strong edges scores high, one cutting through flat
    or textured regions scores low. 0 for an empty or full mask."""
    edge = boundary(mask)
    if not edge.any() or mask.all():
        return 0.0
    on_boundary = float(gradient[edge].mean())
    overall = float(gradient.mean()) + 1e-6
    return on_boundary / (on_boundary + overall)
