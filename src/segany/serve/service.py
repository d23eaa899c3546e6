"""The server's model work: cached embeddings, prompt decoding and automatic proposals.

Each cached image has its own :class:`segany.Predictor` holding that image's embedding, so a
prediction always runs against the right image whatever other requests do meanwhile. Heavy
work (image encoder, "everything") runs one job at a time on a single worker thread; decoder
calls are serialised by a lock (on a few CPU cores one decode at a time gives the lowest latency).

With the weight-free classic engine a cached predictor holds the image's working copy instead of
an embedding, and "everything" passes on only the request's options that engine honours (box NMS,
minimum area): the point grid and the SAM-calibrated thresholds do not apply to it.
"""
from __future__ import annotations

import base64
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..classic import ClassicModel, ClassicPredictor
from ..classic.generator import HONOURED_OPTIONS, SPEED_OPTIONS
from ..errors import PromptError, UnsupportedOperationError
from ..export.png import png_bytes
from ..image import load_image
from ..masks import encode_rles, mask_bbox_xywh
from ..models.sam import Sam
from ..predictor import Predictor
from .cache import ComputingCache, LRUCache
from .catalogue import ImageCatalogue, ImageEntry

MiB = 1 << 20


def _held_bytes(predictor: Predictor | ClassicPredictor) -> int:
    """Memory a cached predictor holds for its image: its embedding (SAM) or working copy (classic)."""
    if isinstance(predictor, ClassicPredictor):
        return predictor.held_bytes()
    embedding = predictor.get_image_embedding()
    return embedding.numel() * embedding.element_size()


def _json_rle(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": [int(v) for v in rle["size"]], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


class SegmentService:
    """Embeddings (LRU by count and bytes, computed once per image), predictions and proposals."""

    def __init__(
        self,
        model: Sam | ClassicModel,
        catalogue: ImageCatalogue,
        max_embeddings: int = 16,
        max_embedding_bytes: int = 512 * MiB,
        max_logits: int = 256,
        max_logits_bytes: int = 64 * MiB,
    ) -> None:
        self.model = model
        self.catalogue = catalogue
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segany-encoder")
        self.embeddings: ComputingCache[Predictor] = ComputingCache(
            max_embeddings, max_embedding_bytes, _held_bytes, self._worker
        )
        self._logits: LRUCache[tuple[str, np.ndarray]] = LRUCache(max_logits, max_logits_bytes, lambda v: v[1].nbytes)
        self._decoder_lock = threading.Lock()

    def close(self) -> None:
        """Stop the worker thread, dropping queued work."""
        self._worker.shutdown(wait=False, cancel_futures=True)

    # -- embeddings ------------------------------------------------------------------------

    def _embed(self, entry: ImageEntry) -> Predictor:
        predictor = Predictor(self.model)
        predictor.set_image(load_image(entry.path))
        return predictor

    def start_embedding(self, image_id: str) -> None:
        """Start computing an image's embedding in the background (no-op when cached or running)."""
        entry = self.catalogue.get(image_id)
        self.embeddings.future(image_id, lambda: self._embed(entry))

    def predictor(self, image_id: str) -> Predictor:
        """The predictor holding this image's embedding, computed now (once) if needed."""
        entry = self.catalogue.get(image_id)
        return self.embeddings.get_or_compute(image_id, lambda: self._embed(entry))

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
        mask_input = self._mask_input(image_id, logits)
        predictor = self.predictor(image_id)
        with self._decoder_lock:
            decode_start = time.perf_counter()
            masks, scores, low_res = predictor.predict(
                point_coords=np.asarray(points, dtype=np.float64) if points else None,
                point_labels=np.asarray(labels, dtype=np.int64) if points else None,
                box=np.asarray(box, dtype=np.float64) if box is not None else None,
                mask_input=mask_input,
                multimask_output=multimask,
            )
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

    def everything(self, image_id: str, **options: Any) -> dict[str, Any]:
        """Automatic mask proposals for the whole image (``segany.MaskGenerator``), best first."""
        start = time.perf_counter()
        entry = self.catalogue.get(image_id)
        try:
            from ..everything import MaskGenerator
        except ImportError as exc:
            raise UnsupportedOperationError(f"automatic mask generation is not available: {exc}") from None

        if isinstance(self.model, ClassicModel):
            options = {k: v for k, v in options.items() if k in HONOURED_OPTIONS | SPEED_OPTIONS}

        def run() -> list[dict[str, Any]]:
            generator = MaskGenerator(self.model, output_mode="coco_rle", **options)
            return generator.generate(load_image(entry.path))

        records = self._worker.submit(run).result()
        records.sort(key=lambda r: -float(r["predicted_iou"]))
        proposals = [{
            "rle": _json_rle(r["segmentation"]),
            "area": int(r["area"]),
            "bbox": [float(v) for v in r["bbox"]],
            "predicted_iou": float(r["predicted_iou"]),
            "stability_score": float(r["stability_score"]),
            "point_coords": [[float(v) for v in p] for p in r["point_coords"]],
        } for r in records]
        return {"image_id": image_id, "proposals": proposals, "total_ms": (time.perf_counter() - start) * 1000}
