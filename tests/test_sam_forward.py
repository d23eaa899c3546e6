"""The official notebooks' entry points: ``sam(batched_input, multimask_output)`` (the official
``Sam.forward``) and ``SamAutomaticMaskGenerator(model=sam, ...)``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import segany
from segany import MaskGenerator, Predictor
from segany.errors import PromptError
from segany.predict.transforms import ResizeLongestSide
from tiny_models import synthetic_image, tiny_sam_config

TINY = tiny_sam_config()  # the geometry of the tiny_random_sam fixture

LOGIT_TOL = 1e-3  # golden README tolerances (float32 reordering)
IOU_TOL = 1e-4


def _prepare_image(image: np.ndarray, transform: ResizeLongestSide) -> torch.Tensor:
    """The official notebook's ``prepare_image``: resized, 3xHxW, uint8."""
    return torch.as_tensor(transform.apply_image(image)).permute(2, 0, 1).contiguous()


def _golden_record(golden: Path, case: str, transform: ResizeLongestSide) -> tuple[dict, dict[str, np.ndarray]]:
    """A golden predictor case as a ``batched_input`` record, and its outputs with a batch axis."""
    data = np.load(golden / f"{case}.npz")
    record = {"image": _prepare_image(data["image"], transform), "original_size": tuple(data["original_size"].tolist())}
    batched = data["masks"].ndim == 4
    if "boxes_transformed" in data or "box_transformed" in data:
        record["boxes"] = torch.as_tensor(data["boxes_transformed" if batched else "box_transformed"]).reshape(-1, 4)
    if "point_coords_transformed" in data:
        coords, labels = data["point_coords_transformed"], data["point_labels"]
        record["point_coords"] = torch.as_tensor(coords if batched else coords[None])
        record["point_labels"] = torch.as_tensor(labels if batched else labels[None])
    if "mask_input" in data:
        record["mask_inputs"] = torch.as_tensor(data["mask_input"])[None]
    expected = {key: data[key] if batched else data[key][None] for key in ("masks", "iou_predictions", "low_res_logits")}
    return record, {**expected, "multimask_output": bool(data["multimask_output"])}


def _assert_official(out: dict[str, torch.Tensor], expected: dict[str, np.ndarray]) -> None:
    assert set(out) == {"masks", "iou_predictions", "low_res_logits"}
    assert out["masks"].dtype == torch.bool and out["masks"].shape == expected["masks"].shape
    assert np.abs(out["low_res_logits"].numpy() - expected["low_res_logits"]).max() <= LOGIT_TOL
    assert np.abs(out["iou_predictions"].numpy() - expected["iou_predictions"]).max() <= IOU_TOL
    assert (out["masks"].numpy() != expected["masks"]).mean() < 1e-4  # pixels at the threshold only


def test_forward_over_two_images_matches_the_official_outputs(tiny_sam, golden: Path) -> None:
    """Images of different sizes in one call, each with its own prompts (4 boxes; 3 points)."""
    transform = ResizeLongestSide(tiny_sam.image_encoder.img_size)
    cases = [_golden_record(golden, case, transform) for case in ("sam_photo_batched_boxes", "sam_small_border_points_single")]
    assert not any(expected["multimask_output"] for _, expected in cases)
    outputs = tiny_sam([record for record, _ in cases], multimask_output=False)
    assert len(outputs) == 2
    for out, (_, expected) in zip(outputs, cases):
        _assert_official(out, expected)


def test_forward_with_box_and_mask_input_matches_the_official_outputs(tiny_sam, golden: Path) -> None:
    record, expected = _golden_record(golden, "sam_small_mask_input_box_multimask", ResizeLongestSide(1024))
    assert expected["multimask_output"] and set(record) >= {"boxes", "mask_inputs"}
    (out,) = tiny_sam([record], multimask_output=True)
    _assert_official(out, expected)


def test_forward_over_two_images_matches_the_predictor(tiny_random_sam) -> None:
    """Without golden data: ``sam(batched_input)`` on two images of different sizes (boxes; points
    with a mask input) gives what the predictor gives for each image."""
    transform = ResizeLongestSide(tiny_random_sam.image_size)
    images = [synthetic_image(60, 90, seed=4), synthetic_image(37, 53)]
    boxes = np.array([[5.0, 5.0, 50.0, 40.0], [30.0, 10.0, 85.0, 55.0]])
    points, labels = np.array([[[10.0, 12.0], [40.0, 30.0]]]), np.array([[1, 0]])
    predictor = Predictor(tiny_random_sam)
    predictor.set_image(images[1])
    _, _, mask_input = predictor.predict(points[0, :1], labels[0, :1], multimask_output=False)
    records = [
        {"image": _prepare_image(images[0], transform), "original_size": images[0].shape[:2],
         "boxes": transform.apply_boxes_torch(torch.as_tensor(boxes), images[0].shape[:2])},
        {"image": _prepare_image(images[1], transform), "original_size": images[1].shape[:2],
         "point_coords": transform.apply_coords_torch(torch.as_tensor(points), images[1].shape[:2]),
         "point_labels": torch.as_tensor(labels), "mask_inputs": torch.as_tensor(mask_input)[None]},
    ]
    outputs = tiny_random_sam(records, multimask_output=True)
    predictor.set_image(images[0])
    first = predictor.predict_torch(None, None, records[0]["boxes"], multimask_output=True)
    predictor.set_image(images[1])
    second = predictor.predict(points[0], labels[0], mask_input=mask_input, multimask_output=True)
    expected = [first, tuple(torch.as_tensor(a)[None] for a in second)]
    for out, (masks, iou, low_res) in zip(outputs, expected):
        assert out["masks"].dtype == torch.bool and out["masks"].shape == masks.shape
        assert (out["masks"] != masks).float().mean() < 1e-4
        assert (out["iou_predictions"] - iou).abs().max() <= IOU_TOL
        assert (out["low_res_logits"] - low_res).abs().max() <= LOGIT_TOL


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"original_size": (4, 4)}, "no 'image'"),
        ({"image": torch.zeros(4, 8, 8), "original_size": (8, 8)}, "3xHxW"),
        ({"image": torch.zeros(3, TINY.image_size + 1, 8), "original_size": (8, 8)}, f"longest side is {TINY.image_size}"),
        ({"image": torch.zeros(3, 8, 8), "original_size": (8, 8), "point_coords": torch.zeros(1, 1, 2)}, "together"),
        ({"image": torch.zeros(3, 8, 8), "original_size": (8, 8), "boxes": torch.zeros(4)}, r"Bx4"),
        ({"image": torch.zeros(3, 8, 8), "original_size": (8, 8), "boxes": torch.zeros(2, 4),
          "mask_inputs": torch.zeros(3, 1, TINY.mask_input_size, TINY.mask_input_size)}, "batch sizes differ"),
        ({"image": torch.zeros(3, 8, 8), "original_size": (0, 8)}, "original_size"),
    ],
)
def test_forward_refuses_malformed_input(tiny_random_sam, record: dict, message: str) -> None:
    assert tiny_random_sam.config == TINY
    with pytest.raises(PromptError, match=message):
        tiny_random_sam([record], multimask_output=False)


def test_mask_generator_takes_the_official_keyword(tiny_random_sam) -> None:
    """``SamAutomaticMaskGenerator(model=sam, ...)``, and the positional form still works."""
    by_keyword = MaskGenerator(model=tiny_random_sam, points_per_side=4)
    positional = MaskGenerator(tiny_random_sam, points_per_side=4)
    assert by_keyword.predictor.model is positional.predictor.model is tiny_random_sam
    assert np.array_equal(by_keyword.point_grids[0], positional.point_grids[0]) and len(by_keyword.point_grids[0]) == 16
    predictor = Predictor(tiny_random_sam)
    assert MaskGenerator(model=predictor).predictor is predictor


def test_mask_generator_keyword_hands_over_to_the_classic_engine() -> None:
    from segany.classic.generator import ClassicMaskGenerator

    generator = MaskGenerator(model=segany.load_model("classic"), box_nms_thresh=0.5)
    assert isinstance(generator, ClassicMaskGenerator) and generator.box_nms_thresh == 0.5
