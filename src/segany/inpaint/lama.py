"""LaMa (Suvorov et al., WACV 2022), the engine of Inpaint Anything and IOPaint, in plain torch.

The file users download is IOPaint's TorchScript trace of ``big-lama``
(:data:`segany.registry.LAMA`: URL, byte size, sha256, cached and verified like SAM's weights).
Its contract: ``forward(image, mask)`` with the image 1x3xHxW RGB in 0..1 and the mask 1x1xHxW
0/1, H and W multiples of 8, returning 1x3xHxW in 0..1. As IOPaint does, the image is padded to a
multiple of 8 by mirroring its bottom and right edges (``np.pad(mode="symmetric")``), the output is
scaled by 255 and truncated to uint8, and the padding is cropped off; only the hole is taken from it.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError, WeightsUnavailableError
from ..registry import LAMA
from ..weights import cached_path, ensure_file
from .base import check_inputs, composite

MULTIPLE = 8


def pad_to_multiple(array: np.ndarray, multiple: int = MULTIPLE) -> np.ndarray:
    """``array`` (HxW or HxWxC) mirrored at its bottom / right edges up to multiples of ``multiple``."""
    height, width = array.shape[:2]
    pad = ((0, -height % multiple), (0, -width % multiple)) + ((0, 0),) * (array.ndim - 2)
    return np.pad(array, pad, mode="symmetric")


def lama_checkpoint(checkpoint: str | os.PathLike | None, download: bool = True) -> Path:
    """The big-lama file to load: ``checkpoint``, else the cached download (fetched if ``download``)."""
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise CheckpointError(f"LaMa checkpoint {path} does not exist")
        return path
    if download:
        return ensure_file(LAMA)
    path = cached_path(LAMA)
    if not path.is_file():
        raise WeightsUnavailableError(f"LaMa weights are not cached at {path}: download {LAMA.url} "
                                      f"({LAMA.num_bytes:,} bytes, sha256 {LAMA.sha256}) there")
    return path


class LamaInpainter:
    """:class:`~segany.inpaint.base.Inpainter` running a LaMa TorchScript model on ``device``."""

    def __init__(self, checkpoint: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 download: bool = True) -> None:
        path = lama_checkpoint(checkpoint, download)
        try:
            model = torch.jit.load(str(path), map_location=device)
        except (RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a LaMa TorchScript file ({' '.join(str(exc).split())[:200]})") from None
        self.model, self.device = model.eval(), torch.device(device)

    def inpaint(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``image`` (HxWx3 RGB uint8) with the pixels of ``mask`` (HxW) filled by LaMa."""
        image, mask = check_inputs(image, mask)
        height, width = mask.shape
        pixels = torch.from_numpy(pad_to_multiple(image)).to(self.device).permute(2, 0, 1)[None].float() / 255
        hole = torch.from_numpy(pad_to_multiple(mask.astype(np.float32))).to(self.device)[None, None]
        with torch.inference_mode():
            out = self.model(pixels, hole)
        if not isinstance(out, torch.Tensor) or out.shape != pixels.shape:
            raise CheckpointError(f"the LaMa model returned {getattr(out, 'shape', type(out).__name__)}, "
                                  f"expected {tuple(pixels.shape)}")
        filled = (out[0].permute(1, 2, 0)[:height, :width] * 255).clamp(0, 255).to(torch.uint8).cpu().numpy()
        return composite(image, filled, mask)
