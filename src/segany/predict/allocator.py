"""glibc malloc settings for CPU inference on large tensors.

The decoder makes and frees tensors of a few MB per prompt. With glibc's defaults, blocks that
size are mmap'ed and unmapped each time, or the heap top is trimmed and grown again, so every new
tensor starts with page faults: a third of the decoder's time on a 2-core machine. Keeping such
blocks on the heap (mmap threshold 32 MB) and trimming only above 512 MB of free heap removes
that; the cost is up to that much freed memory kept by the process. PyTorch's CPU tuning guide
suggests swapping the allocator (jemalloc, tcmalloc) for the same reason; this needs no library.

Applied once per process when a CPU predictor is made; ``SEGANY_MALLOC=default`` leaves glibc as
it is. A no-op off glibc (macOS, Windows, musl) or where the user already set ``MALLOC_*``.
"""
from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts
TRIM_THRESHOLD = 512 << 20
_state: dict[str, bool] = {}


def tune_malloc() -> bool:
    """Set glibc's mmap and trim thresholds for this process (once); True when they are set."""
    if "tuned" in _state:
        return _state["tuned"]
    _state["tuned"] = False
    user_choice = os.environ.get("SEGANY_MALLOC") == "default" or any(k.startswith("MALLOC_") for k in os.environ)
    if user_choice or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _state["tuned"] = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _state["tuned"]
