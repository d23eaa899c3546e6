"""Arguments and helpers shared by several subcommands."""
from __future__ import annotations

import argparse
import sys

DEFAULT_MODEL = "vit_t"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"zoo name (vit_t, vit_b, vit_l, vit_h) or a JSON config path (default {DEFAULT_MODEL})",
    )
    parser.add_argument("--checkpoint", default=None, help="weights file (default: the zoo's, downloaded and cached)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")


def load_model_from_args(args: argparse.Namespace):
    """The model named by ``--model/--checkpoint/--device``."""
    from ..build import load_model

    return load_model(args.model, checkpoint=args.checkpoint, device=args.device)


def info(message: str) -> None:
    """A one-line status message for a person, on stderr so stdout stays machine-readable."""
    print(message, file=sys.stderr)
