"""``segany serve --embeddings DIR``: stored embeddings answer without the encoder, and equal the
computed ones; a missing, stale or foreign one is computed instead, said once in the log."""
from __future__ import annotations

import logging
from pathlib import Path, PurePath

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
from fastapi.testclient import TestClient

import segany
from segany.data.formats.embeddings import embedding_path, file_sha256, model_name_of, write_embedding
from segany.predict.runtime import Runtime
from segany.serve import create_app
from segany.serve.catalogue import image_id
from segany.weights import sha256_of
from tiny_models import model_args, synthetic_image

CHECKPOINT = "cd" * 32
PROMPT = {"points": [[30, 10], [5, 30]], "labels": [1, 0]}
EVERYTHING = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
NAMES = ("cat.png", "sub/stale.png", "sub/foreign.png", "none.png")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, tiny_random_sam) -> tuple[Path, Path]:
    """Images and their stored embeddings: cat.png's fits; stale.png's was stored for other bytes,
    foreign.png's by another checkpoint; none.png has none."""
    images, stored = tmp_path_factory.mktemp("images"), tmp_path_factory.mktemp("embeddings")
    for seed, name in enumerate(NAMES):
        (images / name).parent.mkdir(exist_ok=True)
        Image.fromarray(synthetic_image(37, 53, seed)).save(images / name)
    predictor = segany.Predictor(tiny_random_sam)
    for name, sha, checkpoint in (("cat.png", None, CHECKPOINT), ("sub/stale.png", "0" * 64, CHECKPOINT),
                                  ("sub/foreign.png", None, "ef" * 32)):
        predictor.set_image(segany.load_image(images / name))
        write_embedding(embedding_path(stored, PurePath(name)), predictor.image_features(), image_name=name,
                        image_sha256=sha or sha256_of(images / name), model_name=model_name_of(tiny_random_sam),
                        checkpoint_sha256=checkpoint)
    return images, stored


def _client(app) -> TestClient:
    return TestClient(app, base_url="http://localhost")


def _predict(client: TestClient, name: str) -> list[tuple]:
    response = client.post(f"/api/images/{image_id(name)}/predict", json=PROMPT)
    assert response.status_code == 200, response.text
    return [(c["score"], c["rle"], c["area"]) for c in response.json()["candidates"]]


def test_stored_embedding_answers_without_the_encoder(folders, tiny_random_sam, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    images, stored = folders
    reference = _client(create_app(images, tiny_random_sam, tmp_path / "a.json"))
    computed = _predict(reference, "cat.png")
    proposals = reference.post(f"/api/images/{image_id('cat.png')}/everything", json=EVERYTHING).json()["proposals"]

    def no_encoder(*_):
        raise AssertionError("the encoder ran for an image with a stored embedding")

    monkeypatch.setattr(Runtime, "encode", no_encoder)
    client = _client(create_app(images, tiny_random_sam, tmp_path / "b.json", embeddings=stored,
                                checkpoint_sha256=CHECKPOINT))
    assert _predict(client, "cat.png") == computed
    everything = client.post(f"/api/images/{image_id('cat.png')}/everything", json=EVERYTHING)
    assert everything.status_code == 200 and proposals and everything.json()["proposals"] == proposals
    info = client.get("/api/info").json()
    assert info["embeddings_stored"] == 1 and info["embeddings_computed"] == 1


def test_unfit_embeddings_are_computed_and_said_once(folders, tiny_random_sam, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    """Embeddings that do not fit are computed, said once per image, their tensors never read."""
    images, stored = folders

    def no_maps(*args: object) -> None:
        raise AssertionError("the tensors of an unfit embedding were read")

    monkeypatch.setattr("segany.data.formats.embeddings._read_maps", no_maps)
    reference = _client(create_app(images, tiny_random_sam, tmp_path / "a.json"))
    app = create_app(images, tiny_random_sam, tmp_path / "b.json", embeddings=stored, checkpoint_sha256=CHECKPOINT,
                     max_embeddings=1)
    client = _client(app)
    with caplog.at_level(logging.WARNING, logger="segany.serve"):
        for name in NAMES[1:] * 2:  # a cache of one: every request computes again
            assert _predict(client, name) == _predict(reference, name)
    said = [r.getMessage() for r in caplog.records if r.name == "segany.serve"]
    assert len(said) == 3, said
    assert "stale.png" in said[0] and "sha256 differs" in said[0]
    assert "foreign.png" in said[1] and "checkpoint" in said[1]
    assert "none.png" in said[2] and "no stored embedding" in said[2]
    assert app.state.service.stored.used == 0


def test_serve_command_embeddings_option(folders, tiny_model_files, tmp_path: Path, monkeypatch, capsys) -> None:
    from segany.cli import main
    from segany.serve import server

    images, stored = folders
    code = main(["serve", str(images), "--embeddings", str(tmp_path / "absent"), *model_args(tiny_model_files)])
    assert code == 2 and "embeddings folder" in capsys.readouterr().err
    started = []
    monkeypatch.setattr(server, "make_server", lambda app, host, port: started.append(app) or type(
        "NoServer", (), {"run": lambda self: None})())
    assert main(["serve", str(images), "--embeddings", str(stored), *model_args(tiny_model_files)]) == 0
    (app,) = started
    assert app.state.service.stored.checkpoint_sha256 == sha256_of(tiny_model_files[1])
    assert app.state.service.stored.model_name == "tiny_random_sam"


def test_stored_sam2_embedding_answers_without_the_encoder(tiny_sam2_files, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from segany.predict.runtime import Sam2Runtime

    model = segany.load_model(tiny_sam2_files[0], checkpoint=tiny_sam2_files[1])
    images, stored = tmp_path / "images", tmp_path / "embeddings"
    images.mkdir()
    Image.fromarray(synthetic_image(37, 53)).save(images / "cat.png")
    predictor = segany.Predictor(model)
    predictor.set_image(segany.load_image(images / "cat.png"))
    write_embedding(embedding_path(stored, PurePath("cat.png")), predictor.image_features(), image_name="cat.png",
                    image_sha256=file_sha256(images / "cat.png"), model_name=model_name_of(model), checkpoint_sha256=None)
    computed = _predict(_client(create_app(images, model, tmp_path / "a.json")), "cat.png")

    def no_encoder(*_):
        raise AssertionError("the encoder ran for an image with a stored embedding")

    monkeypatch.setattr(Sam2Runtime, "encode", no_encoder)
    client = _client(create_app(images, model, tmp_path / "b.json", embeddings=stored))
    assert _predict(client, "cat.png") == computed
    assert client.get("/api/info").json()["embeddings_stored"] == 1
