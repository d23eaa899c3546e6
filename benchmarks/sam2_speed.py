"""SAM 2.1 speed rows: segany's ``Sam2Predictor`` / ``Sam2MaskGenerator`` against the official
``sam2`` package (``SAM2ImagePredictor`` / ``SAM2AutomaticMaskGenerator``) in the same process,
same seeded random weights, same photo, same threads, implementations interleaved.

The official model is built by ``sam2.build_sam.build_sam2`` from the installed package's
``configs/sam2.1/<name>.yaml`` (no checkpoint) after ``torch.manual_seed(seed)``; every floating
tensor then gets seeded noise (``+ 0.25 std`` of the tensor, ``+ 0.05`` for constant ones) so no
weight is left at a degenerate init; the state dict is saved as ``{"model": sd}`` and loaded into
segany with ``segany.load_model(name, checkpoint=...)``.

Workloads (fp32 unless said):

- ``set_image``: 1024x768 photo (COCO 000000005001 resized, as the SAM 1 suite); ``set_image bf16``
  is segany's ``Sam2Predictor(model, dtype=bfloat16)`` (encoder under autocast) against the official
  fp32, with the SAM 1 suite's quality guard against segany fp32 (4 photos x 5 prompts, median mask IoU >= 0.99);
- ``predict-1``: ``predict()`` with one point, 3 masks at the original resolution;
- ``boxes-64``: ``predict(box=(64, 4), multimask_output=False)``, 64 masks at the original resolution;
- ``points-64 low-res``: one generator batch, 64 single points, 3 masks each: the official generator's
  call (``_predict(..., return_logits=True)``, logits upsampled to the image) against segany's
  (``predict_low_res_torch``: its generator upsamples only the survivors of the filters);
- ``everything``: segment-everything on the filters-off workload (``pred_iou_thresh=0``,
  ``stability_score_thresh=0``, as ``benchmarks/everything.py`` defines it for SAM 1), 32x32
  grid, 64 points per batch, on the 640x480 COCO photo; includes ``set_image``.

``--profile`` adds a ``torch.profiler`` table of one segany encoder forward (top ops by self CPU time).

    /work/main/.venv-bench/bin/python -m benchmarks.sam2_speed --models sam2.1_hiera_t
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from benchmarks import suite_quality
from benchmarks.common import SHARED, import_official, table, write_results
from benchmarks.run import speed_photo
from benchmarks.suite_decoder import grid_points
from benchmarks.suite_measure import count_flops, interleaved, load_average, median

SEED = 1234
PHOTOS = SHARED / "data" / "coco_val2017_tiny" / "images"
REPEATS = {"set_image": 3, "predict-1": 10, "boxes-64": 3, "points-64 low-res": 2, "everything": 1}
HEADER = ["model", "workload", "official s", "segany s", "vs official"]


def build_official_sam2(name: str, seed: int) -> torch.nn.Module:
    """The official SAM 2.1 ``name`` model, seeded default init plus seeded noise, eval mode, CPU."""
    from sam2.build_sam import build_sam2

    torch.manual_seed(seed)
    model = build_sam2(f"configs/sam2.1/{name}.yaml", ckpt_path=None, device="cpu")
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for key, tensor in sorted(model.state_dict().items()):
            if not tensor.is_floating_point():
                continue
            spread = float(tensor.std()) if tensor.numel() > 1 else 0.0
            scale = 0.25 * spread if spread > 0 else 0.05
            tensor.add_(scale * torch.randn(tensor.shape, generator=generator))
    return model.eval()


def save_sam2_checkpoint(model: torch.nn.Module, folder: Path, name: str) -> Path:
    """The state dict in the official SAM 2 checkpoint layout ``{"model": state_dict}``."""
    path = folder / f"{name}_random.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


def boxes(count: int, height: int, width: int) -> np.ndarray:
    """``count`` XYXY boxes of a quarter of the image side, centred on the grid points."""
    centres = grid_points(count, height, width)
    half = np.array([width, height], dtype=np.float32) / 8
    return np.concatenate([centres - half, centres + half], axis=1).clip(0, [width, height, width, height])


def time_pair(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds per implementation, interleaved, after one warm-up round."""
    with torch.inference_mode():
        return {k: median(v) for k, v in interleaved(calls, repeats=repeats, warmup=1).items()}


def bench_model(name: str, image: np.ndarray, small: np.ndarray, folder: Path, args: argparse.Namespace,
                photos: list[np.ndarray] | None = None) -> dict[str, Any]:
    """Every workload of the module docstring for SAM 2.1 ``name``; ``photos``: the quality guard's
    (default: the suite's four). ``args``: ``skip_everything``, ``profile``."""
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    import segany
    from segany.amg.sam2_generator import Sam2MaskGenerator
    from segany.predict.sam2_predictor import Sam2Predictor

    official_model = build_official_sam2(name, SEED)
    ours_model = segany.load_model(name, checkpoint=save_sam2_checkpoint(official_model, folder, name))
    theirs, ours = SAM2ImagePredictor(official_model), Sam2Predictor(ours_model)
    height, width = image.shape[:2]
    x = torch.randn(1, 3, 1024, 1024)
    with torch.inference_mode():
        flops = {"official": count_flops(lambda: official_model.image_encoder(x)),
                 "segany": count_flops(lambda: ours_model.image_encoder(x))}
    rows: dict[str, dict[str, float]] = {}
    quick = Sam2Predictor(ours_model, dtype=torch.bfloat16)
    encoder = time_pair({"official": lambda: theirs.set_image(image), "segany": lambda: ours.set_image(image),
                         "bf16": lambda: quick.set_image(image)}, REPEATS["set_image"])
    rows["set_image"] = {"official": encoder["official"], "segany": encoder["segany"]}
    rows["set_image bf16"] = {"official": encoder["official"], "segany": encoder["bf16"]}
    print(f"  {name} set_image: {encoder}", flush=True)
    point, label = grid_points(1, height, width), np.ones(1, dtype=np.int64)
    rows["predict-1"] = time_pair({"official": lambda: theirs.predict(point, label),
                                   "segany": lambda: ours.predict(point, label)}, REPEATS["predict-1"])
    prompts = boxes(64, height, width)
    rows["boxes-64"] = time_pair({"official": lambda: theirs.predict(box=prompts, multimask_output=False),
                                  "segany": lambda: ours.predict(box=prompts, multimask_output=False)}, REPEATS["boxes-64"])
    print(f"  {name} predict-1 / boxes-64: {rows['predict-1']} / {rows['boxes-64']}", flush=True)
    coords = torch.as_tensor(grid_points(64, height, width), dtype=torch.float32)
    ours_coords = ours._transform_coords(coords, True, (height, width))[:, None]
    theirs_coords = theirs._transforms.transform_coords(coords, normalize=True, orig_hw=(height, width))[:, None]
    ones = torch.ones(64, 1, dtype=torch.int)
    rows["points-64 low-res"] = time_pair(
        {"official": lambda: theirs._predict(theirs_coords, ones, multimask_output=True, return_logits=True),
         "segany": lambda: ours.predict_low_res_torch(ours_coords, ones)}, REPEATS["points-64 low-res"])
    print(f"  {name} points-64 low-res: {rows['points-64 low-res']}", flush=True)
    parity = {}
    with torch.inference_mode():
        _, ref_iou, ref_low = theirs.predict(box=prompts, multimask_output=False)
        _, iou, low = ours.predict(box=prompts, multimask_output=False)
    parity["boxes-64 low_res_logits_max_abs"] = float(np.abs(ref_low - low).max())
    parity["boxes-64 iou_max_abs"] = float(np.abs(ref_iou - iou).max())
    photos = suite_quality.load_photos(PHOTOS) if photos is None else photos
    guard = suite_quality.run(ours, {"bf16": quick}, photos)["bf16"]
    print(f"  {name} bf16 quality guard: {guard}", flush=True)
    counts = {}
    if not args.skip_everything:
        options = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "points_per_batch": 64}
        official_gen = SAM2AutomaticMaskGenerator(official_model, **options)
        ours_gen = Sam2MaskGenerator(ours_model, **options)
        outputs: dict[str, list] = {}

        def generate(key: str, generator: Any) -> Callable[[], None]:
            def call() -> None:
                outputs[key] = generator.generate(small)
            return call

        with torch.inference_mode():
            samples = interleaved({"official": generate("official", official_gen), "segany": generate("segany", ours_gen)},
                                  repeats=REPEATS["everything"], warmup=0)
        rows["everything"] = {k: median(v) for k, v in samples.items()}
        counts = {k: len(v) for k, v in outputs.items()}
    profile = encoder_profile(ours_model, x) if args.profile else None
    return {"rows": rows, "flops": flops, "parity": parity, "bf16_guard": guard, "everything_masks": counts, "profile": profile}


def result_rows(name: str, entry: dict[str, Any]) -> list[list[str]]:
    """Table rows (:data:`HEADER`) of one :func:`bench_model` result."""
    return [[name, workload, f"{times['official']:.3f}", f"{times['segany']:.3f}",
             f"{times['official'] / times['segany']:.2f}x"] for workload, times in entry["rows"].items()]


def encoder_profile(model: Any, x: torch.Tensor, top: int = 15) -> str:
    """``torch.profiler`` table of one image-encoder forward, ops sorted by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        model.image_encoder(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model.image_encoder(x)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sam2_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="sam2.1_hiera_t", help="comma-separated SAM 2.1 names (sam2.1_hiera_t, _s, _b+, _l)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-everything", action="store_true", help="no segment-everything row")
    parser.add_argument("--profile", action="store_true", help="profile one segany encoder forward")
    parser.add_argument("--output", default="sam2_speed", help="results file name under benchmarks/results/")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats of every row (default: per row)")
    args = parser.parse_args(argv)
    if args.repeats is not None:
        REPEATS.update(dict.fromkeys(REPEATS, args.repeats))
    import_official()
    torch.set_num_threads(args.threads)
    from segany import load_image

    image = speed_photo()
    small = load_image(SHARED / "data" / "coco_val2017_tiny" / "images" / "000000005001.jpg")
    load_before = load_average()
    print(f"{torch.get_num_threads()} threads; load average {load_before:.2f}", flush=True)
    results: dict[str, Any] = {"load_average_before": load_before, "threads": torch.get_num_threads(), "models": {}}
    out_rows = []
    with tempfile.TemporaryDirectory(prefix="segany-sam2-bench-") as tmp:
        for name in filter(None, (m.strip() for m in args.models.split(","))):
            entry = bench_model(name, image, small, Path(tmp), args)
            results["models"][name] = entry
            out_rows += result_rows(name, entry)
            print(f"{name}: encoder GFLOP official {entry['flops']['official'] / 1e9:.1f}, "
                  f"segany {entry['flops']['segany'] / 1e9:.1f}; parity {entry['parity']}; "
                  f"everything masks {entry['everything_masks']}", flush=True)
            if entry["profile"]:
                print(entry["profile"], flush=True)
    results["load_average_after"] = load_average()
    path = write_results(args.output, results)
    print(table(out_rows, HEADER))
    print(f"\nload average {load_before:.2f} before, {results['load_average_after']:.2f} after; results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
