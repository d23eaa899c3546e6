"""Video tracking memory and speed: segany's ``Sam2VideoPredictor`` against the official
``SAM2VideoPredictor`` on a 50-frame and a 500-frame clip, each run in its own subprocess.

The clip is DAVIS 2016 ``blackswan`` (50 frames) played forward and back until it has N frames,
written as JPEG copies (bytes unchanged) to a temporary folder that both implementations read
(the official ``init_state`` needs a folder of JPEGs). Model: the golden tiny SAM 2.1 checkpoint
(``shared/golden/sam2``), official semantics (hole filling off in both: the official code needs
its CUDA extension). ``--image-size`` builds both models at another input size (same weights;
the default 1024 is the real one; 512 makes the run fit a few minutes on a 2-core CPU).
One click on frame 0 (the swan), then ``propagate_in_video`` over all frames.

Per run: peak RSS of the process (``resource.getrusage`` ``ru_maxrss``), the seconds from
``init_state`` to the last frame divided by N (s/frame, includes the official up-front frame
loading), the tracking loop alone, and the IoU of the masks of every 10th frame with the
official ones; also the tracking loop's CPU time (``time.process_time``: on a shared machine it
counts this process's work, not the time other jobs hold the core). One torch thread by default (``--threads``): on a shared machine two OpenMP threads
wait for each other whenever one is descheduled. ``--repeat`` interleaves repeated runs and keeps
the fastest. ``segany-bf16`` is ``Sam2VideoPredictor(dtype=torch.bfloat16)``;
``official-bf16`` the official predictor with the whole session under ``torch.autocast("cpu", torch.bfloat16)``
(how the official notebooks run it on CUDA), so bf16 is compared with bf16 as well as with the official fp32.

The work per frame is counted too: the floating-point operations of steady-state frames (all
``num_maskmem`` memories filled; ``torch.utils.flop_counter``, with the CPU flash-attention kernel
counted as its two matmuls), each implementation in its own subprocess, and the fp32 matmul peak of
this CPU at the same thread count, so the table shows how far each implementation is from the
machine's limit and what a speed target needs. Needs the official
package (``/work/main/.venv-bench``); figures in ``benchmarks/RESULTS.md``::

    PYTHONPATH=$PWD/src:$PWD SEGANY_SHARED=/work/shared /work/main/.venv-bench/bin/python -W ignore \
        -m benchmarks.video_memory --image-size 512 --impls segany official segany-bf16
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import lzma
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("SEGANY_SHARED", Path(__file__).resolve().parents[2] / "shared"))
GOLDEN = SHARED / "golden" / "sam2"
CLIP = SHARED / "data" / "davis2016_clips" / "JPEGImages" / "480p" / "blackswan"
YAML = "sam2.1_hiera_golden_tiny.yaml"
CLICK = (335, 250)  # on the swan in frame 0 (the golden video_click_forward click)
SAMPLE_EVERY = 10  # masks of every 10th frame are kept to compare the implementations
IMPLS = ("segany", "segany-bf16", "official", "official-bf16")


def ping_pong(num_frames: int, length: int) -> list[int]:
    """Source frame indices 0, 1, .., L-1, L-2, .., 0, 1, .. until ``num_frames`` of them."""
    cycle = list(range(length)) + list(range(length - 2, 0, -1))
    return [cycle[i % len(cycle)] for i in range(num_frames)]


def write_clip(folder: Path, num_frames: int) -> Path:
    sources = sorted(CLIP.glob("*.jpg"))
    folder.mkdir(parents=True, exist_ok=True)
    for i, src in enumerate(ping_pong(num_frames, len(sources))):
        shutil.copyfile(sources[src], folder / f"{i:05d}.jpg")
    return folder


def _checkpoint(work: Path) -> Path:
    path = work / "tiny_sam2.1.pt"
    if not path.exists():
        with lzma.open(GOLDEN / "tiny_sam2.1.pt.xz") as src, path.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    return path


def _segany_predictor(checkpoint: Path, image_size: int, dtype: str | None = None):
    import segany
    from segany.registry import sam2_config_of
    from segany.video.sam2_video import Sam2VideoPredictor

    config = sam2_config_of(GOLDEN / YAML)
    if image_size != config.image_size:
        grid = image_size // config.backbone_stride
        att = config.memory_attention
        config = dataclasses.replace(
            config, image_size=image_size, encoder=dataclasses.replace(config.encoder, img_size=image_size),
            memory_attention=dataclasses.replace(
                att, self_attention=dataclasses.replace(att.self_attention, feat_sizes=(grid, grid)),
                cross_attention=dataclasses.replace(att.cross_attention, feat_sizes=(grid, grid))))
    return Sam2VideoPredictor(segany.load_model(config, checkpoint=checkpoint), fill_hole_area=0, dtype=dtype)


def _official_predictor(checkpoint: Path, image_size: int):
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from sam2.build_sam import build_sam2_video_predictor

    GlobalHydra.instance().clear()
    initialize_config_dir(config_dir=str(GOLDEN), version_base="1.2")
    overrides = ["++model.fill_hole_area=0"]
    if image_size != 1024:
        overrides += [f"++model.image_size={image_size}",
                      f"++model.memory_attention.layer.self_attention.feat_sizes=[{image_size // 16},{image_size // 16}]",
                      f"++model.memory_attention.layer.cross_attention.feat_sizes=[{image_size // 16},{image_size // 16}]"]
    return build_sam2_video_predictor(YAML, str(checkpoint), device="cpu", hydra_overrides_extra=overrides)


STEADY_FROM = 8  # frame 0 prompted, frames 1..7 fill the 7 memories: from frame 8 on every frame costs the same
FLOP_FRAMES = 3


def _sdpa_flops(query: tuple, key: tuple, value: tuple, *args, out_shape=None, **kwargs) -> int:
    """The CPU flash-attention kernel's work: Q K^T and P V (flop_counter does not count this kernel)."""
    batch, heads, length, dim = query
    return 2 * batch * heads * length * key[-2] * (dim + value[-1])


def frame_flops(predictor, state) -> float:
    """Floating-point operations of one steady-state tracked frame (mean of a few)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    frames = predictor.propagate_in_video(state)
    for _ in range(STEADY_FROM):
        next(frames)
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        for _ in range(FLOP_FRAMES):
            next(frames)
    return counter.get_total_flops() / FLOP_FRAMES


def matmul_peak(threads: int, side: int = 2048, tries: int = 20) -> float:
    """This CPU's fp32 matmul rate in GFLOP/s at ``threads`` (best of ``tries``)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(side, side), torch.randn(side, side)
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * side**3 / best / 1e9


def worker(impl: str, frames: Path, num_frames: int, image_size: int, work: Path, threads: int,
           flops: bool = False) -> dict:
    """One implementation on one clip, in this process: its figures as a dict."""
    import torch

    torch.set_num_threads(threads)
    checkpoint = _checkpoint(work)
    if impl.startswith("official"):
        predictor = _official_predictor(checkpoint, image_size)
    else:
        predictor = _segany_predictor(checkpoint, image_size, "bfloat16" if impl == "segany-bf16" else None)
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if impl == "official-bf16":  # as the official notebooks run it on CUDA: the whole session under autocast
        torch.autocast("cpu", dtype=torch.bfloat16).__enter__()
    start = time.perf_counter()
    state = predictor.init_state(str(frames))
    predictor.add_new_points_or_box(state, 0, 1, points=np.array([CLICK], np.float32), labels=np.array([1], np.int32))
    if flops:
        return {"impl": impl, "image_size": image_size, "gflop_per_frame": frame_flops(predictor, state) / 1e9}
    loop_start, loop_cpu = time.perf_counter(), time.process_time()
    count, area, kept = 0, 0.0, []
    for frame_idx, _, logits in predictor.propagate_in_video(state):
        count += 1
        mask = (logits[0, 0] > 0).numpy()
        area += float(mask.mean())
        if frame_idx % SAMPLE_EVERY == 0:
            kept.append(np.packbits(mask, axis=-1))
    end, end_cpu = time.perf_counter(), time.process_time()
    np.save(work / f"masks_{impl}_{num_frames}.npy", np.stack(kept))
    return {"impl": impl, "frames": count, "image_size": image_size,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_after_model_mb": rss_model,
            "s_per_frame": (end - start) / count, "loop_s_per_frame": (end - loop_start) / count,
            "loop_cpu_s_per_frame": (end_cpu - loop_cpu) / count,
            "mean_mask_fraction": area / count}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--impls", nargs="+", default=["segany", "official"], choices=IMPLS)
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared machine two OpenMP threads wait for each other)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per (clip, implementation), interleaved; "
                                                               "the fastest is reported")
    parser.add_argument("--flops", action="store_true",
                        help="also count the work of a steady-state frame per implementation and the matmul peak")
    parser.add_argument("--worker", nargs=4, metavar=("IMPL", "FRAMES_DIR", "N", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        impl, frames, n, work = args.worker
        print(json.dumps(worker(impl, Path(frames), int(n), args.image_size, Path(work), args.threads, args.flops)))
        return 0
    with tempfile.TemporaryDirectory(prefix="video-memory-") as tmp:
        return report(args, Path(tmp))


def _run_worker(args: argparse.Namespace, impl: str, folder: Path, n: int, work: Path, flops: bool = False) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.video_memory", "--image-size", str(args.image_size),
           "--threads", str(args.threads), "--worker", impl, str(folder), str(n), str(work)] + (["--flops"] if flops else [])
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{impl} on {n} frames failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def flop_table(args: argparse.Namespace, work: Path, rows: list[dict], peaks: list[float]) -> None:
    """GFLOP per steady-state frame, the rate each run reached, and the rate a 1.5x target needs."""
    folder = write_clip(work / "clip_flops", STEADY_FROM + FLOP_FRAMES)
    gflop = {impl: _run_worker(args, impl, folder, STEADY_FROM + FLOP_FRAMES, work, flops=True)["gflop_per_frame"]
             for impl in args.impls}
    peak = max(peaks)
    print(f"\nfp32 matmul peak at {args.threads} thread(s): {peak:.1f} GFLOP/s (best of the runs before and after: "
          + ", ".join(f"{p:.1f}" for p in peaks) + ")")
    print("| impl | frames | GFLOP / steady frame | s/frame (tracking) | GFLOP/s | % of matmul peak |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        rate = gflop[r["impl"]] / r["loop_s_per_frame"]
        print(f"| {r['impl']} | {r['frames']} | {gflop[r['impl']]:.2f} | {r['loop_s_per_frame']:.3f} | {rate:.1f} | "
              f"{100 * rate / peak:.0f} % |")
    for r in rows:
        if r["impl"] == "official" and "segany" in gflop:
            need = gflop["segany"] / (r["loop_s_per_frame"] / 1.5)
            print(f"{r['frames']} frames: 1.5x the official tracking speed in fp32 needs {need:.1f} GFLOP/s for "
                  f"segany's {gflop['segany']:.2f} GFLOP a frame: {100 * need / peak:.0f} % of the matmul peak")


def report(args: argparse.Namespace, work: Path) -> int:
    """Run every (clip, implementation) in its own subprocess; print the table and the ratios."""
    runs = []
    peaks = [matmul_peak(args.threads)] if args.flops else []
    for n in args.frames:
        folder = write_clip(work / f"clip{n}", n)
        for impl in [impl for _ in range(args.repeat) for impl in args.impls]:
            try:
                runs.append(_run_worker(args, impl, folder, n, work))
            except RuntimeError as exc:
                print(exc, file=sys.stderr)
                return 1
            print(json.dumps(runs[-1]), flush=True)
    fastest: dict[tuple[str, int], dict] = {}
    for r in runs:
        key = (r["impl"], r["frames"])
        if key not in fastest or r["s_per_frame"] < fastest[key]["s_per_frame"]:
            fastest[key] = r
    rows = list(fastest.values())
    print("\n| impl | frames | image size | peak RSS MB | s/frame (init..end) | s/frame (tracking) | "
          "CPU s/frame (tracking) | mask fraction |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['impl']} | {r['frames']} | {r['image_size']} | {r['peak_rss_mb']:.0f} | {r['s_per_frame']:.3f} | "
              f"{r['loop_s_per_frame']:.3f} | {r['loop_cpu_s_per_frame']:.3f} | {r['mean_mask_fraction']:.3f} |")
    by = {(r["impl"], r["frames"]): r for r in rows}
    small, large = min(args.frames), max(args.frames)
    for impl in args.impls:
        if (impl, small) in by and (impl, large) in by and small != large:
            ratio = by[impl, large]["peak_rss_mb"] / by[impl, small]["peak_rss_mb"]
            print(f"{impl}: peak RSS {large} / {small} frames = {ratio:.2f}x")
    for n in args.frames:
        for impl, base in (("segany", "official"), ("segany-bf16", "official"), ("segany-bf16", "official-bf16"),
                           ("official-bf16", "official")):
            if (impl, n) not in by or (base, n) not in by:
                continue
            speed = by[base, n]["s_per_frame"] / by[impl, n]["s_per_frame"]
            loop = by[base, n]["loop_s_per_frame"] / by[impl, n]["loop_s_per_frame"]
            cpu = by[base, n]["loop_cpu_s_per_frame"] / by[impl, n]["loop_cpu_s_per_frame"]
            ious = mask_ious(np.load(work / f"masks_{impl}_{n}.npy"), np.load(work / f"masks_official_{n}.npy"))
            print(f"{n} frames: {impl} {speed:.2f}x the {base} speed per frame (tracking loop {loop:.2f}x, "
                  f"its CPU time {cpu:.2f}x); "
                  f"mask IoU with the official on every {SAMPLE_EVERY}th frame: min {ious.min():.4f}, "
                  f"mean {ious.mean():.4f}")
    if args.flops:
        peaks.append(matmul_peak(args.threads))
        flop_table(args, work, rows, peaks)
    return 0


def mask_ious(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame IoU of two stacks of packed masks."""
    a, b = np.unpackbits(a, axis=-1).astype(bool), np.unpackbits(b, axis=-1).astype(bool)
    inter = (a & b).reshape(len(a), -1).sum(1)
    union = (a | b).reshape(len(a), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


if __name__ == "__main__":
    sys.exit(main())
