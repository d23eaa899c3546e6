"""``segany.compat.segment_anything``: the official package's API on segany.

The two flows below are written from the official ``scripts/amg.py`` and
``notebooks/predictor_example.ipynb``: they use only the compat module, as user code would after
changing its import line, and their outputs are checked against the official golden outputs.
"""
from __future__ import annotations

import argparse
import csv
import inspect
import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from segany import MODELS, Sam, build_model, load_model
from segany.compat.segment_anything import (
    ResizeLongestSide,
    SamAutomaticMaskGenerator,
    SamPredictor,
    build_sam,
    build_sam_vit_b,
    build_sam_vit_h,
    build_sam_vit_l,
    sam_model_registry,
)
from segany.errors import (
    CheckpointMismatchError,
    ConfigError,
    GeneratorArgumentError,
    PredictorStateError,
    PromptError,
)
from segany.masks import encode_rle

LOGIT_TOL, IOU_TOL, EMBEDDING_TOL = 1e-3, 1e-5, 1e-4


# --- the model registry -------------------------------------------------------------------------

@pytest.mark.parametrize("key, name", [("default", "vit_h"), ("vit_h", "vit_h"), ("vit_l", "vit_l"), ("vit_b", "vit_b"), ("vit_t", "vit_t")])
def test_registry_builds_each_architecture_without_downloading(key: str, name: str) -> None:
    """checkpoint=None is a fresh model, as the official builders give: on the meta device any
    attempt to fetch or load weights would fail."""
    with torch.device("meta"):
        model = sam_model_registry[key]()
    assert isinstance(model, Sam) and model.config == MODELS[name].config
    assert not model.training  # the official builders call sam.eval()
    assert all(p.is_meta for p in model.parameters())


def test_builder_names_are_the_official_ones() -> None:
    assert build_sam is build_sam_vit_h is sam_model_registry["default"] is sam_model_registry["vit_h"]
    assert (sam_model_registry["vit_l"], sam_model_registry["vit_b"]) == (build_sam_vit_l, build_sam_vit_b)
    assert list(inspect.signature(build_sam_vit_b).parameters) == ["checkpoint"]


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h", "vit_t"])
def test_registry_state_dicts_match_the_official_manifests(golden: Path, name: str) -> None:
    manifest = json.loads((golden / f"manifest_{name}.json").read_text())
    with torch.device("meta"):
        model = sam_model_registry[name]()
    expected = {k: (v["shape"], v["dtype"]) for k, v in manifest["state_dict"].items()}
    assert {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()} == expected
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"]


def test_registry_checkpoint_loads_strictly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = build_model("vit_t").state_dict()
    path = tmp_path / "mobile_sam.pt"
    torch.save(state, path)
    model = sam_model_registry["vit_t"](checkpoint=str(path))
    assert not model.training
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())  # a fresh init would differ
    del state["mask_decoder.iou_token.weight"]
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match="iou_token"):
        sam_model_registry["vit_t"](checkpoint=path)


# --- signatures and typed errors ----------------------------------------------------------------

def test_generator_has_the_official_signature() -> None:
    official = {
        "model": inspect.Parameter.empty, "points_per_side": 32, "points_per_batch": 64, "pred_iou_thresh": 0.88,
        "stability_score_thresh": 0.95, "stability_score_offset": 1.0, "box_nms_thresh": 0.7, "crop_n_layers": 0,
        "crop_nms_thresh": 0.7, "crop_overlap_ratio": 512 / 1500, "crop_n_points_downscale_factor": 1,
        "point_grids": None, "min_mask_region_area": 0, "output_mode": "binary_mask",
    }
    parameters = list(inspect.signature(SamAutomaticMaskGenerator).parameters.values())
    assert {p.name: p.default for p in parameters} == official
    assert list(inspect.signature(SamPredictor).parameters) == ["sam_model"]


def test_non_sam_models_are_typed_errors() -> None:
    with pytest.raises(ConfigError, match="SamPredictor needs a SAM model"):
        SamPredictor("vit_b")  # type: ignore[arg-type]
    with pytest.raises(GeneratorArgumentError, match="SamAutomaticMaskGenerator needs a SAM model"):
        SamAutomaticMaskGenerator(load_model("classic"))  # type: ignore[arg-type]


def test_transform_has_the_official_methods() -> None:
    transform = ResizeLongestSide(1024)
    assert transform.get_preprocess_shape(37, 53, 1024) == (715, 1024) == ResizeLongestSide.get_preprocess_shape(37, 53, 1024)
    image = np.random.default_rng(0).integers(0, 256, (30, 45, 3), dtype=np.uint8)
    batch = torch.as_tensor(image).permute(2, 0, 1)[None].float()
    resized = transform.apply_image_torch(batch)
    assert resized.shape == (1, 3, 683, 1024)
    # "may not exactly match apply_image" (official docstring): both are antialiased bilinear
    difference = (resized[0].permute(1, 2, 0) - torch.as_tensor(transform.apply_image(image)).float()).abs()
    assert float(difference.mean()) < 1.0


@pytest.fixture(scope="module")
def small_sam() -> Sam:
    """A freshly initialised SAM with a one-block ViT encoder (no weights or shared data needed)."""
    args = {"encoder_embed_dim": 48, "encoder_depth": 1, "encoder_num_heads": 3, "encoder_global_attn_indexes": [0]}
    model = build_model({"name": "small", "builder_args": args})
    assert isinstance(model, Sam)
    return model


def test_predictor_state_and_prompt_errors(small_sam: Sam) -> None:
    predictor = SamPredictor(small_sam)
    assert predictor.model is small_sam and predictor.device == small_sam.device
    assert isinstance(predictor.transform, ResizeLongestSide) and predictor.transform.target_length == 1024
    assert not predictor.is_image_set and predictor.features is None and predictor.original_size is None
    with pytest.raises(PredictorStateError):
        predictor.predict(np.array([[1, 1]]), np.array([1]))
    with pytest.raises(PredictorStateError):
        predictor.get_image_embedding()
    with pytest.raises(PromptError, match="longest side"):
        predictor.set_torch_image(torch.zeros((1, 3, 64, 64), dtype=torch.uint8), (64, 64))


# --- comparing with the golden outputs (shared/golden/README.md, "How a test should compare") ---

def assert_matches_golden(model: Sam, case: Any, masks: Any, iou: Any, low_res: Any) -> None:
    """Outputs of one golden case (its image's sizes are in the case) within the README's tolerances."""
    masks, iou, low_res = (torch.as_tensor(np.asarray(x)) for x in (masks, iou, low_res))
    assert np.abs(iou.numpy() - case["iou_predictions"]).max() <= IOU_TOL
    assert np.abs(low_res.numpy() - case["low_res_logits"]).max() <= LOGIT_TOL
    batched = low_res.ndim == 4
    sizes = tuple(case["input_size"].tolist()), tuple(case["original_size"].tolist())
    logits = model.postprocess_masks(low_res if batched else low_res[None], *sizes)
    logits = logits if batched else logits[0]
    assert masks.dtype == torch.bool and masks.shape == case["masks"].shape
    differing = masks.numpy() != case["masks"]
    assert (np.abs(logits.numpy()[differing]) <= LOGIT_TOL).all()  # only pixels on the threshold may differ


def write_bgr(path: Path, rgb: np.ndarray) -> str:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return str(path)


# --- the predictor notebook flow ------------------------------------------------------------------

def test_predictor_notebook_flow_matches_official(golden: Path, tiny_sam, photo: np.ndarray, tmp_path: Path) -> None:
    case = {name: np.load(golden / f"sam_photo_{name}.npz") for name in
            ("point_multimask", "mask_input_followup", "box_only", "box_points_multimask", "batched_boxes")}
    sam = tiny_sam  # the notebook: sam = sam_model_registry[model_type](checkpoint=sam_checkpoint)
    predictor = SamPredictor(sam)
    image = cv2.imread(write_bgr(tmp_path / "photo.png", photo))
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    predictor.set_image(image)
    assert predictor.is_image_set and predictor.original_size == image.shape[:2]
    assert predictor.input_size == tuple(case["point_multimask"]["input_size"])
    embedding = predictor.get_image_embedding()
    assert np.abs(embedding.numpy() - np.load(golden / "sam_embedding_photo.npz")["features"]).max() <= EMBEDDING_TOL

    # one foreground point, three candidate masks
    data = case["point_multimask"]
    input_point, input_label = data["point_coords"], data["point_labels"]
    masks, scores, logits = predictor.predict(point_coords=input_point, point_labels=input_label, multimask_output=True)
    assert_matches_golden(sam, data, masks, scores, logits)

    # two points, then the same points with the best mask's logits as mask_input
    data = case["mask_input_followup"]
    input_point, input_label = data["point_coords"], data["point_labels"]
    _, scores, logits = predictor.predict(point_coords=input_point, point_labels=input_label, multimask_output=True)
    mask_input = logits[np.argmax(scores), :, :]
    assert np.abs(mask_input[None, :, :] - data["mask_input"]).max() <= LOGIT_TOL
    masks, scores, logits = predictor.predict(
        point_coords=input_point, point_labels=input_label, mask_input=mask_input[None, :, :], multimask_output=False
    )
    assert_matches_golden(sam, data, masks, scores, logits)

    # a box alone, as the notebook passes it: input_box[None, :]
    data = case["box_only"]
    input_box = data["box"]
    masks, scores, logits = predictor.predict(point_coords=None, point_labels=None, box=input_box[None, :], multimask_output=False)
    assert_matches_golden(sam, data, masks, scores, logits)

    # a box and points together
    data = case["box_points_multimask"]
    masks, scores, logits = predictor.predict(
        point_coords=data["point_coords"], point_labels=data["point_labels"], box=data["box"], multimask_output=True
    )
    assert_matches_golden(sam, data, masks, scores, logits)

    # several boxes at once: transform to the model's frame, then predict_torch
    data = case["batched_boxes"]
    input_boxes = torch.tensor(data["boxes"], device=predictor.device)
    transformed_boxes = predictor.transform.apply_boxes_torch(input_boxes, image.shape[:2])
    assert np.abs(transformed_boxes.numpy() - data["boxes_transformed"]).max() <= 1e-4
    masks, scores, logits = predictor.predict_torch(point_coords=None, point_labels=None, boxes=transformed_boxes, multimask_output=False)
    assert masks.shape == (len(input_boxes), 1, *image.shape[:2])
    assert_matches_golden(sam, data, masks, scores, logits)

    predictor.reset_image()
    assert not predictor.is_image_set and predictor.features is None


def test_bgr_image_and_torch_prompts_match_official(golden: Path, tiny_sam, small_image: np.ndarray, tmp_path: Path) -> None:
    """An image straight from cv2.imread with image_format="BGR"; boxes and points through apply_*_torch."""
    sam = tiny_sam
    predictor = SamPredictor(sam)
    image = cv2.imread(write_bgr(tmp_path / "small.png", small_image))
    predictor.set_image(image, image_format="BGR")
    stride4 = np.load(golden / "sam_embedding_small.npz")["features_stride4"]
    assert np.abs(predictor.features[:, :, ::4, ::4].numpy() - stride4).max() <= EMBEDDING_TOL
    data = np.load(golden / "sam_small_batched_boxes_points.npz")
    size = image.shape[:2]
    boxes = predictor.transform.apply_boxes_torch(torch.as_tensor(data["boxes"]), size)
    coords = predictor.transform.apply_coords_torch(torch.as_tensor(data["point_coords"]), size)
    assert np.abs(coords.numpy() - data["point_coords_transformed"]).max() <= 1e-4
    masks, scores, logits = predictor.predict_torch(coords, torch.as_tensor(data["point_labels"]), boxes, multimask_output=True)
    assert_matches_golden(sam, data, masks, scores, logits)


def test_sam_forward_notebook_batch_matches_official(golden: Path, tiny_sam, photo: np.ndarray) -> None:
    """The notebook's end-to-end ``sam(batched_input, multimask_output)`` call."""
    if "forward" not in vars(Sam):
        pytest.skip("segany's Sam has no forward(batched_input, multimask_output) yet")
    data = np.load(golden / "sam_photo_batched_boxes.npz")
    resize_transform = ResizeLongestSide(tiny_sam.image_encoder.img_size)
    image = torch.as_tensor(resize_transform.apply_image(photo), device=tiny_sam.device).permute(2, 0, 1).contiguous()
    boxes = resize_transform.apply_boxes_torch(torch.as_tensor(data["boxes"]), photo.shape[:2])
    batched_output = tiny_sam([{"image": image, "boxes": boxes, "original_size": photo.shape[:2]}], multimask_output=False)
    output = batched_output[0]
    assert_matches_golden(tiny_sam, data, output["masks"], output["iou_predictions"], output["low_res_logits"])


# --- the scripts/amg.py flow ----------------------------------------------------------------------

def amg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    for flag in ("--input", "--output", "--model-type", "--checkpoint"):
        parser.add_argument(flag, type=str, required=True)
    parser.add_argument("--device", type=str, default="cpu")
    parser.add_argument("--convert-to-rle", action="store_true")
    for flag, kind in (("points-per-side", int), ("points-per-batch", int), ("pred-iou-thresh", float),
                       ("stability-score-thresh", float), ("stability-score-offset", float), ("box-nms-thresh", float),
                       ("crop-n-layers", int), ("crop-nms-thresh", float), ("crop-overlap-ratio", float),
                       ("crop-n-points-downscale-factor", int), ("min-mask-region-area", int)):
        parser.add_argument(f"--{flag}", type=kind, default=None)
    return parser


AMG_KEYS = ("points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh", "stability_score_offset",
            "box_nms_thresh", "crop_n_layers", "crop_nms_thresh", "crop_overlap_ratio", "crop_n_points_downscale_factor",
            "min_mask_region_area")


def write_masks_to_folder(masks: list[dict[str, Any]], path: str) -> None:
    header = ("id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,predicted_iou,stability_score,"
              "crop_box_x0,crop_box_y0,crop_box_w,crop_box_h")
    rows = [header]
    for i, record in enumerate(masks):
        cv2.imwrite(os.path.join(path, f"{i}.png"), record["segmentation"] * 255)
        values = [i, record["area"], *record["bbox"], *record["point_coords"][0], record["predicted_iou"],
                  record["stability_score"], *record["crop_box"]]
        rows.append(",".join(str(v) for v in values))
    with open(os.path.join(path, "metadata.csv"), "w") as f:
        f.write("\n".join(rows))


def amg_main(args: argparse.Namespace) -> None:
    sam = sam_model_registry[args.model_type](checkpoint=args.checkpoint)
    _ = sam.to(device=args.device)
    output_mode = "coco_rle" if args.convert_to_rle else "binary_mask"
    amg_kwargs = {k: getattr(args, k) for k in AMG_KEYS if getattr(args, k) is not None}
    generator = SamAutomaticMaskGenerator(sam, output_mode=output_mode, **amg_kwargs)
    if os.path.isdir(args.input):
        targets = [os.path.join(args.input, f) for f in os.listdir(args.input) if not os.path.isdir(os.path.join(args.input, f))]
    else:
        targets = [args.input]
    os.makedirs(args.output, exist_ok=True)
    for target in targets:
        image = cv2.imread(target)
        if image is None:
            continue
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        masks = generator.generate(image)
        save_base = os.path.join(args.output, os.path.splitext(os.path.basename(target))[0])
        if output_mode == "binary_mask":
            os.makedirs(save_base, exist_ok=False)
            write_masks_to_folder(masks, save_base)
        else:
            with open(save_base + ".json", "w") as f:
                json.dump(masks, f)


def run_amg_script(golden: Path, case_name: str, photo: np.ndarray, tmp_path: Path, monkeypatch, *extra: str) -> dict:
    """Run the script on a folder holding the photo (and a file that is no image), with the case's
    arguments as command-line flags. The tiny golden SAM is registered under a registry key of its own,
    as a user would add a custom builder to the official dict."""
    case = json.loads((golden / case_name).read_text())
    monkeypatch.setitem(sam_model_registry, "tiny_sam",
                        lambda checkpoint=None: load_model(golden / "tiny_sam.json", checkpoint=checkpoint))
    images = tmp_path / "images"
    images.mkdir()
    write_bgr(images / "photo.png", photo)
    (images / "notes.txt").write_text("not an image: skipped")
    flags = [f"--{k.replace('_', '-')}={v!r}" for k, v in case["args"].items() if k in AMG_KEYS]
    argv = ["--input", str(images), "--output", str(tmp_path / "out"), "--model-type", "tiny_sam",
            "--checkpoint", str(golden / "tiny_sam.pth"), *flags, *extra]
    amg_main(amg_parser().parse_args(argv))
    return case


def assert_same_records(records: list[dict], expected: list[dict]) -> None:
    assert len(records) == len(expected) > 0
    for ours, theirs in zip(records, expected):
        for key in ("segmentation", "area", "bbox", "point_coords", "crop_box"):
            assert ours[key] == theirs[key], key
        assert ours["predicted_iou"] == pytest.approx(theirs["predicted_iou"], abs=1e-5)
        assert ours["stability_score"] == pytest.approx(theirs["stability_score"], abs=1e-4)


def test_amg_script_png_folder_matches_official(golden: Path, photo: np.ndarray, tmp_path: Path, monkeypatch) -> None:
    case = run_amg_script(golden, "sam_amg_pps8.json", photo, tmp_path, monkeypatch)
    folder = tmp_path / "out" / "photo"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["photo"]
    with open(folder / "metadata.csv") as f:
        rows = list(csv.DictReader(f))
    records = []
    for row in rows:
        mask = cv2.imread(str(folder / f"{row['id']}.png"), cv2.IMREAD_GRAYSCALE)
        assert set(np.unique(mask).tolist()) <= {0, 255}
        records.append({
            "segmentation": encode_rle(mask > 0),
            "area": int(row["area"]),
            "bbox": [int(row[f"bbox_{k}"]) for k in ("x0", "y0", "w", "h")],
            "point_coords": [[float(row["point_input_x"]), float(row["point_input_y"])]],
            "predicted_iou": float(row["predicted_iou"]),
            "stability_score": float(row["stability_score"]),
            "crop_box": [int(row[f"crop_box_{k}"]) for k in ("x0", "y0", "w", "h")],
        })
    assert_same_records(records, case["records"])


def test_amg_script_coco_rle_json_matches_official(golden: Path, photo: np.ndarray, tmp_path: Path, monkeypatch) -> None:
    # The crop case (sam_amg_pps6_crop1) runs in tests/test_everything.py; here the script's RLE path on pps8.
    case = run_amg_script(golden, "sam_amg_pps8.json", photo, tmp_path, monkeypatch, "--convert-to-rle")
    records = json.loads((tmp_path / "out" / "photo.json").read_text())
    assert_same_records(records, case["records"])
