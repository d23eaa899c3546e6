"""How good a classic mask looks without ground truth: the engine's stand-in for SAM's predicted IoU."""
from __future__ import annotations

import cv2
import numpy as np

_RING = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))


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
