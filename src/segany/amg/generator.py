"""Segment everything: masks for a whole image from a grid of point prompts.

:class:`MaskGenerator` has the arguments and the output of the official
``SamAutomaticMaskGenerator`` and returns the same masks, in the same order, with the same
scores. It gets there with less work: candidates are decoded without upsampling, the predicted
IoU filter runs first, stability scores and boxes come from low-res bounds with full-size
values computed only where the bounds leave a pixel undecided (:mod:`segany.amg.scoring`), box
NMS runs on those boxes, and only the survivors are upsampled, thresholded, encoded
(pycocotools) and cleaned. Coordinates are (x, y) pixels of the original image; boxes in
records are XYWH, like COCO.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from ..data.images import check_image_array, check_image_list
from ..engine import ImageFeatures
from ..errors import GeneratorArgumentError
from ..masks import (
    box_nms,
    decode_rle,
    encode_rle,
    encode_rles,
    logit_statistics,
    mask_boxes,
    remove_small_regions,
    rle_areas,
    uncompressed_rles,
)
from ..models.sam import Sam
from ..predict.predictor import SamPredictor
from .geometry import build_layer_point_grids, generate_crop_boxes, near_crop_edge
from .scoring import UpscaleGeometry, upscaled_statistics

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
# Every argument the generator takes besides the model: it honours all of the official ones.
GENERATOR_OPTIONS = frozenset({
    "points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh", "stability_score_offset",
    "box_nms_thresh", "crop_n_layers", "crop_nms_thresh", "crop_overlap_ratio", "crop_n_points_downscale_factor",
    "point_grids", "min_mask_region_area", "output_mode", "fast",
})
_CHUNK_FLOATS = 1 << 25  # full-size logits held at once while encoding kept masks (128 MB)
# Whole images per encoder pass in generate_batch, by device type. On CPU batching was not shown to
# pay (benchmarks/encoder_batch.py on 2 loaded cores: 0.72-0.93x per image with 1 thread; the
# 1.25-1.6x with 2 threads came from runs 2.5x slower than 1 thread, i.e. thread synchronisation),
# and one image per pass keeps generate()'s exact results. CUDA: a GPU is rarely full with one image.
IMAGES_PER_PASS = {"cpu": 1, "cuda": 4}


def default_images_per_pass(device: torch.device) -> int:
    """How many whole images :meth:`SamMaskGenerator.generate_batch` encodes per pass on ``device``."""
    return IMAGES_PER_PASS.get(device.type, 1)


@dataclass
class StageCounts:
    """How many masks each stage of the last :meth:`MaskGenerator.generate` call let through."""

    candidates: int = 0
    after_iou: int = 0
    after_stability: int = 0
    after_crop_edge: int = 0
    after_box_nms: int = 0
    after_crop_nms: int = 0
    final: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class _Masks:
    """Masks that passed the filters so far; tensors on the CPU, boxes XYXY inclusive pixels."""

    iou: torch.Tensor
    stability: torch.Tensor
    boxes: torch.Tensor
    points: np.ndarray
    crop_boxes: np.ndarray
    low_res: torch.Tensor | None = None
    rles: list[dict] = field(default_factory=list)

    @staticmethod
    def empty() -> "_Masks":
        return _Masks(torch.zeros(0), torch.zeros(0), torch.zeros((0, 4), dtype=torch.int64),
                      np.zeros((0, 2)), np.zeros((0, 4), dtype=np.int64))

    def select(self, keep: torch.Tensor) -> "_Masks":
        """The masks at ``keep`` (indices or a bool mask), in that order."""
        keep_np = keep.cpu().numpy()
        indices = np.flatnonzero(keep_np) if keep_np.dtype == bool else keep_np
        return _Masks(
            self.iou[keep], self.stability[keep], self.boxes[keep], self.points[keep_np],
            self.crop_boxes[keep_np], None if self.low_res is None else self.low_res[keep],
            [self.rles[i] for i in indices] if self.rles else [],
        )

    @staticmethod
    def cat(parts: list["_Masks"]) -> "_Masks":
        if not parts:
            return _Masks.empty()
        low_res = [p.low_res for p in parts]
        return _Masks(
            torch.cat([p.iou for p in parts]), torch.cat([p.stability for p in parts]),
            torch.cat([p.boxes for p in parts]), np.concatenate([p.points for p in parts]),
            np.concatenate([p.crop_boxes for p in parts]),
            None if any(x is None for x in low_res) else torch.cat(low_res),
            [r for p in parts for r in p.rles],
        )


def _xyxy_to_xywh(box: list[int]) -> list[int]:
    return [box[0], box[1], box[2] - box[0], box[3] - box[1]]


class SamMaskGenerator:
    """Automatic mask generation with the official ``SamAutomaticMaskGenerator`` arguments.

    ``model`` (the official parameter name; positional use is unchanged) is a
    :class:`~segany.models.sam.Sam` or a :class:`~segany.predict.predictor.SamPredictor` (whose current image is replaced). ``points_per_batch`` prompts are decoded at once (memory grows
    with it, the masks do not change beyond float rounding). The low-res logits of candidates
    that pass the filters are held until the crop's NMS (256 KB each at SAM's size). ``fast=True`` scores
    candidates (stability, boxes for NMS) on the low-resolution logits instead of at full size:
    the kept set may then differ slightly from the official one (the default, exact mode,
    matches it); kept masks' records are exact in both modes.
    """

    def __init__(
        self,
        model: Sam | SamPredictor,
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
        fast: bool = False,
    ) -> None:
        self.predictor = self._predictor_of(model)
        if (points_per_side is None) == (point_grids is None):
            raise GeneratorArgumentError("give exactly one of points_per_side and point_grids (set points_per_side=None with point_grids)")
        if crop_n_layers < 0:
            raise GeneratorArgumentError(f"crop_n_layers must be >= 0, got {crop_n_layers}")
        if points_per_side is not None:
            if points_per_side < 1 or crop_n_points_downscale_factor < 1:
                raise GeneratorArgumentError("points_per_side and crop_n_points_downscale_factor must be >= 1")
            self.point_grids = build_layer_point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor)
        else:
            self.point_grids = [self._check_grid(g, i) for i, g in enumerate(point_grids or [])]
            if len(self.point_grids) < crop_n_layers + 1:
                raise GeneratorArgumentError(f"point_grids needs one grid per crop layer: {crop_n_layers + 1}, got {len(self.point_grids)}")
        if points_per_batch < 1:
            raise GeneratorArgumentError(f"points_per_batch must be >= 1, got {points_per_batch}")
        if output_mode not in OUTPUT_MODES:
            raise GeneratorArgumentError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}; got {output_mode!r}")
        for name, value in (("box_nms_thresh", box_nms_thresh), ("crop_nms_thresh", crop_nms_thresh)):
            if not 0.0 <= value <= 1.0:
                raise GeneratorArgumentError(f"{name} must be in [0, 1], got {value}")
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.fast = fast
        self.counts = StageCounts()

    @staticmethod
    def _predictor_of(model: Any) -> Any:
        """The predictor the generator drives: ``model``'s, or ``model`` itself when it is one."""
        if isinstance(model, SamPredictor):
            return model
        if isinstance(model, Sam):
            return SamPredictor(model)
        raise GeneratorArgumentError(f"expected a segany Sam model or Predictor, got {type(model).__name__}")

    @staticmethod
    def _check_grid(grid: np.ndarray, index: int) -> np.ndarray:
        grid = np.asarray(grid, dtype=np.float64)
        if grid.ndim != 2 or grid.shape[1] != 2 or len(grid) == 0:
            raise GeneratorArgumentError(f"point_grids[{index}] must have shape (N, 2), got {grid.shape}")
        if not (np.isfinite(grid).all() and (grid >= 0).all() and (grid <= 1).all()):
            raise GeneratorArgumentError(f"point_grids[{index}] must hold (x, y) in [0, 1] (normalised to the crop)")
        return grid

    @property
    def mask_threshold(self) -> float:
        return self.predictor.model.mask_threshold

    @torch.inference_mode()
    def generate(self, image: np.ndarray, features: ImageFeatures | None = None,
                 check: Callable[[], None] | None = None) -> list[dict[str, Any]]:
        """Masks for an HWC RGB uint8 image, as records with the official generator's keys.

        Each record: ``segmentation`` (HxW bool, or RLE per ``output_mode``), ``area``, ``bbox``
        (XYWH), ``predicted_iou``, ``point_coords`` ([[x, y]]), ``stability_score`` and
        ``crop_box`` (XYWH). ``self.counts`` tells how many masks each stage kept. ``features``:
        the whole image's, from a predictor of the same model (the encoder then runs only for
        crops); ``check()`` runs before each decoder batch and may raise to stop the job.
        """
        check_image_array(image)
        self.counts = StageCounts()
        image_size = (int(image.shape[0]), int(image.shape[1]))
        if features is not None and features.original_size != image_size:
            raise GeneratorArgumentError(f"features are of a {features.original_size} image, not of this {image_size} one")
        self._check = check or (lambda: None)
        crop_boxes, layers = generate_crop_boxes(image_size, self.crop_n_layers, self.crop_overlap_ratio)
        masks = _Masks.cat([
            self._process_crop(image, box, layer, image_size, features if layer == 0 else None)
            for box, layer in zip(crop_boxes, layers)
        ])
        if len(crop_boxes) > 1:
            crops = torch.as_tensor(masks.crop_boxes)
            scores = 1 / ((crops[:, 2] - crops[:, 0]) * (crops[:, 3] - crops[:, 1]))
            masks = masks.select(box_nms(masks.boxes.float(), scores, self.crop_nms_thresh))
        self.counts.after_crop_nms = len(masks.iou)
        if self.min_mask_region_area > 0:
            masks = self._clean_small_regions(masks)
        self.counts.final = len(masks.iou)
        return self._records(masks)

    @torch.inference_mode()
    def generate_batch(self, images: Sequence[np.ndarray], images_per_pass: int | None = None,
                       check: Callable[[], None] | None = None) -> list[list[dict[str, Any]]]:
        """:meth:`generate` for several HWC RGB uint8 images (sizes may differ): one list of records
        per image. The whole images are encoded ``images_per_pass`` at a time (default: by device,
        :data:`IMAGES_PER_PASS`); with 1 the records are exactly :meth:`generate`'s, with more they
        may differ by the float rounding of a batched encoder. Crops (``crop_n_layers``) are encoded
        one at a time."""
        arrays = check_image_list(images)
        per_pass = default_images_per_pass(self.predictor.device) if images_per_pass is None else images_per_pass
        if isinstance(per_pass, bool) or not isinstance(per_pass, int) or per_pass < 1:
            raise GeneratorArgumentError(f"images_per_pass must be a whole number >= 1, got {per_pass!r}")
        records = []
        for start in range(0, len(arrays), per_pass):
            group = arrays[start : start + per_pass]
            if check is not None:
                check()
            if len(group) == 1:
                records.append(self.generate(group[0], check=check))
                continue
            self.predictor.set_image_batch(group)
            features = self.predictor.batch_features()
            records.extend(self.generate(image, features=f, check=check) for image, f in zip(group, features))
        return records

    def _process_crop(self, image: np.ndarray, crop_box: list[int], layer: int, image_size: tuple[int, int],
                      features: ImageFeatures | None) -> _Masks:
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1]
        crop_size = crop.shape[:2]
        self._check()
        if features is not None:  # layer 0 is the whole image
            self.predictor.set_image_features(features)
        else:
            self.predictor.set_image(crop)
        points = self.point_grids[layer] * np.array(crop_size, dtype=np.float64)[None, ::-1]
        batches = [
            self._process_batch(points[i : i + self.points_per_batch], crop_size, crop_box, image_size)
            for i in range(0, len(points), self.points_per_batch)
        ]
        masks = _Masks.cat(batches)
        masks = masks.select(box_nms(masks.boxes.float(), masks.iou, self.box_nms_thresh))
        self.counts.after_box_nms += len(masks.iou)
        # the kept masks' scores and boxes from the same full-size logits as their masks
        masks.rles, masks.stability, masks.boxes = self._full_size(masks.low_res, crop_box, image_size)
        masks.low_res = None
        self.predictor.reset_image()
        offset = torch.tensor([x0, y0, x0, y0], dtype=torch.int64)
        masks.boxes = masks.boxes + offset
        masks.points = masks.points + np.array([x0, y0], dtype=masks.points.dtype)
        return masks

    def _process_batch(
        self, points: np.ndarray, crop_size: tuple[int, int], crop_box: list[int], image_size: tuple[int, int]
    ) -> _Masks:
        self._check()
        coords = self.predictor.transform.apply_coords(points, crop_size)
        coords_t = torch.as_tensor(coords, device=self.predictor.device)[:, None, :]
        labels = torch.ones((len(points), 1), dtype=torch.int, device=self.predictor.device)
        low_res, iou = self.predictor.predict_low_res_torch(coords_t, labels, multimask_output=True)
        per_point = low_res.shape[1]
        low_res, iou = low_res.flatten(0, 1), iou.flatten(0, 1).float()
        points = np.repeat(points, per_point, axis=0)
        self.counts.candidates += len(iou)
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

    def _chunks(self, count: int, crop_size: tuple[int, int]) -> list[slice]:
        per_mask = self.predictor.model.image_size ** 2 + crop_size[0] * crop_size[1]
        step = max(1, _CHUNK_FLOATS // per_mask)
        return [slice(i, i + step) for i in range(0, count, step)]

    def _score(self, low_res: torch.Tensor, crop_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stability scores and crop-frame boxes of candidates from their low-res logits."""
        if self.fast:
            return self._score_low_res(low_res, crop_size)
        assert self.predictor.input_size is not None
        geometry = UpscaleGeometry.build(low_res.shape[-1], self.predictor.transform.target_length, self.predictor.input_size, crop_size)
        return upscaled_statistics(
            low_res, geometry, self.mask_threshold, self.stability_score_offset,
            lambda logits: self.predictor.upscale_logits(logits[:, None])[:, 0],
        )

    def _score_low_res(self, low_res: torch.Tensor, crop_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Fast mode: stability and boxes on the low-res logits of the image area, boxes scaled up."""
        input_h, input_w = self.predictor.input_size or crop_size
        low, size = low_res.shape[-1], self.predictor.model.image_size
        rows, cols = math.ceil(input_h * low / size), math.ceil(input_w * low / size)
        logits = low_res[:, :rows, :cols]
        stability, boxes = logit_statistics(logits, self.mask_threshold, self.stability_score_offset)
        scale = torch.tensor([crop_size[1] / cols, crop_size[0] / rows] * 2, dtype=torch.float64)
        limit = torch.tensor([crop_size[1] - 1, crop_size[0] - 1] * 2, dtype=torch.float64)
        corner = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)
        scaled = ((boxes.cpu().double() + corner) * scale - corner).floor().clamp(min=torch.zeros(4, dtype=torch.float64), max=limit)
        empty = (boxes == 0).all(dim=1).cpu()
        scaled[empty] = 0
        return stability.cpu(), scaled.to(torch.int64)

    def _full_size(
        self, low_res: torch.Tensor | None, crop_box: list[int], image_size: tuple[int, int]
    ) -> tuple[list[dict], torch.Tensor, torch.Tensor]:
        """Image-frame COCO RLEs, stability scores and crop-frame boxes of kept candidates, from
        their logits upsampled to the crop's size a chunk at a time."""
        rles: list[dict] = []
        stabilities, boxes = [torch.zeros(0)], [torch.zeros((0, 4), dtype=torch.int64)]
        x0, y0, x1, y1 = crop_box
        for chunk in self._chunks(0 if low_res is None else len(low_res), (y1 - y0, x1 - x0)):
            logits = self.predictor.upscale_logits(low_res[chunk, None])[:, 0]
            stability, box = logit_statistics(logits, self.mask_threshold, self.stability_score_offset)
            stabilities.append(stability.cpu())
            boxes.append(box.cpu())
            masks = (logits > self.mask_threshold).cpu()
            if (x1 - x0, y1 - y0) != (image_size[1], image_size[0]):
                framed = torch.zeros((len(masks), *image_size), dtype=torch.bool)
                framed[:, y0:y1, x0:x1] = masks
                masks = framed
            rles.extend(encode_rles(masks.numpy()))
        return rles, torch.cat(stabilities), torch.cat(boxes)

    def _clean_small_regions(self, masks: _Masks) -> _Masks:
        """Fill small holes, drop small islands, then NMS again preferring masks that did not change."""
        if len(masks.iou) == 0:
            return masks
        boxes, scores, edited = [], [], {}
        for i, rle in enumerate(masks.rles):
            mask, filled = remove_small_regions(decode_rle(rle), self.min_mask_region_area, "holes")
            mask, dropped = remove_small_regions(mask, self.min_mask_region_area, "islands")
            changed = filled or dropped
            scores.append(0.0 if changed else 1.0)
            boxes.append(mask_boxes(torch.from_numpy(mask)[None])[0] if changed else masks.boxes[i])
            if changed:
                edited[i] = mask
        new_boxes = torch.stack(boxes)
        keep = box_nms(new_boxes.float(), torch.tensor(scores), max(self.box_nms_thresh, self.crop_nms_thresh))
        for i in keep.tolist():
            if i in edited:
                masks.rles[i] = encode_rle(edited[i])
                masks.boxes[i] = new_boxes[i]
        return masks.select(keep)

    def _records(self, masks: _Masks) -> list[dict[str, Any]]:
        if self.output_mode == "coco_rle":
            segmentations: list[Any] = masks.rles
        elif self.output_mode == "binary_mask":
            segmentations = [decode_rle(rle) for rle in masks.rles]
        else:
            segmentations = [uncompressed_rles(decode_rle(rle)[None])[0] for rle in masks.rles]
        areas = rle_areas(masks.rles)
        return [
            {
                "segmentation": segmentations[i],
                "area": areas[i],
                "bbox": _xyxy_to_xywh(masks.boxes[i].tolist()),
                "predicted_iou": masks.iou[i].item(),
                "point_coords": [masks.points[i].tolist()],
                "stability_score": masks.stability[i].item(),
                "crop_box": _xyxy_to_xywh(masks.crop_boxes[i].tolist()),
            }
            for i in range(len(masks.iou))
        ]
