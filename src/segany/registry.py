"""The model registry: names → architecture config, official weights URL, byte size and sha256.

Sources of the weight facts are given beside each entry. Configs may also come from a dict or
a JSON file holding the official builder's arguments (``builder_args`` for SAM's ViT,
``tinyvit_args`` for MobileSAM's TinyViT), the format of ``shared/golden/tiny_sam.json``, with
optional further fields (``encoder_*`` keys, a ``sam_args`` object) so that every
:class:`SamConfig` round-trips through :func:`config_to_dict`; from
transformers' ``SamConfig`` JSON, or from a ``SamModel.save_pretrained`` folder (its ``config.json``).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from .errors import ConfigError
from .models.config import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_PATCH_SIZE,
    DEFAULT_PROMPT_EMBED_DIM,
    SamConfig,
    TinyViTConfig,
    ViTConfig,
)


@dataclass(frozen=True)
class ModelSpec:
    """One downloadable model: its engine family (:mod:`segany.engine`), its architecture, and
    where its official weights live; ``source`` says where the URL, size and hash came from."""

    name: str
    config: SamConfig
    url: str
    num_bytes: int
    sha256: str
    description: str
    family: str = "sam"
    source: str = "docs/checkpoints.md"

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def _vit(name: str, dim: int, depth: int, heads: int, global_attn: tuple[int, ...]) -> SamConfig:
    return SamConfig(name=name, encoder=ViTConfig(dim, depth, heads, global_attn))


VIT_T_ENCODER = TinyViTConfig(
    embed_dims=(64, 128, 160, 320), depths=(2, 2, 6, 2), num_heads=(2, 4, 5, 10), window_sizes=(7, 7, 14, 7)
)

# Where the facts come from (the full account, with the cross-checks: docs/checkpoints.md).
_SAM_SOURCE = ("URL: facebookresearch/segment-anything README, 'Model Checkpoints'; sha256 and bytes: "
               "micro-sam's pooch registry and the Git-LFS pointers of Hugging Face mirrors")
_MOBILESAM_SOURCE = ("URL: ChaoningZhang/MobileSAM weights/mobile_sam.pt; sha256 and bytes: micro-sam's pooch "
                     "registry and the Git-LFS pointer of dhkim2810/MobileSAM")
MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "vit_h",
            _vit("vit_h", 1280, 32, 16, (7, 15, 23, 31)),
            "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
            2564550879,
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            "SAM ViT-H (636M encoder parameters), the paper's default model",
            source=_SAM_SOURCE,
        ),
        ModelSpec(
            "vit_l",
            _vit("vit_l", 1024, 24, 16, (5, 11, 17, 23)),
            "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
            1249524607,
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            "SAM ViT-L",
            source=_SAM_SOURCE,
        ),
        ModelSpec(
            "vit_b",
            _vit("vit_b", 768, 12, 12, (2, 5, 8, 11)),
            "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
            375042383,
            "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            "SAM ViT-B, the smallest official SAM",
            source=_SAM_SOURCE,
        ),
        ModelSpec(
            "vit_t",
            SamConfig(name="vit_t", encoder=VIT_T_ENCODER),
            "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
            40728226,
            "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
            "MobileSAM: TinyViT encoder distilled from SAM ViT-H, same decoder",
            source=_MOBILESAM_SOURCE,
        ),
    )
}

NameOrConfig = Union[str, Path, dict, SamConfig]


def _ints(value: Any, key: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not all(_is_int(v) for v in value):
        raise ConfigError(f"config field {key!r} must be a list of integers, got {value!r}")
    return tuple(int(v) for v in value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(value: Any, key: str) -> int:
    if not _is_int(value):
        raise ConfigError(f"config field {key!r} must be an integer, got {value!r}")
    return int(value)


def _float(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"config field {key!r} must be a number, got {value!r}")
    return float(value)


def _floats(value: Any, key: str) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ConfigError(f"config field {key!r} must be a list of 3 numbers, got {value!r}")
    return tuple(_float(v, key) for v in value)


# The JSON format: the official builder's four ViT arguments (``builder_args``; the optional
# ``encoder_*`` keys are ViTConfig's other fields) or TinyViT's constructor arguments
# (``tinyvit_args``, TinyViTConfig's fields), and optionally ``sam_args`` (SamConfig's fields
# beyond the encoder). Each JSON key → (dataclass field, parser); absent keys keep the defaults.
_VIT_KEYS: dict[str, tuple[str, Any]] = {
    "encoder_embed_dim": ("embed_dim", _int),
    "encoder_depth": ("depth", _int),
    "encoder_num_heads": ("num_heads", _int),
    "encoder_global_attn_indexes": ("global_attn_indexes", _ints),
    "encoder_window_size": ("window_size", _int),
    "encoder_mlp_ratio": ("mlp_ratio", _float),
    "encoder_img_size": ("img_size", _int),
    "encoder_patch_size": ("patch_size", _int),
    "encoder_out_chans": ("out_chans", _int),
}
_VIT_REQUIRED = ("encoder_embed_dim", "encoder_depth", "encoder_num_heads", "encoder_global_attn_indexes")
_TINYVIT_KEYS: dict[str, tuple[str, Any]] = {
    "embed_dims": ("embed_dims", _ints),
    "depths": ("depths", _ints),
    "num_heads": ("num_heads", _ints),
    "window_sizes": ("window_sizes", _ints),
    "mlp_ratio": ("mlp_ratio", _float),
    "mbconv_expand_ratio": ("mbconv_expand_ratio", _float),
    "local_conv_size": ("local_conv_size", _int),
    "img_size": ("img_size", _int),
    "in_chans": ("in_chans", _int),
    "num_classes": ("num_classes", _int),
    "out_chans": ("out_chans", _int),
}
_TINYVIT_REQUIRED = ("embed_dims", "depths", "num_heads", "window_sizes")
_SAM_KEYS: dict[str, tuple[str, Any]] = {
    "pixel_mean": ("pixel_mean", _floats),
    "pixel_std": ("pixel_std", _floats),
    **{key: (key, _int) for key in (
        "prompt_embed_dim", "mask_in_chans", "decoder_depth", "decoder_mlp_dim", "decoder_num_heads",
        "attention_downsample_rate", "num_multimask_outputs", "iou_head_depth", "iou_head_hidden_dim",
    )},
}


def _fields(args: Any, section: str, keys: dict[str, tuple[str, Any]], required: tuple[str, ...], name: str) -> dict[str, Any]:
    """The dataclass fields that a JSON section holds; ConfigError for a missing, unknown or mistyped key."""
    if not isinstance(args, Mapping):
        raise ConfigError(f"{section} of {name!r} must be an object, got {args!r}")
    missing = [k for k in required if k not in args]
    if missing:
        raise ConfigError(f"{section} of {name!r} lacks {', '.join(missing)}")
    unknown = [k for k in args if k not in keys]
    if unknown:
        raise ConfigError(f"{section} of {name!r} has unknown keys {', '.join(map(repr, unknown))}; "
                          f"known: {', '.join(keys)}")
    return {keys[k][0]: keys[k][1](v, k) for k, v in args.items()}


def config_from_dict(data: dict, name: str = "custom") -> SamConfig:
    """A config from the official builder's arguments (``builder_args`` or ``tinyvit_args``,
    optionally with ``sam_args``; see :func:`config_to_dict`) or from a transformers ``SamConfig``
    dict (``model_type``, ``vision_config``, ...)."""
    name = str(data.get("name", name))
    if "builder_args" not in data and "tinyvit_args" not in data and is_hugging_face_config(data):
        return hugging_face_config(data, name=name)
    if "builder_args" in data:
        fields = _fields(data["builder_args"], "builder_args", _VIT_KEYS, _VIT_REQUIRED, name)
        depth, global_attn = fields["depth"], fields["global_attn_indexes"]
        if any(not 0 <= i < depth for i in global_attn):
            raise ConfigError(f"encoder_global_attn_indexes {list(global_attn)} must lie in [0, {depth})")
        if fields["num_heads"] <= 0 or fields["embed_dim"] % fields["num_heads"]:
            raise ConfigError("encoder_num_heads must divide encoder_embed_dim")
        encoder: ViTConfig | TinyViTConfig = ViTConfig(**fields)
    elif "tinyvit_args" in data:
        fields = _fields(data["tinyvit_args"], "tinyvit_args", _TINYVIT_KEYS, _TINYVIT_REQUIRED, name)
        lists = {k: fields[k] for k in _TINYVIT_REQUIRED}
        if len({len(v) for v in lists.values()}) != 1:
            raise ConfigError(f"tinyvit_args lists must have equal lengths, got {lists}")
        encoder = TinyViTConfig(**fields)
    else:
        raise ConfigError(
            f"model config {name!r} needs a 'builder_args' (SAM ViT) or 'tinyvit_args' (MobileSAM) object"
        )
    sam = _fields(data.get("sam_args", {}), "sam_args", _SAM_KEYS, (), name)
    return SamConfig(name=name, encoder=encoder, **sam)


def config_to_dict(config: SamConfig) -> dict[str, Any]:
    """The JSON object of ``config`` that :func:`config_from_dict` reads back to an equal config:
    ``name``, ``builder_args`` (ViT) or ``tinyvit_args`` (TinyViT), and ``sam_args``."""
    def section(obj: Any, keys: dict[str, tuple[str, Any]]) -> dict[str, Any]:
        values = {key: getattr(obj, field) for key, (field, _) in keys.items()}
        return {key: list(v) if isinstance(v, tuple) else v for key, v in values.items()}

    if isinstance(config.encoder, ViTConfig):
        encoder = {"builder_args": section(config.encoder, _VIT_KEYS)}
    else:
        encoder = {"tinyvit_args": section(config.encoder, _TINYVIT_KEYS)}
    return {"name": config.name, **encoder, "sam_args": section(config, _SAM_KEYS)}


def resolve_config(name_or_config: NameOrConfig) -> SamConfig:
    """A zoo name, a :class:`SamConfig`, a config dict, a path to a JSON config, or a
    transformers ``save_pretrained`` folder (its ``config.json``) → SamConfig."""
    if isinstance(name_or_config, SamConfig):
        return name_or_config
    if isinstance(name_or_config, dict):
        return config_from_dict(name_or_config)
    key = str(name_or_config)
    if key in MODELS:
        return MODELS[key].config
    path = Path(key)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model folder {path} has no config.json (a transformers save_pretrained folder)")
        return _config_file(path / "config.json", name=path.resolve().name)
    if path.suffix.lower() == ".json" or path.exists():
        return _config_file(path, name=path.stem)
    raise ConfigError(
        f"unknown model {key!r}: choose one of {', '.join(MODELS)}, or give a JSON config path or a transformers model folder"
    )


def _config_file(path: Path, name: str) -> SamConfig:
    """The config held by a JSON file (segany's builder arguments or transformers' SamConfig)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"model config file {path} does not exist") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"model config file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"model config file {path} must hold a JSON object")
    return config_from_dict(data, name=name)


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
