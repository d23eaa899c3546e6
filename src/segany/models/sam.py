"""The Segment Anything model: image encoder, prompt encoder and mask decoder, plus the pixel
normalisation and mask geometry that tie them to image coordinates."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import PromptError
from .config import SamConfig, TinyViTConfig, ViTConfig
from .encoders.tiny_vit import TinyViT
from .encoders.vit import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .transformer import TwoWayTransformer

# The prompts of one ``Sam.forward`` image record (keys in the order the prompt encoder takes them).
_PROMPT_KEYS = ("point_coords", "point_labels", "boxes", "mask_inputs")


class Sam(nn.Module):
    """Holds the three networks under their official attribute names (and so state-dict keys)."""

    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(self, config: SamConfig) -> None:
        super().__init__()
        self.config = config
        if isinstance(config.encoder, ViTConfig):
            self.image_encoder: nn.Module = ImageEncoderViT(config.encoder)
        elif isinstance(config.encoder, TinyViTConfig):
            self.image_encoder = TinyViT(config.encoder)
        else:
            raise TypeError(f"unknown encoder config {type(config.encoder).__name__}")
        grid, size = config.embedding_size, config.image_size
        self.prompt_encoder = PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(size, size),
            mask_in_chans=config.mask_in_chans,
        )
        self.mask_decoder = MaskDecoder(
            transformer_dim=config.prompt_embed_dim,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                num_heads=config.decoder_num_heads,
                mlp_dim=config.decoder_mlp_dim,
                attention_downsample_rate=config.attention_downsample_rate,
            ),
            num_multimask_outputs=config.num_multimask_outputs,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        )
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1), persistent=False)

    @property
    def image_size(self) -> int:
        """Side of the square, padded input image."""
        return self.config.image_size

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @torch.no_grad()
    def forward(self, batched_input: list[dict[str, Any]], multimask_output: bool) -> list[dict[str, torch.Tensor]]:
        """Masks end to end from images and their prompts: the official ``Sam.forward``.

        ``batched_input`` holds one dict per image: ``image`` (3, H, W) tensor, uint8 or float,
        already resized so its longest side is ``image_size`` (1024 for the official models,
        ``ResizeLongestSide``); ``original_size``
        (H, W) before resizing; optional ``point_coords`` (B, N, 2) with ``point_labels`` (B, N),
        ``boxes`` (B, 4) and ``mask_inputs`` (B, 1, 256, 256) (``config.mask_input_size``), coordinates in the resized frame.
        Returns one dict per image: ``masks`` (B, C, H, W) bool at the original size,
        ``iou_predictions`` (B, C) and ``low_res_logits`` (B, C, 256, 256); C is 3 with
        ``multimask_output``, else 1. For prompts that arrive one by one, use a Predictor.
        """
        if not isinstance(batched_input, (list, tuple)) or not batched_input:
            raise PromptError("batched_input must be a non-empty list of dicts, one per image")
        images = [self._check_record(index, record) for index, record in enumerate(batched_input)]
        embeddings = self.image_encoder(torch.stack([self.preprocess(image) for image in images]))
        outputs = []
        for record, image, embedding in zip(batched_input, images, embeddings):
            prompts = {key: record[key].to(self.device) for key in _PROMPT_KEYS if key in record}
            points = (prompts["point_coords"], prompts["point_labels"]) if "point_coords" in prompts else None
            sparse, dense = self.prompt_encoder(points=points, boxes=prompts.get("boxes"), masks=prompts.get("mask_inputs"))
            low_res, iou = self.mask_decoder(
                embedding[None], self.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=multimask_output
            )
            original_size = (int(record["original_size"][0]), int(record["original_size"][1]))
            masks = self.postprocess_masks(low_res, (image.shape[-2], image.shape[-1]), original_size)
            outputs.append({"masks": masks > self.mask_threshold, "iou_predictions": iou, "low_res_logits": low_res})
        return outputs

    def _check_record(self, index: int, record: Any) -> torch.Tensor:
        """The checked image of one ``batched_input`` entry, as float on the model's device."""
        where = f"batched_input[{index}]"
        if not isinstance(record, Mapping):
            raise PromptError(f"{where} must be a dict, got {type(record).__name__}")
        for key in ("image", "original_size"):
            if key not in record:
                raise PromptError(f"{where} has no {key!r}")
        image = record["image"]
        size = self.image_encoder.img_size
        if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
            raise PromptError(f"{where}['image'] must be a 3xHxW tensor, got {getattr(image, 'shape', type(image).__name__)}")
        if max(image.shape[1:]) > size:
            raise PromptError(f"{where}['image'] is {tuple(image.shape)}: resize it so its longest side is {size} (ResizeLongestSide)")
        original = record["original_size"]
        if len(original) != 2 or not all(int(v) == v and v > 0 for v in original):
            raise PromptError(f"{where}['original_size'] must be (H, W) positive integers, got {original!r}")
        if ("point_coords" in record) != ("point_labels" in record):
            raise PromptError(f"{where}: point_coords and point_labels must be given together")
        batch = set()
        side = self.config.mask_input_size
        shapes = {"point_coords": (None, None, 2), "point_labels": (None, None), "boxes": (None, 4),
                  "mask_inputs": (None, 1, side, side)}  # None: any size
        for key, shape in shapes.items():
            if key not in record:
                continue
            value = record[key]
            if not isinstance(value, torch.Tensor) or value.ndim != len(shape) or any(
                want is not None and got != want for got, want in zip(value.shape, shape)
            ):
                wanted = "x".join("B" if i == 0 else ("N" if want is None else str(want)) for i, want in enumerate(shape))
                raise PromptError(f"{where}[{key!r}] must be a {wanted} tensor, got {getattr(value, 'shape', type(value).__name__)}")
            batch.add(value.shape[0])
        if "point_coords" in record and record["point_coords"].shape[:2] != record["point_labels"].shape:
            raise PromptError(f"{where}: point_labels must have shape BxN of point_coords {tuple(record['point_coords'].shape)}")
        if len(batch) > 1:
            raise PromptError(f"{where}: the prompts' batch sizes differ ({sorted(batch)})")
        return image.to(self.device, self.pixel_mean.dtype)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a (B, 3, h, w) resized image and zero-pad it to the square input size (bottom/right)."""
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        size = self.image_size
        return F.pad(x, (0, size - w, 0, size - h))

    def postprocess_masks(
        self, masks: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
    ) -> torch.Tensor:
        """Low-res logits (B, M, low, low) → logits at the original image size (B, M, H, W).

        Official steps (bilinear to the square input size, crop the padding, bilinear to the original size),
        with two shortcuts that give identical values: only the low-res rows and columns the crop
        keeps are upsampled (the 4x scale, and so every interpolation weight, is unchanged), and the
        second resize is skipped when it would map the crop onto itself (a same-size bilinear resize
        is the identity).
        """
        factor = self.image_size // masks.shape[-1]
        rows = min(masks.shape[-2], -(-input_size[0] // factor) + 1)
        cols = min(masks.shape[-1], -(-input_size[1] // factor) + 1)
        masks = F.interpolate(
            masks[..., :rows, :cols].contiguous(), (rows * factor, cols * factor), mode="bilinear", align_corners=False
        )
        masks = masks[..., : input_size[0], : input_size[1]]
        if tuple(original_size) == tuple(input_size):
            return masks
        return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)
