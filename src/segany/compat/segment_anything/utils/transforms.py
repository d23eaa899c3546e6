"""``segment_anything.utils.transforms.ResizeLongestSide`` with the official methods."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ....image import ResizeLongestSide as _ResizeLongestSide
from ....image import preprocess_shape


class ResizeLongestSide(_ResizeLongestSide):
    """segany's resize and prompt transforms, plus the official ``apply_image_torch`` and
    ``get_preprocess_shape``."""

    def apply_image_torch(self, image: torch.Tensor) -> torch.Tensor:
        """Resize a float (B, C, H, W) batch, antialiased bilinear (may differ slightly from ``apply_image``)."""
        size = preprocess_shape(image.shape[2], image.shape[3], self.target_length)
        return F.interpolate(image, size, mode="bilinear", align_corners=False, antialias=True)

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
        """Size (h, w) after scaling the longest side to ``long_side_length``."""
        return preprocess_shape(oldh, oldw, long_side_length)
