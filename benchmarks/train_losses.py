"""Training losses: segany's ``multistep_losses`` against the official SAM 2 trainer's
``MultiStepMultiMasksAndIous`` (``training/loss_fns.py``, sam2 1.1.0), forward and backward on the same
tensors, the two interleaved in one process.

The shapes are those of a step of ``benchmarks/train.py``'s best run: 12 objects at 192 px, three candidate
masks each (the point prompt's multimask output) and one (the box prompt's). Prints the time of each, their
ratio, and the largest difference of the losses and of the gradients of the logits. Needs the official
package (the benchmark environment, ``benchmarks/setup_env.sh``)::

    PYTHONPATH=src .venv-bench/bin/python benchmarks/train_losses.py
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "scripts"))

from make_train_loss_reference import official_criterion, official_loss_fns  # noqa: E402

from segany.train.losses import SAM2_WEIGHTS, multistep_losses  # noqa: E402


def _inputs(objects: int, candidates: int, side: int, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    targets = (torch.rand(objects, side, side, generator=gen) > 0.7).float()
    logits = 3 * torch.randn(objects, candidates, side, side, generator=gen)
    return targets, logits, torch.rand(objects, candidates, generator=gen), 2 * torch.randn(objects, 1, generator=gen)


def _official(criterion, targets, logits, ious, scores) -> tuple[torch.Tensor, torch.Tensor]:
    logits = logits.clone().requires_grad_()
    outs = {"multistep_pred_multimasks_high_res": [logits], "multistep_pred_ious": [ious],
            "multistep_object_score_logits": [scores]}
    loss = criterion([outs], targets[None])["core_loss"]
    loss.backward()
    return loss.detach(), logits.grad


def _segany(targets, logits, ious, scores) -> tuple[torch.Tensor, torch.Tensor]:
    logits = logits.clone().requires_grad_()
    loss = multistep_losses([(logits, ious, scores)], targets, SAM2_WEIGHTS)["core_loss"]
    loss.backward()
    return loss.detach(), logits.grad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=12)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    criterion = official_criterion(official_loss_fns(), sam2=True)
    print("| candidates | official ms | segany ms | segany vs official | max loss diff | max grad diff |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for candidates in (3, 1):
        tensors = _inputs(args.objects, candidates, args.size, seed=candidates)
        times: dict[str, list[float]] = {"official": [], "segany": []}
        for _ in range(args.repeat):
            runs = (("official", lambda: _official(criterion, *tensors)), ("segany", lambda: _segany(*tensors)))
            for name, run in runs:
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
        (loss_o, grad_o), (loss_s, grad_s) = _official(criterion, *tensors), _segany(*tensors)
        official, ours = (statistics.median(times[k][2:]) * 1e3 for k in ("official", "segany"))
        print(f"| {candidates} | {official:.1f} | {ours:.1f} | {official / ours:.2f}x | "
              f"{float((loss_o - loss_s).abs()):.1e} | {float((grad_o - grad_s).abs().max()):.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
