"""``segany eval``: the standard interactive-segmentation protocols on a benchmark or your own data,
the video object segmentation benchmark (``--protocol vos``: J, F, J&F on DAVIS-layout videos) and
box / mask AP of a text route on a COCO file (``--protocol detect``)."""
from __future__ import annotations

import argparse

from .common import add_model_arguments, info, load_model_from_args, number_type
from .segment import add_text_route_arguments, text_route_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="measure a model with the NoC (RITM), SAM-paper, box or video (VOS) protocol",
        description="Run a standard protocol on a dataset: 'noc' (RITM clicker, NoC@85/90, NoF, mIoU@k), "
                    "'sam' (SAM paper: mIoU at 1/2/3/5/9 points, top-1 and oracle), 'box' (GT box prompt, mIoU) "
                    "'vos' (video tracking from the first frame: DAVIS J, F and J&F; needs a model that tracks, "
                    "e.g. --model classic) or 'detect' (text route --engine asked for every COCO category: "
                    "box and mask AP with COCOeval; needs segany[text]). Dataset names resolve under $SEGANY_DATA.")
    parser.add_argument("--dataset", required=True, metavar="NAME|PATH",
                        help="grabcut, berkeley, davis, coco_mval, coco, a folder with images/ + masks/, or a COCO .json; "
                             "for vos: davis2016_clips or a DAVIS-layout folder (JPEGImages/ + Annotations/); "
                             "for detect: coco_val2017_tiny or a COCO instances .json")
    parser.add_argument("--protocol", choices=("noc", "sam", "box", "vos", "detect"), default="noc",
                        help="evaluation protocol (default noc)")
    parser.add_argument("--prompt", choices=("mask", "click"), default="mask",
                        help="vos: prompt the first frame with its ground-truth mask (default) or one click at the object centre")
    parser.add_argument("--max-clicks", type=number_type(int, 1), default=20, help="clicks per object for noc (default 20; sam uses up to 9)")
    parser.add_argument("--limit", type=number_type(int, 1), default=None, metavar="N",
                        help="only the first N objects (detect: images)")
    add_text_route_arguments(parser, "--engine")
    parser.add_argument("--out", default=None, metavar="FILE.json", help="write the summary and per-object results here")
    parser.add_argument("--resume", action="store_true",
                        help="--out is saved after every object; with --resume, reuse the objects already in it")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.protocol == "vos":
        return run_vos(args)
    if args.protocol == "detect":
        return run_detect(args)
    from ..data.datasets import open_dataset
    from ..engine import Predictor
    from ..evaluation import evaluate, format_table
    from ..fileio import atomic_write_json

    dataset = open_dataset(args.dataset).head(args.limit)
    run_id = {"model": str(args.model), "checkpoint": None if args.checkpoint is None else str(args.checkpoint)}
    done = _resumable(args, dataset.name, run_id) if args.resume else None
    model = load_model_from_args(args, fallback_to_classic=False)

    def save(summary: dict) -> None:
        if args.out:
            atomic_write_json(args.out, {**summary, **run_id}, indent=1)

    summary = evaluate(Predictor(model), dataset, args.protocol, args.max_clicks, progress=not args.quiet,
                       done=done, on_object=save)
    save(summary)
    print(format_table(summary))
    if args.out:
        info(f"wrote {args.out}")
    return 0


def run_vos(args: argparse.Namespace) -> int:
    """``--protocol vos``: track every sequence from its first frame and score J / F / J&F."""
    from ..data.datasets import open_video_dataset
    from ..engine import VideoPredictor
    from ..errors import DatasetError
    from ..evaluation.vos import evaluate_vos, format_vos_table
    from ..fileio import atomic_write_json

    if args.resume:
        raise DatasetError("--resume is for the image protocols; a vos run is short, run it again")
    dataset = open_video_dataset(args.dataset).head(args.limit)
    tracker = VideoPredictor(load_model_from_args(args, fallback_to_classic=False))
    run_id = {"model": str(args.model), "checkpoint": None if args.checkpoint is None else str(args.checkpoint)}

    def save(summary: dict) -> None:
        if args.out:
            atomic_write_json(args.out, {**summary, **run_id}, indent=1)

    summary = evaluate_vos(tracker, dataset, args.prompt, progress=not args.quiet, on_sequence=save)
    save(summary)
    print(format_vos_table(summary))
    if args.out:
        info(f"wrote {args.out}")
    return 0


def run_detect(args: argparse.Namespace) -> int:
    """``--protocol detect``: the text route asked for every category of a COCO file; box and mask AP."""
    from ..errors import DatasetError
    from ..evaluation.detect import evaluate_detect, format_detect_table
    from ..fileio import atomic_write_json
    from ..text.routes import build_route

    if args.resume:
        raise DatasetError("--resume is for the click protocols; run detect again")
    settings = text_route_settings(args, args.engine)
    route = build_route(load_model_from_args(args, fallback_to_classic=False), settings, device=args.device)
    summary = {**evaluate_detect(route, args.dataset, args.limit, progress=not args.quiet), "route": settings,
               "model": str(args.model), "checkpoint": None if args.checkpoint is None else str(args.checkpoint)}
    if args.out:
        atomic_write_json(args.out, summary, indent=1)
        info(f"wrote {args.out}")
    print(format_detect_table(summary))
    return 0


def _resumable(args: argparse.Namespace, dataset: str, run_id: dict) -> list[dict]:
    """The per-object results of an earlier run of the same evaluation saved at ``--out``."""
    import json
    from pathlib import Path

    from ..errors import DatasetError

    if not args.out:
        raise DatasetError("--resume needs --out FILE.json (the file the earlier run saved)")
    path = Path(args.out)
    if not path.exists():
        return []
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot resume from {path}: {exc}") from None
    expected = {"dataset": dataset, "protocol": args.protocol, "max_clicks": args.max_clicks, **run_id}
    if args.protocol == "sam":
        expected["max_clicks"] = min(args.max_clicks, 9)
    elif args.protocol == "box":
        expected["max_clicks"] = 1
    different = {k: previous.get(k) for k, v in expected.items() if previous.get(k) != v}
    if different:
        raise DatasetError(f"cannot resume from {path}: it is a different evaluation ({different})")
    return list(previous.get("objects", []))
