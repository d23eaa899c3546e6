"""What the page's in-browser decoder needs (the hover preview, ``js/hover.js``): the model's prompt
decoder as ONNX (its engine family's ``browser_decoder``: SAM's official web-demo export, exported
once and kept in memory) and an image's embedding as raw little-endian float32. SAM 1 / MobileSAM
models only: the classic engine has no network, SAM 2's decoder also needs its high-resolution maps."""
from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch

from ..engine import ImageFeatures, family_of
from ..errors import SeganyError, UnsupportedOperationError


def unsupported_reason(model: Any) -> str | None:
    """Why ``model`` has no browser decoder, or ``None`` when it has one."""
    try:
        if family_of(model).browser_decoder is not None:
            return None
    except SeganyError:
        pass
    return (f"the {getattr(model, 'name', type(model).__name__)} engine has no ONNX decoder for the browser "
            "(SAM 1 / MobileSAM models only): previews come from the server")


class DecoderExport:
    """The model's decoder as ONNX bytes, exported on first request (a few seconds for SAM)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._onnx: bytes | None = None
        self._lock = threading.Lock()

    def onnx(self) -> bytes:
        """The family's ``decoder.onnx`` bytes; SAM's has ``return_single_mask`` (as the official web
        demo): for one point (and its padding point) the best of the three multimask tokens,
        upsampled to the original size, i.e. the server's best multimask candidate."""
        reason = unsupported_reason(self.model)
        if reason is not None:
            raise UnsupportedOperationError(reason)
        with self._lock:
            if self._onnx is None:
                export = family_of(self.model).browser_decoder
                assert export is not None  # unsupported_reason said so
                self._onnx = export(self.model)
            return self._onnx


def embedding_payload(model: Any, features: ImageFeatures) -> tuple[bytes, dict[str, str]]:
    """An image's embedding as raw float32 bytes (C order) and the headers describing it:
    ``X-Embedding-Shape`` (1,C,h,w), ``X-Input-Size`` (h,w of the image in the model's frame,
    for the point transform) and ``X-Original-Size`` (H,W)."""
    reason = unsupported_reason(model)
    if reason is not None:
        raise UnsupportedOperationError(reason)
    (embedding,) = features.maps
    array = embedding.detach().to("cpu", torch.float32).numpy() if isinstance(embedding, torch.Tensor) else embedding
    array = np.ascontiguousarray(array, dtype="<f4")
    headers = {
        "X-Embedding-Shape": ",".join(str(v) for v in array.shape),
        "X-Input-Size": ",".join(str(int(v)) for v in features.input_size),
        "X-Original-Size": ",".join(str(int(v)) for v in features.original_size),
    }
    return array.tobytes(), headers
