"""``segany models``: the zoo, what is cached and where."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list the model zoo and the weights cache")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..registry import MODELS
    from ..weights import cache_dir, cached_path

    print(f"weights cache: {cache_dir()}  (set SEGANY_HOME to move it)")
    print(f"{'name':<7} {'size':>9}  {'cached':<7} description")
    for spec in MODELS.values():
        path = cached_path(spec)
        cached = "yes" if path.exists() else "no"
        print(f"{spec.name:<7} {spec.num_bytes / 1e6:>7.1f}MB  {cached:<7} {spec.description}")
        print(f"{'':<7} {spec.url} -> {path}")
    return 0
