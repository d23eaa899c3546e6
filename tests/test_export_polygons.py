"""Masks as COCO polygons and YOLO-seg labels: round trips through pycocotools, normalisation, CLI."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from segany.cli import main
from segany.data.formats.coco import coco_instances
from segany.data.formats.polygons import load_instances, mask_to_polygons, polygon_annotations
from segany.data.formats.sa1b import sa1b_document
from segany.data.formats.yolo import yolo_labels
from segany.errors import AnnotationError
from segany.evaluation import iou
from segany.masks import encode_rle

H, W = 100, 120


def _shapes() -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[:H, :W]
    d2 = (xx - 50) ** 2 + (yy - 50) ** 2
    ring = (d2 <= 40 ** 2) & (d2 > 15 ** 2)  # a disk with a hole
    parts = np.zeros((H, W), dtype=bool)  # three parts, one of them with a hole
    parts[5:25, 95:115] = True
    parts[70:95, 95:118] = True
    parts[78:86, 100:110] = False
    parts[40:60, 100:104] = True
    pixel = np.zeros((H, W), dtype=bool)
    pixel[3, 4] = True
    return {"ring": ring, "parts": parts, "pixel": pixel}


def _rasterise(polygons: list[list[float]]) -> np.ndarray:
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, H, W))).astype(bool)


@pytest.mark.parametrize("name", ["ring", "parts", "pixel"])
def test_rle_polygons_rle_round_trip(name):
    mask = _shapes()[name]
    rle = encode_rle(mask)
    from_rle = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
    assert iou(_rasterise(mask_to_polygons(from_rle)), mask) >= 0.98  # default tolerance 1 px
    exact = mask_to_polygons(from_rle, tolerance=0)
    assert np.array_equal(_rasterise(exact), mask)  # holes stay open, every part is there
    assert len(exact) == {"ring": 1, "parts": 3, "pixel": 1}[name] and all(len(p) >= 6 for p in exact)


def test_tolerance_simplifies_and_is_checked():
    ring = _shapes()["ring"]
    assert sum(map(len, mask_to_polygons(ring, 2.0))) < sum(map(len, mask_to_polygons(ring, 0.5)))
    with pytest.raises(AnnotationError, match="tolerance"):
        mask_to_polygons(ring, -1)
    assert mask_to_polygons(np.zeros((H, W), dtype=bool)) == []


def _coco() -> dict:
    shapes = _shapes()
    records = [{"segmentation": encode_rle(m), "area": int(m.sum()), "bbox": [0, 0, 1, 1], "predicted_iou": 0.9,
                "point_coords": [[0.0, 0.0]], "stability_score": 0.95, "crop_box": [0, 0, W, H]} for m in shapes.values()]
    return coco_instances([sa1b_document(records, "scene.png", H, W), sa1b_document([], "empty.jpg", H, W)])


def test_coco_polygons_load_in_pycocotools(tmp_path):
    coco, dropped = polygon_annotations(_coco())
    assert dropped == 0 and all(isinstance(a["segmentation"], list) for a in coco["annotations"])
    path = tmp_path / "polygons.json"
    path.write_text(json.dumps(coco))
    loaded = COCO(str(path))
    for ann, mask in zip(loaded.loadAnns(loaded.getAnnIds()), _shapes().values()):
        assert iou(loaded.annToMask(ann).astype(bool), mask) >= 0.98


def test_yolo_labels_are_normalised_with_classes():
    rect = np.zeros((H, W), dtype=bool)
    rect[20:60, 30:90] = True
    coco = {
        "images": [{"id": 5, "file_name": "sub/a.jpg", "height": H, "width": W},
                   {"id": 9, "file_name": "/abs/b.png", "height": H, "width": W}],
        "annotations": [{"id": 1, "image_id": 5, "category_id": 7, "segmentation": encode_rle(rect)},
                        {"id": 2, "image_id": 5, "category_id": 3, "segmentation": encode_rle(_shapes()["parts"])}],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
    }
    files, names = yolo_labels(coco)
    assert names == ["cat", "dog"] and set(files) == {"sub/a.txt", "b.txt"} and files["b.txt"] == ""
    lines = [line.split() for line in files["sub/a.txt"].splitlines()]
    assert [line[0] for line in lines] == ["1", "0", "0", "0"]  # dog's rectangle, cat's three parts
    xy = np.array(lines[0][1:], dtype=float).reshape(-1, 2)
    assert ((xy >= 0) & (xy <= 1)).all()
    assert xy[:, 0].min() == pytest.approx(30 / W, abs=0.5 / W) and xy[:, 0].max() == pytest.approx(90 / W, abs=0.5 / W)
    assert xy[:, 1].min() == pytest.approx(20 / H, abs=0.5 / H) and xy[:, 1].max() == pytest.approx(60 / H, abs=0.5 / H)
    back = np.zeros((H, W), np.uint8)
    for line in lines[1:]:  # the parts, de-normalised to OpenCV's pixel centres and filled (even-odd)
        pts = ((np.array(line[1:], dtype=float).reshape(-1, 2) * (W, H) - 0.5) * 8).round().astype(np.int32)
        back |= cv2.fillPoly(np.zeros((H, W), np.uint8), [pts], 1, shift=3)
    assert iou(back.astype(bool), _shapes()["parts"]) >= 0.98 and not back[82, 105]  # the hole stays open
    coco["annotations"][0]["category_id"] = 99
    with pytest.raises(AnnotationError, match="category 99"):
        yolo_labels(coco)


def _everything_folder(tmp_path):
    """What `segany everything` writes: per-image SA-1B JSONs (nested) and, with --format coco, annotations.json."""
    coco = _coco()
    folder = tmp_path / "run"
    (folder / "nested").mkdir(parents=True)
    shapes = list(_shapes().values())
    records = [{"segmentation": encode_rle(m), "area": int(m.sum()), "bbox": [0, 0, 1, 1], "predicted_iou": 0.9,
                "point_coords": [[0.0, 0.0]], "stability_score": 0.95, "crop_box": [0, 0, W, H]} for m in shapes]
    (folder / "nested" / "scene.png.json").write_text(json.dumps(sa1b_document(records, "nested/scene.png", H, W)))
    (folder / "empty.jpg.json").write_text(json.dumps(sa1b_document([], "empty.jpg", H, W)))
    (folder / "annotations.json").write_text(json.dumps(coco))
    return folder


def test_cli_coco_polygons_and_yolo(tmp_path, capsys):
    folder = _everything_folder(tmp_path)
    for source in (folder, folder / "annotations.json"):
        out = tmp_path / f"{source.name}.polygons.json"
        assert main(["export", "coco-polygons", str(source), "-o", str(out), "--tolerance", "0"]) == 0
        coco = json.loads(out.read_text())
        assert len(coco["images"]) == 2 and len(coco["annotations"]) == 3
        assert all(isinstance(a["segmentation"], list) for a in coco["annotations"])
        assert np.array_equal(_rasterise(coco["annotations"][0]["segmentation"]), _shapes()["ring"])
    assert main(["export", "yolo", str(folder), "-o", str(tmp_path / "yolo")]) == 0
    assert (tmp_path / "yolo" / "classes.txt").read_text() == "object\n"
    assert len((tmp_path / "yolo" / "labels" / "nested" / "scene.txt").read_text().splitlines()) == 5  # 1 + 3 + 1 parts
    assert (tmp_path / "yolo" / "labels" / "empty.txt").read_text() == ""
    assert "2 YOLO label files" in capsys.readouterr().err  # one per image, the empty one included
    assert main(["export", "yolo", str(tmp_path / "missing.json"), "-o", str(tmp_path / "y2")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["export", "yolo", str(folder), "-o", str(tmp_path / "y3"), "--tolerance", "-1"]) == 2
    assert "tolerance" in capsys.readouterr().err


def test_load_instances_rejects_other_json(tmp_path):
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(AnnotationError, match="neither"):
        load_instances(tmp_path / "other.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(AnnotationError, match="cannot read"):
        load_instances(tmp_path / "broken.json")
    (tmp_path / "broken.json").unlink()
    with pytest.raises(AnnotationError, match="no SA-1B"):
        load_instances(tmp_path)
