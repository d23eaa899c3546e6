"""The speed suite: segany against the official SAM / MobileSAM code, in one process, on the same
seeded random weights (the official model's state dict loaded into segany), same photo, same threads.

    python -m benchmarks.run                      # vit_t, vit_b, vit_l, sam2.1_hiera_t; full modes
    python -m benchmarks.run --models vit_b --quick
    python -m benchmarks.run --models sam2.1_hiera_t --quick
    python -m benchmarks.run --models vit_t,vit_b,vit_l,vit_h --compile

Measures, per model: the matmul peak of this machine (fp32, bf16), ``set_image`` latency (median
after warm-up, implementations interleaved) of the official predictor and of segany's modes
(exact fp32, bf16 autocast, int8 dynamic quantisation, onnxruntime, optionally torch.compile),
peak memory, encoder FLOPs (``torch.utils.flop_counter``) with achieved GFLOP/s and the fraction of
the measured peak; decoder latency for ``predict()`` with one point and ``predict_torch()`` with
1/16/64/256 prompts (masks at the original resolution); and the quality guard of every faster mode
on real photos (median mask IoU >= 0.99 against exact fp32, max |delta predicted IoU|).
SAM 2.1 names (``sam2.1_hiera_t``, ``_s``, ``_b+``, ``_l``; CPU) get the rows of
:mod:`benchmarks.sam2_speed` against the official ``sam2`` package: ``set_image`` fp32 and bf16
(with its quality guard), one-point ``predict``, 64 box prompts and, unless ``--quick``,
segment-everything on the filters-off workload.
Prints markdown tables and writes ``benchmarks/results/speed.json``.

It needs the official packages: started from another interpreter, it re-executes itself with
``.venv-bench/bin/python`` (see ``/work/shared/reference/README.md``).
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH_PYTHON = REPO / ".venv-bench" / "bin" / "python"
SPEED_PHOTO = "000000005001.jpg"  # 640x480 COCO photo, resized to 1024x768 for the timings
DEFAULT_MODELS = "vit_t,vit_b,vit_l,sam2.1_hiera_t"
SEED = 1234


def _reexec_in_bench_env() -> None:
    if importlib.util.find_spec("segment_anything") is not None:
        return
    if not BENCH_PYTHON.exists():
        sys.exit("benchmarks.run needs the official packages: see /work/shared/reference/README.md")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), str(REPO), env.get("PYTHONPATH")]))
    os.chdir(REPO)
    os.execve(str(BENCH_PYTHON), [str(BENCH_PYTHON), "-m", "benchmarks.run", *sys.argv[1:]], env)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated (default {DEFAULT_MODELS}; vit_h and sam2.1_hiera_s/b+/l allowed)")
    parser.add_argument("--quick", action="store_true",
                        help="fp32 and bf16 only, fewer repeats, prompts and photos; SAM 2: no segment-everything row")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the encoder (slow to compile)")
    parser.add_argument("--all-modes", action="store_true", help="also onnxruntime int8")
    parser.add_argument("--repeats", type=int, default=None, help="timed set_image calls per mode (default 3, quick 1)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch / onnxruntime threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (on CUDA: fp32, bf16, fp16 and compile modes)")
    parser.add_argument("--decoder-model", default="vit_b", help="model whose predictors time the decoder (same architecture for all)")
    parser.add_argument("--output", default="speed", help="results file name under benchmarks/results/")
    return parser.parse_args(argv)


def modes_for(name: str, args: argparse.Namespace) -> list[str]:
    if args.device != "cpu":  # int8 dynamic quantisation is CPU-only; onnxruntime here is the CPU build
        return ["fp32", "bf16", "fp16"] + (["compile"] if args.compile else [])
    if args.quick:
        return ["fp32", "bf16"]
    modes = ["fp32", "bf16", "int8", "onnxruntime"]
    if name == "vit_h":  # 2.5 GB of weights: no extra copies (int8) or >2 GB ONNX files
        modes = ["fp32", "bf16"]
    if args.compile:
        modes.append("compile")
    if args.all_modes and "onnxruntime" in modes:
        modes.append("onnxruntime-int8")
    return modes


def speed_photo() -> Any:
    import numpy as np
    from PIL import Image

    from benchmarks.common import SHARED

    with Image.open(SHARED / "data" / "coco_val2017_tiny" / "images" / SPEED_PHOTO) as img:
        return np.asarray(img.convert("RGB").resize((1024, 768), Image.LANCZOS))


def describe(device: Any) -> str:
    """The device in words: the GPU's name, or the CPU model and core count."""
    import platform

    import torch

    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    model_name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model_name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"cpu: {model_name}, {os.cpu_count()} cores"


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def encoder_rows(name: str, rows: dict[str, dict[str, Any]]) -> list[list[str]]:
    return [
        [name, impl, fmt(r["seconds"], 3), fmt(r["speedup"]) + "x", fmt(r["gflop"], 0), fmt(r["gflops_per_s"], 1),
         "-" if r["peak_fraction"] is None else f"{100 * r['peak_fraction']:.0f}% {r['peak_kind']}", fmt(r["peak_mib"], 0)]
        for impl, r in rows.items()
    ]


def decoder_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for workload, times in results.items():
        if workload == "parity":
            continue
        ours = {k: v for k, v in times.items() if k != "official"}
        best = min(ours, key=ours.__getitem__)
        rows.append([workload, fmt(1e3 * times["official"], 1)] + [fmt(1e3 * ours[k], 1) for k in sorted(ours)]
                    + [best, fmt(times["official"] / ours[best]) + "x"])
    return rows


def main(argv: list[str] | None = None) -> int:
    _reexec_in_bench_env()
    args = parse_args(argv)

    from benchmarks.common import (
        SHARED,
        build_official,
        import_official,
        machine,
        save_checkpoint,
        table,
        write_results,
    )

    import_official()
    import torch

    torch.set_num_threads(args.threads)
    from segany import Predictor, load_model
    from segany.data.images import load_image
    from segany.registry import SAM2_MODELS

    from . import sam2_speed, suite_decoder, suite_encoder, suite_quality
    from .suite_measure import load_average, matmul_peak

    repeats = args.repeats or (1 if args.quick else 3)
    warmup = 1
    device = torch.device(args.device)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    sam_models = [m for m in models if m not in SAM2_MODELS]
    if device.type != "cpu" and len(sam_models) < len(models):
        sys.exit("the SAM 2 rows (benchmarks/sam2_speed.py) run on CPU only: leave --device at cpu")
    load_before = load_average()
    kinds = {"fp32": torch.float32, "bf16": torch.bfloat16} | ({"fp16": torch.float16} if device.type == "cuda" else {})
    peaks = {kind: matmul_peak(dtype, device) for kind, dtype in kinds.items()}
    described = ", ".join(f"{kind} {value:.0f} GFLOP/s" for kind, value in peaks.items())
    print(f"device {describe(device)}; matmul peak (4096^3, best of 5): {described}; "
          f"{torch.get_num_threads()} threads; load average {load_before:.2f}", flush=True)
    image = speed_photo()
    photos = suite_quality.load_photos(SHARED / "data" / "coco_val2017_tiny" / "images")[: 2 if args.quick else 4]
    results: dict[str, Any] = {"machine": machine(), "device": describe(device), "peaks_gflops": peaks,
                               "threads": torch.get_num_threads(),
                               "image_size": list(image.shape[:2]), "load_average_before": load_before, "models": {}}
    encoder_table, quality_table, sam2_table = [], [], []
    with tempfile.TemporaryDirectory(prefix="segany-bench-") as tmp:
        for name in models:
            started = time.perf_counter()
            if name in SAM2_MODELS:
                options = argparse.Namespace(skip_everything=args.quick, profile=False)
                small = load_image(SHARED / "data" / "coco_val2017_tiny" / "images" / SPEED_PHOTO)
                entry = sam2_speed.bench_model(name, image, small, Path(tmp), options, photos=photos)
                rows = sam2_speed.result_rows(name, entry)
                sam2_table += rows
                print(table(rows, sam2_speed.HEADER), flush=True)
                results["models"][name] = {**entry, "seconds": time.perf_counter() - started}
                gc.collect()
                continue
            official = build_official(name, SEED)
            model = load_model(name, checkpoint=save_checkpoint(official, Path(tmp), name), device=device)
            official = official.to(device)
            flops = suite_encoder.encoder_flops(official, model)
            predictors = suite_encoder.make_predictors(official, model, modes_for(name, args))
            encoder = suite_encoder.run(predictors, image, flops, peaks, repeats, warmup, device)
            encoder_table += encoder_rows(name, encoder)
            print(table(encoder_rows(name, encoder), ENCODER_HEADER), flush=True)
            entry: dict[str, Any] = {"modes": list(predictors), "encoder": encoder}
            if name == args.decoder_model or (args.decoder_model not in sam_models and name == sam_models[0]):
                contenders = {k: predictors[k] for k in ("official", "fp32", "onnxruntime") if k in predictors}
                batches = [1, 16, 64] if args.quick else [1, 16, 64, 256]
                entry["decoder"] = suite_decoder.run(contenders, image.shape[:2], batches, args.quick, device)
                print(table(decoder_rows(entry["decoder"]), decoder_header(contenders)), flush=True)
            candidates = {k: p for k, p in predictors.items() if k not in ("official", "fp32")}
            candidates["bf16+decoder"] = Predictor(model, dtype=torch.bfloat16, decoder_dtype=torch.bfloat16)
            entry["quality"] = suite_quality.run(predictors["fp32"], candidates, photos)
            rows = quality_rows(name, entry["quality"])
            quality_table += rows
            print(table(rows, QUALITY_HEADER), flush=True)
            entry["seconds"] = time.perf_counter() - started
            results["models"][name] = entry
            del official, model, predictors, candidates
            gc.collect()
    results["load_average_after"] = load_average()
    path = write_results(args.output, results)
    if encoder_table:
        print(f"\n## Encoder (set_image, {image.shape[0]}x{image.shape[1]} photo, median of {repeats} after {warmup} warm-up)\n")
        print(table(encoder_table, ENCODER_HEADER))
        print("\n## Quality guard (against exact fp32)\n")
        print(table(quality_table, QUALITY_HEADER))
    if sam2_table:
        print("\n## SAM 2.1 (benchmarks/sam2_speed.py: against the official sam2 package)\n")
        print(table(sam2_table, sam2_speed.HEADER))
    print(f"\nload average {load_before:.2f} before, {results['load_average_after']:.2f} after; results: {path}")
    return 0


ENCODER_HEADER = ["model", "implementation", "set_image s", "vs official", "GFLOP", "GFLOP/s", "of peak", "peak MiB"]
QUALITY_HEADER = ["model", "mode", "median mask IoU", "min mask IoU", "max |d IoU pred|", "masks", "guard"]


def decoder_header(contenders: dict[str, Any]) -> list[str]:
    ours = sorted(k for k in contenders if k != "official")
    return ["workload", "official ms"] + [f"segany {k} ms" for k in ours] + ["fastest", "vs official"]


def quality_rows(name: str, quality: dict[str, dict[str, Any]]) -> list[list[str]]:
    return [
        [name, mode, fmt(q["median_mask_iou"], 4), fmt(q["min_mask_iou"], 4), f"{q['max_abs_delta_predicted_iou']:.2e}",
         str(q["masks"]), "pass" if q["passes"] else "FAIL"]
        for mode, q in quality.items()
    ]


if __name__ == "__main__":
    sys.exit(main())
