"""Probes of ``benchmarks/train.py``'s random-init SAM (issue 16): its empty-mask plateau, its speed, its ceiling.

``overfit``: the training pieces of :mod:`segany.train.loop` (model-frame masks, prompts, decode, losses,
validation) on ONE shapes image, box prompts, no augmentation — held-out = the same image.
``geometry``: the prompt encoder + mask decoder alone on a zero image embedding, target = the filled box
(no image content at all: only the box → mask geometry is to learn), 8 random boxes per step.
Both print the box mIoU every ``--every`` steps. ``speed``: full-mode training steps and images per second of
the model shape given (``--patch``, ``--global-attn``) per ``--images-per-step``, fp32 and bf16 autocast. ``ceiling``: the held-out box
mIoU of the ground-truth masks themselves brought to the low-res mask grid and upsampled as the loop
upsamples the model's logits (what a perfect low-res prediction would score). One thread:

    PYTHONPATH=src python benchmarks/train_probe.py overfit --steps 200
    PYTHONPATH=src python benchmarks/train_probe.py geometry --steps 400 --lr 1e-3
    PYTHONPATH=src python benchmarks/train_probe.py speed --steps 50 [--patch 4 --global-attn 3]
    PYTHONPATH=src python benchmarks/train_probe.py speed --steps 30 --images-per-step 1,2,4,8 --fp32-only
    PYTHONPATH=src python benchmarks/train_probe.py ceiling
    PYTHONPATH=src python benchmarks/train_probe.py errors --checkpoint RUN/full/last.pth
"""
from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
for path in (HERE.parent / "src", HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from train import bench_config  # noqa: E402  (benchmarks/train.py)

from segany.models.sam import Sam  # noqa: E402
from segany.train import TrainConfig  # noqa: E402
from segany.train import loop  # noqa: E402
from segany.train.data import NO_AUGMENT, to_model_frame  # noqa: E402
from segany.train.losses import mask_ious, multistep_losses  # noqa: E402
from segany.train.modes import prepare_mode  # noqa: E402
from segany.train.sampler import PromptState  # noqa: E402
from segany.train.synthetic import write_shapes_dataset  # noqa: E402


def overfit(model: Sam, steps: int, lr: float, every: int) -> None:
    """One image, box prompts, the loop's own pieces; prints the box mIoU on that image."""
    config = TrainConfig(mode="full", points=1, silent=0, box_probability=1.0, augment=NO_AUGMENT)
    prepare_mode(model, "full")
    with tempfile.TemporaryDirectory() as tmp:
        data = write_shapes_dataset(Path(tmp), 1, model.image_size, seed=1)
        frames = loop._Frames(model, loop.load_train_images(data), None, torch.device("cpu"))
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay)
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        for step in range(steps + 1):
            if step % every == 0:
                score = loop.validate(model, frames.all_plain(), config)["val_box_miou"]
                print(f"step {step:4d}  box mIoU {score:.3f}  {time.perf_counter() - start:5.1f} s", flush=True)
            embedding, masks = frames.training(0, config.augment, rng)
            loss = loop.interactive_losses(model, embedding, masks, rng, config)["core_loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def geometry(model: Sam, steps: int, lr: float, every: int, count: int = 8) -> None:
    """Box → filled box on a zero embedding; prints the batch's mIoU."""
    params = [*model.prompt_encoder.parameters(), *model.mask_decoder.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.1)
    rng = np.random.default_rng(0)
    size, grid = model.image_size, model.config.embedding_size
    embedding = torch.zeros(1, model.config.prompt_embed_dim, grid, grid)
    start = time.perf_counter()
    for step in range(steps + 1):
        corner = rng.uniform(0, 0.7 * size, (count, 2))
        side = rng.uniform(0.12 * size, 0.47 * size, (count, 2))
        boxes = np.concatenate([corner, np.minimum(corner + side, size - 1)], 1).astype(np.float32)
        masks = np.zeros((count, size, size), bool)
        for mask, (x0, y0, x1, y1) in zip(masks, boxes.round().astype(int)):
            mask[y0:y1 + 1, x0:x1 + 1] = True
        state = PromptState(np.zeros((count, 0, 2), np.float32), np.zeros((count, 0), np.int64), boxes)
        low, iou, _ = loop.decode(model, (embedding,), state, None, False)
        high, truth = loop._upsample(low, size), torch.from_numpy(masks)
        if step % every == 0:
            score = float(mask_ious(high.detach(), truth[:, None]).mean())
            print(f"step {step:4d}  box mIoU {score:.3f}  {time.perf_counter() - start:5.1f} s", flush=True)
        loss = multistep_losses([(high, iou, None)], truth)["core_loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def speed(model: Sam, steps: int, lr: float, every: int, batches: tuple[int, ...] = (1,),
          precisions: tuple[bool, ...] = (False, True)) -> None:
    """Full-mode steps and images per second (after 5 warm-up steps) on 30 shapes images, for each
    ``images_per_step`` in ``batches``, fp32 (and bf16 autocast)."""
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        images = loop.load_train_images(write_shapes_dataset(Path(tmp), 30, model.image_size, seed=1))
        for batch in batches:
            for bf16 in precisions:
                model.load_state_dict(initial)
                config = TrainConfig(mode="full", points=0, silent=0, bf16=bf16, images_per_step=batch)
                prepare_mode(model, "full")
                frames = loop._Frames(model, images, None, torch.device("cpu"))
                optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay, fused=True)
                rng = np.random.default_rng(0)
                losses = []
                for step in range(steps + 5):
                    if step == 5:
                        start = time.perf_counter()
                    indices = [(step * batch + i) % len(images) for i in range(batch)]
                    with loop._autocast(config):
                        features, masks, image_of = frames.training_step(indices, rng, config)
                        loss = loop.interactive_losses(model, features, masks, rng, config, image_of)["core_loss"]
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    losses.append(float(loss.detach()))
                rate = steps / (time.perf_counter() - start)
                print(f"images_per_step={batch} bf16={bf16}: {rate:.2f} steps/s, {rate * batch:.1f} images/s; mean loss "
                      f"of the first / last 10 steps {np.mean(losses[:10]):.3f} / {np.mean(losses[-10:]):.3f}", flush=True)


def ceiling(model: Sam, steps: int, lr: float, every: int) -> None:
    """Box mIoU of the held-out set's own masks, area-downsampled to the low-res side and upsampled back."""
    with tempfile.TemporaryDirectory() as tmp:
        images = loop.load_train_images(write_shapes_dataset(Path(tmp), 40, model.image_size, seed=2))
        truth = torch.from_numpy(np.concatenate([
            to_model_frame(*image.load(), model.image_size)[1] for image in images])).float()[:, None]
    for side in sorted({model.config.low_res_size, model.config.embedding_size, 2 * model.config.embedding_size}):
        logits = (torch.nn.functional.interpolate(truth, (side, side), mode="area") - 0.5) * 10
        score = float(mask_ious(loop._upsample(logits, model.image_size), truth).mean())
        print(f"{side}x{side} perfect mask upsampled to {model.image_size}: box mIoU ceiling {score:.3f}"
              + (" (the model's low-res mask)" if side == model.config.low_res_size else ""), flush=True)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def errors(model: Sam, checkpoint: Path, size_bins: tuple[float, ...] = (0.01, 0.03, 0.1)) -> None:
    """A trained model's held-out box IoU per object-size bin (area / image area), next to the 16x16 token-grid
    ceiling of the same objects, and the share of its error pixels within 2 px of the true boundary."""
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    rows = []
    grid = model.config.embedding_size
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        images = loop.load_train_images(write_shapes_dataset(Path(tmp), 40, model.image_size, seed=2))
        frames = loop._Frames(model, images, None, torch.device("cpu"))
        for features, masks in frames.all_plain():
            n = len(masks)
            state = PromptState(np.zeros((n, 0, 2), np.float32), np.zeros((n, 0), np.int64),
                                np.stack([loop.mask_box(m) for m in masks]))
            low, _, _ = loop.decode(model, features, state, None, False)
            predicted = loop._upsample(low, model.image_size)[:, 0] > 0
            truth = torch.from_numpy(masks)
            coarse = torch.nn.functional.interpolate(truth[:, None].float(), (grid, grid), mode="area")
            at_grid = loop._upsample((coarse - 0.5) * 10, model.image_size)[:, 0] > 0
            for pred, cell, gt in zip(predicted.numpy(), at_grid.numpy(), masks):
                band = cv2.morphologyEx(gt.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((5, 5), np.uint8)) > 0
                wrong = pred != gt
                rows.append((gt.mean(), _iou(pred, gt), _iou(cell, gt), wrong.sum(), (wrong & band).sum()))
    table = np.array(rows, dtype=np.float64)
    edges = (0.0, *size_bins, 1.01)
    print(f"all {len(table)} objects: box IoU {table[:, 1].mean():.3f}, token-grid ceiling {table[:, 2].mean():.3f}, "
          f"error pixels within 2 px of the boundary {table[:, 4].sum() / max(table[:, 3].sum(), 1):.0%}")
    for lo, hi in itertools.pairwise(edges):
        part = table[(table[:, 0] >= lo) & (table[:, 0] < hi)]
        if len(part):
            print(f"area {lo:.0%}-{min(hi, 1):.0%}: {len(part):3d} objects, box IoU {part[:, 1].mean():.3f}, "
                  f"token-grid ceiling {part[:, 2].mean():.3f}, IoU < 0.5: {(part[:, 1] < 0.5).mean():.0%}, "
                  f"error pixels at the boundary {part[:, 4].sum() / max(part[:, 3].sum(), 1):.0%}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("probe", choices=("overfit", "geometry", "speed", "ceiling", "errors"))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--patch", type=int, default=8)
    parser.add_argument("--global-attn", default="1,3")
    parser.add_argument("--images-per-step", default="1", help="speed: comma-separated images_per_step values")
    parser.add_argument("--checkpoint", type=Path, help="errors: a trained bench model's last.pth / best.pth")
    parser.add_argument("--prompt-dim", type=int, default=64)
    parser.add_argument("--embed-dim", type=int, default=96, help="encoder width")
    parser.add_argument("--depth", type=int, default=4, help="encoder blocks")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fp32-only", action="store_true", help="speed: no bf16 autocast runs")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Sam(bench_config(args.size, patch=args.patch, prompt_dim=args.prompt_dim, embed_dim=args.embed_dim,
                             depth=args.depth,
                             global_attn=tuple(int(b) for b in args.global_attn.split(",") if b))).eval()
    probes = {"overfit": overfit, "geometry": geometry, "speed": speed, "ceiling": ceiling}
    if args.probe == "errors":
        errors(model, args.checkpoint)
    elif args.probe == "speed":
        speed(model, args.steps, args.lr, args.every, tuple(int(b) for b in args.images_per_step.split(",")),
              (False,) if args.fp32_only else (False, True))
    else:
        probes[args.probe](model, args.steps, args.lr, args.every)
    return 0


if __name__ == "__main__":
    sys.exit(main())
