"""Arguments and helpers shared by several subcommands."""
from __future__ import annotations

import argparse
import sys

DEFAULT_MODEL = "vit_t"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"zoo name (vit_t, vit_b, vit_l, vit_h), 'classic' (no weights: GrabCut), a JSON config path "
        f"or a transformers save_pretrained folder (default {DEFAULT_MODEL})",
    )
    parser.add_argument("--checkpoint", default=None, help="weights file (default: the zoo's, downloaded and cached)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")


def load_model_from_args(args: argparse.Namespace, fallback_to_classic: bool = True):
    """The model named by ``--model/--checkpoint/--device``.

    With ``fallback_to_classic``, when the default model's weights are neither cached nor
    downloadable and no ``--checkpoint`` was given, the weight-free classic engine stands in, said
    in one line on stderr, so a fresh offline machine still segments.
    """
    from ..build import load_model
    from ..errors import WeightsUnavailableError

    try:
        return load_model(args.model, checkpoint=args.checkpoint, device=args.device)
    except WeightsUnavailableError:
        if not fallback_to_classic or args.checkpoint is not None or args.model != DEFAULT_MODEL:
            raise
    info(f"segany: no {args.model} weights cached or downloadable; using the weight-free classic engine (--model classic)")
    return load_model("classic")


def info(message: str) -> None:
    """A one-line status message for a person, on stderr so stdout stays machine-readable."""
    print(message, file=sys.stderr)
