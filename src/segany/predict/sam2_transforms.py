"""SAM 2's image preprocessing (the official ``SAM2Transforms``), without torchvision.

An HxWx3 uint8 image becomes the (3, S, S) float32 model input: ``ToTensor`` (CHW, / 255), then a
resize to S x S that does **not** keep the aspect ratio and pads nothing (torchvision's tensor
``Resize``: bilinear, ``align_corners=False``, antialiased, skipped when the image is already
S x S), then ``Normalize`` with the ImageNet mean / std on the [0, 1] scale. The float operations
are torchvision's, in its order, so the tensor is bit-identical to the official one.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.images import check_image_array

SAM2_PIXEL_MEAN = (0.485, 0.456, 0.406)
SAM2_PIXEL_STD = (0.229, 0.224, 0.225)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 → (3, H, W) float32 in [0, 1] (torchvision's ``ToTensor``)."""
    image = check_image_array(image)
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).to(torch.float32).div(255)


def resize_normalize(image: torch.Tensor, image_size: int) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1] → (3, S, S) normalised (torchvision's ``Resize`` + ``Normalize``)."""
    if tuple(image.shape[-2:]) != (image_size, image_size):
        image = F.interpolate(
            image[None], size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True
        )[0]
    mean = torch.as_tensor(SAM2_PIXEL_MEAN, dtype=image.dtype, device=image.device).view(-1, 1, 1)
    std = torch.as_tensor(SAM2_PIXEL_STD, dtype=image.dtype, device=image.device).view(-1, 1, 1)
    return (image - mean) / std


def preprocess_image(image: np.ndarray, image_size: int = 1024) -> torch.Tensor:
    """HxWx3 uint8 RGB → the (3, S, S) float32 tensor that the official ``set_image`` feeds the model."""
    return resize_normalize(image_to_tensor(image), image_size)


def preprocess_batch(images: Sequence[np.ndarray], image_size: int = 1024) -> torch.Tensor:
    """Several HxWx3 uint8 images (sizes may differ) → (B, 3, S, S), as ``set_image_batch`` builds it."""
    return torch.stack([preprocess_image(image, image_size) for image in images])
