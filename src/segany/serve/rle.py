"""Checking COCO RLE masks that come from clients (or files) before pycocotools decodes them.

pycocotools trusts its input: counts that add up to fewer pixels than the image leave the rest
of the decoded mask uninitialised (random garbage), so the server checks the run lengths first.
:func:`segmentation_rle` turns any COCO segmentation (polygons, uncompressed or compressed RLE)
into the compressed RLE the API sends.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from ..errors import AnnotationError
from ..masks import decode_rle

_FIRST_CHAR, _LAST_CHAR = 48, 48 + 63  # COCO's compressed counts: 6 bits per character, offset by '0'


def compressed_counts(counts: str) -> list[int]:
    """The run lengths of a compressed COCO RLE string (the inverse of pycocotools' ``rleToString``)."""
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(counts):
                raise AnnotationError("segmentation counts string ends in the middle of a number")
            code = ord(counts[position])
            if not _FIRST_CHAR <= code <= _LAST_CHAR:
                raise AnnotationError(f"segmentation counts has an invalid character {counts[position]!r}")
            code -= _FIRST_CHAR
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            position += 1
            shift += 5
            if not more and code & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def _check_rle(rle: Any, height: int, width: int) -> None:
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise AnnotationError('segmentation must be a COCO RLE object {"size": [height, width], "counts": ...}')
    size, counts = rle["size"], rle["counts"]
    if not isinstance(size, list) or size != [height, width]:
        raise AnnotationError(f"segmentation size must be [height, width] = [{height}, {width}], got {size!r}")
    if isinstance(counts, str):
        runs = compressed_counts(counts)
    elif isinstance(counts, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
        runs = counts
    else:
        raise AnnotationError("segmentation counts must be a compressed RLE string or a list of integers")
    if any(run < 0 for run in runs):
        raise AnnotationError("segmentation counts has a negative run length")
    if sum(runs) != height * width:
        raise AnnotationError(f"segmentation counts cover {sum(runs)} pixels, not {height}x{width} = {height * width}")


def mask_from_rle(rle: Any, height: int, width: int) -> np.ndarray:
    """Decode a client's COCO RLE (compressed string or list counts) for a ``height`` x ``width``
    image, raising :class:`AnnotationError` unless it describes exactly that many pixels."""
    _check_rle(rle, height, width)
    mask = decode_rle({"size": [height, width], "counts": rle["counts"]})
    if not mask.any():
        raise AnnotationError("segmentation is empty: an annotation needs at least one pixel")
    return mask


def segmentation_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """A COCO segmentation of a ``height`` x ``width`` image (polygons ``[[x0, y0, x1, y1, ...], ...]``,
    uncompressed or compressed RLE) as compressed RLE ``{"size": [h, w], "counts": str}``."""
    if isinstance(segmentation, list):
        if not segmentation or not all(
            isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in poly)
            for poly in segmentation
        ):
            raise AnnotationError("segmentation polygons must be lists of at least 3 (x, y) pairs of numbers")
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    else:
        _check_rle(segmentation, height, width)
        if isinstance(segmentation["counts"], str):
            return {"size": [height, width], "counts": segmentation["counts"]}
        rle = mask_utils.frPyObjects(segmentation, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}
