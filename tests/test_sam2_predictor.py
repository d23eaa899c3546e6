"""SAM 2.1 image predictor and automatic mask generator: parity with the official
``SAM2ImagePredictor`` / ``SAM2AutomaticMaskGenerator`` outputs (golden/sam2), loading through the
official YAML and flat JSON, a tiny random SAM 2 without the shared folder, typed errors, the CLI."""
from __future__ import annotations

import json
import lzma
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import segany
from segany.errors import PredictorStateError, PromptError
from segany.masks import decode_rle
from segany.models.config import HieraConfig
from segany.models.sam2 import Sam2, Sam2Config, build_sam2
from segany.predict.sam2_predictor import Sam2Predictor
from segany.predict.sam2_transforms import preprocess_image

TINY_YAML = "sam2.1_hiera_golden_tiny.yaml"
IMG_CASE_NAMES = [
    "img_photo_point_multimask", "img_photo_points_fgbg_single", "img_photo_box_only", "img_photo_box_points_multimask",
    "img_photo_mask_input_followup", "img_photo_multi_boxes", "img_photo_normalize_coords_false",
    "img_small_point_multimask", "img_small_box_point_single", "img_wide_points_multimask",
]
# README "How a test should compare"
LOW_RES_TOL, IOU_TOL, MASK_LOGIT_BAND = 1e-3, 1e-5, 1e-3


@pytest.fixture(scope="session")
def sam2_dir(golden: Path) -> Path:
    return golden / "sam2"


@pytest.fixture(scope="session")
def tiny_sam2_pt(sam2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sam2pred") / "tiny_sam2.1.pt"
    with lzma.open(sam2_dir / "tiny_sam2.1.pt.xz") as src, path.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    return path


@pytest.fixture(scope="session")
def golden_sam2(sam2_dir: Path, tiny_sam2_pt: Path) -> Sam2:
    return segany.load_model(sam2_dir / TINY_YAML, checkpoint=tiny_sam2_pt)


@pytest.fixture(scope="session")
def sam2_images(sam2_dir: Path) -> dict[str, np.ndarray]:
    with np.load(sam2_dir / "images.npz") as data:
        return {name: data[name] for name in ("photo", "small", "wide")}


@pytest.fixture(scope="session")
def photo_predictor(golden_sam2: Sam2, sam2_images: dict[str, np.ndarray]) -> Sam2Predictor:
    predictor = segany.Predictor(golden_sam2)
    predictor.set_image(sam2_images["photo"])
    return predictor


def _prompts(case, suffix: str = "") -> dict:
    out = {}
    for key in ("point_coords", "point_labels", "box", "mask_input"):
        if key + suffix in case.files:
            out[key] = case[key + suffix]
    return out


def compare_masks(ours_logits: np.ndarray, golden_masks: np.ndarray) -> int:
    """Pixels where our mask differs from the golden one; fails on any outside the |logit| <= 1e-3 band."""
    differ = (ours_logits > 0) != golden_masks
    assert not (differ & (np.abs(ours_logits) > MASK_LOGIT_BAND)).any()
    return int(differ.sum())


def _check_case(predictor: Sam2Predictor, case, prompts: dict, multimask: bool, normalize: bool,
                suffix: str = "") -> dict[str, float]:
    masks, iou, low_res = predictor.predict(**prompts, multimask_output=multimask, normalize_coords=normalize)
    logits, _, _ = predictor.predict(**prompts, multimask_output=multimask, normalize_coords=normalize, return_logits=True)
    assert masks.dtype == np.float32 and set(np.unique(masks)) <= {0.0, 1.0}
    assert masks.shape == case["masks" + suffix].shape and low_res.shape == case["low_res_masks" + suffix].shape
    np.testing.assert_allclose(low_res, case["low_res_masks" + suffix], rtol=0, atol=LOW_RES_TOL)
    np.testing.assert_allclose(iou, case["iou_predictions" + suffix], rtol=0, atol=IOU_TOL)
    assert np.array_equal(masks > 0, logits > 0)
    return {"low_res": float(np.abs(low_res - case["low_res_masks" + suffix]).max()),
            "iou": float(np.abs(iou - case["iou_predictions" + suffix]).max()),
            "mask_px": compare_masks(logits, case["masks" + suffix])}


@pytest.mark.parametrize("name", IMG_CASE_NAMES)
def test_image_predictor_matches_official(sam2_dir: Path, golden_sam2: Sam2, sam2_images: dict[str, np.ndarray],
                                          photo_predictor: Sam2Predictor, name: str) -> None:
    case = np.load(sam2_dir / f"{name}.npz")
    image = str(case["image_name"])
    if image == "photo":
        predictor = photo_predictor
    else:
        predictor = Sam2Predictor(golden_sam2)
        predictor.set_image(sam2_images[image])
    assert predictor.original_size == tuple(case["original_size"].tolist())
    normalize = bool(case["normalize_coords"])
    prompts = _prompts(case)
    coords, _, boxes, _ = predictor._prep_prompts(prompts.get("point_coords"), prompts.get("point_labels"),
                                                  prompts.get("box"), None, normalize)
    if "point_coords_model" in case.files:
        np.testing.assert_allclose(coords.numpy(), case["point_coords_model"], rtol=0, atol=1e-4)
    if "box_model" in case.files:
        np.testing.assert_allclose(boxes.numpy(), case["box_model"], rtol=0, atol=1e-4)
    if "first_point_coords" in case.files:  # the mask input is the first call's best low-res logits
        _, first_iou, first_low = predictor.predict(case["first_point_coords"], case["first_point_labels"],
                                                    multimask_output=bool(case["first_multimask_output"]))
        np.testing.assert_allclose(first_iou, case["first_iou_predictions"], rtol=0, atol=IOU_TOL)
        assert int(np.argmax(first_iou)) == int(case["first_best_index"])
        np.testing.assert_allclose(first_low[np.argmax(first_iou)][None], case["mask_input"], rtol=0, atol=LOW_RES_TOL)
    diffs = _check_case(predictor, case, prompts, bool(case["multimask_output"]), normalize)
    print(f"{name}: {diffs}")


def test_predict_batch_matches_official(sam2_dir: Path, golden_sam2: Sam2, sam2_images: dict[str, np.ndarray]) -> None:
    case = np.load(sam2_dir / "img_batch_photo_small.npz")
    predictor = Sam2Predictor(golden_sam2)
    predictor.set_image_batch([sam2_images[str(case["image_name0"])], sam2_images[str(case["image_name1"])]])
    with pytest.raises(PredictorStateError):
        Sam2Predictor(golden_sam2).predict_batch([case["point_coords0"]], [case["point_labels0"]])
    prompts = [_prompts(case, str(i)) for i in range(2)]
    masks, ious, lows = predictor.predict_batch(
        [p.get("point_coords") for p in prompts], [p.get("point_labels") for p in prompts],
        box_batch=[p.get("box") for p in prompts], multimask_output=bool(case["multimask_output"]))
    logits, _, _ = predictor.predict_batch(
        [p.get("point_coords") for p in prompts], [p.get("point_labels") for p in prompts],
        box_batch=[p.get("box") for p in prompts], multimask_output=bool(case["multimask_output"]), return_logits=True)
    for i in range(2):
        np.testing.assert_allclose(lows[i], case[f"low_res_masks{i}"], rtol=0, atol=LOW_RES_TOL)
        np.testing.assert_allclose(ious[i], case[f"iou_predictions{i}"], rtol=0, atol=IOU_TOL)
        assert masks[i].dtype == np.float32
        compare_masks(logits[i], case[f"masks{i}"])
        print(f"batch image {i}: low_res {np.abs(lows[i] - case[f'low_res_masks{i}']).max():.2e}, "
              f"iou {np.abs(ious[i] - case[f'iou_predictions{i}']).max():.2e}")


@pytest.mark.parametrize("config_file", [TINY_YAML, "sam2.1_hiera_golden_tiny.json"])
def test_load_model_reads_yaml_and_flat_json(sam2_dir: Path, tiny_sam2_pt: Path, sam2_images: dict[str, np.ndarray],
                                             photo_predictor: Sam2Predictor, config_file: str) -> None:
    model = segany.load_model(str(sam2_dir / config_file), checkpoint=tiny_sam2_pt)
    assert isinstance(model, Sam2) and isinstance(model.config.encoder, HieraConfig)
    assert model.config.dynamic_multimask_via_stability  # the official builder's post-processing
    assert isinstance(segany.Predictor(model), Sam2Predictor)
    reference = photo_predictor.model.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())


def test_image_features_round_trip_and_pil(golden_sam2: Sam2, sam2_images: dict[str, np.ndarray],
                                           photo_predictor: Sam2Predictor) -> None:
    other = Sam2Predictor(golden_sam2)
    other.set_image_features(photo_predictor.image_features())
    point = (np.array([[419.0, 199.0]]), np.array([1]))
    assert np.array_equal(other.predict(*point)[2], photo_predictor.predict(*point)[2])
    other.set_image(Image.fromarray(sam2_images["small"]))
    assert other.original_size == sam2_images["small"].shape[:2]
    assert torch.equal(other.get_image_embedding(), golden_sam2.image_features(
        preprocess_image(sam2_images["small"])[None])[0])


AMG_CASES = ["amg_photo_pps6_nms1", "amg_photo_pps4_m2m_nms1", "amg_photo_pps4_crop1"]
# removed_by_stage name → (the StageCounts before, after) it
AMG_STAGES = {
    "pred_iou_filter": ("candidates", "after_iou"),
    "stability_filter": ("after_iou", "after_stability"),
    "crop_edge_filter": ("after_stability", "after_crop_edge"),
    "box_nms_within_crop": ("after_crop_edge", "after_box_nms"),
    "nms_across_crops": ("after_box_nms", "after_crop_nms"),
}


@pytest.mark.parametrize("name", AMG_CASES)
def test_mask_generator_matches_official(sam2_dir: Path, golden_sam2: Sam2, sam2_images: dict[str, np.ndarray],
                                         name: str) -> None:
    case = json.loads((sam2_dir / f"{name}.json").read_text())
    generator = segany.MaskGenerator(golden_sam2, **case["args"])
    records = generator.generate(sam2_images[case["image_key"]])
    counts = generator.counts.as_dict()
    for stage, (before, after) in AMG_STAGES.items():
        if stage in case["removed_by_stage"]:
            assert counts[before] - counts[after] == case["removed_by_stage"][stage]["removed"], stage
    assert len(records) == case["num_masks"]
    worst = {"iou": 0.0, "stability": 0.0, "px": 0, "area": 0, "bbox": 0.0}
    for ours, ref in zip(records, case["records"]):
        assert ours["point_coords"] == ref["point_coords"] and ours["crop_box"] == ref["crop_box"]
        assert isinstance(ours["bbox"][0], float)
        px = int((decode_rle(ours["segmentation"]) != decode_rle(ref["segmentation"])).sum())
        diffs = {"iou": abs(ours["predicted_iou"] - ref["predicted_iou"]),
                 "stability": abs(ours["stability_score"] - ref["stability_score"]), "px": px,
                 "area": abs(ours["area"] - ref["area"]),
                 "bbox": float(np.abs(np.subtract(ours["bbox"], ref["bbox"])).max())}
        worst = {k: max(worst[k], v) for k, v in diffs.items()}
    assert worst["iou"] <= 1e-5 and worst["stability"] <= 1e-4 and worst["px"] <= 20
    assert worst["area"] <= 20 and worst["bbox"] <= 1
    print(f"{name}: {len(records)} records, max diffs {worst}")
