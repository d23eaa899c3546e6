"""``segany everything``: every mask of every image in files, folders and globs.

Per image, an SA-1B style JSON is written atomically once the image is finished; it is the
record that the image is done, so a re-run (after a crash or Ctrl-C) skips finished images and
``--format coco`` assembles its one COCO file from those JSONs. An unreadable image is
reported and counted, and the run goes on.
"""
from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

from ..errors import ImageError
from .common import add_model_arguments, info, load_model_from_args

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"})
COCO_FILE = "annotations.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "everything", help="segment everything in images, folders (recursive) and globs",
        description="Automatic mask generation (the official SamAutomaticMaskGenerator's results) over many images.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (searched recursively) or glob patterns")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    parser.add_argument("--format", choices=("sa1b", "coco", "png"), default="sa1b",
                        help="sa1b: one JSON per image (always written); coco: also one COCO instances file "
                             f"{COCO_FILE}; png: also one PNG per mask in <image>_masks/")
    parser.add_argument("--overlay", action="store_true", help="also write <image>_overlay.png, each mask in its own colour")
    parser.add_argument("--overwrite", action="store_true", help="redo images whose JSON already exists (default: skip them)")
    parser.add_argument("--points-per-side", type=int, default=32, metavar="N", help="point grid of N x N prompts (default 32)")
    parser.add_argument("--points-per-batch", type=int, default=64, metavar="N", help="prompts decoded at once (default 64)")
    parser.add_argument("--crop-layers", type=int, default=0, metavar="N", help="also run on 4, 16, ... crops (default 0)")
    parser.add_argument("--pred-iou-thresh", type=float, default=0.88, metavar="T", help="minimum predicted IoU (default 0.88)")
    parser.add_argument("--stability-thresh", type=float, default=0.95, metavar="T", help="minimum stability score (default 0.95)")
    parser.add_argument("--min-region-area", type=int, default=0, metavar="PX",
                        help="fill holes and drop islands smaller than this (default 0: off)")
    parser.add_argument("--fast", action="store_true", help="score candidates at low resolution (faster, may differ slightly)")
    add_model_arguments(parser)
    parser.set_defaults(handler=run)


def find_images(inputs: list[str]) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(image path, its name relative to the output folder) for every input, and the inputs that matched nothing.

    A folder contributes its image files (by suffix), keeping their sub-folders; a file or a
    glob match contributes itself under its own name.
    """
    found: list[tuple[Path, Path]] = []
    missing: list[str] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            found.extend((p, p.relative_to(path)) for p in files)
        elif path.is_file():
            found.append((path, Path(path.name)))
        elif glob.has_magic(text) and (matches := sorted(Path(m) for m in glob.glob(text, recursive=True) if Path(m).is_file())):
            found.extend((p, Path(p.name)) for p in matches)
        else:
            missing.append(text)
    return found, missing


def _output_json(out: Path, relative: Path) -> Path:
    return out / relative.parent / f"{relative.name}.json"


def _check_unique(images: list[tuple[Path, Path]], out: Path) -> list[tuple[Path, Path]]:
    """Drop repeated inputs; refuse two different images that would write the same JSON."""
    seen: dict[Path, Path] = {}
    unique = []
    for path, relative in images:
        target = _output_json(out, relative)
        if target in seen:
            if seen[target].resolve() != path.resolve():
                raise ImageError(f"{seen[target]} and {path} would both write {target}: run them separately or from one folder")
            continue
        seen[target] = path
        unique.append((path, relative))
    return unique


def _settings(args: argparse.Namespace) -> dict:
    return {
        "model": str(args.model),
        "checkpoint": None if args.checkpoint is None else str(args.checkpoint),
        "points_per_side": args.points_per_side,
        "crop_n_layers": args.crop_layers,
        "pred_iou_thresh": args.pred_iou_thresh,
        "stability_score_thresh": args.stability_thresh,
        "min_mask_region_area": args.min_region_area,
        "fast": bool(args.fast),
    }


def run(args: argparse.Namespace) -> int:
    import json

    from tqdm import tqdm

    from ..everything import MaskGenerator
    from ..export.coco import coco_instances
    from ..export.overlay import draw_overlay
    from ..export.png import save_png
    from ..export.sa1b import sa1b_document
    from ..fileio import atomic_write_json
    from ..image import load_image
    from ..masks import decode_rle

    out = Path(args.output)
    images, missing = find_images(args.paths)
    for text in missing:
        info(f"failed: {text}: no such file, folder or matching image")
    images = _check_unique(images, out)
    todo = [(p, r) for p, r in images if args.overwrite or not _output_json(out, r).exists()]
    skipped = len(images) - len(todo)
    done, failed = 0, len(missing)
    settings = _settings(args)
    if todo:
        generator = MaskGenerator(
            load_model_from_args(args),
            points_per_side=args.points_per_side,
            points_per_batch=args.points_per_batch,
            pred_iou_thresh=args.pred_iou_thresh,
            stability_score_thresh=args.stability_thresh,
            crop_n_layers=args.crop_layers,
            min_mask_region_area=args.min_region_area,
            output_mode="coco_rle",
            fast=args.fast,
        )
        try:
            for path, relative in tqdm(todo, unit="image", desc="everything", disable=None):
                try:
                    image = load_image(path)
                except ImageError as exc:
                    tqdm.write(f"failed: {exc}", file=sys.stderr)
                    failed += 1
                    continue
                records = generator.generate(image)
                stem = out / relative.parent / relative.name
                if args.format == "png" or args.overlay:
                    masks = [decode_rle(r["segmentation"]) for r in records]
                    if args.format == "png":
                        for number, mask in enumerate(masks, start=1):
                            save_png(Path(f"{stem}_masks") / f"{number:04d}.png", mask)
                    if args.overlay:
                        by_area = sorted(masks, key=lambda m: -int(m.sum()))
                        save_png(Path(f"{stem}_overlay.png"), draw_overlay(image, by_area))
                document = sa1b_document(records, relative.as_posix(), image.shape[0], image.shape[1],
                                         extra={"source": str(path), "settings": settings})
                atomic_write_json(_output_json(out, relative), document)  # last: marks the image done
                done += 1
        except KeyboardInterrupt:
            info(f"everything: stopped after {done} image(s); run the same command again to finish the rest")
            raise
    if args.format == "coco":
        finished = [_output_json(out, r) for _, r in images if _output_json(out, r).exists()]
        documents = [json.loads(p.read_text()) for p in finished]
        atomic_write_json(out / COCO_FILE, coco_instances(documents))
        info(f"wrote {out / COCO_FILE}: {len(documents)} image(s), {sum(len(d['annotations']) for d in documents)} mask(s)")
    info(f"everything: done {done}, skipped {skipped}, failed {failed} (skipped = finished before; --overwrite redoes them); results in {out}/")
    return 1 if failed else 0
