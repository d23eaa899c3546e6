"""Captions as text prompts: BLIP (``BlipForConditionalGeneration``) describes an image, and the
caption is what Grounding DINO grounds (the BLIP + Grounded-SAM auto-labelling)."""
from __future__ import annotations

import os

import numpy as np
import torch

from .detectors import _pil
from .loading import load_pretrained

BLIP = "Salesforce/blip-image-captioning-base"
MAX_NEW_TOKENS = 30


class BlipCaptioner:
    """``caption(image)``: one English sentence describing the image (greedy decoding)."""

    def __init__(self, id_or_dir: str | os.PathLike = BLIP, device: str = "cpu", max_new_tokens: int = MAX_NEW_TOKENS,
                 local_files_only: bool = False) -> None:
        self.name = os.fspath(id_or_dir)
        self.device, self.max_new_tokens = device, int(max_new_tokens)
        self.model, self.processor = load_pretrained("BlipForConditionalGeneration", id_or_dir, "BLIP captioning",
                                                     device, local_files_only)

    @torch.inference_mode()
    def caption(self, image: np.ndarray) -> str:
        """The caption of ``image`` (HWC RGB uint8), special tokens removed."""
        inputs = self.processor(images=_pil(image), return_tensors="pt").to(self.device)
        ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return " ".join(self.processor.batch_decode(ids, skip_special_tokens=True)[0].split())
