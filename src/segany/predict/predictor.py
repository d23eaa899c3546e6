"""One image, many prompts: the official ``SamPredictor`` semantics with checked inputs.

``set_image`` runs the heavy image encoder once; every ``predict`` then runs only the prompt
encoder and the light mask decoder. Coordinates are (x, y) pixels of the original image, boxes
XYXY, images HWC RGB uint8.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from ..data.images import check_image_array, check_image_list
from ..engine import ImageFeatures
from ..errors import ConfigError, PredictorStateError, PromptError, UnsupportedOperationError
from ..models.sam import Sam
from ..prompts import check_box, check_mask_input, check_points, check_torch_prompts
from .runtime import Runtime
from .transforms import ResizeLongestSide


def per_image_prompts(count: int, **batches: Sequence | None) -> list[list]:
    """``predict_batch``'s prompt lists (``point_coords_batch=...``), each checked to have one entry
    per image, in the order given; a list given as None becomes ``count`` Nones (no such prompt)."""
    columns = []
    for name, value in batches.items():
        if value is None:
            columns.append([None] * count)
            continue
        listed = isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim > 0)
        if not listed or len(value) != count:
            got = f"{len(value)} entries" if listed else f"a {type(value).__name__}"
            raise PromptError(f"{name} must have one entry per image ({count}), got {got}")
        columns.append(list(value))
    return columns


class SamPredictor:
    """Promptable segmentation of one image at a time with a :class:`~segany.models.sam.Sam`
    (what ``segany.Predictor(model)`` returns for SAM and MobileSAM models), or of a batch of
    images encoded in one pass (:meth:`set_image_batch`, :meth:`predict_batch`: the official
    ``SAM2ImagePredictor`` batch interface)."""

    def __init__(
        self,
        model: Sam,
        dtype: torch.dtype | str | None = None,
        decoder_dtype: torch.dtype | str | None = None,
        compile: bool = False,
        quantize: str | None = None,
        backend: str = "torch",
        onnx_dir: str | os.PathLike | None = None,
        decoder_backend: str | None = None,
    ) -> None:
        """``dtype`` of the encoder (float32 exact, bfloat16, float16 on GPU) and ``decoder_dtype``,
        ``compile`` (torch.compile the encoder), ``quantize`` ("int8" dynamic quantisation) and
        ``backend`` ("torch" or "onnxruntime", optionally from an ``onnx_dir`` export; the
        decoder's alone with ``decoder_backend``): see :mod:`segany.predict.runtime`."""
        if not isinstance(model, Sam):
            raise ConfigError(f"SamPredictor needs a segany Sam model (segany.load_model(NAME)), got {type(model).__name__}")
        self.model = model
        self.runtime = Runtime(
            model,
            dtype=dtype,
            decoder_dtype=decoder_dtype,
            compile=compile,
            quantize=quantize,
            backend=backend,
            onnx_dir=onnx_dir,
            decoder_backend=decoder_backend,
        )
        self.transform = ResizeLongestSide(model.image_size)
        self.reset_image()

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def low_res_size(self) -> int:
        """Side of the low-res logits this model predicts and takes as ``mask_input`` (256 officially)."""
        return self.model.config.low_res_size

    def reset_image(self) -> None:
        """Forget the current image, its embedding and the decoder's work shared across its prompts."""
        self.is_image_set = False
        self.features: torch.Tensor | None = None
        self.runtime.forget_image()
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None
        # set_image_batch: each image's (embedding view, original size, input size), and all embeddings
        self._batch: list[tuple[torch.Tensor, tuple[int, int], tuple[int, int]]] = []
        self._batch_embedding: torch.Tensor | None = None

    def _resized(self, image: np.ndarray) -> torch.Tensor:
        """An RGB (or model-format) image resized to the model's longest side, (1, 3, h, w) uint8."""
        resized = self.transform.apply_image(np.ascontiguousarray(image))
        return torch.as_tensor(resized, device=self.device).permute(2, 0, 1)[None]

    @torch.inference_mode()
    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Compute the embedding of an HWC uint8 image (``image_format`` "RGB" or "BGR")."""
        check_image_array(image)
        if image_format not in ("RGB", "BGR"):
            raise PromptError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        if image_format != self.model.image_format:
            image = image[..., ::-1]
        self.set_torch_image(self._resized(image), image.shape[:2])

    @torch.inference_mode()
    def set_image_batch(self, image_list: Sequence[np.ndarray]) -> None:
        """Embed several HWC uint8 RGB images (sizes may differ) in one encoder pass, for
        :meth:`predict_batch`; :meth:`predict` then answers on the last of them."""
        arrays = check_image_list(image_list)
        if self.model.image_format != "RGB":
            arrays = [image[..., ::-1] for image in arrays]
        self.reset_image()
        resized = [self._resized(image) for image in arrays]
        embeddings = self.runtime.encode(torch.cat([self.model.preprocess(r) for r in resized]))
        self._batch = [(embeddings[i : i + 1], (int(a.shape[0]), int(a.shape[1])), (int(r.shape[2]), int(r.shape[3])))
                       for i, (a, r) in enumerate(zip(arrays, resized))]
        self._batch_embedding = embeddings
        self._select(len(self._batch) - 1)
        self.is_image_set = True

    def batch_features(self) -> list[ImageFeatures]:
        """Each image's features after :meth:`set_image_batch`, for :meth:`set_image_features` (the
        automatic mask generator's multi-image passes, stored embeddings)."""
        self._require_image()
        if not self._batch:
            raise PredictorStateError("batch_features needs set_image_batch(images) first")
        return [ImageFeatures((embedding,), original, input_) for embedding, original, input_ in self._batch]

    def _select(self, index: int) -> None:
        """Make image ``index`` of the batch the current one."""
        self.features, self.original_size, self.input_size = self._batch[index]

    @torch.inference_mode()
    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]) -> None:
        """Embed an already resized (1, 3, h, w) image whose longest side is the model's input size."""
        if transformed_image.ndim != 4 or transformed_image.shape[:2] != (1, 3):
            raise PromptError(f"transformed_image must be 1x3xHxW, got {tuple(transformed_image.shape)}")
        if max(transformed_image.shape[2:]) != self.model.image_size:
            raise PromptError(f"transformed_image's longest side must be {self.model.image_size}")
        self.reset_image()
        self.original_size = (int(original_image_size[0]), int(original_image_size[1]))
        self.input_size = (int(transformed_image.shape[2]), int(transformed_image.shape[3]))
        self.features = self.runtime.encode(self.model.preprocess(transformed_image))
        self.is_image_set = True

    def image_features(self) -> ImageFeatures:
        """The current image's features: its embedding and sizes, for :meth:`set_image_features`."""
        self._require_image()
        if self._batch:
            raise UnsupportedOperationError("image_features is for one image: call set_image, not set_image_batch")
        assert self.features is not None and self.original_size is not None and self.input_size is not None
        return ImageFeatures((self.features,), self.original_size, self.input_size)

    def set_image_features(self, features: ImageFeatures) -> None:
        """Take an image's features computed by a predictor of the same model instead of running the encoder."""
        (embedding,) = features.maps
        expected = (1, self.model.config.prompt_embed_dim, self.model.config.embedding_size, self.model.config.embedding_size)
        if not isinstance(embedding, torch.Tensor) or tuple(embedding.shape) != expected:
            raise PromptError(f"features hold a {getattr(embedding, 'shape', type(embedding).__name__)} embedding; "
                              f"this model takes {expected}")
        self.reset_image()
        self.original_size, self.input_size = features.original_size, features.input_size
        self.features = embedding.to(self.device)
        self.is_image_set = True

    def get_image_embedding(self) -> torch.Tensor:
        """The current image's embedding, (1, C, h, w): (1, 256, 64, 64) for the official models;
        after :meth:`set_image_batch` all the images' (B, C, h, w), as the official batch predictor."""
        self._require_image()
        if self._batch_embedding is not None:
            return self._batch_embedding
        assert self.features is not None
        return self.features

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise PredictorStateError("no image is set: call set_image(image) before predicting")

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for one prompt set: (C, H, W) bool masks, (C,) predicted IoUs, (C, low, low) logits
        (low = :attr:`low_res_size`, 256 for the official models).

        ``point_coords`` (N, 2) in pixels with ``point_labels`` (N,) of 1 (foreground) / 0
        (background); ``box`` (4,) XYXY; ``mask_input`` (1, low, low) low-res logits from a previous
        call. ``multimask_output`` gives 3 candidates for ambiguous prompts, else 1.
        """
        self._require_image()
        assert self.original_size is not None
        coords_t = labels_t = box_t = mask_t = None
        points = check_points(point_coords, point_labels, self.original_size)
        box_np = check_box(box, self.original_size)
        mask_np = check_mask_input(mask_input, self.low_res_size)
        if points is not None:
            coords, labels = points
            coords = self.transform.apply_coords(coords, self.original_size)
            coords_t = torch.as_tensor(coords, dtype=torch.float, device=self.device)[None]
            labels_t = torch.as_tensor(labels, dtype=torch.int, device=self.device)[None]
        if box_np is not None:
            box_np = self.transform.apply_boxes(box_np, self.original_size)
            box_t = torch.as_tensor(box_np, dtype=torch.float, device=self.device)[None, :]
        if mask_np is not None:
            mask_t = torch.as_tensor(mask_np, dtype=torch.float, device=self.device)[None]
        masks, iou, low_res = self._predict(coords_t, labels_t, box_t, mask_t, multimask_output, return_logits)
        return masks[0].cpu().numpy(), iou[0].float().cpu().numpy(), low_res[0].float().cpu().numpy()

    def predict_batch(
        self,
        point_coords_batch: Sequence[np.ndarray | None] | None = None,
        point_labels_batch: Sequence[np.ndarray | None] | None = None,
        box_batch: Sequence[np.ndarray | None] | None = None,
        mask_input_batch: Sequence[np.ndarray | None] | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """:meth:`predict` for every image of :meth:`set_image_batch` with its own prompts (entry
        ``i`` of each list, None: no such prompt): lists of masks, IoUs and low-res logits."""
        self._require_image()
        if not self._batch:
            raise PredictorStateError("predict_batch needs set_image_batch(images) first")
        count = len(self._batch)
        prompts = per_image_prompts(count, point_coords_batch=point_coords_batch, point_labels_batch=point_labels_batch,
                                    box_batch=box_batch, mask_input_batch=mask_input_batch)
        outputs = []
        try:
            for index in range(count):
                self._select(index)
                outputs.append(self.predict(*(p[index] for p in prompts), multimask_output=multimask_output,
                                            return_logits=return_logits))
        finally:
            self._select(count - 1)
        masks, ious, low_res = zip(*outputs)
        return list(masks), list(ious), list(low_res)

    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """B prompt sets at once, in the model's input frame (use ``self.transform.apply_*_torch``).

        ``point_coords`` (B, N, 2), ``point_labels`` (B, N) of 1 / 0 / -1 (padding), ``boxes``
        (B, 4), ``mask_input`` (B, 1, low, low). Returns (B, C, H, W) masks, (B, C) IoUs and
        (B, C, low, low) logits.
        """
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
        """``predict_torch`` without the upsampling: (B, C, low, low) low-res logits and (B, C) IoUs.

        For callers that filter many candidates before paying for full-size masks (the automatic
        mask generator); :meth:`upscale_logits` turns the kept ones into full-size logits.
        """
        self._check_torch_prompts(point_coords, point_labels, boxes, mask_input)
        return self._decode(point_coords, point_labels, boxes, mask_input, multimask_output)

    @torch.inference_mode()
    def upscale_logits(self, low_res_logits: torch.Tensor) -> torch.Tensor:
        """(B, C, low, low) low-res logits → (B, C, H, W) logits at the original image size.

        The same values ``predict_torch(..., return_logits=True)`` returns; threshold at
        ``model.mask_threshold`` for masks.
        """
        self._require_image()
        assert self.input_size is not None and self.original_size is not None
        return self.model.postprocess_masks(low_res_logits, self.input_size, self.original_size)

    def _check_torch_prompts(self, point_coords: torch.Tensor | None, point_labels: torch.Tensor | None,
                             boxes: torch.Tensor | None, mask_input: torch.Tensor | None) -> None:
        self._require_image()
        check_torch_prompts(point_coords, point_labels, boxes, mask_input, self.low_res_size)

    @torch.inference_mode()
    def _predict(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
        return_logits: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        low_res, iou = self._decode(point_coords, point_labels, boxes, mask_input, multimask_output)
        masks = self.upscale_logits(low_res)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou, low_res

    @torch.inference_mode()
    def _decode(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.features is not None
        return self.runtime.decode(self.features, point_coords, point_labels, boxes, mask_input, multimask_output)
