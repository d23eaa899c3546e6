"""``segany serve``: the web annotator and its HTTP API for a folder of images."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from .common import (
    add_image_arguments,
    add_model_arguments,
    checkpoint_sha256,
    info,
    load_model_from_args,
    number_type,
)

if TYPE_CHECKING:
    from ..text.detectors import TunableDetector

LOOPBACK = ("localhost", "127.0.0.1", "[::1]")
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")


def _port(text: str) -> int:
    value = number_type(int, 1)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port from 1 to 65535, got {value}")
    return value


def allowed_hosts(host: str, extra: list[str]) -> list[str]:
    """Host names requests may give: this machine's loopback names, the bound address (unless a
    wildcard such as 0.0.0.0) and the ``--allowed-host`` names."""
    bound = [] if host in WILDCARD_ADDRESSES else [f"[{host}]" if ":" in host and not host.startswith("[") else host]
    return list(dict.fromkeys([*LOOPBACK, *bound, *extra]))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="web annotator: click on images to get masks, accept them into a COCO file",
        description="Serve a web page and an HTTP API (OpenAPI at /docs) to annotate the images under "
                    "IMAGES_DIR with click-to-mask segmentation. Accepted annotations are saved after every "
                    "change to one COCO instances JSON.",
    )
    parser.add_argument("images_dir", metavar="IMAGES_DIR", help="folder of images (searched recursively)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="a host name clients may use in addressing the server, besides localhost, 127.0.0.1, "
                             "[::1] and --host (repeatable; '*' allows any: no protection against DNS rebinding)")
    parser.add_argument("--annotations", default=None, metavar="FILE",
                        help="COCO instances JSON to read and update (default IMAGES_DIR/annotations.coco.json)")
    parser.add_argument("--categories", default=None, metavar="FILE",
                        help="the project's categories, merged with the annotation file's: a text file (one name a "
                             "line), a JSON list of names or {name, color} objects, or a COCO file; the first nine "
                             "get the hotkeys 1-9 in that order")
    parser.add_argument("--cache-embeddings", type=number_type(int, 1), default=16, metavar="N",
                        help="image embeddings kept in memory (default 16)")
    parser.add_argument("--cache-mb", type=number_type(int, 1), default=512, metavar="MB",
                        help="memory for cached embeddings in MiB (default 512)")
    parser.add_argument("--max-body-mb", type=number_type(float, 0, exclusive=True), default=8.0, metavar="MB",
                        help="largest request body accepted, in MiB (default 8)")
    parser.add_argument("--max-queue", type=number_type(int, 1), default=32, metavar="N",
                        help="jobs that may wait for the encoder and for the decoder; more get 503 (default 32)")
    parser.add_argument("--max-everything-queue", type=number_type(int, 1), default=4, metavar="N",
                        help="'everything' jobs that may wait or run; more get 503 (default 4)")
    parser.add_argument("--max-points-per-side", type=number_type(int, 1), default=64, metavar="N",
                        help="largest points_per_side an 'everything' request may ask for (default 64)")
    parser.add_argument("--embeddings", default=None, metavar="DIR",
                        help="folder of stored embeddings (segany embed IMAGES_DIR -o DIR): an image whose file and "
                             "model match its stored embedding needs no encoder time; the others are computed")
    parser.add_argument("--detector", default=None, metavar="ID_OR_DIR",
                        help="text detector model id or save_pretrained folder (needs segany[text]): enables the "
                             "page's 'find' field, proposals for the classes typed (e.g. \"cat, dog\")")
    parser.add_argument("--text-engine", choices=("grounding-dino", "owlv2"), default="grounding-dino",
                        help="the kind of --detector model (default grounding-dino)")
    parser.add_argument("--videos", default=None, metavar="DIR",
                        help="folder of videos (sub-folders of frames, video files) for the video page /video: "
                             "click objects on any frame and track them with the model's tracker (classic, SAM 2)")
    parser.add_argument("--tracks", default=None, metavar="DIR",
                        help="where the video page keeps prompts, masks and accepted tracks (default DIR/.segany-tracks)")
    parser.add_argument("--web-runtime", default=None, metavar="DIR|download|none",
                        help="onnxruntime-web's files for the page's in-browser decoder (hover preview without a "
                             "request per mouse move; SAM 1 / MobileSAM): a folder, 'download' to fetch the npm "
                             "package once (sha256-checked) into the segany cache, or 'none' (default: that cached "
                             "copy if present, else previews come from the server)")
    add_image_arguments(parser)
    add_model_arguments(parser)
    parser.set_defaults(handler=run)


def web_runtime_dir() -> Path:
    """Where ``--web-runtime download`` puts onnxruntime-web: ``<segany cache>/onnxruntime-web-<version>``."""
    from ..serve.web_runtime import VERSION
    from ..weights import cache_dir

    return cache_dir() / f"onnxruntime-web-{VERSION}"


def ensure_web_runtime(progress: bool = True) -> Path:
    """The cached onnxruntime-web folder; on first use the npm tarball is downloaded (sha256-checked,
    :func:`segany.weights.ensure_file`), its files extracted and the tarball removed."""
    from ..registry import ONNXRUNTIME_WEB
    from ..serve.web_runtime import extract_runtime, is_runtime
    from ..weights import cached_path, ensure_file

    folder = web_runtime_dir()
    if is_runtime(folder):
        return folder
    extract_runtime(ensure_file(ONNXRUNTIME_WEB, progress=progress), folder)
    cached_path(ONNXRUNTIME_WEB).unlink(missing_ok=True)
    return folder


def web_runtime(choice: str | None) -> Path | None:
    """The ``--web-runtime`` folder: the one given, the cached copy (fetched for ``download``), or none."""
    from ..serve.web_runtime import is_runtime

    if choice is None:
        return web_runtime_dir() if is_runtime(web_runtime_dir()) else None
    if choice == "none":
        return None
    return ensure_web_runtime() if choice == "download" else Path(choice)


def load_detector(args: argparse.Namespace) -> TunableDetector | None:
    """The ``--detector`` model of kind ``--text-engine`` on ``--device``, or ``None`` without ``--detector``."""
    if args.detector is None:
        return None
    from ..text.detectors import DETECTORS

    return DETECTORS[args.text_engine](args.detector, device=args.device)


def run(args: argparse.Namespace) -> int:
    from ..serve import create_app
    from ..serve.server import make_server
    from ..serve.service import MiB

    model = load_model_from_args(args)
    detector = load_detector(args)
    runtime = web_runtime(args.web_runtime)
    app = create_app(
        args.images_dir, model, args.annotations, model_name=str(args.model),
        max_embeddings=args.cache_embeddings, max_embedding_bytes=args.cache_mb * MiB,
        max_body_bytes=int(args.max_body_mb * MiB), allowed_hosts=allowed_hosts(args.host, args.allowed_host),
        max_queue=args.max_queue, max_everything_queue=args.max_everything_queue,
        max_points_per_side=args.max_points_per_side, max_pixels=args.max_pixels,
        embeddings=args.embeddings, checkpoint_sha256=checkpoint_sha256(args) if args.embeddings else None, detector=detector,
        categories=args.categories,
        videos=args.videos, tracks=args.tracks,
        web_runtime=runtime,
    )
    catalogue, store = app.state.catalogue, app.state.store
    info(f"{len(catalogue)} images under {catalogue.root}; annotations in {store.path}")
    if detector is not None:
        info(f"text search ('find') with the {args.text_engine} detector {args.detector}")
    if app.state.videos is not None:
        info(f"{len(app.state.videos.entries)} video(s) under {args.videos}: open /video")
    info(f"hover preview: onnxruntime-web from {runtime}" if runtime is not None
         else "hover preview through the server (no --web-runtime)")
    if args.embeddings:
        info(f"stored embeddings from {args.embeddings} (an image without a matching one is computed, said once)")
    info(f"open http://{args.host}:{args.port}/ (API docs at /docs); Ctrl+C to stop")
    if args.host in WILDCARD_ADDRESSES and not args.allowed_host:
        info("listening on all addresses: other machines must use a name given with --allowed-host")
    make_server(app, args.host, args.port).run()
    return 0
