"""Numerical parity with the official SAM / MobileSAM outputs in shared/golden (README tolerances)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from segany import Predictor

EMBED_TOL = 1e-4
LOGIT_TOL = 1e-3
IOU_TOL = 1e-5
MASK_LOGIT_MARGIN = 1e-3

_PREDICTORS: dict = {}


def _cases(family: str) -> list[str]:
    from conftest import GOLDEN

    index = GOLDEN / "cases.json"
    if not index.exists():
        return []
    return [case["file"] for case in json.loads(index.read_text())[family]]


def _predictor(model, image: np.ndarray) -> Predictor:
    """One embedding per (model, image) for the whole session: the encoder is the slow part."""
    key = (id(model), image.shape, image.tobytes()[:4096])
    if key not in _PREDICTORS:
        predictor = Predictor(model)
        predictor.set_image(image)
        _PREDICTORS[key] = predictor
    return _PREDICTORS[key]


def _assert_masks_match(logits: np.ndarray, expected: np.ndarray) -> None:
    differ = (logits > 0) != expected
    assert not (differ & (np.abs(logits) > MASK_LOGIT_MARGIN)).any(), "mask pixels differ away from the boundary"
    assert differ.sum() <= 2 * max(1, expected.shape[0])


def _run_case(model, data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    predictor = _predictor(model, data["image"])
    multimask = bool(data["multimask_output"])
    batched = "boxes" in data or ("point_coords" in data and data["point_coords"].ndim == 3)
    if batched:
        coords = torch.as_tensor(data["point_coords_transformed"]) if "point_coords" in data else None
        labels = torch.as_tensor(data["point_labels"]) if "point_labels" in data else None
        boxes = torch.as_tensor(data["boxes_transformed"]) if "boxes" in data else None
        masks, iou, low_res = predictor.predict_torch(coords, labels, boxes, None, multimask, return_logits=True)
        return masks.numpy(), iou.numpy(), low_res.numpy()
    if "first_best_index" in data:
        first_box = data["first_box"] if "first_box" in data else None
        first_coords = data["first_point_coords"] if "first_point_coords" in data else None
        first_labels = data["first_point_labels"] if "first_point_labels" in data else None
        _, first_iou, first_logits = predictor.predict(
            first_coords, first_labels, first_box, multimask_output=bool(data["first_multimask_output"])
        )
        assert np.abs(first_iou - data["first_iou_predictions"]).max() <= IOU_TOL
        best = int(np.argmax(first_iou))
        assert best == int(data["first_best_index"])
        assert np.abs(first_logits[best][None] - data["mask_input"]).max() <= LOGIT_TOL
    return predictor.predict(
        data["point_coords"] if "point_coords" in data else None,
        data["point_labels"] if "point_labels" in data else None,
        data["box"] if "box" in data else None,
        data["mask_input"] if "mask_input" in data else None,
        multimask_output=multimask,
        return_logits=True,
    )


def _check(model, golden, filename: str) -> None:
    data = np.load(golden / filename)
    logits, iou, low_res = _run_case(model, data)
    assert low_res.shape == data["low_res_logits"].shape
    assert np.abs(low_res - data["low_res_logits"]).max() <= LOGIT_TOL
    assert np.abs(iou - data["iou_predictions"]).max() <= IOU_TOL
    assert logits.shape == data["masks"].shape
    _assert_masks_match(logits, data["masks"])


@pytest.mark.parametrize("filename", _cases("sam"))
def test_sam_predictor_matches_official(tiny_sam, golden, filename: str) -> None:
    _check(tiny_sam, golden, filename)


@pytest.mark.parametrize("filename", _cases("mobilesam"))
def test_mobilesam_predictor_matches_official(tiny_mobilesam, golden, filename: str) -> None:
    _check(tiny_mobilesam, golden, filename)


def test_sam_embedding_photo(tiny_sam, golden, photo) -> None:
    expected = np.load(golden / "sam_embedding_photo.npz")
    features = _predictor(tiny_sam, photo).get_image_embedding().numpy()
    assert np.abs(features - expected["features"]).max() <= EMBED_TOL
    assert abs(float(features.astype(np.float64).sum()) - float(expected["features_sum"])) < 1e-1


def test_sam_embedding_small_and_resize(tiny_sam, golden, small_image) -> None:
    expected = np.load(golden / "sam_embedding_small.npz")
    predictor = _predictor(tiny_sam, small_image)
    resized = predictor.transform.apply_image(small_image)
    np.testing.assert_array_equal(resized, expected["input_image_resized"])
    features = predictor.get_image_embedding().numpy()[:, :, ::4, ::4]
    assert np.abs(features - expected["features_stride4"]).max() <= EMBED_TOL


def test_mobilesam_embedding_photo(tiny_mobilesam, golden, photo) -> None:
    expected = np.load(golden / "mobilesam_embedding_photo.npz")
    features = _predictor(tiny_mobilesam, photo).get_image_embedding().numpy()[:, :, ::2, ::2]
    assert np.abs(features - expected["features_stride2"]).max() <= EMBED_TOL
