"""ONNX export of SAM 2.1 (encoder.onnx + decoder.onnx + decoder_low_res.onnx) run with onnxruntime
against the torch ``Sam2Predictor``, and ``Sam2Predictor(backend="onnxruntime")``: a tiny random SAM 2
(no shared folder needed) and the golden tiny SAM 2.1 through the CLI."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
import onnxruntime as ort  # noqa: E402

import segany  # noqa: E402
from segany.cli import main  # noqa: E402
from segany.deploy import onnx as deploy_onnx  # noqa: E402
from segany.deploy.onnx import export_onnx  # noqa: E402
from segany.errors import BackendError, ExportError, UnsupportedOperationError  # noqa: E402
from segany.models.sam2 import Sam2, build_sam2  # noqa: E402
from segany.predict import sam2_predictor, sam2_transforms  # noqa: E402
from segany.predict.sam2_predictor import Sam2Predictor  # noqa: E402
from test_sam2_predictor import IMG_CASE_NAMES, LOW_RES_TOL, TINY_YAML, _prompts, tiny_random_sam2  # noqa: E402
from test_sam2_predictor import IOU_TOL as GOLDEN_IOU_TOL  # noqa: E402

LOGIT_TOL = 1e-3  # as tests/test_onnx.py: float32 reordering
IOU_TOL = 1e-4
EMBED_TOL = 1e-4
FEATURE_NAMES = ("image_embed", "high_res_feats_0", "high_res_feats_1")  # encoder.onnx outputs, decoder inputs
IMAGE = np.random.default_rng(3).integers(0, 256, (50, 70, 3), dtype=np.uint8)  # not square: no padding to crop


@pytest.fixture(scope="module")
def random_sam2() -> Sam2:
    return tiny_random_sam2()


@pytest.fixture(scope="module")
def export_dir(random_sam2: Sam2, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sam2_onnx")
    export_onnx(random_sam2, out)
    return out


@pytest.fixture(scope="module")
def single_export_dir(random_sam2: Sam2, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sam2_onnx_single")
    export_onnx(random_sam2, out, encoder=False, return_single_mask=True)
    return out


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _encode(folder: Path, model: Sam2, image: np.ndarray) -> dict[str, np.ndarray]:
    """encoder.onnx on the predictor's preprocessed image."""
    tensor = sam2_transforms.preprocess_image(image, model.image_size)[None].numpy()
    names = [o.name for o in _session(folder / "encoder.onnx").get_outputs()]
    return dict(zip(names, _session(folder / "encoder.onnx").run(None, {"input_image": tensor})))


def _to_model_frame(xy: np.ndarray, image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    return (np.asarray(xy, np.float32).reshape(-1, 2) / np.array([w, h], np.float32) * size).astype(np.float32)


def _decoder_inputs(features: dict[str, np.ndarray], model: Sam2, image: np.ndarray, points=None, labels=None,
                    boxes=None, mask_input=None) -> dict[str, np.ndarray]:
    """The decoder's inputs for the predictor's prompts: box corners (labels 2, 3) before the clicks."""
    size, low = model.image_size, 4 * model.config.image_embedding_size
    batch = 1 if boxes is None else len(boxes)
    coords, kinds = [], []
    if boxes is not None:
        coords.append(_to_model_frame(boxes, image, size).reshape(batch, 2, 2))
        kinds.append(np.tile(np.array([[2, 3]], np.float32), (batch, 1)))
    if points is not None:
        coords.append(np.tile(_to_model_frame(points, image, size)[None], (batch, 1, 1)))
        kinds.append(np.tile(np.asarray(labels, np.float32)[None], (batch, 1)))
    has_mask = mask_input is not None
    return {
        **features,
        "point_coords": np.concatenate(coords, axis=1),
        "point_labels": np.concatenate(kinds, axis=1),
        "mask_input": (mask_input if has_mask else np.zeros((1, 1, low, low))).astype(np.float32).reshape(-1, 1, low, low),
        "has_mask_input": np.array([float(has_mask)], np.float32),
        "orig_im_size": np.array(image.shape[:2], np.float32),
    }


def _torch_object_scores(predictor: Sam2Predictor, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Object-score logits of the torch path (the prompt encoder's own forward, not the export's branch-free one)."""
    model = predictor.model
    labels = torch.as_tensor(inputs["point_labels"]).int()
    points = (torch.as_tensor(inputs["point_coords"]), labels)
    mask = torch.as_tensor(inputs["mask_input"]) if inputs["has_mask_input"][0] else None
    with torch.inference_mode():
        sparse, dense = model.sam_prompt_encoder(points=points, boxes=None, masks=mask)
        feats = predictor.image_features().maps
        _, _, _, scores = model.sam_mask_decoder(feats[0], model.sam_prompt_encoder.get_dense_pe(), sparse, dense,
                                                 multimask_output=True, repeat_image=True,
                                                 high_res_features=list(feats[1:]))
    return scores.numpy()


def _check(folder: Path, predictor: Sam2Predictor, inputs: dict[str, np.ndarray], prompts: dict,
           multimask: bool) -> None:
    """decoder.onnx's outputs equal the predictor's (logits, IoU, clamped low-res, object score)."""
    masks, iou, low_res, scores = _session(folder / "decoder.onnx").run(None, inputs)
    logits, ref_iou, ref_low = predictor.predict(**prompts, multimask_output=multimask, return_logits=True)
    if logits.ndim == 3:  # one prompt set: the predictor drops the batch axis
        logits, ref_iou, ref_low = logits[None], ref_iou[None], ref_low[None]
    assert masks.shape == logits.shape and low_res.shape == ref_low.shape and iou.shape == ref_iou.shape
    np.testing.assert_allclose(masks, logits, rtol=0, atol=LOGIT_TOL)
    np.testing.assert_allclose(low_res, ref_low, rtol=0, atol=LOGIT_TOL)
    np.testing.assert_allclose(iou, ref_iou, rtol=0, atol=IOU_TOL)
    np.testing.assert_allclose(scores, _torch_object_scores(predictor, inputs), rtol=0, atol=LOGIT_TOL)


@pytest.fixture(scope="module")
def predictor(random_sam2: Sam2) -> Sam2Predictor:
    predictor = Sam2Predictor(random_sam2)
    predictor.set_image(IMAGE)
    return predictor


def test_signature_and_manifest(export_dir: Path, random_sam2: Sam2) -> None:
    encoder, decoder = _session(export_dir / "encoder.onnx"), _session(export_dir / "decoder.onnx")
    c, g = random_sam2.hidden_dim, random_sam2.config.image_embedding_size
    assert [(i.name, i.shape) for i in encoder.get_inputs()] == [("input_image", [1, 3, 128, 128])]
    assert [(o.name, o.shape) for o in encoder.get_outputs()] == [
        ("image_embed", [1, c, g, g]), ("high_res_feats_0", [1, c // 8, 4 * g, 4 * g]),
        ("high_res_feats_1", [1, c // 4, 2 * g, 2 * g])]
    assert [i.name for i in decoder.get_inputs()] == [
        "image_embed", "high_res_feats_0", "high_res_feats_1", "point_coords", "point_labels", "mask_input",
        "has_mask_input", "orig_im_size"]
    assert [o.name for o in decoder.get_outputs()] == ["masks", "iou_predictions", "low_res_masks", "object_score_logits"]
    inputs = {i.name: i for i in decoder.get_inputs()}
    assert all(isinstance(d, str) for d in inputs["point_coords"].shape[:2])  # batch and points dynamic
    manifest = json.loads((export_dir / "segany_onnx.json").read_text())
    assert manifest["family"] == "sam2" and manifest["model"] == random_sam2.config.name
    assert set(manifest["files"]) == {"encoder", "decoder", "decoder_low_res"}
    low_res = _session(export_dir / "decoder_low_res.onnx")
    assert [i.name for i in low_res.get_inputs()] == [i.name for i in decoder.get_inputs()][:-1]
    assert [o.name for o in low_res.get_outputs()] == ["iou_predictions", "low_res_masks"]
    # deploy sits below predict: its copies of the predictor's constants must agree
    assert deploy_onnx.SAM2_LOW_RES_CLAMP == sam2_predictor.LOW_RES_CLAMP
    assert (deploy_onnx.SAM2_PIXEL_MEAN, deploy_onnx.SAM2_PIXEL_STD) == (sam2_transforms.SAM2_PIXEL_MEAN,
                                                                         sam2_transforms.SAM2_PIXEL_STD)


def test_encoder_matches_set_image(export_dir: Path, random_sam2: Sam2, predictor: Sam2Predictor) -> None:
    ours = _encode(export_dir, random_sam2, IMAGE)
    maps = predictor.image_features().maps
    for name, ref in zip(FEATURE_NAMES, maps):
        np.testing.assert_allclose(ours[name], ref.numpy(), rtol=0, atol=EMBED_TOL)


PROMPTS = {
    "point": {"points": [[10.0, 20.0]], "labels": [1]},
    "points_fg_bg": {"points": [[10.0, 20.0], [60.0, 5.0]], "labels": [1, 0]},
    "box": {"boxes": [[1.0, 2.0, 30.0, 40.0]]},
    "box_point": {"boxes": [[1.0, 2.0, 30.0, 40.0]], "points": [[12.0, 30.0]], "labels": [0]},
    "two_boxes": {"boxes": [[1.0, 2.0, 30.0, 40.0], [0.0, 0.0, 69.0, 49.0]]},
}


def _predictor_prompts(spec: dict) -> dict:
    out = {}
    if "points" in spec:
        out["point_coords"], out["point_labels"] = np.array(spec["points"]), np.array(spec["labels"])
    if "boxes" in spec:
        boxes = np.array(spec["boxes"])
        out["box"] = boxes[0] if len(boxes) == 1 else boxes
    return out


@pytest.mark.parametrize("case", list(PROMPTS))
def test_decoder_matches_predictor(export_dir: Path, single_export_dir: Path, random_sam2: Sam2,
                                   predictor: Sam2Predictor, case: str) -> None:
    """Multimask export = predict(multimask_output=True); return_single_mask = multimask_output=False."""
    spec = PROMPTS[case]
    features = _encode(export_dir, random_sam2, IMAGE)
    inputs = _decoder_inputs(features, random_sam2, IMAGE, spec.get("points"), spec.get("labels"), spec.get("boxes"))
    _check(export_dir, predictor, inputs, _predictor_prompts(spec), multimask=True)
    _check(single_export_dir, predictor, inputs, _predictor_prompts(spec), multimask=False)


def test_mask_input_follow_up(export_dir: Path, random_sam2: Sam2, predictor: Sam2Predictor) -> None:
    """A previous call's best low-res logits as mask_input, as the official notebook does."""
    _, iou, low = predictor.predict(np.array([[10.0, 20.0]]), np.array([1]))
    mask = low[np.argmax(iou)][None]
    features = _encode(export_dir, random_sam2, IMAGE)
    inputs = _decoder_inputs(features, random_sam2, IMAGE, [[40.0, 25.0]], [1], mask_input=mask)
    _check(export_dir, predictor, inputs, {"point_coords": np.array([[40.0, 25.0]]), "point_labels": np.array([1]),
                                           "mask_input": mask}, multimask=True)


def test_single_mask_export_matches_the_stability_fallback(random_sam2: Sam2, tmp_path: Path) -> None:
    """The dynamic multimask's fallback (token 0 unstable: the single mask is the best of tokens 1-3),
    forced with a stability threshold of 1 instead of depending on the random weights: the
    return_single_mask export equals predict(multimask_output=False) there too."""
    model = build_sam2(random_sam2.config)
    model.load_state_dict(random_sam2.state_dict())
    model.eval().sam_mask_decoder.dynamic_multimask_stability_thresh = 1.0
    export_onnx(model, tmp_path, encoder=False, return_single_mask=True)
    predictor = Sam2Predictor(model)
    predictor.set_image(IMAGE)
    features = {name: ref.numpy() for name, ref in zip(FEATURE_NAMES, predictor.image_features().maps)}
    fallbacks = 0
    for spec in PROMPTS.values():
        prompts = _predictor_prompts(spec)
        _, _, single = predictor.predict(**prompts, multimask_output=False)  # low-res logits
        _, _, multi = predictor.predict(**prompts, multimask_output=True)
        single, multi = single.reshape(-1, 1, *single.shape[-2:]), multi.reshape(-1, 3, *multi.shape[-2:])
        # the single path decodes one token less: its logits may differ from the same token's in the last bits
        fallbacks += int(any(np.allclose(single[0, 0], multi[0, k], rtol=0, atol=1e-5) for k in range(3)))
        inputs = _decoder_inputs(features, model, IMAGE, spec.get("points"), spec.get("labels"), spec.get("boxes"))
        _check(tmp_path, predictor, inputs, prompts, multimask=False)
    assert fallbacks == len(PROMPTS)


def test_cli_exports_the_golden_sam2(sam2_dir: Path, tiny_sam2_pt: Path, golden_sam2: Sam2,
                                    sam2_images: dict[str, np.ndarray], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """``segany export onnx --model YAML --checkpoint PT`` on the golden tiny SAM 2.1 (1024 px): its
    decoder on the golden photo equals the predictor, which has golden parity (tests/test_sam2_predictor.py),
    and so does ``segany.Predictor(model, backend="onnxruntime", onnx_dir=...)`` on the export."""
    out = tmp_path / "onnx"
    model_args = ["--model", str(sam2_dir / TINY_YAML), "--checkpoint", str(tiny_sam2_pt)]
    assert main(["export", "onnx", *model_args, "--out", str(out)]) == 0
    model, photo = golden_sam2, sam2_images["photo"]
    predictor = Sam2Predictor(model)
    predictor.set_image(photo)
    features = _encode(out, model, photo)
    for name, ref in zip(FEATURE_NAMES, predictor.image_features().maps):
        np.testing.assert_allclose(features[name], ref.numpy(), rtol=0, atol=EMBED_TOL)
    h, w = photo.shape[:2]
    spec = {"boxes": [[w * 0.2, h * 0.2, w * 0.7, h * 0.8]], "points": [[w * 0.4, h * 0.5]], "labels": [1]}
    inputs = _decoder_inputs(features, model, photo, spec["points"], spec["labels"], spec["boxes"])
    _check(out, predictor, inputs, _predictor_prompts(spec), multimask=True)
    onnx = segany.Predictor(model, backend="onnxruntime", onnx_dir=out)
    versus_torch = _backend_differences(onnx, predictor, photo, _predictor_prompts(spec))
    worst = {"low_res": 0.0, "iou": 0.0}
    for name in IMG_CASE_NAMES:  # the official outputs on the photo, through the onnxruntime backend
        case = np.load(sam2_dir / f"{name}.npz")
        if str(case["image_name"]) != "photo":
            continue
        _, iou, low = onnx.predict(**_prompts(case), multimask_output=bool(case["multimask_output"]),
                                   normalize_coords=bool(case["normalize_coords"]))
        np.testing.assert_allclose(low, case["low_res_masks"], rtol=0, atol=LOW_RES_TOL)
        np.testing.assert_allclose(iou, case["iou_predictions"], rtol=0, atol=GOLDEN_IOU_TOL)
        worst = {"low_res": max(worst["low_res"], float(np.abs(low - case["low_res_masks"]).max())),
                 "iou": max(worst["iou"], float(np.abs(iou - case["iou_predictions"]).max()))}
    with capsys.disabled():  # the figures for the record (pytest -s)
        print(f"\ngolden SAM 2.1, onnxruntime backend: vs torch {versus_torch}; vs the official photo cases {worst}")
    assert main(["export", "onnx", *model_args, "--out", str(tmp_path / "folded"), "--fold-preprocessing"]) == 2
    assert "fold_preprocessing is not available for SAM 2" in capsys.readouterr().err


def test_quantized_decoder_runs_close_to_float(export_dir: Path, random_sam2: Sam2, tmp_path: Path) -> None:
    """--quantize: int8 weights (DynamicQuantizeLinear), a smaller file, outputs close to the float graph."""
    import onnx

    manifest = export_onnx(random_sam2, tmp_path, encoder=False, quantize=True)
    path = tmp_path / "decoder.onnx"
    assert manifest["quantized"] and "DynamicQuantizeLinear" in {n.op_type for n in onnx.load(str(path)).graph.node}
    assert path.stat().st_size < (export_dir / "decoder.onnx").stat().st_size / 2
    inputs = _decoder_inputs(_encode(export_dir, random_sam2, IMAGE), random_sam2, IMAGE, [[10.0, 20.0]], [1])
    _, iou, low_res, _ = _session(path).run(None, inputs)
    _, ref_iou, ref_low_res, _ = _session(export_dir / "decoder.onnx").run(None, inputs)
    assert ((low_res > 0) == (ref_low_res > 0)).mean() >= 0.9 and np.abs(iou - ref_iou).max() <= 0.05


def test_fold_preprocessing_is_a_typed_error(random_sam2: Sam2, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedOperationError, match="preprocess_image"):
        export_onnx(random_sam2, tmp_path, fold_preprocessing=True)
    assert not (tmp_path / "segany_onnx.json").exists()


# --- Sam2Predictor(backend="onnxruntime") -----------------------------------------------------------


def _backend_differences(onnx: Sam2Predictor, reference: Sam2Predictor, image: np.ndarray, prompts: dict,
                         ) -> dict[str, float]:
    """Max differences of the onnxruntime predictor from the torch one on ``image`` (both multimask
    settings); fails outside the tolerances. Masks may differ only where |logit| <= LOGIT_TOL."""
    onnx.set_image(image)
    worst = {"features": max(float((a - b).abs().max()) for a, b in zip(onnx.image_features().maps,
                                                                        reference.image_features().maps))}
    assert worst["features"] <= EMBED_TOL
    for multimask in (True, False):
        logits, iou, low = onnx.predict(**prompts, multimask_output=multimask, return_logits=True)
        ref_logits, ref_iou, ref_low = reference.predict(**prompts, multimask_output=multimask, return_logits=True)
        assert logits.shape == ref_logits.shape and iou.shape == ref_iou.shape and low.shape == ref_low.shape
        differ = (logits > 0) != (ref_logits > 0)
        assert not (differ & (np.abs(ref_logits) > LOGIT_TOL)).any()
        for key, value in (("logits", np.abs(logits - ref_logits).max()), ("iou", np.abs(iou - ref_iou).max()),
                           ("low_res", np.abs(low - ref_low).max())):
            worst[key] = max(worst.get(key, 0.0), float(value))
    assert worst["logits"] <= LOGIT_TOL and worst["low_res"] <= LOGIT_TOL and worst["iou"] <= IOU_TOL
    return worst


@pytest.fixture(scope="module")
def onnx_predictor(random_sam2: Sam2, export_dir: Path) -> Sam2Predictor:
    predictor = segany.Predictor(random_sam2, backend="onnxruntime", onnx_dir=export_dir)
    assert isinstance(predictor, Sam2Predictor) and predictor.backend == "onnxruntime"
    return predictor


@pytest.mark.parametrize("case", list(PROMPTS))
def test_onnxruntime_backend_matches_torch(onnx_predictor: Sam2Predictor, predictor: Sam2Predictor,
                                           case: str) -> None:
    """Every prompt kind, multimask and single (the dynamic fallback in torch on the graph's four tokens)."""
    diffs = _backend_differences(onnx_predictor, predictor, IMAGE, _predictor_prompts(PROMPTS[case]))
    print(f"{case}: {diffs}")


def test_onnxruntime_backend_mask_input_batch_and_generator(onnx_predictor: Sam2Predictor, predictor: Sam2Predictor,
                                                            random_sam2: Sam2) -> None:
    onnx_predictor.set_image(IMAGE)
    _, iou, low = predictor.predict(np.array([[10.0, 20.0]]), np.array([1]))
    follow_up = {"point_coords": np.array([[40.0, 25.0]]), "point_labels": np.array([1]), "mask_input": low[np.argmax(iou)][None]}
    _backend_differences(onnx_predictor, predictor, IMAGE, follow_up)
    images = [IMAGE, IMAGE[:30, :40].copy()]
    onnx_predictor.set_image_batch(images)
    reference = Sam2Predictor(random_sam2)
    reference.set_image_batch(images)
    points = [np.array([[10.0, 20.0]]), np.array([[5.0, 5.0]])]
    labels = [np.array([1]), np.array([1])]
    for ours, ref in zip(onnx_predictor.predict_batch(points, labels)[2], reference.predict_batch(points, labels)[2]):
        np.testing.assert_allclose(ours, ref, rtol=0, atol=LOGIT_TOL)
    from segany.amg.sam2_generator import Sam2MaskGenerator

    options = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
    ours = Sam2MaskGenerator(onnx_predictor, **options).generate(IMAGE)
    ref = Sam2MaskGenerator(Sam2Predictor(random_sam2), **options).generate(IMAGE)
    assert len(ours) == len(ref) == 48
    assert max(abs(a["predicted_iou"] - b["predicted_iou"]) for a, b in zip(ours, ref)) <= IOU_TOL


def test_onnxruntime_backend_exports_on_the_fly(random_sam2: Sam2, predictor: Sam2Predictor) -> None:
    _backend_differences(segany.Predictor(random_sam2, backend="onnxruntime"), predictor, IMAGE,
                         _predictor_prompts(PROMPTS["box_point"]))


def test_onnxruntime_backend_refuses_bad_options_and_foreign_exports(random_sam2: Sam2, export_dir: Path,
                                                                     single_export_dir: Path, tmp_path: Path,
                                                                     tiny_random_sam) -> None:
    with pytest.raises(BackendError, match="backend must be one of torch, onnxruntime"):
        Sam2Predictor(random_sam2, backend="tensorrt")
    with pytest.raises(BackendError, match="float32"):
        Sam2Predictor(random_sam2, backend="onnxruntime", dtype="bf16")
    with pytest.raises(BackendError, match="onnx_dir is only used"):
        Sam2Predictor(random_sam2, onnx_dir=export_dir)
    with pytest.raises(ExportError, match="encoder.onnx"):  # exported with encoder=False
        Sam2Predictor(random_sam2, backend="onnxruntime", onnx_dir=single_export_dir)
    with pytest.raises(ExportError, match="not a segany ONNX export"):
        Sam2Predictor(random_sam2, backend="onnxruntime", onnx_dir=tmp_path)
    older = tmp_path / "older"  # an export made before decoder_low_res.onnx existed
    older.mkdir()
    manifest = json.loads((export_dir / "segany_onnx.json").read_text())
    del manifest["files"]["decoder_low_res"]
    (older / "segany_onnx.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="has no decoder_low_res.onnx: export it with `segany export onnx`"):
        Sam2Predictor(random_sam2, backend="onnxruntime", onnx_dir=older)
    with pytest.raises(ExportError, match="'sam2' export; this model is of the 'sam' family"):
        segany.Predictor(tiny_random_sam, backend="onnxruntime", onnx_dir=export_dir)
    sam1_dir = tmp_path / "sam1"
    export_onnx(tiny_random_sam, sam1_dir, encoder=False)
    with pytest.raises(ExportError, match="'sam' export; this model is of the 'sam2' family"):
        Sam2Predictor(random_sam2, backend="onnxruntime", onnx_dir=sam1_dir)
    other = dataclasses.replace(random_sam2.config, name="other_sam2")
    with pytest.raises(BackendError, match="of model 'tiny_random_sam2', not 'other_sam2'"):
        Sam2Predictor(build_sam2(other), backend="onnxruntime", onnx_dir=export_dir)
