"""Interactive-segmentation metrics: IoU with an ignore region, NoC, NoF and the mIoU@k curve.

``ious`` arguments are one sequence per object of the IoU after click 1, 2, ... (index 0 = click 1).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def iou(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """Intersection over union of two HxW bool masks, pixels in ``ignore`` left out (1.0 when both are empty)."""
    if ignore is not None:
        valid = ~ignore
        pred, gt = pred & valid, gt & valid
    union = np.count_nonzero(pred | gt)
    return 1.0 if union == 0 else np.count_nonzero(pred & gt) / union


def clicks_to_reach(ious: Sequence[float], threshold: float, max_clicks: int) -> int:
    """Clicks needed for IoU >= ``threshold``; ``max_clicks`` is charged when it is never reached."""
    for k, value in enumerate(ious[:max_clicks], start=1):
        if value >= threshold:
            return k
    return max_clicks


def noc(ious: Sequence[Sequence[float]], threshold: float, max_clicks: int = 20) -> float:
    """Mean number of clicks to reach ``threshold`` (NoC@85 for 0.85, NoC@90 for 0.90)."""
    if not ious:
        return float("nan")
    return float(np.mean([clicks_to_reach(x, threshold, max_clicks) for x in ious]))


def nof(ious: Sequence[Sequence[float]], threshold: float, max_clicks: int = 20) -> int:
    """Number of failures: objects whose IoU never reaches ``threshold`` within ``max_clicks`` clicks."""
    return sum(1 for x in ious if not any(v >= threshold for v in x[:max_clicks]))


def miou_at(ious: Sequence[Sequence[float]], clicks: Sequence[int]) -> dict[int, float]:
    """Mean IoU over objects after k clicks, for each k in ``clicks`` that every object has."""
    out = {}
    for k in clicks:
        if ious and all(len(x) >= k for x in ious):
            out[k] = float(np.mean([x[k - 1] for x in ious]))
    return out
