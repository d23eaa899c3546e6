"""Freeze the official SAM 2 training losses on seeded tensors into tests/data/train_losses.npz.

Run with the benchmark environment, where ``sam2`` 1.1.0's ``training`` package is installed:

    /work/main/.venv-bench/bin/python scripts/make_train_loss_reference.py

``training.loss_fns`` imports ``training.trainer`` only for the name of the total (``core_loss``);
where the trainer's own dependencies (tensordict...) are missing, that one name is provided.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "train_losses.npz"

# (case name, objects, candidates, steps, SAM 2 config?)
CASES = (("sam_single", 3, 1, 1, False), ("sam_multimask", 4, 3, 1, False),
         ("sam_multistep", 2, 3, 3, False), ("sam2_multimask", 3, 3, 2, True))
SIDE = 16


def official_loss_fns() -> types.ModuleType:
    """``training.loss_fns``, with a stand-in ``training.trainer`` if the real one cannot import."""
    try:
        from training import loss_fns
    except ImportError:
        stub = types.ModuleType("training.trainer")
        stub.CORE_LOSS_KEY = "core_loss"
        sys.modules["training.trainer"] = stub
        from training import loss_fns
    return loss_fns


def case_tensors(seed: int, objects: int, candidates: int, steps: int) -> dict[str, np.ndarray]:
    """Seeded logits near the decision boundary, IoU guesses and object scores; object 0 absent."""
    gen = torch.Generator().manual_seed(seed)
    targets = (torch.rand(objects, SIDE, SIDE, generator=gen) > 0.6).float()
    targets[0] = 0
    return {
        "targets": targets.numpy(),
        "logits": (3 * torch.randn(steps, objects, candidates, SIDE, SIDE, generator=gen)).numpy(),
        "ious": torch.rand(steps, objects, candidates, generator=gen).numpy(),
        "object_scores": (2 * torch.randn(steps, objects, 1, generator=gen)).numpy(),
    }


def official_criterion(loss_fns: types.ModuleType, sam2: bool):
    """The official ``MultiStepMultiMasksAndIous`` as SAM 2.1's training configs set it (``sam2``) or with SAM's
    weights (focal 20, dice 1, IoU MSE 1)."""
    if sam2:
        return loss_fns.MultiStepMultiMasksAndIous(
            {"loss_mask": 20, "loss_dice": 1, "loss_iou": 1, "loss_class": 1}, supervise_all_iou=True,
            iou_use_l1_loss=True, pred_obj_scores=True, focal_gamma_obj_score=0.0, focal_alpha_obj_score=-1.0)
    return loss_fns.MultiStepMultiMasksAndIous({"loss_mask": 20, "loss_dice": 1, "loss_iou": 1})


def official_losses(loss_fns: types.ModuleType, tensors: dict[str, np.ndarray], sam2: bool) -> dict[str, float]:
    criterion = official_criterion(loss_fns, sam2)
    outs = {
        "multistep_pred_multimasks_high_res": list(torch.from_numpy(tensors["logits"])),
        "multistep_pred_ious": list(torch.from_numpy(tensors["ious"])),
        "multistep_object_score_logits": list(torch.from_numpy(tensors["object_scores"])),
    }
    losses = criterion([outs], torch.from_numpy(tensors["targets"])[None])
    return {key: float(value) for key, value in losses.items()}


def main() -> None:
    loss_fns = official_loss_fns()
    arrays: dict[str, np.ndarray] = {}
    for seed, (name, objects, candidates, steps, sam2) in enumerate(CASES):
        tensors = case_tensors(seed, objects, candidates, steps)
        arrays.update({f"{name}/{key}": value for key, value in tensors.items()})
        arrays[f"{name}/sam2"] = np.array(sam2)
        for key, value in official_losses(loss_fns, tensors, sam2).items():
            arrays[f"{name}/{key}"] = np.array(value, dtype=np.float64)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({len(CASES)} cases)")


if __name__ == "__main__":
    main()
