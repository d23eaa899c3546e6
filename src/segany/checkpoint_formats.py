"""Other checkpoint layouts mapped onto the official tensor names.

Hugging Face ``transformers`` stores the same SAM weights under its own names
(``vision_encoder.layers.N.layer_norm1`` for ``image_encoder.blocks.N.norm1``, ...) and keeps the
random positional matrix twice. :func:`to_official` renames such a state dict so that the
official architecture loads it strictly; official dicts pass through unchanged.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch

# (pattern, replacement) applied in order to each Hugging Face key; the first match wins.
_HF_RULES: tuple[tuple[str, str], ...] = (
    (r"^vision_encoder\.patch_embed\.projection\.", "image_encoder.patch_embed.proj."),
    (r"^vision_encoder\.pos_embed$", "image_encoder.pos_embed"),
    (r"^vision_encoder\.layers\.(\d+)\.layer_norm(\d)\.", r"image_encoder.blocks.\1.norm\2."),
    (r"^vision_encoder\.layers\.(\d+)\.", r"image_encoder.blocks.\1."),
    (r"^vision_encoder\.neck\.conv1\.", "image_encoder.neck.0."),
    (r"^vision_encoder\.neck\.layer_norm1\.", "image_encoder.neck.1."),
    (r"^vision_encoder\.neck\.conv2\.", "image_encoder.neck.2."),
    (r"^vision_encoder\.neck\.layer_norm2\.", "image_encoder.neck.3."),
    (r"^prompt_encoder\.shared_embedding\.positional_embedding$",
     "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"),
    (r"^prompt_encoder\.mask_embed\.conv1\.", "prompt_encoder.mask_downscaling.0."),
    (r"^prompt_encoder\.mask_embed\.layer_norm1\.", "prompt_encoder.mask_downscaling.1."),
    (r"^prompt_encoder\.mask_embed\.conv2\.", "prompt_encoder.mask_downscaling.3."),
    (r"^prompt_encoder\.mask_embed\.layer_norm2\.", "prompt_encoder.mask_downscaling.4."),
    (r"^prompt_encoder\.mask_embed\.conv3\.", "prompt_encoder.mask_downscaling.6."),
    (r"^prompt_encoder\.point_embed\.", "prompt_encoder.point_embeddings."),
    (r"^mask_decoder\.transformer\.layers\.(\d+)\.layer_norm(\d)\.", r"mask_decoder.transformer.layers.\1.norm\2."),
    (r"^mask_decoder\.transformer\.layer_norm_final_attn\.", "mask_decoder.transformer.norm_final_attn."),
    (r"^mask_decoder\.upscale_conv1\.", "mask_decoder.output_upscaling.0."),
    (r"^mask_decoder\.upscale_layer_norm\.", "mask_decoder.output_upscaling.1."),
    (r"^mask_decoder\.upscale_conv2\.", "mask_decoder.output_upscaling.3."),
    # 3-layer MLPs: proj_in, layers.0, proj_out  →  layers.0, layers.1, layers.2
    (r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.proj_in\.", r"\1.layers.0."),
    (r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.0\.", r"\1.layers.1."),
    (r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.proj_out\.", r"\1.layers.2."),
)
_HF_DUPLICATE = "shared_image_embedding.positional_embedding"


def is_hugging_face(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return any(key.startswith("vision_encoder.") for key in state_dict)


def hugging_face_key(key: str) -> str:
    """The official name of one Hugging Face ``SamModel`` key (unchanged if no rule applies)."""
    for pattern, replacement in _HF_RULES:
        renamed, count = re.subn(pattern, replacement, key)
        if count:
            return renamed
    return key


def to_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official-named copy of ``state_dict`` (Hugging Face layouts renamed, others untouched)."""
    if not is_hugging_face(state_dict):
        return dict(state_dict)
    return {hugging_face_key(k): v for k, v in state_dict.items() if k != _HF_DUPLICATE}
