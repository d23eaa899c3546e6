"""Checking prompts where they enter an engine: every predictor takes the same points, boxes and
mask inputs, and refuses the same malformed ones with a :class:`~segany.errors.PromptError`.

Coordinates are (x, y) pixels of the original image, boxes XYXY, sizes (height, width); a point
or box corner may lie on the image border (x in [0, W], y in [0, H]) but not outside it.
"""
from __future__ import annotations

import numpy as np
import torch

from .errors import PromptError


def as_array(value: object, name: str) -> np.ndarray:
    """``value`` (array-like or tensor) as a numeric numpy array; :class:`PromptError` otherwise."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except Exception as exc:
        raise PromptError(f"{name} must be array-like: {exc}") from None
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise PromptError(f"{name} must be numeric, got dtype {array.dtype}")
    return array


def check_inside(coords: np.ndarray, size: tuple[int, int], name: str) -> None:
    """(..., 2) finite coordinates inside the ``size`` image (its border included)."""
    height, width = size
    if not np.isfinite(coords).all():
        raise PromptError(f"{name} contains NaN or infinite values")
    xs, ys = coords[..., 0], coords[..., 1]
    outside = (xs < 0) | (xs > width) | (ys < 0) | (ys > height)
    if outside.any():
        first = coords.reshape(-1, 2)[np.flatnonzero(outside.reshape(-1))[0]]
        raise PromptError(
            f"{name} has a coordinate ({first[0]:g}, {first[1]:g}) outside the {width}x{height} image "
            f"(x in [0, {width}], y in [0, {height}])"
        )


def check_labels(labels: np.ndarray, allowed: set[int], name: str = "point_labels") -> None:
    """Labels drawn from ``allowed`` (1 foreground, 0 background, -1 padding where batched)."""
    values = set(np.unique(labels).tolist())
    if not values <= allowed:
        raise PromptError(f"{name} must only hold {sorted(allowed)}, got {sorted(values - allowed)}")


def check_boxes(boxes: np.ndarray) -> None:
    """(..., 4) XYXY boxes whose corners are in order (a zero-width or zero-height box is allowed)."""
    reversed_ = (boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])
    if reversed_.any():
        bad = boxes.reshape(-1, 4)[np.flatnonzero(reversed_.reshape(-1))[0]]
        raise PromptError(f"box {bad.tolist()} has reversed corners: expected x0 <= x1 and y0 <= y1 (XYXY)")


def check_points(point_coords: object, point_labels: object, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
    """One prompt's (N, 2) points and (N,) labels of 1 / 0 inside the image, or None when there are none."""
    if (point_coords is None) != (point_labels is None):
        raise PromptError("point_coords and point_labels must be given together")
    if point_coords is None:
        return None
    coords = as_array(point_coords, "point_coords")
    labels = as_array(point_labels, "point_labels")
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise PromptError(f"point_coords must have shape (N, 2), got {coords.shape}")
    if labels.shape != (coords.shape[0],):
        raise PromptError(f"point_labels must have shape ({coords.shape[0]},), got {labels.shape}")
    check_inside(coords, size, "point_coords")
    check_labels(labels, {0, 1})
    return coords, labels


def check_box(box: object, size: tuple[int, int]) -> np.ndarray | None:
    """One prompt's XYXY box, shape (4,) or (1, 4) as given, inside the image; None when there is none."""
    if box is None:
        return None
    box_np = as_array(box, "box")
    if box_np.shape not in ((4,), (1, 4)):
        raise PromptError(f"box must have shape (4,) as XYXY, got {box_np.shape}; use predict_torch for several")
    check_boxes(box_np.reshape(-1, 4))
    check_inside(box_np.reshape(-1, 2), size, "box")
    return box_np


def check_mask_input(mask_input: object, side: int) -> np.ndarray | None:
    """One prompt's low-res mask logits (a previous call's ``low_res_logits``) as (1, side, side); None when absent."""
    if mask_input is None:
        return None
    mask = as_array(mask_input, "mask_input")
    if mask.shape == (side, side):
        mask = mask[None]
    if mask.shape != (1, side, side):
        raise PromptError(
            f"mask_input must have shape (1, {side}, {side}) (low_res_logits of a previous call), got {mask.shape}"
        )
    return mask


def check_torch_prompts(point_coords: torch.Tensor | None, point_labels: torch.Tensor | None,
                        boxes: torch.Tensor | None, mask_input: torch.Tensor | None, side: int,
                        corner_pairs: bool = False) -> None:
    """B prompt sets in a model's input frame: points (B, N, 2) with labels (B, N) of 1 / 0 / -1,
    boxes (B, 4) (or (B, 2, 2) corner pairs where ``corner_pairs``), mask inputs (B, 1, side, side),
    all with the same B."""
    if (point_coords is None) != (point_labels is None):
        raise PromptError("point_coords and point_labels must be given together")
    rows: dict[str, int] = {}
    if point_coords is not None:
        if point_coords.ndim != 3 or point_coords.shape[2] != 2:
            raise PromptError(f"point_coords must have shape (B, N, 2), got {tuple(point_coords.shape)}")
        if tuple(point_labels.shape) != tuple(point_coords.shape[:2]):
            raise PromptError(f"point_labels must have shape {tuple(point_coords.shape[:2])}, got {tuple(point_labels.shape)}")
        check_labels(point_labels.cpu().numpy(), {-1, 0, 1})
        rows["point_coords"] = point_coords.shape[0]
    if boxes is not None:
        flat = boxes.ndim == 2 and boxes.shape[1] == 4
        if not (flat or (corner_pairs and boxes.ndim == 3 and tuple(boxes.shape[1:]) == (2, 2))):
            wanted = "(B, 4) or (B, 2, 2)" if corner_pairs else "(B, 4)"
            raise PromptError(f"boxes must have shape {wanted}, got {tuple(boxes.shape)}")
        check_boxes(boxes.reshape(-1, 4).cpu().numpy())
        rows["boxes"] = boxes.shape[0]
    if mask_input is not None:
        if mask_input.ndim != 4 or tuple(mask_input.shape[1:]) != (1, side, side):
            raise PromptError(f"mask_input must have shape (B, 1, {side}, {side}), got {tuple(mask_input.shape)}")
        rows["mask_input"] = mask_input.shape[0]
    if len(set(rows.values())) > 1:
        raise PromptError("the prompt sets disagree in number: " + ", ".join(f"{k} has {v} rows" for k, v in rows.items()))
