"""SAM 2.1 end to end through every command that takes a model: ``segany segment``, ``everything``,
``serve`` (the FastAPI app), ``eval`` and ``export onnx`` with ``--model CONFIG.yaml --checkpoint
PT``. A seeded random tiny SAM 2.1 written as the official YAML + checkpoint runs them without the
shared folder; the golden tiny SAM 2.1 checkpoint runs them where ``SEGANY_SHARED`` has it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import segany
from segany.cli import main
from segany.engine import ImageFeatures
from segany.masks import decode_rle
from segany.models.sam2 import Sam2
from segany.predict.sam2_predictor import Sam2Predictor
from tiny_models import model_args, synthetic_image

IMAGE = synthetic_image(50, 70, seed=4)  # not square: SAM 2 resizes without keeping the aspect ratio
EVERYTHING = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


@pytest.fixture(scope="module")
def files(tiny_sam2_files: tuple[Path, Path]) -> list[str]:
    return model_args(tiny_sam2_files)


@pytest.fixture(scope="module")
def model(tiny_sam2_files: tuple[Path, Path]) -> Sam2:
    config, checkpoint = tiny_sam2_files
    loaded = segany.load_model(config, checkpoint=checkpoint)
    assert isinstance(loaded, Sam2) and loaded.image_size == 128 and loaded.config.name == "tiny_random_sam2"
    return loaded


@pytest.fixture(scope="module")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "scene.png"
    Image.fromarray(IMAGE).save(path)
    return path


def _predictor(model: Sam2, image: np.ndarray) -> Sam2Predictor:
    predictor = Sam2Predictor(model)
    predictor.set_image(image)
    return predictor


def test_random_checkpoint_is_the_official_format(tiny_sam2_files: tuple[Path, Path], model: Sam2) -> None:
    config, checkpoint = tiny_sam2_files
    assert config.read_text().startswith("# @package _global_") and "_target_: sam2.modeling.sam2_base.SAM2Base" in config.read_text()
    state = torch.load(checkpoint, weights_only=True)
    assert set(state) == {"model"} and set(state["model"]) == set(model.state_dict())


@pytest.mark.parametrize(("prompt", "kwargs"), [
    (["--point", "20,30", "--point", "60,10,0"], {"point_coords": np.array([[20.0, 30.0], [60.0, 10.0]]),
                                                  "point_labels": np.array([1, 0])}),
    (["--box", "5,5,40,45", "--multimask"], {"box": np.array([5.0, 5.0, 40.0, 45.0]), "multimask_output": True}),
])
def test_segment(files: list[str], model: Sam2, image_file: Path, tmp_path: Path, prompt: list[str], kwargs: dict) -> None:
    assert main(["segment", str(image_file), *prompt, *files, "-o", str(tmp_path)]) == 0
    document = json.loads((tmp_path / "scene.json").read_text())
    masks, scores, _ = _predictor(model, IMAGE).predict(**{"multimask_output": False, **kwargs})
    order = np.argsort(-scores, kind="stable")
    assert len(document["masks"]) == len(order) and document["model"] == files[1]
    for record, index in zip(document["masks"], order):
        assert record["score"] == pytest.approx(float(scores[index]), abs=1e-6)
        assert np.array_equal(decode_rle(record["segmentation"]), masks[index] > 0)
        assert (tmp_path / record["png"]).is_file()


def test_everything_sa1b_and_coco(files: list[str], model: Sam2, image_file: Path, tmp_path: Path) -> None:
    argv = ["everything", str(image_file), *files, "--points-per-side", "4", "--pred-iou-thresh", "0",
            "--stability-thresh", "0"]
    assert main([*argv, "-o", str(tmp_path / "sa1b")]) == 0
    records = segany.MaskGenerator(model, output_mode="coco_rle", **EVERYTHING).generate(IMAGE)
    document = json.loads((tmp_path / "sa1b" / "scene.png.json").read_text())
    ours = sorted(round(a["predicted_iou"], 5) for a in document["annotations"])
    assert records and ours == sorted(round(r["predicted_iou"], 5) for r in records)
    assert main([*argv, "-o", str(tmp_path / "coco"), "--format", "coco"]) == 0
    coco = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert len(coco["annotations"]) == len(records) and coco["images"][0]["width"] == 70
    assert main([*argv, "-o", str(tmp_path / "fast"), "--fast"]) == 2  # SAM 2 has no fast scoring: a typed error


def test_everything_overlay_of_an_image_without_masks(files: list[str], image_file: Path, tmp_path: Path) -> None:
    """The default thresholds keep no mask of the random model: the overlay is the image itself."""
    assert main(["everything", str(image_file), *files, "--points-per-side", "4", "--overlay", "-o", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "scene.png.json").read_text())["annotations"] == []
    assert np.array_equal(np.asarray(Image.open(tmp_path / "scene.png_overlay.png").convert("RGB")), IMAGE)


def _serve(argv: list[str], monkeypatch: pytest.MonkeyPatch, use) -> None:
    """``segany serve ARGV`` with the HTTP server replaced by ``use(client, app)`` (a TestClient)."""
    from fastapi.testclient import TestClient

    import segany.serve.server

    class Server:
        def __init__(self, app, host: str, port: int) -> None:
            self.app = app

        def run(self) -> None:
            use(TestClient(self.app, base_url="http://localhost"), self.app)

    monkeypatch.setattr(segany.serve.server, "make_server", Server)
    assert main(["serve", *argv]) == 0


def test_serve_click_refine_everything_and_accept(files: list[str], model: Sam2, image_file: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("fastapi")
    reference = _predictor(model, IMAGE)
    seen: dict[str, object] = {}

    def use(client, app) -> None:
        image_id = client.get("/api/images").json()[0]["id"]
        assert client.post(f"/api/images/{image_id}/embedding", params={"wait": True}).json()["status"] == "ready"
        info = client.get("/api/info").json()
        # the cache counts SAM 2's embedding and both high-resolution maps
        assert info["cached_embedding_bytes"] == reference.image_features().nbytes == 4 * (32 * 8 * 8 + 4 * 32 * 32 + 8 * 16 * 16)
        click = {"points": [[20, 30]], "labels": [1]}
        answer = client.post(f"/api/images/{image_id}/predict", json=click).json()
        masks, scores, low_res = reference.predict(np.array([[20.0, 30.0]]), np.array([1]))
        order = np.argsort(-scores, kind="stable")
        assert [c["score"] for c in answer["candidates"]] == pytest.approx(scores[order].tolist(), abs=1e-6)
        for candidate, index in zip(answer["candidates"], order):
            assert np.array_equal(decode_rle(candidate["rle"]), masks[index] > 0)
        refine = {"points": [[20, 30], [50, 20]], "labels": [1, 0], "logits": answer["candidates"][0]["logits"],
                  "multimask": False}
        refined = client.post(f"/api/images/{image_id}/predict", json=refine).json()["candidates"]
        ref_masks, _, _ = reference.predict(np.array([[20.0, 30.0], [50.0, 20.0]]), np.array([1, 0]),
                                            mask_input=low_res[order[0]][None], multimask_output=False)
        assert len(refined) == 1 and np.array_equal(decode_rle(refined[0]["rle"]), ref_masks[0] > 0)
        proposals = client.post(f"/api/images/{image_id}/everything", json=EVERYTHING).json()["proposals"]
        assert len(proposals) == len(segany.MaskGenerator(model, **EVERYTHING).generate(IMAGE))
        accepted = client.post(f"/api/images/{image_id}/annotations", json={"category": "thing", "rle": refined[0]["rle"], "score": refined[0]["score"]})
        assert accepted.status_code == 201
        seen["store"] = app.state.store.path

    _serve([str(image_file.parent), *files, "--annotations", str(image_file.parent / "coco.json")], monkeypatch, use)
    stored = json.loads(Path(seen["store"]).read_text())
    assert len(stored["annotations"]) == 1 and stored["annotations"][0]["area"] > 0


def _folder_dataset(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (y0, x0) in enumerate([(10, 15), (25, 30)]):
        image = synthetic_image(50, 70, seed=10 + i)
        mask = np.zeros((50, 70), np.uint8)
        mask[y0 : y0 + 18, x0 : x0 + 25] = 255
        Image.fromarray(image).save(root / "images" / f"object{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"object{i}.png")
    return root


def test_eval_on_a_dataset_folder(files: list[str], model: Sam2, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from segany.data.datasets import open_dataset
    from segany.evaluation import evaluate

    dataset = _folder_dataset(tmp_path / "data")
    out = tmp_path / "eval.json"
    assert main(["eval", "--dataset", str(dataset), "--protocol", "noc", "--max-clicks", "3", "--quiet",
                 "--out", str(out), *files]) == 0
    written = json.loads(out.read_text())
    direct = evaluate(segany.Predictor(model), open_dataset(dataset), "noc", 3, progress=False)
    assert written["model"] == files[1] and len(written["objects"]) == 2
    np.testing.assert_allclose([o["ious"] for o in written["objects"]], [o["ious"] for o in direct["objects"]], atol=1e-6)
    assert "NoC@85" in capsys.readouterr().out


def test_export_onnx_then_the_onnxruntime_backend(files: list[str], model: Sam2, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    assert main(["export", "onnx", *files, "--out", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "segany_onnx.json").read_text())
    assert manifest["model"] == "tiny_random_sam2" and manifest["family"] == "sam2"
    assert set(manifest["files"]) == {"encoder", "decoder", "decoder_low_res"}
    onnx = segany.Predictor(model, backend="onnxruntime", onnx_dir=tmp_path)
    onnx.set_image(IMAGE)
    reference = _predictor(model, IMAGE)
    _, iou, low = onnx.predict(np.array([[20.0, 30.0]]), np.array([1]))
    _, ref_iou, ref_low = reference.predict(np.array([[20.0, 30.0]]), np.array([1]))
    np.testing.assert_allclose(low, ref_low, rtol=0, atol=1e-3)
    np.testing.assert_allclose(iou, ref_iou, rtol=0, atol=1e-4)


# -- the golden tiny SAM 2.1 (skips without the shared folder) ------------------------------------


@pytest.fixture(scope="module")
def golden_files(sam2_dir: Path, tiny_sam2_pt: Path) -> list[str]:
    return ["--model", str(sam2_dir / "sam2.1_hiera_golden_tiny.yaml"), "--checkpoint", str(tiny_sam2_pt)]


def test_golden_eval_on_a_shared_dataset(golden_files: list[str], golden_sam2: Sam2, tmp_path: Path) -> None:
    """A short ``segany eval`` on a GrabCut object: the same numbers as the evaluation run directly."""
    from conftest import SHARED
    from segany.data.datasets import open_dataset
    from segany.evaluation import evaluate

    dataset = SHARED / "data" / "grabcut"
    out = tmp_path / "eval.json"
    assert main(["eval", "--dataset", str(dataset), "--limit", "1", "--protocol", "box", "--quiet",
                 "--out", str(out), *golden_files]) == 0
    written = json.loads(out.read_text())
    direct = evaluate(segany.Predictor(golden_sam2), open_dataset(dataset).head(1), "box", 1, progress=False)
    assert len(written["objects"]) == 1 and 0 < written["objects"][0]["ious"][0] <= 1
    np.testing.assert_allclose([o["ious"] for o in written["objects"]], [o["ious"] for o in direct["objects"]], atol=1e-6)


def test_golden_serve_click(golden_files: list[str], golden_sam2: Sam2, sam2_images: dict[str, np.ndarray],
                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("fastapi")
    Image.fromarray(sam2_images["small"]).save(tmp_path / "small.png")
    reference = _predictor(golden_sam2, sam2_images["small"])

    def use(client, app) -> None:
        image_id = client.get("/api/images").json()[0]["id"]
        answer = client.post(f"/api/images/{image_id}/predict", json={"points": [[26, 18]], "labels": [1]}).json()
        masks, scores, _ = reference.predict(np.array([[26.0, 18.0]]), np.array([1]))
        best = int(np.argmax(scores))
        assert answer["candidates"][0]["score"] == pytest.approx(float(scores[best]), abs=1e-5)
        assert (decode_rle(answer["candidates"][0]["rle"]) != (masks[best] > 0)).sum() <= 2
        features: ImageFeatures = reference.image_features()
        assert client.get("/api/info").json()["cached_embedding_bytes"] == features.nbytes == 4 * (
            256 * 64 * 64 + 32 * 256 * 256 + 64 * 128 * 128)

    _serve([str(tmp_path), *golden_files], monkeypatch, use)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m.update(unknown_flag=True, other_flag=1), "unknown keys model.unknown_flag, model.other_flag; known:"),
    (lambda m: m["image_encoder"]["trunk"].update(depth=3), "unknown keys image_encoder.trunk.depth; known: embed_dim"),
    (lambda m: m["memory_encoder"]["fuser"]["layer"].update(kernel=7), "unknown keys memory_encoder.fuser.layer.kernel"),
])
def test_config_errors_name_every_unknown_key(tiny_sam2_files: tuple[Path, Path], image_file: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str], edit, message: str) -> None:
    """The official YAML's sections are read by the registry's one section reader (as SAM 1's JSON)."""
    import yaml

    from tiny_models import tiny_sam2_document

    document = tiny_sam2_document()
    edit(document["model"])
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    argv = ["segment", str(image_file), "--point", "1,1", "--model", str(config), "--checkpoint", str(tiny_sam2_files[1])]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
