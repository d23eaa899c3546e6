"""Dataset loaders: the benchmarks' mask encodings, generic folders, COCO JSON, names and errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED
from segany.data.datasets import decode_binary, decode_nonzero, decode_trimap, load_coco, load_folder, open_dataset
from segany.errors import DatasetError

DATA = SHARED / "data"


def require(folder: str):
    if not (DATA / folder).is_dir():
        pytest.skip(f"benchmark data {folder}/ not found under {DATA} (set SEGANY_SHARED)")


@pytest.fixture(autouse=True)
def data_env(monkeypatch):
    monkeypatch.setenv("SEGANY_DATA", str(DATA))


def test_encodings():
    trimap = np.array([[0, 128, 255, 200]], dtype=np.uint8)
    t = decode_trimap(trimap)
    assert t.mask.tolist() == [[False, False, True, True]] and t.ignore.tolist() == [[False, True, False, False]]
    rgb = np.stack([np.array([[0, 197, 243, 100]], dtype=np.uint8)] * 3, axis=-1)
    assert decode_binary(rgb).mask.tolist() == [[False, True, True, False]] and decode_binary(rgb).ignore is None
    palette = np.array([[0, 1, 4, 255]], dtype=np.uint8)
    assert decode_nonzero(palette).mask.tolist() == [[False, True, True, True]]


def test_grabcut_band_is_ignored():
    require("grabcut")
    dataset = open_dataset("grabcut")
    assert len(dataset) == 50
    banded = [s for s in dataset if (np.array(Image.open(DATA / "grabcut" / "masks" / f"{s.name}.png")) == 128).any()]
    image, target = banded[0].load()
    assert image.dtype == np.uint8 and image.shape[:2] == target.mask.shape
    assert target.ignore.any() and not (target.ignore & target.mask).any()


def test_berkeley_rgb_in_between_values():
    require("berkeley")
    dataset = open_dataset("berkeley")
    assert len(dataset) == 100
    sample = next(s for s in dataset if s.name == "8023")
    raw = np.array(Image.open(DATA / "berkeley" / "masks" / "8023.png"))[..., 0]
    _, target = sample.load()
    assert target.mask.sum() == (raw > 128).sum() and target.ignore is None


def test_davis_palette_ids_form_one_object():
    require("davis345")
    dataset = open_dataset("davis")
    assert len(dataset) == 345
    sample = next(s for s in dataset if s.name == "195")  # ids 1, 2 and void 255
    raw = np.array(Image.open(DATA / "davis345" / "masks" / "195.png"))
    image, target = sample.load()
    assert image.shape == (480, 854, 3) and target.mask.sum() == (raw != 0).sum()


def test_coco_mval_and_coco_json():
    require("coco_mval_subset")
    mval = open_dataset("coco_mval")
    assert len(mval) == 80 and mval[0].load()[1].mask.any()
    require("coco_val2017_tiny")
    coco = open_dataset("coco")
    assert len(coco) == 804  # 815 instances less the 11 crowd regions
    image, target = coco[0].load()
    assert target.mask.shape == image.shape[:2] and target.mask.any()


def test_builtin_names_read_their_encodings(tmp_path, monkeypatch):
    """The built-in names on hand-made folders of their layout (the real ones need the shared data):
    grabcut's 128 band is ignored, berkeley's in-betweens split at 128, davis' palette ids all count."""
    monkeypatch.setenv("SEGANY_DATA", str(tmp_path))
    values = np.array([[0, 100, 128, 129, 200, 255]], dtype=np.uint8).repeat(2, axis=0)
    masks = {"grabcut": values, "berkeley": np.stack([values] * 3, axis=-1),
             "davis345": np.array([[0, 1, 2, 4, 255, 0]] * 2, np.uint8)}
    for folder, mask in masks.items():
        for sub in ("images", "masks"):
            (tmp_path / folder / sub).mkdir(parents=True)
        Image.fromarray(np.zeros((2, 6, 3), np.uint8)).save(tmp_path / folder / "images" / "s.jpg")
        Image.fromarray(mask).save(tmp_path / folder / "masks" / "s.png")
    _, grabcut = open_dataset("grabcut")[0].load()
    assert grabcut.mask[0].tolist() == [False, False, False, True, True, True]
    assert grabcut.ignore[0].tolist() == [False, False, True, False, False, False]
    _, berkeley = open_dataset("berkeley")[0].load()
    assert berkeley.mask[0].tolist() == [False, False, False, True, True, True] and berkeley.ignore is None
    _, davis = open_dataset("davis")[0].load()
    assert davis.mask[0].tolist() == [False, True, True, True, True, False]


def test_generic_folder_and_coco_file(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    image = np.zeros((10, 12, 3), dtype=np.uint8)
    mask = np.zeros((10, 12), dtype=np.uint8)
    mask[2:5, 3:7] = 1  # 0/1 masks work: non-zero is the object
    Image.fromarray(image).save(tmp_path / "images" / "a.jpg")
    Image.fromarray(mask).save(tmp_path / "masks" / "a.png")
    dataset = open_dataset(tmp_path)
    assert dataset.name == tmp_path.name and dataset[0].load()[1].mask.sum() == 12
    assert len(load_folder(tmp_path).head(0)) == 0

    coco = {"images": [{"id": 7, "file_name": "a.jpg", "width": 12, "height": 10}],
            "annotations": [{"id": 1, "image_id": 7, "iscrowd": 0, "segmentation": [[3, 2, 7, 2, 7, 5, 3, 5]]},
                            {"id": 2, "image_id": 7, "iscrowd": 1, "segmentation": {"size": [10, 12], "counts": [120]}}],
            "categories": [{"id": 1, "name": "x"}]}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    ds = load_coco(tmp_path / "ann.json", tmp_path / "images")
    assert len(ds) == 1 and ds[0].name == "a#1"
    _, target = ds[0].load()
    assert target.mask[3, 4] and not target.mask[8, 10]


def test_errors(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset"):
        open_dataset("nope")
    with pytest.raises(DatasetError, match="neither"):
        open_dataset(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "masks" / "orphan.png")
    with pytest.raises(DatasetError, match="no image"):
        open_dataset(tmp_path)
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "images" / "orphan.png")
    with pytest.raises(DatasetError, match="mask is"):
        open_dataset(tmp_path)[0].load()
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DatasetError, match="COCO"):
        open_dataset(tmp_path / "bad.json")


def test_data_folder_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SEGANY_DATA", str(tmp_path))
    with pytest.raises(DatasetError, match="SEGANY_DATA"):
        open_dataset("grabcut")
