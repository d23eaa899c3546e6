"""Segment everything with SAM 2 / 2.1: the official ``SAM2AutomaticMaskGenerator``.

The filter-first pipeline of :class:`~segany.amg.generator.SamMaskGenerator` (decode without
upsampling, IoU filter, exact stability and boxes from low-res bounds, NMS, then upsample and
encode only the survivors) with the SAM 2 semantics where they differ: point prompts in float32,
normalised to the crop and scaled to the S x S frame; logits resized straight to the crop (no
padding); ``multimask_output``; ``use_m2m`` (each candidate re-predicted once from its own
clamped low-res logits, single-mask, before the filters); ``min_mask_region_area`` runs no
clean-up (the official ``generate`` never calls it); boxes in records are floats.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import GeneratorArgumentError, UnsupportedOperationError
from ..models.sam2 import Sam2
from ..predict.sam2_predictor import LOW_RES_CLAMP, Sam2Predictor
from .generator import SamMaskGenerator, _Masks
from .geometry import near_crop_edge
from .scoring import UpscaleGeometry, upscaled_statistics

# The official SAM2AutomaticMaskGenerator's arguments besides the model: all are honoured.
SAM2_GENERATOR_OPTIONS = frozenset({
    "points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh", "stability_score_offset",
    "mask_threshold", "box_nms_thresh", "crop_n_layers", "crop_nms_thresh", "crop_overlap_ratio",
    "crop_n_points_downscale_factor", "point_grids", "min_mask_region_area", "output_mode", "use_m2m",
    "multimask_output",
})


class Sam2MaskGenerator(SamMaskGenerator):
    """Automatic mask generation with the official ``SAM2AutomaticMaskGenerator`` arguments and
    defaults; ``model`` is a :class:`~segany.models.sam2.Sam2` or a :class:`Sam2Predictor` (whose
    image is replaced). Exact: the same records as the official generator up to float rounding."""

    def __init__(
        self,
        model: Sam2 | Sam2Predictor,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        mask_threshold: float = 0.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        use_m2m: bool = False,
        multimask_output: bool = True,
        fast: bool = False,
        **kwargs: Any,
    ) -> None:
        """``fast`` (SAM 1's low-res scoring, an option clients may pass at its default) is not offered."""
        if fast:
            raise GeneratorArgumentError("fast=True is not available for SAM 2 models: the generator is exact")
        if kwargs:  # the official class forwards **kwargs to the predictor (max_hole_area, ...)
            raise UnsupportedOperationError(f"unsupported arguments: {', '.join(sorted(kwargs))}")
        self._mask_threshold = float(mask_threshold)
        super().__init__(
            model, points_per_side, points_per_batch, pred_iou_thresh, stability_score_thresh, stability_score_offset,
            box_nms_thresh, crop_n_layers, crop_nms_thresh, crop_overlap_ratio, crop_n_points_downscale_factor,
            point_grids, min_mask_region_area, output_mode,
        )
        self.use_m2m = bool(use_m2m)
        self.multimask_output = bool(multimask_output)

    def _predictor_of(self, model: Any) -> Sam2Predictor:
        if isinstance(model, Sam2Predictor):
            predictor = model
        elif isinstance(model, Sam2):
            predictor = Sam2Predictor(model)
        else:
            raise GeneratorArgumentError(f"expected a segany Sam2 model or Sam2Predictor, got {type(model).__name__}")
        predictor.mask_threshold = self._mask_threshold
        return predictor

    @property
    def mask_threshold(self) -> float:
        return self._mask_threshold

    def _model_points(self, points: torch.Tensor, crop_size: tuple[int, int]) -> torch.Tensor:
        """Crop pixels → the S x S frame, as the official ``transform_coords(normalize=True)``."""
        return self.predictor._transform_coords(points, True, crop_size)

    def _process_batch(
        self, points: np.ndarray, crop_size: tuple[int, int], crop_box: list[int], image_size: tuple[int, int]
    ) -> _Masks:
        self._check()
        device = self.predictor.device
        points_t = torch.as_tensor(points, dtype=torch.float32, device=device)
        coords = self._model_points(points_t, crop_size)[:, None, :]
        labels = torch.ones((len(points_t), 1), dtype=torch.int, device=device)
        low_res, iou = self.predictor.predict_low_res_torch(coords, labels, multimask_output=self.multimask_output)
        per_point = low_res.shape[1]
        low_res, iou = low_res.flatten(0, 1), iou.flatten(0, 1).float()
        points_t = points_t.repeat_interleave(per_point, dim=0)
        self.counts.candidates += len(iou)
        if self.use_m2m:
            low_res, iou = self._refine(points_t, low_res, crop_size)
        points = points_t.cpu().numpy()
        if self.pred_iou_thresh > 0.0:
            keep = iou > self.pred_iou_thresh
            low_res, iou, points = low_res[keep], iou[keep], points[keep.cpu().numpy()]
        self.counts.after_iou += len(iou)
        stability, boxes = self._score(low_res, crop_size)
        masks = _Masks(iou.cpu(), stability.cpu(), boxes.cpu(), points,
                       np.tile(np.asarray(crop_box, dtype=np.int64), (len(iou), 1)), low_res)
        if self.stability_score_thresh > 0.0:
            masks = masks.select(masks.stability >= self.stability_score_thresh)
        self.counts.after_stability += len(masks.iou)
        x0, y0 = crop_box[:2]
        edge = near_crop_edge(masks.boxes.numpy() + np.array([x0, y0, x0, y0]), crop_box, image_size)
        if edge.any():
            masks = masks.select(torch.from_numpy(~edge))
        self.counts.after_crop_edge += len(masks.iou)
        return masks

    def _refine(self, points: torch.Tensor, low_res: torch.Tensor, crop_size: tuple[int, int]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``use_m2m``: each candidate again, single-mask, with its clamped logits as ``mask_input``."""
        coords = self._model_points(points, crop_size)[:, None, :]
        labels = torch.ones((len(points), 1), dtype=torch.int, device=points.device)
        mask_input = low_res.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)[:, None]
        parts = [
            self.predictor.predict_low_res_torch(coords[i : i + self.points_per_batch], labels[i : i + self.points_per_batch],
                                                 mask_input=mask_input[i : i + self.points_per_batch], multimask_output=False)
            for i in range(0, len(points), self.points_per_batch)
        ]
        return torch.cat([p[0] for p in parts])[:, 0], torch.cat([p[1] for p in parts])[:, 0].float()

    def _score(self, low_res: torch.Tensor, crop_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact stability scores and crop-frame boxes of the logits resized straight to the crop."""
        low = low_res.shape[-1]
        geometry = UpscaleGeometry.build(low, low, (low, low), crop_size)
        return upscaled_statistics(
            low_res, geometry, self.mask_threshold, self.stability_score_offset,
            lambda logits: self.predictor.upscale_logits(logits[:, None])[:, 0],
        )

    def _clean_small_regions(self, masks: _Masks) -> _Masks:
        """No clean-up: the official SAM 2 ``generate`` never runs it, whatever ``min_mask_region_area``."""
        return masks

    def _records(self, masks: _Masks) -> list[dict[str, Any]]:
        records = super()._records(masks)
        for record in records:  # the official MaskData.to_numpy casts boxes to float32
            record["bbox"] = [float(v) for v in record["bbox"]]
            record["crop_box"] = [float(v) for v in record["crop_box"]]
        return records
