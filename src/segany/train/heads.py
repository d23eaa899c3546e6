"""What the training loop needs from a model family: the input frame, image features, the prompt →
mask decoding, which parameters each mode trains and the checkpoint layout.

SAM 1 / MobileSAM (:class:`~segany.models.sam.Sam`): the image resized so its longest side is the
input size and zero-padded (bottom / right), one image embedding, ``prompt_encoder`` /
``mask_decoder``, a plain state_dict. SAM 2 (:class:`~segany.models.sam2.Sam2`, its image path as
``SAM2ImagePredictor`` runs it): the image squashed to the square input size (SAM 2's transforms do
not keep the aspect ratio), the stride-16 embedding plus the two projected high-resolution maps,
``sam_prompt_encoder`` / ``sam_mask_decoder`` with the object-score logit (SAM 2's object-score
loss), the official ``{"model": state_dict}`` checkpoint. The video memory modules are not on the
image path: no mode trains them and they are saved unchanged.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..models.sam import Sam
from ..models.sam2 import Sam2
from ..predict.sam2_transforms import SAM2_PIXEL_MEAN, SAM2_PIXEL_STD
from .sampler import PromptState

Features = tuple[torch.Tensor, ...]  # (image embeddings (B, C, g, g), *high-resolution maps)
TrainableModel = Sam | Sam2


@dataclass(frozen=True)
class Family:
    """The parameter groups and frame of one model family."""

    encoder: str  # prefix of the image encoder's parameters
    heads: tuple[str, ...]  # prefixes of the prompt encoder and mask decoder (every mode trains them)
    image_path: tuple[str, ...]  # further prefixes on the image path (``full`` trains them too)
    keep_aspect: bool  # longest side resized and padded (SAM 1) or squashed to the square (SAM 2)
    wrap_checkpoint: bool  # checkpoint as {"model": state_dict} (SAM 2) or a plain state_dict


SAM_FAMILY = Family("image_encoder.", ("prompt_encoder.", "mask_decoder."), (), True, False)
SAM2_FAMILY = Family("image_encoder.", ("sam_prompt_encoder.", "sam_mask_decoder."), ("no_mem_embed",), False, True)


def family(model: nn.Module) -> Family:
    """The :class:`Family` of a SAM 1 / MobileSAM or SAM 2 model."""
    return SAM2_FAMILY if isinstance(model, Sam2) else SAM_FAMILY


def encode(model: TrainableModel, images: Sequence[torch.Tensor]) -> Features:
    """:data:`Features` of (1, 3, h, w) float images in 0..255 in the model's frame, as one encoder batch
    (h, w <= S: a scale-jittered image smaller than the input is zero-padded after normalising, bottom / right)."""
    size = model.image_size
    if isinstance(model, Sam2):
        mean = torch.tensor(SAM2_PIXEL_MEAN, device=images[0].device).view(-1, 1, 1) * 255
        std = torch.tensor(SAM2_PIXEL_STD, device=images[0].device).view(-1, 1, 1) * 255
        inputs = [F.pad((image - mean) / std, (0, size - image.shape[-1], 0, size - image.shape[-2])) for image in images]
    else:
        inputs = [model.preprocess(image) for image in images]
    batch = inputs[0] if len(inputs) == 1 else torch.cat(inputs)  # one image uncopied: bit for bit the 1-image step
    if isinstance(model, Sam2):
        embedding, high_res = model.image_features(batch)
        return (embedding, *high_res)
    return (model.image_encoder(batch),)


def decode(model: TrainableModel, features: Features, state: PromptState, mask_input: torch.Tensor | None,
           multimask: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Low-res logits (N, M, l, l), IoU predictions (N, M) and object-score logits (N, 1) (None for SAM 1)
    for N objects' prompts on one image's features, or on each object's own (``features`` of N rows)."""
    embedding = features[0]
    device = embedding.device
    coords = labels = None
    if state.coords.shape[1]:
        coords, labels = torch.from_numpy(state.coords).to(device), torch.from_numpy(state.labels).to(device)
    boxes = None if state.boxes is None else torch.from_numpy(state.boxes).to(device)
    if isinstance(model, Sam2):
        sparse, dense = model.encode_prompts(coords, labels, boxes, mask_input)
        low, iou, _, scores = model.sam_mask_decoder(
            image_embeddings=embedding, image_pe=model.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask,
            repeat_image=embedding.shape[0] != sparse.shape[0],
            high_res_features=list(features[1:]) if model.use_high_res_features_in_sam else None)
        return low, iou, scores if model.pred_obj_scores else None
    points = None if coords is None else (coords, labels)
    sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
    low, iou = model.mask_decoder(embedding, model.prompt_encoder.get_dense_pe(), sparse, dense,
                                  multimask_output=multimask)
    return low, iou, None


class training_heads:  # lower case: used as a context manager, like torch.no_grad
    """SAM 2's mask decoder in training mode within the block (the official trainer's: no dynamic
    multimask fallback for single-mask outputs; the rest of the model stays in eval mode)."""

    def __init__(self, model: nn.Module) -> None:
        self.decoder = model.sam_mask_decoder if isinstance(model, Sam2) else None

    def __enter__(self) -> None:
        if self.decoder is not None:
            self.decoder.train()

    def __exit__(self, *exc: object) -> None:
        if self.decoder is not None:
            self.decoder.eval()


def checkpoint_payload(model: nn.Module, state: dict[str, torch.Tensor]) -> dict:
    """What ``last.pth`` / ``best.pth`` hold: the official layout of the model family."""
    return {"model": state} if family(model).wrap_checkpoint else state
