"""Region segmentation without weights: watershed superpixels merged into a hierarchy of regions.

1. Superpixels: OpenCV's watershed on an edge-preserving smoothed image, flooded from a regular
   grid of markers, so regions follow colour edges.
2. Hierarchy: adjacent regions merge greedily, cheapest first, by a Ward-like cost (colour
   difference in CIELAB weighted by the smaller region's size, so specks go first) raised by the
   strength of the edge between them. Every merge creates a region; a region's *birth* is the
   cost at which it was formed, its *death* the cost at which it was absorbed.
3. Regions that live long relative to their birth are the object-like ones (the persistence idea
   behind hierarchical segmentation): ``persistence = 1 - birth / death``.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Region:
    """A node of the hierarchy: its superpixels, merge costs and persistence in [0, 1]."""

    superpixels: tuple[int, ...]
    birth: float
    death: float

    @property
    def persistence(self) -> float:
        return 1.0 - self.birth / self.death if self.death > 0 else 0.0


def superpixels(bgr: np.ndarray, step: int) -> np.ndarray:
    """(H, W) int32 labels 0..n-1 of watershed superpixels seeded on a ``step``-pixel grid."""
    smooth = cv2.bilateralFilter(bgr, 7, 30, 5)
    h, w = bgr.shape[:2]
    markers = np.zeros((h, w), dtype=np.int32)
    ys = np.arange(step // 2, h, step)
    xs = np.arange(step // 2, w, step)
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    markers[grid_y, grid_x] = np.arange(1, grid_y.size + 1).reshape(grid_y.shape)
    cv2.watershed(smooth, markers)
    # watershed lines (-1) join the region on their left/top neighbour (or right/bottom at the border)
    lines = markers <= 0
    if lines.any():
        filled = cv2.dilate(np.where(lines, 0, markers).astype(np.float32), np.ones((3, 3), np.uint8))
        markers = np.where(lines, filled.astype(np.int32), markers)
    _, labels = np.unique(markers, return_inverse=True)
    return labels.reshape(h, w).astype(np.int32)


def _adjacency(labels: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique adjacent label pairs (a < b) and the mean edge strength along their shared border."""
    a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()])
    b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()])
    e = np.concatenate([np.maximum(edges[:, :-1], edges[:, 1:]).ravel(), np.maximum(edges[:-1, :], edges[1:, :]).ravel()])
    cross = a != b
    lo, hi, e = np.minimum(a, b)[cross], np.maximum(a, b)[cross], e[cross]
    n = int(labels.max()) + 1
    codes = lo.astype(np.int64) * n + hi
    pairs, inverse = np.unique(codes, return_inverse=True)
    strength = np.bincount(inverse, weights=e) / np.bincount(inverse)
    return np.stack([pairs // n, pairs % n], axis=1), strength


def hierarchy(bgr: np.ndarray, labels: np.ndarray, edge_weight: float = 2.0) -> list[Region]:
    """Every region formed by greedy merging of the superpixels ``labels`` (leaves first, root last)."""
    lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(np.float64)
    n = int(labels.max()) + 1
    flat = labels.ravel()
    sizes = np.bincount(flat, minlength=n).astype(np.float64)
    colour = np.stack([np.bincount(flat, weights=lab[:, c], minlength=n) for c in range(3)], axis=1) / np.maximum(sizes, 1)[:, None]
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    edges = cv2.morphologyEx(gray, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)).astype(np.float64)
    pairs, strength = _adjacency(labels, edges)

    members: dict[int, tuple[int, ...]] = {i: (i,) for i in range(n)}
    birth = dict.fromkeys(range(n), 0.0)
    size = dict(enumerate(sizes.tolist()))
    mean = {i: colour[i] for i in range(n)}
    neighbours: dict[int, dict[int, float]] = {i: {} for i in range(n)}
    for (i, j), s in zip(pairs.tolist(), strength.tolist()):
        neighbours[i][j] = neighbours[j][i] = s

    def cost(i: int, j: int) -> float:
        ward = np.linalg.norm(mean[i] - mean[j]) * np.sqrt(min(size[i], size[j]))
        return float(ward * (1.0 + edge_weight * neighbours[i][j] / 255.0))

    heap = [(cost(i, j), i, j) for i, j in pairs.tolist()]
    heapq.heapify(heap)
    regions: list[Region] = []
    alive = set(range(n))
    next_id = n
    while heap:
        c, i, j = heapq.heappop(heap)
        if i not in alive or j not in alive:
            continue
        c = max(c, birth[i], birth[j])  # costs along a branch never decrease
        k = next_id
        next_id += 1
        for old in (i, j):
            regions.append(Region(members[old], birth[old], c))
            alive.discard(old)
        members[k] = members[i] + members[j]
        birth[k] = c
        size[k] = size[i] + size[j]
        mean[k] = (mean[i] * size[i] + mean[j] * size[j]) / size[k]
        merged: dict[int, float] = {}
        for old in (i, j):
            for other, s in neighbours.pop(old).items():
                neighbours[other].pop(old, None)
                if other not in (i, j):
                    merged[other] = max(merged.get(other, 0.0), s)
        neighbours[k] = merged
        for other, s in merged.items():
            neighbours[other][k] = s
        alive.add(k)
        for other in merged:
            heapq.heappush(heap, (cost(k, other), min(k, other), max(k, other)))
        for old in (i, j):
            members.pop(old)
    return regions
