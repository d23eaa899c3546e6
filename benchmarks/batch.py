"""Batch jobs: images/s of ``segany everything``'s engine on the local executor and on Ray.

For each engine (``classic``: the weight-free engine; ``tiny``: the tests' seeded tiny random SAM,
128 px input, a 8x8 point grid, filters off so every candidate is scored, encoded and written) and
each image count (COCO val2017 tiny photos resized to ``--size`` px wide, repeated to the count),
one job per executor: local (this process, torch's threads), Ray with 1 worker and with 2 workers
(1 CPU each). The local executor runs torch on one thread, as each Ray worker does (1 CPU:
OMP_NUM_THREADS=1), and Ray's workers run at the driver's niceness (RAY_worker_niceness=0; Ray
otherwise nices them to 15, which on a shared machine measures the neighbours). One local Ray is started once (its start-up is printed, not counted); each job's
time includes what a user waits for: actors starting, importing torch and loading the model,
every image, the results streaming back. From the 10- and 100-image times a line t = a + b*n:
``a`` the fixed cost of a job (Ray: actor start-up), ``b`` seconds per image.

    PYTHONPATH=src python benchmarks/batch.py --images 10,100
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEGANY_SHARED", REPO.parent / "shared"))
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests")]

from segany.batch import find_images, job_settings, label_images  # noqa: E402
from segany.batch.ray_executor import RayExecutor  # noqa: E402
from segany.cli.jobs import GeneratorFactory, ModelFactory  # noqa: E402

TINY_OPTIONS = {"points_per_side": 8, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


def make_images(folder: Path, count: int, width: int) -> list:
    """``count`` small photos (the COCO tiny images resized, repeated under distinct names)."""
    from PIL import Image

    sources = sorted((SHARED / "data" / "coco_val2017_tiny" / "images").glob("*.jpg"))
    if not sources:
        raise SystemExit(f"no images under {SHARED}/data/coco_val2017_tiny/images (set SEGANY_SHARED)")
    folder.mkdir(parents=True)
    for i in range(count):
        image = Image.open(sources[i % len(sources)]).convert("RGB")
        image.resize((width, round(image.height * width / image.width))).save(folder / f"{i:04d}.png")
    return find_images([str(folder)])[0]


def engine(name: str, work: Path) -> tuple[GeneratorFactory, dict]:
    if name == "classic":
        model, options = ModelFactory("classic", None, "cpu"), {}
    else:
        from tiny_models import save_tiny_model

        config, checkpoint = save_tiny_model(work / "tiny_model")
        model, options = ModelFactory(str(config), str(checkpoint), "cpu"), TINY_OPTIONS
    return GeneratorFactory(model, {"output_mode": "coco_rle", **options}), job_settings(model.load(), None, options)


def timed(images: list, factory: GeneratorFactory, settings: dict, executor, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    summary = label_images(images, factory, out, settings, executor=executor, report=lambda line: None)
    elapsed = time.perf_counter() - start
    assert summary.done == len(images) and summary.failed == 0, summary
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="10,100", help="image counts (default 10,100)")
    parser.add_argument("--engines", default="classic,tiny", help="classic and/or tiny (default both)")
    parser.add_argument("--size", type=int, default=160, help="image width in px (default 160)")
    args = parser.parse_args()
    counts = [int(n) for n in args.images.split(",")]

    import ray
    import torch

    torch.set_num_threads(1)
    os.environ["RAY_worker_niceness"] = "0"
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    print(f"ray.init: {time.perf_counter() - start:.1f} s (not counted); load average {os.getloadavg()[0]:.1f}; "
          f"{args.size} px wide images")
    executors = {"local": None, "ray x1": RayExecutor(workers=1), "ray x2": RayExecutor(workers=2)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        image_sets = {n: make_images(work / f"in{n}", n, args.size) for n in counts}
        for name in args.engines.split(","):
            factory, settings = engine(name, work)
            for label, executor in executors.items():
                times = {n: timed(image_sets[n], factory, settings, executor, work / "out") for n in counts}
                rows.append((name, label, times))
                print(f"  {name} {label}: " + ", ".join(f"{n} images {t:.1f} s" for n, t in times.items()), flush=True)
    ray.shutdown()

    lo, hi = min(counts), max(counts)
    print(f"\n| engine | executor | {' | '.join(f'{n} images s' for n in counts)} | images/s at {hi} "
          f"| fixed s (a) | s/image (b) | vs local at {hi} |")
    print("| --- " * (6 + len(counts)) + "|")
    local = {name: times for name, label, times in rows if label == "local"}
    for name, label, times in rows:
        slope = (times[hi] - times[lo]) / (hi - lo) if hi > lo else float("nan")
        fixed = times[lo] - slope * lo
        print(f"| {name} | {label} | {' | '.join(f'{times[n]:.1f}' for n in counts)} | {hi / times[hi]:.2f} "
              f"| {fixed:.1f} | {slope:.3f} | {local[name][hi] / times[hi]:.2f}x |")


if __name__ == "__main__":
    main()
