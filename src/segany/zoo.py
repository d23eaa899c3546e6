"""The model registry: names → architecture config, official weights URL, byte size and sha256.

Sources of the weight facts are given beside each entry. Configs may also come from a dict or
a JSON file holding the official builder's arguments (``builder_args`` for SAM's ViT,
``tinyvit_args`` for MobileSAM's TinyViT), the format of ``shared/golden/tiny_sam.json``, from
transformers' ``SamConfig`` JSON, or from a ``SamModel.save_pretrained`` folder (its ``config.json``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from .checkpoint_formats import hugging_face_config, is_hugging_face_config
from .errors import ConfigError
from .models.config import SamConfig, TinyViTConfig, ViTConfig


@dataclass(frozen=True)
class ModelSpec:
    """One downloadable model: its architecture and where its official weights live."""

    name: str
    config: SamConfig
    url: str
    num_bytes: int
    sha256: str
    description: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def _vit(name: str, dim: int, depth: int, heads: int, global_attn: tuple[int, ...]) -> SamConfig:
    return SamConfig(name=name, encoder=ViTConfig(dim, depth, heads, global_attn))


VIT_T_ENCODER = TinyViTConfig(
    embed_dims=(64, 128, 160, 320), depths=(2, 2, 6, 2), num_heads=(2, 4, 5, 10), window_sizes=(7, 7, 14, 7)
)

# URLs: the official READMEs (facebookresearch/segment-anything "Model Checkpoints";
# ChaoningZhang/MobileSAM weights/). Sizes and sha256: see docs/checkpoints.md for the sources.
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
        ),
        ModelSpec(
            "vit_l",
            _vit("vit_l", 1024, 24, 16, (5, 11, 17, 23)),
            "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
            1249524607,
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            "SAM ViT-L",
        ),
        ModelSpec(
            "vit_b",
            _vit("vit_b", 768, 12, 12, (2, 5, 8, 11)),
            "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
            375042383,
            "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            "SAM ViT-B, the smallest official SAM",
        ),
        ModelSpec(
            "vit_t",
            SamConfig(name="vit_t", encoder=VIT_T_ENCODER),
            "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
            40728226,
            "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
            "MobileSAM: TinyViT encoder distilled from SAM ViT-H, same decoder",
        ),
    )
}

NameOrConfig = Union[str, Path, dict, SamConfig]


def _ints(value: Any, key: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) for v in value):
        raise ConfigError(f"config field {key!r} must be a list of integers, got {value!r}")
    return tuple(value)


def config_from_dict(data: dict, name: str = "custom") -> SamConfig:
    """A config from the official builder's arguments (``builder_args`` or ``tinyvit_args``)
    or from a transformers ``SamConfig`` dict (``model_type``, ``vision_config``, ...)."""
    name = str(data.get("name", name))
    if "builder_args" not in data and "tinyvit_args" not in data and is_hugging_face_config(data):
        return hugging_face_config(data, name=name)
    if "builder_args" in data:
        args = data["builder_args"]
        required = ("encoder_embed_dim", "encoder_depth", "encoder_num_heads", "encoder_global_attn_indexes")
        missing = [k for k in required if k not in args]
        if missing:
            raise ConfigError(f"builder_args of {name!r} lacks {', '.join(missing)}")
        depth = args["encoder_depth"]
        global_attn = _ints(args["encoder_global_attn_indexes"], "encoder_global_attn_indexes")
        if any(not 0 <= i < depth for i in global_attn):
            raise ConfigError(f"encoder_global_attn_indexes {list(global_attn)} must lie in [0, {depth})")
        if args["encoder_embed_dim"] % args["encoder_num_heads"]:
            raise ConfigError("encoder_num_heads must divide encoder_embed_dim")
        encoder: ViTConfig | TinyViTConfig = ViTConfig(
            int(args["encoder_embed_dim"]), int(depth), int(args["encoder_num_heads"]), global_attn
        )
    elif "tinyvit_args" in data:
        args = data["tinyvit_args"]
        keys = ("embed_dims", "depths", "num_heads", "window_sizes")
        missing = [k for k in keys if k not in args]
        if missing:
            raise ConfigError(f"tinyvit_args of {name!r} lacks {', '.join(missing)}")
        values = {k: _ints(args[k], k) for k in keys}
        if len({len(v) for v in values.values()}) != 1:
            raise ConfigError(f"tinyvit_args lists must have equal lengths, got {values}")
        encoder = TinyViTConfig(**values)
    else:
        raise ConfigError(
            f"model config {name!r} needs a 'builder_args' (SAM ViT) or 'tinyvit_args' (MobileSAM) object"
        )
    return SamConfig(name=name, encoder=encoder)


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
