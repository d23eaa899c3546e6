"""``segany train``: fine-tune SAM / MobileSAM / SAM 2 (image) on your masks (SAM's interactive recipe) into a run folder
whose ``best.pth`` / ``last.pth`` are official-format checkpoints."""
from __future__ import annotations

import argparse

from .common import check_device, info, number_type


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="fine-tune a model on a COCO file or an images/ + masks/ folder (decoder, lora or full)",
        description="SAM's interactive training: a box or point first prompt, then points from the error region, "
                    "the previous logits fed back; focal + dice (20:1) and IoU losses. Writes last.pth / best.pth "
                    "(official checkpoint format), config.json, metrics.jsonl, curves.png and trained_on.json to -o. "
                    "Rerun the same command to resume after an interruption.")
    parser.add_argument("--model", required=True, metavar="NAME|CONFIG",
                        help="zoo name (vit_t, vit_b, sam2.1_hiera_t, ...), a JSON config or an official SAM 2 YAML; a config without --checkpoint starts from random init")
    parser.add_argument("--checkpoint", default=None, help="starting weights (default: the zoo's for a zoo name)")
    parser.add_argument("--data", required=True, metavar="COCO.json|DIR", help="training objects: COCO instances file or images/ + masks/ folder")
    parser.add_argument("--images", default=None, metavar="DIR",
                        help="folder the COCO files' image names are relative to (default: beside the file; "
                             "for `segany everything -o OUT --format coco`: its input folder)")
    parser.add_argument("--val", default=None, metavar="COCO.json|DIR", help="validation objects (best.pth by their box mIoU)")
    parser.add_argument("--mode", choices=("decoder", "lora", "full"), default="decoder",
                        help="decoder: frozen encoder, features cached on disk; lora: adapters on the encoder's attention; "
                             "full: every weight (default decoder)")
    parser.add_argument("-o", "--out", required=True, metavar="RUN_DIR", help="run folder")
    parser.add_argument("--epochs", type=number_type(int, 1), default=10)
    parser.add_argument("--lr", type=number_type(float, 0, exclusive=True), default=1e-4, help="AdamW peak learning rate (default 1e-4)")
    parser.add_argument("--encoder-lr-scale", type=number_type(float, 0, exclusive=True), default=1.0, metavar="S",
                        help="lora/full: the image encoder's lr as S times --lr (default 1: the same)")
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--warmup", type=number_type(int, 0), default=None, metavar="STEPS", help="linear warm-up steps (default min(250, 10%%))")
    parser.add_argument("--points", type=number_type(int, 0), default=8, help="error-region points per object after the first prompt (default 8)")
    parser.add_argument("--silent", type=number_type(int, 0), default=2, help="iterations without a new point (default 2)")
    parser.add_argument("--box-noise", type=number_type(float, 0), default=0.1, metavar="F",
                        help="first boxes' noise: std as a fraction of the side, at most 20 px (default 0.1, SAM's; "
                             "0: the exact boxes, e.g. for training on a detector's boxes)")
    parser.add_argument("--both-prompts", action="store_true",
                        help="simulate every object from its box and from a point each step (default: one of the two at random)")
    parser.add_argument("--max-objects", type=number_type(int, 1), default=16, help="objects per image per step (default 16)")
    parser.add_argument("--lora-rank", type=number_type(int, 1), default=4)
    parser.add_argument("--no-augment", action="store_true", help="no flips or scale jitter")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute encoder blocks in backward (lora/full)")
    parser.add_argument("--restart", action="store_true", help="ignore a previous run's state in RUN_DIR instead of resuming")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..train import TrainConfig, train
    from ..train.data import NO_AUGMENT, Augment

    config = TrainConfig(
        mode=args.mode, epochs=args.epochs, lr=args.lr, encoder_lr_scale=args.encoder_lr_scale,
        weight_decay=args.weight_decay, warmup_steps=args.warmup,
        points=args.points, silent=args.silent, box_noise=args.box_noise, both_prompts=args.both_prompts,
        max_objects=args.max_objects,
        seed=args.seed, bf16=args.bf16,
        gradient_checkpointing=args.gradient_checkpointing, lora_rank=args.lora_rank, lora_alpha=float(args.lora_rank),
        augment=NO_AUGMENT if args.no_augment else Augment(), device=check_device(args.device))
    result = train(args.model, args.data, args.out, config, val=args.val, checkpoint=args.checkpoint,
                   progress=not args.quiet, resume=not args.restart, image_dir=args.images)
    last = result.metrics[-1] if result.metrics else {}
    info(f"segany: trained {len(result.trained)} tensors ({args.mode}); last epoch {last}; checkpoints in {result.out_dir}")
    print(result.best if result.best.is_file() else result.last)
    return 0
