"""Embeddings stored ahead of time (``segany embed``) that the server uses instead of the encoder.

The embedding of the image ``a/b.jpg`` of the images folder is looked for at
``<folder>/a/b.jpg.safetensors`` (:mod:`segany.data.formats.embeddings`). It is used only when it
was stored for the same image bytes (sha256 of the file now on disk) by the same model (name and
checkpoint sha256); otherwise the server computes the embedding as without a folder, and says
why in its log, once per image.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path, PurePosixPath

from ..data.formats.embeddings import embedding_mismatch, embedding_path, file_sha256, read_embedding, read_embedding_info
from ..engine import ImageFeatures
from ..errors import ConfigError, SeganyError

log = logging.getLogger("segany.serve")


class StoredEmbeddings:
    """The stored embeddings under ``folder`` for a model named ``model_name`` whose checkpoint's
    sha256 is ``checkpoint_sha256`` (None: a model without weights file)."""

    def __init__(self, folder: str | os.PathLike, model_name: str, checkpoint_sha256: str | None) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ConfigError(f"embeddings folder {folder} does not exist or is not a folder "
                              f"(write it with `segany embed IMAGES_DIR -o {folder}`)")
        self.model_name, self.checkpoint_sha256 = model_name, checkpoint_sha256
        self.used = 0  # images whose stored embedding was taken, for statistics and tests
        self._told: set[str] = set()
        self._lock = threading.Lock()

    def features(self, file_name: str, image_file: Path) -> ImageFeatures | None:
        """The stored features of the image ``file_name`` (relative to the images folder, its file
        ``image_file``), or None (logged once per image) when there are none that fit."""
        path = embedding_path(self.folder, PurePosixPath(file_name))
        if not path.is_file():
            self.fall_back(file_name, f"no stored embedding at {path}")
            return None
        try:
            info = read_embedding_info(path)  # the header: the tensors are read only when they fit
            reason = embedding_mismatch(info, image_sha256=file_sha256(image_file), model_name=self.model_name,
                                        checkpoint_sha256=self.checkpoint_sha256)
            if reason is not None:
                self.fall_back(file_name, f"stored embedding {path} not used: {reason}")
                return None
            return read_embedding(path)[0]
        except SeganyError as exc:
            self.fall_back(file_name, str(exc))
            return None

    def taken(self) -> None:
        """Count one image answered from its stored embedding."""
        with self._lock:
            self.used += 1

    def fall_back(self, file_name: str, reason: str) -> None:
        """Log, the first time for this image, why its embedding is computed after all."""
        with self._lock:
            if file_name in self._told:
                return
            self._told.add(file_name)
        log.warning("computing the embedding of %s: %s", file_name, reason)
