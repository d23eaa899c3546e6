"""Automatic masks without weights: object-like regions of a region hierarchy, as SAM-style records.

Records have the keys of :class:`segany.MaskGenerator`'s: ``segmentation`` (per ``output_mode``),
``area``, ``bbox`` (XYWH), ``predicted_iou`` (boundary contrast, :mod:`.scoring`), ``point_coords``
(the region's innermost pixel), ``stability_score`` (persistence in the hierarchy,
:mod:`.regions`) and ``crop_box`` (the whole image). Candidates are the multi-superpixel regions of
the hierarchy; they are ranked by boundary contrast times log(area) (edge-following, larger regions
first: on 8 COCO images this doubled recall@0.5 of the top 100 over ranking by contrast times
persistence) and overlapping ones removed by box NMS.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import torch

from ..data.images import check_image_array
from ..engine import ImageFeatures
from ..errors import GeneratorArgumentError
from ..masks import box_nms, encode_rles, mask_bbox_xywh, uncompressed_rles
from .lowres import distance_to_zero
from .model import ClassicModel
from .predictor import ClassicPredictor
from .regions import hierarchy, superpixels
from .scoring import boundary_contrast, gradient_magnitude

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
HONOURED_OPTIONS = frozenset({"box_nms_thresh", "min_mask_region_area", "output_mode"})
SPEED_OPTIONS = frozenset({"points_per_batch", "fast"})  # how fast SAM runs: nothing to do here
SAM_ONLY_DEFAULTS: dict[str, Any] = {  # the official generator's defaults, the only values accepted here
    "points_per_side": 32, "point_grids": None, "pred_iou_thresh": 0.88, "stability_score_thresh": 0.95,
    "stability_score_offset": 1.0, "crop_n_layers": 0, "crop_nms_thresh": 0.7, "crop_overlap_ratio": 512 / 1500,
    "crop_n_points_downscale_factor": 1,
}


class ClassicMaskGenerator:
    """``generate(image)`` → list of mask records, like :class:`segany.MaskGenerator` (see the module docstring).

    ``min_area_fraction`` / ``max_area_fraction`` bound a region's share of the image,
    ``max_masks`` caps the output, ``superpixel_step`` is the superpixel grid in working pixels.
    Of the official generator's arguments, ``box_nms_thresh``, ``min_mask_region_area`` and
    ``output_mode`` apply; ``points_per_batch`` and ``fast`` only set SAM's speed and are accepted.
    The point grid, crop and SAM-calibrated threshold arguments (:data:`SAM_ONLY_DEFAULTS`) are
    accepted at their official defaults, so SAM code runs unchanged, and any other value is a
    :class:`~segany.errors.GeneratorArgumentError` (there is no point grid or crop here, and the
    scores are not calibrated like SAM's); so is an unknown keyword.
    """

    def __init__(self, model_or_predictor: ClassicModel | ClassicPredictor | None = None, *,
                 box_nms_thresh: float = 0.7, min_mask_region_area: int = 0, output_mode: str = "binary_mask",
                 min_area_fraction: float = 0.002, max_area_fraction: float = 0.9, max_masks: int = 100,
                 superpixel_step: int = 14, **sam_options: Any) -> None:
        _check_sam_options(sam_options)
        if output_mode not in OUTPUT_MODES:
            raise GeneratorArgumentError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}; got {output_mode!r}")
        if not 0.0 <= box_nms_thresh <= 1.0:
            raise GeneratorArgumentError(f"box_nms_thresh must be in [0, 1], got {box_nms_thresh}")
        if not 0.0 <= min_area_fraction < max_area_fraction <= 1.0:
            raise GeneratorArgumentError("need 0 <= min_area_fraction < max_area_fraction <= 1")
        if min_mask_region_area < 0:
            raise GeneratorArgumentError(f"min_mask_region_area must be >= 0, got {min_mask_region_area}")
        if max_masks < 1 or superpixel_step < 4:
            raise GeneratorArgumentError("max_masks must be >= 1 and superpixel_step >= 4")
        if isinstance(model_or_predictor, ClassicPredictor):
            model = model_or_predictor.model
        elif isinstance(model_or_predictor, ClassicModel) or model_or_predictor is None:
            model = model_or_predictor or ClassicModel()
        else:
            raise GeneratorArgumentError(f"expected a ClassicModel or ClassicPredictor, got {type(model_or_predictor).__name__}")
        self.model = model
        self.box_nms_thresh = box_nms_thresh
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.min_area_fraction = min_area_fraction
        self.max_area_fraction = max_area_fraction
        self.max_masks = max_masks
        self.superpixel_step = superpixel_step

    def generate(self, image: np.ndarray, features: ImageFeatures | None = None,
                 check: Callable[[], None] | None = None) -> list[dict[str, Any]]:
        """Masks of the object-like regions of an HWC RGB uint8 image, best first.

        ``features`` (a predictor's working copy) are not needed: regions come from the image's own
        superpixels. ``check()`` runs before the work starts and may raise to stop it.
        """
        check_image_array(image)
        if check is not None:
            check()
        h, w = image.shape[:2]
        scale = min(1.0, self.model.config.max_side / max(h, w))
        bgr = np.ascontiguousarray(image[..., ::-1])
        if scale < 1.0:
            bgr = cv2.resize(bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        labels = superpixels(bgr, self.superpixel_step)
        gradient = gradient_magnitude(bgr)
        total = labels.size
        min_area = max(self.min_area_fraction * total, self.min_mask_region_area * scale * scale)
        candidates = []
        sizes = np.bincount(labels.ravel())
        for region in hierarchy(bgr, labels):
            area = sizes[list(region.superpixels)].sum()
            if len(region.superpixels) > 1 and min_area <= area <= self.max_area_fraction * total and region.persistence > 0:
                candidates.append(region)
        if not candidates:
            return []
        work_masks = [np.isin(labels, r.superpixels) for r in candidates]
        contrast = np.array([boundary_contrast(m, gradient) for m in work_masks])
        persistence = np.array([r.persistence for r in candidates])
        boxes = torch.tensor([_xyxy(m) for m in work_masks], dtype=torch.float32)
        areas = np.array([m.sum() for m in work_masks], dtype=np.float64)
        rank = contrast * np.log(areas)
        keep = box_nms(boxes, torch.as_tensor(rank, dtype=torch.float32), self.box_nms_thresh)
        keep = keep[: self.max_masks].tolist()
        full_labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST) if scale < 1.0 else labels
        records = []
        for i in keep:
            mask = np.isin(full_labels, candidates[i].superpixels)
            bbox = mask_bbox_xywh(mask)
            records.append({
                "segmentation": mask,
                "area": int(mask.sum()),
                "bbox": bbox,
                "predicted_iou": float(contrast[i]),
                "point_coords": [_innermost_point(mask, bbox)],
                "stability_score": float(persistence[i]),
                "crop_box": [0, 0, w, h],
            })
        return self._encode(records)

    def _encode(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.output_mode == "binary_mask" or not records:
            return records
        masks = np.stack([r["segmentation"] for r in records])
        encoded = encode_rles(masks) if self.output_mode == "coco_rle" else uncompressed_rles(masks)
        for record, rle in zip(records, encoded):
            record["segmentation"] = rle
        return records


def _check_sam_options(options: dict[str, Any]) -> None:
    """Reject unknown keywords and SAM-only arguments set to anything but the official default."""
    unknown = sorted(set(options) - SPEED_OPTIONS - SAM_ONLY_DEFAULTS.keys())
    if unknown:
        raise GeneratorArgumentError(f"unknown option(s) for the classic mask generator: {', '.join(unknown)}")
    changed = sorted(name for name in set(options) & SAM_ONLY_DEFAULTS.keys() if not _is_default(name, options[name]))
    if changed:
        raise GeneratorArgumentError(
            f"the classic engine cannot honour {', '.join(changed)} (no point grid or crops, scores not calibrated "
            f"like SAM's): leave them at the official defaults or use a SAM model; it takes "
            f"{', '.join(sorted(HONOURED_OPTIONS))}"
        )


def _is_default(name: str, value: Any) -> bool:
    default = SAM_ONLY_DEFAULTS[name]
    if default is None or value is None:
        return value is default
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isclose(value, default)


def _xyxy(mask: np.ndarray) -> list[int]:
    x, y, bw, bh = mask_bbox_xywh(mask)
    return [x, y, x + bw, y + bh]


def _innermost_point(mask: np.ndarray, bbox: list[int]) -> list[float]:
    """The pixel farthest from the region's boundary (or the image border), as [x, y]: a click that
    would select it. Computed in the XYWH ``bbox`` ringed with background, which no pixel outside
    can be nearer to."""
    x0, y0, bw, bh = bbox
    crop = np.pad(mask[y0:y0 + bh + 1, x0:x0 + bw + 1].astype(np.uint8), 1)
    y, x = divmod(int(np.argmax(distance_to_zero(crop))), crop.shape[1])
    return [float(x0 + x - 1), float(y0 + y - 1)]
