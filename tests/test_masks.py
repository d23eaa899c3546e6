"""Mask utilities against slow, obviously-correct references of the official semantics."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from segany.amg.geometry import build_layer_point_grids, build_point_grid, generate_crop_boxes, near_crop_edge
from segany.masks import (
    box_nms,
    decode_rle,
    encode_rles,
    logit_statistics,
    mask_boxes,
    nms,
    remove_small_regions,
    rle_areas,
    stability_score,
    uncompressed_rles,
)


def reference_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> list[int]:
    """torchvision's CPU kernel, one box pair at a time (float32 IoU, float64 comparison)."""
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))  # Python's sort is stable
    b = boxes.numpy().astype(np.float32)
    areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    suppressed, keep = set(), []
    for rank, i in enumerate(order):
        if i in suppressed:
            continue
        keep.append(i)
        for j in order[rank + 1 :]:
            w = np.maximum(np.float32(0), np.minimum(b[i, 2], b[j, 2]) - np.maximum(b[i, 0], b[j, 0]))
            h = np.maximum(np.float32(0), np.minimum(b[i, 3], b[j, 3]) - np.maximum(b[i, 1], b[j, 1]))
            inter = np.float32(w * h)
            with np.errstate(invalid="ignore"):  # two empty boxes: 0 / 0 is NaN, never above the threshold
                iou = np.float32(inter / np.float32(np.float32(areas[i] + areas[j]) - inter))
            if float(iou) > threshold:
                suppressed.add(j)
    return keep


def random_boxes(rng: np.random.Generator, n: int, size: int = 60) -> torch.Tensor:
    xy = rng.integers(0, size, (n, 2))
    wh = rng.integers(0, size // 2, (n, 2))
    return torch.tensor(np.concatenate([xy, xy + wh], axis=1), dtype=torch.float32)


@pytest.mark.parametrize("n, threshold, block", [(300, 0.7, 1024), (300, 0.3, 64), (50, 0.0, 7)])
def test_nms_matches_reference_with_ties(n: int, threshold: float, block: int) -> None:
    rng = np.random.default_rng(n + block)
    boxes = random_boxes(rng, n)
    scores = torch.tensor(rng.integers(0, 5, n), dtype=torch.float32)  # many tied scores
    assert nms(boxes, scores, threshold, block=block).tolist() == reference_nms(boxes, scores, threshold)


def test_nms_keeps_iou_exactly_at_threshold() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 6]], dtype=torch.float32)  # IoUs 0.5 and 0.6
    scores = torch.tensor([1.0, 0.5, 0.4])
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert box_nms(boxes, scores, 0.6).tolist() == [0, 1]  # box 2 overlaps box 1 by 0.83
    assert box_nms(boxes, scores, 0.9).tolist() == [0, 1, 2]
    assert nms(boxes[:0], scores[:0], 0.5).tolist() == []


def test_box_nms_reorders_above_1000_boxes_like_batched_nms() -> None:
    rng = np.random.default_rng(3)
    boxes = random_boxes(rng, 1200, size=400)
    scores = torch.tensor(rng.integers(0, 20, 1200), dtype=torch.float32)
    keep = box_nms(boxes, scores, 0.5)
    assert sorted(keep.tolist()) == sorted(reference_nms(boxes, scores, 0.5))
    kept_scores = scores[keep]
    assert torch.all(kept_scores[:-1] >= kept_scores[1:])


def test_mask_boxes_inclusive_pixels_and_empty() -> None:
    masks = torch.zeros((3, 7, 9), dtype=torch.bool)
    masks[0, 2:5, 3:4] = True
    masks[1, 6, 8] = True
    assert mask_boxes(masks).tolist() == [[3, 2, 3, 4], [8, 6, 8, 6], [0, 0, 0, 0]]
    assert mask_boxes(masks[:0]).shape == (0, 4)


def test_logit_statistics_match_thresholded_masks() -> None:
    logits = torch.randn(6, 40, 50) * 3
    logits[5] = -5.0  # empty at every threshold: stability 0/0
    stability, boxes = logit_statistics(logits, 0.0, 1.0)
    expected = (logits > 1).sum((1, 2)).float() / (logits > -1).sum((1, 2)).float()
    assert torch.equal(stability[:5], expected[:5]) and torch.isnan(stability[5])
    assert torch.equal(stability[:5], stability_score(logits, 0.0, 1.0)[:5])
    assert torch.equal(boxes, mask_boxes(logits > 0))


def test_remove_small_regions_holes_islands_and_largest_kept() -> None:
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:12, 2:12] = True
    mask[5, 5] = False  # a 1-pixel hole
    mask[16:18, 16:18] = True  # a 4-pixel island
    filled, changed = remove_small_regions(mask, 3, "holes")
    assert changed and filled[5, 5] and filled.sum() == mask.sum() + 1
    cleaned, changed = remove_small_regions(filled, 5, "islands")
    assert changed and not cleaned[16:18, 16:18].any() and cleaned[2:12, 2:12].all()
    same, changed = remove_small_regions(cleaned, 5, "islands")
    assert not changed and same is cleaned
    tiny = np.zeros((9, 9), dtype=bool)
    tiny[0, 0] = True
    tiny[4:6, 4:6] = True
    kept, changed = remove_small_regions(tiny, 50, "islands")
    assert changed and kept.sum() == 4 and kept[4:6, 4:6].all()
    with pytest.raises(ValueError):
        remove_small_regions(mask, 3, "both")


def test_uncompressed_rles_agree_with_pycocotools() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((4, 13, 17)) > 0.6
    masks[1] = True
    masks[2] = False
    masks[3, 0, 0] = True
    for mask, rle, compressed in zip(masks, uncompressed_rles(masks), encode_rles(masks)):
        assert rle["size"] == [13, 17] and sum(rle["counts"]) == 13 * 17
        assert (rle["counts"][0] == 0) == bool(mask[0, 0])
        as_coco = mask_utils.frPyObjects(rle, 13, 17)
        assert as_coco["counts"].decode("ascii") == compressed["counts"]
        assert np.array_equal(decode_rle(rle), mask)
    assert rle_areas(encode_rles(masks)) == [int(m.sum()) for m in masks]


def test_point_grid_and_layers() -> None:
    grid = build_point_grid(4)
    assert grid.shape == (16, 2)
    assert np.allclose(grid[:4, 0], [0.125, 0.375, 0.625, 0.875]) and np.all(grid[:4, 1] == 0.125)
    assert [len(g) for g in build_layer_point_grids(8, 2, 2)] == [64, 16, 4]


def test_crop_boxes_official_layout() -> None:
    boxes, layers = generate_crop_boxes((480, 640), 1, 512 / 1500)
    assert boxes == [[0, 0, 640, 480], [0, 0, 402, 322], [0, 159, 402, 480], [239, 0, 640, 322], [239, 159, 640, 480]]
    assert layers == [0, 1, 1, 1, 1]
    assert len(generate_crop_boxes((100, 100), 2, 0.3)[0]) == 1 + 4 + 16


def test_near_crop_edge_ignores_image_edges() -> None:
    crop = [0, 0, 402, 322]
    boxes = np.array([[0, 0, 100, 100], [50, 50, 395, 100], [50, 50, 100, 100]])
    assert near_crop_edge(boxes, crop, (480, 640)).tolist() == [False, True, False]
