"""Draw examples/shapes.png, the repository's sample image (procedural, so free of any licence).

Run: python scripts/make_sample_image.py
"""
from pathlib import Path

import cv2
import numpy as np


def make(height: int = 480, width: int = 640, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([120 + 60 * yy / height, 150 + 40 * xx / width, 190 - 50 * yy / height], axis=-1)
    image += rng.normal(0, 6, image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    cv2.rectangle(image, (60, 260), (250, 420), (200, 60, 40), -1)
    cv2.circle(image, (420, 200), 110, (40, 170, 70), -1)
    cv2.circle(image, (420, 200), 45, (240, 220, 60), -1)
    triangle = np.array([[330, 440], [600, 440], [470, 330]], dtype=np.int32)
    cv2.fillPoly(image, [triangle], (70, 60, 180))
    return image


if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "examples" / "shapes.png"
    cv2.imwrite(str(out), cv2.cvtColor(make(), cv2.COLOR_RGB2BGR))
    print(f"wrote {out}")
