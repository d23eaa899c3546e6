"""The ``segany`` command: argument parsing, progress and messages; the work lives in the library.

Each subcommand is a module of this package with a ``register(subparsers)`` function that adds
its parser and sets ``handler``; heavy imports happen inside the handlers so ``--help`` is fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import SeganyError

COMMANDS = ("segment", "models", "serve", "everything", "embed", "label", "eval", "export", "track", "inpaint", "train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segany", description="Segment Anything, complete and fast.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except SeganyError as exc:
        print(f"segany: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("segany: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
