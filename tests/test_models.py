"""Builders against the official manifests, config parsing, and state-dict round trips."""
from __future__ import annotations

import json

import pytest
import torch

import segany
from segany.errors import CheckpointError, CheckpointMismatchError, ConfigError
from segany.registry import MODELS, config_from_dict, config_to_dict, resolve_config
from tiny_models import tiny_mobilesam_config, tiny_sam_config


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h", "vit_t"])
def test_builder_matches_official_manifest(golden, name: str) -> None:
    manifest = json.loads((golden / f"manifest_{name}.json").read_text())
    with torch.device("meta"):
        model = segany.build_model(name)
    state = model.state_dict()
    assert list(state) == list(manifest["state_dict"])  # same keys, same order
    for key, entry in manifest["state_dict"].items():
        assert list(state[key].shape) == entry["shape"], key
        assert str(state[key].dtype).removeprefix("torch.") == entry["dtype"], key
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"]


def test_json_config_builds_same_architecture_as_dict(golden) -> None:
    from_file = resolve_config(golden / "tiny_sam.json")
    from_dict = resolve_config(json.loads((golden / "tiny_sam.json").read_text()))
    assert from_file.encoder == from_dict.encoder
    assert from_file.encoder.embed_dim == 96 and from_file.encoder.global_attn_indexes == (1, 3)


@pytest.mark.parametrize("config", [
    *(spec.config for spec in MODELS.values()), tiny_sam_config(), tiny_mobilesam_config(), tiny_sam_config(64, 16),
], ids=lambda c: c.name)
def test_every_config_field_round_trips_through_json(config) -> None:
    data = json.loads(json.dumps(config_to_dict(config)))
    assert config_from_dict(data) == config


def test_json_file_carries_geometry_and_decoder(tmp_path, tiny_random_sam) -> None:
    """A JSON config file alone rebuilds the tiny model's geometry: 128 px input, 32-wide decoder."""
    from tiny_models import save_tiny_model

    path, checkpoint = save_tiny_model(tmp_path, tiny_random_sam)
    model = segany.load_model(path, checkpoint=checkpoint)
    assert model.config == tiny_random_sam.config and model.config.image_size == 128
    for key, value in tiny_random_sam.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_second_config_round_trips_state_dict(tmp_path) -> None:
    """Parity comes from the architecture: another small config saves and reloads bit-exactly."""
    config = {"name": "other", "builder_args": {
        "encoder_embed_dim": 64, "encoder_depth": 3, "encoder_num_heads": 2, "encoder_global_attn_indexes": [2]}}
    path = tmp_path / "other.json"
    path.write_text(json.dumps(config))
    torch.manual_seed(0)
    model = segany.build_model(path)
    torch.save(model.state_dict(), tmp_path / "other.pth")
    torch.save({"model": model.state_dict()}, tmp_path / "wrapped.pth")
    image = torch.randn(1, 3, 1024, 1024)
    with torch.inference_mode():
        expected = model.image_encoder(image)
        for file in ("other.pth", "wrapped.pth"):
            loaded = segany.load_model(path, checkpoint=tmp_path / file)
            assert torch.equal(loaded.image_encoder(image), expected)


def test_mismatching_checkpoint_names_architecture_and_keys(tiny_random_sam, tmp_path) -> None:
    torch.save(tiny_random_sam.state_dict(), tmp_path / "tiny.pth")
    with pytest.raises(CheckpointMismatchError) as info:
        segany.load_model("vit_b", checkpoint=tmp_path / "tiny.pth")
    message = str(info.value)
    assert "shape mismatches" in message and "image_encoder.pos_embed" in message


def test_checkpoint_of_other_zoo_model_is_recognised(tmp_path) -> None:
    with torch.device("meta"):
        state = segany.build_model("vit_b").state_dict()
    fake = {k: torch.zeros(v.shape) if k.startswith("prompt") else torch.zeros(0) for k, v in state.items()}
    del fake["image_encoder.pos_embed"]
    from segany.weights import closest_architecture

    assert closest_architecture({k: torch.empty(v.shape, device="meta") for k, v in state.items()}) == "vit_b"
    assert closest_architecture(fake) is None


@pytest.mark.parametrize("content", [b"", b"not a torch file", b"PK\x03\x04garbage"])
def test_corrupt_checkpoint_is_a_checkpoint_error(tmp_path, content: bytes) -> None:
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="cannot be read"):
        segany.load_model("vit_t", checkpoint=path)


def test_checkpoint_without_tensors_is_rejected(tmp_path) -> None:
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="state_dict"):
        segany.load_model("vit_t", checkpoint=path)


def test_missing_checkpoint_file(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        segany.load_model("vit_t", checkpoint=tmp_path / "nope.pth")


@pytest.mark.parametrize(
    "config, message",
    [
        ({}, "builder_args"),
        ({"builder_args": {"encoder_embed_dim": 64}}, "lacks"),
        ({"builder_args": {"encoder_embed_dim": 64, "encoder_depth": 2, "encoder_num_heads": 2,
                           "encoder_global_attn_indexes": [5]}}, "must lie in"),
        ({"tinyvit_args": {"embed_dims": [1, 2], "depths": [1], "num_heads": [1], "window_sizes": [7]}}, "equal lengths"),
        ({"builder_args": {**config_to_dict(tiny_sam_config())["builder_args"], "encoder_img_sz": 64}}, "unknown keys 'encoder_img_sz'"),
        ({"builder_args": {**config_to_dict(tiny_sam_config())["builder_args"], "encoder_img_size": "128"}}, "must be an integer"),
        ({**config_to_dict(tiny_sam_config()), "sam_args": {"decoder_mlp_dim": 64.5}}, "'decoder_mlp_dim' must be an integer"),
        ({**config_to_dict(tiny_sam_config()), "sam_args": {"pixel_std": [1, 2]}}, "list of 3 numbers"),
        ({**config_to_dict(tiny_sam_config()), "sam_args": []}, "sam_args of 'tiny_random_sam' must be an object"),
        ({**config_to_dict(tiny_sam_config()), "sam_args": {"prompt_embed_dim": 256}}, "out_chans"),
    ],
)
def test_bad_configs(config: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(config)


def test_unknown_model_name_lists_zoo() -> None:
    with pytest.raises(ConfigError, match="vit_b"):
        resolve_config("vit_x")


def test_offline_download_says_where_to_put_the_file(tmp_path, monkeypatch) -> None:
    from segany import weights
    from segany.errors import WeightsUnavailableError

    monkeypatch.setenv("SEGANY_HOME", str(tmp_path))

    def refuse(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(weights.urllib.request, "urlopen", refuse)
    with pytest.raises(WeightsUnavailableError) as info:
        weights.ensure_weights("vit_b", progress=False)
    spec = MODELS["vit_b"]
    assert str(tmp_path / spec.filename) in str(info.value) and spec.url in str(info.value)
    assert not list(tmp_path.iterdir())  # no partial file left behind


def test_download_verifies_sha256_before_renaming(tmp_path, monkeypatch) -> None:
    import io

    from segany import weights
    from segany.errors import ChecksumError

    monkeypatch.setenv("SEGANY_HOME", str(tmp_path))

    class Response(io.BytesIO):
        headers = {"Content-Length": "5"}

    monkeypatch.setattr(weights.urllib.request, "urlopen", lambda *a, **k: Response(b"hello"))
    with pytest.raises(ChecksumError, match="sha256"):
        weights.download(MODELS["vit_t"], progress=False)
    assert not list(tmp_path.iterdir())


def test_download_lands_verified_file_in_cache(tmp_path, monkeypatch) -> None:
    import hashlib
    import io
    from dataclasses import replace

    from segany import weights

    monkeypatch.setenv("SEGANY_HOME", str(tmp_path))
    payload = b"weights" * 1000
    spec = replace(MODELS["vit_t"], num_bytes=len(payload), sha256=hashlib.sha256(payload).hexdigest())

    class Response(io.BytesIO):
        headers = {"Content-Length": str(len(payload))}

    monkeypatch.setattr(weights.urllib.request, "urlopen", lambda *a, **k: Response(payload))
    path = weights.download(spec, progress=False)
    assert path == tmp_path / "mobile_sam.pt" and path.read_bytes() == payload
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mobile_sam.pt"]


def test_hugging_face_names_map_onto_official_vit_b(golden) -> None:
    """Every key of transformers' SamModel (ViT-B) renames to an official key of the same shape."""
    from segany.weights import to_official

    hf = json.loads((golden / "manifest_hf_sam_default_vit_b.json").read_text())["state_dict"]
    official = json.loads((golden / "manifest_vit_b.json").read_text())["state_dict"]
    renamed = to_official({k: torch.empty(v["shape"], device="meta") for k, v in hf.items()})
    assert set(renamed) == set(official)
    assert all(list(renamed[k].shape) == official[k]["shape"] for k in official)


def test_hugging_face_checkpoint_loads(tmp_path, golden) -> None:
    """The tiny checkpoint saved under Hugging Face names, with the positional matrix only under
    the name save_pretrained writes, loads to the same tensors."""
    from segany.weights import hugging_face_key

    hf_names = json.loads((golden / "manifest_hf_sam_default_vit_b.json").read_text())["state_dict"]
    official_to_hf = {hugging_face_key(name): name for name in hf_names if "positional_embedding" not in name}
    official_to_hf["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = "shared_image_embedding.positional_embedding"
    official = torch.load(golden / "tiny_sam.pth", weights_only=True)
    torch.save({official_to_hf[k]: v for k, v in official.items()}, tmp_path / "hf.pth")
    model = segany.load_model(golden / "tiny_sam.json", checkpoint=tmp_path / "hf.pth")
    for key, value in model.state_dict().items():
        assert torch.equal(value, official[key]), key


def test_checkpoint_with_non_finite_weights_is_refused(tmp_path, tiny_model_files) -> None:
    """NaN / inf weights would give NaN scores (invalid JSON downstream): refused, tensors named."""
    config, checkpoint = tiny_model_files
    state = torch.load(checkpoint, weights_only=True)
    state["mask_decoder.iou_token.weight"][0, 0] = float("nan")
    state["image_encoder.pos_embed"][0, 0, 0, 0] = float("inf")
    torch.save(state, tmp_path / "nan.pth")
    with pytest.raises(CheckpointError, match=r"NaN or infinite values in 2 tensor\(s\): .*pos_embed.*iou_token"):
        segany.load_model(config, checkpoint=tmp_path / "nan.pth")


def test_safetensors_checkpoint_loads(tmp_path, tiny_model_files) -> None:
    from safetensors.torch import save_file

    config, checkpoint = tiny_model_files
    official = torch.load(checkpoint, weights_only=True)
    save_file({k: v.contiguous() for k, v in official.items()}, tmp_path / "tiny.safetensors")
    model = segany.load_model(config, checkpoint=tmp_path / "tiny.safetensors")
    for key, value in model.state_dict().items():
        assert torch.equal(value, official[key]), key
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="safetensors"):
        segany.load_model(config, checkpoint=tmp_path / "bad.safetensors")
