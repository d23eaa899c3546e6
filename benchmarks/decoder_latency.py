"""Prompt-decoding latency of a Predictor with a full-size (vit_b-sized) decoder and a tiny encoder.

Not a test: a quick before/after check of the decoder's speed. Run it against two source trees::

    PYTHONPATH=src python -m benchmarks.decoder_latency
    PYTHONPATH=/path/to/other/src python benchmarks/decoder_latency.py

Random weights (seeded): the decoder is the same size for every SAM, so the figures hold for all.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from segany import Predictor
from segany.models.config import SamConfig, ViTConfig
from segany.models.sam import Sam


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--decoder-backend", default="torch", choices=("torch", "onnxruntime"))
    parser.add_argument("--batches", default="", help="also time predict_torch at these batch sizes, e.g. 1,16,64")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Sam(SamConfig(name="bench", encoder=ViTConfig(32, 2, 2, (1,)))).eval()
    predictor = Predictor(model, decoder_backend=args.decoder_backend)
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    predictor.set_image(image)
    point = {"point_coords": np.array([[320.0, 240.0]]), "point_labels": np.array([1])}
    rng = np.random.default_rng(1)
    coords = torch.as_tensor(predictor.transform.apply_coords(rng.uniform(0, 480, (64, 2)), (480, 640)))[:, None].float()
    labels = torch.ones(64, 1, dtype=torch.int)
    box = {"point_coords": np.array([[320.0, 240.0]]), "point_labels": np.array([1]), "box": np.array([100, 100, 400, 300])}
    figures = {
        "predict 1 point (ms)": _median_ms(lambda: predictor.predict(**point), args.repeats),
        "predict point+box (ms)": _median_ms(lambda: predictor.predict(**box), args.repeats),
        "predict_torch 64 points (ms)": _median_ms(lambda: predictor.predict_torch(coords, labels), max(5, args.repeats // 3)),
        "predict_low_res_torch 64 points (ms)": _median_ms(
            lambda: predictor.predict_low_res_torch(coords, labels), max(5, args.repeats // 3)
        ),
    }
    for batch in [int(b) for b in args.batches.split(",") if b]:
        points = torch.as_tensor(predictor.transform.apply_coords(rng.uniform(0, 480, (batch, 2)), (480, 640)))[:, None].float()
        ones = torch.ones(batch, 1, dtype=torch.int)
        figures[f"predict_torch {batch} points (ms)"] = _median_ms(
            lambda points=points, ones=ones: predictor.predict_torch(points, ones), max(3, args.repeats // 6)
        )
    for name, value in figures.items():
        print(f"{name:40s} {value:8.2f}")


if __name__ == "__main__":
    main()
