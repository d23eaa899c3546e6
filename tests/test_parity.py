"""Numerical parity with the official SAM / MobileSAM outputs in shared/golden (README tolerances)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from golden_cases import IOU_TOL, LOGIT_TOL, run_case
from segany import Predictor

EMBED_TOL = 1e-4
MASK_LOGIT_MARGIN = 1e-3

_PREDICTORS: dict = {}


def _cases(family: str, shared: Path | None = None) -> list:
    """The golden case files of ``family``. Without the shared folder: one skipped placeholder.
    With it but no cases (cases.json missing, or none for the family): one placeholder that fails,
    so a broken golden folder cannot pass by collecting nothing."""
    from conftest import SHARED

    shared = SHARED if shared is None else shared
    if not shared.exists():
        return [pytest.param(None, id="no-shared-folder", marks=pytest.mark.skip(reason=f"shared folder {shared} not found"))]
    index = shared / "golden" / "cases.json"
    cases = json.loads(index.read_text()).get(family, []) if index.exists() else []
    return [case["file"] for case in cases] or [pytest.param(None, id="no-golden-cases")]


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


def _check(model, golden, filename: str | None) -> None:
    if filename is None:
        pytest.fail(f"no golden predictor cases found in {golden / 'cases.json'}")
    data = np.load(golden / filename)
    logits, iou, low_res = run_case(_predictor(model, data["image"]), data)
    assert low_res.shape == data["low_res_logits"].shape
    assert np.abs(low_res - data["low_res_logits"]).max() <= LOGIT_TOL
    assert np.abs(iou - data["iou_predictions"]).max() <= IOU_TOL
    assert logits.shape == data["masks"].shape
    _assert_masks_match(logits, data["masks"])


@pytest.mark.parametrize("filename", _cases("sam"))
def test_sam_predictor_matches_official(tiny_sam, golden, filename: str | None) -> None:
    _check(tiny_sam, golden, filename)


@pytest.mark.parametrize("filename", _cases("mobilesam"))
def test_mobilesam_predictor_matches_official(tiny_mobilesam, golden, filename: str | None) -> None:
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
