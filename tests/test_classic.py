"""The weight-free classic engine: predictor interface, accuracy on a synthetic object, generator, wiring."""
from __future__ import annotations

import os

import numpy as np
import pytest

import segany
from segany.classic import ClassicModel, ClassicPredictor
from segany.classic.generator import ClassicMaskGenerator
from segany.classic.lowres import logits_to_image, mask_to_logits
from segany.errors import (
    ConfigError,
    GeneratorArgumentError,
    PredictorStateError,
    PromptError,
    UnsupportedOperationError,
)
from segany.evaluation import iou
from segany.masks import decode_rle

RECORD_KEYS = {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"}


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray]:
    """A 120x160 noisy two-tone background with a noisy ellipse whose colour differs from both tones."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:120, :160]
    image = np.where((xx < 80)[..., None], [70, 110, 60], [120, 90, 140]).astype(np.float64)
    obj = ((xx - 90) / 38.0) ** 2 + ((yy - 62) / 26.0) ** 2 <= 1.0
    image[obj] = [215, 170, 40]
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), obj


@pytest.fixture()
def predictor(scene) -> ClassicPredictor:
    p = segany.Predictor(segany.load_model("classic"))
    p.set_image(scene[0])
    return p


def test_load_model_and_predictor_dispatch():
    model = segany.load_model("classic")
    assert isinstance(model, ClassicModel) and isinstance(segany.build_model("classic"), ClassicModel)
    assert isinstance(segany.Predictor(model), ClassicPredictor)
    with pytest.raises(ConfigError, match="no weights"):
        segany.load_model("classic", checkpoint="x.pth")


def test_one_box_gives_the_object(predictor, scene):
    _, obj = scene
    masks, scores, low_res = predictor.predict(box=np.array([50, 34, 130, 90]), multimask_output=False)
    assert masks.shape == (1, 120, 160) and masks.dtype == bool
    assert scores.shape == (1,) and 0.0 <= scores[0] <= 1.0
    assert low_res.shape == (1, 256, 256) and low_res.dtype == np.float32
    assert iou(masks[0], obj) >= 0.9


def test_one_click_multimask_and_feedback(predictor, scene):
    _, obj = scene
    masks, scores, low_res = predictor.predict(point_coords=[[90, 60]], point_labels=[1])
    assert masks.shape == (3, 120, 160) and scores.shape == (3,) and low_res.shape == (3, 256, 256)
    best = int(np.argmax(scores))
    assert iou(masks[best], obj) >= 0.85
    # the low-res logits describe the mask (positive inside), so they can seed the next call
    assert iou(logits_to_image(low_res[best], (120, 160)) > 0, masks[best]) >= 0.9
    masks2, _, _ = predictor.predict(point_coords=[[90, 60], [20, 20]], point_labels=[1, 0],
                                     mask_input=low_res[best][None], multimask_output=False)
    assert iou(masks2[0], obj) >= 0.85
    logits, _, _ = predictor.predict(point_coords=[[90, 60]], point_labels=[1], multimask_output=False, return_logits=True)
    assert logits.dtype == np.float32 and (logits > 0).any() and (logits < 0).any()


def test_negative_click_removes_a_region(predictor, scene):
    image, _ = scene
    # prior: everything right of x=60; a negative click in the background part should be honoured
    prior = np.zeros((120, 160), dtype=bool)
    prior[:, 60:] = True
    masks, _, _ = predictor.predict(point_coords=[[90, 60], [150, 10]], point_labels=[1, 0],
                                    mask_input=mask_to_logits(prior)[None], multimask_output=False)
    assert not masks[0][10, 150] and masks[0][60, 90]


def test_lowres_round_trip():
    mask = np.zeros((90, 200), dtype=bool)
    mask[20:70, 40:160] = True
    logits = mask_to_logits(mask)
    assert logits.shape == (256, 256) and logits[200, 10] < 0  # padding below the image is background
    assert iou(logits_to_image(logits, mask.shape) > 0, mask) > 0.97


def test_errors_are_typed(scene):
    p = ClassicPredictor()
    with pytest.raises(PredictorStateError):
        p.predict(point_coords=[[1, 1]], point_labels=[1])
    p.set_image(scene[0])
    with pytest.raises(PromptError, match="outside"):
        p.predict(point_coords=[[500, 1]], point_labels=[1])
    with pytest.raises(PromptError, match="reversed"):
        p.predict(box=[50, 50, 10, 10])
    with pytest.raises(PromptError, match="positive point"):
        p.predict(point_coords=[[5, 5]], point_labels=[0])
    with pytest.raises(PromptError, match="mask_input"):
        p.predict(point_coords=[[5, 5]], point_labels=[1], mask_input=np.zeros((64, 64)))
    with pytest.raises(UnsupportedOperationError):
        p.get_image_embedding()


def test_generator_records(scene):
    image, obj = scene
    records = ClassicMaskGenerator(ClassicModel()).generate(image)
    assert records
    for r in records:
        assert set(r) == RECORD_KEYS and r["segmentation"].shape == (120, 160) and r["area"] == int(r["segmentation"].sum())
        x, y, w, h = r["bbox"]
        assert r["segmentation"][y:y + h + 1, x:x + w + 1].sum() == r["area"] and r["crop_box"] == [0, 0, 160, 120]
        px, py = r["point_coords"][0]
        assert r["segmentation"][int(py), int(px)]
    assert max(iou(r["segmentation"], obj) for r in records) >= 0.85  # the object is among the regions
    rles = ClassicMaskGenerator(output_mode="coco_rle").generate(image)
    assert rles and set(rles[0]["segmentation"]) == {"size", "counts"}
    with pytest.raises(GeneratorArgumentError):
        ClassicMaskGenerator(output_mode="png")
    with pytest.raises(GeneratorArgumentError, match="unknown option"):
        ClassicMaskGenerator(points_per_sid=4)


def test_generator_takes_the_official_arguments_it_can_honour(scene):
    image, _ = scene
    official = dict(points_per_side=32, points_per_batch=16, pred_iou_thresh=0.88, stability_score_thresh=0.95,
                    stability_score_offset=1.0, box_nms_thresh=0.5, crop_n_layers=0, crop_nms_thresh=0.7,
                    crop_overlap_ratio=512 / 1500, crop_n_points_downscale_factor=1, point_grids=None,
                    min_mask_region_area=0, output_mode="coco_rle", fast=True)
    generator = segany.MaskGenerator(segany.load_model("classic"), **official)  # SAM defaults spelt out: fine
    assert isinstance(generator, ClassicMaskGenerator) and generator.box_nms_thresh == 0.5
    everything = ClassicMaskGenerator().generate(image)
    big = ClassicMaskGenerator(min_mask_region_area=2000).generate(image)
    assert big and len(big) < len(everything) and min(r["area"] for r in big) >= 2000  # honoured
    assert len(ClassicMaskGenerator(box_nms_thresh=0.0).generate(image)) < len(everything)
    for name, value in [("points_per_side", 16), ("point_grids", [np.zeros((4, 2))]), ("crop_n_layers", 1),
                        ("pred_iou_thresh", 0.5), ("stability_score_thresh", 0.0), ("crop_overlap_ratio", 0.5)]:
        with pytest.raises(GeneratorArgumentError, match=f"cannot honour {name}"):
            segany.MaskGenerator(segany.load_model("classic"), **{name: value})
    with pytest.raises(GeneratorArgumentError, match="min_mask_region_area"):
        ClassicMaskGenerator(min_mask_region_area=-1)


def test_mask_generator_dispatches_to_the_classic_engine(scene):
    image, obj = scene
    model = segany.load_model("classic")
    generator = segany.MaskGenerator(model, box_nms_thresh=0.5, output_mode="coco_rle")
    assert isinstance(generator, ClassicMaskGenerator) and generator.box_nms_thresh == 0.5
    assert isinstance(segany.MaskGenerator(segany.Predictor(model)), ClassicMaskGenerator)
    records = generator.generate(image)
    assert records and all(set(r) == RECORD_KEYS for r in records)
    assert max(iou(decode_rle(r["segmentation"]), obj) for r in records) >= 0.85


def test_segment_cli_falls_back_to_classic_offline(monkeypatch, tmp_path, capsys):
    from PIL import Image

    import segany.build
    from segany.cli import main
    from segany.errors import WeightsUnavailableError

    def offline(name, progress=True):
        raise WeightsUnavailableError(f"weights for {name!r} are not cached and could not be downloaded")

    monkeypatch.setattr(segany.build, "ensure_weights", offline)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (64, 80, 3), dtype=np.uint8)
    image[16:48, 24:60] = (230, 200, 30)
    Image.fromarray(image).save(tmp_path / "img.png")
    assert main(["segment", str(tmp_path / "img.png"), "--point", "40,30", "--multimask", "-o", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "classic engine" in err and len([line for line in err.splitlines() if "classic" in line]) == 1
    mask = np.array(Image.open(tmp_path / "out" / "img_mask0.png")) > 0
    truth = np.zeros((64, 80), dtype=bool)
    truth[16:48, 24:60] = True
    assert iou(mask, truth) >= 0.9
    # an explicit checkpoint or a non-default model is never silently replaced
    assert main(["segment", str(tmp_path / "img.png"), "--point", "40,30", "--model", "vit_b", "-o", str(tmp_path / "o2")]) == 2


# --- determinism ---------------------------------------------------------------------------------

def _exact_gradient(image: np.ndarray) -> np.ndarray:
    """Reference edge map: float64 Sobel magnitude of the image's gray levels, rounded once to float32."""
    import cv2

    gray = cv2.cvtColor(np.ascontiguousarray(image[..., ::-1]), cv2.COLOR_BGR2GRAY)
    gx, gy = cv2.Sobel(gray, cv2.CV_64F, 1, 0), cv2.Sobel(gray, cv2.CV_64F, 0, 1)
    return np.sqrt(gx * gx + gy * gy).astype(np.float32)


def test_scores_are_the_boundary_contrast_on_the_exact_gradient(scene):
    """Scores are a pure function of the image: no bit depends on OpenCV's vector/scalar split."""
    from segany.classic.scoring import boundary_contrast

    image, _ = scene
    gradient = _exact_gradient(image)
    records = ClassicMaskGenerator().generate(image)
    assert [r["predicted_iou"] for r in records] == [boundary_contrast(r["segmentation"], gradient) for r in records]
    p = ClassicPredictor()
    p.set_image(image)
    masks, scores, _ = p.predict(point_coords=[[90, 60]], point_labels=[1])
    assert np.array_equal(scores, np.array([boundary_contrast(m, gradient) for m in masks], dtype=np.float32))


def test_distances_are_exact():
    from segany.classic.lowres import distance_to_zero

    rng = np.random.default_rng(4)
    mask = (rng.random((40, 56)) > 0.03).astype(np.uint8)
    zeros = np.argwhere(mask == 0)
    pixels = np.indices(mask.shape).reshape(2, -1).T
    brute = np.sqrt(((pixels[:, None, :] - zeros[None, :, :]) ** 2).sum(-1).min(1)).reshape(mask.shape)
    assert np.array_equal(distance_to_zero(mask), brute.astype(np.float32))


_RUN_ENGINE = """
import json, sys
import os

import numpy as np
from segany.classic import ClassicMaskGenerator, ClassicPredictor

def run(image):
    p = ClassicPredictor()
    p.set_image(image)
    outputs = [p.predict(point_coords=[[90, 60]], point_labels=[1], return_logits=True),
               p.predict(box=[50, 34, 130, 90], multimask_output=False)]
    arrays = [a for output in outputs for a in output]
    return arrays, json.dumps(ClassicMaskGenerator(output_mode="coco_rle").generate(image))

if __name__ == "__main__":
    arrays, generated = run(np.load(sys.argv[1]))
    np.savez(sys.argv[2], *arrays)
    open(sys.argv[3], "w").write(generated)
"""


def test_repeated_runs_are_byte_identical(scene, tmp_path):
    """Same masks, logits, scores and generator JSON in every run: whatever the OpenCV thread count,
    wherever numpy places the arrays, and in a fresh process (its own thread pools and heap)."""
    import runpy
    import subprocess
    import sys

    import cv2

    image, _ = scene
    (tmp_path / "engine.py").write_text(_RUN_ENGINE)
    namespace = runpy.run_path(str(tmp_path / "engine.py"))
    threads = cv2.getNumThreads()
    held = []
    runs = []
    try:
        for i, count in enumerate([threads, 1, 2, threads]):
            cv2.setNumThreads(count)
            held.append(np.empty(4096 + 16 * i, np.uint8))  # move later allocations around the heap
            runs.append(namespace["run"](image))
    finally:
        cv2.setNumThreads(threads)
    np.save(tmp_path / "image.npy", image)
    subprocess.run([sys.executable, str(tmp_path / "engine.py"), str(tmp_path / "image.npy"), str(tmp_path / "out.npz"),
                    str(tmp_path / "out.json")], check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    with np.load(tmp_path / "out.npz") as saved:
        runs.append(([saved[f"arr_{i}"] for i in range(len(saved.files))], (tmp_path / "out.json").read_text()))
    first_arrays, first_json = runs[0]
    for arrays, generated in runs[1:]:
        assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(first_arrays, arrays))
        assert generated == first_json


# --- degenerate prompts --------------------------------------------------------------------------

@pytest.mark.parametrize("box", [[90, 60, 90, 60], [60, 62, 120, 62], [90, 45, 90, 80], [90, 45, 91, 80]],
                         ids=["zero-area", "horizontal-line", "vertical-line", "1px-wide"])
def test_degenerate_box_segments_the_object_under_it(predictor, scene, box):
    _, obj = scene
    masks, scores, low_res = predictor.predict(box=np.array(box, dtype=float), multimask_output=False)
    assert masks.shape == (1, 120, 160) and low_res.shape == (1, 256, 256)
    assert iou(masks[0], obj) >= 0.85 and 0.0 < scores[0] < 1.0


@pytest.mark.parametrize("prompt", [{"box": [159, 119, 160, 120]}, {"box": [160, 0, 160, 120]}, {"box": [0, 0, 160, 0]},
                                    {"point_coords": [[160, 120]], "point_labels": [1]}],
                         ids=["corner-box", "right-edge-line", "top-edge-line", "corner-point"])
def test_prompts_on_the_image_border_give_masks(predictor, prompt):
    masks, scores, _ = predictor.predict(**prompt)
    assert masks.shape == (3, 120, 160) and masks.any(axis=(1, 2)).all()
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()


def test_degenerate_prompts_outside_or_without_object_are_prompt_errors(predictor):
    for box in ([170, 10, 170, 50], [100, 100, 170, 110], [-1, 5, -1, 5]):
        with pytest.raises(PromptError, match="outside"):
            predictor.predict(box=box)
    with pytest.raises(PromptError, match="positive point"):
        predictor.predict(point_coords=[[5, 5], [150, 100]], point_labels=[0, 0])


def test_colour_model_of_a_single_pixel():
    from segany.classic.grabcut import COMPONENTS, fit_colour_model

    model = fit_colour_model(np.array([[10, 20, 30]], dtype=np.uint8))
    weights, means = model[0, :COMPONENTS], model[0, COMPONENTS:4 * COMPONENTS].reshape(COMPONENTS, 3)
    assert weights.tolist() == [1, 0, 0, 0, 0] and means[0].tolist() == [10, 20, 30]
