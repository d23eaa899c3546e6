"""segany.train.losses against the official SAM 2 training losses (training/loss_fns.py, sam2 1.1.0):
values frozen in tests/data/train_losses.npz by scripts/make_train_loss_reference.py, and live where
the official package imports."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from segany.train.losses import SAM2_WEIGHTS, LossWeights, dice_loss, mask_terms, multistep_losses, sigmoid_focal_loss

ROOT = Path(__file__).resolve().parent.parent
FROZEN = np.load(ROOT / "tests" / "data" / "train_losses.npz")
CASES = sorted({key.split("/")[0] for key in FROZEN.files})
KEYS = ("loss_mask", "loss_dice", "loss_iou", "loss_class", "core_loss")


def _ours(tensors: dict[str, np.ndarray], sam2: bool) -> dict[str, float]:
    steps = [(torch.from_numpy(logits), torch.from_numpy(ious), torch.from_numpy(scores) if sam2 else None)
             for logits, ious, scores in zip(tensors["logits"], tensors["ious"], tensors["object_scores"])]
    weights = SAM2_WEIGHTS if sam2 else LossWeights()
    return {key: float(value) for key, value in multistep_losses(steps, torch.from_numpy(tensors["targets"]), weights).items()}


def _case(name: str) -> tuple[dict[str, np.ndarray], bool]:
    return {k: FROZEN[f"{name}/{k}"] for k in ("targets", "logits", "ious", "object_scores")}, bool(FROZEN[f"{name}/sam2"])


def test_frozen_cases_cover_multimask_multistep_and_object_scores():
    assert {"sam_single", "sam_multimask", "sam_multistep", "sam2_multimask"} <= set(CASES)


@pytest.mark.parametrize("name", CASES)
def test_losses_equal_frozen_official_values(name):
    tensors, sam2 = _case(name)
    ours = _ours(tensors, sam2)
    for key in KEYS:
        assert ours[key] == pytest.approx(float(FROZEN[f"{name}/{key}"]), abs=1e-6, rel=1e-6), key
    assert ours["core_loss"] > 0


def test_best_candidate_is_the_one_supervised():
    """Only the candidate with the lowest 20*focal+dice gets gradient (the others' grads are zero)."""
    target = torch.zeros(1, 8, 8)
    target[0, 2:6, 2:6] = 1
    good = (target * 20 - 10)[:, None]
    logits = torch.cat([-good, good, torch.zeros_like(good)], 1).requires_grad_()
    losses = multistep_losses([(logits, torch.full((1, 3), 0.5), None)], target)
    losses["core_loss"].backward()
    norms = logits.grad.flatten(2).abs().sum(-1)[0]
    assert norms[1] > 0 and norms[0] == 0 and norms[2] == 0


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (-1.0, 2.0), (0.5, 0.0), (0.25, 3.0)])
def test_mask_terms_equal_the_plain_losses_and_their_gradients(alpha, gamma):
    """The fused per-candidate focal / dice losses against the official formulas through autograd: values and
    the gradient of a random combination of them (large logits included, where 1 - p_t rounds)."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 2, 9, 11, generator=generator, dtype=torch.float64) * 6
    logits[0, 0, 0, :3] = torch.tensor([40.0, -40.0, 0.0])
    targets = torch.rand(3, 1, 9, 11, generator=generator) > 0.6
    mix_focal, mix_dice = torch.rand(2, 3, 2, generator=generator, dtype=torch.float64)
    leaves = [logits.clone().requires_grad_() for _ in range(2)]
    focal, dice = mask_terms(leaves[0], targets.double(), alpha, gamma)
    plain_targets = targets.double().expand_as(logits)
    plain_focal = sigmoid_focal_loss(leaves[1], plain_targets, 1.0, alpha, gamma, per_candidate=True)
    plain_dice = dice_loss(leaves[1], plain_targets, 1.0, per_candidate=True)
    torch.testing.assert_close(focal, plain_focal, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(dice, plain_dice, rtol=1e-12, atol=1e-14)
    ((focal * mix_focal).sum() + (dice * mix_dice).sum()).backward()
    ((plain_focal * mix_focal).sum() + (plain_dice * mix_dice).sum()).backward()
    torch.testing.assert_close(leaves[0].grad, leaves[1].grad, rtol=1e-10, atol=1e-14)
    with torch.no_grad():  # no gradient buffers without a gradient
        assert torch.equal(mask_terms(logits, targets, alpha, gamma)[0], focal.detach())


def _official_module():
    if importlib.util.find_spec("training") is None or importlib.util.find_spec("training.loss_fns") is None:
        pytest.skip("the official sam2 training package is not installed (benchmark environment only)")
    spec = importlib.util.spec_from_file_location("make_ref", ROOT / "scripts" / "make_train_loss_reference.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.mark.parametrize("sam2", [False, True])
def test_losses_equal_live_official_code(sam2):
    script = _official_module()
    tensors = script.case_tensors(123, 5, 3, 2)
    reference = script.official_losses(script.official_loss_fns(), tensors, sam2)
    ours = _ours(tensors, sam2)
    for key in KEYS:
        assert ours[key] == pytest.approx(reference[key], abs=1e-6, rel=1e-6), key
