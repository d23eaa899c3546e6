"""Stored image embeddings (segany.data.formats.embeddings): round trips for SAM 1, SAM 2 and the
classic engine, predictions from loaded features equal to those from set_image, typed errors for
files that are not ours."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePath

import numpy as np
import pytest
import safetensors.torch
import torch

import segany
from segany.data.formats.embeddings import (
    embedding_mismatch,
    embedding_path,
    file_sha256,
    model_name_of,
    read_embedding,
    read_embedding_info,
    write_embedding,
)
from segany.errors import ConfigError, EmbeddingFileError, NotFoundError

SHA = "ab" * 32
POINTS = (np.array([[20.0, 15.0], [40.0, 30.0]]), np.array([1, 0]))


@pytest.fixture(scope="module")
def tiny_sam2(tiny_sam2_files: tuple[Path, Path]):
    config, checkpoint = tiny_sam2_files
    return segany.load_model(config, checkpoint=checkpoint)


def _store(path: Path, features: segany.ImageFeatures, model, checkpoint: str | None = "cd" * 32) -> None:
    write_embedding(path, features, image_name="cat.png", image_sha256=SHA, model_name=model_name_of(model),
                    checkpoint_sha256=checkpoint)


@pytest.mark.parametrize("kind", ["sam", "sam2", "classic"])
def test_round_trip_predicts_exactly_as_set_image(kind: str, request: pytest.FixtureRequest, tmp_path: Path,
                                                  synthetic_small: np.ndarray) -> None:
    model = {"sam": lambda: request.getfixturevalue("tiny_random_sam"),
             "sam2": lambda: request.getfixturevalue("tiny_sam2"),
             "classic": lambda: segany.load_model("classic")}[kind]()
    computed = segany.Predictor(model)
    computed.set_image(synthetic_small)
    features = computed.image_features()
    path = embedding_path(tmp_path, PurePath("sub/cat.png"))
    _store(path, features, model)

    loaded, info = read_embedding(path)
    assert len(loaded.maps) == len(features.maps) == {"sam": 1, "sam2": 3, "classic": 2}[kind]
    for stored, original in zip(loaded.maps, features.maps):
        assert type(stored) is type(original) and stored.dtype == original.dtype
        assert np.array_equal(np.asarray(stored), np.asarray(original))
    assert (loaded.original_size, loaded.input_size) == (features.original_size, features.input_size)
    assert info == {"image_name": "cat.png", "image_sha256": SHA, "model_name": model.config.name,
                    "checkpoint_sha256": "cd" * 32, "original_size": features.original_size,
                    "input_size": features.input_size, "format_version": 1}
    assert read_embedding_info(path) == info  # the same metadata from the header alone

    reader = segany.Predictor(model)
    reader.set_image_features(loaded)
    for a, b in zip(computed.predict(*POINTS), reader.predict(*POINTS)):
        assert np.array_equal(a, b)


def test_embedding_path_and_checkpointless_model(tiny_random_sam, tmp_path: Path, synthetic_small: np.ndarray) -> None:
    assert embedding_path(tmp_path, PurePath("a/b.jpg")) == tmp_path / "a" / "b.jpg.safetensors"
    data = np.random.default_rng(0).bytes(3 << 19)  # more than one read of a MiB
    (tmp_path / "img.bin").write_bytes(data)
    assert file_sha256(tmp_path / "img.bin") == hashlib.sha256(data).hexdigest()
    for bad in ("/etc/x.jpg", "../x.jpg", ""):
        with pytest.raises(ConfigError):
            embedding_path(tmp_path, PurePath(bad))
    predictor = segany.Predictor(tiny_random_sam)
    predictor.set_image(synthetic_small)
    path = tmp_path / "x.safetensors"
    _store(path, predictor.image_features(), tiny_random_sam, checkpoint=None)
    _, info = read_embedding(path)
    assert info["checkpoint_sha256"] is None
    assert embedding_mismatch(info, image_sha256=SHA, model_name="tiny_random_sam", checkpoint_sha256=None) is None
    assert "sha256" in embedding_mismatch(info, image_sha256="0" * 64, model_name="tiny_random_sam", checkpoint_sha256=None)
    assert "vit_b" in embedding_mismatch(info, image_sha256=SHA, model_name="vit_b", checkpoint_sha256=None)
    assert "checkpoint" in embedding_mismatch(info, image_sha256=SHA, model_name="tiny_random_sam", checkpoint_sha256="1")


def _valid_file(tmp_path: Path) -> Path:
    path = tmp_path / "valid.safetensors"
    features = segany.ImageFeatures((torch.ones(1, 4, 2, 2),), (10, 12), (8, 10))
    write_embedding(path, features, image_name="a", image_sha256=SHA, model_name="m", checkpoint_sha256=None)
    return path


def test_corrupt_foreign_and_future_files_are_refused(tmp_path: Path) -> None:
    valid = _valid_file(tmp_path).read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(valid[: len(valid) - 7])
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00not a safetensors file at all")
    foreign = tmp_path / "weights.safetensors"
    safetensors.torch.save_file({"weight": torch.zeros(3)}, str(foreign))
    header = safetensors.safe_open(str(_valid_file(tmp_path)), "pt").metadata()
    future = tmp_path / "future.safetensors"
    safetensors.torch.save_file({"map_0": torch.zeros(1)}, str(future), metadata={**header, "format_version": "99"})
    mislabelled = tmp_path / "mislabelled.safetensors"
    safetensors.torch.save_file({"map_0": torch.zeros(1)}, str(mislabelled),
                                metadata={**header, "map_kinds": json.dumps(["torch", "torch"])})
    bad_size = tmp_path / "bad_size.safetensors"
    safetensors.torch.save_file({"map_0": torch.zeros(1)}, str(bad_size), metadata={**header, "input_size": "[1]"})
    for path, words in ((truncated, "corrupt"), (junk, "corrupt"), (foreign, "not a segany embedding"),
                        (future, "version '99'"), (mislabelled, "do not match"), (bad_size, "input_size")):
        with pytest.raises(EmbeddingFileError, match=words):
            read_embedding(path)
        if path is not mislabelled:  # its header is fine: only its maps are wrong
            with pytest.raises(EmbeddingFileError, match=words):
                read_embedding_info(path)
    with pytest.raises(NotFoundError):
        read_embedding(tmp_path / "absent.safetensors")
    with pytest.raises(NotFoundError):
        read_embedding_info(tmp_path / "absent.safetensors")


def test_info_reads_no_tensor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """read_embedding_info opens the header only: a file whose maps cannot be read still answers."""
    import segany.data.formats.embeddings as embeddings

    path = _valid_file(tmp_path)
    expected = read_embedding(path)[1]

    def no_maps(*args: object) -> None:
        raise AssertionError("a tensor was read")

    monkeypatch.setattr(embeddings, "_read_maps", no_maps)
    assert read_embedding_info(path) == expected and expected["original_size"] == (10, 12)


def test_write_refuses_what_it_cannot_store(tmp_path: Path) -> None:
    for features in (segany.ImageFeatures((), (4, 4), (4, 4)), segany.ImageFeatures(([1, 2],), (4, 4), (4, 4)),
                     "features"):
        with pytest.raises(EmbeddingFileError):
            write_embedding(tmp_path / "x.safetensors", features, image_name="a", image_sha256=SHA, model_name="m",
                            checkpoint_sha256=None)
    assert not list(tmp_path.iterdir())
