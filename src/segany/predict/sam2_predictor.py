"""One image (or a batch of images), many prompts: the official ``SAM2ImagePredictor`` semantics.

``set_image`` resizes the image to S x S without keeping the aspect ratio (:mod:`segany.predict.
sam2_transforms`) and keeps the stride-16 embedding (plus ``no_mem_embed``) and the two projected
high-resolution maps; ``predict`` decodes prompts on them. Coordinates are (x, y) pixels of the
original image (or relative [0, 1] with ``normalize_coords=False``), boxes XYXY. Masks come from
the 256x256 logits resized bilinearly straight to the original size; the returned low-res logits
are clamped to [-32, 32] as the official ones.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.images import check_image_array, check_image_list
from ..engine import ImageFeatures
from ..errors import ConfigError, PredictorStateError, PromptError, UnsupportedOperationError
from ..masks import clean_mask_scores
from ..models.sam2 import Sam2
from ..prompts import as_array, check_boxes, check_inside, check_labels, check_torch_prompts
from .onnx_backend import sam2_backend
from .predictor import per_image_prompts
from .runtime import Sam2Runtime, resolve_dtype
from .sam2_transforms import preprocess_batch, preprocess_image

LOW_RES_CLAMP = 32.0  # the official predictor clamps the low-res logits it returns


def _as_image(image: Any, image_format: str = "RGB") -> np.ndarray:
    """An HxWx3 uint8 RGB array from an array (``image_format`` RGB or BGR) or a PIL image."""
    if isinstance(image, Image.Image):
        image = np.array(image.convert("RGB"))
    check_image_array(image)
    if image_format not in ("RGB", "BGR"):
        raise PromptError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
    return np.ascontiguousarray(image[..., ::-1]) if image_format == "BGR" else image


def _float_array(tensor: torch.Tensor) -> np.ndarray:
    """A tensor as a float32 array, a leading axis of 1 dropped (bool converted by numpy: several
    times faster than torch's bool → float on CPU)."""
    return tensor.squeeze(0).cpu().numpy().astype(np.float32, copy=False)


class Sam2Predictor:
    """Promptable segmentation with a :class:`~segany.models.sam2.Sam2` (what ``segany.Predictor``
    returns for SAM 2 / 2.1 models), with the official ``SAM2ImagePredictor`` argument names.

    ``mask_threshold`` turns logits into masks. ``max_hole_area`` / ``max_sprinkle_area`` (pixels
    of the low-res logits; 0 = off, the default) fill small holes and remove small specks before
    the upsampling, as the official post-processing does with its CUDA extension (which CPU users of
    the official code do not get: it is skipped there); here with OpenCV (:func:`segany.masks.clean_mask_scores`). ``dtype`` (float32 exact, bfloat16, float16)
    runs the image encoder in that dtype (a copy with its weights cast once); its features are
    kept in float32 and prompts are decoded in float32 by the fast decoder
    (:class:`segany.predict.runtime.Sam2Runtime`). ``backend="onnxruntime"`` runs the image encoder
    and the prompt decoder as the ONNX graphs of ``segany export onnx`` (read from ``onnx_dir``, or
    exported on the fly): same prompt checks, token choice and upsampling, logits within 1e-3.
    """

    def __init__(self, model: Sam2, mask_threshold: float = 0.0, max_hole_area: float = 0.0,
                 max_sprinkle_area: float = 0.0, dtype: torch.dtype | str | None = None, backend: str = "torch",
                 onnx_dir: str | os.PathLike | None = None) -> None:
        if not isinstance(model, Sam2):
            raise ConfigError(f"Sam2Predictor needs a segany Sam2 model (segany.load_model(NAME)), got {type(model).__name__}")
        for name, area in (("max_hole_area", max_hole_area), ("max_sprinkle_area", max_sprinkle_area)):
            if not isinstance(area, (int, float)) or isinstance(area, bool) or not area >= 0:
                raise PromptError(f"{name} must be a number of pixels >= 0, got {area!r}")
        self.max_hole_area, self.max_sprinkle_area = float(max_hole_area), float(max_sprinkle_area)
        self.model = model
        self.mask_threshold = float(mask_threshold)
        self.dtype = resolve_dtype(dtype)
        self.backend = backend
        self._onnx = sam2_backend(model, backend, onnx_dir, self.dtype)
        self.runtime = Sam2Runtime(model, self.dtype)
        self.reset_predictor()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def low_res_size(self) -> int:
        """Side of the low-res logits (256 at 1024 px): also the ``mask_input`` size."""
        return 4 * self.model.config.image_embedding_size

    @property
    def original_size(self) -> tuple[int, int] | None:
        """(H, W) of the current image (the last one of a batch)."""
        return self._orig_hw[-1] if self._orig_hw else None

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(S, S): the model's input frame (the image is resized to it, not padded)."""
        return (self.model.image_size, self.model.image_size) if self.is_image_set else None

    def reset_predictor(self) -> None:
        """Forget the image(s) and their features."""
        self.is_image_set = False
        self._is_batch = False
        self._features: dict[str, Any] | None = None
        self._orig_hw: list[tuple[int, int]] = []
        self.runtime.forget_image()

    reset_image = reset_predictor

    @torch.inference_mode()
    def set_image(self, image: np.ndarray | Image.Image, image_format: str = "RGB") -> None:
        """Compute the features of one HWC uint8 image (or PIL image)."""
        array = _as_image(image, image_format)
        self.reset_predictor()
        tensor = preprocess_image(array, self.model.image_size)[None].to(self.device)
        self._set_features(tensor, [array.shape[:2]], batch=False)

    @torch.inference_mode()
    def set_image_batch(self, image_list: Sequence[np.ndarray]) -> None:
        """Compute the features of several HWC uint8 images (sizes may differ) for :meth:`predict_batch`."""
        arrays = check_image_list(image_list)
        self.reset_predictor()
        tensor = preprocess_batch(arrays, self.model.image_size).to(self.device)
        self._set_features(tensor, [a.shape[:2] for a in arrays], batch=True)

    def _set_features(self, images: torch.Tensor, sizes: list[tuple[int, ...]], batch: bool) -> None:
        if self._onnx is not None:
            embed, high_res = self._onnx.encode(images)
            embed, high_res = embed.to(self.device), [feat.to(self.device) for feat in high_res]
        else:
            embed, high_res = self.runtime.encode(images)
        self._features = {"image_embed": embed, "high_res_feats": high_res}
        self._orig_hw = [(int(h), int(w)) for h, w in sizes]
        self._is_batch = batch
        self.is_image_set = True

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise PredictorStateError("no image is set: call set_image(image) before predicting")

    def get_image_embedding(self) -> torch.Tensor:
        """The image embedding (B, C, h, w): (1, 256, 64, 64) for one image of the official models."""
        self._require_image()
        assert self._features is not None
        return self._features["image_embed"]

    def image_features(self) -> ImageFeatures:
        """The current image's features: ``maps`` = (image_embed, feat_s0, feat_s1)."""
        self._require_image()
        assert self._features is not None and self.original_size is not None and self.input_size is not None
        if self._is_batch:
            raise UnsupportedOperationError("image_features is for one image: call set_image, not set_image_batch")
        return ImageFeatures((self._features["image_embed"], *self._features["high_res_feats"]),
                             self.original_size, self.input_size)

    def set_image_features(self, features: ImageFeatures) -> None:
        """Take an image's features computed by a predictor of the same model instead of running the encoder."""
        c, g = self.model.hidden_dim, self.model.config.image_embedding_size
        expected = [(1, c, g, g)]
        if self.model.use_high_res_features_in_sam:
            expected += [(1, c // 8, 4 * g, 4 * g), (1, c // 4, 2 * g, 2 * g)]
        given = [tuple(getattr(m, "shape", ())) for m in features.maps]
        if given != expected or not all(isinstance(m, torch.Tensor) for m in features.maps):
            raise PromptError(f"features hold maps of shapes {given}; this model takes {expected}")
        self.reset_predictor()
        maps = [m.to(self.device) for m in features.maps]
        self._features = {"image_embed": maps[0], "high_res_feats": maps[1:]}
        self._orig_hw = [tuple(features.original_size)]
        self.is_image_set = True

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for the prompts on the current image: (C, H, W) float32 0/1 masks (logits with
        ``return_logits``), (C,) IoU predictions, (C, 256, 256) low-res logits; with B prompt sets
        (``box`` of shape (B, 4), points (B, N, 2)) each has a leading B axis.

        ``point_coords`` (N, 2) with ``point_labels`` (N,) of 1 / 0, ``box`` XYXY, ``mask_input``
        (1, 256, 256) logits of a previous call; pixels of the original image, or relative [0, 1]
        coordinates with ``normalize_coords=False``.
        """
        self._require_image()
        return self._predict_image(-1, point_coords, point_labels, box, mask_input, multimask_output,
                                   return_logits, normalize_coords)

    def predict_batch(
        self,
        point_coords_batch: Sequence[np.ndarray | None] | None = None,
        point_labels_batch: Sequence[np.ndarray | None] | None = None,
        box_batch: Sequence[np.ndarray | None] | None = None,
        mask_input_batch: Sequence[np.ndarray | None] | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """:meth:`predict` for every image of :meth:`set_image_batch`: lists of masks, IoUs, low-res logits."""
        self._require_image()
        if not self._is_batch:
            raise PredictorStateError("predict_batch needs set_image_batch(images) first")
        count = len(self._orig_hw)
        batches = per_image_prompts(count, point_coords_batch=point_coords_batch, point_labels_batch=point_labels_batch,
                                    box_batch=box_batch, mask_input_batch=mask_input_batch)
        outputs = [self._predict_image(i, *(b[i] for b in batches), multimask_output, return_logits, normalize_coords)
                   for i in range(count)]
        masks, ious, low_res = zip(*outputs)
        return list(masks), list(ious), list(low_res)

    def _predict_image(self, img_idx: int, point_coords: Any, point_labels: Any, box: Any, mask_input: Any,
                       multimask_output: bool, return_logits: bool, normalize_coords: bool,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        coords, labels, boxes, mask = self._prep_prompts(point_coords, point_labels, box, mask_input,
                                                         normalize_coords, img_idx)
        masks, iou, low_res = self._predict(coords, labels, boxes, mask, multimask_output, return_logits, img_idx)
        return _float_array(masks), _float_array(iou), _float_array(low_res)

    def _transform_coords(self, coords: torch.Tensor, normalize: bool, orig_hw: tuple[int, int]) -> torch.Tensor:
        """Original pixels (or relative [0, 1] without ``normalize``) → the model's S x S frame."""
        if normalize:
            h, w = orig_hw
            coords = coords.clone()
            coords[..., 0] = coords[..., 0] / w
            coords[..., 1] = coords[..., 1] / h
        return coords * self.model.image_size

    def _prep_prompts(self, point_coords: Any, point_labels: Any, box: Any, mask_input: Any,
                      normalize_coords: bool, img_idx: int = -1,
                      ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Checked prompts as the official ``_prep_prompts`` hands them to ``_predict``: points
        (B, N, 2) / labels (B, N) and boxes (B, 2, 2) in the model frame, mask (B, 1, 256, 256)."""
        orig_hw = self._orig_hw[img_idx]
        bounds = orig_hw if normalize_coords else (1, 1)
        if (point_coords is None) != (point_labels is None):
            raise PromptError("point_coords and point_labels must be given together")
        coords_t = labels_t = box_t = mask_t = None
        sets: dict[str, int] = {}
        if point_coords is not None:
            coords = as_array(point_coords, "point_coords")
            labels = as_array(point_labels, "point_labels")
            if coords.ndim not in (2, 3) or coords.shape[-1] != 2:
                raise PromptError(f"point_coords must have shape (N, 2) or (B, N, 2), got {coords.shape}")
            if labels.shape != coords.shape[:-1]:
                raise PromptError(f"point_labels must have shape {coords.shape[:-1]}, got {labels.shape}")
            check_inside(coords, bounds, "point_coords" + ("" if normalize_coords else " (relative, normalize_coords=False)"))
            # B sets of N clicks: -1 pads the sets with fewer clicks (SAM's "not a point"), as the official accepts
            check_labels(labels, {-1, 0, 1} if coords.ndim == 3 else {0, 1})
            if coords.ndim == 3 and box is None and mask_input is None and (labels == -1).all(axis=1).any():
                raise PromptError("a prompt set of point_labels -1 only (padding) has no prompt: "
                                  "give it a click or a box")
            coords_t = torch.as_tensor(coords, dtype=torch.float, device=self.device)
            coords_t = self._transform_coords(coords_t, normalize_coords, orig_hw)
            labels_t = torch.as_tensor(labels, dtype=torch.int, device=self.device)
            if coords_t.ndim == 2:
                coords_t, labels_t = coords_t[None], labels_t[None]
            sets["point_coords"] = coords_t.shape[0]
        if box is not None:
            box_np = as_array(box, "box")
            if box_np.shape[-1:] != (4,) or box_np.ndim > 2:
                raise PromptError(f"box must have shape (4,) or (B, 4) as XYXY, got {box_np.shape}")
            check_boxes(box_np.reshape(-1, 4))
            check_inside(box_np.reshape(-1, 2), bounds, "box")
            box_t = torch.as_tensor(box_np, dtype=torch.float, device=self.device)
            box_t = self._transform_coords(box_t.reshape(-1, 2, 2), normalize_coords, orig_hw)
            sets["box"] = box_t.shape[0]
        if mask_input is not None:
            low = self.low_res_size
            mask = as_array(mask_input, "mask_input")
            if mask.ndim == 2:
                mask = mask[None]
            if mask.ndim == 3:
                mask = mask[None]
            if mask.ndim != 4 or mask.shape[1:] != (1, low, low):
                raise PromptError(f"mask_input must have shape (1, {low}, {low}) (low_res_masks of a previous call) "
                                  f"or (B, 1, {low}, {low}), got {as_array(mask_input, 'mask_input').shape}")
            mask_t = torch.as_tensor(mask, dtype=torch.float, device=self.device)
            sets["mask_input"] = mask_t.shape[0]
        if len(set(sets.values())) > 1:
            raise PromptError("prompt sets disagree in number: " + ", ".join(f"{k} {v}" for k, v in sets.items()))
        return coords_t, labels_t, box_t, mask_t

    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """B prompt sets at once in the model's S x S frame (the official ``_predict``): points
        (B, N, 2) with labels (B, N) of 1 / 0 / -1, boxes (B, 4) or (B, 2, 2), mask_input
        (B, 1, 256, 256). Returns (B, C, H, W) masks (logits with ``return_logits``), (B, C) IoUs
        and (B, C, 256, 256) low-res logits clamped to [-32, 32]."""
        self._check_torch_prompts(point_coords, point_labels, boxes, mask_input)
        return self._predict(point_coords, point_labels, boxes, mask_input, multimask_output, return_logits)

    def predict_low_res_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`predict_torch` without the upsampling: the (B, C, 256, 256) low-res logits, not
        clamped, and the (B, C) IoUs; :meth:`upscale_logits` gives their full-size logits."""
        self._check_torch_prompts(point_coords, point_labels, boxes, mask_input)
        return self._decode(point_coords, point_labels, boxes, mask_input, multimask_output, -1)

    @torch.inference_mode()
    def upscale_logits(self, low_res_logits: torch.Tensor, img_idx: int = -1) -> torch.Tensor:
        """(B, C, 256, 256) logits → (B, C, H, W) at the original image size (bilinear, no antialias)."""
        self._require_image()
        # one plane per mask: the same bilinear weights (rounding may differ in the last bit),
        # more than twice as fast on CPU as three channels at once
        size = self._orig_hw[img_idx]
        planes = low_res_logits.float().flatten(0, 1)[:, None]
        return F.interpolate(planes, size, mode="bilinear", align_corners=False).view(*low_res_logits.shape[:2], *size)

    def _check_torch_prompts(self, point_coords: torch.Tensor | None, point_labels: torch.Tensor | None,
                             boxes: torch.Tensor | None, mask_input: torch.Tensor | None) -> None:
        self._require_image()
        check_torch_prompts(point_coords, point_labels, boxes, mask_input, self.low_res_size, corner_pairs=True)

    @torch.inference_mode()
    def _decode(self, point_coords: torch.Tensor | None, point_labels: torch.Tensor | None, boxes: torch.Tensor | None,
                mask_input: torch.Tensor | None, multimask_output: bool, img_idx: int,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._features is not None
        if self._onnx is not None and (point_coords is not None or boxes is not None):
            embed = self._features["image_embed"][img_idx].unsqueeze(0)
            high_res = [level[img_idx].unsqueeze(0) for level in self._features["high_res_feats"]]
            low_res, iou = self._onnx.decode(embed, high_res, point_coords, point_labels, boxes, mask_input, multimask_output)
            return low_res.to(self.device), iou.to(self.device)
        return self.runtime.decode(self._features["image_embed"], self._features["high_res_feats"], img_idx,
                                   point_coords, point_labels, boxes, mask_input, multimask_output)

    @torch.inference_mode()
    def _predict(self, point_coords: torch.Tensor | None, point_labels: torch.Tensor | None, boxes: torch.Tensor | None,
                 mask_input: torch.Tensor | None, multimask_output: bool, return_logits: bool, img_idx: int = -1,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        low_res, iou = self._decode(point_coords, point_labels, boxes, mask_input, multimask_output, img_idx)
        cleaned = low_res
        if self.max_hole_area > 0 or self.max_sprinkle_area > 0:
            cleaned = clean_mask_scores(low_res, self.mask_threshold, self.max_hole_area, self.max_sprinkle_area)
        masks = self.upscale_logits(cleaned, img_idx)
        if not return_logits:
            masks = masks > self.mask_threshold
        return masks, iou, low_res.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)
