"""The annotation server's HTTP API (FastAPI TestClient) on the tiny random SAM, and its parts:
the embedding cache, the COCO annotation store, the image catalogue and RLE checking."""
from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
from fastapi.testclient import TestClient  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402

from segany import Predictor  # noqa: E402
from segany.data.images import load_image  # noqa: E402
from segany.errors import AnnotationError, ImageError  # noqa: E402
from segany.masks import decode_rle, encode_rle  # noqa: E402
from segany.serve import create_app  # noqa: E402
from segany.serve.cache import ComputingCache, LRUCache  # noqa: E402
from segany.serve.catalogue import ImageCatalogue  # noqa: E402
from segany.serve.rle import compressed_counts, mask_from_rle  # noqa: E402
from tiny_models import model_args

MAX_BODY = 64 * 1024


def local_client(app) -> TestClient:
    """A client that, like a browser on this machine, names the server "localhost"."""
    return TestClient(app, base_url="http://localhost")


def _shapes(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 200, np.uint8)
    image[height // 4 : height // 2, width // 5 : width // 2] = (200, 30, 30)
    image[height // 2 :, width // 2 :] = (30, 60, 190)
    return np.clip(image.astype(int) + rng.integers(-10, 10, image.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory: pytest.TempPathFactory, synthetic_small: np.ndarray) -> Path:
    root = tmp_path_factory.mktemp("images")
    Image.fromarray(synthetic_small).save(root / "cat.png")
    (root / "more" / "deeper").mkdir(parents=True)
    Image.fromarray(_shapes(64, 80, 1)).save(root / "more" / "shapes.png")
    Image.fromarray(_shapes(48, 40, 2)).save(root / "more" / "deeper" / "scan.tif")
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "notes.txt").write_text("not an image")
    Image.fromarray(synthetic_small).save(root / ".hidden.png")
    return root


@pytest.fixture(scope="module")
def app(images_dir: Path, tiny_random_sam, tmp_path_factory: pytest.TempPathFactory):
    annotations = tmp_path_factory.mktemp("store") / "coco.json"
    return create_app(images_dir, tiny_random_sam, annotations, model_name="tiny_random_sam", max_body_bytes=MAX_BODY)


@pytest.fixture(scope="module")
def client(app) -> TestClient:
    return local_client(app)


@pytest.fixture(scope="module")
def ids(client: TestClient) -> dict[str, str]:
    return {image["file_name"]: image["id"] for image in client.get("/api/images").json()}


@pytest.fixture(scope="module")
def reference(images_dir: Path, tiny_random_sam):
    """A plain Predictor per image: what the server must answer."""
    predictors = {}
    for name in ("cat.png", "more/shapes.png"):
        predictor = Predictor(tiny_random_sam)
        predictor.set_image(load_image(images_dir / name))
        predictors[name] = predictor
    return predictors


class EncoderCounter:
    """Counts image-encoder runs with a forward hook (the model's public nn.Module interface)."""

    def __init__(self, model) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self._handle = model.image_encoder.register_forward_hook(self._hook)

    def _hook(self, *_) -> None:
        with self._lock:
            self.count += 1

    def close(self) -> None:
        self._handle.remove()


def _check_same_as_reference(answer: dict, predictor: Predictor, **prompt) -> None:
    masks, scores, _ = predictor.predict(**prompt)
    order = np.argsort(-scores, kind="stable")
    got = answer["candidates"]
    assert len(got) == len(order)
    for candidate, index in zip(got, order):
        np.testing.assert_allclose(candidate["score"], scores[index], rtol=1e-4, atol=1e-5)
        mask = decode_rle(candidate["rle"])
        assert mask.shape == masks[index].shape
        assert (mask != masks[index]).mean() < 1e-3
        assert candidate["area"] == int(mask.sum())


# -- images ------------------------------------------------------------------------------------


def test_images_are_listed_recursively_by_extension(client: TestClient, ids: dict[str, str]) -> None:
    assert sorted(ids) == ["broken.jpg", "cat.png", "more/deeper/scan.tif", "more/shapes.png"]
    assert len(set(ids.values())) == 4 and all(len(i) == 16 for i in ids.values())
    assert client.get("/api/info").json()["images"] == 4


def test_image_detail_and_bytes(client: TestClient, ids: dict[str, str], images_dir: Path) -> None:
    detail = client.get(f"/api/images/{ids['cat.png']}").json()
    assert (detail["width"], detail["height"], detail["file_name"]) == (53, 37, "cat.png")
    response = client.get(f"/api/images/{ids['cat.png']}/file")
    assert response.headers["content-type"] == "image/png"
    assert response.content == (images_dir / "cat.png").read_bytes()
    tif = client.get(f"/api/images/{ids['more/deeper/scan.tif']}/file")  # browsers cannot show TIFF
    assert tif.headers["content-type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(tif.content))), load_image(images_dir / "more/deeper/scan.tif"))


def test_broken_image_is_a_clear_422(client: TestClient, ids: dict[str, str]) -> None:
    response = client.get(f"/api/images/{ids['broken.jpg']}")
    assert response.status_code == 422 and "cannot be read" in response.json()["detail"]


@pytest.mark.parametrize("method, path", [
    ("get", "/api/images/{}"), ("get", "/api/images/{}/file"), ("get", "/api/images/{}/embedding"),
    ("post", "/api/images/{}/embedding"), ("get", "/api/images/{}/annotations"),
])
def test_unknown_image_is_404(client: TestClient, method: str, path: str) -> None:
    response = getattr(client, method)(path.format("0123456789abcdef"))
    assert response.status_code == 404 and "no image with id" in response.json()["detail"]


def test_unknown_image_is_404_for_bodies(client: TestClient) -> None:
    for path, body in [("predict", {"points": [[1, 1]], "labels": [1]}), ("everything", {}),
                       ("annotations", {"category": "x", "rle": {"size": [1, 1], "counts": [0, 1]}})]:
        response = client.post(f"/api/images/..%2F..%2Fetc%2Fpasswd/{path}", json=body)
        assert response.status_code == 404, path


def test_catalogue_ignores_links_leaving_the_folder(tmp_path: Path, synthetic_small: np.ndarray) -> None:
    outside = tmp_path / "outside.png"
    Image.fromarray(synthetic_small).save(outside)
    root = tmp_path / "root"
    root.mkdir()
    Image.fromarray(synthetic_small).save(root / "inside.png")
    (root / "link.png").symlink_to(outside)
    assert [entry.file_name for entry in ImageCatalogue(root)] == ["inside.png"]
    with pytest.raises(ImageError, match="does not exist"):
        ImageCatalogue(tmp_path / "missing")


def test_catalogue_sizes_follow_exif_rotation(tmp_path: Path, synthetic_small: np.ndarray) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90°: width and height swap when read
    Image.fromarray(synthetic_small).save(tmp_path / "phone.jpg", exif=exif)
    catalogue = ImageCatalogue(tmp_path)
    (entry,) = catalogue
    assert catalogue.size(entry.id) == load_image(tmp_path / "phone.jpg").shape[:2] == (53, 37)


def test_serve_command_binds_to_loopback_by_default() -> None:
    from segany.cli import build_parser

    args = build_parser().parse_args(["serve", "some/folder"])
    assert (args.host, args.port, args.annotations, args.images_dir) == ("127.0.0.1", 8000, None, "some/folder")


def test_serve_command_reports_a_missing_folder(tiny_model_files, tmp_path: Path, capsys) -> None:
    from segany.cli import main

    code = main(["serve", str(tmp_path / "nope"), *model_args(tiny_model_files)])
    assert code == 2 and "does not exist" in capsys.readouterr().err


# -- embeddings and prediction ----------------------------------------------------------------


def test_embedding_status_and_precompute(client: TestClient, ids: dict[str, str], tiny_random_sam) -> None:
    image = ids["more/shapes.png"]
    assert client.get(f"/api/images/{image}/embedding").json()["status"] in ("absent", "ready")
    response = client.post(f"/api/images/{image}/embedding", params={"wait": True})
    assert response.status_code == 200 and response.json() == {"image_id": image, "status": "ready", "error": None}
    assert client.get(f"/api/images/{image}").json()["embedding"] == "ready"
    info = client.get("/api/info").json()
    config = tiny_random_sam.config
    assert info["cached_embeddings"] >= 1
    assert info["cached_embedding_bytes"] >= config.prompt_embed_dim * config.embedding_size**2 * 4


def test_failed_embedding_is_reported(client: TestClient, ids: dict[str, str]) -> None:
    image = ids["broken.jpg"]
    response = client.post(f"/api/images/{image}/embedding", params={"wait": True})
    assert response.status_code == 422 and "cannot be read" in response.json()["detail"]
    status = client.get(f"/api/images/{image}/embedding").json()
    assert status["status"] == "failed" and "cannot be read" in status["error"]


def test_predict_point_matches_the_predictor(client: TestClient, ids: dict[str, str], reference) -> None:
    response = client.post(f"/api/images/{ids['cat.png']}/predict",
                           json={"points": [[30, 10], [5, 30]], "labels": [1, 0], "formats": ["rle", "png"]})
    assert response.status_code == 200
    answer = response.json()
    assert (answer["width"], answer["height"]) == (53, 37)
    scores = [c["score"] for c in answer["candidates"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert answer["decoder_ms"] > 0 and answer["total_ms"] >= answer["decoder_ms"]
    _check_same_as_reference(answer, reference["cat.png"], point_coords=np.array([[30, 10], [5, 30]]),
                             point_labels=np.array([1, 0]))
    for candidate in answer["candidates"]:
        png = np.asarray(Image.open(io.BytesIO(base64.b64decode(candidate["png"])))) > 0
        assert np.array_equal(png, decode_rle(candidate["rle"]))


def test_predict_box_single_mask(client: TestClient, ids: dict[str, str], reference) -> None:
    body = {"box": [10, 12, 60, 50], "multimask": False}
    answer = client.post(f"/api/images/{ids['more/shapes.png']}/predict", json=body).json()
    assert len(answer["candidates"]) == 1 and answer["candidates"][0]["png"] is None
    _check_same_as_reference(answer, reference["more/shapes.png"], box=np.array([10, 12, 60, 50]),
                             multimask_output=False)


def test_refinement_with_a_logits_handle(client: TestClient, ids: dict[str, str], reference) -> None:
    image = ids["cat.png"]
    first = client.post(f"/api/images/{image}/predict", json={"points": [[30, 10]], "labels": [1]}).json()
    handle = first["candidates"][1]["logits"]
    body = {"points": [[30, 10], [40, 30]], "labels": [1, 1], "logits": handle, "multimask": False}
    answer = client.post(f"/api/images/{image}/predict", json=body).json()
    predictor = reference["cat.png"]
    masks, scores, low_res = predictor.predict(np.array([[30, 10]]), np.array([1]))
    second_best = np.argsort(-scores, kind="stable")[1]
    _check_same_as_reference(answer, predictor, point_coords=np.array([[30, 10], [40, 30]]),
                             point_labels=np.array([1, 1]), mask_input=low_res[second_best][None],
                             multimask_output=False)
    other = client.post(f"/api/images/{ids['more/shapes.png']}/predict", json={**body, "points": [[1, 1], [2, 2]]})
    assert other.status_code == 422 and "another image" in other.json()["detail"]


BAD_PROMPTS = [
    ({"points": [[54, 10]], "labels": [1]}, "outside the 53x37 image"),
    ({"points": [[-1, 10]], "labels": [1]}, "outside"),
    ({"box": [30, 30, 10, 10]}, "reversed corners"),
    ({"box": [0, 0, 10, 99]}, "outside"),
    ({"points": [[1, 2]], "labels": [1, 0]}, "same length"),
    ({"points": [[1, 2]], "labels": [2]}, "labels.0"),
    ({"points": [[1, 2, 3]], "labels": [1]}, "points.0"),
    ({"points": [["1", 2]], "labels": [1]}, "points.0.0"),
    ({"box": [1, 2, 3]}, "box"),
    ({}, "at least one point"),
    ({"points": [[1, 2]], "labels": [1], "logits": "deadbeef"}, "unknown or has expired"),
    ({"points": [[1, 2]], "labels": [1], "formats": ["jpeg"]}, "formats.0"),
    ({"points": [[1, 2]], "labels": [1], "mask": 1}, "Extra inputs"),
    ({"points": [[1, 1]] * 65, "labels": [1] * 65}, "at most 64"),
]


@pytest.mark.parametrize("body, message", BAD_PROMPTS)
def test_bad_prompts_are_422_with_a_message(client: TestClient, ids: dict[str, str], body: dict, message: str) -> None:
    response = client.post(f"/api/images/{ids['cat.png']}/predict", json=body)
    assert response.status_code == 422
    assert message in response.json()["detail"]


@pytest.mark.parametrize("content", [b'{"points": [[1, 2]], "labels": [1]', b"points=1", b'{"box": [NaN, 0, 1, 1]}'])
def test_invalid_json_is_a_clear_4xx(client: TestClient, ids: dict[str, str], content: bytes) -> None:
    response = client.post(f"/api/images/{ids['cat.png']}/predict", content=content,
                           headers={"content-type": "application/json"})
    assert response.status_code in (400, 422)
    detail = response.json()["detail"]
    assert "not valid JSON" in detail or "finite number" in detail


def test_body_over_the_limit_is_413(client: TestClient, ids: dict[str, str]) -> None:
    big = json.dumps({"points": [[1, 2]], "labels": [1], "pad": "x" * MAX_BODY}).encode()
    response = client.post(f"/api/images/{ids['cat.png']}/predict", content=big,
                           headers={"content-type": "application/json"})
    assert response.status_code == 413 and str(MAX_BODY) in response.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    response = client.post(f"/api/images/{ids['cat.png']}/annotations", content=chunks(),
                           headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_concurrent_requests_compute_each_embedding_once(images_dir: Path, tiny_random_sam, tmp_path: Path,
                                                         reference) -> None:
    app = create_app(images_dir, tiny_random_sam, tmp_path / "coco.json")
    ids = {image["file_name"]: image["id"] for image in local_client(app).get("/api/images").json()}
    jobs = [("cat.png", [30, 10]), ("more/shapes.png", [40, 40])] * 6
    counter = EncoderCounter(tiny_random_sam)

    def ask(job):
        name, point = job
        client = local_client(app)  # one client per thread, as separate browsers would be
        return name, point, client.post(f"/api/images/{ids[name]}/predict", json={"points": [point], "labels": [1]})

    try:
        with ThreadPoolExecutor(len(jobs)) as pool:
            answers = list(pool.map(ask, jobs))
    finally:
        counter.close()
    assert counter.count == 2  # twelve concurrent requests, two images, two encoder runs
    assert local_client(app).get("/api/info").json()["embeddings_computed"] == 2
    for name, point, response in answers:
        assert response.status_code == 200
        _check_same_as_reference(response.json(), reference[name], point_coords=np.array([point]),
                                 point_labels=np.array([1]))


# -- everything -------------------------------------------------------------------------------


def test_everything_proposes_masks(client: TestClient, ids: dict[str, str]) -> None:
    pytest.importorskip("segany.amg.generator", reason="segany.amg (the automatic mask generator) is not available")
    body = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    response = client.post(f"/api/images/{ids['more/shapes.png']}/everything", json=body)
    assert response.status_code == 200
    proposals = response.json()["proposals"]
    assert proposals, "the thresholds are 0: every distinct mask must be proposed"
    ious = [p["predicted_iou"] for p in proposals]
    assert ious == sorted(ious, reverse=True)
    for proposal in proposals:
        mask = decode_rle(proposal["rle"])
        assert mask.shape == (64, 80) and int(mask.sum()) == proposal["area"]
    fast = client.post(f"/api/images/{ids['more/shapes.png']}/everything", json={**body, "fast": True})
    assert fast.status_code == 200 and fast.json()["proposals"]
    bad = client.post(f"/api/images/{ids['more/shapes.png']}/everything", json={"points_per_side": 0})
    assert bad.status_code == 422 and "points_per_side" in bad.json()["detail"]


def test_classic_engine_server_predicts_and_proposes(images_dir: Path, tmp_path: Path) -> None:
    import segany

    client = local_client(create_app(images_dir, segany.load_model("classic"), tmp_path / "coco.json"))
    image_id = {i["file_name"]: i["id"] for i in client.get("/api/images").json()}["more/shapes.png"]
    red = np.zeros((64, 80), dtype=bool)
    red[16:32, 16:40] = True  # the red block of _shapes(64, 80, 1)
    answer = client.post(f"/api/images/{image_id}/predict", json={"points": [[28, 24]], "labels": [1]})
    assert answer.status_code == 200
    best = answer.json()["candidates"][0]
    assert (decode_rle(best["rle"]) & red).sum() / (decode_rle(best["rle"]) | red).sum() >= 0.8
    refined = client.post(f"/api/images/{image_id}/predict",
                          json={"points": [[28, 24]], "labels": [1], "logits": best["logits"], "multimask": False})
    assert refined.status_code == 200 and len(refined.json()["candidates"]) == 1
    # the page's request: SAM's grid and thresholds do not apply to the classic engine, box NMS does
    page = {"points_per_side": 16, "pred_iou_thresh": 0.88, "stability_score_thresh": 0.95, "fast": True}
    proposals = client.post(f"/api/images/{image_id}/everything", json=page).json()["proposals"]
    assert proposals
    ious = [p["predicted_iou"] for p in proposals]
    assert ious == sorted(ious, reverse=True)
    for proposal in proposals:
        mask = decode_rle(proposal["rle"])
        assert mask.shape == (64, 80) and int(mask.sum()) == proposal["area"]
    assert max((decode_rle(p["rle"]) & red).sum() / (decode_rle(p["rle"]) | red).sum() for p in proposals) >= 0.8
    strict = client.post(f"/api/images/{image_id}/everything", json={**page, "box_nms_thresh": 0.0}).json()["proposals"]
    assert 0 < len(strict) <= len(proposals)


# -- annotations ------------------------------------------------------------------------------


def _mask_rle(height: int, width: int, box: tuple[int, int, int, int]) -> dict:
    mask = np.zeros((height, width), bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return encode_rle(mask)


def test_annotation_lifecycle_is_saved_after_every_change(client: TestClient, ids: dict[str, str], app) -> None:
    path = app.state.store.path
    image = ids["more/shapes.png"]
    response = client.post(f"/api/images/{image}/annotations",
                           json={"category": " car ", "rle": _mask_rle(64, 80, (10, 5, 30, 25)), "score": 0.9})
    assert response.status_code == 201
    created = response.json()
    assert created["category"] == "car" and created["area"] == 400 and created["bbox"] == [10, 5, 19, 19]
    on_disk = json.loads(path.read_text())
    assert on_disk["annotations"][-1]["id"] == created["id"]
    assert on_disk["images"][0]["file_name"] == "more/shapes.png"

    relabelled = client.patch(f"/api/annotations/{created['id']}", json={"category": "truck"}).json()
    assert relabelled["category"] == "truck"
    reshaped = client.patch(f"/api/annotations/{created['id']}", json={"rle": _mask_rle(64, 80, (0, 0, 5, 5))}).json()
    assert reshaped["area"] == 25 and reshaped["category"] == "truck"
    coco = COCO(str(path))
    assert coco.loadCats(coco.getCatIds(catNms=["truck"]))[0]["name"] == "truck"
    stored = coco.loadAnns([created["id"]])[0]
    assert int(coco.annToMask(stored).sum()) == 25

    listed = client.get(f"/api/images/{image}/annotations").json()
    assert [a["id"] for a in listed] == [created["id"]]
    assert next(i for i in client.get("/api/images").json() if i["id"] == image)["annotations"] == 1
    assert {c["name"] for c in client.get("/api/categories").json()} >= {"car", "truck"}

    assert client.delete(f"/api/annotations/{created['id']}").status_code == 204
    assert created["id"] not in [a["id"] for a in json.loads(path.read_text())["annotations"]]
    assert client.delete(f"/api/annotations/{created['id']}").status_code == 404
    assert client.patch(f"/api/annotations/{created['id']}", json={"category": "x"}).status_code == 404
    again = client.post(f"/api/images/{image}/annotations", json={"category": "car", "rle": _mask_rle(64, 80, (1, 1, 3, 3))})
    assert again.json()["id"] > created["id"]  # a deleted id is never given out again


BAD_ANNOTATIONS = [
    ({"category": "x", "rle": _mask_rle(37, 53, (1, 1, 5, 5))}, "[64, 80]"),
    ({"category": "x", "rle": {"size": [64, 80], "counts": [1, 2]}}, "cover 3 pixels"),
    ({"category": "x", "rle": {"size": [64, 80], "counts": ""}}, "cover 0 pixels"),
    ({"category": "x", "rle": {"size": [64, 80], "counts": "a b"}}, "invalid character"),
    ({"category": "x", "rle": {"size": [64, 80], "counts": [5120]}}, "empty"),
    ({"category": "x", "rle": {"size": [64, 80], "counts": [-1, 5121]}}, "negative"),
    ({"category": "   ", "rle": _mask_rle(64, 80, (1, 1, 5, 5))}, "non-empty"),
    ({"category": "", "rle": _mask_rle(64, 80, (1, 1, 5, 5))}, "category"),
    ({"rle": _mask_rle(64, 80, (1, 1, 5, 5))}, "category: Field required"),
]


@pytest.mark.parametrize("body, message", BAD_ANNOTATIONS)
def test_bad_annotations_are_422(client: TestClient, ids: dict[str, str], body: dict, message: str) -> None:
    response = client.post(f"/api/images/{ids['more/shapes.png']}/annotations", json=body)
    assert response.status_code == 422 and message in response.json()["detail"]


def test_bad_annotation_update_is_422(client: TestClient, ids: dict[str, str]) -> None:
    created = client.post(f"/api/images/{ids['cat.png']}/annotations",
                          json={"category": "cat", "rle": _mask_rle(37, 53, (1, 1, 9, 9))}).json()
    assert client.patch(f"/api/annotations/{created['id']}", json={}).status_code == 422
    response = client.patch(f"/api/annotations/{created['id']}", json={"rle": _mask_rle(64, 80, (1, 1, 5, 5))})
    assert response.status_code == 422 and "[37, 53]" in response.json()["detail"]
    assert client.get(f"/api/images/{ids['cat.png']}/annotations").json()[-1]["area"] == 64  # unchanged


def test_export_is_the_coco_file(client: TestClient, ids: dict[str, str], app) -> None:
    client.post(f"/api/images/{ids['cat.png']}/annotations", json={"category": "cat", "rle": _mask_rle(37, 53, (2, 2, 6, 6))})
    response = client.get("/api/export/coco")
    assert response.status_code == 200 and "attachment" in response.headers["content-disposition"]
    exported, on_disk = response.json(), json.loads(app.state.store.path.read_text())
    assert {k: v for k, v in exported.items() if k != "images"} == {k: v for k, v in on_disk.items() if k != "images"}
    # the file's images, then the folder's other readable ones (issue 18: "not started" is listed too)
    assert exported["images"][:len(on_disk["images"])] == [{"segany_state": "not_started", **i} | i
                                                          for i in on_disk["images"]]
    assert {i["file_name"] for i in exported["images"]} == {"cat.png", "more/shapes.png", "more/deeper/scan.tif"}


def test_annotations_are_reloaded_on_start(images_dir: Path, tiny_random_sam, tmp_path: Path) -> None:
    path = tmp_path / "coco.json"
    first = local_client(create_app(images_dir, tiny_random_sam, path))
    image = next(i["id"] for i in first.get("/api/images").json() if i["file_name"] == "cat.png")
    made = first.post(f"/api/images/{image}/annotations", json={"category": "cat", "rle": _mask_rle(37, 53, (0, 0, 4, 4))})
    second = local_client(create_app(images_dir, tiny_random_sam, path))
    assert [a["id"] for a in second.get(f"/api/images/{image}/annotations").json()] == [made.json()["id"]]
    path.write_text('{"images": [')  # a damaged file is refused, never overwritten
    with pytest.raises(AnnotationError, match="cannot be read"):
        create_app(images_dir, tiny_random_sam, path)
    assert path.read_text() == '{"images": ['


STORE_LOOP = """
import sys
from segany.masks import encode_rle
from segany.serve.store import AnnotationStore
import numpy as np
store = AnnotationStore(sys.argv[1])
mask = np.zeros((40, 50), bool)
for i in range(100000):
    mask[i % 40, i % 50] = True
    ann = store.create(f"img{i % 7}.png", 40, 50, f"c{i % 3}", encode_rle(mask))
    print(ann["id"], flush=True)
"""


def test_store_survives_a_kill_at_any_moment(tmp_path: Path) -> None:
    path = tmp_path / "coco.json"
    process = subprocess.Popen([sys.executable, "-c", STORE_LOOP, str(path)], stdout=subprocess.PIPE, text=True)
    acknowledged = [int(process.stdout.readline()) for _ in range(60)]
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    data = json.loads(path.read_text())  # never a half-written file
    stored = {a["id"] for a in data["annotations"]}
    assert set(acknowledged) <= stored
    assert not [p for p in tmp_path.iterdir() if p.name != "coco.json" and not p.name.endswith(".tmp")]


# -- the page and the schema ----------------------------------------------------------------


def test_page_static_files_and_openapi(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text and "/static/js/app.js" in page.text
    for name in ("js/app.js", "js/api.js", "js/masks.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/images", "/api/images/{image_id}/file", "/api/images/{image_id}/embedding",
                 "/api/images/{image_id}/predict", "/api/images/{image_id}/everything",
                 "/api/images/{image_id}/annotations", "/api/annotations/{annotation_id}", "/api/export/coco"):
        assert path in paths


# -- parts ------------------------------------------------------------------------------------


def test_lru_cache_bounds_by_count_and_bytes() -> None:
    cache: LRUCache[bytes] = LRUCache(max_items=3, max_bytes=10, size_of=len)
    for key in "abc":
        cache.put(key, b"xx")
    assert cache.get("a") == b"xx"  # a is now the most recent
    cache.put("d", b"xx")
    assert "b" not in cache and len(cache) == 3
    cache.put("e", b"x" * 8)  # 14 bytes > 10: the least recently used go until it fits
    assert "c" not in cache and "a" not in cache and "d" in cache and cache.num_bytes == 10
    cache.put("huge", b"x" * 50)  # alone over the limit: still kept, alone
    assert len(cache) == 1 and cache.get("huge") is not None


def test_computing_cache_single_flight_and_failures() -> None:
    release = threading.Event()
    calls = []

    def slow() -> bytes:
        calls.append(1)
        release.wait(5)
        return b"value"

    with ThreadPoolExecutor(1) as worker, ThreadPoolExecutor(8) as callers:
        cache: ComputingCache[bytes] = ComputingCache(4, 100, len, worker)
        futures = [callers.submit(cache.get_or_compute, "k", slow) for _ in range(8)]
        while cache.status("k")[0] != "computing":
            pass
        release.set()
        assert [f.result() for f in futures] == [b"value"] * 8
        assert len(calls) == 1 and cache.computed == 1 and cache.status("k") == ("ready", None)

        def broken() -> bytes:
            raise ValueError("no luck")

        with pytest.raises(ValueError):
            cache.get_or_compute("bad", broken)
        assert cache.status("bad") == ("failed", "no luck")
        assert cache.get_or_compute("bad", lambda: b"ok") == b"ok"  # failures are retried


def test_rle_counts_parse_like_pycocotools() -> None:
    rng = np.random.default_rng(3)
    for shape in [(1, 1), (7, 9), (64, 80), (300, 200)]:
        mask = rng.random(shape) < rng.random()
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        runs = compressed_counts(rle["counts"].decode("ascii"))
        assert sum(runs) == mask.size
        if mask.any():
            assert np.array_equal(mask_from_rle(encode_rle(mask), *shape), mask)
    with pytest.raises(AnnotationError, match="ends in the middle"):
        compressed_counts("o")  # 'o' = 63: a continuation bit with nothing after it
