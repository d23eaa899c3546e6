"""Weight-free inpainting with OpenCV: diffusion (Telea, Navier-Stokes) and the exemplar /
frequency-selective methods of ``opencv-contrib`` (``cv2.xphoto``: FSR fast / best, shift-map).

Every method runs on a window around the hole (its bounding box plus a margin that grows with the
hole's depth), not on the whole image: the methods only look near the hole, and FSR's cost grows
with the area it is given. Deep holes (far from any known pixel) can be filled coarse to fine
(``multiscale``): the window is halved until the hole is at most ``max_depth`` pixels deep, filled
there, upsampled into the hole's interior, and only the band within ``max_depth`` of the known
pixels is filled again at full resolution. The default method and settings are the best of
``benchmarks/inpaint.py`` (PSNR / SSIM inside holes cut into real photos).
"""
from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from ..errors import InpaintError
from .base import check_inputs, composite, hole_crop, hole_depth

DEFAULT_METHOD = "fsr-fast"  # benchmarks/inpaint.py: the best mean SSIM over hole sizes, PSNR within 0.4 dB of the best
FAST_METHOD = "ns"  # 30-120 ms a hole: for every frame of a video, and interactive previews
Fill = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (RGB uint8, bool hole) -> RGB uint8


def _diffusion(flag: int, radius: int) -> Fill:
    def fill(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
        return cv2.inpaint(image, hole.astype(np.uint8), radius, flag)
    return fill


def _xphoto(algorithm: str, lab: bool = False) -> Fill:
    def fill(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
        xphoto = getattr(cv2, "xphoto", None)
        if xphoto is None:
            raise InpaintError(f"the {algorithm} method needs OpenCV's contrib modules: "
                               "pip install opencv-contrib-python-headless (it replaces opencv-python-headless)")
        source = cv2.cvtColor(image, cv2.COLOR_RGB2Lab) if lab else image
        out = np.zeros_like(source)
        known = np.where(hole, 0, 255).astype(np.uint8)  # xphoto's mask marks the known pixels
        xphoto.inpaint(source, known, out, getattr(xphoto, algorithm))
        return cv2.cvtColor(out, cv2.COLOR_Lab2RGB) if lab else out
    return fill


def method_names() -> tuple[str, ...]:
    return tuple(_METHODS)


_METHODS: dict[str, Callable[[int], Fill]] = {
    "telea": lambda radius: _diffusion(cv2.INPAINT_TELEA, radius),
    "ns": lambda radius: _diffusion(cv2.INPAINT_NS, radius),
    "fsr-fast": lambda radius: _xphoto("INPAINT_FSR_FAST"),
    "fsr-best": lambda radius: _xphoto("INPAINT_FSR_BEST"),
    "shiftmap": lambda radius: _xphoto("INPAINT_SHIFTMAP", lab=True),
}
_COPYING = {"shiftmap"}  # copies whole patches: filling a coarse copy first only blurs it


class ClassicInpainter:
    """OpenCV inpainting of one hole at a time (:class:`~segany.inpaint.base.Inpainter`).

    ``method``: one of :func:`method_names`; ``radius``: the diffusion methods' neighbourhood;
    ``multiscale``: fill holes deeper than ``max_depth`` pixels coarse to fine (not for shift-map,
    which copies whole patches); off by default: it lifts the benchmark's PSNR on large holes a
    little, but at coarse scales a thin ring of known colour around the hole (an object inside
    another) is outweighed by what lies beyond it.
    """

    def __init__(self, method: str = DEFAULT_METHOD, radius: int = 5, multiscale: bool = False, max_depth: int = 12) -> None:
        if method not in _METHODS:
            raise InpaintError(f"unknown inpainting method {method!r}: choose one of {', '.join(_METHODS)}")
        if radius < 1 or max_depth < 2:
            raise InpaintError(f"radius must be >= 1 and max_depth >= 2, got {radius} and {max_depth}")
        self.method, self.radius, self.max_depth = method, radius, max_depth
        self.multiscale = multiscale and method not in _COPYING
        self._fill = _METHODS[method](radius)

    def inpaint(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``image`` (HxWx3 RGB uint8) with the pixels of ``mask`` (HxW) filled."""
        image, mask = check_inputs(image, mask)
        depth = hole_depth(mask)
        crop = hole_crop(mask, margin=max(16, int(np.ceil(depth)) + 2 * self.radius))
        window, hole = image[crop.slices], mask[crop.slices]
        filled = self._coarse_to_fine(window, hole, depth, self.radius) if self.multiscale else self._fill(window, hole)
        out = image.copy()
        out[crop.slices] = composite(window, filled, hole)
        return out

    def _coarse_to_fine(self, window: np.ndarray, hole: np.ndarray, depth: float, radius: float) -> np.ndarray:
        """Fill ``hole`` in ``window``; ``radius``: the neighbourhood at this level, in its pixels
        (halved with each level, so that every level looks as far into the known pixels)."""
        fill = self._fill if radius == self.radius else _METHODS[self.method](max(1, round(radius)))
        if depth <= self.max_depth or min(hole.shape) < 8:
            return fill(window, hole)
        height, width = hole.shape
        small = cv2.resize(window, ((width + 1) // 2, (height + 1) // 2), interpolation=cv2.INTER_AREA)
        # every coarse pixel that averages any hole pixel is hole (x255: a small fraction must not round to 0)
        small_hole = cv2.resize(hole.astype(np.uint8) * 255, small.shape[1::-1], interpolation=cv2.INTER_AREA) > 0
        coarse = self._coarse_to_fine(small, small_hole, depth / 2, radius / 2)
        coarse = composite(small, coarse, small_hole)
        upsampled = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
        distance = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 5)
        band = hole & (distance <= self.max_depth)
        known = composite(window, upsampled, hole & ~band)  # the interior: the coarse fill, now known
        return composite(known, fill(known, band), band)
