"""The annotator's text search (``POST /api/images/{id}/find``, ``segany serve --detector``) on a tiny
random Grounding DINO and the tiny random SAM: the proposals are segany.text's TextPredictor result."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
pytest.importorskip("transformers", reason="the text extra (transformers) is not installed")
from fastapi.testclient import TestClient

from segany import Predictor
from segany.cli.serve import load_detector
from segany.errors import WeightsUnavailableError
from segany.masks import decode_rle
from segany.serve import create_app
from segany.text import GroundingDino, Owlv2, TextPredictor
from tiny_models import synthetic_image
from tiny_text_models import save_tiny_grounding_dino, save_tiny_owlv2

TEXT = "Cat, dog"


@pytest.fixture(scope="module")
def gdino(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_grounding_dino(tmp_path_factory.mktemp("gdino"))


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return synthetic_image(64, 80, seed=3)


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory: pytest.TempPathFactory, image: np.ndarray) -> Path:
    root = tmp_path_factory.mktemp("find_images")
    Image.fromarray(image).save(root / "scene.png")
    return root


def _client(images_dir: Path, model, tmp_path: Path, detector=None) -> tuple[TestClient, str]:
    client = TestClient(create_app(images_dir, model, tmp_path / "coco.json", detector=detector),
                        base_url="http://localhost")
    return client, client.get("/api/images").json()[0]["id"]


@pytest.fixture(scope="module")
def served(images_dir: Path, gdino: Path, tiny_random_sam, tmp_path_factory: pytest.TempPathFactory):
    """A client of a server with the tiny Grounding DINO (default thresholds) and the image's id."""
    return _client(images_dir, tiny_random_sam, tmp_path_factory.mktemp("find_store"), GroundingDino(gdino))


def test_find_proposals_are_the_text_predictors_result(served, image: np.ndarray, gdino: Path,
                                                       tiny_random_sam) -> None:
    client, image_id = served
    assert client.post(f"/api/images/{image_id}/embedding?wait=true").status_code == 200
    runs = []
    handle = tiny_random_sam.image_encoder.register_forward_hook(lambda *_: runs.append(1))
    try:
        response = client.post(f"/api/images/{image_id}/find", json={"text": TEXT, "box_threshold": 0.0})
    finally:
        handle.remove()
    assert response.status_code == 200, response.text
    assert not runs, "find must decode on the cached embedding, not encode the image again"
    assert client.get("/api/info").json()["detector"] == str(gdino)
    answer = response.json()
    expected = TextPredictor(GroundingDino(gdino, box_threshold=0.0), Predictor(tiny_random_sam)).predict(image, TEXT)
    assert len(expected) > 0, "box threshold 0: every query survives up to NMS"
    assert answer["classes"] == ["cat", "dog"]
    proposals = answer["proposals"]
    assert [p["category"] for p in proposals] == expected.category_names()
    assert [p["label"] for p in proposals] == expected.labels
    np.testing.assert_allclose([p["box"] for p in proposals], expected.boxes, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose([p["detector_score"] for p in proposals], expected.scores, rtol=1e-5)
    np.testing.assert_allclose([p["predicted_iou"] for p in proposals], expected.ious, rtol=1e-4, atol=1e-5)
    for proposal, mask in zip(proposals, expected.masks):
        got = decode_rle(proposal["rle"])
        assert np.array_equal(got, mask)
        assert proposal["area"] == int(mask.sum())

    # the server's detector keeps its own thresholds; a request's apply to that request only
    strict = client.post(f"/api/images/{image_id}/find", json={"text": TEXT, "box_threshold": 1.0})
    assert strict.status_code == 200 and strict.json()["proposals"] == []


def test_find_without_a_detector_names_the_option(images_dir: Path, tiny_random_sam, tmp_path: Path) -> None:
    client, image_id = _client(images_dir, tiny_random_sam, tmp_path)
    response = client.post(f"/api/images/{image_id}/find", json={"text": "cat"})
    assert response.status_code == 409
    assert "--detector" in response.json()["detail"]
    assert client.get("/api/info").json()["detector"] is None


@pytest.mark.parametrize(("body", "message"), [
    ({"text": ""}, "text"),
    ({"text": "cat " * 200}, "text"),
    ({"text": " , . "}, "names no class"),
    ({"text": "cat", "box_threshold": 1.5}, "box_threshold"),
    ({"text": "cat", "colour": "red"}, "colour"),
])
def test_find_bad_text_is_422(served, body: dict, message: str) -> None:
    client, image_id = served
    response = client.post(f"/api/images/{image_id}/find", json=body)
    assert response.status_code == 422
    assert message in response.json()["detail"]


def test_serve_loads_the_detector_of_the_text_engine(gdino: Path, tmp_path: Path) -> None:
    args = argparse.Namespace(detector=str(gdino), text_engine="grounding-dino", device="cpu")
    assert isinstance(load_detector(args), GroundingDino)
    assert load_detector(argparse.Namespace(detector=None, text_engine="owlv2", device="cpu")) is None
    missing = argparse.Namespace(detector=str(tmp_path / "nowhere"), text_engine="owlv2", device="cpu")
    with pytest.raises(WeightsUnavailableError, match="nowhere"):
        load_detector(missing)


def test_request_thresholds_leave_the_servers_detector_alone(gdino: Path, tmp_path: Path) -> None:
    dino = GroundingDino(gdino)
    tuned = dino.with_thresholds(0.1, 0.2)
    assert (tuned.box_threshold, tuned.text_threshold) == (0.1, 0.2) and tuned.model is dino.model
    assert (dino.box_threshold, dino.text_threshold) == (0.35, 0.25)
    assert dino.with_thresholds(None, 0.3).box_threshold == 0.35
    owl = Owlv2(save_tiny_owlv2(tmp_path / "owlv2"))
    assert owl.with_thresholds(0.5).threshold == 0.5 and owl.threshold == 0.1
