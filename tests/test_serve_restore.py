"""Restoring a deleted annotation under its own id (PUT /api/annotations/{id}): the page's undo of a
delete and redo of an accept. The server stays the source of truth: only ids it gave out and that
are not live can come back, each with a typed error otherwise."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
from fastapi.testclient import TestClient
from pycocotools.coco import COCO

from segany.masks import encode_rle
from segany.serve import create_app

HEIGHT, WIDTH = 30, 40


def _rle(x0: int, y0: int, x1: int, y1: int) -> dict:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[y0:y1, x0:x1] = True
    return encode_rle(mask)


@pytest.fixture()
def served(tmp_path: Path, tiny_random_sam) -> tuple[TestClient, str, Path]:
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((HEIGHT, WIDTH, 3), 128, np.uint8)).save(images / "grey.png")
    path = tmp_path / "coco.json"
    client = TestClient(create_app(images, tiny_random_sam, path), base_url="http://localhost")
    return client, client.get("/api/images").json()[0]["id"], path


def test_a_deleted_annotation_comes_back_with_its_id_and_mask(served) -> None:
    client, image, path = served
    first, second = (client.post(f"/api/images/{image}/annotations", json={"category": c, "rle": _rle(*box), "score": 0.5})
                     .json() for c, box in (("cat", (1, 1, 5, 5)), ("dog", (10, 10, 20, 14))))
    assert client.delete(f"/api/annotations/{first['id']}").status_code == 204
    body = {"image": image, "category": "cat", "rle": first["segmentation"], "score": 0.5}
    response = client.put(f"/api/annotations/{first['id']}", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == first
    data = json.loads(path.read_text())
    assert [a["id"] for a in data["annotations"]] == [first["id"], second["id"]]  # back in id order
    coco = COCO(str(path))
    assert int(coco.annToMask(coco.loadAnns([first["id"]])[0]).sum()) == 16
    # ids stay unique: the next new one is past both
    third = client.post(f"/api/images/{image}/annotations", json={"category": "cat", "rle": _rle(0, 0, 2, 2)}).json()
    assert third["id"] > second["id"]


def test_restore_refuses_live_and_never_given_ids(served) -> None:
    client, image, path = served
    made = client.post(f"/api/images/{image}/annotations", json={"category": "cat", "rle": _rle(1, 1, 5, 5)}).json()
    body = {"image": image, "category": "cat", "rle": _rle(1, 1, 5, 5)}
    live = client.put(f"/api/annotations/{made['id']}", json=body)
    assert live.status_code == 409 and "exists" in live.json()["detail"]
    for never in (made["id"] + 1, 0, -3):
        response = client.put(f"/api/annotations/{never}", json=body)
        assert response.status_code == 404 and "never given out" in response.json()["detail"]
    client.delete(f"/api/annotations/{made['id']}")
    unknown_image = client.put(f"/api/annotations/{made['id']}", json={**body, "image": "nope"})
    assert unknown_image.status_code == 404
    bad_mask = client.put(f"/api/annotations/{made['id']}", json={**body, "rle": {"size": [HEIGHT, WIDTH], "counts": [3]}})
    assert bad_mask.status_code == 422 and "cover 3 pixels" in bad_mask.json()["detail"]
    assert client.put(f"/api/annotations/{made['id']}", json={"category": "cat"}).status_code == 422
    assert json.loads(path.read_text())["annotations"] == []  # nothing half-restored


def test_restore_survives_a_restart(served, tiny_random_sam) -> None:
    client, image, path = served
    made = client.post(f"/api/images/{image}/annotations", json={"category": "cat", "rle": _rle(1, 1, 5, 5)}).json()
    client.delete(f"/api/annotations/{made['id']}")
    images = path.parent / "images"
    again = TestClient(create_app(images, tiny_random_sam, path), base_url="http://localhost")
    body = {"image": image, "category": "cat", "rle": made["segmentation"]}
    assert again.put(f"/api/annotations/{made['id']}", json=body).json()["id"] == made["id"]
    assert again.put(f"/api/annotations/{made['id'] + 1}", json=body).status_code == 404
