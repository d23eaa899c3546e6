"""Image encoder: ``set_image`` latency of the official predictor against segany's modes, peak
memory, counted FLOPs, achieved GFLOP/s and the fraction of the measured matmul peak."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .suite_measure import PeakMemory, count_flops, interleaved, median

# segany predictor options per mode name; "official" is the reference implementation.
MODES: dict[str, dict[str, Any]] = {
    "fp32": {},
    "bf16": {"dtype": torch.bfloat16},
    "fp16": {"dtype": torch.float16},
    "int8": {"quantize": "int8"},
    "compile": {"compile": True},
    "onnxruntime": {"backend": "onnxruntime"},
    "onnxruntime-int8": {"backend": "onnxruntime", "quantize": "int8"},
}
PEAK_OF = {"official": "fp32", "fp32": "fp32", "compile": "fp32", "onnxruntime": "fp32", "bf16": "bf16", "fp16": "fp16"}


def make_predictors(official_model: torch.nn.Module, model: torch.nn.Module, modes: list[str]) -> dict[str, Any]:
    """The official ``SamPredictor`` and one segany ``Predictor`` per mode."""
    from segment_anything import SamPredictor

    from segany import Predictor

    predictors: dict[str, Any] = {"official": SamPredictor(official_model)}
    for mode in modes:
        predictors[mode] = Predictor(model, **MODES[mode])
    return predictors


def encoder_flops(official_model: torch.nn.Module, model: torch.nn.Module) -> dict[str, int]:
    """FLOPs of one encoder forward on a 1024x1024 input, each implementation counted as it runs."""
    x = torch.randn(1, 3, 1024, 1024, device=model.device)
    with torch.inference_mode():
        return {
            "official": count_flops(lambda: official_model.image_encoder(x)),
            "segany": count_flops(lambda: model.image_encoder(x)),
        }


def run(
    predictors: dict[str, Any], image: np.ndarray, flops: dict[str, int], peaks: dict[str, float],
    repeats: int, warmup: int, device: torch.device,
) -> dict[str, dict[str, Any]]:
    """Per implementation: median seconds, samples, peak MiB, GFLOP/s, peak fraction, ratio."""
    calls: dict[str, Callable[[], Any]] = {name: (lambda p=p: p.set_image(image)) for name, p in predictors.items()}
    memory: dict[str, float] = {}

    def measured(name: str) -> Callable[[], Any]:
        def call() -> None:
            with PeakMemory(device) as peak:
                calls[name]()
            memory[name] = peak.mib
        return call

    interleaved(calls, repeats=0, warmup=warmup)  # compilation, export, first-touch allocations
    samples = interleaved({name: measured(name) for name in calls}, repeats=1, warmup=0, device=device)
    for name, times in interleaved(calls, repeats=repeats - 1, warmup=0, device=device).items():
        samples[name] += times
    reference = median(samples["official"])
    rows = {}
    for name, times in samples.items():
        seconds = median(times)
        work = flops["official" if name == "official" else "segany"]
        peak_name = PEAK_OF.get(name) if PEAK_OF.get(name) in peaks else None
        gflops = work / seconds / 1e9
        rows[name] = {
            "seconds": seconds,
            "samples": times,
            "speedup": reference / seconds,
            "peak_mib": memory[name],
            "gflop": work / 1e9,
            "gflops_per_s": gflops,
            "peak_kind": peak_name,
            "peak_fraction": gflops / peaks[peak_name] if peak_name else None,
        }
    return rows
