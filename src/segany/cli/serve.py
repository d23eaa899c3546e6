"""``segany serve``: the web annotator and its HTTP API for a folder of images."""
from __future__ import annotations

import argparse

from .common import add_model_arguments, info, load_model_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="web annotator: click on images to get masks, accept them into a COCO file",
        description="Serve a web page and an HTTP API (OpenAPI at /docs) to annotate the images under "
                    "IMAGES_DIR with click-to-mask segmentation. Accepted annotations are saved after every "
                    "change to one COCO instances JSON.",
    )
    parser.add_argument("images_dir", metavar="IMAGES_DIR", help="folder of images (searched recursively)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--annotations", default=None, metavar="FILE",
                        help="COCO instances JSON to read and update (default IMAGES_DIR/annotations.coco.json)")
    parser.add_argument("--cache-embeddings", type=int, default=16, metavar="N",
                        help="image embeddings kept in memory (default 16)")
    parser.add_argument("--cache-mb", type=int, default=512, metavar="MB",
                        help="memory for cached embeddings in MiB (default 512)")
    parser.add_argument("--max-body-mb", type=float, default=8.0, metavar="MB",
                        help="largest request body accepted, in MiB (default 8)")
    add_model_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..serve import create_app
    from ..serve.service import MiB

    model = load_model_from_args(args)
    app = create_app(
        args.images_dir, model, args.annotations, model_name=str(args.model),
        max_embeddings=args.cache_embeddings, max_embedding_bytes=args.cache_mb * MiB,
        max_body_bytes=int(args.max_body_mb * MiB),
    )
    catalogue, store = app.state.catalogue, app.state.store
    info(f"{len(catalogue)} images under {catalogue.root}; annotations in {store.path}")
    info(f"open http://{args.host}:{args.port}/ (API docs at /docs); Ctrl+C to stop")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
