"""Fill or replace with a text prompt: Stable Diffusion inpainting through ``diffusers``.

The optional extra ``segany[diffusion]``. :class:`DiffusionInpainter` wraps
``StableDiffusionInpaintPipeline`` (default model: Stable Diffusion 2 inpainting, the one Inpaint
Anything uses), loaded with ``from_pretrained`` from a model id (the Hugging Face cache) or a
``save_pretrained`` folder. The image is resized so that its long side is ``size`` pixels (both
sides multiples of 8, what the VAE needs), generated, resized back, and only the hole is taken
from the result. *Fill* generates the masked object's place from the prompt; *replace* keeps the
object and regenerates everything else (the mask inverted), as Inpaint Anything's two commands do.
"""
from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np

from ..errors import UnsupportedOperationError, WeightsUnavailableError
from .base import check_inputs, composite

DEFAULT_MODEL = "stabilityai/stable-diffusion-2-inpainting"


def working_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) with the long side ``size`` and both sides rounded to multiples of 8."""
    scale = size / max(height, width)
    return max(8, round(height * scale / 8) * 8), max(8, round(width * scale / 8) * 8)


def load_pipeline(model: str | os.PathLike, device: str = "cpu", dtype: Any = None) -> Any:
    """``StableDiffusionInpaintPipeline.from_pretrained(model)``; offline without the files, one
    line naming the model and where to put it."""
    try:
        from diffusers import StableDiffusionInpaintPipeline
    except ImportError:
        raise UnsupportedOperationError("fill / replace need diffusers: pip install 'segany[diffusion]'") from None
    try:
        pipeline = StableDiffusionInpaintPipeline.from_pretrained(str(model), torch_dtype=dtype, safety_checker=None,
                                                                  requires_safety_checker=False)
    except OSError as exc:
        reason = " ".join(str(exc).split())[:160]
        raise WeightsUnavailableError(
            f"Stable Diffusion inpainting model {str(model)!r} is not available ({reason}); online, it is "
            f"downloaded into the Hugging Face cache on first use; offline, put a save_pretrained folder "
            f"of it on disk and pass its path (--sd-model DIR)") from None
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


class DiffusionInpainter:
    """:class:`~segany.inpaint.base.Inpainter` generating the hole from ``prompt``."""

    def __init__(self, prompt: str, model: str | os.PathLike = DEFAULT_MODEL, device: str = "cpu",
                 steps: int = 50, guidance_scale: float = 7.5, seed: int = 0, size: int = 512,
                 pipeline: Any = None) -> None:
        self.prompt, self.steps, self.guidance_scale, self.seed, self.size = prompt, steps, guidance_scale, seed, size
        self.device = device
        self.pipeline = pipeline if pipeline is not None else load_pipeline(model, device)

    def inpaint(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``image`` with the pixels of ``mask`` generated from the prompt."""
        import torch
        from PIL import Image

        image, mask = check_inputs(image, mask)
        height, width = mask.shape
        h, w = working_size(height, width, self.size)
        small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        small_mask = cv2.resize(mask.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_NEAREST)
        generated = self.pipeline(
            prompt=self.prompt, image=Image.fromarray(small), mask_image=Image.fromarray(small_mask),
            height=h, width=w, num_inference_steps=self.steps, guidance_scale=self.guidance_scale,
            generator=torch.Generator("cpu").manual_seed(self.seed),
        ).images[0]
        filled = cv2.resize(np.asarray(generated.convert("RGB")), (width, height), interpolation=cv2.INTER_CUBIC)
        return composite(image, filled, mask)
