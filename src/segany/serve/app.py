"""The FastAPI application: HTTP routes over the service, the store and the catalogue, plus the page.

Errors are answered as ``{"detail": message}``: 404 for unknown ids, 422 for prompts, masks,
images or fields that do not fit (400 when the body is not JSON at all, or for a Host header
the server was not started for), 403 for a state-changing request from another site, 413 for
oversized bodies, 409 for a feature the server was started without (text search needs
``--detector``) or a change that conflicts with the data (restoring a live annotation), 501 for
a capability the installation lacks, 503 with ``Retry-After`` when the work queue is full, the
server is stopping or memory ran out.

Compute routes (embedding, predict, everything, find) wait for their job without holding a thread;
when the client disconnects first, its job is cancelled (dropped if it has not started).
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ..data.formats.embeddings import model_name_of
from ..data.formats.png import png_bytes
from ..data.formats.polygons import mask_to_polygons
from ..data.images import DEFAULT_MAX_PIXELS
from ..engine import family_of
from ..errors import (
    ConflictError,
    ImageError,
    NotConfiguredError,
    NotFoundError,
    SeganyError,
    ServerBusyError,
    UnsupportedOperationError,
)
from ..inpaint.base import dilate_mask
from ..inpaint.classic import FAST_METHOD, ClassicInpainter
from ..text.detectors import TunableDetector
from . import schemas
from .browser_decoder import DecoderExport, embedding_payload, unsupported_reason
from .catalogue import ImageCatalogue
from .categories import read_categories
from .guard import SameOriginGuard
from .lanes import Cancelled, Ticket
from .limits import BodySizeLimit
from .rle import mask_from_rle
from .service import DEFAULT_MAX_EVERYTHING_QUEUE, DEFAULT_MAX_QUEUE, MiB, SegmentService
from .store import AnnotationStore
from .stored import StoredEmbeddings
from .videos import VideoLibrary, video_routes
from .web_runtime import ENTRY, check_runtime

STATIC = Path(__file__).parent / "static"
DEFAULT_ANNOTATIONS = "annotations.coco.json"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
RETRY_AFTER_S = 1
CLIENT_CLOSED = 499  # nginx's status for "the client went away first": nobody reads it
V = TypeVar("V")
# The page is cross-origin isolated (it loads nothing from elsewhere), so onnxruntime-web may use threads.
ISOLATED = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}

# Every segany error that is a ValueError (prompts, masks, images, generator settings) is the
# client's to fix: 422.
_STATUS = ((NotFoundError, 404), (NotConfiguredError, 409), (ConflictError, 409), (UnsupportedOperationError, 501),
           (ServerBusyError, 503), (ValueError, 422))


class IsolatedStaticFiles(StaticFiles):
    """Static files with the cross-origin isolation headers (onnxruntime-web's worker threads)."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(ISOLATED)
        return response


class _ClientGone(Exception):
    """The client disconnected while its work waited or ran."""


async def outcome(request: Request, ticket: Ticket[V]) -> V:
    """The ticket's result, awaited without a thread; the ticket is cancelled when the client
    disconnects first (then :class:`_ClientGone`) or the request task is cancelled."""
    result = asyncio.wrap_future(ticket.future)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({result, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        ticket.cancel()
        raise
    finally:
        watcher.cancel()
    if result not in done:
        ticket.cancel()
        raise _ClientGone()
    if result.cancelled():
        raise ServerBusyError("the server is shutting down: the work was cancelled")
    try:
        return result.result()
    except Cancelled:
        raise ServerBusyError("the server is shutting down: the work was cancelled") from None


def _error_status(exc: SeganyError) -> int:
    return next((status for kind, status in _STATUS if isinstance(exc, kind)), 500)


def _shown_path(path: Path, root: Path) -> str:
    """A path as clients may see it: relative to the images folder, else only its name."""
    resolved = path.resolve()
    return resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else path.name


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        reason = bad_json.get("ctx", {}).get("error", "")
        return JSONResponse({"detail": f"request body is not valid JSON: {reason}".rstrip(": ")}, status_code=400)
    messages = []
    for error in errors:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        messages.append(f"{where}: {error.get('msg', 'invalid')}")
    return JSONResponse({"detail": "; ".join(messages),
                         "errors": [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
                                    for e in errors]}, status_code=422)


def create_app(
    images_dir: str | os.PathLike,
    model: Any,
    annotations: str | os.PathLike | None = None,
    *,
    model_name: str = "",
    max_embeddings: int = 16,
    max_embedding_bytes: int = 512 * MiB,
    max_body_bytes: int = 8 * MiB,
    allowed_hosts: Sequence[str] = LOOPBACK_HOSTS,
    max_queue: int = DEFAULT_MAX_QUEUE,
    max_everything_queue: int = DEFAULT_MAX_EVERYTHING_QUEUE,
    max_points_per_side: int = 64,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    embeddings: str | os.PathLike | None = None,
    checkpoint_sha256: str | None = None,
    detector: TunableDetector | None = None,
    categories: str | os.PathLike | None = None,
    videos: str | os.PathLike | None = None,
    tracks: str | os.PathLike | None = None,
    web_runtime: str | os.PathLike | None = None,
) -> FastAPI:
    """The annotator app for the images under ``images_dir``, predicting with ``model`` (any segany
    model: its engine comes from :mod:`segany.engine`).

    Accepted annotations go to ``annotations`` (default ``IMAGES_DIR/annotations.coco.json``),
    a COCO instances file read back when it exists. Requests must name one of ``allowed_hosts``
    in their Host header ("*" allows any). ``max_queue`` jobs may wait per lane (encoder,
    decoder), ``max_everything_queue`` "everything" jobs; images over ``max_pixels`` are refused.
    ``embeddings``: a folder of stored embeddings (``segany embed``) used instead of the encoder
    where they were stored for the same image file by this model, whose weights file has the
    sha256 ``checkpoint_sha256`` (:mod:`.stored`). ``detector``: a :mod:`segany.text` detector
    (``GroundingDino`` / ``Owlv2``) for ``POST /api/images/{id}/find``; without one that route is a 409.
    ``categories``: a project category file (:mod:`.categories`) merged into the annotation file's.
    ``videos``: a folder of videos (frame folders, video files) for the video page ``/video``, tracked
    with ``model``'s tracker, their prompts and masks kept in ``tracks`` (:mod:`.videos`).
    ``web_runtime``: a folder of onnxruntime-web's files (:mod:`.web_runtime`), served at ``/runtime/``
    for the page's in-browser decoder (the hover preview); without it the page previews through the server.
    """
    catalogue = ImageCatalogue(images_dir, max_pixels=max_pixels)
    stored = None if embeddings is None else StoredEmbeddings(embeddings, model_name_of(model), checkpoint_sha256)
    store = AnnotationStore(annotations if annotations is not None else catalogue.root / DEFAULT_ANNOTATIONS)
    if categories is not None:
        store.add_categories(read_categories(categories))
    generator_options = sorted(family_of(model).generator_options)
    runtime = None if web_runtime is None else check_runtime(web_runtime)
    decoder_export = DecoderExport(model)
    service = SegmentService(model, catalogue, max_embeddings=max_embeddings, max_embedding_bytes=max_embedding_bytes,
                             max_queue=max_queue, max_everything_queue=max_everything_queue,
                             max_points_per_side=max_points_per_side, stored=stored, detector=detector)
    library = None if videos is None else VideoLibrary(videos, model, tracks, max_pixels=max_pixels)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()
        if library is not None:
            library.close()

    app = FastAPI(title="segany annotator", version="1", lifespan=lifespan,
                  description="Click-to-mask annotation of a folder of images with Segment Anything.")
    app.state.service, app.state.store, app.state.catalogue = service, store, catalogue
    app.state.videos = library
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_middleware(SameOriginGuard)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))

    @app.exception_handler(SeganyError)
    async def _segany_error(_: Request, exc: SeganyError) -> JSONResponse:
        status = _error_status(exc)
        headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

    @app.exception_handler(MemoryError)
    async def _out_of_memory(_: Request, exc: MemoryError) -> JSONResponse:
        return JSONResponse({"detail": "the server ran out of memory for this request; try a smaller one or later"},
                            status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(_ClientGone)
    async def _client_gone(_: Request, exc: _ClientGone) -> Response:
        return Response(status_code=CLIENT_CLOSED)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(exc)

    def readable_images() -> Iterator[tuple[str, int, int]]:
        """(file name, height, width) of every image of the folder whose size can be read."""
        for entry in catalogue:
            try:
                yield (entry.file_name, *catalogue.size(entry.id))
            except (ImageError, NotFoundError):
                continue

    def image_detail(image_id: str) -> dict:
        entry = catalogue.get(image_id)
        height, width = catalogue.size(image_id)
        status, _ = service.embedding_status(image_id)
        return {"id": entry.id, "file_name": entry.file_name, "width": width, "height": height, "embedding": status}

    def embedding_status(image_id: str) -> dict:
        status, error = service.embedding_status(image_id)
        return {"image_id": image_id, "status": status, "error": error}

    @app.get("/api/info", response_model=schemas.ServerInfo, tags=["server"])
    def info() -> dict:
        return {"model": model_name, "images": len(catalogue), "annotations_file": _shown_path(store.path, catalogue.root),
                "cached_embeddings": len(service.embeddings), "cached_embedding_bytes": service.embeddings.num_bytes,
                "embeddings_computed": service.embeddings.computed,
                "embeddings_stored": 0 if stored is None else stored.used, "max_body_bytes": max_body_bytes,
                "detector": None if detector is None else detector.name, "generator_options": generator_options}

    def summary(entry: Any, counts: dict[str, int], states: dict[str, str]) -> dict:
        return {"id": entry.id, "file_name": entry.file_name, "annotations": counts.get(entry.file_name, 0),
                "state": states.get(entry.file_name, "not_started")}

    @app.get("/api/images", response_model=list[schemas.ImageSummary], tags=["images"])
    def list_images() -> list[dict]:
        counts, states = store.counts(), store.states()
        return [summary(e, counts, states) for e in catalogue]

    @app.put("/api/images/{image_id}/state", response_model=schemas.ImageSummary, tags=["images"])
    def set_image_state(image_id: str, body: schemas.ImageStateUpdate) -> dict:
        entry = catalogue.get(image_id)
        store.set_state(entry.file_name, *catalogue.size(image_id), body.state)
        return summary(entry, store.counts(), store.states())

    @app.get("/api/images/{image_id}", response_model=schemas.ImageDetail, tags=["images"])
    def get_image(image_id: str) -> dict:
        return image_detail(image_id)

    @app.get("/api/images/{image_id}/file", tags=["images"], response_class=Response,
             responses={200: {"content": {"image/*": {}}, "description": "the image (PNG when the browser "
                                                                          "cannot show the original format)"}})
    def image_file(image_id: str) -> Response:
        entry = catalogue.get(image_id)
        if entry.media_type is not None:
            catalogue.size(image_id)  # the pixel limit: a browser would have to decode it
            return FileResponse(catalogue.path(image_id), media_type=entry.media_type)
        image = catalogue.load(image_id)
        try:
            return Response(png_bytes(image), media_type="image/png")
        except (MemoryError, Image.DecompressionBombError):
            raise ImageError(f"image {entry.file_name} is too large to re-encode for the browser") from None

    @app.get("/api/images/{image_id}/embedding", response_model=schemas.EmbeddingStatus, tags=["embeddings"])
    def get_embedding(image_id: str) -> dict:
        return embedding_status(image_id)

    @app.post("/api/images/{image_id}/embedding", response_model=schemas.EmbeddingStatus, tags=["embeddings"],
              responses={202: {"model": schemas.EmbeddingStatus, "description": "computing in the background"}})
    async def compute_embedding(request: Request, image_id: str, response: Response,
                                wait: bool = Query(False, description="answer only once the embedding is ready")) -> dict:
        if wait:
            await outcome(request, service.embedding(image_id))
        else:
            service.start_embedding(image_id)
        status = embedding_status(image_id)
        response.status_code = 202 if status["status"] == "computing" else 200
        return status

    @app.post("/api/images/{image_id}/predict", response_model=schemas.PredictResponse, tags=["prediction"])
    async def predict(request: Request, image_id: str, body: schemas.PredictRequest) -> dict:
        start = asyncio.get_running_loop().time()
        predictor = await outcome(request, service.embedding(image_id))
        ticket = service.decode(image_id, predictor, body.points, body.labels, body.box, body.logits,
                                body.multimask, tuple(body.formats))
        answer = await outcome(request, ticket)
        answer["total_ms"] = (asyncio.get_running_loop().time() - start) * 1000
        return answer

    @app.post("/api/images/{image_id}/everything", response_model=schemas.EverythingResponse, tags=["prediction"])
    async def everything(request: Request, image_id: str, body: schemas.EverythingRequest | None = None) -> dict:
        options = (body or schemas.EverythingRequest()).model_dump()
        return await outcome(request, service.start_everything(image_id, **options))

    @app.post("/api/images/{image_id}/find", response_model=schemas.FindResponse, tags=["prediction"])
    async def find(request: Request, image_id: str, body: schemas.FindRequest) -> dict:
        return await outcome(request, service.start_find(image_id, body.text, body.box_threshold,
                                                         body.text_threshold))

    def require_browser_decoder() -> None:
        """:class:`UnsupportedOperationError` (501) where the model has no ONNX decoder for the page."""
        unsupported = unsupported_reason(model)
        if unsupported is not None:
            raise UnsupportedOperationError(unsupported)

    @app.get("/api/browser-decoder", response_model=schemas.BrowserDecoder, tags=["embeddings"])
    def browser_decoder() -> dict:
        unsupported = unsupported_reason(model)
        reason = unsupported or (None if runtime is not None else "no onnxruntime-web for the page (segany serve "
                                 "--web-runtime DIR|download): previews come from the server")
        return {"decoder": None if unsupported else "/api/browser-decoder.onnx",
                "runtime": None if runtime is None else f"/runtime/{ENTRY}", "reason": reason}

    @app.get("/api/browser-decoder.onnx", tags=["embeddings"], response_class=Response,
             responses={200: {"content": {"application/octet-stream": {}},
                              "description": "the model's prompt decoder as ONNX (segany export onnx's decoder.onnx)"}})
    async def browser_decoder_onnx(request: Request) -> Response:
        require_browser_decoder()
        onnx = await outcome(request, service.decoder.job(lambda _: decoder_export.onnx()))  # not while decoding
        return Response(onnx, media_type="application/octet-stream", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/images/{image_id}/embedding.f32", tags=["embeddings"], response_class=Response,
             responses={200: {"content": {"application/octet-stream": {}},
                              "description": "the image embedding, raw little-endian float32 in C order; headers "
                                             "X-Embedding-Shape (1,C,h,w), X-Input-Size (h,w in the model's frame), "
                                             "X-Original-Size (H,W)"}})
    async def embedding_raw(request: Request, image_id: str) -> Response:
        require_browser_decoder()
        predictor = await outcome(request, service.embedding(image_id))
        data, headers = embedding_payload(model, predictor.image_features())
        return Response(data, media_type="application/octet-stream", headers=headers)

    @app.get("/api/images/{image_id}/annotations", response_model=list[schemas.Annotation], tags=["annotations"])
    def list_annotations(image_id: str, polygons: bool = Query(False, description="add each mask's outline as "
                                                                                "COCO polygons")) -> list[dict]:
        listed = store.annotations_for(catalogue.get(image_id).file_name)
        if polygons:
            for ann in listed:
                ann["polygons"] = mask_to_polygons(mask_from_rle(ann["segmentation"], *ann["segmentation"]["size"]))
        return listed

    @app.post("/api/images/{image_id}/annotations", response_model=schemas.Annotation, status_code=201,
              tags=["annotations"])
    def create_annotation(image_id: str, body: schemas.AnnotationCreate) -> dict:
        entry = catalogue.get(image_id)
        height, width = catalogue.size(image_id)
        return store.create(entry.file_name, height, width, body.category, body.rle.model_dump(), body.score)

    @app.patch("/api/annotations/{annotation_id}", response_model=schemas.Annotation, tags=["annotations"])
    def update_annotation(annotation_id: int, body: schemas.AnnotationUpdate) -> dict:
        return store.update(annotation_id, body.category, body.rle.model_dump() if body.rle is not None else None)

    @app.put("/api/annotations/{annotation_id}", response_model=schemas.Annotation, tags=["annotations"],
             responses={404: {"description": "the id was never given out"}, 409: {"description": "the id is live"}})
    def restore_annotation(annotation_id: int, body: schemas.AnnotationRestore) -> dict:
        """Bring a deleted annotation back with its id (undo of a delete, redo of an accept)."""
        entry = catalogue.get(body.image)
        height, width = catalogue.size(body.image)
        return store.restore(annotation_id, entry.file_name, height, width, body.category, body.rle.model_dump(),
                             body.score)

    @app.delete("/api/annotations/{annotation_id}", status_code=204, response_class=Response, tags=["annotations"])
    def delete_annotation(annotation_id: int) -> Response:
        store.delete(annotation_id)
        return Response(status_code=204)

    @app.post("/api/annotations/{annotation_id}/remove", tags=["annotations"], response_class=Response,
              responses={200: {"content": {"image/png": {}}, "description": "the image with the object removed"}})
    def remove_preview(annotation_id: int,
                       dilate: int = Query(15, ge=0, le=100, description="grow the mask by this many pixels")) -> Response:
        file_name, ann = store.get(annotation_id)
        image_id = next((e.id for e in catalogue if e.file_name == file_name), None)
        if image_id is None:
            raise NotFoundError(f"the image of annotation {annotation_id} ({file_name}) is not served here")
        image = catalogue.load(image_id)
        mask = mask_from_rle(ann["segmentation"], *image.shape[:2])
        filled = ClassicInpainter(FAST_METHOD).inpaint(image, dilate_mask(mask, dilate))  # interactive: 30-120 ms
        return Response(png_bytes(filled), media_type="image/png")

    @app.get("/api/categories", response_model=list[schemas.Category], tags=["annotations"])
    def list_categories() -> list[dict]:
        return store.categories()

    @app.post("/api/categories", response_model=schemas.Category, status_code=201, tags=["annotations"])
    def create_category(body: schemas.CategoryCreate) -> dict:
        return store.add_category(body.name, body.color)

    @app.patch("/api/categories/{category_id}", response_model=schemas.Category, tags=["annotations"])
    def update_category(category_id: int, body: schemas.CategoryUpdate) -> dict:
        return store.update_category(category_id, body.name, body.color)

    @app.post("/api/categories/{category_id}/merge", response_model=schemas.Category, tags=["annotations"])
    def merge_category(category_id: int, body: schemas.CategoryMerge) -> dict:
        return store.merge_category(category_id, body.into)

    @app.get("/api/export/coco", tags=["annotations"],
             responses={200: {"description": "the COCO instances dataset (masks as RLE), listing every "
                                              "readable image of the folder with its segany_state"}})
    def export_coco() -> JSONResponse:
        return JSONResponse(store.export(list(readable_images())),
                            headers={"Content-Disposition": f'attachment; filename="{store.path.name}"'})

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=ISOLATED)

    app.include_router(video_routes(library, outcome, STATIC))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if runtime is not None:
        app.mount("/runtime", IsolatedStaticFiles(directory=runtime), name="runtime")
    return app
