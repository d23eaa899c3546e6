"""``sam_model_registry`` and the ``build_sam*`` builders of the official package (and MobileSAM's ``vit_t``).

Each builder takes ``checkpoint=``: a path loads those weights strictly (official ``.pth`` files
as they are); ``None`` returns the architecture freshly initialised, as the official builders do
(nothing is downloaded: use ``segany.load_model(name)`` for the zoo's cached weights). The model
is in eval mode, on the CPU.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from ...build import build_model, load_model
from ...models.sam import Sam


def _build(name: str, checkpoint: str | os.PathLike | None) -> Sam:
    if checkpoint is None:
        model = build_model(name)
    else:
        model = load_model(name, checkpoint=checkpoint)
    assert isinstance(model, Sam)
    return model


def build_sam_vit_h(checkpoint: str | os.PathLike | None = None) -> Sam:
    """SAM ViT-H, the official ``default``."""
    return _build("vit_h", checkpoint)


def build_sam_vit_l(checkpoint: str | os.PathLike | None = None) -> Sam:
    """SAM ViT-L."""
    return _build("vit_l", checkpoint)


def build_sam_vit_b(checkpoint: str | os.PathLike | None = None) -> Sam:
    """SAM ViT-B."""
    return _build("vit_b", checkpoint)


def build_sam_vit_t(checkpoint: str | os.PathLike | None = None) -> Sam:
    """MobileSAM (TinyViT encoder), as ``mobile_sam``'s registry names it."""
    return _build("vit_t", checkpoint)


build_sam = build_sam_vit_h

sam_model_registry: dict[str, Callable[..., Sam]] = {
    "default": build_sam_vit_h,
    "vit_h": build_sam_vit_h,
    "vit_l": build_sam_vit_l,
    "vit_b": build_sam_vit_b,
    "vit_t": build_sam_vit_t,
}
