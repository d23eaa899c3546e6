"""Other checkpoint layouts mapped onto the official tensor names.

Hugging Face ``transformers`` stores the same SAM weights under its own names
(``vision_encoder.layers.N.layer_norm1`` for ``image_encoder.blocks.N.norm1``, ...). Its model
holds the random positional matrix twice, tied: ``shared_image_embedding.positional_embedding``
and ``prompt_encoder.shared_embedding.positional_embedding``; ``save_pretrained`` writes only the
first, older files hold both. :func:`to_official` renames such a state dict so that the official
architecture (one matrix) loads it strictly; official dicts pass through unchanged.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from .errors import CheckpointError, ConfigError
from .models.config import DEFAULT_IMAGE_SIZE, DEFAULT_PATCH_SIZE, DEFAULT_PROMPT_EMBED_DIM, SamConfig, ViTConfig

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
# The tied pair: the first is what save_pretrained keeps, the second its copy in older files.
_HF_POSITIONAL = "shared_image_embedding.positional_embedding"
_HF_POSITIONAL_COPY = "prompt_encoder.shared_embedding.positional_embedding"
_OFFICIAL_POSITIONAL = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"


def is_hugging_face(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return any(key.startswith("vision_encoder.") for key in state_dict)


def hugging_face_key(key: str) -> str:
    """The official name of one Hugging Face ``SamModel`` key (unchanged if no rule applies)."""
    for pattern, replacement in _HF_RULES:
        renamed, count = re.subn(pattern, replacement, key)
        if count:
            return renamed
    return key


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal tensors (shapes only for tensors without data, e.g. on the meta device)."""
    if a.shape != b.shape:
        return False
    return a.is_meta or b.is_meta or torch.equal(a, b)


def to_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official-named copy of ``state_dict`` (Hugging Face layouts renamed, others untouched)."""
    if not is_hugging_face(state_dict):
        return dict(state_dict)
    renamed = {hugging_face_key(k): v for k, v in state_dict.items() if k not in (_HF_POSITIONAL, _HF_POSITIONAL_COPY)}
    tied = [state_dict[k] for k in (_HF_POSITIONAL, _HF_POSITIONAL_COPY) if k in state_dict]
    if len(tied) == 2 and not _same(tied[0], tied[1]):
        raise CheckpointError(
            f"{_HF_POSITIONAL} and {_HF_POSITIONAL_COPY} differ: SAM uses one positional matrix for both"
        )
    if tied:
        renamed[_OFFICIAL_POSITIONAL] = tied[0]
    return renamed


# transformers' SamConfig: the defaults of its three sub-configs (a missing field has its default),
# and the values segany's architecture fixes. Fields not listed here do not change the network.
_HF_DEFAULTS: dict[str, dict[str, Any]] = {
    "vision_config": {
        "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
        "global_attn_indexes": [2, 5, 8, 11], "window_size": 14, "mlp_ratio": 4.0, "mlp_dim": None,
        "output_channels": DEFAULT_PROMPT_EMBED_DIM, "image_size": DEFAULT_IMAGE_SIZE, "patch_size": DEFAULT_PATCH_SIZE,
        "num_channels": 3, "hidden_act": "gelu", "layer_norm_eps": 1e-6, "qkv_bias": True,
        "use_abs_pos": True, "use_rel_pos": True, "num_pos_feats": DEFAULT_PROMPT_EMBED_DIM // 2,
    },
    "prompt_encoder_config": {
        "hidden_size": DEFAULT_PROMPT_EMBED_DIM, "image_size": DEFAULT_IMAGE_SIZE, "patch_size": DEFAULT_PATCH_SIZE,
        "mask_input_channels": 16, "num_point_embeddings": 4, "hidden_act": "gelu", "layer_norm_eps": 1e-6,
    },
    "mask_decoder_config": {
        "hidden_size": DEFAULT_PROMPT_EMBED_DIM, "hidden_act": "relu", "mlp_dim": 2048, "num_hidden_layers": 2,
        "num_attention_heads": 8, "attention_downsample_rate": 2, "num_multimask_outputs": 3,
        "iou_head_depth": 3, "iou_head_hidden_dim": 256, "layer_norm_eps": 1e-6,
    },
}
_HF_FIXED: dict[str, tuple[str, ...]] = {
    "vision_config": ("num_channels", "hidden_act", "layer_norm_eps", "qkv_bias", "use_abs_pos", "use_rel_pos"),
    "prompt_encoder_config": ("num_point_embeddings", "hidden_act", "layer_norm_eps"),
    "mask_decoder_config": ("hidden_act", "iou_head_depth"),
}
# The two-way blocks' LayerNorms: transformers uses layer_norm_eps (1e-6), the official code
# nn.LayerNorm's 1e-5; segany's blocks use 1e-5, so logits differ by ~1e-4..1e-3 from transformers'.
_HF_DECODER_EPS = (1e-6, 1e-5)


def is_hugging_face_config(data: Mapping[str, Any]) -> bool:
    """Whether a ``config.json`` object is transformers' (its ``model_type`` or sub-configs)."""
    return "model_type" in data or "vision_config" in data


def hugging_face_config(data: Mapping[str, Any], name: str = "hf_sam") -> SamConfig:
    """segany's :class:`SamConfig` for a transformers ``SamConfig`` (the ``config.json`` of
    ``SamModel.save_pretrained``); :class:`ConfigError` for what segany's architecture cannot hold.

    The decoder's two-way blocks take the official LayerNorm eps (1e-5) whatever
    ``mask_decoder_config.layer_norm_eps`` says (transformers: 1e-6), so mask logits differ from
    transformers' own by ~1e-4..1e-3; the image embedding matches it to float rounding.
    """
    if data.get("model_type", "sam") != "sam":
        raise ConfigError(f"config {name!r} is a transformers {data['model_type']!r} model; segany reads 'sam' (SamModel)")
    sections = {}
    for section, defaults in _HF_DEFAULTS.items():
        given = data.get(section) or {}
        if not isinstance(given, Mapping):
            raise ConfigError(f"config {name!r}: {section} must be an object")
        values = {**defaults, **{k: v for k, v in given.items() if k in defaults and v is not None}}
        for field in _HF_FIXED[section]:
            if values[field] != defaults[field]:
                raise ConfigError(
                    f"config {name!r}: {section}.{field} = {values[field]!r} cannot be represented "
                    f"(segany's SAM architecture needs {defaults[field]!r})"
                )
        sections[section] = values
    vision, prompt, decoder = (sections[k] for k in ("vision_config", "prompt_encoder_config", "mask_decoder_config"))
    width = vision["output_channels"]
    tied = {"vision_config.num_pos_feats": 2 * vision["num_pos_feats"], "prompt_encoder_config.hidden_size": prompt["hidden_size"],
            "mask_decoder_config.hidden_size": decoder["hidden_size"]}
    for field, value in tied.items():
        if value != width:
            raise ConfigError(f"config {name!r}: {field} does not fit vision_config.output_channels {width} (SAM ties them)")
    for field in ("image_size", "patch_size"):
        if prompt[field] != vision[field]:
            raise ConfigError(f"config {name!r}: vision_config.{field} {vision[field]} differs from "
                              f"prompt_encoder_config.{field} {prompt[field]}")
    if decoder["layer_norm_eps"] not in _HF_DECODER_EPS:
        raise ConfigError(f"config {name!r}: mask_decoder_config.layer_norm_eps must be 1e-6 or 1e-5, got {decoder['layer_norm_eps']!r}")
    dim, depth = vision["hidden_size"], vision["num_hidden_layers"]
    global_attn = tuple(vision["global_attn_indexes"])
    if not all(isinstance(i, int) and 0 <= i < depth for i in global_attn):
        raise ConfigError(f"config {name!r}: vision_config.global_attn_indexes {list(global_attn)} must lie in [0, {depth})")
    if dim % vision["num_attention_heads"]:
        raise ConfigError(f"config {name!r}: vision_config.num_attention_heads must divide hidden_size")
    mlp_dim = vision["mlp_dim"] if vision["mlp_dim"] is not None else int(dim * vision["mlp_ratio"])
    mlp_ratio = mlp_dim / dim
    if int(dim * mlp_ratio) != mlp_dim:
        raise ConfigError(f"config {name!r}: vision_config.mlp_dim {mlp_dim} is not a ratio of hidden_size {dim}")
    encoder = ViTConfig(int(dim), int(depth), int(vision["num_attention_heads"]), global_attn,
                        window_size=int(vision["window_size"]), mlp_ratio=mlp_ratio, img_size=int(vision["image_size"]),
                        patch_size=int(vision["patch_size"]), out_chans=int(width))
    return SamConfig(
        name=name,
        encoder=encoder,
        prompt_embed_dim=int(width),
        mask_in_chans=int(prompt["mask_input_channels"]),
        attention_downsample_rate=int(decoder["attention_downsample_rate"]),
        decoder_depth=int(decoder["num_hidden_layers"]),
        decoder_mlp_dim=int(decoder["mlp_dim"]),
        decoder_num_heads=int(decoder["num_attention_heads"]),
        num_multimask_outputs=int(decoder["num_multimask_outputs"]),
        iou_head_depth=int(decoder["iou_head_depth"]),
        iou_head_hidden_dim=int(decoder["iou_head_hidden_dim"]),
    )
