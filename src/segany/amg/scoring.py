"""Exact stability scores and boxes of upscaled mask logits without upscaling every candidate.

The generator scores each candidate on its logits at the crop's size: the low-res logits
upsampled bilinearly to the padded model input, cropped to the image area, then resized to the
crop (``Sam.postprocess_masks``). Each full-size value is a convex combination of low-res values
within a 3x3 neighbourhood, so a tile of low-res cells whose neighbourhood lies entirely above
(or below) a threshold decides all of its pixels at once. Only undecided tiles are computed
exactly (for the stability counts), and undecided rows and columns outside the known extent of
the mask, from the image edges inwards, until the box edges are found. Candidates left mostly
undecided (texture-like logits) are upscaled whole. For typical masks that is a small fraction
of the pixels, and the result is the same up to float rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..masks import logit_statistics

_FLOATS_PER_CHUNK = 1 << 23  # full-size values held at once (32 MB)
_BLOCK = 4  # low-res cells per side of the tiles that bounds are taken over
_TILES_PER_CHUNK = 8192
_BRUTE_FORCE_SHARE = 0.4  # above this share of undecided pixels, upscale the whole candidate


@dataclass(frozen=True)
class AxisMap:
    """One axis, low-res → full size: 4 taps ``index``/``weight`` per output position (float32
    bilinear weights of both resize stages), the low-res ``centre`` of each position's taps (all
    within ±1 of it), and how many low-res cells are ``used`` at all."""

    index: torch.Tensor
    weight: torch.Tensor
    centre: torch.Tensor
    used: int

    @staticmethod
    def build(low: int, padded: int, valid: int, out: int) -> "AxisMap":
        """``low`` cells upsampled to ``padded``, cropped to ``valid``, resized to ``out`` (align_corners=False)."""
        r0, r1, w2 = _bilinear_taps(valid, out, torch.arange(out))
        i00, i01, w10 = _bilinear_taps(low, padded, r0)
        i10, i11, w11 = _bilinear_taps(low, padded, r1)
        index = torch.stack([i00, i01, i10, i11], dim=1)
        weight = torch.stack([(1 - w2) * (1 - w10), (1 - w2) * w10, w2 * (1 - w11), w2 * w11], dim=1)
        used = int(index.max()) + 1
        return AxisMap(index, weight, (i00 + 1).clamp(max=used - 1), used)


def _bilinear_taps(size_in: int, size_out: int, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PyTorch's bilinear source indices and weight of the second one, in float32 as its kernel."""
    scale = torch.tensor(size_in, dtype=torch.float32) / size_out
    src = ((dst.to(torch.float32) + 0.5) * scale - 0.5).clamp(min=0)
    first = src.floor().to(torch.int64).clamp(max=size_in - 1)
    second = (first + 1).clamp(max=size_in - 1)
    return first, second, (src - first).clamp(0, 1)


@dataclass(frozen=True)
class UpscaleGeometry:
    """The two axes of ``Sam.postprocess_masks`` for one crop, and the side of the padded input."""

    rows: AxisMap
    cols: AxisMap
    padded: int

    @staticmethod
    def build(low_res_size: int, padded_size: int, input_size: tuple[int, int], output_size: tuple[int, int]) -> "UpscaleGeometry":
        return UpscaleGeometry(
            AxisMap.build(low_res_size, padded_size, input_size[0], output_size[0]),
            AxisMap.build(low_res_size, padded_size, input_size[1], output_size[1]),
            padded_size,
        )


def _along_x(lines: torch.Tensor, cols: AxisMap, positions: torch.Tensor) -> torch.Tensor:
    """Low-res lines (..., C) interpolated to full-size columns ``positions``: 4 taps, fixed order."""
    out = cols.weight[positions, 0] * lines[..., cols.index[positions, 0]]
    for b in range(1, 4):
        out = out + cols.weight[positions, b] * lines[..., cols.index[positions, b]]
    return out


def _along_y(taps: list[torch.Tensor], weights: list[torch.Tensor]) -> torch.Tensor:
    """Weighted sum of the 4 row taps, in the same order for rows and for columns."""
    out = weights[0] * taps[0]
    for w, t in zip(weights[1:], taps[1:]):
        out = out + w * t
    return out


def _full_rows(logits: torch.Tensor, owner: torch.Tensor, ys: torch.Tensor, g: UpscaleGeometry) -> torch.Tensor:
    """Full-size rows ``ys`` of candidates ``owner``: (P, W)."""
    n, used_rows, _ = logits.shape
    needed = torch.zeros((n, used_rows), dtype=torch.bool)
    needed[owner[:, None], g.rows.index[ys]] = True
    which, lines = needed.nonzero(as_tuple=True)
    slot = torch.full((n, used_rows), -1, dtype=torch.int64)
    slot[which, lines] = torch.arange(len(which))
    along_x = _along_x(logits[which, lines], g.cols, torch.arange(len(g.cols.index)))  # (K, W)
    taps = [along_x[slot[owner, g.rows.index[ys, a]]] for a in range(4)]
    return _along_y(taps, [g.rows.weight[ys, a, None] for a in range(4)])


def _full_cols(logits: torch.Tensor, owner: torch.Tensor, xs: torch.Tensor, g: UpscaleGeometry) -> torch.Tensor:
    """Full-size columns ``xs`` of candidates ``owner``: (Q, H), rounding as :func:`_full_rows`."""
    out = g.cols.weight[xs, 0, None] * logits[owner, :, g.cols.index[xs, 0]]
    for b in range(1, 4):
        out = out + g.cols.weight[xs, b, None] * logits[owner, :, g.cols.index[xs, b]]
    return _along_y([out[:, g.rows.index[:, a]] for a in range(4)], [g.rows.weight[:, a] for a in range(4)])


def _first_last(lines: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the first and last True per row of (N, size); size and -1 where there is none."""
    positions = torch.arange(lines.shape[1])
    return torch.where(lines, positions, lines.shape[1]).amin(dim=1), torch.where(lines, positions, -1).amax(dim=1)


def _block_bounds(logits: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Max and min of each ``block`` x ``block`` group of cells and their neighbours: (N, R/b, C/b)."""
    n, r, c = logits.shape
    rb, cb = -(-r // block), -(-c // block)
    padded = F.pad(logits[:, None], (0, cb * block - c, 0, rb * block - r), mode="replicate")
    highest = F.max_pool2d(padded, block + 2, stride=block, padding=1)[:, 0]
    lowest = -F.max_pool2d(-padded, block + 2, stride=block, padding=1)[:, 0]
    return highest, lowest


def _ranges(block_of: torch.Tensor, blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First full-size position and number of positions of each block (positions are sorted)."""
    count = torch.bincount(block_of, minlength=blocks)
    return torch.cumsum(count, 0) - count, count


def _tile_counts(
    logits: torch.Tensor, tiles: torch.Tensor, g: UpscaleGeometry, levels: tuple[float, ...]
) -> list[torch.Tensor]:
    """Exact pixel counts above each level in tiles (T, 3) = (candidate, block row, block col)."""
    rows, cols = g.rows, g.cols
    row_start, row_count = _ranges(rows.centre // _BLOCK, -(-rows.used // _BLOCK))
    col_start, col_count = _ranges(cols.centre // _BLOCK, -(-cols.used // _BLOCK))
    height, width = int(row_count.max()), int(col_count.max())
    owner, block_row, block_col = tiles.unbind(dim=1)
    ys = (row_start[block_row, None] + torch.arange(height)).clamp(max=len(rows.centre) - 1)  # (T, h)
    xs = (col_start[block_col, None] + torch.arange(width)).clamp(max=len(cols.centre) - 1)  # (T, w)
    valid = (torch.arange(height) < row_count[block_row, None])[:, :, None] & (torch.arange(width) < col_count[block_col, None])[:, None, :]
    base = block_row * _BLOCK - 1  # the tile's pixels read low-res rows base .. base + BLOCK + 1
    lines = (base[:, None] + torch.arange(_BLOCK + 2)).clamp(0, rows.used - 1)
    source = logits[owner[:, None, None], lines[:, :, None], cols.index[xs, 0][:, None, :]]
    along_x = cols.weight[xs, 0][:, None, :] * source
    for b in range(1, 4):
        along_x = along_x + cols.weight[xs, b][:, None, :] * logits[owner[:, None, None], lines[:, :, None], cols.index[xs, b][:, None, :]]
    taps = [torch.gather(along_x, 1, (rows.index[ys, a] - base[:, None]).clamp(0, _BLOCK + 1)[:, :, None].expand(-1, -1, width))
            for a in range(4)]
    values = _along_y(taps, [rows.weight[ys, a][:, :, None] for a in range(4)])
    return [((values > t) & valid).sum(dim=(1, 2)).to(torch.float64) for t in levels]


def upscaled_statistics(
    low_res: torch.Tensor,
    geometry: UpscaleGeometry,
    threshold: float,
    offset: float,
    upscale: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stability scores (N,) and inclusive XYXY boxes (N, 4) of ``logits > threshold`` at full size.

    Same results as upscaling every (N, low, low) low-res logit map with ``upscale`` (N, H, W)
    and counting, up to float rounding of values within ~1e-6 of a threshold. Candidates whose
    bounds decide too little (texture-like logits) are upscaled that way.
    """
    rows, cols = geometry.rows, geometry.cols
    logits = low_res[:, : rows.used, : cols.used].float().cpu()
    if len(logits) == 0:
        return torch.zeros(0), torch.zeros((0, 4), dtype=torch.int64)
    margin = 1e-4 + 1e-6 * float(logits.abs().max())
    highest, lowest = _block_bounds(logits, _BLOCK)
    row_block, col_block = rows.centre // _BLOCK, cols.centre // _BLOCK
    row_pixels = torch.bincount(row_block, minlength=highest.shape[1]).to(torch.float64)
    col_pixels = torch.bincount(col_block, minlength=highest.shape[2]).to(torch.float64)
    tile_pixels = row_pixels[:, None] * col_pixels[None, :]

    # Stability: pixels above threshold ± offset, counted per tile where the bounds decide it,
    # computed in the other tiles.
    levels = (threshold + offset, threshold - offset)
    above = [lowest > t + margin for t in levels]  # every pixel of the tile is above t
    undecided = torch.zeros(highest.shape, dtype=torch.bool)
    for t, surely in zip(levels, above):
        undecided |= (highest >= t - margin) & ~surely
    undecided &= tile_pixels > 0
    counts = [((surely & ~undecided).to(torch.float64) * tile_pixels).sum(dim=(1, 2)) for surely in above]
    brute = (undecided * tile_pixels).sum(dim=(1, 2)) > _BRUTE_FORCE_SHARE * tile_pixels.sum()
    tiles = (undecided & ~brute[:, None, None]).nonzero()
    for start in range(0, len(tiles), _TILES_PER_CHUNK):
        part = tiles[start : start + _TILES_PER_CHUNK]
        for total, exact in zip(counts, _tile_counts(logits, part, geometry, levels)):
            total.index_add_(0, part[:, 0], exact)

    # Box: rows / columns that certainly or possibly hold a pixel above the threshold; possible
    # ones outside the span of the certain ones are computed, nearest the image edges first.
    certain, possible = lowest > threshold + margin, highest >= threshold - margin
    row_certain = (certain & (col_pixels > 0)).any(dim=2)[:, row_block]
    col_certain = (certain & (row_pixels > 0)[:, None]).any(dim=1)[:, col_block]
    row_possible = (possible & (col_pixels > 0)).any(dim=2)[:, row_block] & ~row_certain & ~brute[:, None]
    col_possible = (possible & (row_pixels > 0)[:, None]).any(dim=1)[:, col_block] & ~col_certain & ~brute[:, None]
    top, bottom = _edge_search(row_certain, row_possible, lambda w, ys: _full_rows(logits, w, ys, geometry) > threshold)
    left, right = _edge_search(col_certain, col_possible, lambda w, xs: _full_cols(logits, w, xs, geometry) > threshold)
    stability = (counts[0].to(torch.int32) / counts[1].to(torch.int32)).float()
    boxes = torch.stack([left, top, right, bottom], dim=1).to(torch.int64) * ((bottom >= 0) & (right >= 0))[:, None]

    heavy = brute.nonzero()[:, 0]
    step = max(1, _FLOATS_PER_CHUNK // (len(rows.index) * len(cols.index) + geometry.padded**2))
    for start in range(0, len(heavy), step):
        which = heavy[start : start + step]
        full = upscale(low_res[which.to(low_res.device)])
        stability[which], boxes[which] = (x.cpu() for x in logit_statistics(full, threshold, offset))
    return stability, boxes


def _edge_search(
    certain: torch.Tensor, possible: torch.Tensor, compute: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last line (row or column) holding a pixel above the threshold, per candidate.

    ``certain`` (N, S): lines known to hold one; ``possible``: undecided lines. Undecided lines
    before the first certain line (after the last) are computed with ``compute(owner, lines)``
    -> (P, length) bool, a few per candidate at a time from the outside in, until one holds a
    pixel. Returns first and last (S and -1 where the mask is empty).
    """
    first, last = _first_last(certain)
    positions = torch.arange(certain.shape[1])
    for reverse in (False, True):
        pending = possible & ((positions > last[:, None]) if reverse else (positions < first[:, None]))
        batch = 4
        while pending.any():
            order = pending.flip(1) if reverse else pending
            take = order & (order.cumsum(dim=1) <= batch)
            owner, lines = (take.flip(1) if reverse else take).nonzero(as_tuple=True)
            hit = torch.cat([compute(o, l).any(dim=1) for o, l in _chunks((owner, lines), possible.shape[1])])
            pending[owner, lines] = False
            if reverse:
                last.scatter_reduce_(0, owner[hit], lines[hit], reduce="amax")
                pending &= positions > last[:, None]
            else:
                first.scatter_reduce_(0, owner[hit], lines[hit], reduce="amin")
                pending &= positions < first[:, None]
            batch *= 2
    return first, last


def _chunks(pairs: tuple[torch.Tensor, torch.Tensor], length: int):
    """(owner, position) pairs in groups of about _FLOATS_PER_CHUNK computed values."""
    step = max(1, _FLOATS_PER_CHUNK // length)
    return [(pairs[0][i : i + step], pairs[1][i : i + step]) for i in range(0, len(pairs[0]), step)]
