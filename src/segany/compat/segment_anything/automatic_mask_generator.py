"""``segment_anything.SamAutomaticMaskGenerator``: segany's :class:`~segany.amg.generator.SamMaskGenerator`
under the official signature (its exact mode: the official masks, order and scores)."""
from __future__ import annotations

import numpy as np

from ...amg.generator import SamMaskGenerator
from ...errors import GeneratorArgumentError
from ...models.sam import Sam
from .predictor import SamPredictor


class SamAutomaticMaskGenerator(SamMaskGenerator):
    """Masks for a whole image from a grid of point prompts; arguments and records as the official class.

    Invalid arguments raise :class:`~segany.errors.GeneratorArgumentError` instead of an ``AssertionError``.
    """

    def __init__(
        self,
        model: Sam,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
    ) -> None:
        """``model``: a model from :data:`sam_model_registry` or ``segany.load_model``; the rest as the official class."""
        if not isinstance(model, Sam):
            raise GeneratorArgumentError(
                f"SamAutomaticMaskGenerator needs a SAM model (from sam_model_registry or segany.load_model), "
                f"got {type(model).__name__}; use segany.MaskGenerator for other engines"
            )
        super().__init__(
            SamPredictor(model),
            points_per_side=points_per_side,
            points_per_batch=points_per_batch,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            stability_score_offset=stability_score_offset,
            box_nms_thresh=box_nms_thresh,
            crop_n_layers=crop_n_layers,
            crop_nms_thresh=crop_nms_thresh,
            crop_overlap_ratio=crop_overlap_ratio,
            crop_n_points_downscale_factor=crop_n_points_downscale_factor,
            point_grids=point_grids,
            min_mask_region_area=min_mask_region_area,
            output_mode=output_mode,
        )
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
