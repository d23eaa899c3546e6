"""``segany models``: the zoo, what is cached and where."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list the model zoo and the weights cache")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..registry import MODELS, SAM2_MODELS
    from ..weights import cache_dir, cached_path

    print(f"weights cache: {cache_dir()}  (set SEGANY_HOME to move it)")
    specs = [*MODELS.values(), *SAM2_MODELS.values()]
    width = max(7, *(len(spec.name) for spec in specs))
    print(f"{'name':<{width}} {'size':>9}  {'cached':<7} description")
    for spec in specs:
        path = cached_path(spec)
        cached = "yes" if path.exists() else "no"
        print(f"{spec.name:<{width}} {spec.num_bytes / 1e6:>7.1f}MB  {cached:<7} {spec.description}")
        print(f"{'':<{width}} {spec.url} -> {path}")
    return 0
