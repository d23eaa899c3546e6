"""Sam2Predictor's ``dtype`` option: the encoder under bf16 autocast, guarded against float32."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import segany
from segany.errors import BackendError
from segany.predict.sam2_predictor import Sam2Predictor

from test_sam2_predictor import tiny_random_sam2


@pytest.fixture(scope="module")
def model() -> segany.models.sam2.Sam2:
    return tiny_random_sam2()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (60, 80, 3), dtype=np.uint8)


def test_bf16_encoder_close_to_float32_and_features_stay_float32(model, image) -> None:
    exact, quick = Sam2Predictor(model), segany.Predictor(model, dtype="bf16")
    assert isinstance(quick, Sam2Predictor) and quick.dtype == torch.bfloat16
    exact.set_image(image)
    quick.set_image(image)
    ref, got = exact.get_image_embedding(), quick.get_image_embedding()
    assert got.dtype == torch.float32
    assert not torch.equal(got, ref)  # autocast really ran the encoder in bf16
    assert float((got - ref).norm() / ref.norm()) < 0.05
    point, label = np.array([[40.0, 30.0]]), np.ones(1, dtype=np.int64)
    (ref_masks, ref_iou, _), (masks, iou, _) = exact.predict(point, label), quick.predict(point, label)
    union = np.logical_or(masks > 0, ref_masks > 0).sum(axis=(1, 2))
    inter = np.logical_and(masks > 0, ref_masks > 0).sum(axis=(1, 2))
    assert np.median(inter / np.maximum(union, 1)) >= 0.9
    assert np.abs(iou - ref_iou).max() < 0.05


def test_unknown_dtype_is_refused(model) -> None:
    with pytest.raises(BackendError, match="dtype"):
        Sam2Predictor(model, dtype="int4")
