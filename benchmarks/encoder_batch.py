"""Does encoding several images per encoder pass pay? Seconds per image for 1, 2 and 4 images per
``SamPredictor.set_image_batch`` pass, random weights (no official packages needed).

    PYTHONPATH=src python -m benchmarks.encoder_batch --models tiny,vit_t --per-pass 1,2,4 --repeat 3

``tiny`` is the golden tiny SAM's architecture (``$SEGANY_SHARED/golden/tiny_sam.json``: a 4-block
ViT of width 96 at 1024 px); ``vit_t`` MobileSAM (TinyViT) at its real size. Each row: the same ``--images`` 1024x768
images encoded in groups of N (median of ``--repeat`` runs after one warm-up), seconds per
image and the ratio to one image per pass (> 1: batching is faster). The generator's default
(:data:`segany.amg.generator.IMAGES_PER_PASS`) follows these figures per device.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np
import torch

from .common import REPO, SHARED, table, timed, write_results

if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

import segany


def _model(name: str, device: str):
    config = SHARED / "golden" / "tiny_sam.json" if name == "tiny" else name
    torch.manual_seed(0)
    return segany.build_model(config).to(device).eval()


def _images(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8) for _ in range(count)]


def _encode_all(predictor, images: list[np.ndarray], per_pass: int) -> float:
    """Seconds to encode ``images`` ``per_pass`` at a time."""
    def run() -> None:
        for start in range(0, len(images), per_pass):
            predictor.set_image_batch(images[start : start + per_pass])
        if predictor.device.type == "cuda":
            torch.cuda.synchronize()

    return timed(run)[1]


def _seconds_per_image(predictor, images: list[np.ndarray], sizes: list[int], repeat: int) -> dict[int, float]:
    """Median seconds per image for each images-per-pass size; the sizes take turns in every
    round, so a machine whose load drifts during the run biases none of them."""
    for per_pass in sizes:  # warm-up
        _encode_all(predictor, images, per_pass)
    times: dict[int, list[float]] = {per_pass: [] for per_pass in sizes}
    for _ in range(repeat):
        for per_pass in sizes:
            times[per_pass].append(_encode_all(predictor, images, per_pass) / len(images))
    return {per_pass: statistics.median(values) for per_pass, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,vit_t")
    parser.add_argument("--per-pass", default="1,2,4", help="images per encoder pass to compare")
    parser.add_argument("--images", type=int, default=4, help="images encoded per run (a multiple of each N)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(v) for v in args.per_pass.split(",")]
    images = _images(args.images)
    rows, results = [], []
    for name in args.models.split(","):
        predictor = segany.Predictor(_model(name, args.device), dtype=args.dtype)
        timings = _seconds_per_image(predictor, images, sizes, args.repeat)
        base = timings[sizes[0]]
        for per_pass, seconds in timings.items():
            rows.append([name, args.device, args.dtype, torch.get_num_threads(), per_pass, f"{seconds:.4f}",
                         f"{base / seconds:.2f}x"])
            results.append({"model": name, "device": args.device, "dtype": args.dtype, "images_per_pass": per_pass,
                            "threads": torch.get_num_threads(), "s_per_image": seconds, "speedup_vs_first": base / seconds})
    print(table(rows, ["model", "device", "dtype", "threads", "images/pass", "s/image", f"vs {sizes[0]}/pass"]))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"load average at the end: {load} on {os.cpu_count()} cores")
    print(f"results: {write_results('encoder_batch', {'rows': results, 'load_average': load})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
