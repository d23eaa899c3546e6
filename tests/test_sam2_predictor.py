"""SAM 2.1 image predictor and automatic mask generator: parity with the official
``SAM2ImagePredictor`` / ``SAM2AutomaticMaskGenerator`` outputs (golden/sam2), loading through the
official YAML and flat JSON, a tiny random SAM 2 without the shared folder, typed errors, the CLI."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import segany
import segany.engine
from segany.amg.sam2_generator import Sam2MaskGenerator
from segany.cli import main as cli_main
from segany.engine import ImageFeatures
from segany.errors import (
    ConfigError,
    GeneratorArgumentError,
    ImageError,
    PredictorStateError,
    PromptError,
    UnsupportedOperationError,
)
from segany.masks import clean_mask_scores, decode_rle
from segany.models.config import HieraConfig
from segany.models.sam2 import (
    MemoryAttentionConfig,
    MemoryEncoderConfig,
    RoPEAttentionConfig,
    Sam2,
    SinePositionConfig,
    build_sam2,
)
from segany.predict.sam2_predictor import Sam2Predictor
from segany.predict.sam2_transforms import preprocess_image
from segany.registry import SAM2_MODELS

TINY_YAML = "sam2.1_hiera_golden_tiny.yaml"
IMG_CASE_NAMES = [
    "img_photo_point_multimask", "img_photo_points_fgbg_single", "img_photo_box_only", "img_photo_box_points_multimask",
    "img_photo_mask_input_followup", "img_photo_multi_boxes", "img_photo_normalize_coords_false",
    "img_small_point_multimask", "img_small_box_point_single", "img_wide_points_multimask",
]
# README "How a test should compare"
LOW_RES_TOL, IOU_TOL, MASK_LOGIT_BAND = 1e-3, 1e-5, 1e-3


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
    with torch.no_grad():  # the plain model (outside inference mode: no fused CPU kernels, other float rounding)
        plain = golden_sam2.image_features(preprocess_image(sam2_images["small"])[None])[0]
    torch.testing.assert_close(other.get_image_embedding(), plain, rtol=0, atol=1e-5)


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


def tiny_random_sam2() -> Sam2:
    """A SAM 2.1 with a tiny Hiera (128 px input, 32-wide decoder) and seeded random weights."""
    base = SAM2_MODELS["sam2.1_hiera_t"].config
    grid = 128 // 16
    encoder = HieraConfig(embed_dim=8, num_heads=1, stages=(1, 1, 2, 1), global_att_blocks=(3,),
                          window_pos_embed_bkg_spatial_size=(3, 3), window_spec=(4, 2, 4, 2),
                          backbone_channel_list=(64, 32, 16, 8), d_model=32, position_num_pos_feats=32, img_size=128)
    config = dataclasses.replace(
        base, name="tiny_random_sam2", encoder=encoder, hidden_dim=32, image_size=128,
        memory_attention=MemoryAttentionConfig(
            d_model=32, num_layers=1, dim_feedforward=64,
            self_attention=RoPEAttentionConfig(embedding_dim=32, feat_sizes=(grid, grid)),
            cross_attention=RoPEAttentionConfig(embedding_dim=32, kv_in_dim=16, rope_k_repeat=True, feat_sizes=(grid, grid))),
        memory_encoder=MemoryEncoderConfig(out_dim=16, in_dim=32, cx_dim=32, position_encoding=SinePositionConfig(num_pos_feats=16)),
    )
    torch.manual_seed(0)
    return build_sam2(config)


@pytest.fixture(scope="module")
def random_sam2() -> Sam2:
    return tiny_random_sam2()


@pytest.fixture(scope="module")
def random_image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)


def test_tiny_random_sam2_predictor_without_shared(random_sam2: Sam2, random_image: np.ndarray) -> None:
    predictor = segany.Predictor(random_sam2)
    assert isinstance(predictor, Sam2Predictor) and predictor.low_res_size == 32
    predictor.set_image(random_image)
    masks, iou, low = predictor.predict(np.array([[10.0, 20.0]]), np.array([1]))
    assert masks.shape == (3, 50, 70) and masks.dtype == np.float32 and iou.shape == (3,) and low.shape == (3, 32, 32)
    single, _, _ = predictor.predict(np.array([[10.0, 20.0]]), np.array([1]), multimask_output=False)
    assert single.shape == (1, 50, 70)
    boxes = np.array([[1, 2, 30, 40], [0, 0, 69, 49]])
    many, many_iou, many_low = predictor.predict(box=boxes)
    assert many.shape == (2, 3, 50, 70) and many_iou.shape == (2, 3)
    for i, box in enumerate(boxes):  # several boxes at once = each box alone
        np.testing.assert_allclose(predictor.predict(box=box)[2], many_low[i], atol=1e-5)
    logits, _, low_logits = predictor.predict(box=boxes[0], return_logits=True)
    assert logits.min() < 0 < logits.max() and np.abs(low_logits).max() <= 32
    # the engine protocol: predict_torch in the model frame equals predict
    coords = torch.tensor([[[10.0 / 70 * 128, 20.0 / 50 * 128]]])
    t_masks, _, t_low = predictor.predict_torch(coords, torch.ones(1, 1, dtype=torch.int))
    np.testing.assert_allclose(t_low[0].numpy(), low, atol=1e-5)
    assert np.array_equal(t_masks[0].numpy(), masks > 0)


def test_tiny_random_sam2_generator_without_shared(random_sam2: Sam2, random_image: np.ndarray) -> None:
    generator = segany.MaskGenerator(random_sam2, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                                     box_nms_thresh=1.0, output_mode="coco_rle")
    assert isinstance(generator, Sam2MaskGenerator)
    records = generator.generate(random_image)
    assert len(records) == 48 and generator.counts.candidates == 48
    predictor = Sam2Predictor(random_sam2)
    predictor.set_image(random_image)
    for record in records[:6]:  # each record is the predictor's mask for its point
        (x, y), = record["point_coords"]
        logits, iou, _ = predictor.predict(np.array([[x, y]]), np.array([1]), return_logits=True)
        k = int(np.argmin(np.abs(iou - record["predicted_iou"])))
        assert abs(iou[k] - record["predicted_iou"]) < 1e-6
        assert (decode_rle(record["segmentation"]) != (logits[k] > 0)).sum() <= 2
    single = Sam2MaskGenerator(random_sam2, points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                               box_nms_thresh=1.0, multimask_output=False)
    assert len(single.generate(random_image)) == 4
    m2m = Sam2MaskGenerator(predictor, points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                            box_nms_thresh=1.0, use_m2m=True, crop_n_layers=1)
    assert m2m.generate(random_image) and m2m.counts.candidates == 12 + 4 * 12
    features_gen = Sam2MaskGenerator(random_sam2, points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                                     box_nms_thresh=1.0, multimask_output=False, min_mask_region_area=100)
    predictor.set_image(random_image)
    with_features = features_gen.generate(random_image, features=predictor.image_features())
    assert [r["predicted_iou"] for r in with_features] == [r["predicted_iou"] for r in single.generate(random_image)]


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda p: p.predict(np.array([[1.0, 2.0]])), PromptError, "together"),
    (lambda p: p.predict(np.array([[100.0, 2.0]]), np.array([1])), PromptError, "outside"),
    (lambda p: p.predict(np.array([[0.5, 0.5]]), np.array([1]), normalize_coords=False), None, None),
    (lambda p: p.predict(np.array([[2.0, 0.5]]), np.array([1]), normalize_coords=False), PromptError, "outside"),
    (lambda p: p.predict(np.array([[1.0, 2.0]]), np.array([7])), PromptError, "only hold"),
    (lambda p: p.predict(np.array([[1.0, 2.0]]), np.array([-1])), PromptError, "only hold"),
    (lambda p: p.predict(np.ones((2, 2, 2)), np.array([[1, -1], [-1, -1]])), PromptError, "padding"),
    (lambda p: p.predict(np.ones((2, 2, 2)), np.array([[1, -1], [-1, -1]]), box=np.array([[1, 1, 5, 5]] * 2)),
     None, None),
    (lambda p: p.predict(np.array([[1.0, 2.0]]), np.array([1, 1])), PromptError, "point_labels must have shape"),
    (lambda p: p.predict(box=np.array([30, 30, 10, 10])), PromptError, "reversed"),
    (lambda p: p.predict(box=np.array([1, 2, 3])), PromptError, "box must have shape"),
    (lambda p: p.predict(box=np.array([[1, 2, 3, 4]] * 2), point_coords=np.array([[1.0, 2.0]]),
                         point_labels=np.array([1])), PromptError, "disagree"),
    (lambda p: p.predict(np.array([[1.0, 2.0]]), np.array([1]), mask_input=np.zeros((1, 64, 64))), PromptError, "mask_input"),
    (lambda p: p.predict(np.array([[np.nan, 2.0]]), np.array([1])), PromptError, "NaN"),
    (lambda p: p.predict(np.array([["a", "b"]]), np.array([1])), PromptError, "numeric"),
    (lambda p: p.predict_batch([np.array([[1.0, 2.0]])], [np.array([1])]), PredictorStateError, "set_image_batch"),
    (lambda p: p.predict_torch(torch.zeros(1, 1, 3), torch.ones(1, 1)), PromptError, "point_coords must have shape"),
    (lambda p: p.set_image(np.zeros((5, 5), np.uint8)), ImageError, "HxWx3"),
    (lambda p: p.set_image(np.zeros((5, 5, 3)), image_format="RGB"), ImageError, "uint8"),
])
def test_bad_input_is_a_typed_error(random_sam2: Sam2, random_image: np.ndarray, call, error, message) -> None:
    predictor = Sam2Predictor(random_sam2)
    predictor.set_image(random_image)
    if error is None:
        call(predictor)
        return
    with pytest.raises(error, match=message):
        call(predictor)


def test_batched_clicks_padded_with_minus_one_as_the_official_predictor(random_sam2: Sam2,
                                                                      random_image: np.ndarray) -> None:
    """B sets of clicks of different lengths: -1 pads the shorter ones and is embedded as SAM's "not a
    point" (the official predictor passes the labels to the prompt encoder), each set decoded as alone."""
    predictor = Sam2Predictor(random_sam2)
    predictor.set_image(random_image)
    coords = np.array([[[10.0, 12.0], [20.0, 5.0]], [[30.0, 25.0], [0.0, 0.0]]], np.float32)
    labels = np.array([[1, 0], [1, -1]])
    masks, _, _ = predictor.predict(coords, labels, multimask_output=False, return_logits=True)
    alone = predictor.predict(coords[1:], labels[1:], multimask_output=False, return_logits=True)
    np.testing.assert_allclose(masks[1], alone[0], atol=1e-4)  # (a leading B of 1 is squeezed, as the official)
    hw = random_image.shape[:2]
    model_coords = torch.from_numpy(coords * random_sam2.image_size / np.array([hw[1], hw[0]], np.float32))
    torch_masks, _, _ = predictor.predict_torch(model_coords, torch.from_numpy(labels).int(), multimask_output=False,
                                                return_logits=True)
    np.testing.assert_allclose(masks, torch_masks.numpy(), atol=1e-4)
    unpadded = predictor.predict(coords[1, :1], labels[1, :1], multimask_output=False, return_logits=True)
    assert np.abs(unpadded[0] - masks[1]).max() > 1e-3  # the padding token is decoded, not dropped


def test_no_image_and_wrong_model_are_typed_errors(random_sam2: Sam2) -> None:
    predictor = Sam2Predictor(random_sam2)
    for call in (lambda: predictor.predict(np.array([[1.0, 2.0]]), np.array([1])), predictor.get_image_embedding,
                 predictor.image_features):
        with pytest.raises(PredictorStateError, match="set_image"):
            call()
    with pytest.raises(ConfigError, match="Sam2"):
        Sam2Predictor(torch.nn.Linear(1, 1))
    with pytest.raises(GeneratorArgumentError, match="Sam2"):
        Sam2MaskGenerator(torch.nn.Linear(1, 1))
    with pytest.raises(UnsupportedOperationError, match="max_hole_area"):
        Sam2MaskGenerator(random_sam2, max_hole_area=10)
    with pytest.raises(GeneratorArgumentError, match="fast"):
        Sam2MaskGenerator(random_sam2, fast=True)
    with pytest.raises(PromptError, match="features"):
        predictor.set_image_features(ImageFeatures((torch.zeros(1, 32, 4, 4),), (10, 10), (128, 128)))
    predictor.set_image(np.zeros((10, 12, 3), np.uint8))
    predictor.reset_predictor()
    assert not predictor.is_image_set and predictor.original_size is None


def test_cli_segment_with_yaml_and_checkpoint(sam2_dir: Path, tiny_sam2_pt: Path, golden_sam2: Sam2,
                                              sam2_images: dict[str, np.ndarray], tmp_path: Path) -> None:
    Image.fromarray(sam2_images["small"]).save(tmp_path / "small.png")
    argv = ["segment", str(tmp_path / "small.png"), "--point", "26,18", "--model", str(sam2_dir / TINY_YAML),
            "--checkpoint", str(tiny_sam2_pt), "-o", str(tmp_path / "out")]
    assert cli_main(argv) == 0
    record = json.loads((tmp_path / "out" / "small.json").read_text())["masks"][0]
    predictor = Sam2Predictor(golden_sam2)
    predictor.set_image(sam2_images["small"])
    masks, _, _ = predictor.predict(np.array([[26.0, 18.0]]), np.array([1]), multimask_output=False)
    assert np.array_equal(decode_rle(record["segmentation"]), masks[0] > 0)


def test_cli_models_lists_sam2(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGANY_HOME", str(tmp_path))
    assert cli_main(["models"]) == 0
    names = {line.split()[0] for line in capsys.readouterr().out.splitlines()[2:] if not line.startswith(" ")}
    assert set(SAM2_MODELS) <= names and "vit_b" in names


def test_registry_names_build_sam2() -> None:
    with torch.device("meta"):
        model = segany.build_model("sam2.1_hiera_t")
    assert isinstance(model, Sam2) and sum(p.numel() for p in model.parameters()) == 38_962_498
    assert segany.engine.family_of(model).name == "sam2"


def test_cli_everything_with_yaml_and_checkpoint(sam2_dir: Path, tiny_sam2_pt: Path, sam2_images: dict[str, np.ndarray],
                                                 tmp_path: Path) -> None:
    Image.fromarray(sam2_images["small"]).save(tmp_path / "small.png")
    argv = ["everything", str(tmp_path / "small.png"), "-o", str(tmp_path / "out"), "--points-per-side", "4",
            "--pred-iou-thresh", "0.5", "--stability-thresh", "0.5", "--model", str(sam2_dir / TINY_YAML),
            "--checkpoint", str(tiny_sam2_pt)]
    assert cli_main(argv) == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert any(name.startswith("small") for name in written)


def test_clean_mask_scores_fills_holes_then_removes_sprinkles() -> None:
    scores = torch.full((1, 1, 16, 16), -5.0)
    scores[0, 0, 2:12, 2:12] = 4.0  # the object, 100 px
    scores[0, 0, 5:7, 5:7] = -1.0  # a 4-pixel hole in it
    scores[0, 0, 14, 14] = 2.0  # a 1-pixel speck
    cleaned = clean_mask_scores(scores, 0.0, max_hole_area=4, max_sprinkle_area=1)
    expected = scores.clone()
    expected[0, 0, 5:7, 5:7] = 10.0
    expected[0, 0, 14, 14] = -10.0
    assert torch.equal(cleaned, expected)
    assert torch.equal(clean_mask_scores(scores, 0.0, 3, 0), scores)  # hole above the area: kept
    assert torch.equal(clean_mask_scores(scores, 0.0, 0, 0), scores)


def test_predictor_hole_and_sprinkle_areas_clean_the_low_res_logits(random_sam2: Sam2, random_image: np.ndarray) -> None:
    plain, cleaning = Sam2Predictor(random_sam2), Sam2Predictor(random_sam2, max_hole_area=30, max_sprinkle_area=30)
    for predictor in (plain, cleaning):
        predictor.set_image(random_image)
    point, label = np.array([[20.0, 15.0]]), np.array([1])
    _, _, low_res = plain.predict(point, label)
    masks, _, low_res_cleaning = cleaning.predict(point, label)
    assert np.array_equal(low_res, low_res_cleaning)  # the returned low-res logits are the raw ones
    coords = plain._transform_coords(torch.tensor(point, dtype=torch.float32)[None], True, plain.original_size)
    raw, _ = plain.predict_low_res_torch(coords, torch.tensor(label)[None])
    cleaned = clean_mask_scores(raw, 0.0, 30, 30)
    assert not torch.equal(cleaned, raw)  # the random model's masks have holes or specks to clean
    assert np.array_equal(masks.astype(bool), (plain.upscale_logits(cleaned)[0] > 0).numpy())
    with pytest.raises(PromptError, match="max_hole_area"):
        Sam2Predictor(random_sam2, max_hole_area=-1)
