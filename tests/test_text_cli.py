"""``segany segment --text``, ``segany label`` and ``segany eval --protocol detect`` on tiny random models."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("transformers")

from conftest import SHARED
from segany.cli import main
from segany.masks import decode_rle
from tiny_models import model_args, save_tiny_model
from tiny_text_models import tiny_text_model_folders

COCO = SHARED / "data" / "coco_val2017_tiny"
PHOTO = COCO / "images" / "000000005001.jpg"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    if not PHOTO.exists():
        pytest.skip(f"the COCO photo {PHOTO} is not here (set SEGANY_SHARED to the shared folder)")
    return {**tiny_text_model_folders(), "sam": model_args(save_tiny_model(tmp_path_factory.mktemp("text_cli")))}


@pytest.fixture()
def folder(tmp_path):
    """Two small real photos (a quarter of a COCO image and a crop of it) in a folder."""
    images = tmp_path / "images"
    images.mkdir()
    photo = Image.open(PHOTO).convert("RGB")
    photo.reduce(4).save(images / "a.jpg")
    photo.crop((100, 50, 260, 170)).save(images / "b.png")
    return images


def test_segment_text_writes_masks_overlay_and_json(files, tmp_path):
    out = tmp_path / "out"
    code = main(["segment", str(PHOTO), "--text", "cat. dog.", "--detector", str(files["gdino"]),
                 "--box-threshold", "0.3", *files["sam"], "-o", str(out)])
    assert code == 0
    document = json.loads((out / "000000005001.json").read_text())
    masks = document["masks"]
    assert masks and document["prompt"]["classes"] == ["cat", "dog"] and document["prompt"]["box_threshold"] == 0.3
    for record in masks:
        mask = np.array(Image.open(out / record["png"])) > 0
        np.testing.assert_array_equal(decode_rle(record["segmentation"]), mask)
        assert record["category"] in ("cat", "dog") and record["detector_score"] > 0.3
        assert mask.shape == (document["height"], document["width"])
    assert [m["detector_score"] for m in masks] == sorted((m["detector_score"] for m in masks), reverse=True)
    overlay = np.array(Image.open(out / "000000005001_overlay.png"))
    assert overlay.shape == (document["height"], document["width"], 3)


def test_segment_text_without_detections_writes_an_empty_result(files, tmp_path):
    code = main(["segment", str(PHOTO), "--text", "cat", "--route", "owlv2", "--detector", str(files["owlv2"]),
                 "--box-threshold", "1.0", *files["sam"], "-o", str(tmp_path)])
    assert code == 0
    assert json.loads((tmp_path / "000000005001.json").read_text())["masks"] == []
    assert (tmp_path / "000000005001_overlay.png").exists()


def test_segment_text_refuses_points_beside_text(files, tmp_path, capsys):
    assert main(["segment", str(PHOTO), "--text", "cat", "--point", "3,4", "-o", str(tmp_path)]) == 2
    assert "--text is its own prompt" in capsys.readouterr().err


def test_label_classes_to_coco_with_categories_pycocotools_loads(files, folder, tmp_path):
    from pycocotools.coco import COCO

    out = tmp_path / "labels"
    args = ["label", str(folder), "-o", str(out), "--classes", "dog, cat", "--engine", "owlv2",
            "--detector", str(files["owlv2"]), "--box-threshold", "0.0", *files["sam"], "--format", "yolo"]
    assert main(args) == 0
    coco = COCO(str(out / "annotations.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["dog", "cat"]
    assert len(coco.getImgIds()) == 2 and coco.getAnnIds()
    for name in ("a.jpg", "b.png"):
        document = json.loads((out / f"{name}.json").read_text())
        image_id = document["image"]["image_id"]
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert [coco.loadCats(a["category_id"])[0]["name"] for a in annotations] == \
            [a["category"] for a in document["annotations"]]
        assert [a["score"] for a in annotations] == [a["detector_score"] for a in document["annotations"]]
        np.testing.assert_array_equal(coco.annToMask(annotations[0]), decode_rle(document["annotations"][0]["segmentation"]))
    assert (out / "classes.txt").read_text() == "dog\ncat\n"
    assert (out / "labels" / "a.txt").read_text().strip()
    stamp = (out / "a.jpg.json").stat().st_mtime_ns
    assert main(args) == 0  # resumed: nothing to redo
    assert (out / "a.jpg.json").stat().st_mtime_ns == stamp
    changed = [*args[:5], "dog, horse", *args[6:]]
    assert main(changed) == 2  # other classes: other settings, refused


def test_label_caption_grounds_each_caption(files, folder, tmp_path):
    from pycocotools.coco import COCO

    shutil.copy(folder / "b.png", tmp_path / "b.png")
    out = tmp_path / "labels"
    assert main(["label", str(tmp_path / "b.png"), "-o", str(out), "--caption", "--captioner", str(files["blip"]),
                 "--detector", str(files["gdino"]), "--box-threshold", "0.0", *files["sam"]]) == 0
    document = json.loads((out / "b.png.json").read_text())
    assert document["segany"]["settings"]["generator"]["captioner"] == str(files["blip"])
    coco = COCO(str(out / "annotations.json"))
    names = {c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert names == {a["category"] for a in document["annotations"]} and names
    assert len({a["caption"] for a in document["annotations"]}) == 1  # the image's caption, kept with its masks


def test_label_caption_needs_grounding_dino(files, folder, tmp_path, capsys):
    assert main(["label", str(folder), "-o", str(tmp_path), "--caption", "--engine", "clip"]) == 2
    assert "--engine grounding-dino" in capsys.readouterr().err


def test_segment_clip_route_on_the_classic_engine(files, folder, tmp_path):
    code = main(["segment", str(folder / "b.png"), "--text", "cat, dog", "--route", "clip", "--clip", str(files["clip"]),
                 "--clip-threshold", "-1", "--model", "classic", "-o", str(tmp_path)])
    assert code == 0
    masks = json.loads((tmp_path / "b.json").read_text())["masks"]
    assert masks and {m["category"] for m in masks} <= {"cat", "dog"}


def test_eval_detect_on_tiny_models(files, tmp_path, capsys):
    out = tmp_path / "detect.json"
    code = main(["eval", "--protocol", "detect", "--dataset", str(COCO / "annotations" / "instances_val2017.json"),
                 "--limit", "1", "--engine", "owlv2", "--detector", str(files["owlv2"]), "--box-threshold", "0.0",
                 *files["sam"], "--quiet", "--out", str(out)])
    assert code == 0
    summary = json.loads(out.read_text())
    assert summary["images"] == 1 and summary["detections"] > 0  # AP on random weights is noise
    assert set(summary["bbox"]) == set(summary["segm"]) >= {"AP", "AP50", "AP75"}
    assert "bbox" in capsys.readouterr().out
