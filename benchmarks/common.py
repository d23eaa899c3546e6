"""Shared bits of the benchmarks: the official packages beside segany, seeded random-weight
models in the official checkpoint format, timing, and result files.

Run benchmarks with the benchmark interpreter, which has the official packages
(``.venv-bench/bin/python``); segany is imported from this checkout's ``src``.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEGANY_SHARED", REPO.parent / "shared"))
RESULTS = REPO / "benchmarks" / "results"


def import_official() -> None:
    """Make ``segment_anything`` / ``mobile_sam`` importable (torchvision shim) and segany too."""
    sys.path.insert(0, str(SHARED / "reference"))
    import tv_shim

    tv_shim.install()
    if str(REPO / "src") not in sys.path:
        sys.path.insert(0, str(REPO / "src"))


def build_official(name: str, seed: int) -> torch.nn.Module:
    """The official ``name`` model (vit_t from mobile_sam, others from segment_anything) with
    default initialisation after ``torch.manual_seed(seed)``, in eval mode."""
    torch.manual_seed(seed)
    if name == "vit_t":
        from mobile_sam import sam_model_registry
    else:
        from segment_anything import sam_model_registry
    return sam_model_registry[name]().eval()


def save_checkpoint(model: torch.nn.Module, folder: Path, name: str) -> Path:
    """The model's state dict in the official checkpoint format (what segany.load_model reads)."""
    path = folder / f"{name}_random.pth"
    torch.save(model.state_dict(), path)
    return path


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and the wall-clock seconds it took."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def write_results(name: str, data: dict[str, Any]) -> Path:
    """``benchmarks/results/<name>.json`` (git-ignored), with the machine description."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=1))
    return path


def table(rows: list[list[Any]], header: list[str]) -> str:
    """A markdown table."""
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)
