"""ONNX export and the onnxruntime backend: parity of the golden tiny SAM's export with the official
outputs (golden files); on the tiny random SAM (no shared folder needed) the official decoder
signature at the model's geometry, agreement with the torch path, quantisation, the web demo, errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
import onnxruntime as ort  # noqa: E402

from segany import Predictor  # noqa: E402
from segany.cli import main  # noqa: E402
from segany.deploy.onnx import PromptDecoder, quantize_file  # noqa: E402
from segany.errors import BackendError, ExportError  # noqa: E402
from segany.predict.onnx_backend import OnnxRuntimeSam  # noqa: E402
from tiny_models import model_args, synthetic_image

LOGIT_TOL = 1e-3  # golden README tolerances (float32 reordering)
IOU_TOL = 1e-4
EMBED_TOL = 1e-4
IMAGE = synthetic_image(120, 160, seed=2)  # not square: the padding matters


def _export_cli(model: list[str], out: Path) -> Path:
    """The model exported through the CLI, as a user would."""
    assert main(["export", "onnx", *model, "--out", str(out), "--fold-preprocessing"]) == 0
    return out


@pytest.fixture(scope="module")
def export_dir(tiny_model_files, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random SAM (``tiny_random_sam``'s weights) exported once."""
    return _export_cli(model_args(tiny_model_files), tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="module")
def golden_export_dir(tiny_sam, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The golden tiny SAM's decoder and folded encoder (the files the parity tests read), exported once."""
    from segany.deploy.onnx import export_decoder, export_encoder

    out = tmp_path_factory.mktemp("onnx_golden")
    export_decoder(tiny_sam, out / "decoder.onnx")
    export_encoder(tiny_sam, out / "encoder_preprocess.onnx", fold_preprocessing=True)
    return out


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_decoder_has_the_official_signature(export_dir: Path, tiny_random_sam) -> None:
    """The official input and output names; the official shapes at the model's geometry
    ((1, 256, 64, 64) embedding and (1, 1, 256, 256) mask input for 1024 px models)."""
    decoder = _session(export_dir / "decoder.onnx")
    config = tiny_random_sam.config
    inputs = {i.name: i for i in decoder.get_inputs()}
    assert list(inputs) == ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size"]
    assert [o.name for o in decoder.get_outputs()] == ["masks", "iou_predictions", "low_res_masks"]
    assert all(i.type == "tensor(float)" for i in inputs.values())
    assert inputs["image_embeddings"].shape == [1, config.prompt_embed_dim, config.embedding_size, config.embedding_size]
    assert isinstance(inputs["point_coords"].shape[1], str)  # dynamic number of points
    assert inputs["mask_input"].shape == [1, 1, config.mask_input_size, config.mask_input_size]
    assert inputs["orig_im_size"].shape == [2]
    manifest = json.loads((export_dir / "segany_onnx.json").read_text())
    assert manifest["model"] == config.name
    assert set(manifest["files"]) == {"decoder", "decoder_low_res", "encoder", "encoder_preprocess"}


def _official_inputs(golden: Path, case: str) -> tuple[dict[str, np.ndarray], np.lib.npyio.NpzFile]:
    """The web demo's inputs for a golden case: box corners labelled 2 / 3, padding point without a box."""
    data = np.load(golden / f"{case}.npz")
    features = np.load(golden / "sam_embedding_photo.npz")["features"]
    coords, labels = [], []
    if "point_coords_transformed" in data:
        coords.append(data["point_coords_transformed"])
        labels.append(data["point_labels"].astype(np.float32))
    if "box_transformed" in data:
        coords.append(data["box_transformed"].reshape(2, 2))
        labels.append(np.array([2.0, 3.0], dtype=np.float32))
    else:
        coords.append(np.zeros((1, 2), dtype=np.float32))
        labels.append(np.array([-1.0], dtype=np.float32))
    has_mask = "mask_input" in data
    inputs = {
        "image_embeddings": features,
        "point_coords": np.concatenate(coords)[None].astype(np.float32),
        "point_labels": np.concatenate(labels)[None],
        "mask_input": (data["mask_input"][None] if has_mask else np.zeros((1, 1, 256, 256))).astype(np.float32),
        "has_mask_input": np.array([1.0 if has_mask else 0.0], dtype=np.float32),
        "orig_im_size": data["original_size"].astype(np.float32),
    }
    return inputs, data


@pytest.mark.parametrize("case", ["sam_photo_point_multimask", "sam_photo_box_only", "sam_photo_mask_input_followup"])
def test_decoder_matches_the_official_outputs(golden_export_dir: Path, golden: Path, case: str) -> None:
    inputs, data = _official_inputs(golden, case)
    masks, iou, low_res = _session(golden_export_dir / "decoder.onnx").run(None, inputs)
    chosen = slice(1, None) if bool(data["multimask_output"]) else slice(0, 1)
    assert np.abs(low_res[0, chosen] - data["low_res_logits"]).max() <= LOGIT_TOL
    assert np.abs(iou[0, chosen] - data["iou_predictions"]).max() <= IOU_TOL
    logits = masks[0, chosen]
    assert logits.shape == data["masks"].shape
    differ = (logits > 0) != data["masks"]
    assert not (differ & (np.abs(logits) > LOGIT_TOL)).any()


def test_single_mask_selection_follows_the_official_rule(tiny_random_sam) -> None:
    wrapper = PromptDecoder(tiny_random_sam, return_single_mask=True)
    scores = torch.tensor([[0.1, 0.5, 0.9, 0.2]])
    masks = torch.arange(4.0).reshape(1, 4, 1, 1).expand(1, 4, 2, 2)
    one, score = wrapper._select(masks, scores, num_points=2)  # one point + padding: best multimask
    assert score.item() == pytest.approx(0.9) and one[0, 0, 0, 0].item() == 2.0
    one, score = wrapper._select(masks, scores, num_points=3)  # several points: the single-mask token
    assert score.item() == pytest.approx(0.1) and one[0, 0, 0, 0].item() == 0.0


@pytest.fixture(scope="module")
def predictors(tiny_random_sam, export_dir: Path) -> tuple[Predictor, Predictor]:
    torch_predictor = Predictor(tiny_random_sam)
    onnx_predictor = Predictor(tiny_random_sam, backend="onnxruntime", onnx_dir=export_dir)
    torch_predictor.set_image(IMAGE)
    onnx_predictor.set_image(IMAGE)
    return torch_predictor, onnx_predictor


def test_onnxruntime_backend_matches_torch(predictors: tuple[Predictor, Predictor]) -> None:
    reference, onnx = predictors
    assert np.abs(onnx.get_image_embedding().numpy() - reference.get_image_embedding().numpy()).max() <= EMBED_TOL
    prompt = {"point_coords": np.array([[50.0, 40.0], [100.0, 90.0]]), "point_labels": np.array([1, 0]),
              "box": np.array([20.0, 15.0, 130.0, 100.0])}
    masks, iou, low_res = onnx.predict(**prompt, return_logits=True)
    ref_masks, ref_iou, ref_low_res = reference.predict(**prompt, return_logits=True)
    assert masks.shape == ref_masks.shape == (3, *IMAGE.shape[:2])
    assert np.abs(low_res - ref_low_res).max() <= LOGIT_TOL and np.abs(iou - ref_iou).max() <= IOU_TOL


def test_encoder_with_folded_preprocessing(golden_export_dir: Path, golden: Path) -> None:
    """The resized uint8 image in, the official embedding out (normalisation and padding in the graph)."""
    data = np.load(golden / "sam_embedding_small.npz")  # 715x1024 resized input: padding matters
    (features,) = _session(golden_export_dir / "encoder_preprocess.onnx").run(None, {"image": data["input_image_resized"]})
    assert features.shape == (1, 256, 64, 64)
    assert np.abs(features[:, :, ::4, ::4] - data["features_stride4"]).max() <= EMBED_TOL


def test_encoder_with_folded_preprocessing_matches_torch(export_dir: Path, predictors) -> None:
    """The folded graph takes the resized uint8 image and gives the torch predictor's embedding."""
    reference, _ = predictors
    resized = reference.transform.apply_image(IMAGE)
    (features,) = _session(export_dir / "encoder_preprocess.onnx").run(None, {"image": resized})
    assert np.abs(features - reference.get_image_embedding().numpy()).max() <= EMBED_TOL


def test_onnxruntime_backend_batches(predictors: tuple[Predictor, Predictor]) -> None:
    reference, onnx = predictors
    boxes = torch.tensor([[10.0, 12.0, 80.0, 70.0], [40.0, 30.0, 150.0, 110.0], [0.0, 0.0, 159.0, 119.0],
                          [60.0, 50.0, 90.0, 80.0]])
    boxes = reference.transform.apply_boxes_torch(boxes, reference.original_size)
    coords = boxes[:, None, :2] + 5.0  # one foreground point inside each box too
    labels = torch.ones(len(boxes), 1, dtype=torch.int64)
    masks, iou, low_res = onnx.predict_torch(coords, labels, boxes, multimask_output=False)
    ref_masks, ref_iou, ref_low_res = reference.predict_torch(coords, labels, boxes, multimask_output=False)
    assert masks.shape == ref_masks.shape == (4, 1, *IMAGE.shape[:2]) and masks.dtype == torch.bool
    assert (low_res - ref_low_res).abs().max() <= LOGIT_TOL and (iou - ref_iou).abs().max() <= IOU_TOL


def test_quantized_decoder_runs_close_to_float(random_sam_1024, tmp_path: Path) -> None:
    """SAM's decoder at its real size (4 M parameters): int8 weights halve the file, outputs stay close."""
    from segany.deploy.onnx import export_decoder

    float_path = export_decoder(random_sam_1024, tmp_path / "float.onnx")
    path = tmp_path / "decoder.onnx"
    path.write_bytes(float_path.read_bytes())
    quantize_file(path)
    import onnx

    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "DynamicQuantizeLinear" in ops and path.stat().st_size < float_path.stat().st_size / 2
    predictor = Predictor(random_sam_1024)
    predictor.set_image(IMAGE)
    inputs = _web_demo_feeds(predictor.get_image_embedding().numpy(), [(50.0, 40.0, 1)], *IMAGE.shape[:2],
                             random_sam_1024.image_size)
    _, iou, low_res = _session(path).run(None, inputs)
    _, ref_iou, ref_low_res = _session(float_path).run(None, inputs)
    agree = ((low_res > 0) == (ref_low_res > 0)).mean()
    assert agree >= 0.9 and np.abs(iou - ref_iou).max() <= 0.05


def test_backend_refuses_foreign_or_missing_exports(export_dir: Path, tiny_random_sam, tiny_random_mobilesam,
                                                    tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="not a segany ONNX export"):
        OnnxRuntimeSam(tmp_path)
    with pytest.raises(BackendError, match=f"of model '{tiny_random_sam.config.name}', not '{tiny_random_mobilesam.config.name}'"):
        Predictor(tiny_random_mobilesam, backend="onnxruntime", onnx_dir=export_dir)
    with pytest.raises(BackendError, match="onnxruntime"):
        Predictor(tiny_random_mobilesam, backend="onnxruntime", dtype=torch.bfloat16)


def test_onnxruntime_decoder_behind_a_torch_encoder(tiny_random_sam, export_dir: Path, predictors) -> None:
    reference, _ = predictors
    hybrid = Predictor(tiny_random_sam, dtype=torch.bfloat16, decoder_backend="onnxruntime", onnx_dir=export_dir)
    assert hybrid.runtime.onnx.encoder is None  # the encoder stays in torch (bf16)
    hybrid.set_image(IMAGE)
    features = hybrid.get_image_embedding()
    assert 0 < (features - reference.get_image_embedding()).abs().max() < 0.1
    fp32_decoder = Predictor(tiny_random_sam)
    fp32_decoder.features, fp32_decoder.is_image_set = features, True
    fp32_decoder.original_size, fp32_decoder.input_size = hybrid.original_size, hybrid.input_size
    prompt = {"point_coords": np.array([[80.0, 60.0]]), "point_labels": np.array([1])}
    _, iou, low_res = hybrid.predict(**prompt)
    _, ref_iou, ref_low_res = fp32_decoder.predict(**prompt)
    assert np.abs(low_res - ref_low_res).max() <= LOGIT_TOL and np.abs(iou - ref_iou).max() <= IOU_TOL


def test_decoder_only_export_cannot_encode(tiny_random_sam, tmp_path: Path) -> None:
    assert main(["export", "onnx", "--model", "vit_t", "--checkpoint", "missing.pth", "--out", str(tmp_path)]) == 2
    from segany.deploy.onnx import export_onnx

    export_onnx(tiny_random_sam, tmp_path, encoder=False)
    with pytest.raises(ExportError, match="encoder.onnx"):
        Predictor(tiny_random_sam, backend="onnxruntime", onnx_dir=tmp_path)
    Predictor(tiny_random_sam, decoder_backend="onnxruntime", onnx_dir=tmp_path)  # the decoder alone is enough


def test_classic_engine_cannot_be_exported(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from segany import load_model
    from segany.deploy.onnx import export_onnx
    from segany.errors import UnsupportedOperationError

    assert main(["export", "onnx", "--model", "classic", "--out", str(tmp_path / "out")]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "classic engine has no network to export" in message and "--checkpoint" in message
    with pytest.raises(UnsupportedOperationError, match="no network"):
        export_onnx(load_model("classic"), tmp_path / "lib")
    assert not (tmp_path / "lib").exists()


def test_offline_export_does_not_fall_back_to_classic(tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture) -> None:
    """Without cached weights the default model's export says where to get them (no classic fallback)."""
    from segany import build
    from segany.errors import WeightsUnavailableError

    def offline(name: str, progress: bool = True) -> Path:
        raise WeightsUnavailableError(f"weights for {name!r} are not cached: pass --checkpoint PATH")

    monkeypatch.setattr(build, "ensure_weights", offline)
    assert main(["export", "onnx", "--out", str(tmp_path / "out")]) == 2
    message = capsys.readouterr().err
    assert "not cached" in message and "--checkpoint" in message and "classic engine" not in message


def _web_demo_feeds(embedding: np.ndarray, clicks: list[tuple[float, float, int]], height: int, width: int,
                    image_size: int) -> dict:
    """The official web demo's decoder feeds (demo/src/components/helpers/onnxModelAPI.tsx,
    scaleHelper.tsx): clicks scaled by image_size / max(h, w) (the demo's image_size is 1024), a
    (0, 0) point labelled -1 appended, a zero mask with has_mask_input 0, and orig_im_size (h, w)."""
    sam_scale = image_size / max(height, width)
    mask_size = 4 * embedding.shape[-1]
    n = len(clicks)
    coords = np.zeros(2 * (n + 1), dtype=np.float32)
    labels = np.zeros(n + 1, dtype=np.float32)
    for i, (x, y, click_type) in enumerate(clicks):
        coords[2 * i], coords[2 * i + 1], labels[i] = x * sam_scale, y * sam_scale, click_type
    labels[n] = -1.0
    return {
        "image_embeddings": embedding,
        "point_coords": coords.reshape(1, n + 1, 2),
        "point_labels": labels.reshape(1, n + 1),
        "orig_im_size": np.array([height, width], dtype=np.float32),
        "mask_input": np.zeros((1, 1, mask_size, mask_size), dtype=np.float32),
        "has_mask_input": np.array([0], dtype=np.float32),
    }


def _assert_same_mask(logits: np.ndarray, mask: np.ndarray) -> None:
    assert logits.shape == mask.shape
    differ = (logits > 0) != mask
    assert not (differ & (np.abs(logits) > LOGIT_TOL)).any()


@pytest.fixture(scope="module")
def single_mask_dir(tiny_model_files, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx_single")
    assert main(["export", "onnx", *model_args(tiny_model_files), "--out", str(out), "--no-encoder",
                 "--return-single-mask"]) == 0
    return out


@pytest.mark.parametrize("clicks", [[(80.0, 60.0, 1)], [(80.0, 60.0, 1), (25.0, 100.0, 0)]])
def test_web_demo_draws_the_predictors_mask(clicks, predictors, export_dir: Path, single_mask_dir: Path) -> None:
    """README: the official web demo draws channel 0 of ``masks``; with ``--return-single-mask``
    that is the mask the predictor recommends (best-IoU multimask for one click, the single-mask
    output for several); the default export keeps all four, channel 0 the single-mask output."""
    reference = predictors[0]
    height, width = reference.original_size
    feeds = _web_demo_feeds(reference.get_image_embedding().numpy(), clicks, height, width, reference.model.image_size)
    coords = np.array([c[:2] for c in clicks])
    labels = np.array([c[2] for c in clicks])
    multi_masks, multi_iou, _ = reference.predict(coords, labels, multimask_output=True)
    single_mask, single_iou, _ = reference.predict(coords, labels, multimask_output=False)
    best = (multi_masks[np.argmax(multi_iou)], multi_iou.max()) if len(clicks) == 1 else (single_mask[0], single_iou[0])

    demo = _session(single_mask_dir / "decoder.onnx")
    masks, iou, _ = demo.run(None, feeds)
    assert masks.shape == (1, 1, height, width)
    _assert_same_mask(masks[0, 0], best[0])
    assert abs(iou[0, 0] - best[1]) <= IOU_TOL

    default = _session(export_dir / "decoder.onnx")
    masks, iou, _ = default.run(None, feeds)
    assert masks.shape == (1, 4, height, width)
    _assert_same_mask(masks[0, 0], single_mask[0])
