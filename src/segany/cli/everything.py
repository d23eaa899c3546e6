"""``segany everything``: every mask of every image in files, folders and globs.

Argument parsing and messages only; the job (discovery, resume by settings, atomic per-image
SA-1B documents, per-image failures, the COCO file) is :mod:`segany.batch`.
"""
from __future__ import annotations

import argparse
import sys

from ..batch import COCO_FILE, find_images, job_settings, label_images, write_coco
from .common import checkpoint_sha256, info
from .jobs import (
    GeneratorFactory, ModelFactory, add_input_output_arguments, add_job_arguments, executor_from_args,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "everything", help="segment everything in images, folders (recursive) and globs",
        description="Automatic mask generation (the official SamAutomaticMaskGenerator's results) over many images.",
    )
    add_input_output_arguments(parser)
    parser.add_argument("--format", choices=("sa1b", "coco", "png"), default="sa1b",
                        help="sa1b: one JSON per image (always written); coco: also one COCO instances file "
                             f"{COCO_FILE}; png: also one PNG per mask in <image>_masks/")
    parser.add_argument("--overlay", action="store_true", help="also write <image>_overlay.png, each mask in its own colour")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo images whose JSON already exists (default: skip those made with the same settings, "
                             "refuse if some were made with other settings)")
    parser.add_argument("--points-per-side", type=int, default=32, metavar="N", help="point grid of N x N prompts (default 32)")
    parser.add_argument("--points-per-batch", type=int, default=64, metavar="N", help="prompts decoded at once (default 64)")
    parser.add_argument("--crop-layers", type=int, default=0, metavar="N", help="also run on 4, 16, ... crops (default 0)")
    parser.add_argument("--pred-iou-thresh", type=float, default=0.88, metavar="T", help="minimum predicted IoU (default 0.88)")
    parser.add_argument("--stability-thresh", type=float, default=0.95, metavar="T", help="minimum stability score (default 0.95)")
    parser.add_argument("--min-region-area", type=int, default=0, metavar="PX",
                        help="fill holes and drop islands smaller than this (default 0: off)")
    parser.add_argument("--fast", action="store_true", help="score candidates at low resolution (faster, may differ slightly)")
    parser.add_argument("--coco-images", default=None, metavar="GT.json",
                        help="with --format coco: take image ids, file names and sizes from this COCO file (by file name), "
                             "so COCOeval scores the results against it")
    add_job_arguments(parser)
    parser.set_defaults(handler=run)


def _generator_args(args: argparse.Namespace) -> dict:
    """The generator arguments that change results (``--points-per-batch`` does not)."""
    return {
        "points_per_side": args.points_per_side,
        "crop_n_layers": args.crop_layers,
        "pred_iou_thresh": args.pred_iou_thresh,
        "stability_score_thresh": args.stability_thresh,
        "min_mask_region_area": args.min_region_area,
        "fast": bool(args.fast),
    }


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..data.formats.coco import CocoImageIndex
    from ..errors import GeneratorArgumentError
    from ..fileio import ensure_directory

    if args.coco_images is not None and args.format != "coco":
        raise GeneratorArgumentError("--coco-images needs --format coco")
    executor = executor_from_args(args)
    out = ensure_directory(args.output)
    reference = CocoImageIndex.load(args.coco_images) if args.coco_images is not None else None
    images, missing = find_images(args.paths, out=out)
    for text in missing:
        info(f"failed: {text}: no such file, folder or matching image")
    model = ModelFactory.from_args(args, driver_device=None if executor is None else "cpu") if images else None
    generator_args = _generator_args(args)
    generator = GeneratorFactory(model, {"points_per_batch": args.points_per_batch, "output_mode": "coco_rle",
                                         **generator_args}) if model is not None else None
    if generator is not None:
        generator()  # refuses bad generator arguments here, before any image is scheduled
    settings = job_settings(model.load(), checkpoint_sha256(args), generator_args) if model is not None else {}
    summary = label_images(
        images, generator, out, settings, overwrite=args.overwrite, overlay=args.overlay,
        mask_pngs=args.format == "png", max_pixels=args.max_pixels, reference=reference,
        report=lambda line: tqdm.write(line, file=sys.stderr),
        progress=lambda outcomes: iter(tqdm(outcomes, unit="image", desc="everything", disable=None)),
        executor=executor,
    )
    if args.format == "coco":
        coco = write_coco(images, out, settings, reference=reference)
        info(f"wrote {out / COCO_FILE}: {len(coco['images'])} image(s), {len(coco['annotations'])} mask(s)")
    failed = summary.failed + len(missing)
    info(f"everything: done {summary.done}, skipped {summary.skipped}, failed {failed}, retried {summary.retried} "
         f"(skipped = finished before with the same settings; --overwrite redoes them); results in {out}/")
    return 1 if failed else 0
