"""Probes of the video tracker's cross-attention at 1024 px (issue 13): can exact float32 attention over the
memories get below the matmul floor the fast path is at? Each variant is timed on one layer's shapes
(4096 queries, 7 memory frames of 4096 tokens, rotary positions on a 64 x 64 grid, 256-wide keys, 64-wide
values: the golden tiny SAM 2.1 at 1024 px) with seeded random tensors, and compared with the fast path:

- ``tiles``: ``video.fast_memory``'s tiled online softmax (Q K^T at 256 multiply-adds per score).
- ``axial``: the rotation factorised. A key is ``R_s (W z_s + b)`` with ``z_s`` 64 wide and ``R_s`` the
  axial rotation of grid cell s = (x, y): its first half of the pairs turns with x only, the second with y
  only. So ``q . R_s (W z_s + b) = z'_s . A[q, x_s] + z'_s . B[q, y_s]`` with ``z' = [z, 1]`` and
  ``A[q, x] = q_X (R_x [W | b])_X`` computed once per frame for the 64 columns (``B`` for the rows): 2 x 65
  multiply-adds per score instead of 256, plus the per-frame ``A``, ``B``. Exact algebra (checked), but the
  two terms are matmuls with K = 65 whose outputs must be added across layouts: with PyTorch's kernels
  they are bound by writing the scores, not by the multiply-adds.
- ``bf16x3``: Q K^T as bf16 hi / lo splits (``q_hi k_hi + q_hi k_lo + q_lo k_hi``, one K = 768 matmul,
  float32 accumulation through oneDNN's ``fp32_precision = "bf16"``): AMX-BF16 speed at ~16-bit accuracy.

::

    PYTHONPATH=src python benchmarks/attention_probe.py [--grid 64] [--block 256] [--repeat 3]
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

from segany.models.position_encoding import compute_axial_cis
from segany.video.fast_memory import LOG2_E, MemoryConditioner

DIM, MEM_DIM, MEMORIES = 256, 64, 7


def rotate(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """(N, d) rows rotated at grid positions 0..N-1 (SAM 2's ``apply_rotary_enc``)."""
    pairs = torch.view_as_complex(x.reshape(x.shape[0], -1, 2).contiguous())
    return torch.view_as_real(pairs * freqs[: x.shape[0]]).flatten(1)


class Layer:
    """One cross-attention layer's inputs: rotated scaled queries, memory tokens ``z`` (the k_proj input),
    values (the 64-wide memory), the key projection ``W``, ``b``."""

    def __init__(self, grid: int) -> None:
        torch.manual_seed(0)
        self.grid, n = grid, grid * grid
        self.freqs = compute_axial_cis(DIM, grid, grid)
        self.w, self.b = torch.randn(DIM, MEM_DIM) * 0.1, torch.randn(DIM) * 0.1
        self.q = rotate(torch.randn(n, DIM), self.freqs) * DIM ** -0.5
        self.z = [torch.randn(n, MEM_DIM) for _ in range(MEMORIES)]
        self.values = [torch.randn(n, MEM_DIM) for _ in range(MEMORIES)]
        self.keys = torch.cat([rotate(z @ self.w.t() + self.b, self.freqs) for z in self.z])

    def tiles(self) -> torch.Tensor:
        """The fast path's tiled attention: (N, mem_dim)."""
        out = torch.empty(1, *self.q.shape[:1], MEM_DIM)
        conditioner = MemoryConditioner.__new__(MemoryConditioner)
        conditioner._scores = []
        # the fast path's scores are in base 2: its queries come scaled by log2 e
        conditioner._attend_tiles(self.q[None] * LOG2_E, self.keys.t()[None], torch.cat(self.values), out)
        return out[0]

    def axial_constants(self) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """(128, G*65) column and row maps, each memory's [z, 1] laid out (x, y, 65) and (y, x, 65)."""
        g, half = self.grid, DIM // 4
        w = torch.view_as_complex(torch.cat([self.w, self.b[:, None]], 1).t().reshape(MEM_DIM + 1, -1, 2).contiguous())
        fx, fy = self.freqs[:g, :half], self.freqs[::g][:g, half:]
        cols = torch.view_as_real(w[None, :, :half] * fx[:, None]).flatten(2).reshape(g * (MEM_DIM + 1), -1).t().contiguous()
        rows = torch.view_as_real(w[None, :, half:] * fy[:, None]).flatten(2).reshape(g * (MEM_DIM + 1), -1).t().contiguous()
        by_row = [torch.cat([z, torch.ones(len(z), 1)], 1).view(g, g, MEM_DIM + 1) for z in self.z]
        by_col = [z.permute(1, 0, 2).contiguous() for z in by_row]
        return cols, rows, by_col, by_row

    def axial(self, block: int) -> torch.Tensor:
        """The factorised attention (module docstring), online softmax over the memories: (N, mem_dim)."""
        g, n, half = self.grid, self.grid * self.grid, DIM // 2
        cols, rows, by_col, by_row = self.axial_constants()
        out = torch.empty(n, MEM_DIM)
        for start in range(0, n, block):
            q = self.q[start:start + block]
            a = (q[:, :half] @ cols).view(-1, g, MEM_DIM + 1).permute(1, 2, 0)  # (x, 65, I)
            b = (q[:, half:] @ rows).view(-1, g, MEM_DIM + 1).permute(1, 2, 0)  # (y, 65, I)
            acc, top, total = out[start:start + block], None, None
            for zc, zr, v in zip(by_col, by_row, self.values):
                scores = torch.bmm(zr, b).add_(torch.bmm(zc, a).transpose(0, 1)).view(n, -1)  # (keys, I)
                tile_top = scores.amax(dim=0)
                if top is not None:
                    grown = torch.maximum(top, tile_top)
                    scale = (top - grown).exp_()
                    total.mul_(scale)
                    acc.mul_(scale[:, None])
                    tile_top = grown
                top = tile_top
                scores.sub_(top).exp_()
                if total is None:
                    total = scores.sum(dim=0)
                    torch.mm(scores.t(), v, out=acc)
                else:
                    total.add_(scores.sum(dim=0))
                    acc.addmm_(scores.t(), v)
            acc.div_(total[:, None])
        return out

    def qk_float32(self, rows: int, keys: int) -> Callable[[], torch.Tensor]:
        q, k = self.q[:rows].contiguous(), self.keys[:keys].t().contiguous()
        return lambda: q @ k

    def qk_bf16x3(self, rows: int, keys: int) -> Callable[[], torch.Tensor]:
        """The split product; the splits are made before (keys: once per memory, queries: once per frame)."""
        def split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            hi = x.to(torch.bfloat16).float()
            return hi, (x - hi).to(torch.bfloat16).float()

        (qh, ql), (kh, kl) = split(self.q[:rows]), split(self.keys[:keys])
        q3, k3 = torch.cat([qh, qh, ql], 1), torch.cat([kh, kl, kh], 1).t().contiguous()

        def product() -> torch.Tensor:
            precision = torch.backends.mkldnn.matmul.fp32_precision
            torch.backends.mkldnn.matmul.fp32_precision = "bf16"
            try:
                return q3 @ k3
            finally:
                torch.backends.mkldnn.matmul.fp32_precision = precision

        return product


def best_time(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", type=int, default=64, help="memory grid side (64: 1024 px input)")
    parser.add_argument("--block", type=int, default=256, help="queries per block of the axial variant")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    layer = Layer(args.grid)
    with torch.inference_mode():
        reference = layer.tiles()
        axial = layer.axial(args.block)
        diff, scale = (axial - reference).abs().max().item(), reference.abs().max().item()
        print(f"axial vs tiles: max |d| {diff:.2e} (outputs up to {scale:.3f})")
        if diff > 1e-5 * scale:  # two formulations of one attention: timing them means nothing unless they agree
            print("the axial and tiled attentions differ: not timed")
            return 1
        t_tiles = best_time(layer.tiles, args.repeat)
        t_axial = best_time(lambda: layer.axial(args.block), args.repeat)
        print(f"one layer: tiles {t_tiles:.3f} s, axial {t_axial:.3f} s ({t_tiles / t_axial:.2f}x)")
        rows, keys = min(1024, len(layer.q)), min(4096, len(layer.keys))
        exact = layer.q[:rows].double() @ layer.keys[:keys].double().t()
        for name, make in (("float32", layer.qk_float32), ("bf16x3", layer.qk_bf16x3)):
            product = make(rows, keys)
            err = (product().double() - exact).abs().max().item()
            seconds = best_time(lambda product=product: [product() for _ in range(10)], args.repeat) / 10
            print(f"Q K^T tile {rows}x{keys}x{DIM} {name}: {2 * rows * keys * DIM / seconds / 1e9:.0f} GFLOP/s "
                  f"(of float32 work), max |d| vs float64 {err:.1e} (scores up to {exact.abs().max().item():.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
