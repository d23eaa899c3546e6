"""Arguments and helpers shared by several subcommands."""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

DEFAULT_MODEL = "vit_t"


def add_model_arguments(parser: argparse.ArgumentParser, default: str = DEFAULT_MODEL) -> None:
    parser.add_argument(
        "--model",
        default=default,
        help=f"zoo name (vit_t, vit_b, vit_l, vit_h, sam2.1_hiera_t/s/b+/l, sam2_hiera_t/s/b+/l), 'classic' "
        f"(no weights: GrabCut), a JSON config path, an official SAM 2 YAML config, or a transformers "
        f"save_pretrained folder (default {default})",
    )
    parser.add_argument("--checkpoint", default=None, help="weights file (default: the zoo's, downloaded and cached)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")


def number_type(kind: type = int, minimum: float = 1, exclusive: bool = False) -> Callable[[str], int | float]:
    """An argparse ``type``: the text as ``kind`` (int or float), finite and at least ``minimum``
    (above it with ``exclusive``), else a message saying what was expected."""
    noun = "a whole number" if kind is int else "a number"
    bound = f"more than {minimum}" if exclusive else f"at least {minimum}"

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {noun}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (exclusive and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value
    return parse


def max_pixels_type(text: str) -> int | None:
    """``--max-pixels``: a positive pixel count, or 0 for no limit."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"--max-pixels must be a pixel count (0: no limit), got {text!r}")
    return value or None


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    from ..data.images import DEFAULT_MAX_PIXELS

    parser.add_argument("--max-pixels", type=max_pixels_type, default=DEFAULT_MAX_PIXELS, metavar="N",
                        help=f"refuse images with more pixels than this, from their header (default {DEFAULT_MAX_PIXELS:,}; 0: no limit)")


def available_devices() -> list[str]:
    """The torch devices this machine has: ``cpu``, then ``cuda:0``... and ``mps`` where present."""
    import torch

    devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def check_device(text: str) -> str:
    """``text`` if it names a torch device this machine has, else :class:`BackendError` saying which it has."""
    import torch

    from ..errors import BackendError

    available = available_devices()
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise BackendError(f"unknown device {text!r}: this machine has {', '.join(available)}") from None
    if device.type == "cpu":
        return text
    module = getattr(torch, device.type, None)
    usable = device.type == "mps" and torch.backends.mps.is_available()
    if device.type != "mps" and callable(getattr(module, "is_available", None)) and module.is_available():
        usable = device.index is None or device.index < module.device_count()
    if not usable:
        raise BackendError(f"device {text!r} is not available: this machine has {', '.join(available)}")
    return text


def load_model_from_args(args: argparse.Namespace, fallback_to_classic: bool = True):
    """The model named by ``--model/--checkpoint/--device``.

    With ``fallback_to_classic``, when the default model's weights are neither cached nor
    downloadable and no ``--checkpoint`` was given, the weight-free classic engine stands in, said
    in one line on stderr, so a fresh offline machine still segments.
    """
    from ..build import load_model
    from ..errors import WeightsUnavailableError

    check_device(args.device)
    try:
        return load_model(args.model, checkpoint=args.checkpoint, device=args.device)
    except WeightsUnavailableError:
        if not fallback_to_classic or args.checkpoint is not None or args.model != DEFAULT_MODEL:
            raise
    info(f"segany: no {args.model} weights cached or downloadable; using the weight-free classic engine (--model classic)")
    return load_model("classic")


def checkpoint_sha256(args: argparse.Namespace) -> str | None:
    """sha256 of the weights file the model was loaded from (hashed once per run); None: no weights
    (the classic engine, also when it stood in for a zoo model whose weights are not cached)."""
    from ..registry import MODELS
    from ..weights import cached_path, sha256_of

    if args.checkpoint is not None:
        return sha256_of(Path(args.checkpoint))
    if args.model in MODELS and (path := cached_path(MODELS[args.model])).is_file():
        return sha256_of(path)
    return None


def info(message: str) -> None:
    """A one-line status message for a person, on stderr so stdout stays machine-readable."""
    print(message, file=sys.stderr)
