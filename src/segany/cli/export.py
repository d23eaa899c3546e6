"""``segany export onnx``: the model as ONNX graphs for onnxruntime and the official web demo;
``segany export coco-polygons|yolo``: masks (``segany everything`` output) as COCO polygons or YOLO-seg labels."""
from __future__ import annotations

import argparse

from .common import add_model_arguments, info, load_model_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="export a model (ONNX) or masks (COCO polygons, YOLO labels)")
    formats = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    onnx = formats.add_parser(
        "onnx",
        help="prompt decoder with the official export's signature, and the image encoder",
        description="Writes decoder.onnx (official signature: image_embeddings, point_coords, point_labels, "
        "mask_input, has_mask_input, orig_im_size -> masks, iou_predictions, low_res_masks), "
        "decoder_low_res.onnx, encoder.onnx and segany_onnx.json into --out. SAM 2 models: encoder.onnx "
        "(input_image -> image_embed, high_res_feats_0, high_res_feats_1) and decoder.onnx (those three, then "
        "point_coords, point_labels, mask_input, has_mask_input, orig_im_size -> masks, iou_predictions, "
        "low_res_masks, object_score_logits).",
    )
    add_model_arguments(onnx)
    onnx.add_argument("--out", required=True, help="output folder")
    onnx.add_argument("--quantize", action="store_true", help="onnxruntime dynamic int8 quantisation of every graph")
    onnx.add_argument("--no-encoder", dest="encoder", action="store_false", help="export only the prompt decoder")
    onnx.add_argument("--fold-preprocessing", action="store_true",
                      help="also write encoder_preprocess.onnx: resized uint8 HxWx3 image in, embedding out")
    onnx.add_argument("--return-single-mask", action="store_true",
                      help="decoder.onnx returns the one best mask (official option) instead of all four: "
                      "what the official web demo expects (it draws channel 0); SAM 2: multimask_output=False "
                      "(dynamic multimask) instead of the three multimask tokens")
    onnx.set_defaults(handler=run)
    _register_mask_formats(formats)


def run(args: argparse.Namespace) -> int:
    from ..deploy.onnx import export_onnx, require_network

    # No fallback to the classic engine: it has no network to export.
    model = require_network(load_model_from_args(args, fallback_to_classic=False)).to("cpu")
    info(f"exporting {model.config.name} to {args.out} ...")
    manifest = export_onnx(
        model,
        args.out,
        encoder=args.encoder,
        fold_preprocessing=args.fold_preprocessing,
        return_single_mask=args.return_single_mask,
        quantize=args.quantize,
    )
    for key, filename in manifest["files"].items():
        print(f"{key}: {args.out}/{filename}")
    return 0


ANNOTATIONS_HELP = "a COCO instances file (e.g. everything --format coco's annotations.json), an SA-1B JSON, or a folder of them"


def _register_mask_formats(formats: argparse._SubParsersAction) -> None:
    polygons = formats.add_parser(
        "coco-polygons",
        aliases=["coco"],
        help="COCO instances file with polygon segmentations (also: export coco)",
        description="Rewrites every RLE mask as COCO polygons (OpenCV contours; holes bridged into the outline "
        "by a zero-width cut, so pycocotools' even-odd fill keeps them).",
    )
    polygons.add_argument("annotations", help=ANNOTATIONS_HELP)
    polygons.add_argument("-o", "--out", required=True, help="output COCO JSON file")
    yolo = formats.add_parser(
        "yolo",
        help="YOLO-seg label files and classes.txt",
        description="Writes OUTDIR/labels/<image>.txt (class x1 y1 x2 y2 ..., normalised to [0, 1]; one line per "
        "object part) and OUTDIR/classes.txt (COCO categories by id).",
    )
    yolo.add_argument("annotations", help=ANNOTATIONS_HELP)
    yolo.add_argument("-o", "--out", required=True, help="output folder")
    for parser in (polygons, yolo):
        parser.add_argument("--tolerance", type=float, default=1.0,
                            help="polygon simplification (cv2.approxPolyDP epsilon) in pixels; 0 keeps every step (default 1.0)")
    polygons.set_defaults(handler=run_polygons)
    yolo.set_defaults(handler=run_yolo)


def run_polygons(args: argparse.Namespace) -> int:
    from ..data.formats.polygons import load_instances, polygon_annotations
    from ..fileio import atomic_write_json

    coco, dropped = polygon_annotations(load_instances(args.annotations), args.tolerance)
    atomic_write_json(args.out, coco)
    info(f"{len(coco['annotations'])} annotations of {len(coco['images'])} images as polygons in {args.out}"
         + (f" ({dropped} without a polygon of 3 points dropped)" if dropped else ""))
    return 0


def run_yolo(args: argparse.Namespace) -> int:
    from ..data.formats.polygons import load_instances
    from ..data.formats.yolo import write_yolo

    written = write_yolo(load_instances(args.annotations), args.out, args.tolerance)
    info(f"{len(written)} YOLO label files and classes.txt in {args.out}")
    return 0
