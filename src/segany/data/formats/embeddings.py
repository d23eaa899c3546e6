"""Stored image embeddings: one image's :class:`~segany.engine.ImageFeatures` in a safetensors file.

``segany embed`` writes them, ``segany serve --embeddings`` reads them so a server needs no
encoder time for those images. A file holds the feature maps as tensors ``map_0``, ``map_1``, ...
(SAM 1: the image embedding; SAM 2: the embedding and its two high-resolution maps; the classic
engine: its working copy and gradient, numpy arrays given back as numpy arrays) and, in the
safetensors header (strings), what they belong to: the image's name and the sha256 of its file's
bytes, the model's name and the sha256 of its checkpoint, the original and input sizes, and the
format version. Any safetensors reader (Python, Rust, JavaScript) opens them.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch

from ...engine import ImageFeatures
from ...errors import ConfigError, EmbeddingFileError, NotFoundError
from ...fileio import atomic_write_bytes

FORMAT = "segany.embedding"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"
_KINDS = ("torch", "numpy")
_IDENTITY = ("image_name", "image_sha256", "model_name", "checkpoint_sha256")


def model_name_of(model: Any) -> str:
    """The name to store with a model's embeddings and to match them by: its config's name
    (``vit_t``, ``sam2.1_hiera_t``, the ``name`` of a JSON config, ``classic``)."""
    return str(model.config.name)


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes (what ``image_sha256`` is), read a MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def embedding_path(out: str | os.PathLike, relative: PurePath) -> Path:
    """``<out>/<relative>.safetensors``: where the embedding of the image at ``relative`` (a path
    relative to the images folder, e.g. ``a/b.jpg``) is stored."""
    relative = PurePath(relative)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise ConfigError(f"an embedding's image path must be relative and inside its folder, got {str(relative)!r}")
    return Path(out) / relative.parent / f"{relative.name}{SUFFIX}"


def _as_tensor(value: Any, index: int) -> tuple[torch.Tensor, str]:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu").contiguous(), "torch"
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value)), "numpy"
    raise EmbeddingFileError(f"feature map {index} is a {type(value).__name__}: only torch tensors and numpy "
                             f"arrays can be stored")


def _size(value: Any, name: str) -> list[int]:
    size = [int(v) for v in value]
    if len(size) != 2 or min(size) < 1:
        raise EmbeddingFileError(f"{name} must be (height, width) of positive sizes, got {value!r}")
    return size


def write_embedding(path: str | os.PathLike, features: ImageFeatures, *, image_name: str, image_sha256: str,
                    model_name: str, checkpoint_sha256: str | None) -> None:
    """Store ``features`` of one image at ``path`` (atomically: a reader never sees half a file).

    ``image_sha256``: the sha256 of the image file's bytes; ``model_name``: :func:`model_name_of`
    the model; ``checkpoint_sha256``: of its weights file, None when there is none.
    """
    if not isinstance(features, ImageFeatures) or not features.maps:
        raise EmbeddingFileError(f"write_embedding needs an ImageFeatures with maps, got {type(features).__name__}")
    tensors, kinds = {}, []
    for index, value in enumerate(features.maps):
        tensors[f"map_{index}"], kind = _as_tensor(value, index)
        kinds.append(kind)
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "image_name": str(image_name),
        "image_sha256": str(image_sha256),
        "model_name": str(model_name),
        "original_size": json.dumps(_size(features.original_size, "original_size")),
        "input_size": json.dumps(_size(features.input_size, "input_size")),
        "map_kinds": json.dumps(kinds),
    }
    if checkpoint_sha256 is not None:
        metadata["checkpoint_sha256"] = str(checkpoint_sha256)
    atomic_write_bytes(path, safetensors.torch.save(tensors, metadata=metadata))


def _header(path: Path, handle: Any) -> dict[str, str]:
    metadata = handle.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise EmbeddingFileError(f"{path} is a safetensors file but not a segany embedding (no "
                                 f"format={FORMAT!r} in its header): write it with `segany embed`")
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise EmbeddingFileError(f"{path} is embedding format version {metadata.get('format_version')!r}; this "
                                 f"segany reads version {FORMAT_VERSION}: write it again with this version")
    missing = [key for key in (*_IDENTITY[:3], "original_size", "input_size", "map_kinds") if key not in metadata]
    if missing:
        raise EmbeddingFileError(f"{path} lacks {', '.join(missing)} in its header")
    return metadata


def _info(metadata: dict[str, str]) -> dict[str, Any]:
    """The metadata dict of :func:`read_embedding` from a checked header (sizes parsed)."""
    info: dict[str, Any] = {key: metadata.get(key) for key in _IDENTITY}
    info.update(original_size=tuple(_size(json.loads(metadata["original_size"]), "original_size")),
                input_size=tuple(_size(json.loads(metadata["input_size"]), "input_size")),
                format_version=FORMAT_VERSION)
    return info


def _open_embedding(path: Path, read: Any) -> Any:
    """``read(metadata, handle)`` on the open safetensors file at ``path``, its errors made typed."""
    if not path.is_file():
        raise NotFoundError(f"no embedding file at {path}")
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            return read(_header(path, handle), handle)
    except EmbeddingFileError:
        raise
    except safetensors.SafetensorError as exc:
        raise EmbeddingFileError(f"{path} is not a readable safetensors file (corrupt or truncated: {exc})") from None
    except (TypeError, ValueError) as exc:  # JSON that does not parse or is not a size
        raise EmbeddingFileError(f"{path} has a malformed header ({exc})") from None
    except OSError as exc:
        raise EmbeddingFileError(f"{path} cannot be read ({exc.strerror or exc})") from None


def read_embedding_info(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of the embedding at ``path`` (as :func:`read_embedding` gives it) from the
    safetensors header alone: no tensor is read. Errors as :func:`read_embedding`."""
    return _open_embedding(Path(path), lambda metadata, handle: _info(metadata))


def _read_maps(path: Path, metadata: dict[str, str], handle: Any) -> tuple[ImageFeatures, dict[str, Any]]:
    info = _info(metadata)
    kinds = json.loads(metadata["map_kinds"])
    names = [f"map_{i}" for i in range(len(kinds))] if isinstance(kinds, list) else []
    if not names or any(kind not in _KINDS for kind in kinds) or sorted(handle.keys()) != sorted(names):
        raise EmbeddingFileError(f"{path}: its maps ({sorted(handle.keys())}) do not match its header's "
                                 f"map_kinds {metadata['map_kinds']}")
    maps = tuple(handle.get_tensor(name) for name in names)
    maps = tuple(m.numpy() if kind == "numpy" else m for m, kind in zip(maps, kinds))
    return ImageFeatures(maps, info["original_size"], info["input_size"]), info


def read_embedding(path: str | os.PathLike) -> tuple[ImageFeatures, dict[str, Any]]:
    """The features stored at ``path`` and their metadata: ``image_name``, ``image_sha256``,
    ``model_name``, ``checkpoint_sha256`` (None when the model had none), ``original_size``,
    ``input_size`` ((H, W) tuples) and ``format_version``. :class:`NotFoundError` when there is no
    file, :class:`EmbeddingFileError` when it is corrupt, truncated or not a segany embedding."""
    path = Path(path)
    return _open_embedding(path, lambda metadata, handle: _read_maps(path, metadata, handle))


def embedding_mismatch(info: dict[str, Any], *, image_sha256: str, model_name: str,
                       checkpoint_sha256: str | None) -> str | None:
    """Why stored embedding metadata ``info`` (from :func:`read_embedding`) is not for this image
    file and model, or None when it is."""
    if info.get("image_sha256") != image_sha256:
        return "the image file changed since its embedding was stored (sha256 differs)"
    if info.get("model_name") != model_name:
        return f"it was computed by model {info.get('model_name')!r}, not {model_name!r}"
    if info.get("checkpoint_sha256") != checkpoint_sha256:
        return (f"it was computed with checkpoint sha256 {info.get('checkpoint_sha256')}, this model's is "
                f"{checkpoint_sha256}")
    return None
