"""The empty-mask plateau of ``benchmarks/train.py``'s random-init SAM: two small probes of it (issue 16).

``overfit``: the training pieces of :mod:`segany.train.loop` (model-frame masks, prompts, decode, losses,
validation) on ONE shapes image, box prompts, no augmentation — held-out = the same image.
``geometry``: the prompt encoder + mask decoder alone on a zero image embedding, target = the filled box
(no image content at all: only the box → mask geometry is to learn), 8 random boxes per step.
Both print the box mIoU every ``--every`` steps; one thread:

    PYTHONPATH=src python benchmarks/train_probe.py overfit --steps 200
    PYTHONPATH=src python benchmarks/train_probe.py geometry --steps 400 --lr 1e-3
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

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
from segany.train.data import NO_AUGMENT  # noqa: E402
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("probe", choices=("overfit", "geometry"))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Sam(bench_config(args.size)).eval()
    (overfit if args.probe == "overfit" else geometry)(model, args.steps, args.lr, args.every)
    return 0


if __name__ == "__main__":
    sys.exit(main())
