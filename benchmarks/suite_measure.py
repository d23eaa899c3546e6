"""Measurement helpers of the speed suite: interleaved wall-clock timing, peak resident memory,
matmul peak throughput, FLOP counting."""
from __future__ import annotations

import ctypes
import math
import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, sdpa_flop_count

_PAGE = os.sysconf("SC_PAGE_SIZE")


def trim_memory() -> None:
    """Give freed heap memory back to the OS so the next peak-RSS reading starts clean."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock times include it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory growth during a ``with`` block: resident memory sampled every millisecond on
    CPU, the allocator's peak on CUDA."""

    def __init__(self, device: torch.device = torch.device("cpu")) -> None:
        self.device = device

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = self.peak = torch.cuda.memory_allocated(self.device)
            return self
        trim_memory()
        self.start = self.peak = resident_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, resident_bytes())

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
            return
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, resident_bytes())

    @property
    def mib(self) -> float:
        return (self.peak - self.start) / 2**20


def interleaved(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1, device: torch.device = torch.device("cpu")
) -> dict[str, list[float]]:
    """Wall-clock seconds of each function, run in turn ``repeats`` times after ``warmup`` rounds.

    Interleaving spreads background load on a shared machine evenly over the contenders.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            synchronize(device)
            samples[name].append(time.perf_counter() - start)
    return samples


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def matmul_peak(dtype: torch.dtype, device: torch.device, size: int = 4096, repeats: int = 5) -> float:
    """Best GFLOP/s of a square ``size`` matmul in ``dtype``: this machine's practical peak."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _fused_linear_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * math.prod(x_shape[:-1]) * w_shape[0] * w_shape[1]


def _fused_conv_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    return conv_flop_count(x_shape, w_shape, out_shape, transposed=False)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of ``fn()`` by ``torch.utils.flop_counter``: 2 per multiply-add of every matmul,
    convolution and attention product (elementwise ops, softmax and norms not counted). The CPU
    fused-attention kernel and oneDNN's fused linear / convolution + activation kernels are counted
    like their unfused forms."""
    mapping = {
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
        torch.ops.mkldnn._linear_pointwise: _fused_linear_flops,
        torch.ops.mkldnn._convolution_pointwise: _fused_conv_flops,
    }
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return counter.get_total_flops()


def load_average() -> float:
    return os.getloadavg()[0]
