"""The fine-tuning loop: ``train(model, data, out_dir, TrainConfig(...))``.

One step is ``images_per_step`` images (default 1) with up to ``max_objects`` objects each: the images
go through the encoder as one batch, all their objects through the decoder together (each with its own
image's embedding), each taken through the interactive simulation of :mod:`segany.train.sampler`
(1 + ``points`` + ``silent`` decoder passes), the losses of every pass summed and divided by the
step's number of objects (:func:`segany.train.losses.multistep_losses`). An epoch is
``ceil(images / images_per_step)`` steps. AdamW with a linear warm-up and
step decay (x0.1 at 2/3 and 26/27 of the steps, as the paper's 60k / 86.7k of 90k). Every epoch ends
with a validation (one box and one centre point per object: mIoU and loss) and writes, atomically:
``last.pth`` (and ``best.pth``, by validation box mIoU) — plain state_dicts with the official keys —
``train_state.pth`` (optimizer, scheduler, adapters: what ``resume`` needs), ``metrics.jsonl``,
``curves.png``, ``config.json`` (the architecture, for ``--model``) and ``trained_on.json``.
Randomness is drawn per epoch from ``(seed, epoch)``, so a run resumed from its last epoch gives the
same weights as an uninterrupted one. The model stays in eval mode (TinyViT's batch norms keep their
statistics; SAM has no dropout).
"""
from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import yaml

from ..build import build_model, load_model
from ..errors import ConfigError, SettingsMismatchError, UnsupportedOperationError
from ..fileio import AtomicFile, atomic_write_json, atomic_write_text, ensure_directory, json_text
from ..models.sam import Sam
from ..models.sam2 import Sam2
from ..registry import MODELS, SAM2_MODELS, NameOrConfig, config_to_dict, sam2_config_of
from ..version import __version__
from .data import (
    Augment,
    FeatureCache,
    TrainImage,
    augmented,
    image_tensor,
    load_train_images,
    split_names,
    to_model_frame,
    weights_fingerprint,
)
from .heads import Features, TrainableModel, checkpoint_payload, decode, encode, family, training_heads
from .losses import LossWeights, mask_ious, multistep_losses
from .modes import enable_gradient_checkpointing, official_state_dict, prepare_mode
from .plot import save_curves
from .sampler import BOX_NOISE, PromptState, error_points, first_prompts, mask_box, point_schedule

STATE_FILE = "train_state.pth"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes a run (recorded in ``trained_on.json``; a resumed run must match it)."""

    mode: str = "decoder"
    epochs: int = 10
    lr: float = 1e-4
    encoder_lr_scale: float = 1.0  # the image encoder's lr as a multiple of ``lr`` (SAM 2's trainer sets a vision lr)
    weight_decay: float = 0.1
    warmup_steps: int | None = None  # None: min(250, a tenth of the steps)
    decay_at: tuple[float, ...] = (2 / 3, 26 / 27)
    decay_factor: float = 0.1
    points: int = 8
    silent: int = 2
    box_probability: float = 0.5
    box_noise: float = BOX_NOISE  # the first box's noise: std as a fraction of its side (at most 20 px; SAM: 0.1)
    both_prompts: bool = False  # every step simulates each object from its box and from a point (box_probability unused)
    max_objects: int = 16
    prompts_per_object: int = 1  # >1: each object simulated that many times per step, own prompts (a larger decoder batch)
    images_per_step: int = 1  # >1: that many images per step, one encoder batch, their objects decoded together
    seed: int = 0
    bf16: bool = False
    gradient_checkpointing: bool = False
    lora_rank: int = 4
    lora_alpha: float = 4.0
    augment: Augment = field(default_factory=Augment)
    loss: LossWeights = field(default_factory=LossWeights)
    device: str = "cpu"

    def __post_init__(self) -> None:
        if (self.epochs < 1 or self.lr <= 0 or self.encoder_lr_scale <= 0 or self.max_objects < 1
                or self.prompts_per_object < 1 or self.images_per_step < 1 or self.points < 0 or self.silent < 0):
            raise ConfigError("epochs, max_objects, prompts_per_object and images_per_step must be >= 1, lr and "
                              "encoder_lr_scale > 0, points and silent >= 0")
        if not 0 <= self.box_probability <= 1 or not 0 <= self.augment.flip <= 1:
            raise ConfigError("box_probability and the flip probability must be in [0, 1]")
        if self.box_noise < 0:
            raise ConfigError(f"box_noise must be >= 0, got {self.box_noise}")
        lo, hi = self.augment.scale
        if not 0 < lo <= hi:
            raise ConfigError(f"scale jitter must be 0 < lo <= hi, got {self.augment.scale}")


@dataclass
class TrainResult:
    out_dir: Path
    metrics: list[dict[str, Any]]
    trained: list[str]

    @property
    def last(self) -> Path:
        return self.out_dir / "last.pth"

    @property
    def best(self) -> Path:
        return self.out_dir / "best.pth"


# --- model ------------------------------------------------------------------------------------------

def _initial_model(model: NameOrConfig | TrainableModel, checkpoint: str | os.PathLike | None,
                   seed: int) -> TrainableModel:
    """The starting model: given, loaded with ``checkpoint`` (or the zoo's weights), or seeded random init
    for a config that is not in the zoo and comes without a checkpoint."""
    if isinstance(model, (Sam, Sam2)):
        return model
    if checkpoint is None and not (isinstance(model, str) and (model in MODELS or model in SAM2_MODELS)):
        torch.manual_seed(seed)
        built = build_model(model)
    else:
        built = load_model(model, checkpoint=checkpoint, progress=False)
    if not isinstance(built, (Sam, Sam2)):
        raise UnsupportedOperationError(
            f"training supports SAM 1 / MobileSAM and SAM 2 models; {type(built).__name__} cannot be fine-tuned")
    return built


def _architecture(model: NameOrConfig | TrainableModel, sam: TrainableModel) -> dict[str, Any] | None:
    """``config.json``: what ``--model`` takes to rebuild the architecture (SAM 2: the official document
    of a YAML / JSON config; None for a zoo name or a model given as a module, which need none)."""
    if isinstance(sam, Sam):
        return config_to_dict(sam.config)
    if isinstance(model, (str, Path)) and str(model) not in SAM2_MODELS and sam2_config_of(model) is not None:
        return yaml.safe_load(Path(model).read_text())  # YAML or its JSON, as load_model reads it
    return None


def _upsample(low: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(low.float(), (size, size), mode="bilinear", align_corners=False)


def interactive_losses(model: TrainableModel, features: Features, masks: np.ndarray, rng: np.random.Generator,
                       config: TrainConfig, image_of: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The summed losses of the interactive simulation of (N, S, S) ``masks`` on one image's features, or on
    several images' (``image_of``: the (N,) row of ``features`` each object is on). The first prompt's kind
    (box or point) is drawn once for all N, as SAM 2's trainer draws it once per batch."""
    size = model.image_size
    device = features[0].device
    if image_of is not None and features[0].shape[0] > 1:
        features = tuple(f[image_of.to(device)] for f in features)
    truth = torch.from_numpy(masks).to(device)
    state = first_prompts(masks, rng, config.box_probability, config.box_noise)
    schedule = point_schedule(config.points, config.silent, rng)
    rows = torch.arange(len(masks), device=device)
    mask_input = None
    steps = []
    for step in range(len(schedule) + 1):
        multimask = step == 0 and state.is_single_point
        with training_heads(model):
            low, iou, scores = decode(model, features, state, mask_input, multimask)
        high = _upsample(low, size)
        steps.append((high, iou.float(), None if scores is None else scores.float()))
        chosen = iou.argmax(1) if multimask else torch.zeros_like(rows)
        mask_input = low[rows, chosen][:, None].detach()
        if step < len(schedule) and schedule[step]:
            predicted = (high[rows, chosen] > 0).cpu().numpy()
            state.add(*error_points(predicted, masks, rng))
    return multistep_losses(steps, truth, config.loss)


def step_loss(model: TrainableModel, features: Features, masks: np.ndarray, rng: np.random.Generator,
              config: TrainConfig, image_of: torch.Tensor | None = None) -> torch.Tensor:
    """A step's ``core_loss``: :func:`interactive_losses` from the first prompt ``box_probability`` draws or,
    with ``both_prompts``, the mean of the simulation from every object's box and the one from a point each
    (the single-mask box path and the multimask point path both trained every step, on one encoder pass)."""
    if not config.both_prompts:
        return interactive_losses(model, features, masks, rng, config, image_of)["core_loss"]
    kinds = (replace(config, box_probability=1.0), replace(config, box_probability=0.0))
    return sum(interactive_losses(model, features, masks, rng, kind, image_of)["core_loss"] for kind in kinds) / 2


def step_masks(masks: np.ndarray, rng: np.random.Generator, config: TrainConfig) -> np.ndarray:
    """One step's objects: at most ``max_objects`` of an image's (N, S, S) masks, drawn at random, each
    repeated ``prompts_per_object`` times (every copy gets its own prompts in :func:`interactive_losses`)."""
    if len(masks) > config.max_objects:
        masks = masks[np.sort(rng.choice(len(masks), config.max_objects, replace=False))]
    return np.repeat(masks, config.prompts_per_object, axis=0) if config.prompts_per_object > 1 else masks


def _autocast(config: TrainConfig) -> contextlib.AbstractContextManager:
    device = torch.device(config.device)
    return torch.autocast(device.type, dtype=torch.bfloat16) if config.bf16 else contextlib.nullcontext()


# --- validation ---------------------------------------------------------------------------------------

def centre_point(mask: np.ndarray) -> np.ndarray:
    """The (x, y) pixel of a mask farthest from its boundary (the usual first click of interactive benchmarks)."""
    dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return np.array([x, y], np.float32)


@torch.no_grad()
def validate(model: TrainableModel, frames: Iterator[tuple[Features, np.ndarray]], config: TrainConfig) -> dict[str, float]:
    """mIoU from one exact box and from one centre point (best of 3 by predicted IoU), and their mean loss."""
    box_ious, point_ious, losses = [], [], []
    for features, masks in frames:
        truth = torch.from_numpy(masks).to(features[0].device)
        n = len(masks)
        prompts = {
            "box": PromptState(np.zeros((n, 0, 2), np.float32), np.zeros((n, 0), np.int64),
                               np.stack([mask_box(m) for m in masks])),
            "point": PromptState(np.stack([centre_point(m) for m in masks])[:, None], np.ones((n, 1), np.int64), None),
        }
        for kind, state in prompts.items():
            with _autocast(config):
                low, iou, scores = decode(model, features, state, None, state.is_single_point)
            high = _upsample(low, model.image_size)
            scores = None if scores is None else scores.float()
            losses.append(float(multistep_losses([(high, iou.float(), scores)], truth, config.loss)["core_loss"]))
            best = high[torch.arange(n), iou.argmax(1)][:, None]
            (box_ious if kind == "box" else point_ious).extend(mask_ious(best, truth[:, None])[:, 0].tolist())
    if not box_ious:
        return {}
    return {"val_loss": float(np.mean(losses)), "val_box_miou": float(np.mean(box_ious)),
            "val_point_miou": float(np.mean(point_ious))}


# --- the run ------------------------------------------------------------------------------------------

class _Frames:
    """Image features and model-frame masks of a dataset, through the feature cache when the encoder is frozen."""

    def __init__(self, model: TrainableModel, images: list[TrainImage], cache: FeatureCache | None,
                 device: torch.device) -> None:
        self.model, self.images, self.cache, self.device = model, images, cache, device
        self.keep_aspect = family(model).keep_aspect

    def _encode(self, *images: np.ndarray) -> Features:
        return encode(self.model, [image_tensor(image, self.device) for image in images])

    def _plain(self, index: int, flip: bool) -> tuple[Features, np.ndarray]:
        image, masks = self.images[index].load()
        image, masks = to_model_frame(image, masks, self.model.image_size, flip=flip, keep_aspect=self.keep_aspect)
        with torch.no_grad():
            return self._encode(image), masks

    def frozen(self, index: int, flip: bool = False) -> tuple[Features, np.ndarray]:
        """Features computed without gradient (cached on disk when there is a cache)."""
        if self.cache is None:
            return self._plain(index, flip)
        features, masks = self.cache.get(index, flip, lambda: self._plain(index, flip))
        return tuple(f.to(self.device) for f in features), masks

    def _augmented(self, index: int, augment: Augment, rng: np.random.Generator
                   ) -> tuple[Features | np.ndarray, np.ndarray]:
        """An augmented frame: its image (its cached features when there is a cache: then only flips apply,
        the encoder is frozen) and its masks."""
        if self.cache is not None:
            return self.frozen(index, bool(rng.random() < augment.flip))
        image, masks = self.images[index].load()
        return augmented(image, masks, self.model.image_size, augment, rng, self.keep_aspect)

    def training(self, index: int, augment: Augment, rng: np.random.Generator) -> tuple[Features, np.ndarray]:
        """An augmented frame's features and masks."""
        inputs, masks = self._augmented(index, augment, rng)
        return (inputs if self.cache is not None else self._encode(inputs)), masks

    def training_step(self, indices: Sequence[int], rng: np.random.Generator, config: TrainConfig
                      ) -> tuple[Features, np.ndarray, torch.Tensor] | None:
        """A step's augmented frames: the features of those with objects left (one encoder batch), their
        :func:`step_masks` concatenated (N, S, S) and the (N,) frame of each; None when no object is left."""
        kept = []
        for index in indices:
            inputs, masks = self._augmented(int(index), config.augment, rng)
            if len(masks):
                kept.append((inputs, step_masks(masks, rng, config)))
        if not kept:
            return None
        inputs, masks = zip(*kept)
        features = (tuple(torch.cat(parts) for parts in zip(*inputs)) if self.cache is not None
                    else self._encode(*inputs))
        image_of = torch.repeat_interleave(torch.arange(len(masks)), torch.tensor([len(m) for m in masks]))
        return features, np.concatenate(masks), image_of

    def all_plain(self) -> Iterator[tuple[Features, np.ndarray]]:
        return (self.frozen(i) for i in range(len(self.images)))


def evaluate_model(model: TrainableModel, data: str | os.PathLike, config: TrainConfig = TrainConfig()) -> dict[str, float]:
    """Held-out mIoU from one box and from one centre point per object (and the loss) of ``model`` on ``data``."""
    frames = _Frames(model, load_train_images(data), None, torch.device(config.device))
    return validate(model, frames.all_plain(), config)


def _schedule(total: int, config: TrainConfig):
    warmup = config.warmup_steps if config.warmup_steps is not None else min(250, total // 10)
    milestones = [int(f * total) for f in config.decay_at]

    def factor(step: int) -> float:
        ramp = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        return ramp * config.decay_factor ** sum(step >= m for m in milestones)
    return factor


def _param_groups(sam: TrainableModel, config: TrainConfig) -> list[dict[str, Any]]:
    """The optimizer's groups of trainable parameters: the image encoder's at ``lr * encoder_lr_scale``, the rest
    (prompt encoder, mask decoder, SAM 2's embeddings) at ``lr``; empty groups left out."""
    encoder = {id(p) for p in sam.image_encoder.parameters()}
    params = [p for p in sam.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) not in encoder], "lr": config.lr},
              {"params": [p for p in params if id(p) in encoder], "lr": config.lr * config.encoder_lr_scale}]
    return [g for g in groups if g["params"]]


def _save_torch(path: Path, obj: Any) -> None:
    with AtomicFile(path) as tmp:
        torch.save(obj, tmp)


def train(model: NameOrConfig | TrainableModel, data: str | os.PathLike, out_dir: str | os.PathLike,
          config: TrainConfig = TrainConfig(), val: str | os.PathLike | None = None,
          checkpoint: str | os.PathLike | None = None, progress: bool = True, resume: bool = True,
          image_dir: str | os.PathLike | None = None) -> TrainResult:
    """Fine-tune ``model`` (a zoo name, a config, a :class:`Sam` or a SAM 2 :class:`Sam2`) on ``data`` into ``out_dir``.

    With ``resume`` and a ``train_state.pth`` in ``out_dir``, the run continues after its last finished
    epoch (the settings must be the same). ``image_dir``: the folder a COCO ``data`` / ``val`` file's image
    names are relative to, when it is not beside the file (``segany everything``'s input folder). Returns the metrics per epoch and the trained parameter names.
    """
    from tqdm import tqdm

    out = ensure_directory(out_dir, "run folder")
    images = load_train_images(data, image_dir)  # bad data is refused before any weights are fetched
    val_images = load_train_images(val, image_dir) if val is not None else []
    device = torch.device(config.device)
    sam = _initial_model(model, checkpoint, config.seed).to(device).eval()
    torch.manual_seed(config.seed)
    trained = prepare_mode(sam, config.mode, config.lora_rank, config.lora_alpha)
    if config.gradient_checkpointing and config.mode != "decoder":
        enable_gradient_checkpointing(sam.image_encoder)
    cache_root = out / "features"
    fingerprint = weights_fingerprint(sam.image_encoder) if config.mode == "decoder" else ""
    frames = _Frames(sam, images, FeatureCache(cache_root / "train", fingerprint) if fingerprint else None, device)
    val_frames = _Frames(sam, val_images, FeatureCache(cache_root / "val", fingerprint) if fingerprint else None, device)

    # the fused kernel: one call for all parameters (the default per-tensor loop was ~20 ms of a ~80 ms CPU step
    # of benchmarks/train.py's small SAM; ~3 ms fused)
    optimizer = torch.optim.AdamW(_param_groups(sam, config), weight_decay=config.weight_decay,
                                  fused=device.type in ("cpu", "cuda") or None)
    steps_per_epoch = math.ceil(len(images) / config.images_per_step)
    total = config.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total, config))
    record = asdict(config)
    metrics: list[dict[str, Any]] = []
    best = -math.inf
    start = 0
    state_path = out / STATE_FILE
    if resume and state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=False)
        stored = {**asdict(TrainConfig()), **state["config"]}  # a setting newer than the run: its default
        if stored != record:
            changed = sorted(k for k in record if stored[k] != record[k])
            raise SettingsMismatchError(f"{out} was trained with other settings ({', '.join(changed)}): "
                                        "use a new run folder or the same settings")
        sam.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        metrics, best, start = state["metrics"], state["best"], state["epoch"] + 1

    architecture = _architecture(model, sam)
    if architecture is not None:
        atomic_write_json(out / "config.json", architecture, indent=2)
    for epoch in range(start, config.epochs):
        rng = np.random.default_rng([config.seed, epoch])
        losses = []
        order = rng.permutation(len(images))
        bar = tqdm(np.array_split(order, steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", unit="step",
                   disable=not progress, leave=False)
        for indices in bar:
            with _autocast(config):
                step = frames.training_step(indices, rng, config)
                if step is None:
                    continue
                loss = step_loss(sam, step[0], step[1], rng, config, step[2])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else None,
                               "lr": scheduler.get_last_lr()[0]}
        row.update(validate(sam, val_frames.all_plain(), config))
        metrics.append(row)
        weights = checkpoint_payload(sam, official_state_dict(sam))
        _save_torch(out / "last.pth", weights)
        score = row.get("val_box_miou", -row["train_loss"] if row["train_loss"] is not None else -math.inf)
        if score > best:
            best = score
            _save_torch(out / "best.pth", weights)
        atomic_write_text(out / "metrics.jsonl", "".join(json_text(m) + "\n" for m in metrics))
        save_curves(out / "curves.png", metrics)
        atomic_write_json(out / "trained_on.json", {
            "segany_version": __version__, "model": str(model) if isinstance(model, (str, Path)) else sam.config.name,
            "base_checkpoint": None if checkpoint is None else str(checkpoint),
            "architecture": "config.json" if architecture is not None else None,
            "data": str(data), "images": split_names(images), "objects": sum(len(i.samples) for i in images),
            "val": None if val is None else str(val), "val_images": len(val_images), "epochs_done": epoch + 1,
            "best": {"criterion": "val_box_miou" if val_images else "-train_loss", "value": best},
            "settings": record, "trained_parameters": len(trained)}, indent=2)
        _save_torch(state_path, {"epoch": epoch, "config": record, "model": sam.state_dict(),
                                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                 "metrics": metrics, "best": best})
        if progress:
            tqdm.write(json_text(row))
    return TrainResult(out, metrics, trained)
