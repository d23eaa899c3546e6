"""``segany segment``: masks for one image from points and/or a box, or from a text prompt (``--text``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import PromptError
from .common import add_image_arguments, add_model_arguments, info, load_model_from_args


def _numbers(text: str, counts: tuple[int, ...], what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in counts:
        raise argparse.ArgumentTypeError(f"{what} must be {' or '.join(str(c) for c in counts)} comma-separated numbers, got {text!r}")
    return values


def parse_point(text: str) -> tuple[float, float, int]:
    """``X,Y`` (foreground) or ``X,Y,LABEL`` with LABEL 1 (foreground) or 0 (background)."""
    values = _numbers(text, (2, 3), "--point")
    label = values[2] if len(values) == 3 else 1.0
    if label not in (0.0, 1.0):
        raise argparse.ArgumentTypeError(f"--point label must be 1 (foreground) or 0 (background), got {text!r}")
    return values[0], values[1], int(label)


def parse_box(text: str) -> list[float]:
    return _numbers(text, (4,), "--box")


def add_text_route_arguments(parser: argparse.ArgumentParser, flag: str) -> None:
    """``flag`` (the route: grounding-dino, owlv2, clip) and the text models and thresholds."""
    from ..text.clip import CLIP, CLIP_THRESHOLD
    from ..text.detectors import BOX_THRESHOLD, GROUNDING_DINO, OWL_THRESHOLD, OWLV2, TEXT_THRESHOLD
    from ..text.routes import ROUTES

    parser.add_argument(flag, choices=ROUTES, default="grounding-dino",
                        help="grounding-dino / owlv2: detector boxes decoded by SAM; clip: every mask of the "
                             "automatic generator, kept by CLIP similarity (default grounding-dino)")
    parser.add_argument("--detector", default=None, metavar="ID_OR_DIR",
                        help=f"detector model id or save_pretrained folder (default {GROUNDING_DINO} / {OWLV2})")
    parser.add_argument("--clip", default=None, metavar="ID_OR_DIR", help=f"CLIP model id or folder (default {CLIP})")
    parser.add_argument("--box-threshold", type=float, default=None, metavar="T",
                        help=f"minimum detector score (default {BOX_THRESHOLD} Grounding DINO, {OWL_THRESHOLD} OWLv2)")
    parser.add_argument("--text-threshold", type=float, default=TEXT_THRESHOLD, metavar="T",
                        help=f"Grounding DINO: minimum token score for a phrase (default {TEXT_THRESHOLD})")
    parser.add_argument("--clip-threshold", type=float, default=CLIP_THRESHOLD, metavar="T",
                        help=f"clip: minimum cosine similarity of a mask's crop to its best label (default {CLIP_THRESHOLD})")
    parser.add_argument("--points-per-side", type=int, default=32, metavar="N",
                        help="clip: the automatic generator's point grid of N x N prompts (default 32)")


def text_route_settings(args: argparse.Namespace, route: str) -> dict:
    """The route's settings from the arguments of :func:`add_text_route_arguments`."""
    from ..text.routes import route_settings

    settings = route_settings(route, args.detector, args.clip, args.box_threshold, args.text_threshold,
                              args.clip_threshold)
    if route == "clip":
        settings["points_per_side"] = args.points_per_side
    return settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("segment", help="segment one image from point and/or box prompts, or a text prompt")
    parser.add_argument("image", help="image file (any format Pillow reads)")
    parser.add_argument("--point", action="append", type=parse_point, default=[], metavar="X,Y[,LABEL]",
                        help="prompt point in pixels; LABEL 1 = foreground (default), 0 = background; repeatable")
    parser.add_argument("--box", type=parse_box, default=None, metavar="X0,Y0,X1,Y1", help="prompt box in pixels")
    parser.add_argument("--multimask", action="store_true", help="return 3 candidate masks (whole/part/sub-part)")
    parser.add_argument("--text", default=None, metavar="PROMPT",
                        help='text prompt: class names or phrases separated by "." (e.g. "dog. person."); needs segany[text]')
    add_text_route_arguments(parser, "--route")
    parser.add_argument("-o", "--output", default="out", help="output folder (default ./out)")
    add_image_arguments(parser)
    add_model_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..data.formats.overlay import draw_overlay
    from ..data.formats.png import save_png
    from ..data.images import load_image
    from ..engine import Predictor
    from ..fileio import atomic_write_text, ensure_directory, json_text
    from ..masks import encode_rle, mask_bbox_xywh

    if args.text is not None:
        if args.point or args.box is not None:
            raise PromptError("--text is its own prompt: give it without --point / --box")
        return run_text(args)
    if not args.point and args.box is None:
        raise PromptError("give at least one --point X,Y[,LABEL], a --box X0,Y0,X1,Y1 or a --text prompt")
    image = load_image(args.image, max_pixels=args.max_pixels)
    out = ensure_directory(args.output)
    model = load_model_from_args(args)
    predictor = Predictor(model)
    predictor.set_image(image)
    coords = np.array([p[:2] for p in args.point], dtype=np.float64) if args.point else None
    labels = np.array([p[2] for p in args.point], dtype=np.int64) if args.point else None
    box = np.array(args.box, dtype=np.float64) if args.box is not None else None
    masks, scores, _ = predictor.predict(coords, labels, box, multimask_output=args.multimask)
    masks = masks.astype(bool, copy=False)  # SAM 2 returns float32 0/1 masks, as the official predictor

    stem = Path(args.image).stem
    order = np.argsort(-scores, kind="stable")
    records = []
    for rank, index in enumerate(order):
        records.append({
            "rank": rank,
            "score": float(scores[index]),
            "area": int(masks[index].sum()),
            "bbox": mask_bbox_xywh(masks[index]),
            "segmentation": encode_rle(masks[index]),
            "png": f"{stem}_mask{rank}.png",
        })
    text = json_text({
        "image": str(args.image),
        "height": int(image.shape[0]),
        "width": int(image.shape[1]),
        "model": str(args.model),
        "prompt": {
            "points": [[p[0], p[1]] for p in args.point],
            "labels": [p[2] for p in args.point],
            "box": args.box,
            "multimask": bool(args.multimask),
        },
        "masks": records,
    }, indent=1)  # a NaN score (broken weights) fails here, before any file is written
    for record, index in zip(records, order):
        save_png(out / record["png"], masks[index])
    save_png(out / f"{stem}_overlay.png", draw_overlay(image, [masks[order[0]]], points=coords, labels=labels, box=box))
    atomic_write_text(out / f"{stem}.json", text)
    info(f"wrote {len(records)} mask(s), {stem}_overlay.png and {stem}.json to {out}/ (best score {scores[order[0]]:.3f})")
    return 0


def run_text(args: argparse.Namespace) -> int:
    """``--text``: the route's masks, each as a PNG, an overlay with label names and one JSON."""
    import numpy as np

    from ..data.formats.png import save_png
    from ..data.images import load_image
    from ..fileio import atomic_write_text, ensure_directory, json_text
    from ..text.detectors import split_prompt
    from ..text.predictor import draw_labelled_overlay
    from ..text.routes import build_route

    classes = split_prompt(args.text)
    settings = text_route_settings(args, args.route)
    image = load_image(args.image, max_pixels=args.max_pixels)
    out = ensure_directory(args.output)
    route = build_route(load_model_from_args(args), settings, device=args.device)
    result = route.predict(image, classes)
    stem = Path(args.image).stem
    keys = ("category", "label", "detector_score", "predicted_iou", "stability_score", "bbox", "area")
    records = [{"rank": rank, **{k: record[k] for k in keys}, "box": [float(v) for v in result.boxes[rank]],
                "png": f"{stem}_mask{rank}.png", "segmentation": record["segmentation"]}
               for rank, record in enumerate(result.records())]
    text = json_text({
        "image": str(args.image), "height": int(image.shape[0]), "width": int(image.shape[1]),
        "model": str(args.model), "prompt": {"text": args.text, "classes": classes, **settings}, "masks": records,
    }, indent=1)
    for record, mask in zip(records, result.masks):
        save_png(out / record["png"], mask)
    save_png(out / f"{stem}_overlay.png", draw_labelled_overlay(image, result))
    atomic_write_text(out / f"{stem}.json", text)
    found = ", ".join(f"{n} {c}" for n, c in zip(*np.unique(result.category_names(), return_counts=True))) or "nothing"
    info(f"wrote {len(records)} mask(s) ({found}), {stem}_overlay.png and {stem}.json to {out}/")
    return 0
