"""The SAM paper's interactive prompt simulation for training (its §3 and appendix A).

The first prompt of every object is its ground-truth box (with noise: std 10 % of the side, at most
20 px) or a point drawn uniformly from its mask, chosen at random; each following point is drawn
uniformly from the error region of the previous prediction: a foreground point (label 1) where the
object was missed, a background point (label 0) where the prediction spilled over. The paper runs 8
such points plus 2 iterations with no new point (one at a random place among the 8, one at the end),
the previous low-res logits always fed back as the mask prompt.

Coordinates are (x, y) pixel indices of the model's input frame, as the predictors take them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import PromptError

NO_POINT = -1  # the prompt encoder's padding label: an object whose prediction has no error gets no new point
BOX_NOISE = 0.1
BOX_NOISE_MAX = 20.0


@dataclass
class PromptState:
    """The prompts of N objects so far: points (N, K, 2) with labels (N, K), boxes (N, 4) or None."""

    coords: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray | None

    @property
    def is_single_point(self) -> bool:
        """One point and no box: the ambiguous first prompt that gets multimask output."""
        return self.boxes is None and self.coords.shape[1] == 1

    def add(self, coords: np.ndarray, labels: np.ndarray) -> None:
        """Append one point per object (label ``NO_POINT`` for the objects that get none)."""
        self.coords = np.concatenate([self.coords, coords[:, None].astype(np.float32)], axis=1)
        self.labels = np.concatenate([self.labels, labels[:, None].astype(np.int64)], axis=1)


def _check_masks(masks: np.ndarray, name: str = "masks") -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.dtype != bool:
        raise PromptError(f"{name} must be an (N, H, W) bool array, got {masks.dtype} {masks.shape}")
    return masks


def mask_box(mask: np.ndarray) -> np.ndarray:
    """The tight (x0, y0, x1, y1) box of a non-empty HxW mask (inclusive pixel indices, as SAM's)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        raise PromptError("cannot take the box of an empty mask")
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float32)


def noisy_box(mask: np.ndarray, rng: np.random.Generator, noise: float = BOX_NOISE,
              max_noise: float = BOX_NOISE_MAX) -> np.ndarray:
    """The mask's box, each coordinate moved by N(0, noise * side) clipped to ±max_noise, kept in the image."""
    box = mask_box(mask)
    sides = np.array([box[2] - box[0], box[3] - box[1]] * 2, dtype=np.float32) + 1
    shift = np.clip(rng.normal(0.0, 1.0, 4) * noise * sides, -max_noise, max_noise)
    h, w = mask.shape
    box = np.clip(box + shift, 0, [w - 1, h - 1, w - 1, h - 1]).astype(np.float32)
    return np.concatenate([np.minimum(box[:2], box[2:]), np.maximum(box[:2], box[2:])])


def region_point(region: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """A uniformly drawn (x, y) pixel of a bool HxW region (None when it is empty)."""
    flat = np.flatnonzero(region)
    if not len(flat):
        return None
    y, x = divmod(int(flat[rng.integers(len(flat))]), region.shape[1])
    return np.array([x, y], dtype=np.float32)


def first_prompts(masks: np.ndarray, rng: np.random.Generator, box_probability: float = 0.5,
                  box_noise: float = BOX_NOISE) -> PromptState:
    """Every object's first prompt: all boxes (:func:`noisy_box` at ``box_noise``) or all single points (one draw
    per image, so the batch shares a shape)."""
    masks = _check_masks(masks)
    n = len(masks)
    if rng.random() < box_probability:
        boxes = np.stack([noisy_box(m, rng, box_noise) for m in masks]) if n else np.zeros((0, 4), np.float32)
        return PromptState(np.zeros((n, 0, 2), np.float32), np.zeros((n, 0), np.int64), boxes)
    points = [region_point(m, rng) for m in masks]
    if any(p is None for p in points):
        raise PromptError("every training object needs a non-empty mask")
    return PromptState(np.stack(points)[:, None] if n else np.zeros((0, 1, 2), np.float32),
                       np.ones((n, 1), np.int64), None)


def error_points(predicted: np.ndarray, truth: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One corrective point per object, uniform over its error region: (N, 2) coords and (N,) labels
    (1 inside a missed part, 0 inside a false positive, ``NO_POINT`` at (0, 0) where there is no error)."""
    predicted, truth = _check_masks(predicted, "predicted"), _check_masks(truth, "truth")
    if predicted.shape != truth.shape:
        raise PromptError(f"predicted {predicted.shape} and truth {truth.shape} masks differ in shape")
    coords = np.zeros((len(truth), 2), np.float32)
    labels = np.full(len(truth), NO_POINT, np.int64)
    for i, (pred, gt) in enumerate(zip(predicted, truth)):
        point = region_point(pred != gt, rng)
        if point is not None:
            coords[i] = point
            labels[i] = int(gt[int(point[1]), int(point[0])])
    return coords, labels


def point_schedule(points: int, silent: int, rng: np.random.Generator) -> list[bool]:
    """For each iteration after the first prompt, whether it adds a point: ``points`` True and
    ``silent`` False, one False at the end and the others at random places among the points (the paper's 8 + 2)."""
    if points < 0 or silent < 0:
        raise PromptError(f"points and silent iterations must be >= 0, got {points} and {silent}")
    schedule = [True] * points
    for _ in range(max(silent - 1, 0)):
        schedule.insert(int(rng.integers(len(schedule) + 1)), False)
    return schedule + [False] * min(silent, 1)
