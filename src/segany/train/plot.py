"""The run's curves as a PNG, drawn with Pillow (no matplotlib): losses and validation mIoU per epoch."""
from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from ..fileio import atomic_write_bytes

PANEL_W, PANEL_H, MARGIN = 420, 260, 44
COLORS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))


def _panel(draw: ImageDraw.ImageDraw, left: int, title: str, epochs: Sequence[int],
           series: dict[str, Sequence[float | None]], y_range: tuple[float, float] | None = None) -> None:
    values = [v for vs in series.values() for v in vs if v is not None]
    lo, hi = y_range or ((min(values), max(values)) if values else (0.0, 1.0))
    hi = hi if hi > lo else lo + 1.0
    x0, y0, x1, y1 = left + MARGIN, MARGIN // 2, left + PANEL_W - 10, PANEL_H - MARGIN
    draw.rectangle((x0, y0, x1, y1), outline=(0, 0, 0))
    draw.text((x0, 4), title, fill=(0, 0, 0))
    for frac in (0.0, 0.5, 1.0):
        y = y1 - frac * (y1 - y0)
        draw.text((left + 2, y - 6), f"{lo + frac * (hi - lo):.3g}", fill=(0, 0, 0))
    span = max(len(epochs) - 1, 1)
    if epochs:
        draw.text((x0, y1 + 4), f"epoch {epochs[0]}", fill=(0, 0, 0))
        draw.text((x1 - 50, y1 + 4), f"epoch {epochs[-1]}", fill=(0, 0, 0))
    for row, ((name, ys), color) in enumerate(zip(series.items(), COLORS)):
        points = [(x0 + i / span * (x1 - x0), y1 - (v - lo) / (hi - lo) * (y1 - y0))
                  for i, v in enumerate(ys) if v is not None]
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        for x, y in points:
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=color)
        draw.text((x0 + 6, y0 + 4 + 12 * row), name, fill=color)


def save_curves(path: str | os.PathLike, metrics: Sequence[dict]) -> Path:
    """Write ``path``: train/val loss (left) and validation box/point mIoU (right) per epoch."""
    image = Image.new("RGB", (2 * PANEL_W, PANEL_H), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    epochs = [int(m["epoch"]) for m in metrics]
    _panel(draw, 0, "loss", epochs, {k: [m.get(k) for m in metrics] for k in ("train_loss", "val_loss")})
    _panel(draw, PANEL_W, "validation mIoU", epochs,
           {k: [m.get(k) for m in metrics] for k in ("val_box_miou", "val_point_miou")}, (0.0, 1.0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())
