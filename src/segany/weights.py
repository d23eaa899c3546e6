"""Weights: finding, downloading, verifying and loading them, with errors that say what to do.

The cache (``$SEGANY_HOME``, default ``~/.cache/segany``) holds the registry's files, fetched once
and kept only when their size and sha256 match. :func:`read_state_dict` reads torch and safetensors
files and transformers ``save_pretrained`` folders; other layouts are renamed to the official tensor
names (:func:`to_official`), so :func:`load_weights` can load strictly and say what does not fit.

Hugging Face ``transformers`` stores the same SAM weights under its own names
(``vision_encoder.layers.N.layer_norm1`` for ``image_encoder.blocks.N.norm1``, ...). Its model
holds the random positional matrix twice, tied: ``shared_image_embedding.positional_embedding``
and ``prompt_encoder.shared_embedding.positional_embedding``; ``save_pretrained`` writes only the
first, older files hold both. :func:`to_official` renames such a state dict so that the official
architecture (one matrix) loads it strictly; official dicts pass through unchanged.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError, CheckpointMismatchError, ChecksumError, WeightsUnavailableError
from .models.sam import Sam
from .registry import MODELS, SAM2_MODELS, ModelSpec, WeightFile

_CHUNK = 1 << 20

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
    if is_hugging_face_sam2(state_dict):
        return hugging_face_sam2_to_official(state_dict)
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



# --- Hugging Face transformers Sam2Model → official SAM 2 names --------------------------------
# (pattern, replacement) applied in order, each that matches (a key passes several).
_HF_SAM2_RULES: tuple[tuple[str, str], ...] = (
    (r"^no_memory_embedding$", "no_mem_embed"),
    (r"^no_memory_positional_encoding$", "no_mem_pos_enc"),
    (r"^memory_temporal_positional_encoding$", "maskmem_tpos_enc"),
    (r"^no_object_pointer$", "no_obj_ptr"),
    (r"^occlusion_spatial_embedding_parameter$", "no_obj_embed_spatial"),
    (r"^object_pointer_proj\.", "obj_ptr_proj."),
    (r"^temporal_positional_encoding_projection_layer\.", "obj_ptr_tpos_proj."),
    (r"^(memory_attention\.layers\.\d+\.\w+)\.o_proj\.", r"\1.out_proj."),
    (r"^(memory_attention\.layers\.\d+)\.layer_norm(\d)\.", r"\1.norm\2."),
    (r"^memory_attention\.layer_norm\.", "memory_attention.norm."),
    (r"^memory_encoder\.feature_projection\.", "memory_encoder.pix_feat_proj."),
    (r"^memory_encoder\.projection\.", "memory_encoder.out_proj."),
    (r"^memory_encoder\.memory_fuser\.", "memory_encoder.fuser."),
    (r"^(memory_encoder\.fuser\.layers\.\d+)\.scale$", r"\1.gamma"),
    (r"^(memory_encoder\.fuser\.layers\.\d+)\.depthwise_conv\.", r"\1.dwconv."),
    (r"^(memory_encoder\.fuser\.layers\.\d+)\.layer_norm\.", r"\1.norm."),
    (r"^(memory_encoder\.fuser\.layers\.\d+)\.pointwise_conv(\d)\.", r"\1.pwconv\2."),
    (r"^vision_encoder\.backbone\.", "image_encoder.trunk."),
    (r"^vision_encoder\.neck\.convs\.(\d+)\.", r"image_encoder.neck.convs.\1.conv."),
    (r"^image_encoder\.trunk\.patch_embed\.projection\.", "image_encoder.trunk.patch_embed.proj."),
    (r"^(image_encoder\.trunk\.blocks\.\d+)\.layer_norm(\d)\.", r"\1.norm\2."),
    (r"^prompt_encoder\.", "sam_prompt_encoder."),
    (r"^sam_prompt_encoder\.mask_embed\.conv1\.", "sam_prompt_encoder.mask_downscaling.0."),
    (r"^sam_prompt_encoder\.mask_embed\.layer_norm1\.", "sam_prompt_encoder.mask_downscaling.1."),
    (r"^sam_prompt_encoder\.mask_embed\.conv2\.", "sam_prompt_encoder.mask_downscaling.3."),
    (r"^sam_prompt_encoder\.mask_embed\.layer_norm2\.", "sam_prompt_encoder.mask_downscaling.4."),
    (r"^sam_prompt_encoder\.mask_embed\.conv3\.", "sam_prompt_encoder.mask_downscaling.6."),
    (r"^mask_decoder\.", "sam_mask_decoder."),
    (r"^(sam_mask_decoder\.transformer\.layers\.\d+)\.layer_norm(\d)\.", r"\1.norm\2."),
    (r"^sam_mask_decoder\.transformer\.layer_norm_final_attn\.", "sam_mask_decoder.transformer.norm_final_attn."),
    (r"^(sam_mask_decoder\.transformer\.(?:layers\.\d+\.\w+|final_attn_token_to_image))\.o_proj\.", r"\1.out_proj."),
    (r"^sam_mask_decoder\.upscale_conv1\.", "sam_mask_decoder.output_upscaling.0."),
    (r"^sam_mask_decoder\.upscale_layer_norm\.", "sam_mask_decoder.output_upscaling.1."),
    (r"^sam_mask_decoder\.upscale_conv2\.", "sam_mask_decoder.output_upscaling.3."),
)
# transformers' MLPs hold proj_in, layers.0..n-3, proj_out; the official MLP layers.0..n-1.
_HF_SAM2_MLP = re.compile(r"^(.*(?:\.mlp|_mlps\.\d+|_head)|obj_ptr_proj)\.(proj_in|layers\.(\d+)|proj_out)\.(weight|bias)$")
_HF_SAM2_POINTS = "prompt_encoder.point_embed.weight"  # one (4, C) table; the official: 4 (1, C) embeddings


_HF_DOWNSAMPLER = re.compile(r"^memory_encoder\.mask_downsampler\.(?:layers\.(\d+)\.(conv|layer_norm)|(final_conv))\.(weight|bias)$")


def _rename_mask_downsampler(state_dict: dict[str, torch.Tensor]) -> None:
    """transformers' ``mask_downsampler.layers.i.{conv,layer_norm}`` / ``final_conv`` → the official
    ``encoder`` Sequential (conv, LayerNorm2d, GELU per layer, then the final 1x1 conv), in place."""
    found = {key: _HF_DOWNSAMPLER.match(key) for key in list(state_dict)}
    found = {key: match for key, match in found.items() if match}
    count = 1 + max((int(m.group(1)) for m in found.values() if m.group(1) is not None), default=-1)
    for key, match in found.items():
        layer, part, final, kind = match.groups()
        index = 3 * count if final else 3 * int(layer) + (part == "layer_norm")
        state_dict[f"memory_encoder.mask_downsampler.encoder.{index}.{kind}"] = state_dict.pop(key)


def is_hugging_face_sam2(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state_dict`` uses transformers' ``Sam2Model`` names."""
    return any(key.startswith("vision_encoder.backbone.") for key in state_dict)


def _hf_sam2_rules(key: str) -> str:
    for pattern, replacement in _HF_SAM2_RULES:
        key = re.sub(pattern, replacement, key)
    return key


def hugging_face_sam2_key(key: str, hidden_layers: int = 0) -> str:
    """The official SAM 2 name of one transformers ``Sam2Model`` key; ``hidden_layers`` is how many
    ``layers.i`` its MLP holds between ``proj_in`` and ``proj_out`` (the mask downsampler's
    layers are renamed by :func:`hugging_face_sam2_to_official`, which counts them)."""
    key = _hf_sam2_rules(key)
    match = _HF_SAM2_MLP.match(key)
    if match:
        prefix, part, index, kind = match.groups()
        position = 0 if part == "proj_in" else hidden_layers + 1 if part == "proj_out" else int(index) + 1
        key = f"{prefix}.layers.{position}.{kind}"
    return key


def hugging_face_sam2_to_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official-named copy of a transformers ``Sam2Model`` / ``Sam2VideoModel`` state_dict (its tied
    positional matrix kept once, the point-embedding table split into the official four)."""
    skip = (_HF_POSITIONAL, _HF_POSITIONAL_COPY, _HF_SAM2_POINTS)
    staged = {_hf_sam2_rules(key): key for key in state_dict if key not in skip}
    hidden: dict[str, int] = {}
    for key in staged:
        match = _HF_SAM2_MLP.match(key)
        if match and match.group(3) is not None:
            hidden[match.group(1)] = max(hidden.get(match.group(1), 0), int(match.group(3)) + 1)
    renamed = {}
    for key, original in staged.items():
        match = _HF_SAM2_MLP.match(key)
        renamed[hugging_face_sam2_key(original, hidden.get(match.group(1), 0) if match else 0)] = state_dict[original]
    _rename_mask_downsampler(renamed)
    tied = [state_dict[k] for k in (_HF_POSITIONAL, _HF_POSITIONAL_COPY) if k in state_dict]
    if len(tied) == 2 and not _same(tied[0], tied[1]):
        raise CheckpointError(f"{_HF_POSITIONAL} and {_HF_POSITIONAL_COPY} differ: SAM 2 uses one positional matrix for both")
    if tied:
        renamed["sam_" + _OFFICIAL_POSITIONAL] = tied[0]
    if _HF_SAM2_POINTS in state_dict:
        for i, row in enumerate(state_dict[_HF_SAM2_POINTS].split(1)):
            renamed[f"sam_prompt_encoder.point_embeddings.{i}.weight"] = row
    return renamed


def cache_dir() -> Path:
    """Where downloaded weights live: ``$SEGANY_HOME`` or ``~/.cache/segany``."""
    return Path(os.environ.get("SEGANY_HOME") or Path.home() / ".cache" / "segany")


def cached_path(spec: ModelSpec | WeightFile) -> Path:
    return cache_dir() / spec.filename


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _offline_message(spec: ModelSpec | WeightFile, reason: str) -> str:
    return (
        f"weights for {spec.name!r} are not cached and could not be downloaded ({reason}). "
        f"Download {spec.url} ({spec.num_bytes:,} bytes, sha256 {spec.sha256}) "
        f"and put it at {cached_path(spec)}, or pass {getattr(spec, 'local_option', '--checkpoint PATH')}"
    )


def download(spec: ModelSpec | WeightFile, progress: bool = True, timeout: float = 30.0) -> Path:
    """Fetch ``spec``'s weights into the cache; the file appears only once its sha256 matches."""
    from tqdm.auto import tqdm

    target = cached_path(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(spec.url, timeout=timeout) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or spec.num_bytes)
            with tqdm(total=total, unit="B", unit_scale=True, desc=spec.filename, disable=not progress) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        part.unlink(missing_ok=True)
        raise WeightsUnavailableError(_offline_message(spec, str(getattr(exc, "reason", exc)))) from None
    if spec.sha256 is not None and digest.hexdigest() != spec.sha256:
        part.unlink(missing_ok=True)
        raise ChecksumError(f"download of {spec.url} has sha256 {digest.hexdigest()}, expected {spec.sha256}")
    os.replace(part, target)
    return target


def ensure_weights(name: str, progress: bool = True) -> Path:
    """The cached weights of zoo model ``name``, downloading them on first use."""
    return ensure_file(MODELS[name] if name in MODELS else SAM2_MODELS[name], progress=progress)


def ensure_file(spec: ModelSpec | WeightFile, progress: bool = True) -> Path:
    """The cached copy of ``spec``'s file, downloaded (and sha256-checked) on first use; a cached
    file of another byte size is refused."""
    path = cached_path(spec)
    if path.exists():
        size = path.stat().st_size
        if size != spec.num_bytes:
            raise ChecksumError(
                f"{path} has {size:,} bytes, expected {spec.num_bytes:,}: delete it to download again"
            )
        return path
    return download(spec, progress=progress)


# The weight files of a transformers save_pretrained folder, in the order they are looked for.
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def hugging_face_weights(folder: Path) -> list[Path]:
    """The weight file(s) of a ``save_pretrained`` folder (all shards of a sharded safetensors)."""
    for filename in HF_WEIGHT_FILES:
        path = folder / filename
        if not path.is_file():
            continue
        if not filename.endswith(".index.json"):
            return [path]
        try:
            weight_map = json.loads(path.read_text())["weight_map"]
            return [folder / shard for shard in sorted(set(weight_map.values()))]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{path} is not a safetensors shard index: {exc}") from None
    raise CheckpointError(f"model folder {folder} holds none of {', '.join(HF_WEIGHT_FILES)}")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read as a safetensors file: {exc}".split("\n")[0]) from None


def _read_torch(path: Path) -> Mapping:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated / foreign files
        raise CheckpointError(f"checkpoint {path} cannot be read as a torch file: {exc}".split("\n")[0]) from None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint under the official names.

    ``path`` is a torch file (a bare state_dict, one under ``model`` / ``state_dict``,
    ``module.``-prefixed keys from DataParallel), a ``.safetensors`` file, or a transformers
    ``save_pretrained`` folder (``model.safetensors``, its shards, or ``pytorch_model.bin``);
    Hugging Face ``SamModel`` names are renamed to the official ones.
    """
    path = Path(path)
    if path.is_dir():
        data: Mapping = {}
        for file in hugging_face_weights(path):
            data = {**data, **(_read_safetensors(file) if file.suffix == ".safetensors" else _read_torch(file))}
    elif path.suffix == ".safetensors":
        data = _read_safetensors(path)
    elif not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    else:
        data = _read_torch(path)
    for key in ("model", "state_dict"):
        if isinstance(data, Mapping) and isinstance(data.get(key), Mapping):
            data = data[key]
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"checkpoint {path} does not hold a state_dict (a mapping of names to tensors)")
    return to_official({k.removeprefix("module."): v for k, v in data.items()})


def _expected_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def closest_architecture(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """The zoo model whose keys and shapes agree with most of ``state_dict`` (None if none fits)."""
    given = {k: tuple(v.shape) for k, v in state_dict.items()}
    best, best_score = None, 0.0
    for name in MODELS:
        with torch.device("meta"):
            expected = _expected_shapes(Sam(MODELS[name].config))
        agree = sum(1 for k, s in given.items() if expected.get(k) == s)
        score = agree / max(len(expected), len(given))
        if score > best_score:
            best, best_score = name, score
    return best if best_score > 0.5 else None


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Strictly load ``state_dict``; on any difference say which keys/shapes and what it looks like.

    Floating tensors with NaN or infinite values are refused (:class:`CheckpointError` naming them).
    """
    expected = _expected_shapes(model)
    given = {k: tuple(v.shape) for k, v in state_dict.items()}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    wrong = [f"{k}: checkpoint {list(given[k])} vs model {list(expected[k])}" for k in expected if k in given and given[k] != expected[k]]
    if missing or unexpected or wrong:
        name = getattr(getattr(model, "config", None), "name", type(model).__name__)
        guess = closest_architecture(state_dict)
        lines = [f"{source} does not fit model {name!r}" + (f"; it looks like {guess!r}" if guess else "")]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong)):
            if items:
                shown = ", ".join(items[:5]) + (f", ... ({len(items) - 5} more)" if len(items) > 5 else "")
                lines.append(f"  {len(items)} {title}: {shown}")
        raise CheckpointMismatchError("\n".join(lines))
    _check_finite(state_dict, source)
    model.load_state_dict(state_dict, strict=True)


def _check_finite(state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse floating tensors holding NaN or infinity: they would give NaN scores and masks."""
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not v.is_meta and not torch.isfinite(v).all()]
    if bad:
        shown = ", ".join(bad[:5]) + (f", ... ({len(bad) - 5} more)" if len(bad) > 5 else "")
        raise CheckpointError(f"{source} has NaN or infinite values in {len(bad)} tensor(s): {shown}")
