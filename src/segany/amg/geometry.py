"""Where the automatic mask generator looks: point grids and overlapping image crops.

Points are (x, y) normalised to [0, 1] (scaled to a crop's pixels by the generator); crop boxes
are XYXY pixels of the original image. The layouts are the official generator's, so the same
arguments prompt the model at the same places.
"""
from __future__ import annotations

import math
from itertools import product

import numpy as np


def build_point_grid(n_per_side: int) -> np.ndarray:
    """``n_per_side**2`` (x, y) points at the centres of an even grid over [0, 1]², row by row."""
    half_step = 1 / (2 * n_per_side)
    centres = np.linspace(half_step, 1 - half_step, n_per_side)
    xs = np.tile(centres[None, :], (n_per_side, 1))
    ys = np.tile(centres[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_layer_point_grids(n_per_side: int, n_layers: int, downscale_per_layer: int) -> list[np.ndarray]:
    """One grid per crop layer: layer ``i`` has ``int(n_per_side / downscale_per_layer**i)`` points a side."""
    return [build_point_grid(int(n_per_side / downscale_per_layer**i)) for i in range(n_layers + 1)]


def _crop_length(length: int, n_crops: int, overlap: int) -> int:
    return int(math.ceil((overlap * (n_crops - 1) + length) / n_crops))


def generate_crop_boxes(
    image_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """Crop boxes (XYXY) and their layer index: the whole image, then ``(2**i)**2`` crops in layer ``i``.

    Crops of a layer overlap by ``overlap_ratio`` of the image's short side (scaled down in later
    layers); they are listed column by column (x outer, y inner), as the official generator does.
    """
    height, width = image_size
    boxes, layers = [[0, 0, width, height]], [0]
    short_side = min(height, width)
    for layer in range(1, n_layers + 1):
        n_crops = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / n_crops))
        crop_w = _crop_length(width, n_crops, overlap)
        crop_h = _crop_length(height, n_crops, overlap)
        x0s = [int((crop_w - overlap) * i) for i in range(n_crops)]
        y0s = [int((crop_h - overlap) * i) for i in range(n_crops)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)])
            layers.append(layer)
    return boxes, layers


def near_crop_edge(boxes_xyxy: np.ndarray, crop_box: list[int], image_size: tuple[int, int], tolerance: float = 20.0) -> np.ndarray:
    """Which boxes (image frame) touch an edge of the crop that is not also an edge of the image.

    Such masks are probably cut by the crop, so the generator drops them (a larger crop sees the
    whole object). Within ``tolerance`` pixels counts as touching.
    """
    height, width = image_size
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    crop = np.asarray(crop_box, dtype=np.float32)
    image = np.array([0, 0, width, height], dtype=np.float32)
    at_crop = np.abs(boxes - crop) <= tolerance
    at_image = np.abs(boxes - image) <= tolerance
    return np.any(at_crop & ~at_image, axis=1)
