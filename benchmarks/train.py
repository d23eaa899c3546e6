"""Proof that ``segany train`` learns: a small SAM from random initialisation on seeded procedural shapes.

Trains each mode (``full``, ``decoder`` on the random encoder, ``lora``) on the same generated training
set and reports the held-out mIoU from one ground-truth box and from one centre point, before and after,
with the curves (``curves.png``) of every run folder. CPU, one thread per run (the machine is shared):

    PYTHONPATH=src python benchmarks/train.py --out benchmarks/results/train

The recipe is SAM's (focal + dice, IoU MSE, box or point first prompt at random, AdamW, warm-up,
x0.1 decays at 2/3 and 26/27) with what a random-init model on a shared CPU needs, each a flag: a 100-step
warm-up, ``--points 0 --silent 0``: the first prompt only, no error-point iterations (each costs a decoder
pass and its backward: with ``--points 1`` a step took 2-3x longer here). The best run so far adds (see
benchmarks/RESULTS.md): ``--mask-weight 1`` (focal:dice 1:1 instead of SAM's 20:1 — with 20:1 the random-init
decoder sits ~1500-2000 steps in an empty-mask plateau, with 1:1 it has left it after one 500-step epoch)
and ``--decoder-first 3 --decoder-lr 2e-3 --lr 5e-4``: a warm start of decoder-mode epochs on the frozen
random encoder (cached features, constant lr, no decay) inside the timed run, then full mode at a lower lr.
Variants that did not help stay as flags: ``--focal-alpha -1`` (no class weighting in the focal term),
``--neck-scale 0.05`` (the encoder's last LayerNorm starts small), ``--prompts 4`` (each object four times
per step: the decoder's cost grew ~2.5x a step, the mIoU per epoch did not). The 2026-12-02 runs
(RESULTS.md): with the fused AdamW of the loop a step is ~20 % cheaper, so the 15 minutes hold 19 full
epochs; ``--decay-at 3/4,19/20`` decays later than SAM's 2/3. Probed and not kept (flags stay): ``--bf16``
(slower on this model: its ops are too small for AMX to pay for the casts), ``--patch 4`` (a 32x32 grid;
more per step, 4x slower a step) and its ``--global-attn`` variants. More than the 500 training images is
not what is missing: the trained model's box mIoU on training images equals the held-out one (it underfits).
Batched steps (2026-12-02, RESULTS.md "batched steps"): ``--images-per-step 4 --lr 1e-3`` (four images per
step, one encoder batch, all their objects decoded together; 1.4x the images per second of one image a step
at one thread, and the less noisy gradient takes twice the full-phase lr) gave 0.622 box mIoU where one image
a step gave 0.510 at about the same wall time (3 + 5-7 epoch probes). Probed and not kept: 8 images a step
(too few steps), 2 a step, a decoder-first phase of one image a step, lr 1.5e-3 / 2e-3 (with grad clipping),
a decoder-first lr of 4e-3 (back into the empty-mask plateau), a cosine schedule.
``--family sam2`` (2026-12-02, fourth session): SAM 2.1's image path at 128 px with a 128-wide decoder
(``--prompt-dim 128``) learns only at a lower lr than the 64-wide ViT SAM (``--decoder-lr 6e-4 --lr 4e-4``;
at 2e-3 / 1e-3 its loss sits at ~0.83 and a 16-image overfit rises again after 400 steps); with them it
reaches the ViT's box mIoU in about half the time (its 8x8 grid is cheap, the stride-4 / stride-8 maps
give the decoder the detail). At 128 px: 0.770 box / 0.717 point mIoU in 821 s at two threads (``--epochs 32
--embed-dim 48``). The best run inside the 15 minutes (2026-12-03; 0.814 box / 0.736 point mIoU, 888 s at two
threads) is at 192 px, a 12x12 grid: ``--modes full --epochs 28 --decoder-first 3 --decoder-lr 6e-4 --lr 4e-4
--images-per-step 4 --mask-weight 1 --dice-weight 1 --decay-at 3/4,19/20 --threads 2 --both-prompts --family
sam2 --size 192 --embed-dim 32 --prompt-dim 128``. Probed and not kept: ``--encoder-lr-scale 2.5`` / ``5``
(Hiera at a higher lr than the decoder: no better per epoch), ``--stages 1,2,4,1``, 224 and 256 px, width 48
at 192 px (no better, slower). Probed at 192 px and 24 epochs (2026-12-03, sixth session; all end at 0.80-0.82):
``--box-noise 0`` (exact training boxes), ``--decay-at 7/8``, ``--scale-jitter 1,1``, ``--windows 8,4,6,6`` and
``8,4,12,6`` (Hiera windows that tile the 12x12 stage-3 grid), ``--focal-alpha -1``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

from segany.models.config import HieraConfig, SamConfig, TinyViTConfig, ViTConfig
from segany.models.sam import Sam
from segany.models.sam2 import Sam2, build_sam2
from segany.models.sam2.config import (MemoryAttentionConfig, MemoryEncoderConfig, RoPEAttentionConfig, Sam2Config,
                                       SinePositionConfig)
from segany.train import TrainConfig, train
from segany.train.data import Augment
from segany.train.loop import evaluate_model
from segany.train.losses import LossWeights
from segany.train.synthetic import write_shapes_dataset


def bench_config(size: int, patch: int = 8, embed_dim: int = 96, depth: int = 4,
                 global_attn: tuple[int, ...] = (1, 3), window: int = 8, prompt_dim: int = 64,
                 tinyvit: tuple[int, ...] | None = None) -> SamConfig:
    """A small SAM: by default a 4-block ViT (dim 96, patch 8: a 16x16 grid at 128 px, global attention in
    blocks 1 and 3, 8x8 windows elsewhere), 64-wide prompt encoder / decoder (MLP 4x). ``tinyvit``: instead
    MobileSAM's TinyViT with these four stage widths, the last 320 (MobileSAM's stride-1 last merging): the
    conv stem and one MBConv block at stride 4, one attention block at stride 8, two at 16, then only the
    merging to the last width (no blocks); a 16x16 grid at 256 px."""
    if tinyvit:
        grid = size // 16
        encoder = TinyViTConfig(embed_dims=tuple(tinyvit), depths=(1, 1, 2, 0),
                                num_heads=tuple(max(1, d // 32) for d in tinyvit),
                                window_sizes=(grid // 2, grid, grid, grid), img_size=size, out_chans=prompt_dim)
    else:
        encoder = ViTConfig(embed_dim, depth, 4, global_attn, window_size=window, img_size=size, patch_size=patch,
                            out_chans=prompt_dim)
    return SamConfig(name=f"bench_sam_{size}", encoder=encoder, prompt_embed_dim=prompt_dim, mask_in_chans=8,
                     decoder_mlp_dim=4 * prompt_dim, decoder_num_heads=4, iou_head_hidden_dim=64)


def bench_model(size: int, neck_scale: float = 1.0, **shape: Any) -> Sam:
    """:func:`bench_config`'s model (``shape``: its keyword arguments), seeded random init; the encoder's last
    LayerNorm scaled by ``neck_scale``."""
    torch.manual_seed(0)
    model = Sam(bench_config(size, **shape)).eval()
    with torch.no_grad():
        model.image_encoder.neck[-1].weight.fill_(neck_scale)
    return model


def bench_sam2_config(size: int, embed_dim: int = 32, stages: tuple[int, ...] = (1, 2, 2, 1),
                      prompt_dim: int = 64, windows: tuple[int, ...] = (8, 4, 8, 8)) -> Sam2Config:
    """A small SAM 2.1 image model: a 4-stage Hiera of width ``embed_dim`` (strides 4 / 8 / 16 / 32, 8x8
    windows but 4x4 in stage 2, the last block of stage 3 global), the FPN neck and the mask decoder at
    ``prompt_dim`` with SAM 2.1's high-resolution features (stride 4 and 8 maps added in the decoder's
    upscaling), object-score head and sigmoid IoU; a one-layer memory attention / encoder (not on the
    image path, untrained). At 256 px the decoder's grid is 16x16, as :func:`bench_config`'s at 128 px.
    The official decoder's 8 heads and 2048-wide MLP are fixed, so its width sets its learning rate: 128
    wide trains at ~4e-4, 256 at ~2e-4 (AdamW); the ViT SAM's 1e-3 stalls both."""
    blocks = sum(stages)
    encoder = HieraConfig(embed_dim=embed_dim, stages=stages, global_att_blocks=(blocks - stages[-1] - 1,),
                          window_spec=windows, window_pos_embed_bkg_spatial_size=(4, 4),
                          backbone_channel_list=tuple(embed_dim * 2 ** i for i in range(len(stages)))[::-1],
                          d_model=prompt_dim, position_num_pos_feats=prompt_dim, img_size=size)
    grid = (size // 16, size // 16)
    attention = RoPEAttentionConfig(embedding_dim=prompt_dim, feat_sizes=grid)
    memory = MemoryAttentionConfig(d_model=prompt_dim, num_layers=1, dim_feedforward=2 * prompt_dim,
                                   self_attention=attention,
                                   cross_attention=replace(attention, rope_k_repeat=True, kv_in_dim=prompt_dim // 4))
    return Sam2Config(name=f"bench_sam2_{size}", encoder=encoder, memory_attention=memory,
                      memory_encoder=MemoryEncoderConfig(out_dim=prompt_dim // 4, in_dim=prompt_dim,
                                                         position_encoding=SinePositionConfig(prompt_dim // 4),
                                                         fuser_num_layers=1, cx_dim=prompt_dim),
                      hidden_dim=prompt_dim, image_size=size, use_high_res_features_in_sam=True,
                      multimask_output_in_sam=True, iou_prediction_use_sigmoid=True, pred_obj_scores=True,
                      pred_obj_scores_mlp=True, directly_add_no_mem_embed=True, use_obj_ptrs_in_encoder=True,
                      fixed_no_obj_ptr=True, multimask_min_pt_num=0, multimask_max_pt_num=1)


def bench_sam2_model(size: int, **shape: Any) -> Sam2:
    """:func:`bench_sam2_config`'s model, seeded random init."""
    torch.manual_seed(0)
    return build_sam2(bench_sam2_config(size, **shape))


def _ints(text: str) -> tuple[int, ...]:
    """A flag's comma-separated integers ("" gives none)."""
    return tuple(int(v) for v in text.split(",") if v)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--train-images", type=int, default=500)
    parser.add_argument("--val-images", type=int, default=40)
    parser.add_argument("--modes", default="full,decoder,lora")
    parser.add_argument("--epochs", default="7,7,4", help="epochs per mode, in --modes order")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate")
    parser.add_argument("--encoder-lr-scale", type=float, default=1.0,
                        help="full / lora phases: the image encoder's lr as a multiple of --lr (1: the same)")
    parser.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    parser.add_argument("--decay-at", default="2/3,26/27", help="x0.1 lr decays at these fractions of the steps (SAM's)")
    parser.add_argument("--points", type=int, default=0, help="error-region points per object (the paper: 8)")
    parser.add_argument("--silent", type=int, default=0, help="iterations without a new point (the paper: 2)")
    parser.add_argument("--focal-alpha", type=float, default=0.25, help="focal term's class weight (SAM: 0.25; -1: none)")
    parser.add_argument("--mask-weight", type=float, default=20.0, help="focal term's weight (SAM: 20, dice 1)")
    parser.add_argument("--dice-weight", type=float, default=1.0, help="dice term's weight (SAM: 1)")
    parser.add_argument("--box-probability", type=float, default=0.5, help="first prompt a box (else a point; SAM: 0.5)")
    parser.add_argument("--box-noise", type=float, default=0.1,
                        help="training boxes' noise: std as a fraction of the side, at most 20 px (SAM: 0.1; 0: exact)")
    parser.add_argument("--both-prompts", action="store_true",
                        help="every object from its box and from a point each step (TrainConfig.both_prompts)")
    parser.add_argument("--prompts", type=int, default=1, help="prompts per object per step (SAM: 1; the decoder is cheap)")
    parser.add_argument("--decoder-lr", type=float, default=None, help="--decoder-first phase's peak lr (default: --lr)")
    parser.add_argument("--neck-scale", type=float, default=1.0, help="initial scale of the encoder's last LayerNorm (1: plain init)")
    parser.add_argument("--decoder-first", type=int, default=0, metavar="EPOCHS",
                        help="full / lora: first this many decoder-mode epochs (cached features of the random encoder), "
                             "in the same timed run (its own folder MODE/decoder_first)")
    parser.add_argument("--family", choices=("sam", "sam2"), default="sam",
                        help="sam: bench_config's ViT SAM; sam2: bench_sam2_config's Hiera SAM 2.1 (high-res features)")
    parser.add_argument("--stages", default="1,2,2,1", help="sam2: Hiera blocks per stage")
    parser.add_argument("--windows", default="8,4,8,8",
                        help="sam2: Hiera attention window per stage (tokens a side; a window that does not divide its "
                             "stage's grid is zero-padded, as the official Hiera pads)")
    parser.add_argument("--tinyvit", default="", help="sam: a TinyViT encoder of these four stage widths (default: the ViT)")
    parser.add_argument("--patch", type=int, default=8, help="encoder patch size (8: a 16x16 grid at 128 px, 4: 32x32)")
    parser.add_argument("--embed-dim", type=int, default=96, help="encoder width")
    parser.add_argument("--depth", type=int, default=4, help="encoder blocks")
    parser.add_argument("--global-attn", default="1,3", help="encoder blocks with global attention (others: windows)")
    parser.add_argument("--window", type=int, default=8, help="encoder attention window (tokens a side)")
    parser.add_argument("--prompt-dim", type=int, default=64, help="prompt encoder / decoder width")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (TrainConfig.bf16)")
    parser.add_argument("--images-per-step", type=int, default=1,
                        help="images per step: one encoder batch, their objects decoded together (TrainConfig.images_per_step)")
    parser.add_argument("--decoder-images-per-step", type=int, default=None,
                        help="--decoder-first phase's images per step (default: --images-per-step)")
    parser.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay (SAM: 0.1)")
    parser.add_argument("--scale-jitter", default="0.75,1.25", help="augmentation: the longest side times U(LO, HI)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = write_shapes_dataset(args.out / "data" / "train", args.train_images, args.size, seed=1)
    held_out = write_shapes_dataset(args.out / "data" / "val", args.val_images, args.size, seed=2)
    rows = []
    decay_at = tuple(float(Fraction(f)) for f in args.decay_at.split(",") if f)
    shape = {"patch": args.patch, "embed_dim": args.embed_dim, "depth": args.depth, "window": args.window,
             "global_attn": _ints(args.global_attn), "prompt_dim": args.prompt_dim,
             "tinyvit": _ints(args.tinyvit) or None}
    for mode, epochs in zip(args.modes.split(","), map(int, args.epochs.split(","))):
        config = TrainConfig(mode=mode, epochs=epochs, lr=args.lr, encoder_lr_scale=args.encoder_lr_scale,
                             points=args.points, silent=args.silent,
                             warmup_steps=args.warmup, decay_at=decay_at, seed=0, weight_decay=args.weight_decay,
                             box_probability=args.box_probability, box_noise=args.box_noise,
                             both_prompts=args.both_prompts,
                             prompts_per_object=args.prompts, bf16=args.bf16,
                             images_per_step=args.images_per_step,
                             augment=Augment(scale=tuple(float(v) for v in args.scale_jitter.split(","))),
                             loss=LossWeights(mask=args.mask_weight, dice=args.dice_weight, focal_alpha=args.focal_alpha))
        if args.family == "sam2":
            model = bench_sam2_model(args.size, embed_dim=args.embed_dim, prompt_dim=args.prompt_dim,
                                     stages=_ints(args.stages), windows=_ints(args.windows))
        else:
            model = bench_model(args.size, args.neck_scale, **shape)
        before = evaluate_model(model, held_out, config)
        first = args.decoder_first if mode != "decoder" else 0
        start = time.perf_counter()
        if first:
            warm = replace(config, mode="decoder", epochs=first, lr=args.decoder_lr or args.lr, decay_at=(),
                           images_per_step=args.decoder_images_per_step or args.images_per_step)
            train(model, data, args.out / mode / "decoder_first", warm, val=held_out, progress=False, resume=False)
        result = train(model, data, args.out / mode, config, val=held_out, progress=False, resume=False)
        seconds = time.perf_counter() - start
        after = result.metrics[-1]
        best = max(m["val_box_miou"] for m in result.metrics)
        steps = first * math.ceil(args.train_images / (args.decoder_images_per_step or args.images_per_step))
        steps += epochs * math.ceil(args.train_images / args.images_per_step)
        rows.append({"mode": mode, "decoder_first": first, "epochs": epochs, "steps": steps,
                     "seconds": round(seconds, 1),
                     "box_before": before["val_box_miou"], "box_after": after["val_box_miou"], "box_best": best,
                     "point_before": before["val_point_miou"], "point_after": after["val_point_miou"],
                     "curves": str(args.out / mode / "curves.png")})
        print(json.dumps(rows[-1]), flush=True)
    print("\n| mode | steps | train s | box mIoU before → after (best epoch) | point mIoU before → after |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['steps']} | {r['seconds']:.0f} | {r['box_before']:.3f} → {r['box_after']:.3f} "
              f"({r['box_best']:.3f}) | {r['point_before']:.3f} → {r['point_after']:.3f} |")
    summary = args.out / "summary.json"  # rows of earlier runs of other modes are kept
    earlier = json.loads(summary.read_text())["rows"] if summary.is_file() else []
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    kept = [r for r in earlier if (r["mode"], r.get("decoder_first", 0)) not in {(row["mode"], row["decoder_first"]) for row in rows}]
    summary.write_text(json.dumps({"rows": kept + [{**r, "settings": settings} for r in rows]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
