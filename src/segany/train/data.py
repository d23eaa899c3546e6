"""Training data: a COCO instances file or an ``images/`` + ``masks/`` folder (one object per mask), grouped
by image, brought to the model's square input frame with flips and scale jitter, and the decoder mode's
on-disk cache of image features.

Augmentation moves the image and its masks together; the prompts are drawn afterwards from the
augmented masks (:mod:`segany.train.sampler`), so they stay consistent by construction.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..data.datasets import Sample, load_coco, open_dataset
from ..data.images import load_image, preprocess_shape
from ..errors import DatasetError
from ..fileio import AtomicFile

MIN_OBJECT_PIXELS = 4  # objects smaller than this after augmentation are dropped from that step


@dataclass(frozen=True)
class TrainImage:
    """One image and the samples (objects) annotated on it."""

    path: Path
    samples: tuple[Sample, ...]

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """(HxWx3 uint8 RGB image, (N, H, W) bool masks); the image file is read once for all its objects."""
        image = load_image(self.path)
        return image, np.stack([sample.target_on(image).mask for sample in self.samples])


def load_train_images(data: str | os.PathLike, image_dir: str | os.PathLike | None = None) -> list[TrainImage]:
    """The images of a dataset (COCO JSON, ``images/`` + ``masks/`` folder, or a built-in name), each with its
    objects; ``image_dir``: where a COCO file's ``file_name`` paths start (``segany everything``'s input folder)."""
    is_coco_file = Path(data).suffix.lower() == ".json"
    dataset = load_coco(data, image_dir) if image_dir is not None and is_coco_file else open_dataset(data)
    by_image: dict[Path, list[Sample]] = {}
    for sample in dataset:
        by_image.setdefault(sample.image_path, []).append(sample)
    if not by_image:
        raise DatasetError(f"{data} holds no training objects")
    return [TrainImage(path, tuple(samples)) for path, samples in by_image.items()]


@dataclass(frozen=True)
class Augment:
    """Horizontal flips (probability ``flip``) and scale jitter (longest side times U(lo, hi), then a random crop)."""

    flip: float = 0.5
    scale: tuple[float, float] = (0.75, 1.25)

    @property
    def is_identity(self) -> bool:
        return self.flip == 0 and self.scale == (1.0, 1.0)


NO_AUGMENT = Augment(0.0, (1.0, 1.0))


def to_model_frame(image: np.ndarray, masks: np.ndarray, size: int, flip: bool = False, scale: float = 1.0,
                   crop: tuple[float, float] = (0.0, 0.0), keep_aspect: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The image resized so its longest side is ``size * scale`` (SAM 1; ``keep_aspect=False``: both sides,
    SAM 2's square frame), cropped to ``size`` at the relative offset ``crop`` (y, x) when larger,
    optionally mirrored, and its masks padded to (N, size, size)."""
    long_side = max(1, round(size * scale))
    h, w = preprocess_shape(image.shape[0], image.shape[1], long_side) if keep_aspect else (long_side, long_side)
    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    masks = np.stack([cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) for m in masks]).astype(bool)
    top, left = int(crop[0] * max(h - size, 0)), int(crop[1] * max(w - size, 0))
    image, masks = image[top:top + size, left:left + size], masks[:, top:top + size, left:left + size]
    if flip:
        image, masks = image[:, ::-1], masks[:, :, ::-1]
    padded = np.zeros((len(masks), size, size), bool)
    padded[:, :masks.shape[1], :masks.shape[2]] = masks
    return np.ascontiguousarray(image), padded


def augmented(image: np.ndarray, masks: np.ndarray, size: int, augment: Augment,
              rng: np.random.Generator, keep_aspect: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """:func:`to_model_frame` with a random flip, scale and crop; objects left (almost) empty are dropped."""
    flip = bool(rng.random() < augment.flip)
    scale = float(rng.uniform(*augment.scale))
    image, masks = to_model_frame(image, masks, size, flip, scale, (float(rng.random()), float(rng.random())),
                                  keep_aspect)
    return image, masks[masks.reshape(len(masks), -1).sum(1) >= MIN_OBJECT_PIXELS]


def image_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """HxWx3 uint8 → (1, 3, H, W) float on ``device`` (the model's ``preprocess`` normalises and pads)."""
    return torch.from_numpy(image).permute(2, 0, 1)[None].to(device, torch.float32)


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A short sha256 of a module's weights: the cache key of features computed by it."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())  # 0-d too (BatchNorm counts)
    return digest.hexdigest()[:16]


class FeatureCache:
    """Image embeddings of a frozen encoder, computed once per (image, flip) and kept on disk.

    Scale jitter is not applied in this mode (each scale would need its own features); flips are.
    """

    def __init__(self, folder: str | os.PathLike, encoder_fingerprint: str) -> None:
        self.folder = Path(folder) / encoder_fingerprint
        self.computed = 0

    def get(self, index: int, flip: bool, compute: Callable[[], tuple[tuple[torch.Tensor, ...], np.ndarray]]
            ) -> tuple[tuple[torch.Tensor, ...], np.ndarray]:
        """(features: the embedding (1, C, g, g) and any high-resolution maps, masks (N, S, S) bool) of
        image ``index``, from disk or ``compute()``."""
        path = self.folder / f"{index:06d}_{int(flip)}.pt"
        if path.is_file():
            stored = torch.load(path, map_location="cpu", weights_only=True)
            if "features" in stored:  # else the earlier layout (a lone "embedding", SAM 1 only): recomputed
                return tuple(stored["features"]), stored["masks"].numpy()
        features, masks = compute()
        features = tuple(f.detach().cpu() for f in features)
        with AtomicFile(path) as tmp:
            torch.save({"features": list(features), "masks": torch.from_numpy(masks)}, tmp)
        self.computed += 1
        return features, masks


def split_names(images: Sequence[TrainImage]) -> list[str]:
    """The image file names, for the run's record of what it was trained on."""
    return [image.path.name for image in images]
