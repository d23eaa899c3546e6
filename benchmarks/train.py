"""Proof that ``segany train`` learns: a small SAM from random initialisation on seeded procedural shapes.

Trains each mode (``full``, ``decoder`` on the random encoder, ``lora``) on the same generated training
set and reports the held-out mIoU from one ground-truth box and from one centre point, before and after,
with the curves (``curves.png``) of every run folder. CPU, one thread per run (the machine is shared):

    PYTHONPATH=src python benchmarks/train.py --out benchmarks/results/train
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

from segany.models.config import SamConfig, ViTConfig
from segany.models.sam import Sam
from segany.train import TrainConfig, train
from segany.train.loop import evaluate_model
from segany.train.synthetic import write_shapes_dataset


def bench_config(size: int) -> SamConfig:
    """A small SAM: 4-block ViT (dim 96, patch 8: a 16x16 grid at 128 px), 64-wide prompt encoder / decoder."""
    encoder = ViTConfig(96, 4, 4, (1, 3), window_size=8, img_size=size, patch_size=8, out_chans=64)
    return SamConfig(name=f"bench_sam_{size}", encoder=encoder, prompt_embed_dim=64, mask_in_chans=8,
                     decoder_mlp_dim=256, decoder_num_heads=4, iou_head_hidden_dim=64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--train-images", type=int, default=250)
    parser.add_argument("--val-images", type=int, default=40)
    parser.add_argument("--modes", default="full,decoder,lora")
    parser.add_argument("--epochs", default="4,6,3", help="epochs per mode, in --modes order")
    parser.add_argument("--lr", type=float, default=3e-4, help="AdamW peak learning rate")
    parser.add_argument("--points", type=int, default=1, help="error-region points per object (the paper: 8; 1 for CPU time)")
    parser.add_argument("--silent", type=int, default=0, help="iterations without a new point (the paper: 2)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = write_shapes_dataset(args.out / "data" / "train", args.train_images, args.size, seed=1)
    held_out = write_shapes_dataset(args.out / "data" / "val", args.val_images, args.size, seed=2)
    rows = []
    for mode, epochs in zip(args.modes.split(","), map(int, args.epochs.split(","))):
        config = TrainConfig(mode=mode, epochs=epochs, lr=args.lr, points=args.points, silent=args.silent,
                             warmup_steps=50, seed=0)
        torch.manual_seed(0)
        model = Sam(bench_config(args.size)).eval()
        before = evaluate_model(model, held_out, config)
        start = time.perf_counter()
        result = train(model, data, args.out / mode, config, val=held_out, progress=False, resume=False)
        seconds = time.perf_counter() - start
        after = result.metrics[-1]
        rows.append({"mode": mode, "epochs": epochs, "seconds": round(seconds, 1),
                     "box_before": before["val_box_miou"], "box_after": after["val_box_miou"],
                     "point_before": before["val_point_miou"], "point_after": after["val_point_miou"],
                     "curves": str(args.out / mode / "curves.png")})
        print(json.dumps(rows[-1]), flush=True)
    print("\n| mode | epochs | train s | box mIoU before → after | point mIoU before → after |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['epochs']} | {r['seconds']:.0f} | {r['box_before']:.3f} → {r['box_after']:.3f} "
              f"| {r['point_before']:.3f} → {r['point_after']:.3f} |")
    (args.out / "summary.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
