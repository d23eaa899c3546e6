"""The annotator's progress and project data over HTTP: image states kept in the COCO file and the
export, the project category list (file, hotkeys, rename, merge), polygon outlines, the generator
options the engine honours, and `segany export` on the annotator's file."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
from fastapi.testclient import TestClient  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402

from segany.cli import main  # noqa: E402
from segany.errors import AnnotationError  # noqa: E402
from segany.masks import encode_rle  # noqa: E402
from segany.serve import create_app  # noqa: E402
from segany.serve.categories import read_categories  # noqa: E402

H, W = 40, 50


def _rle(box: tuple[int, int, int, int]) -> dict:
    mask = np.zeros((H, W), bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return encode_rle(mask)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for name in ("a.png", "b.png", "sub/c.png"):
        Image.fromarray(np.full((H, W, 3), 128, np.uint8)).save(images / name)
    (images / "broken.png").write_bytes(b"not a png")
    return images


def _client(folder: Path, model, annotations: Path, **options) -> tuple[TestClient, dict[str, str]]:
    client = TestClient(create_app(folder, model, annotations, **options), base_url="http://localhost")
    return client, {i["file_name"]: i["id"] for i in client.get("/api/images").json()}


def test_image_states_are_kept_in_the_file_and_the_export(folder: Path, tiny_random_sam, tmp_path: Path) -> None:
    path = tmp_path / "coco.json"
    client, ids = _client(folder, tiny_random_sam, path)
    assert {i["state"] for i in client.get("/api/images").json()} == {"not_started"}
    marked = client.put(f"/api/images/{ids['b.png']}/state", json={"state": "empty"})
    assert marked.status_code == 200 and marked.json()["state"] == "empty"
    client.post(f"/api/images/{ids['a.png']}/annotations", json={"category": "box", "rle": _rle((2, 2, 9, 9))})
    states = {i["file_name"]: i["state"] for i in client.get("/api/images").json()}
    assert states == {"a.png": "in_progress", "b.png": "empty", "broken.png": "not_started", "sub/c.png": "not_started"}

    on_disk = json.loads(path.read_text())  # the empty image is in the file without annotations
    assert {i["file_name"]: i["segany_state"] for i in on_disk["images"]} == {"a.png": "in_progress", "b.png": "empty"}
    exported = client.get("/api/export/coco").json()  # every readable image of the folder, with its state
    assert {i["file_name"]: i["segany_state"] for i in exported["images"]} == {
        "a.png": "in_progress", "b.png": "empty", "sub/c.png": "not_started"}
    assert len({i["id"] for i in exported["images"]}) == 3
    (tmp_path / "export.json").write_text(json.dumps(exported))
    coco = COCO(str(tmp_path / "export.json"))
    assert len(coco.getImgIds()) == 3 and len(coco.getAnnIds()) == 1

    client.put(f"/api/images/{ids['a.png']}/state", json={"state": "done"})
    client.post(f"/api/images/{ids['a.png']}/annotations", json={"category": "box", "rle": _rle((20, 2, 29, 9))})
    again, _ = _client(folder, tiny_random_sam, path)  # read back on start; done stays done
    assert {i["file_name"]: i["state"] for i in again.get("/api/images").json()}["a.png"] == "done"

    refused = client.put(f"/api/images/{ids['a.png']}/state", json={"state": "empty"})
    assert refused.status_code == 422 and "2 annotations" in refused.json()["detail"]
    bad = client.put(f"/api/images/{ids['a.png']}/state", json={"state": "finished"})
    assert bad.status_code == 422 and "state" in bad.json()["detail"]
    assert client.put("/api/images/nope/state", json={"state": "done"}).status_code == 404
    on_disk["images"][0]["segany_state"] = "half"
    path.write_text(json.dumps(on_disk))
    with pytest.raises(AnnotationError, match="segany_state"):
        create_app(folder, tiny_random_sam, path)


@pytest.mark.parametrize("kind", ["txt", "json", "coco"])
def test_category_file_formats(tmp_path: Path, kind: str) -> None:
    names = ["cat", "dog", "llama"]
    if kind == "txt":
        (path := tmp_path / "classes.txt").write_text("# animals\ncat\n\ndog  # woof\nllama\n")
    elif kind == "json":
        (path := tmp_path / "classes.json").write_text(json.dumps(["cat", {"name": "dog", "color": "#ff0000"}, "llama"]))
    else:
        cats = [{"id": 3, "name": n, "supercategory": ""} for n in names]
        (path := tmp_path / "coco.json").write_text(json.dumps({"images": [], "annotations": [], "categories": cats}))
    assert [c["name"] for c in read_categories(path)] == names
    (bad := tmp_path / "bad.json").write_text(json.dumps({"names": names}))
    with pytest.raises(AnnotationError, match="list of names"):
        read_categories(bad)
    with pytest.raises(AnnotationError, match="cannot read"):
        read_categories(tmp_path / "missing.txt")


def test_project_categories_rename_and_merge(folder: Path, tiny_random_sam, tmp_path: Path) -> None:
    path = tmp_path / "coco.json"
    first, ids = _client(folder, tiny_random_sam, path)
    made = first.post(f"/api/images/{ids['a.png']}/annotations", json={"category": "puppy", "rle": _rle((2, 2, 9, 9))}).json()
    project = tmp_path / "classes.json"
    project.write_text(json.dumps([{"name": "cat", "color": [10, 20, 30]}, "dog", "puppy"]))
    client, ids = _client(folder, tiny_random_sam, path, categories=project)
    listed = client.get("/api/categories").json()
    assert [(c["name"], c["hotkey"], c["color"]) for c in listed] == [
        ("cat", 1, [10, 20, 30]), ("dog", 2, None), ("puppy", 3, None)]  # the project's order, file's ids kept
    puppy = next(c for c in listed if c["name"] == "puppy")
    assert puppy["id"] == made["category_id"] and puppy["annotations"] == 1
    assert {c["name"] for c in json.loads(path.read_text())["categories"]} == {"cat", "dog", "puppy"}

    renamed = client.patch(f"/api/categories/{puppy['id']}", json={"name": "young dog", "color": "#00ff00"})
    assert renamed.status_code == 200 and renamed.json()["id"] == puppy["id"] and renamed.json()["color"] == [0, 255, 0]
    assert client.get(f"/api/images/{ids['a.png']}/annotations").json()[0]["category"] == "young dog"
    taken = client.patch(f"/api/categories/{puppy['id']}", json={"name": "dog"})
    assert taken.status_code == 422 and "merge" in taken.json()["detail"]

    dog = next(c for c in listed if c["name"] == "dog")
    merged = client.post(f"/api/categories/{puppy['id']}/merge", json={"into": dog["id"]})
    assert merged.status_code == 200 and merged.json()["annotations"] == 1
    [ann] = client.get(f"/api/images/{ids['a.png']}/annotations").json()
    assert ann["category_id"] == dog["id"] and ann["category"] == "dog"
    assert puppy["id"] not in [c["id"] for c in json.loads(path.read_text())["categories"]]
    assert client.post(f"/api/categories/{puppy['id']}/merge", json={"into": dog["id"]}).status_code == 404
    assert client.post(f"/api/categories/{dog['id']}/merge", json={"into": dog["id"]}).status_code == 422

    added = client.post("/api/categories", json={"name": "bird", "color": [1, 2, 3]})
    assert added.status_code == 201 and added.json()["hotkey"] == 3  # cat, dog, bird
    assert client.post("/api/categories", json={"name": "bird"}).status_code == 422
    assert client.post("/api/categories", json={"name": "owl", "color": [1, 2, 300]}).status_code == 422


def test_annotations_with_polygons_and_generator_options(folder: Path, tiny_random_sam, tmp_path: Path) -> None:
    import segany

    client, ids = _client(folder, tiny_random_sam, tmp_path / "coco.json")
    client.post(f"/api/images/{ids['a.png']}/annotations", json={"category": "box", "rle": _rle((10, 5, 30, 25))})
    [plain] = client.get(f"/api/images/{ids['a.png']}/annotations").json()
    assert plain["polygons"] is None
    [outlined] = client.get(f"/api/images/{ids['a.png']}/annotations?polygons=1").json()
    [polygon] = outlined["polygons"]
    xy = np.array(polygon).reshape(-1, 2)
    assert len(xy) == 4 and xy[:, 0].min() == pytest.approx(10, abs=0.5) and xy[:, 1].max() == pytest.approx(25, abs=0.5)
    assert "pred_iou_thresh" in client.get("/api/info").json()["generator_options"]
    classic, _ = _client(folder, segany.load_model("classic"), tmp_path / "classic.json")
    options = classic.get("/api/info").json()["generator_options"]
    assert "box_nms_thresh" in options and "pred_iou_thresh" not in options and "points_per_side" not in options


def test_segany_export_reads_the_annotators_file(folder: Path, tiny_random_sam, tmp_path: Path) -> None:
    client, ids = _client(folder, tiny_random_sam, tmp_path / "coco.json")
    client.post(f"/api/images/{ids['a.png']}/annotations", json={"category": "box", "rle": _rle((10, 5, 30, 25))})
    client.put(f"/api/images/{ids['b.png']}/state", json={"state": "empty"})
    (export := tmp_path / "export.json").write_text(client.get("/api/export/coco").text)
    for source in (tmp_path / "coco.json", export):
        out = tmp_path / f"{source.stem}.polygons.json"
        assert main(["export", "coco", str(source), "-o", str(out)]) == 0
        coco = json.loads(out.read_text())
        assert isinstance(coco["annotations"][0]["segmentation"], list)
        assert {i["file_name"]: i["segany_state"] for i in coco["images"]}["b.png"] == "empty"
    assert main(["export", "yolo", str(export), "-o", str(tmp_path / "yolo")]) == 0
    assert (tmp_path / "yolo" / "labels" / "b.txt").read_text() == ""  # an empty image: YOLO's background image
    assert (tmp_path / "yolo" / "labels" / "a.txt").read_text().startswith("0 ")
    assert (tmp_path / "yolo" / "classes.txt").read_text() == "box\n"


def test_serve_command_reads_the_category_file(folder: Path, tiny_model_files, tmp_path: Path, capsys) -> None:
    from tiny_models import model_args

    code = main(["serve", str(folder), "--categories", str(tmp_path / "missing.txt"), *model_args(tiny_model_files)])
    assert code == 2 and "cannot read the category file" in capsys.readouterr().err
