"""Inpainting quality by reconstruction: holes cut where the picture is known, filled, compared.

No ground truth exists for a removed real object, so the benchmark removes what is there: on each
``coco_val2017_tiny`` photo it cuts object-shaped holes (the largest instance mask of *another*
image, scaled to a hole-size bucket) over this photo's background (a place that overlaps none of
its own annotated objects, seeded), fills them, and compares the fill with the original pixels
inside the hole: PSNR over the hole's pixels, SSIM (scikit-image, 7x7 Gaussian-free windows) averaged
over them, and seconds per hole. Buckets: small (0.5-2 % of the image), medium (2-8 %), large
(8-20 %). Every classic method side by side, with and without coarse-to-fine filling; the slow
exemplar methods (FSR best, shift-map) on the first ``--slow-images`` photos only. LaMa joins when
its weights are cached (``segany.weights``) or given (``--lama PATH``)::

    PYTHONPATH=src python -m benchmarks.inpaint [--images 40] [--slow-images 8] [--lama PATH]

``--video SEQ`` measures flicker instead, what removing an object from a video adds: each frame of
the DAVIS 2016 sequence ``SEQ`` (``davis2016_clips``) has its ground-truth object, dilated by 15 px,
removed frame by frame; flicker is the mean absolute frame-to-frame difference of the result inside
the hole (pixels in the hole on both frames) beside the same measure outside it (the video's own
motion), per engine::

    PYTHONPATH=src python -m benchmarks.inpaint --video blackswan
"""
from __future__ import annotations

import argparse
import sys
import time

import cv2
import numpy as np

from benchmarks.common import REPO, SHARED, table, write_results

sys.path.insert(0, str(REPO / "src"))

DATA = SHARED / "data" / "coco_val2017_tiny"
BUCKETS = {"small": (0.005, 0.02), "medium": (0.02, 0.08), "large": (0.08, 0.20)}
SLOW = {"fsr-best", "shiftmap"}


def _instance_masks(coco, image_id: int, height: int, width: int) -> list[np.ndarray]:
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None))
    return [coco.annToMask(a).astype(bool) for a in anns if a["area"] > 0]


def _place(shape: np.ndarray, objects: np.ndarray, area: float, rng: np.random.Generator) -> np.ndarray | None:
    """``shape`` scaled to ``area`` pixels, put where it overlaps ``objects`` least (of 200 tries)."""
    ys, xs = np.nonzero(shape)
    shape = shape[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    scale = np.sqrt(area / shape.sum())
    height, width = objects.shape
    h, w = max(2, round(shape.shape[0] * scale)), max(2, round(shape.shape[1] * scale))
    if h >= height or w >= width:
        return None
    small = cv2.resize(shape.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    best, best_overlap = None, None
    for _ in range(200):
        y, x = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
        overlap = int((objects[y:y + h, x:x + w] & small).sum())
        if best_overlap is None or overlap < best_overlap:
            best, best_overlap = (y, x), overlap
        if overlap == 0:
            break
    hole = np.zeros_like(objects)
    hole[best[0]:best[0] + h, best[1]:best[1] + w] = small
    return hole


def make_holes(num_images: int, seed: int = 0) -> list[dict]:
    """(image, hole, bucket) triples: one hole per bucket per image."""
    from pycocotools.coco import COCO

    from segany.data.images import load_image

    coco = COCO(str(DATA / "annotations" / "instances_val2017.json"))
    entries = sorted(coco.loadImgs(coco.getImgIds()), key=lambda e: e["file_name"])[:num_images]
    donors = []
    for entry in entries:
        masks = _instance_masks(coco, entry["id"], entry["height"], entry["width"])
        donors.append(max(masks, key=lambda m: m.sum()) if masks else None)
    rng = np.random.default_rng(seed)
    cases = []
    for i, entry in enumerate(entries):
        image = load_image(DATA / "images" / entry["file_name"])
        masks = _instance_masks(coco, entry["id"], entry["height"], entry["width"])
        objects = np.logical_or.reduce(masks) if masks else np.zeros(image.shape[:2], bool)
        donor = next(d for d in donors[i + 1:] + donors[:i + 1] if d is not None)
        for bucket, (low, high) in BUCKETS.items():
            area = rng.uniform(low, high) * objects.size
            hole = _place(donor, objects, area, rng)
            if hole is not None:
                cases.append({"name": entry["file_name"], "index": i, "image": image, "hole": hole, "bucket": bucket})
    return cases


def score(original: np.ndarray, filled: np.ndarray, hole: np.ndarray) -> tuple[float, float]:
    """PSNR over the hole's pixels and the SSIM map's mean over them."""
    from skimage.metrics import structural_similarity

    diff = original[hole].astype(np.float64) - filled[hole].astype(np.float64)
    psnr = 10 * np.log10(255.0**2 / max(float(np.mean(diff**2)), 1e-10))
    _, ssim_map = structural_similarity(original, filled, channel_axis=2, data_range=255, full=True)
    return psnr, float(ssim_map[hole].mean())


def engines(lama: str | None) -> dict[str, object]:
    from segany.inpaint import ClassicInpainter, LamaInpainter, method_names

    found = {}
    for method in method_names():
        found[method] = ClassicInpainter(method, multiscale=False)
        if method not in SLOW:  # shift-map (slow) has no coarse-to-fine mode
            found[method + " multiscale"] = ClassicInpainter(method, multiscale=True)
    try:
        found["lama"] = LamaInpainter(checkpoint=lama, download=False)
    except Exception as exc:  # noqa: BLE001 - no weights here: said in the output
        print(f"lama: not run ({type(exc).__name__}: {exc})")
    return found


def flicker(sequence: str, lama: str | None, dilate: int = 15) -> int:
    """Frame-to-frame change inside the removed object's hole against outside it, per engine."""
    from segany.data.images import load_image
    from segany.inpaint import dilate_mask

    root = SHARED / "data" / "davis2016_clips"
    frames = [load_image(p) for p in sorted((root / "JPEGImages" / "480p" / sequence).glob("*.jpg"))]
    holes = [dilate_mask(load_image(p)[..., 0] > 127, dilate)
             for p in sorted((root / "Annotations" / "480p" / sequence).glob("*.png"))]
    lines = []
    for name, engine in engines(lama).items():
        if name.split()[0] in SLOW:
            continue
        start = time.perf_counter()
        out = [engine.inpaint(f, h).astype(np.float64) for f, h in zip(frames, holes)]
        seconds = (time.perf_counter() - start) / len(frames)
        inside, outside = [], []
        for t in range(1, len(out)):
            diff = np.abs(out[t] - out[t - 1]).mean(-1)
            both, neither = holes[t] & holes[t - 1], ~(holes[t] | holes[t - 1])
            inside.append(diff[both].mean())
            outside.append(diff[neither].mean())
        lines.append([name, f"{np.mean(inside):.2f}", f"{np.mean(outside):.2f}", f"{np.mean(inside) / np.mean(outside):.2f}",
                      f"{seconds:.3f}"])
        print(lines[-1], flush=True)
    print(f"{sequence}: {len(frames)} frames, object dilated by {dilate} px")
    print(table(lines, ["engine", "flicker inside the hole", "outside (the video's own change)", "ratio", "s/frame"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--slow-images", type=int, default=8)
    parser.add_argument("--lama", default=None, help="big-lama.pt (default: the cached download, if any)")
    parser.add_argument("--video", default=None, metavar="SEQ", help="measure flicker on this DAVIS 2016 sequence instead")
    args = parser.parse_args(argv)
    if args.video:
        return flicker(args.video, args.lama)
    cases = make_holes(args.images)
    results: dict[str, dict[str, list]] = {}
    header = ["engine"] + [f"{b} {m}" for b in BUCKETS for m in ("PSNR", "SSIM", "s")] + ["holes"]
    lines = []
    for name, engine in engines(args.lama).items():
        rows = results.setdefault(name, {b: [] for b in BUCKETS})
        for case in cases:
            if name.split()[0] in SLOW and case["index"] >= args.slow_images:
                continue
            start = time.perf_counter()
            filled = engine.inpaint(case["image"], case["hole"])
            seconds = time.perf_counter() - start
            assert (filled[~case["hole"]] == case["image"][~case["hole"]]).all(), f"{name} changed known pixels"
            rows[case["bucket"]].append((*score(case["image"], filled, case["hole"]), seconds))
        line = [name]
        for bucket in BUCKETS:
            values = np.array(rows[bucket]) if rows[bucket] else np.full((1, 3), np.nan)
            line += [f"{values[:, 0].mean():.2f}", f"{values[:, 1].mean():.3f}", f"{values[:, 2].mean():.3f}"]
        lines.append(line + [sum(len(v) for v in rows.values())])
        print(" | ".join(str(v) for v in lines[-1]), flush=True)
    print(table(lines, header))
    write_results("inpaint", {"images": args.images, "slow_images": args.slow_images, "buckets": BUCKETS,
                              "results": {n: {b: np.array(v).tolist() for b, v in r.items()} for n, r in results.items()}})
    print(f"{len(cases)} holes on {args.images} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
