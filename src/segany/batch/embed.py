"""Precomputing image embeddings for a collection: one safetensors file per image.

The same machinery as :func:`~segany.batch.label_images`: the driver finds the images and skips
those whose embedding is stored already for the same image bytes, model and checkpoint (before
anything is scheduled); an executor runs :class:`EmbedJob` (per worker: the predictor, built once;
per image: ``set_image``, ``image_features``, :func:`~segany.data.formats.embeddings.write_embedding`,
atomic). ``segany serve --embeddings OUT`` then answers those images without the encoder.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..data.formats.embeddings import (
    embedding_mismatch,
    embedding_path,
    file_sha256,
    read_embedding_info,
    write_embedding,
)
from ..data.images import DEFAULT_MAX_PIXELS
from ..errors import SeganyError
from ..fileio import ensure_directory
from .discover import ImageItem, unique_images
from .engine import Summary, _stderr, run_job
from .executors import Executor, Outcome, Task


class PredictorFactory(Protocol):
    def __call__(self) -> Any: ...


@dataclass(frozen=True)
class EmbedJob:
    """Compute and store one image's features: the :class:`~segany.batch.executors.ImageJob` of
    :func:`embed_images`. ``factory`` (picklable) builds the predictor once per worker."""

    factory: PredictorFactory
    out: Path
    model_name: str
    checkpoint_sha256: str | None
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def setup(self) -> Any:
        """The worker's predictor (its model loaded here)."""
        return self.factory()

    def run(self, predictor: Any, task: Task) -> None:
        """Encode one image and write its embedding file atomically."""
        predictor.set_image(task.item.load(self.max_pixels))
        write_embedding(embedding_path(self.out, task.item.relative), predictor.image_features(),
                        image_name=task.item.name, image_sha256=_image_sha256(task.item),
                        model_name=self.model_name, checkpoint_sha256=self.checkpoint_sha256)


def _image_sha256(item: ImageItem) -> str:
    """The sha256 of the image file's bytes (a URI's read through fsspec)."""
    return hashlib.sha256(item.read_bytes()).hexdigest() if item.is_uri else file_sha256(item.path)


def _stored(out: Path, item: ImageItem, model_name: str, checkpoint_sha256: str | None) -> bool:
    """Whether ``item``'s embedding is stored for these image bytes, this model and checkpoint."""
    path = embedding_path(out, item.relative)
    if not path.is_file():
        return False
    try:
        info = read_embedding_info(path)  # the header only
        image_sha256 = _image_sha256(item)
    except (SeganyError, OSError):
        return False  # unreadable: made again
    return embedding_mismatch(info, image_sha256=image_sha256, model_name=model_name,
                              checkpoint_sha256=checkpoint_sha256) is None


def embed_images(
    images: list[ImageItem],
    predictor: Any,
    out: str | Path,
    model_name: str,
    checkpoint_sha256: str | None,
    *,
    overwrite: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    report: Callable[[str], None] = _stderr,
    progress: Callable[[Iterable[Outcome]], Iterator[Outcome]] = iter,
    executor: Executor | None = None,
) -> Summary:
    """Store the features of ``images`` under ``out`` (``<out>/<name>.safetensors``).

    ``predictor`` is a picklable factory of the model's predictor (called once per worker).
    ``model_name`` (:func:`~segany.data.formats.embeddings.model_name_of`) and ``checkpoint_sha256``
    are stored with each file; an image whose file holds them already (and its image's sha256) is
    skipped unless ``overwrite``. ``report``, ``progress``, ``executor``: as :func:`label_images`.
    """
    out = ensure_directory(out)
    images = unique_images(images, out)
    summary = Summary()
    todo = []
    for item in images:
        if not overwrite and _stored(out, item, model_name, checkpoint_sha256):
            summary.skipped += 1
        else:
            todo.append(Task(item, item.image_id))
    job = EmbedJob(predictor, out, model_name, checkpoint_sha256, max_pixels)
    return run_job(job, todo, out, summary, executor, report, progress)
