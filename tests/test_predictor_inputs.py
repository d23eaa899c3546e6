"""Every bad input at the predictor boundary raises its typed error with a useful message
(on the tiny random SAM: no shared folder needed)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segany import Predictor
from segany.errors import ImageError, PredictorStateError, PromptError


@pytest.fixture(scope="module")
def predictor(tiny_random_sam, synthetic_small) -> Predictor:
    predictor = Predictor(tiny_random_sam)
    predictor.set_image(synthetic_small)  # 37x53
    return predictor


def test_predict_before_set_image(tiny_random_sam) -> None:
    with pytest.raises(PredictorStateError, match="set_image"):
        Predictor(tiny_random_sam).predict(np.array([[1, 1]]), np.array([1]))
    with pytest.raises(PredictorStateError):
        Predictor(tiny_random_sam).get_image_embedding()


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((10, 10, 3), dtype=np.float32), "uint8"),
        (np.zeros((10, 10), dtype=np.uint8), "HxWx3"),
        (np.zeros((10, 10, 4), dtype=np.uint8), "HxWx3"),
        (np.zeros((0, 10, 3), dtype=np.uint8), "empty"),
        ([[1, 2, 3]], "numpy array"),
    ],
)
def test_bad_images(tiny_random_sam, image, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        Predictor(tiny_random_sam).set_image(image)


def test_bad_image_format(tiny_random_sam, synthetic_small) -> None:
    with pytest.raises(PromptError, match="image_format"):
        Predictor(tiny_random_sam).set_image(synthetic_small, image_format="RGBA")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"point_coords": np.array([[1.0, 2.0, 3.0]]), "point_labels": np.array([1])}, r"\(N, 2\)"),
        ({"point_coords": np.array([[1.0, 2.0]]), "point_labels": np.array([1, 0])}, "point_labels must have shape"),
        ({"point_coords": np.array([[1.0, 2.0]]), "point_labels": np.array([2])}, "only hold"),
        ({"point_coords": np.array([[1.0, 2.0]]), "point_labels": np.array([-1])}, "only hold"),
        ({"point_coords": np.array([[60.0, 2.0]]), "point_labels": np.array([1])}, "outside the 53x37 image"),
        ({"point_coords": np.array([[-1.0, 2.0]]), "point_labels": np.array([1])}, "outside"),
        ({"point_coords": np.array([[np.nan, 2.0]]), "point_labels": np.array([1])}, "NaN"),
        ({"point_coords": np.array([[1.0, 2.0]])}, "together"),
        ({"point_coords": np.array([["a", "b"]]), "point_labels": np.array([1])}, "numeric"),
        ({"box": np.array([40.0, 5.0, 10.0, 30.0])}, "reversed corners"),
        ({"box": np.array([1.0, 2.0, 3.0])}, r"shape \(4,\)"),
        ({"box": np.array([0.0, 0.0, 100.0, 30.0])}, "outside"),
        ({"box": np.array([1.0, 1.0, 9.0, 9.0]), "mask_input": np.zeros((1, 48, 48), np.float32)}, "mask_input must have shape"),
    ],
)
def test_bad_prompts(predictor: Predictor, kwargs: dict, message: str) -> None:
    with pytest.raises(PromptError, match=message):
        predictor.predict(**kwargs)


def test_border_points_and_lists_are_accepted(predictor: Predictor) -> None:
    masks, scores, logits = predictor.predict([[0, 0], [53, 37]], [1, 0], multimask_output=True)
    assert masks.shape == (3, 37, 53) and masks.dtype == bool
    low = predictor.low_res_size
    assert scores.shape == (3,) and logits.shape == (3, low, low)


@pytest.mark.parametrize(
    "args, message",
    [
        ((torch.zeros(2, 2), torch.ones(2, 1)), r"\(B, N, 2\)"),
        ((torch.zeros(2, 1, 2), torch.ones(2, 2)), "point_labels must have shape"),
        ((torch.zeros(1, 1, 2), torch.full((1, 1), 3)), "only hold"),
        ((None, None, torch.tensor([[5.0, 5.0, 1.0, 1.0]])), "reversed"),
        ((None, None, torch.zeros(2, 3)), r"\(B, 4\)"),
        ((torch.zeros(2, 1, 2), torch.ones(2, 1), torch.zeros(3, 4)), "3 rows"),
        ((None, None, torch.zeros(1, 4), torch.zeros(1, 256, 256)), "mask_input must have shape"),
    ],
)
def test_bad_torch_prompts(predictor: Predictor, args: tuple, message: str) -> None:
    with pytest.raises(PromptError, match=message):
        predictor.predict_torch(*args)


def test_mask_input_follows_the_models_low_res_size(predictor: Predictor) -> None:
    """The previous call's low-res logits are the next call's mask_input, whatever the geometry."""
    _, _, logits = predictor.predict(np.array([[20.0, 15.0]]), np.array([1]), multimask_output=False)
    assert logits.shape == (1, predictor.low_res_size, predictor.low_res_size) != (1, 256, 256)
    masks, _, _ = predictor.predict(np.array([[20.0, 15.0]]), np.array([1]), mask_input=logits, multimask_output=False)
    assert masks.shape == (1, 37, 53)


def test_padding_label_allowed_in_torch_api(predictor: Predictor) -> None:
    coords = torch.tensor([[[100.0, 100.0], [0.0, 0.0]]])
    masks, iou, _ = predictor.predict_torch(coords, torch.tensor([[1, -1]]), multimask_output=False)
    assert masks.shape == (1, 1, 37, 53) and iou.shape == (1, 1)


def test_bgr_input_equals_rgb(tiny_random_sam, synthetic_small) -> None:
    rgb, bgr = Predictor(tiny_random_sam), Predictor(tiny_random_sam)
    rgb.set_image(synthetic_small)
    bgr.set_image(np.ascontiguousarray(synthetic_small[..., ::-1]), image_format="BGR")
    assert torch.equal(rgb.get_image_embedding(), bgr.get_image_embedding())


def test_reset_image(predictor: Predictor, tiny_random_sam, synthetic_small) -> None:
    fresh = Predictor(tiny_random_sam)
    fresh.set_image(synthetic_small)
    fresh.reset_image()
    with pytest.raises(PredictorStateError):
        fresh.predict(box=np.array([1, 1, 5, 5]))
