"""Quality guard of the faster modes: masks and predicted IoUs against segany's exact float32 path
(itself equal to the official outputs to float rounding) on real photos with fixed prompts."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MIN_MEDIAN_IOU = 0.99
PHOTOS = ("000000005001.jpg", "000000025603.jpg", "000000010764.jpg", "000000051712.jpg")


def fixed_prompts(height: int, width: int) -> list[dict[str, Any]]:
    """Three single points (3 masks each), a foreground + background pair and a box (1 mask each)."""
    def at(fx: float, fy: float) -> list[float]:
        return [fx * width, fy * height]

    ones = np.ones(1, dtype=np.int64)
    return [
        {"point_coords": np.array([at(0.5, 0.5)]), "point_labels": ones},
        {"point_coords": np.array([at(0.3, 0.6)]), "point_labels": ones},
        {"point_coords": np.array([at(0.7, 0.35)]), "point_labels": ones},
        {"point_coords": np.array([at(0.45, 0.55), at(0.1, 0.1)]), "point_labels": np.array([1, 0]),
         "multimask_output": False},
        {"box": np.array(at(0.2, 0.2) + at(0.8, 0.85)), "multimask_output": False},
    ]


def _outputs(predictor: Any, image: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    predictor.set_image(image)
    return [predictor.predict(**prompt)[:2] for prompt in fixed_prompts(*image.shape[:2])]


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def run(reference: Any, candidates: dict[str, Any], images: list[np.ndarray]) -> dict[str, dict[str, Any]]:
    """Per mode: median / minimum mask IoU over every returned mask, max |delta predicted IoU|."""
    ious: dict[str, list[float]] = {name: [] for name in candidates}
    deltas: dict[str, float] = {name: 0.0 for name in candidates}
    for image in images:
        expected = _outputs(reference, image)
        for name, predictor in candidates.items():
            for (masks, scores), (ref_masks, ref_scores) in zip(_outputs(predictor, image), expected):
                ious[name] += [mask_iou(m, r) for m, r in zip(masks, ref_masks)]
                deltas[name] = max(deltas[name], float(np.abs(scores - ref_scores).max()))
    return {
        name: {
            "median_mask_iou": float(np.median(values)),
            "min_mask_iou": float(np.min(values)),
            "max_abs_delta_predicted_iou": deltas[name],
            "masks": len(values),
            "passes": bool(np.median(values) >= MIN_MEDIAN_IOU),
        }
        for name, values in ious.items()
    }


def load_photos(folder: Path, names: tuple[str, ...] = PHOTOS) -> list[np.ndarray]:
    from segany import load_image

    return [load_image(folder / name) for name in names]
