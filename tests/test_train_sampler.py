"""The interactive prompt sampler on hand-made masks with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from segany.errors import PromptError
from segany.train.sampler import NO_POINT, error_points, first_prompts, mask_box, noisy_box, point_schedule


def _square(top: int, left: int, side: int, size: int = 32) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[top:top + side, left:left + side] = True
    return mask


def test_error_points_lie_in_the_error_region_with_the_label_of_the_error_type():
    truth = np.stack([_square(4, 4, 10), _square(4, 4, 10), _square(4, 4, 10)])
    predicted = np.stack([_square(4, 4, 5),        # object 0: only missed pixels -> foreground points
                          _square(4, 4, 20),       # object 1: only spill-over -> background points
                          _square(4, 4, 10)])      # object 2: perfect -> no point
    for seed in range(20):
        coords, labels = error_points(predicted, truth, np.random.default_rng(seed))
        x, y = coords[0].astype(int)
        assert labels[0] == 1 and truth[0, y, x] and not predicted[0, y, x]
        x, y = coords[1].astype(int)
        assert labels[1] == 0 and predicted[1, y, x] and not truth[1, y, x]
        assert labels[2] == NO_POINT


def test_error_points_are_uniform_over_both_error_types():
    truth = _square(0, 0, 8)[None]
    predicted = _square(0, 8, 8)[None]  # 64 missed pixels, 64 false positives
    labels = [error_points(predicted, truth, np.random.default_rng(s))[1][0] for s in range(400)]
    assert 0.35 < np.mean(labels) < 0.65


def test_first_prompts_are_boxes_or_points_from_the_mask():
    masks = np.stack([_square(2, 3, 6), _square(10, 12, 15)])
    kinds = set()
    for seed in range(30):
        state = first_prompts(masks, np.random.default_rng(seed))
        if state.boxes is not None:
            kinds.add("box")
            assert state.coords.shape == (2, 0, 2) and not state.is_single_point
            for box, mask in zip(state.boxes, masks):
                assert np.abs(box - mask_box(mask)).max() <= 0.1 * 16 * 4  # small noise around the true box
        else:
            kinds.add("point")
            assert state.is_single_point and (state.labels == 1).all()
            for (x, y), mask in zip(state.coords[:, 0].astype(int), masks):
                assert mask[y, x]
    assert kinds == {"box", "point"}


def test_box_noise_is_clipped_to_twenty_pixels_and_the_image():
    mask = np.zeros((600, 600), bool)
    mask[0:500, 0:500] = True
    assert mask_box(mask).tolist() == [0, 0, 499, 499]
    for seed in range(10):
        box = noisy_box(mask, np.random.default_rng(seed))
        assert (box >= 0).all() and (box <= 599).all()
        assert np.abs(box - mask_box(mask)).max() <= 20.0 + 1e-4


def test_box_noise_scales_with_the_setting_and_zero_gives_the_exact_box():
    masks = np.stack([_square(2, 3, 6), _square(10, 12, 15)])
    exact = np.stack([mask_box(m) for m in masks])
    shifts = {}
    for noise in (0.0, 0.05, 0.2):
        boxes = [first_prompts(masks, np.random.default_rng(seed), 1.0, noise).boxes for seed in range(40)]
        shifts[noise] = np.mean([np.abs(b - exact).mean() for b in boxes])
    assert shifts[0.0] == 0.0 and 0 < shifts[0.05] < shifts[0.2]


def test_point_schedule_paper_eight_points_two_silent():
    for seed in range(10):
        schedule = point_schedule(8, 2, np.random.default_rng(seed))
        assert len(schedule) == 10 and sum(schedule) == 8 and schedule[-1] is False


def test_sampler_refuses_bad_masks():
    with pytest.raises(PromptError, match="bool"):
        first_prompts(np.ones((2, 4, 4), np.uint8), np.random.default_rng(0))
    with pytest.raises(PromptError, match="shape"):
        error_points(np.ones((1, 4, 4), bool), np.ones((1, 4, 5), bool), np.random.default_rng(0))
