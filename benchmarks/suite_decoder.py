"""Prompt decoding: ``predict()`` for one point and ``predict_torch()`` for batches of one-point
prompts, masks at the original image resolution, official against segany's backends."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .suite_measure import interleaved, median

REPEATS = {1: 20, 16: 5, 64: 3, 256: 2}


def grid_points(count: int, height: int, width: int) -> np.ndarray:
    """``count`` fixed points spread over the image (x, y in pixels), row by row."""
    side = int(np.ceil(np.sqrt(count)))
    ys, xs = np.meshgrid((np.arange(side) + 0.5) / side * height, (np.arange(side) + 0.5) / side * width, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)[:count].astype(np.float32)


def run(
    predictors: dict[str, Any], original_size: tuple[int, int], batches: list[int], quick: bool, device: torch.device
) -> dict[str, Any]:
    """Latency rows per workload (``predict-1``, ``batch-B``) and per implementation; every
    predictor must already hold the same image."""
    height, width = original_size
    point = grid_points(1, height, width)
    label = np.ones(1, dtype=np.int64)
    results: dict[str, Any] = {}
    calls = {name: (lambda p=p: p.predict(point, label)) for name, p in predictors.items()}
    samples = interleaved(calls, repeats=5 if quick else REPEATS[1], warmup=2)
    results["predict-1"] = {name: median(t) for name, t in samples.items()}

    transform = predictors["official"].transform
    for batch in batches:
        points = transform.apply_coords(grid_points(batch, height, width), original_size)
        coords = torch.as_tensor(points, device=device)[:, None, :]
        labels = torch.ones(batch, 1, dtype=torch.int64, device=device)

        def call(p: Any) -> None:
            with torch.inference_mode():
                p.predict_torch(coords, labels)

        calls = {name: (lambda p=p: call(p)) for name, p in predictors.items()}
        repeats = 1 if quick else REPEATS.get(batch, 2)
        samples = interleaved(calls, repeats=repeats, warmup=1, device=device)
        results[f"batch-{batch}"] = {name: median(t) for name, t in samples.items()}
    results["parity"] = parity(predictors, original_size)
    return results


def parity(predictors: dict[str, Any], original_size: tuple[int, int]) -> dict[str, dict[str, float]]:
    """Max |difference| of low-res logits and IoU predictions to the official decoder, 16 prompts."""
    height, width = original_size
    transform = predictors["official"].transform
    device = predictors["official"].device
    coords = torch.as_tensor(transform.apply_coords(grid_points(16, height, width), original_size), device=device)[:, None, :]
    labels = torch.ones(16, 1, dtype=torch.int64, device=device)
    with torch.inference_mode():
        _, ref_iou, ref_low = predictors["official"].predict_torch(coords, labels)
        out = {}
        for name, p in predictors.items():
            if name == "official":
                continue
            _, iou, low = p.predict_torch(coords, labels)
            out[name] = {
                "low_res_logits_max_abs": float((low.float() - ref_low).abs().max()),
                "iou_max_abs": float((iou.float() - ref_iou).abs().max()),
            }
    return out
