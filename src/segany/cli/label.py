"""``segany label``: labelled masks for images, folders and globs from class names or captions.

Argument parsing and messages only: the text routes are :mod:`segany.text`, the job (discovery,
resume by settings, atomic per-image SA-1B documents, per-image failures, the COCO file) is
:mod:`segany.batch`, fed a :class:`~segany.text.TextLabeler` as its generator.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from ..batch import COCO_FILE, find_images, job_settings, label_images, write_coco
from .common import checkpoint_sha256, info
from .jobs import ModelFactory, TextLabelerFactory, add_input_output_arguments, add_job_arguments, executor_from_args
from .segment import add_text_route_arguments, text_route_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..text.caption import BLIP

    parser = subparsers.add_parser(
        "label", help="label images with masks of given classes (or of what a caption names)",
        description="Automatic labelling: open-vocabulary detector boxes decoded by SAM (or CLIP over every mask) "
                    "for --classes, or for each image's BLIP caption (--caption); resumable, one SA-1B JSON per "
                    "image, plus COCO instances with the classes as categories (or YOLO-seg labels).",
    )
    add_input_output_arguments(parser)
    prompt = parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--classes", metavar='"cat, dog"', help="class names separated by ',' or '.'")
    prompt.add_argument("--caption", action="store_true",
                        help="caption each image (--captioner) and ground the caption's phrases (grounding-dino only)")
    parser.add_argument("--captioner", default=BLIP, metavar="ID_OR_DIR", help=f"BLIP captioning model (default {BLIP})")
    add_text_route_arguments(parser, "--engine")
    parser.add_argument("--format", choices=("coco", "sa1b", "yolo"), default="coco",
                        help=f"sa1b: one JSON per image (always written); coco: also {COCO_FILE} with real categories "
                             "(default); yolo: also labels/*.txt + classes.txt (YOLO-seg), besides the COCO file")
    parser.add_argument("--overlay", action="store_true", help="also write <image>_overlay.png")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo images whose JSON already exists (default: skip those made with the same settings)")
    add_job_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..errors import PromptError
    from ..fileio import ensure_directory
    from ..text.detectors import split_prompt

    if args.caption and args.engine != "grounding-dino":
        raise PromptError("--caption grounds the phrases of a caption: use it with --engine grounding-dino")
    classes = split_prompt(args.classes) if args.classes is not None else None
    route_settings = {**text_route_settings(args, args.engine), "classes": classes,
                      "captioner": str(args.captioner) if args.caption else None}
    executor = executor_from_args(args)
    out = ensure_directory(args.output)
    images, missing = find_images(args.paths, out=out)
    for text in missing:
        info(f"failed: {text}: no such file, folder or matching image")
    model = ModelFactory.from_args(args, driver_device=None if executor is None else "cpu") if images else None
    settings = job_settings(model.load(), checkpoint_sha256(args), route_settings) if model is not None else {}
    labeler = None
    if model is not None:
        labeler = TextLabelerFactory(model, route_settings, classes, route_settings["captioner"], args.device)
        # the text models load here, so a missing one fails before any image is scheduled (a Ray
        # driver checks them on the CPU; its actors load their own copies on --device)
        (labeler if executor is None else dataclasses.replace(labeler, device="cpu"))()
    summary = label_images(
        images, labeler, out, settings, overwrite=args.overwrite, overlay=args.overlay, max_pixels=args.max_pixels,
        report=lambda line: tqdm.write(line, file=sys.stderr),
        progress=lambda todo: iter(tqdm(todo, unit="image", desc="label", disable=None)), executor=executor,
    )
    if args.format in ("coco", "yolo"):
        coco = write_coco(images, out, settings, categories=classes)
        info(f"wrote {out / COCO_FILE}: {len(coco['images'])} image(s), {len(coco['annotations'])} mask(s), "
             f"{len(coco['categories'])} categories")
        if args.format == "yolo":
            from ..data.formats.yolo import write_yolo

            written = write_yolo(coco, out)
            info(f"wrote {len(written)} YOLO label file(s) and classes.txt to {out}/")
    failed = summary.failed + len(missing)
    info(f"label: done {summary.done}, skipped {summary.skipped}, failed {failed}, retried {summary.retried}; "
         f"results in {out}/")
    return 1 if failed else 0
