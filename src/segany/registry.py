"""The model registry: names → architecture config, official weights URL, byte size and sha256.

Sources of the weight facts are given beside each entry. Configs may also come from a dict or
a JSON file holding the official builder's arguments (``builder_args`` for SAM's ViT,
``tinyvit_args`` for MobileSAM's TinyViT), the format of ``shared/golden/tiny_sam.json``, with
optional further fields (``encoder_*`` keys, a ``sam_args`` object) so that every
:class:`SamConfig` round-trips through :func:`config_to_dict`; from
transformers' ``SamConfig`` JSON, or from a ``SamModel.save_pretrained`` folder (its ``config.json``).

SAM 2 / 2.1 models (:data:`SAM2_MODELS`, family ``"sam2"``) take a :class:`Sam2Config`, read from
the official Hydra YAML as data (:func:`sam2_config_from_yaml`: PyYAML, no Hydra, ``_target_``
names checked, never imported) or from its flat ``{"model.dotted.key": value}`` JSON.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any, Union

import yaml

from .errors import ConfigError
from .models.config import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_PATCH_SIZE,
    DEFAULT_PROMPT_EMBED_DIM,
    HieraConfig,
    SamConfig,
    TinyViTConfig,
    ViTConfig,
)
from .models.sam2.config import (
    MemoryAttentionConfig,
    MemoryEncoderConfig,
    RoPEAttentionConfig,
    Sam2Config,
    SinePositionConfig,
)


@dataclass(frozen=True)
class WeightFile:
    """A downloadable weight file that is not a SAM model (e.g. LaMa for inpainting): the facts
    :func:`segany.weights.ensure_file` checks, and where they came from."""

    name: str
    url: str
    num_bytes: int
    sha256: str | None
    description: str
    source: str = "docs/checkpoints.md"
    local_option: str = "--checkpoint PATH"  # how a user passes a file they fetched themselves

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


# LaMa "big-lama" as IOPaint (lama-cleaner) and its users download it: the TorchScript trace of
# advimman/lama's big-lama (Apache-2.0), forward(image 1x3xHxW in 0..1, mask 1x1xHxW 0/1).
LAMA = WeightFile(
    name="big-lama",
    url="https://github.com/Sanster/models/releases/download/add_big_lama/big-lama.pt",
    num_bytes=205_669_692,
    sha256="344c77bbcb158f17dd143070d1e789f38a66c04202311ae3a258ef66667a9ea9",
    description="LaMa big-lama inpainting (TorchScript, 196 MiB)",
    local_option="--lama-checkpoint PATH",
)


# onnxruntime-web (MIT), the browser's ONNX runtime: the annotator's in-browser decoder (hover preview);
# segany.cli.serve extracts the three files the page loads (segany.serve.web_runtime.FILES).
ONNXRUNTIME_WEB = WeightFile(
    name="onnxruntime-web 1.30.0",
    url="https://registry.npmjs.org/onnxruntime-web/-/onnxruntime-web-1.30.0.tgz",
    num_bytes=33_106_585,
    sha256="d2228df7e4616bc3348bf504ee888f3bec43789a273f0a63f3e68d203ce3bf71",
    description="onnxruntime-web 1.30.0, the npm package (WebAssembly ONNX runtime for the annotator page)",
    source="https://www.npmjs.com/package/onnxruntime-web",
    local_option="--web-runtime DIR (its dist/ files ort.wasm.min.mjs, ort-wasm-simd-threaded.mjs, "
                 "ort-wasm-simd-threaded.wasm)",
)


@dataclass(frozen=True)
class ModelSpec:
    """One downloadable model: its engine family (:mod:`segany.engine`), its architecture, and
    where its official weights live; ``source`` says where the URL, size and hash came from."""

    name: str
    config: SamConfig | Sam2Config
    url: str
    num_bytes: int
    sha256: str | None  # None: no trustworthy published hash found (docs/checkpoints.md)
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


def _refuse_unknown(section: Mapping, known: Collection[str], where: str, path: str | None = None) -> None:
    """ConfigError naming the keys of ``section`` not in ``known`` (by dotted ``path`` when given)."""
    unknown = [k for k in section if k not in known]
    if unknown:
        names = [f"{path}.{k}" for k in unknown] if path else [repr(k) for k in unknown]
        raise ConfigError(f"{where}: unknown keys {', '.join(names)}; known: {', '.join(known)}")


def _fields(args: Any, section: str, keys: Mapping[str, tuple[str, Callable[[Any, str], Any]]],
            required: tuple[str, ...], name: str, *, skip: Collection[str] = (), where: str | None = None,
            dotted: bool = False) -> dict[str, Any]:
    """The dataclass fields that a config section holds, each read by its parser (``keys``: section
    key → (field, parser(value, label))); ``skip``: keys read elsewhere or ignored; ``dotted``:
    values and unknown keys are named by their dotted path (nested YAML). ConfigError for a
    missing, unknown or mistyped key."""
    if not isinstance(args, Mapping):
        raise ConfigError(f"{section} of {name!r} must be an object, got {args!r}")
    missing = [k for k in required if k not in args]
    if missing:
        raise ConfigError(f"{section} of {name!r} lacks {', '.join(missing)}")
    given = {k: v for k, v in args.items() if k not in skip}
    _refuse_unknown(given, keys, where or f"{section} of {name!r}", section if dotted else None)
    return {keys[k][0]: keys[k][1](v, f"{section}.{k}" if dotted else k) for k, v in given.items()}


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
    data = _read_document(path)
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


def _refuse_unrepresentable(name: str, field: str, value: Any, only: Any, architecture: str) -> None:
    """ConfigError unless a transformers field segany's ``architecture`` fixes is absent (None) or ``only``."""
    if value is not None and (list(value) if isinstance(value, (list, tuple)) else value) != only:
        raise ConfigError(f"config {name!r}: {field} = {value!r} cannot be represented (segany's {architecture} needs {only!r})")


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
        raise ConfigError(f"config {name!r} is a transformers {data['model_type']!r} model; segany reads 'sam' (SamModel), 'sam2' and 'sam2_video'")
    sections = {}
    for section, defaults in _HF_DEFAULTS.items():
        given = data.get(section) or {}
        if not isinstance(given, Mapping):
            raise ConfigError(f"config {name!r}: {section} must be an object")
        values = {**defaults, **{k: v for k, v in given.items() if k in defaults and v is not None}}
        for field in _HF_FIXED[section]:
            _refuse_unrepresentable(name, f"{section}.{field}", values[field], defaults[field], "SAM architecture")
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


# --- SAM 2 / 2.1 -------------------------------------------------------------------------------
# The official YAML's ``_target_`` names that segany's modules implement, by section (read as
# data, never imported); a section naming another class is refused.
_SAM2_TARGETS: dict[str, str] = {
    "memory_attention": "sam2.modeling.memory_attention.MemoryAttention",
    "memory_attention.layer": "sam2.modeling.memory_attention.MemoryAttentionLayer",
    "memory_attention.layer.self_attention": "sam2.modeling.sam.transformer.RoPEAttention",
    "memory_attention.layer.cross_attention": "sam2.modeling.sam.transformer.RoPEAttention",
    "memory_encoder": "sam2.modeling.memory_encoder.MemoryEncoder",
    "memory_encoder.position_encoding": "sam2.modeling.position_encoding.PositionEmbeddingSine",
    "memory_encoder.mask_downsampler": "sam2.modeling.memory_encoder.MaskDownSampler",
    "memory_encoder.fuser": "sam2.modeling.memory_encoder.Fuser",
    "memory_encoder.fuser.layer": "sam2.modeling.memory_encoder.CXBlock",
    "image_encoder": "sam2.modeling.backbones.image_encoder.ImageEncoder",
}
_SAM2_MODEL_TARGETS = ("sam2.modeling.sam2_base.SAM2Base", "sam2.sam2_video_predictor.SAM2VideoPredictor")
_DECODER_EXTRA_ARGS = ("dynamic_multimask_via_stability", "dynamic_multimask_stability_delta",
                       "dynamic_multimask_stability_thresh")
# the official builders' apply_postprocessing overrides (sam2/build_sam.py)
SAM2_POSTPROCESSING: dict[str, Any] = {
    "dynamic_multimask_via_stability": True,
    "dynamic_multimask_stability_delta": 0.05,
    "dynamic_multimask_stability_thresh": 0.98,
}
_SAM2_IGNORED = ("_target_", "compile_image_encoder")  # change neither the network nor its outputs


def _typed(value: Any, default: Any, key: str) -> Any:
    """``value`` checked against the type of the field's ``default`` (YAML's ``1e-6`` is a string)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"config field {key!r} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        return _int(value, key)
    if isinstance(default, float) or default is None:
        if default is None and value is None:
            return None
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"config field {key!r} must be a number, got {value!r}") from None
        return _float(value, key)
    if isinstance(default, tuple):
        return _ints(value, key)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"config field {key!r} must be a string, got {value!r}")
        return value
    raise ConfigError(f"config field {key!r}: unsupported value {value!r}")


def _mapping(data: Any, path: str, name: str) -> Mapping:
    if not isinstance(data, Mapping):
        raise ConfigError(f"SAM 2 config {name!r}: {path or 'model'} must be a mapping, got {data!r}")
    target = data.get("_target_")
    expected = _SAM2_TARGETS.get(path)
    if expected is not None and target is not None and target != expected:
        raise ConfigError(f"SAM 2 config {name!r}: {path} is {target!r}; segany implements {expected!r}")
    return data


def _dataclass_args(data: Mapping, cls: type, path: str, name: str, keys: dict[str, str] | None = None,
                    nested: tuple[str, ...] = (), int_or_none: tuple[str, ...] = ()) -> dict[str, Any]:
    """The ``cls`` fields a YAML section holds (``keys`` renames section keys to fields), each
    checked against the type of the field's default; ConfigError for an unknown key or a mistyped value."""
    defaults = {f.name: f.default for f in dataclass_fields(cls)}

    def parser(field: str) -> Callable[[Any, str], Any]:
        if field in int_or_none:
            return lambda value, label: None if value is None else _int(value, label)
        return lambda value, label: _typed(value, defaults[field], label)

    table = {key: (field, parser(field)) for key, field in (keys or {k: k for k in defaults}).items()}
    return _fields(data, path, table, (), name, skip=(*_SAM2_IGNORED, *nested), where=f"SAM 2 config {name!r}",
                   dotted=True)


def _plain(data: Any) -> Any:
    """A YAML section as plain data without ``_target_`` keys (lists stay lists)."""
    if isinstance(data, Mapping):
        return {k: _plain(v) for k, v in data.items() if k != "_target_"}
    if isinstance(data, list):
        return [_plain(v) for v in data]
    return data


def _rope(data: Any, path: str, name: str) -> RoPEAttentionConfig:
    return RoPEAttentionConfig(**_dataclass_args(_mapping(data, path, name), RoPEAttentionConfig, path, name,
                                                 int_or_none=("kv_in_dim",)))


def _memory_attention(data: Any, name: str) -> MemoryAttentionConfig:
    path = "memory_attention"
    section = _mapping(data, path, name)
    args = _dataclass_args(section, MemoryAttentionConfig, path, name,
                           keys={"d_model": "d_model", "pos_enc_at_input": "pos_enc_at_input", "num_layers": "num_layers"},
                           nested=("layer",))
    layer = _mapping(section.get("layer", {}), f"{path}.layer", name)
    layer_keys = {k: k for k in ("activation", "dim_feedforward", "dropout", "pos_enc_at_attn", "pos_enc_at_cross_attn_keys",
                                 "pos_enc_at_cross_attn_queries")}
    layer_args = _dataclass_args(layer, MemoryAttentionConfig, f"{path}.layer", name, keys={**layer_keys, "d_model": "d_model"},
                                 nested=("self_attention", "cross_attention"))
    if layer_args.pop("d_model", args.get("d_model", 256)) != args.get("d_model", 256):
        raise ConfigError(f"SAM 2 config {name!r}: memory_attention.layer.d_model differs from memory_attention.d_model")
    for key in ("self_attention", "cross_attention"):
        if key in layer:
            layer_args[key] = _rope(layer[key], f"{path}.layer.{key}", name)
    return MemoryAttentionConfig(**args, **layer_args)


def _memory_encoder(data: Any, name: str) -> MemoryEncoderConfig:
    path = "memory_encoder"
    section = _mapping(data, path, name)
    args = _dataclass_args(section, MemoryEncoderConfig, path, name, keys={"out_dim": "out_dim", "in_dim": "in_dim"},
                           nested=("position_encoding", "mask_downsampler", "fuser"))
    if "position_encoding" in section:
        pe = _mapping(section["position_encoding"], f"{path}.position_encoding", name)
        args["position_encoding"] = SinePositionConfig(**_dataclass_args(pe, SinePositionConfig, f"{path}.position_encoding", name))
    if "mask_downsampler" in section:
        md = _mapping(section["mask_downsampler"], f"{path}.mask_downsampler", name)
        args.update(_dataclass_args(md, MemoryEncoderConfig, f"{path}.mask_downsampler", name, keys={
            "kernel_size": "mask_kernel_size", "stride": "mask_stride", "padding": "mask_padding",
            "total_stride": "mask_total_stride"}))
    if "fuser" in section:
        fuser = _mapping(section["fuser"], f"{path}.fuser", name)
        args.update(_dataclass_args(fuser, MemoryEncoderConfig, f"{path}.fuser", name, keys={
            "num_layers": "fuser_num_layers", "input_projection": "fuser_input_projection", "dim": "cx_dim"},
            nested=("layer",)))
        if "layer" in fuser:
            layer = _mapping(fuser["layer"], f"{path}.fuser.layer", name)
            args.update(_dataclass_args(layer, MemoryEncoderConfig, f"{path}.fuser.layer", name, keys={
                "dim": "cx_dim", "kernel_size": "cx_kernel_size", "padding": "cx_padding",
                "layer_scale_init_value": "cx_layer_scale_init_value", "use_dwconv": "cx_use_dwconv"}))
    return MemoryEncoderConfig(**args)


_SAM2_NESTED = ("image_encoder", "memory_attention", "memory_encoder", "sam_mask_decoder_extra_args")
_SAM2_OWN = ("name", "encoder", "memory_attention", "memory_encoder", "hidden_dim") + _DECODER_EXTRA_ARGS

# The official ``Hiera``'s own defaults: what a trunk section that omits an argument gets
# (``sam2.1_hiera_b+.yaml`` relies on them; HieraConfig's defaults are sam2.1_hiera_t's).
OFFICIAL_HIERA_DEFAULTS: dict[str, Any] = {
    "embed_dim": 96, "num_heads": 1, "stages": (2, 3, 16, 3), "global_att_blocks": (12, 16, 20),
    "window_pos_embed_bkg_spatial_size": (14, 14), "window_spec": (8, 4, 14, 7), "q_pool": 3,
    "q_stride": (2, 2), "dim_mul": 2.0, "head_mul": 2.0,
}
_HIERA_IGNORED = ("_target_", "drop_path_rate", "return_interm_layers")  # no effect on eval outputs / keys


def hiera_config_from_section(image_encoder: Mapping, name: str = "sam2", img_size: int = DEFAULT_IMAGE_SIZE) -> HieraConfig:
    """The :class:`HieraConfig` of an official ``model.image_encoder`` section (trunk, neck, scalp);
    trunk arguments it omits take the official ``Hiera`` defaults. :class:`ConfigError` otherwise."""
    try:
        trunk = {k: v for k, v in image_encoder["trunk"].items() if k not in _HIERA_IGNORED}
        neck = image_encoder["neck"]
        pe = neck["position_encoding"]
        _refuse_unknown(trunk, OFFICIAL_HIERA_DEFAULTS, f"SAM 2 config {name!r}", "image_encoder.trunk")
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in {**OFFICIAL_HIERA_DEFAULTS, **trunk}.items()}
        return HieraConfig(
            **args,
            backbone_channel_list=tuple(neck["backbone_channel_list"]),
            d_model=neck["d_model"],
            fpn_top_down_levels=tuple(levels if (levels := neck.get("fpn_top_down_levels")) is not None
                                      else range(len(neck["backbone_channel_list"]))),
            fpn_interp_model=neck.get("fpn_interp_model", "bilinear"),
            position_num_pos_feats=pe["num_pos_feats"],
            position_temperature=pe.get("temperature", 10000),
            position_normalize=pe.get("normalize", True),
            position_scale=pe.get("scale"),
            scalp=image_encoder.get("scalp", 0),
            img_size=img_size,
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"SAM 2 config {name!r}: model.image_encoder is incomplete or malformed ({exc!r})") from None


def sam2_config_from_dict(model: Mapping, name: str = "sam2", apply_postprocessing: bool = True) -> Sam2Config:
    """A :class:`Sam2Config` from the official YAML's ``model:`` section (parsed, nested).

    ``apply_postprocessing`` sets the mask decoder's dynamic multimask fallback as the official
    ``build_sam2`` does by default (True / 0.05 / 0.98, whatever the section says).
    """
    model = _mapping(model, "", name)
    target = model.get("_target_")
    if target is not None and target not in _SAM2_MODEL_TARGETS:
        raise ConfigError(f"SAM 2 config {name!r}: model is {target!r}; segany reads {' or '.join(_SAM2_MODEL_TARGETS)}")
    top = {k: k for k in (f.name for f in dataclass_fields(Sam2Config)) if k not in _SAM2_OWN}
    args = _dataclass_args(model, Sam2Config, "model", name, keys=top, nested=_SAM2_NESTED)
    extra = _mapping(model.get("sam_mask_decoder_extra_args") or {}, "sam_mask_decoder_extra_args", name)
    args.update(_dataclass_args(extra, Sam2Config, "model.sam_mask_decoder_extra_args", name,
                                keys={k: k for k in _DECODER_EXTRA_ARGS}))
    if apply_postprocessing:
        args.update(SAM2_POSTPROCESSING)
    if "image_encoder" not in model:
        raise ConfigError(f"SAM 2 config {name!r} has no model.image_encoder section")
    encoder = _plain(_mapping(model["image_encoder"], "image_encoder", name))
    neck = encoder.get("neck")
    if not isinstance(neck, Mapping) or "d_model" not in neck:
        raise ConfigError(f"SAM 2 config {name!r}: model.image_encoder.neck.d_model is missing")
    args["hidden_dim"] = _int(neck["d_model"], "image_encoder.neck.d_model")
    encoder = hiera_config_from_section(encoder, name, img_size=args.get("image_size", 512))
    if "memory_attention" in model:
        args["memory_attention"] = _memory_attention(model["memory_attention"], name)
    if "memory_encoder" in model:
        args["memory_encoder"] = _memory_encoder(model["memory_encoder"], name)
    try:
        return Sam2Config(name=name, encoder=encoder, **args)
    except ValueError as exc:
        raise ConfigError(f"SAM 2 config {name!r}: {exc}") from None


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1, "a.c": 2}`` → ``{"a": {"b": 1, "c": 2}}``."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        *parents, last = str(key).split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"flat config key {key!r} nests under a value")
            node = child
        if last in node:
            raise ConfigError(f"flat config key {key!r} is given twice")
        node[last] = value
    return nested


def is_sam2_document(data: Any) -> bool:
    """Whether a parsed YAML / JSON document is a SAM 2 config (nested ``model:`` or flat ``model.*`` keys)."""
    if not isinstance(data, Mapping) or not data:
        return False
    if isinstance(data.get("model"), Mapping):
        return True
    return all(isinstance(k, str) and k.startswith("model.") for k in data)


def sam2_config_from_document(data: Any, name: str = "sam2", apply_postprocessing: bool = True) -> Sam2Config:
    """A :class:`Sam2Config` from a parsed official YAML (``{"model": {...}}``) or its flat JSON."""
    if not is_sam2_document(data):
        raise ConfigError(f"SAM 2 config {name!r} must hold a 'model' section (or flat 'model.*' keys)")
    nested = data if isinstance(data.get("model"), Mapping) else unflatten(data)
    return sam2_config_from_dict(nested["model"], name=name, apply_postprocessing=apply_postprocessing)


def _read_document(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"model config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"model config file {path} cannot be read: {exc}") from None
    try:
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"model config file {path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {exc}") from None


def sam2_config_from_yaml(path: str | Path, apply_postprocessing: bool = True) -> Sam2Config:
    """The :class:`Sam2Config` of an official Hydra YAML file (``configs/sam2.1/sam2.1_hiera_t.yaml``)
    or of its flat JSON, read as data."""
    path = Path(path)
    return sam2_config_from_document(_read_document(path), name=path.stem, apply_postprocessing=apply_postprocessing)


def resolve_sam2_config(name_or_config: str | Path | Mapping | Sam2Config) -> Sam2Config:
    """A SAM 2 zoo name, a :class:`Sam2Config`, a parsed document, or a YAML / flat-JSON path → Sam2Config."""
    if isinstance(name_or_config, Sam2Config):
        return name_or_config
    if isinstance(name_or_config, Mapping):
        return sam2_config_from_document(name_or_config)
    key = str(name_or_config)
    if key in SAM2_MODELS:
        return SAM2_MODELS[key].config
    path = Path(key)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.exists():
        return sam2_config_from_yaml(path)
    raise ConfigError(f"unknown SAM 2 model {key!r}: choose one of {', '.join(SAM2_MODELS)}, or give an official YAML config")


def sam2_config_of(name_or_config: Any) -> Sam2Config | None:
    """The :class:`Sam2Config` that ``name_or_config`` names (a SAM 2 zoo name, a Sam2Config, a
    parsed SAM 2 document, an official YAML or its flat JSON), or None when it is not a SAM 2 one."""
    if isinstance(name_or_config, Sam2Config):
        return name_or_config
    if isinstance(name_or_config, Mapping):
        return sam2_config_from_document(name_or_config) if is_sam2_document(name_or_config) else None
    if not isinstance(name_or_config, (str, Path)):
        return None
    key = str(name_or_config)
    if key in SAM2_MODELS:
        return SAM2_MODELS[key].config
    path = Path(key)
    if path.suffix.lower() in (".yaml", ".yml"):
        return sam2_config_from_yaml(path)
    if path.suffix.lower() == ".json" and path.is_file():
        document = _read_document(path)
        if is_sam2_document(document):
            return sam2_config_from_document(document, name=path.stem)
    return None


def _hiera(name: str, version: str, embed_dim: int, num_heads: int, trunk: dict[str, Any]) -> Sam2Config:
    """An official SAM 2 (``"2"``) or 2.1 (``"2.1"``) config: the ``configs/sam2{,.1}/*.yaml`` model
    section (checked against the golden manifests' by tests/test_sam2_model.py)."""
    channels = [embed_dim * 8, embed_dim * 4, embed_dim * 2, embed_dim]
    encoder = {
        "scalp": 1,
        "trunk": {"embed_dim": embed_dim, "num_heads": num_heads, **trunk},
        "neck": {"position_encoding": {"num_pos_feats": 256, "normalize": True, "scale": None, "temperature": 10000},
                 "d_model": 256, "backbone_channel_list": channels, "fpn_top_down_levels": [2, 3],
                 "fpn_interp_model": "nearest"},
    }
    flags = dict(
        num_maskmem=7, image_size=1024, sigmoid_scale_for_mem_enc=20.0, sigmoid_bias_for_mem_enc=-10.0,
        use_mask_input_as_output_without_sam=True, directly_add_no_mem_embed=True, use_high_res_features_in_sam=True,
        multimask_output_in_sam=True, iou_prediction_use_sigmoid=True, use_obj_ptrs_in_encoder=True,
        add_tpos_enc_to_obj_ptrs=False, only_obj_ptrs_in_the_past_for_eval=True, pred_obj_scores=True,
        pred_obj_scores_mlp=True, fixed_no_obj_ptr=True, multimask_output_for_tracking=True,
        use_multimask_token_for_obj_ptr=True, multimask_min_pt_num=0, multimask_max_pt_num=1,
        use_mlp_for_obj_ptr_proj=True, **SAM2_POSTPROCESSING,
    )
    if version == "2.1":  # temporal encoding of object pointers (projected, signed), no-object spatial embedding
        flags.update(no_obj_embed_spatial=True, add_tpos_enc_to_obj_ptrs=True, proj_tpos_enc_in_obj_ptrs=True,
                     use_signed_tpos_enc_to_obj_ptrs=True)
    return Sam2Config(name=name, encoder=hiera_config_from_section(encoder, name), **flags)


_HIERA_SIZES: dict[str, tuple[int, int, dict[str, Any]]] = {
    "t": (96, 1, {"stages": [1, 2, 7, 2], "global_att_blocks": [5, 7, 9], "window_pos_embed_bkg_spatial_size": [7, 7]}),
    "s": (96, 1, {"stages": [1, 2, 11, 2], "global_att_blocks": [7, 10, 13], "window_pos_embed_bkg_spatial_size": [7, 7]}),
    "b+": (112, 2, {}),
    "l": (144, 2, {"stages": [2, 6, 36, 4], "global_att_blocks": [23, 33, 43], "window_pos_embed_bkg_spatial_size": [7, 7],
                   "window_spec": [8, 4, 16, 8]}),
}
_SAM2_FILES = {"t": "tiny", "s": "small", "b+": "base_plus", "l": "large"}
_SAM2_SOURCE = ("URL: facebookresearch/sam2 checkpoints/download_ckpts.sh; bytes and sha256: other projects' "
                "verified registries and Git-LFS records, listed per file in docs/checkpoints.md")
# (version, size) → (bytes, sha256 or None when no published hash was found)
_SAM2_FACTS: dict[tuple[str, str], tuple[int, str | None]] = {
    ("2.1", "t"): (156008466, "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69"),
    ("2.1", "s"): (184416285, "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38"),
    ("2.1", "b+"): (323606802, "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5"),
    ("2.1", "l"): (898083611, "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318"),
    ("2", "t"): (155906050, "65b50056e05bcb13694174f51bb6da89c894b57b75ccdf0ba6352c597c5d1125"),
    ("2", "s"): (184309650, "95949964d4e548409021d47b22712d5f1abf2564cc0c3c765ba599a24ac7dce3"),
    ("2", "b+"): (323493298, None),
    ("2", "l"): (897952466, "7442e4e9b732a508f80e141e7c2913437a3610ee0c77381a66658c3a445df87b"),
}


def _sam2_spec(version: str, size: str) -> ModelSpec:
    name = f"sam{version}_hiera_{size}"
    embed_dim, heads, trunk = _HIERA_SIZES[size]
    folder = "092824" if version == "2.1" else "072824"
    num_bytes, sha256 = _SAM2_FACTS[(version, size)]
    return ModelSpec(
        name,
        _hiera(name, version, embed_dim, heads, trunk),
        f"https://dl.fbaipublicfiles.com/segment_anything_2/{folder}/sam{version}_hiera_{_SAM2_FILES[size]}.pt",
        num_bytes,
        sha256,
        f"SAM {version} Hiera-{size.upper()} (official {'2024-09-29' if version == '2.1' else '2024-07-29'} release)",
        family="sam2",
        source=_SAM2_SOURCE,
    )


SAM2_MODELS: dict[str, ModelSpec] = {
    spec.name: spec for spec in (_sam2_spec(v, s) for v in ("2.1", "2") for s in ("t", "s", "b+", "l"))
}


# --- Hugging Face transformers Sam2Model ---------------------------------------------------------
# transformers' Sam2Config fields segany's SAM 2 cannot change: (section, field) → the only value.
# The official SAM2Base fixes the decoder's sizes (_build_sam_heads) and Hiera's stem / MLP ratio.
_HF_SAM2_FIXED: dict[tuple[str, str], Any] = {
    ("vision_config.backbone_config", "num_channels"): 3,
    ("vision_config.backbone_config", "patch_kernel_size"): [7, 7],
    ("vision_config.backbone_config", "patch_stride"): [4, 4],
    ("vision_config.backbone_config", "patch_padding"): [3, 3],
    ("vision_config.backbone_config", "mlp_ratio"): 4.0,
    ("vision_config.backbone_config", "hidden_act"): "gelu",
    ("vision_config.backbone_config", "layer_norm_eps"): 1e-6,
    ("vision_config", "fpn_kernel_size"): 1,
    ("vision_config", "fpn_stride"): 1,
    ("vision_config", "fpn_padding"): 0,
    ("prompt_encoder_config", "patch_size"): 16,
    ("prompt_encoder_config", "mask_input_channels"): 16,
    ("prompt_encoder_config", "num_point_embeddings"): 4,
    ("prompt_encoder_config", "hidden_act"): "gelu",
    ("prompt_encoder_config", "layer_norm_eps"): 1e-6,
    ("prompt_encoder_config", "scale"): 1,
    ("mask_decoder_config", "hidden_act"): "gelu",
    ("mask_decoder_config", "mlp_dim"): 2048,
    ("mask_decoder_config", "num_hidden_layers"): 2,
    ("mask_decoder_config", "num_attention_heads"): 8,
    ("mask_decoder_config", "attention_downsample_rate"): 2,
    ("mask_decoder_config", "num_multimask_outputs"): 3,
    ("mask_decoder_config", "iou_head_depth"): 3,
    ("mask_decoder_config", "iou_head_hidden_dim"): 256,
}
HF_SAM2_MODEL_TYPES = ("sam2", "sam2_video")


def _hf_section(data: Mapping[str, Any], path: str, name: str) -> Mapping[str, Any]:
    node: Any = data
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
        if node is None:
            return {}
    if not isinstance(node, Mapping):
        raise ConfigError(f"config {name!r}: {path} must be an object")
    return node


def _hf_pair(value: Any, key: str) -> tuple[int, int]:
    """transformers' int-or-pair fields as a pair."""
    pair = _ints([value, value] if _is_int(value) else value, key)
    if len(pair) != 2:
        raise ConfigError(f"config field {key!r} must be an integer or a pair, got {value!r}")
    return pair  # type: ignore[return-value]


def hugging_face_sam2_config(data: Mapping[str, Any], name: str = "hf_sam2") -> Sam2Config:
    """segany's :class:`Sam2Config` for a transformers ``Sam2Config`` (``config.json`` of
    ``Sam2Model`` / ``Sam2VideoModel.save_pretrained``); :class:`ConfigError` naming the field
    segany's SAM 2 cannot represent. The model flags are SAM 2.1's (``sam2.1_hiera_*``): the
    image path transformers implements (high-res features, object scores, sigmoid IoU)."""
    if data.get("model_type") not in HF_SAM2_MODEL_TYPES:
        raise ConfigError(f"config {name!r} is not a transformers SAM 2 config (model_type {data.get('model_type')!r})")
    for (path, field), only in _HF_SAM2_FIXED.items():
        _refuse_unrepresentable(name, f"{path}.{field}", _hf_section(data, path, name).get(field), only, "SAM 2")
    vision = _hf_section(data, "vision_config", name)
    trunk = {**_HF_HIERA_DEFAULTS, **{k: v for k, v in _hf_section(data, "vision_config.backbone_config", name).items()
                                      if v is not None}}
    prompt = _hf_section(data, "prompt_encoder_config", name)
    decoder = _hf_section(data, "mask_decoder_config", name)
    field = "vision_config.backbone_config"
    embed_dim, heads = _int(trunk["hidden_size"], f"{field}.hidden_size"), _int(trunk["num_attention_heads"], f"{field}.num_attention_heads")
    stages = _ints(trunk["blocks_per_stage"], f"{field}.blocks_per_stage")
    dims = _ints(trunk["embed_dim_per_stage"], f"{field}.embed_dim_per_stage")
    stage_heads = _ints(trunk["num_attention_heads_per_stage"], f"{field}.num_attention_heads_per_stage")
    if len(dims) != len(stages) or len(stage_heads) != len(stages) or dims[0] != embed_dim or stage_heads[0] != heads:
        raise ConfigError(f"config {name!r}: {field}.embed_dim_per_stage / num_attention_heads_per_stage must start at "
                          f"hidden_size / num_attention_heads and have one entry per stage")
    dim_mul = dims[1] / dims[0] if len(dims) > 1 else 2.0
    head_mul = stage_heads[1] / stage_heads[0] if len(stages) > 1 else 2.0
    for key, values, base, mul in (("embed_dim_per_stage", dims, embed_dim, dim_mul),
                                   ("num_attention_heads_per_stage", stage_heads, heads, head_mul)):
        if list(values) != [int(base * mul**i) for i in range(len(values))]:
            raise ConfigError(f"config {name!r}: {field}.{key} {list(values)} is not a geometric series "
                              f"(segany's Hiera multiplies by one factor per stage)")
    image_size = _hf_pair(trunk.get("image_size", 1024), f"{field}.image_size")
    if image_size[0] != image_size[1]:
        raise ConfigError(f"config {name!r}: {field}.image_size {list(image_size)} must be square")
    size = image_size[0]
    if int(prompt.get("image_size", size)) != size:
        raise ConfigError(f"config {name!r}: prompt_encoder_config.image_size {prompt['image_size']} differs from "
                          f"vision_config.backbone_config.image_size {size}")
    width = _int(vision.get("fpn_hidden_size", 256), "vision_config.fpn_hidden_size")
    for section in ("prompt_encoder_config", "mask_decoder_config"):
        value = _hf_section(data, section, name).get("hidden_size", 256)
        if value != width:
            raise ConfigError(f"config {name!r}: {section}.hidden_size {value} does not fit vision_config.fpn_hidden_size "
                              f"{width} (SAM 2 ties them)")
    channels = _ints(vision.get("backbone_channel_list") or list(dims[::-1]), "vision_config.backbone_channel_list")
    levels = _int(vision.get("num_feature_levels", 3), "vision_config.num_feature_levels")
    if levels != 3:
        raise ConfigError(f"config {name!r}: vision_config.num_feature_levels = {levels} cannot be represented "
                          "(segany's SAM 2 decoder takes 3 levels)")
    sizes = vision.get("backbone_feature_sizes")
    expected_sizes = [[size // 4 // 2**i] * 2 for i in range(levels)]
    if sizes is not None and [list(s) for s in sizes] != expected_sizes:
        raise ConfigError(f"config {name!r}: vision_config.backbone_feature_sizes {sizes} do not fit image size {size} "
                          f"(expected {expected_sizes})")
    encoder = HieraConfig(
        embed_dim=embed_dim, num_heads=heads, stages=stages,
        global_att_blocks=_ints(trunk["global_attention_blocks"], f"{field}.global_attention_blocks"),
        window_pos_embed_bkg_spatial_size=_hf_pair(trunk["window_positional_embedding_background_size"],
                                                   f"{field}.window_positional_embedding_background_size"),
        window_spec=_ints(trunk["window_size_per_stage"], f"{field}.window_size_per_stage"),
        q_pool=_int(trunk["num_query_pool_stages"], f"{field}.num_query_pool_stages"),
        q_stride=_hf_pair(trunk["query_stride"], f"{field}.query_stride"), dim_mul=dim_mul, head_mul=head_mul,
        backbone_channel_list=channels, d_model=width,
        fpn_top_down_levels=_ints(vision.get("fpn_top_down_levels", [2, 3]), "vision_config.fpn_top_down_levels"),
        fpn_interp_model="nearest", position_num_pos_feats=width, scalp=len(channels) - levels, img_size=size,
    )
    template = SAM2_MODELS["sam2.1_hiera_t"].config
    extra = {k: _typed(decoder[k], getattr(template, k), f"mask_decoder_config.{k}") for k in _DECODER_EXTRA_ARGS if k in decoder}
    if data["model_type"] == "sam2_video":
        extra.update(_hf_sam2_video_fields(data, name))
    try:
        return replace(template, name=name, encoder=encoder, hidden_dim=width, image_size=size, **extra)
    except ValueError as exc:
        raise ConfigError(f"config {name!r}: {exc}") from None


# transformers' Sam2VideoConfig fields segany's memory modules cannot change → the only value
_HF_SAM2_VIDEO_FIXED: dict[str, Any] = {"mask_downsampler_hidden_act": "gelu", "memory_fuser_hidden_act": "gelu"}
# Sam2VideoConfig field → Sam2Config field (the same meaning)
_HF_SAM2_VIDEO_FLAGS: dict[str, str] = {
    "num_maskmem": "num_maskmem", "sigmoid_scale_for_mem_enc": "sigmoid_scale_for_mem_enc",
    "sigmoid_bias_for_mem_enc": "sigmoid_bias_for_mem_enc", "enable_occlusion_spatial_embedding": "no_obj_embed_spatial",
    "multimask_output_in_sam": "multimask_output_in_sam", "multimask_min_pt_num": "multimask_min_pt_num",
    "multimask_max_pt_num": "multimask_max_pt_num", "multimask_output_for_tracking": "multimask_output_for_tracking",
    "max_object_pointers_in_encoder": "max_obj_ptrs_in_encoder", "max_cond_frame_num": "max_cond_frames_in_attn",
    "enable_temporal_pos_encoding_for_object_pointers": "add_tpos_enc_to_obj_ptrs",
}


def _hf_sam2_video_fields(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The :class:`Sam2Config` fields of a transformers ``Sam2VideoConfig``'s memory arguments."""
    for field, only in _HF_SAM2_VIDEO_FIXED.items():
        _refuse_unrepresentable(name, field, data.get(field), only, "SAM 2")
    template = SAM2_MODELS["sam2.1_hiera_t"].config

    def get(key: str, default: Any) -> Any:
        return data[key] if data.get(key) is not None else default

    fields = {ours: _typed(data[theirs], getattr(template, ours), theirs)
              for theirs, ours in _HF_SAM2_VIDEO_FLAGS.items() if data.get(theirs) is not None}
    fields["proj_tpos_enc_in_obj_ptrs"] = fields.get("add_tpos_enc_to_obj_ptrs", template.add_tpos_enc_to_obj_ptrs)
    fields["use_signed_tpos_enc_to_obj_ptrs"] = fields["proj_tpos_enc_in_obj_ptrs"]
    attention, encoder = template.memory_attention, template.memory_encoder
    d_model = _int(get("memory_attention_hidden_size", attention.d_model), "memory_attention_hidden_size")
    mem_dim = _int(get("memory_encoder_output_channels", encoder.out_dim), "memory_encoder_output_channels")
    rope = dict(embedding_dim=d_model,
                num_heads=_int(get("memory_attention_num_attention_heads", 1), "memory_attention_num_attention_heads"),
                downsample_rate=_int(get("memory_attention_downsample_rate", 1), "memory_attention_downsample_rate"),
                dropout=_float(get("memory_attention_rope_dropout", 0.1), "memory_attention_rope_dropout"),
                rope_theta=_float((data.get("rope_parameters") or {}).get("rope_theta", 10000.0), "rope_parameters.rope_theta"),
                feat_sizes=_hf_pair(get("memory_attention_rope_feat_sizes", [64, 64]), "memory_attention_rope_feat_sizes"))
    fields["memory_attention"] = replace(
        attention, d_model=d_model, num_layers=_int(get("memory_attention_num_layers", 4), "memory_attention_num_layers"),
        activation=str(get("memory_attention_feed_forward_hidden_act", "relu")),
        dim_feedforward=_int(get("memory_attention_feed_forward_hidden_size", 2048), "memory_attention_feed_forward_hidden_size"),
        dropout=_float(get("memory_attention_dropout", 0.1), "memory_attention_dropout"),
        self_attention=RoPEAttentionConfig(**rope), cross_attention=RoPEAttentionConfig(**rope, rope_k_repeat=True, kv_in_dim=mem_dim))
    in_dim = _int(get("memory_encoder_hidden_size", encoder.in_dim), "memory_encoder_hidden_size")
    for field in ("mask_downsampler_embed_dim", "memory_fuser_embed_dim"):
        if get(field, in_dim) != in_dim:
            raise ConfigError(f"config {name!r}: {field} {data[field]} must equal memory_encoder_hidden_size {in_dim}")
    cx_dim = in_dim
    if _int(get("memory_fuser_intermediate_dim", 4 * cx_dim), "memory_fuser_intermediate_dim") != 4 * cx_dim:
        raise ConfigError(f"config {name!r}: memory_fuser_intermediate_dim must be 4 x memory_fuser_embed_dim ({4 * cx_dim})")
    fields["memory_encoder"] = replace(
        encoder, out_dim=mem_dim, in_dim=in_dim, cx_dim=cx_dim,
        position_encoding=replace(encoder.position_encoding, num_pos_feats=mem_dim),
        mask_kernel_size=_int(get("mask_downsampler_kernel_size", 3), "mask_downsampler_kernel_size"),
        mask_stride=_int(get("mask_downsampler_stride", 2), "mask_downsampler_stride"),
        mask_padding=_int(get("mask_downsampler_padding", 1), "mask_downsampler_padding"),
        mask_total_stride=_int(get("mask_downsampler_total_stride", 16), "mask_downsampler_total_stride"),
        fuser_num_layers=_int(get("memory_fuser_num_layers", 2), "memory_fuser_num_layers"),
        cx_kernel_size=_int(get("memory_fuser_kernel_size", 7), "memory_fuser_kernel_size"),
        cx_padding=_int(get("memory_fuser_padding", 3), "memory_fuser_padding"),
        cx_layer_scale_init_value=_float(get("memory_fuser_layer_scale_init_value", 1e-6), "memory_fuser_layer_scale_init_value"))
    return fields


# transformers' Sam2HieraDetConfig defaults (its __post_init__), sam2.1_hiera_t's trunk
_HF_HIERA_DEFAULTS: dict[str, Any] = {
    "hidden_size": 96, "num_attention_heads": 1, "image_size": [1024, 1024], "query_stride": [2, 2],
    "window_positional_embedding_background_size": [7, 7], "num_query_pool_stages": 3,
    "blocks_per_stage": [1, 2, 7, 2], "embed_dim_per_stage": [96, 192, 384, 768],
    "num_attention_heads_per_stage": [1, 2, 4, 8], "window_size_per_stage": [8, 4, 14, 7],
    "global_attention_blocks": [5, 7, 9],
}
