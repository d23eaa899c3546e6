"""Segment everything: the official ``SamAutomaticMaskGenerator`` against ``segany.MaskGenerator``.

Same seeded random-weight models (built by the official code, loaded into segany from the saved
state dict), same COCO photos, same process and thread count, two workloads:

- ``default``: the official default arguments. Random weights predict low IoUs, so the IoU
  filter drops nearly every candidate and this mostly measures encoder + decoder;
- ``filters-off``: ``pred_iou_thresh=0`` and ``stability_score_thresh=0`` (both filters skipped),
  so every candidate goes through stability scoring, boxes, NMS and encoding, as a trained
  model's good masks do. The speed targets are for this workload.

``--fast`` adds segany's shortcut setting: ``MaskGenerator(Predictor(model, dtype=bfloat16,
decoder_dtype=bfloat16), fast=True)`` (candidates scored at low resolution, networks in bf16),
compared with exact mode.

Prints seconds per image, the ratio, the masks left after each stage, and how segany's masks
agree with the official ones (exactly equal masks; mean IoU of one-to-one matched masks), also
for ``fast=True`` against exact mode. Writes benchmarks/results/everything.json.

    .venv-bench/bin/python benchmarks/everything.py --models vit_t,vit_b --images 2
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED, build_official, import_official, save_checkpoint, table, timed, write_results  # noqa: E402

WORKLOADS = {
    "default": {},
    "filters-off": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0},
}


def agreement(reference: list[np.ndarray], other: list[np.ndarray]) -> dict[str, float]:
    """Masks equal to a reference mask, and the mean IoU of greedy one-to-one matches (IoU >= 0.5)."""
    from pycocotools import mask as mask_utils

    from segany.masks import encode_rles

    if not reference or not other:
        return {"equal": 0, "matched": 0, "miou_matched": float("nan")}
    ref_rles = encode_rles(np.stack(reference))
    other_rles = encode_rles(np.stack(other))
    equal = len({r["counts"] for r in ref_rles} & {r["counts"] for r in other_rles})
    as_bytes = lambda rles: [{"size": r["size"], "counts": r["counts"].encode()} for r in rles]  # noqa: E731
    ious = mask_utils.iou(as_bytes(ref_rles), as_bytes(other_rles), [0] * len(other_rles))
    pairs = sorted(((ious[i, j], i, j) for i in range(len(ref_rles)) for j in range(len(other_rles))), reverse=True)
    used_ref, used_other, matched = set(), set(), []
    for iou, i, j in pairs:
        if iou < 0.5:
            break
        if i not in used_ref and j not in used_other:
            used_ref.add(i)
            used_other.add(j)
            matched.append(iou)
    return {"equal": equal, "matched": len(matched), "miou_matched": float(np.mean(matched)) if matched else float("nan")}


def load_images(count: int) -> list[tuple[str, np.ndarray]]:
    from segany import load_image

    folder = SHARED / "data" / "coco_val2017_tiny" / "images"
    paths = sorted(folder.glob("*.jpg"))[:count]
    if not paths:
        raise SystemExit(f"no images in {folder} (set SEGANY_SHARED)")
    return [(p.name, load_image(p)) for p in paths]


def bench_model(name: str, images: list[tuple[str, np.ndarray]], args: argparse.Namespace, folder: Path) -> list[dict]:
    import segany

    official_model = build_official(name, args.seed)
    checkpoint = save_checkpoint(official_model, folder, name)
    ours_model = segany.load_model(name, checkpoint=checkpoint)
    if name == "vit_t":
        from mobile_sam import SamAutomaticMaskGenerator
    else:
        from segment_anything import SamAutomaticMaskGenerator

    rows = []
    for workload, options in WORKLOADS.items():
        if workload not in args.workloads:
            continue
        official = SamAutomaticMaskGenerator(official_model, **options)
        exact = segany.MaskGenerator(ours_model, points_per_batch=args.points_per_batch, **options)
        quick_predictor = segany.Predictor(ours_model, dtype=args.fast_dtype, decoder_dtype=args.fast_dtype)
        fast = segany.MaskGenerator(quick_predictor, points_per_batch=args.points_per_batch, fast=True, **options)
        for image_name, image in images:
            row = {"model": name, "workload": workload, "image": image_name, "size": list(image.shape[:2])}
            with torch.inference_mode():
                if not args.skip_official:
                    theirs, row["official_s"] = timed(lambda: official.generate(image))
                    row["official_masks"] = len(theirs)
                ours, row["segany_s"] = timed(lambda: exact.generate(image))
                row["counts"] = exact.counts.as_dict()
                if args.fast:
                    quick, row["fast_s"] = timed(lambda: fast.generate(image))
                    row["fast_counts"] = fast.counts.as_dict()
            ours_masks = [r["segmentation"] for r in ours]
            if not args.skip_official:
                row["agreement"] = agreement([r["segmentation"] for r in theirs], ours_masks)
            if args.fast:
                row["fast_vs_exact"] = agreement(ours_masks, [r["segmentation"] for r in quick])
            rows.append(row)
            print(f"  {name} {workload} {image_name}: " + ", ".join(
                f"{k} {row[k]:.2f}s" for k in ("official_s", "segany_s", "fast_s") if k in row), flush=True)
    return rows


def summarise(rows: list[dict]) -> list[list]:
    out = []
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["workload"]), []).append(row)
    for (model, workload), group in groups.items():
        mean = lambda key: float(np.mean([r[key] for r in group])) if key in group[0] else float("nan")  # noqa: E731
        stage = lambda key: int(sum(r["counts"][key] for r in group))  # noqa: E731
        agree = [r["agreement"] for r in group if "agreement" in r]
        fast = [r["fast_vs_exact"] for r in group if "fast_vs_exact" in r]
        official, ours, quick = mean("official_s"), mean("segany_s"), mean("fast_s")
        out.append([
            model, workload, len(group), f"{official:.2f}", f"{ours:.2f}", f"{official / ours:.1f}x",
            f"{quick:.2f}" if quick == quick else "-", f"{official / quick:.1f}x" if quick == quick else "-",
            f"{stage('candidates')}/{stage('after_iou')}/{stage('after_stability')}/{stage('after_box_nms')}/{stage('final')}",
            sum(r.get("official_masks", 0) for r in group),
            _agree_text(agree, "official_masks", group), _agree_text(fast, None, group),
        ])
    return out


def _agree_text(items: list[dict], total_key: str | None, group: list[dict]) -> str:
    if not items:
        return "-"
    equal = sum(a["equal"] for a in items)
    matched = sum(a["matched"] for a in items)
    ious = [a["miou_matched"] for a in items if a["miou_matched"] == a["miou_matched"]]
    total = sum(r.get(total_key, 0) for r in group) if total_key else sum(r["counts"]["final"] for r in group)
    miou = f"{np.mean(ious):.4f}" if ious else "-"
    return f"{equal}/{total} equal, {matched} matched, mIoU {miou}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vit_t,vit_b", help="comma-separated: vit_t, vit_b, vit_l, vit_h")
    parser.add_argument("--images", type=int, default=2, help="how many COCO photos (sorted by name)")
    parser.add_argument("--workloads", default="default,filters-off", help="comma-separated: " + ", ".join(WORKLOADS))
    parser.add_argument("--points-per-batch", type=int, default=64, help="segany's points_per_batch (official: 64)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast", action="store_true",
                        help="also time the fast setting (fast=True, encoder and decoder in --fast-dtype) against exact mode")
    parser.add_argument("--fast-dtype", default="bfloat16", help="precision of the fast setting's predictor (default bfloat16)")
    parser.add_argument("--skip-official", action="store_true", help="segany only (quick iterations)")
    parser.add_argument("--out", default="everything", help="result name under benchmarks/results/")
    args = parser.parse_args()
    args.workloads = args.workloads.split(",")
    torch.set_num_threads(args.threads)
    import_official()

    images = load_images(args.images)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            rows.extend(bench_model(name, images, args, Path(folder)))
    header = ["model", "workload", "images", "official s/img", "segany s/img", "ratio", "fast s/img", "fast ratio",
              "segany masks: cand/IoU/stab/NMS/final", "official masks", "exact vs official", "fast vs exact"]
    print()
    print(table(summarise(rows), header))
    path = write_results(args.out, {"args": vars(args), "rows": rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
