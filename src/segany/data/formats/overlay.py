"""Pictures for a person: masks drawn over the image, each in its own colour, with outlines."""
from __future__ import annotations

import cv2
import numpy as np

_GOLDEN_ANGLE = 137.508


def mask_colors(count: int) -> np.ndarray:
    """``count`` well-separated, saturated RGB colours (uint8), stable for a given index."""
    if count == 0:  # an image without masks: OpenCV refuses an empty array
        return np.zeros((0, 3), np.uint8)
    hues = (np.arange(count) * _GOLDEN_ANGLE) % 360 / 2  # OpenCV hue range is 0..180
    hsv = np.stack([hues, np.full(count, 200), np.full(count, 255)], axis=1).astype(np.uint8)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]


def draw_overlay(
    image: np.ndarray,
    masks: list[np.ndarray] | np.ndarray,
    alpha: float = 0.5,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    box: np.ndarray | None = None,
) -> np.ndarray:
    """HWC RGB uint8 image with each mask tinted and outlined; prompts drawn on top."""
    out = image.astype(np.float32)
    colors = mask_colors(len(masks))
    for mask, color in zip(masks, colors):
        out[mask] = (1 - alpha) * out[mask] + alpha * color
    out = out.round().astype(np.uint8)
    for mask, color in zip(masks, colors):
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), 2)
    if box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x0, y0), (x1, y1), (0, 255, 0), 2)
    if points is not None:
        for (x, y), label in zip(points, labels if labels is not None else np.ones(len(points))):
            color = (0, 255, 0) if label == 1 else (255, 0, 0)
            cv2.circle(out, (int(round(x)), int(round(y))), 6, (255, 255, 255), -1)
            cv2.circle(out, (int(round(x)), int(round(y))), 4, color, -1)
    return out
