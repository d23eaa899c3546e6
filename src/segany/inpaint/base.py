"""What every inpainting engine shares: the interface, input checks, hole dilation, crops.

An engine fills the pixels under a mask from the rest of the image and returns a whole image of
the same size in which only the hole (the mask) changed: ``inpaint(image, mask) -> image``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from ..data.images import check_image_array
from ..errors import InpaintError


@runtime_checkable
class Inpainter(Protocol):
    """Fill a hole: ``image`` HxWx3 RGB uint8, ``mask`` HxW (True / non-zero = fill) →
    HxWx3 RGB uint8, equal to ``image`` outside the mask."""

    def inpaint(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray: ...


def check_inputs(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``image`` as HxWx3 uint8 and ``mask`` as an HxW bool array, or :class:`InpaintError` for a
    mask of another size, an empty mask or one covering the whole image (nothing to fill from)."""
    image = check_image_array(image)
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] in (1, 3, 4):
        mask = mask[..., 0]
    if mask.shape != image.shape[:2]:
        raise InpaintError(f"mask is {mask.shape[1::-1] if mask.ndim == 2 else mask.shape}, "
                           f"image is {image.shape[1]}x{image.shape[0]}: give a mask of the image's size")
    mask = mask.astype(bool, copy=False)
    if not mask.any():
        raise InpaintError("the mask is empty: nothing to fill")
    if mask.all():
        raise InpaintError("the mask covers the whole image: nothing is left to fill it from")
    return image, mask


def dilate_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` grown by ``pixels`` in every direction (an elliptical kernel; 0: unchanged).

    Inpaint Anything dilates SAM's mask (kernel 15 px) before filling: a mask's edge leaves the
    object's blurred outline and its shadow, which the fill would otherwise copy inwards."""
    if pixels < 0:
        raise InpaintError(f"dilation must be >= 0 pixels, got {pixels}")
    mask = np.asarray(mask).astype(bool)
    if pixels == 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def hole_depth(mask: np.ndarray) -> float:
    """How far the hole's innermost pixel is from a known pixel (the L2 distance transform's max)."""
    padded = np.pad(mask.astype(np.uint8), 1)  # the image border is not a known pixel: count it as hole
    return float(cv2.distanceTransform(padded, cv2.DIST_L2, 5).max())


@dataclass(frozen=True)
class Crop:
    """A window ``[y0:y1, x0:x1]`` of the image around the hole."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


def hole_crop(mask: np.ndarray, margin: int) -> Crop:
    """The hole's bounding box grown by ``margin`` pixels, clipped to the image."""
    ys, xs = np.nonzero(mask)
    height, width = mask.shape
    return Crop(max(0, int(ys.min()) - margin), min(height, int(ys.max()) + 1 + margin),
                max(0, int(xs.min()) - margin), min(width, int(xs.max()) + 1 + margin))


def composite(image: np.ndarray, filled: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``filled`` inside the mask, ``image`` everywhere else."""
    return np.where(mask[..., None], filled, image).astype(np.uint8, copy=False)
