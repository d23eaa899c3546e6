"""A seeded procedural dataset of textured shapes with occlusions, written as a COCO instances file.

For proving that training learns without pretrained weights (``benchmarks/train.py``) and for tests:
each image has a textured background (gradient, stripes, noise) and 2-4 shapes (ellipses, rectangles,
triangles, stars) with their own colour and texture, drawn in order so later shapes occlude earlier
ones; each object's mask is its visible part (objects left with too few pixels are dropped).
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..fileio import atomic_write_json, ensure_directory
from ..masks import mask_bbox_xywh, uncompressed_rles

MIN_VISIBLE = 0.002  # of the image area


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """An HxWx3 float texture: a colour, a gradient, stripes of a random period and angle, noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, np.pi)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * rng.uniform(4, 30) * np.pi)
    base, other = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    mix = (rng.uniform(0.1, 0.5) * stripes + rng.uniform(-0.5, 0.5) * (xx - yy))[..., None]
    noise = rng.normal(0, rng.uniform(3, 20), (size, size, 3))
    return base + mix * (other - base) + noise


def _shape_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cx, cy = rng.uniform(0.15, 0.85, 2) * size
    r = rng.uniform(0.08, 0.3) * size
    kind = rng.integers(4)
    if kind == 0:
        cv2.ellipse(mask, (int(cx), int(cy)), (int(r), int(r * rng.uniform(0.4, 1))), float(rng.uniform(0, 180)),
                    0, 360, 1, -1)
    else:
        count = (4, 3, 10)[kind - 1]
        angles = np.linspace(0, 2 * np.pi, count, endpoint=False) + rng.uniform(0, np.pi)
        radii = np.full(count, r) * (np.where(np.arange(count) % 2, 0.45, 1.0) if kind == 3 else rng.uniform(0.7, 1.0, count))
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1)
    return mask.astype(bool)


def shapes_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(HxWx3 uint8 image, (N, H, W) bool visible masks) of one procedural scene."""
    image = _texture(rng, size)
    masks: list[np.ndarray] = []
    for _ in range(int(rng.integers(2, 5))):
        shape = _shape_mask(rng, size)
        image[shape] = _texture(rng, size)[shape]
        masks = [m & ~shape for m in masks] + [shape]
    image = cv2.GaussianBlur(np.clip(image, 0, 255).astype(np.uint8), (3, 3), 0)
    kept = [m for m in masks if m.mean() >= MIN_VISIBLE]
    return image, np.stack(kept) if kept else np.zeros((0, size, size), bool)


def write_shapes_dataset(folder: str | os.PathLike, count: int, size: int = 128, seed: int = 0) -> Path:
    """``folder/images/*.png`` and ``folder/annotations/instances.json``; returns the JSON's path."""
    root = ensure_directory(folder, "dataset folder")
    image_dir = ensure_directory(root / "images", "dataset folder")
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for index in range(count):
        image, masks = shapes_image(rng, size)
        name = f"shapes_{index:05d}.png"
        cv2.imwrite(str(image_dir / name), image[..., ::-1])
        images.append({"id": index + 1, "file_name": name, "height": size, "width": size})
        for mask, rle in zip(masks, uncompressed_rles(masks)):
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": 1, "iscrowd": 0,
                                "segmentation": rle, "area": int(mask.sum()), "bbox": mask_bbox_xywh(mask)})
    path = root / "annotations" / "instances.json"
    atomic_write_json(path, {"images": images, "annotations": annotations,
                             "categories": [{"id": 1, "name": "shape"}]})
    return path
