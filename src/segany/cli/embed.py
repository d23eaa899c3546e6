"""``segany embed``: precompute image embeddings of files, folders and globs (one safetensors file
per image) for ``segany serve --embeddings``. The job is :func:`segany.batch.embed_images`."""
from __future__ import annotations

import argparse
import sys

from .common import checkpoint_sha256, info
from .jobs import ModelFactory, PredictorFactory, add_input_output_arguments, add_job_arguments, executor_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "embed", help="precompute image embeddings (SAM 1, SAM 2 features) of images, folders and globs",
        description="Encode every image once and store its features (OUT/<image>.safetensors, with the image's "
                    "sha256, the model's name and checkpoint sha256), for `segany serve IMAGES --embeddings OUT`.",
    )
    add_input_output_arguments(parser)
    parser.add_argument("--overwrite", action="store_true",
                        help="redo images whose embedding is stored already (default: skip those of the same image, "
                             "model and checkpoint)")
    add_job_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..batch import Summary, embed_images, find_images
    from ..data.formats.embeddings import model_name_of
    from ..fileio import ensure_directory

    executor = executor_from_args(args)
    out = ensure_directory(args.output)
    images, missing = find_images(args.paths, out=out)
    for text in missing:
        info(f"failed: {text}: no such file, folder or matching image")
    summary = Summary()
    if images:
        model = ModelFactory.from_args(args, driver_device=None if executor is None else "cpu")
        summary = embed_images(
            images, PredictorFactory(model), out, model_name_of(model.load()), checkpoint_sha256(args),
            overwrite=args.overwrite, max_pixels=args.max_pixels, executor=executor,
            report=lambda line: tqdm.write(line, file=sys.stderr),
            progress=lambda outcomes: iter(tqdm(outcomes, unit="image", desc="embed", disable=None)),
        )
    failed = summary.failed + len(missing)
    info(f"embed: done {summary.done}, skipped {summary.skipped}, failed {failed}, retried {summary.retried} "
         f"(skipped = stored before for the same image, model and checkpoint); embeddings in {out}/")
    return 1 if failed else 0
