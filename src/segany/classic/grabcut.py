"""Interactive GrabCut: colour models and a graph cut (OpenCV) seeded by clicks, a box or a prior mask.

Everything here works on one image at the engine's working resolution; coordinates are (x, y).
The colour models are initialised from a strided sample with k-means (much faster than OpenCV's
own initialisation over every pixel, same result up to sampling) and then refined by OpenCV's
iterations (``GC_EVAL``), which re-learn both models from the current labelling each round.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .lowres import signed_distance

COMPONENTS = 5  # Gaussians per colour model: fixed by OpenCV's grabCut
MODEL_SIZE = 13 * COMPONENTS  # weight, mean (3) and covariance (9) per Gaussian
_FOREGROUND = (cv2.GC_FGD, cv2.GC_PR_FGD)


@dataclass(frozen=True)
class Seeds:
    """Prompts in working-resolution pixels: (N, 2) float click arrays and an optional XYXY box."""

    positive: np.ndarray
    negative: np.ndarray
    box: np.ndarray | None = None


def fit_colour_model(pixels: np.ndarray, max_samples: int = 4000) -> np.ndarray:
    """A (1, 65) OpenCV grabCut colour model: ``COMPONENTS`` Gaussians fitted by k-means on a sample."""
    pixels = pixels.reshape(-1, 3).astype(np.float32)
    if len(pixels) > max_samples:
        pixels = pixels[:: len(pixels) // max_samples]
    model = np.zeros((1, MODEL_SIZE), dtype=np.float64)
    k = min(COMPONENTS, len(pixels))
    if k == 0:
        raise ValueError("cannot fit a colour model on no pixels")
    if len(pixels) <= COMPONENTS:  # one Gaussian per pixel (and OpenCV reads a single row as 3 samples)
        labels = np.arange(len(pixels))
    else:
        criteria = (cv2.TERM_CRITERIA_MAX_ITER + cv2.TERM_CRITERIA_EPS, 10, 0.5)
        cv2.setRNGSeed(0)
        labels = cv2.kmeans(pixels, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)[1].ravel()
    weights = model[0, :COMPONENTS]
    means = model[0, COMPONENTS:4 * COMPONENTS].reshape(COMPONENTS, 3)
    covs = model[0, 4 * COMPONENTS:].reshape(COMPONENTS, 3, 3)
    for c in range(k):
        members = pixels[labels == c].astype(np.float64)
        if len(members) == 0:
            continue
        weights[c] = len(members) / len(pixels)
        means[c] = members.mean(axis=0)
        centred = members - means[c]
        covs[c] = centred.T @ centred / len(members) + 0.01 * np.eye(3)
    return model


def click_radii(points: np.ndarray, prior: np.ndarray | None, radius: int, reach: float) -> np.ndarray:
    """Radius of each click's hard constraint: at least ``radius``, and ``reach`` times the click's
    distance to the previous mask's boundary when there is one.

    A simulated or real user clicks in the middle of a wrong region, so the distance to the current
    boundary measures how big the region to correct is; claiming a fraction of it makes one click
    fix a whole blob instead of a dot, without crossing into the other side.
    """
    radii = np.full(len(points), radius, dtype=int)
    if prior is None or reach <= 0 or len(points) == 0 or prior.all() or not prior.any():
        return radii
    distance = np.abs(signed_distance(prior))
    h, w = prior.shape
    xs = np.clip(np.round(points[:, 0]).astype(int), 0, w - 1)
    ys = np.clip(np.round(points[:, 1]).astype(int), 0, h - 1)
    return np.maximum(radii, (reach * distance[ys, xs]).astype(int))


def paint_clicks(trimap: np.ndarray, seeds: Seeds, prior: np.ndarray | None, radius: int, reach: float) -> None:
    """Hard constraints: a disk around every click (see :func:`click_radii`), definite foreground or
    background; positive clicks are painted last so they win where disks overlap."""
    for points, value in ((seeds.negative, cv2.GC_BGD), (seeds.positive, cv2.GC_FGD)):
        for (x, y), r in zip(np.round(points).astype(int), click_radii(points, prior, radius, reach)):
            cv2.circle(trimap, (int(x), int(y)), int(r), int(value), thickness=-1)


def initial_trimap(shape: tuple[int, int], seeds: Seeds, prior: np.ndarray | None, seed_radius: int) -> np.ndarray:
    """Probable foreground from ``prior`` (a bool mask), else the box, else disks around the positive
    clicks; outside the box is definite background."""
    trimap = np.full(shape, cv2.GC_PR_BGD, dtype=np.uint8)
    if prior is not None:
        trimap[prior] = cv2.GC_PR_FGD
    elif seeds.box is not None:
        x0, y0, x1, y1 = np.round(seeds.box).astype(int)
        trimap[y0:y1 + 1, x0:x1 + 1] = cv2.GC_PR_FGD
    else:
        for x, y in np.round(seeds.positive).astype(int):
            cv2.circle(trimap, (int(x), int(y)), seed_radius, cv2.GC_PR_FGD, thickness=-1)
    if seeds.box is not None:
        x0, y0, x1, y1 = np.round(seeds.box).astype(int)
        outside = np.ones(shape, dtype=bool)
        outside[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1] = False
        trimap[outside] = cv2.GC_BGD
    return trimap


def run_grabcut(image: np.ndarray, trimap: np.ndarray, iterations: int) -> np.ndarray:
    """Refine ``trimap`` in place with OpenCV's GrabCut; returns the foreground (HxW bool)."""
    fg = np.isin(trimap, _FOREGROUND)
    if fg.all() or not fg.any():
        return fg
    bgd_model = fit_colour_model(image[~fg])
    fgd_model = fit_colour_model(image[fg])
    cv2.grabCut(image, trimap, None, bgd_model, fgd_model, iterations, cv2.GC_EVAL)
    return np.isin(trimap, _FOREGROUND)


def keep_clicked_components(mask: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Only the connected parts of ``mask`` that hold a positive click (all of it when there is none)."""
    if len(positive) == 0 or not mask.any():
        return mask
    _, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    h, w = mask.shape
    xs = np.clip(np.round(positive[:, 0]).astype(int), 0, w - 1)
    ys = np.clip(np.round(positive[:, 1]).astype(int), 0, h - 1)
    keep = np.unique(labels[ys, xs])
    keep = keep[keep > 0]
    return np.isin(labels, keep)


def largest_components(mask: np.ndarray, min_fraction: float = 0.1) -> np.ndarray:
    """Drop connected parts smaller than ``min_fraction`` of the largest (specks a box prompt leaves)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 2:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= min_fraction * areas.max()) + 1
    return np.isin(labels, keep)
