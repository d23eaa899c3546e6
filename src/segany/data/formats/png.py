"""Masks and pictures as PNG files (written atomically)."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ...fileio import atomic_write_bytes


def png_bytes(array: np.ndarray) -> bytes:
    """A uint8 HxW / HxWx3 array (or bool mask, stored 0/255) as PNG bytes."""
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(path: str | os.PathLike, array: np.ndarray) -> Path:
    return atomic_write_bytes(path, png_bytes(array))
