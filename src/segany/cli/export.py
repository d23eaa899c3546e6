"""``segany export onnx``: the model as ONNX graphs for onnxruntime and the official web demo."""
from __future__ import annotations

import argparse

from .common import add_model_arguments, info, load_model_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="export a model (ONNX)")
    formats = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    onnx = formats.add_parser(
        "onnx",
        help="prompt decoder with the official export's signature, and the image encoder",
        description="Writes decoder.onnx (official signature: image_embeddings, point_coords, point_labels, "
        "mask_input, has_mask_input, orig_im_size -> masks, iou_predictions, low_res_masks), "
        "decoder_low_res.onnx, encoder.onnx and segany_onnx.json into --out.",
    )
    add_model_arguments(onnx)
    onnx.add_argument("--out", required=True, help="output folder")
    onnx.add_argument("--quantize", action="store_true", help="onnxruntime dynamic int8 quantisation of every graph")
    onnx.add_argument("--no-encoder", dest="encoder", action="store_false", help="export only the prompt decoder")
    onnx.add_argument("--fold-preprocessing", action="store_true",
                      help="also write encoder_preprocess.onnx: resized uint8 HxWx3 image in, embedding out")
    onnx.add_argument("--return-single-mask", action="store_true",
                      help="decoder.onnx returns the one best mask (official option) instead of all four: "
                      "what the official web demo expects (it draws channel 0)")
    onnx.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..export.onnx import export_onnx, require_network

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
