"""The server's model work: cached embeddings, prompt decoding and automatic proposals.

Each cached image has its own :class:`segany.Predictor` holding that image's embedding, so a
prediction always runs against the right image whatever other requests do meanwhile. The work
runs on three bounded lanes (:mod:`.lanes`), one job at a time each: image encoding, prompt
decoding (on a few CPU cores one decode at a time gives the lowest latency) and "everything",
so a long proposal job holds up neither clicks nor other images' embeddings. A full lane
answers :class:`~segany.errors.ServerBusyError`; cancelled work (client gone, server stopping)
is dropped before it starts, and "everything" stops between decoder batches.

The service knows engines only through :mod:`segany.engine`: a cached predictor holds its image's
:class:`~segany.engine.ImageFeatures` (SAM's embedding, the classic engine's working copy), and
"everything" runs the model's generator on those features (the encoder runs once per image),
passing on only the request's options that engine honours. "find" runs the server's text
detector (:mod:`segany.text`) on the same lane and decodes its boxes on the cached predictor.
"""
from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from ..data.formats.png import png_bytes
from ..engine import MaskGenerator, Predictor, PromptPredictor, supported_options
from ..errors import GeneratorArgumentError, NotConfiguredError, PromptError, SeganyError
from ..masks import encode_rles, mask_bbox_xywh
from ..text.detectors import TunableDetector, split_prompt
from ..text.predictor import TextPredictor
from .cache import ComputingCache, LRUCache
from .catalogue import ImageCatalogue
from .lanes import Lane, Ticket
from .stored import StoredEmbeddings

MiB = 1 << 20
DEFAULT_MAX_QUEUE = 32
DEFAULT_MAX_EVERYTHING_QUEUE = 4


def _held_bytes(predictor: PromptPredictor) -> int:
    """Memory a cached predictor holds for its image (its features)."""
    return predictor.image_features().nbytes


def _json_rle(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": [int(v) for v in rle["size"]], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def _engine_errors(work: Callable[[], Any], what: str) -> Any:
    """Run ``work``; an engine's bare IndexError/ValueError (a prompt it cannot handle) becomes a
    :class:`PromptError` naming it, never an opaque server error."""
    try:
        return work()
    except SeganyError:
        raise
    except (IndexError, ValueError) as exc:
        raise PromptError(f"the engine cannot {what} ({type(exc).__name__}: {exc})") from None


class SegmentService:
    """Embeddings (LRU by count and bytes, computed once per image), predictions and proposals."""

    def __init__(
        self,
        model: Any,
        catalogue: ImageCatalogue,
        max_embeddings: int = 16,
        max_embedding_bytes: int = 512 * MiB,
        max_logits: int = 256,
        max_logits_bytes: int = 64 * MiB,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_everything_queue: int = DEFAULT_MAX_EVERYTHING_QUEUE,
        max_points_per_side: int = 64,
        stored: StoredEmbeddings | None = None,
        detector: TunableDetector | None = None,
    ) -> None:
        self.model = model
        self.detector = detector
        self.stored = stored
        self.catalogue = catalogue
        self.max_points_per_side = max_points_per_side
        self.encoder = Lane("encoder", max_queue)
        self.decoder = Lane("decoder", max_queue)
        self.proposals = Lane("everything", max_everything_queue)
        self.embeddings: ComputingCache[PromptPredictor] = ComputingCache(
            max_embeddings, max_embedding_bytes, _held_bytes, self.encoder
        )
        self._logits: LRUCache[tuple[str, np.ndarray]] = LRUCache(max_logits, max_logits_bytes, lambda v: v[1].nbytes)

    def close(self) -> None:
        """Refuse new work, drop queued work and tell running "everything" jobs to stop (idempotent)."""
        for lane in (self.encoder, self.decoder, self.proposals):
            lane.shutdown()

    # -- embeddings ------------------------------------------------------------------------

    def _embed(self, image_id: str) -> PromptPredictor:
        predictor = Predictor(self.model)
        if self.stored is not None and self._take_stored(image_id, predictor):
            return predictor
        predictor.set_image(self.catalogue.load(image_id))
        return predictor

    def _take_stored(self, image_id: str, predictor: PromptPredictor) -> bool:
        """Give ``predictor`` the image's stored embedding, if one fits (no encoder run)."""
        assert self.stored is not None
        self.catalogue.size(image_id)  # the pixel limit holds for stored images too
        file_name = self.catalogue.get(image_id).file_name
        features = self.stored.features(file_name, self.catalogue.path(image_id))
        if features is None:
            return False
        try:
            predictor.set_image_features(features)
        except SeganyError as exc:  # maps of another architecture under the same name
            self.stored.fall_back(file_name, f"its stored embedding does not fit this model ({exc})")
            return False
        self.stored.taken()
        return True

    def start_embedding(self, image_id: str) -> None:
        """Start computing an image's embedding in the background (no-op when cached or running)."""
        self.catalogue.get(image_id)
        self.embeddings.future(image_id, lambda: self._embed(image_id), background=True)

    def embedding(self, image_id: str) -> Ticket[PromptPredictor]:
        """The predictor holding this image's embedding, computed (once) if needed; cancelling the
        ticket drops the computation if nobody else waits for it and it has not started."""
        self.catalogue.get(image_id)
        future = self.embeddings.future(image_id, lambda: self._embed(image_id))
        return Ticket(future, lambda: self.embeddings.abandon(image_id, future))

    def predictor(self, image_id: str) -> PromptPredictor:
        """The predictor holding this image's embedding, computed now (once) if needed."""
        return self.embedding(image_id).future.result()

    def embedding_status(self, image_id: str) -> tuple[str, str | None]:
        self.catalogue.get(image_id)
        return self.embeddings.status(image_id)

    # -- prompts -----------------------------------------------------------------------------

    def _mask_input(self, image_id: str, handle: str | None) -> np.ndarray | None:
        if handle is None:
            return None
        stored = self._logits.get(handle)
        if stored is None:
            raise PromptError(f"logits handle {handle!r} is unknown or has expired: predict again without it")
        if stored[0] != image_id:
            raise PromptError(f"logits handle {handle!r} belongs to another image")
        return stored[1]

    def decode(
        self,
        image_id: str,
        predictor: PromptPredictor,
        points: list[list[float]],
        labels: list[int],
        box: list[float] | None = None,
        logits: str | None = None,
        multimask: bool = True,
        formats: tuple[str, ...] = ("rle",),
        start: float | None = None,
    ) -> Ticket[dict[str, Any]]:
        """Queue the decoding of one prompt set against ``predictor`` (this image's, from
        :meth:`embedding`); the ticket's result is :meth:`predict`'s answer."""
        mask_input = self._mask_input(image_id, logits)
        start = time.perf_counter() if start is None else start

        def run(_: Callable[[], None]) -> dict[str, Any]:
            return self._answer(image_id, predictor, points, labels, box, mask_input, multimask, formats, start)

        return self.decoder.job(run)

    def predict(
        self,
        image_id: str,
        points: list[list[float]],
        labels: list[int],
        box: list[float] | None = None,
        logits: str | None = None,
        multimask: bool = True,
        formats: tuple[str, ...] = ("rle",),
    ) -> dict[str, Any]:
        """Candidate masks for one prompt set, best first, each with a handle to its low-res logits."""
        start = time.perf_counter()
        predictor = self.predictor(image_id)
        return self.decode(image_id, predictor, points, labels, box, logits, multimask, formats, start).future.result()

    def _answer(self, image_id: str, predictor: PromptPredictor, points: list[list[float]], labels: list[int],
                box: list[float] | None, mask_input: np.ndarray | None, multimask: bool,
                formats: tuple[str, ...], start: float) -> dict[str, Any]:
        decode_start = time.perf_counter()
        masks, scores, low_res = _engine_errors(lambda: predictor.predict(
            point_coords=np.asarray(points, dtype=np.float64) if points else None,
            point_labels=np.asarray(labels, dtype=np.int64) if points else None,
            box=np.asarray(box, dtype=np.float64) if box is not None else None,
            mask_input=mask_input,
            multimask_output=multimask,
        ), "decode this prompt")
        masks = masks.astype(bool, copy=False)  # SAM 2 returns float32 0/1 masks, as the official predictor
        decoder_ms = (time.perf_counter() - decode_start) * 1000
        order = np.argsort(-scores, kind="stable")
        rles = encode_rles(masks[order]) if "rle" in formats else [None] * len(order)
        candidates = []
        for index, rle in zip(order, rles):
            handle = uuid.uuid4().hex
            self._logits.put(handle, (image_id, low_res[index : index + 1].copy()))
            mask = masks[index]
            candidates.append({
                "score": float(scores[index]),
                "area": int(mask.sum()),
                "bbox": mask_bbox_xywh(mask),
                "rle": rle,
                "png": base64.b64encode(png_bytes(mask)).decode("ascii") if "png" in formats else None,
                "logits": handle,
            })
        height, width = masks.shape[1:]
        return {
            "image_id": image_id,
            "width": int(width),
            "height": int(height),
            "candidates": candidates,
            "decoder_ms": decoder_ms,
            "total_ms": (time.perf_counter() - start) * 1000,
        }

    # -- automatic proposals -------------------------------------------------------------

    def start_everything(self, image_id: str, **options: Any) -> Ticket[dict[str, Any]]:
        """Queue automatic mask proposals for the whole image (``segany.MaskGenerator``); the
        ticket's result is :meth:`everything`'s answer. Cancelling it stops the job before its
        next decoder batch."""
        start = time.perf_counter()
        self.catalogue.get(image_id)
        if options.get("points_per_side", 0) > self.max_points_per_side:
            raise GeneratorArgumentError(f"points_per_side must be at most {self.max_points_per_side} on this server "
                                         f"(segany serve --max-points-per-side), got {options['points_per_side']}")
        options = supported_options(self.model, options)

        def run(check: Callable[[], None]) -> dict[str, Any]:
            generator = MaskGenerator(self.model, output_mode="coco_rle", **options)
            features = self.predictor(image_id).image_features()  # the cached embedding: no second encoder run
            image = self.catalogue.load(image_id)
            check()
            records = _engine_errors(lambda: generator.generate(image, features=features, check=check),
                                     "propose masks for this image")
            return self._proposals(image_id, records, start)

        return self.proposals.job(run)

    def everything(self, image_id: str, **options: Any) -> dict[str, Any]:
        """Automatic mask proposals for the whole image (``segany.MaskGenerator``), best first."""
        return self.start_everything(image_id, **options).future.result()

    @staticmethod
    def _proposal(record: dict[str, Any]) -> dict[str, Any]:
        return {
            "rle": _json_rle(record["segmentation"]),
            "area": int(record["area"]),
            "bbox": [float(v) for v in record["bbox"]],
            "predicted_iou": float(record["predicted_iou"]),
            "stability_score": float(record["stability_score"]),
            "point_coords": [[float(v) for v in p] for p in record["point_coords"]],
        }

    @classmethod
    def _proposals(cls, image_id: str, records: list[dict[str, Any]], start: float) -> dict[str, Any]:
        records.sort(key=lambda r: -float(r["predicted_iou"]))
        proposals = [cls._proposal(r) for r in records]
        return {"image_id": image_id, "proposals": proposals, "total_ms": (time.perf_counter() - start) * 1000}

    # -- text search ---------------------------------------------------------------------

    def start_find(self, image_id: str, text: str, box_threshold: float | None = None,
                   text_threshold: float | None = None) -> Ticket[dict[str, Any]]:
        """Queue a text search (``segany serve --detector``): the detector's boxes for the classes of
        ``text`` decoded by this image's cached predictor (:class:`segany.text.TextPredictor`, no
        second encoder run), on the "everything" lane; the ticket's result is :meth:`find`'s answer."""
        start = time.perf_counter()
        self.catalogue.get(image_id)
        if self.detector is None:
            raise NotConfiguredError("this server has no text detector: start it with segany serve --detector "
                                     "ID_OR_DIR [--text-engine grounding-dino|owlv2]")
        classes = split_prompt(text)
        detector = self.detector.with_thresholds(box_threshold, text_threshold)

        def run(check: Callable[[], None]) -> dict[str, Any]:
            predictor = self.predictor(image_id)
            image = self.catalogue.load(image_id)
            check()
            detections = _engine_errors(lambda: detector.detect(image, classes), "detect these classes")
            check()
            result = _engine_errors(lambda: TextPredictor(detector, predictor).decode(detections),
                                    "decode the detector's boxes")
            proposals = [{**self._proposal(r), "category": r["category"], "label": r["label"],
                          "detector_score": r["detector_score"], "box": [float(v) for v in box]}
                         for r, box in zip(result.records(), result.boxes)]
            return {"image_id": image_id, "classes": classes, "proposals": proposals,
                    "total_ms": (time.perf_counter() - start) * 1000}

        return self.proposals.job(run)

    def find(self, image_id: str, text: str, box_threshold: float | None = None,
             text_threshold: float | None = None) -> dict[str, Any]:
        """Proposals for the classes of ``text`` (:meth:`start_find`), highest detector score first."""
        return self.start_find(image_id, text, box_threshold, text_threshold).future.result()
