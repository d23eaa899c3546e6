"""The 256x256 low-res logit grid shared with SAM, for masks made at any resolution.

SAM's ``low_res_logits`` cover the padded 1024x1024 model input at 1/4 scale: the image, resized so
its longest side is 256, sits in the top-left corner. The classic engine uses the same frame, so
``mask_input`` round-trips between the two engines. Its logits are signed distances to the mask
boundary in low-res pixels (positive inside), clipped to ±``LOGIT_CLIP``: thresholding at 0 gives
the mask back, and the magnitude says how far a pixel is from changing side.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..data.images import preprocess_shape
from ..models.config import DEFAULT_IMAGE_SIZE, DEFAULT_PATCH_SIZE

LOW_RES = 4 * DEFAULT_IMAGE_SIZE // DEFAULT_PATCH_SIZE  # the official SAM models' low-res side, 256

LOGIT_CLIP = 20.0


def lowres_size(height: int, width: int) -> tuple[int, int]:
    """(h, w) of the image inside the 256x256 grid."""
    return preprocess_shape(height, width, LOW_RES)


def distance_to_zero(mask: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance of every nonzero pixel of a uint8 mask to the nearest zero pixel
    (float32, 0 on zeros), the same bits on every run.

    OpenCV's precise transform finds the exact squared distances (integers) but takes their root
    with a vectorised approximation whose last bit depends on the output's memory alignment and
    on how rows are split between threads. Rounding the square back to its integer and taking a
    correctly rounded root undoes that; it is exact while the approximation's error on the square
    stays below 0.5, i.e. for distances up to about 1400 pixels.
    """
    approximate = cv2.distanceTransform(mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.sqrt(np.rint(np.square(approximate, dtype=np.float64))).astype(np.float32)


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Distance to the boundary, positive inside ``mask`` and negative outside (float32, pixels)."""
    m = mask.astype(np.uint8)
    inside = distance_to_zero(m)
    outside = distance_to_zero(1 - m)
    return np.where(mask, inside - 0.5, 0.5 - outside).astype(np.float32)


def mask_to_logits(mask: np.ndarray) -> np.ndarray:
    """HxW bool mask → (256, 256) float32 logits in SAM's low-res frame (padding strongly negative)."""
    h, w = lowres_size(*mask.shape)
    sd = signed_distance(mask)
    scale = h / mask.shape[0]
    small = cv2.resize(sd * scale, (w, h), interpolation=cv2.INTER_AREA)
    out = np.full((LOW_RES, LOW_RES), -LOGIT_CLIP, dtype=np.float32)
    out[:h, :w] = np.clip(small, -LOGIT_CLIP, LOGIT_CLIP)
    return out


def logits_to_image(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(256, 256) logits → (H, W) float32 logits at ``size`` (bilinear, padding cropped)."""
    h, w = lowres_size(*size)
    return cv2.resize(np.ascontiguousarray(logits[:h, :w], dtype=np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
