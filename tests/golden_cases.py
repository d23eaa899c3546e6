"""Replaying the official predictor cases of shared/golden (used by tests and scripts/parity_report.py)."""
from __future__ import annotations

import numpy as np
import torch

from segany import PromptPredictor

LOGIT_TOL = 1e-3
IOU_TOL = 1e-5


def run_case(predictor: PromptPredictor, data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Replay one golden case on a predictor holding its image: (mask logits, IoU, low-res logits).

    Cases with a ``mask_input`` first replay the call that produced it and check it on the way.
    """
    multimask = bool(data["multimask_output"])
    batched = "boxes" in data or ("point_coords" in data and data["point_coords"].ndim == 3)
    if batched:
        coords = torch.as_tensor(data["point_coords_transformed"]) if "point_coords" in data else None
        labels = torch.as_tensor(data["point_labels"]) if "point_labels" in data else None
        boxes = torch.as_tensor(data["boxes_transformed"]) if "boxes" in data else None
        masks, iou, low_res = predictor.predict_torch(coords, labels, boxes, None, multimask, return_logits=True)
        return masks.numpy(), iou.numpy(), low_res.numpy()
    if "first_best_index" in data:
        first_box = data["first_box"] if "first_box" in data else None
        first_coords = data["first_point_coords"] if "first_point_coords" in data else None
        first_labels = data["first_point_labels"] if "first_point_labels" in data else None
        _, first_iou, first_logits = predictor.predict(
            first_coords, first_labels, first_box, multimask_output=bool(data["first_multimask_output"])
        )
        assert np.abs(first_iou - data["first_iou_predictions"]).max() <= IOU_TOL
        best = int(np.argmax(first_iou))
        assert best == int(data["first_best_index"])
        assert np.abs(first_logits[best][None] - data["mask_input"]).max() <= LOGIT_TOL
    return predictor.predict(
        data["point_coords"] if "point_coords" in data else None,
        data["point_labels"] if "point_labels" in data else None,
        data["box"] if "box" in data else None,
        data["mask_input"] if "mask_input" in data else None,
        multimask_output=multimask,
        return_logits=True,
    )
