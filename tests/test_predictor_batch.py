"""SAM 1 / MobileSAM ``set_image_batch`` + ``predict_batch`` (the official SAM2ImagePredictor batch
interface): one encoder pass over the images, answers equal to set_image + predict per image.

Tolerance: the ViT encoder gives bit-identical embeddings in a batch; TinyViT's batched
convolutions differ by float rounding (embeddings within 1e-5, low-res logits within 1e-4 of
logits up to ~30, IoUs within 1e-6); masks are then equal wherever the logit is not within 1e-4
of the threshold."""
from __future__ import annotations

import numpy as np
import pytest

import segany
from segany.errors import ImageError, PredictorStateError, PromptError, UnsupportedOperationError
from segany.predict.runtime import Runtime
from tiny_models import synthetic_image

IMAGES = [synthetic_image(37, 53, 0), synthetic_image(60, 41, 1), synthetic_image(128, 128, 2)]


def _prompts(low_res: np.ndarray) -> tuple[list, list, list, list]:
    points = [np.array([[10.0, 12.0]]), np.array([[20.0, 30.0], [5.0, 5.0]]), None]
    labels = [np.array([1]), np.array([1, 0]), None]
    boxes = [None, np.array([2.0, 3.0, 30.0, 50.0]), np.array([5.0, 5.0, 100.0, 90.0])]
    masks = [low_res, None, None]
    return points, labels, boxes, masks


@pytest.mark.parametrize("kind", ["tiny_random_sam", "tiny_random_mobilesam"])
@pytest.mark.parametrize("multimask", [True, False])
def test_batch_equals_one_image_at_a_time(kind: str, multimask: bool, request: pytest.FixtureRequest,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    model = request.getfixturevalue(kind)
    single = segany.Predictor(model)
    single.set_image(IMAGES[0])
    points, labels, boxes, masks = _prompts(single.predict(np.array([[9.0, 9.0]]), np.array([1]),
                                                           multimask_output=False)[2])
    batch = segany.Predictor(model)
    passes = []
    encode = Runtime.encode
    monkeypatch.setattr(Runtime, "encode", lambda self, images: passes.append(len(images)) or encode(self, images))
    batch.set_image_batch(IMAGES)
    assert passes == [3]
    out_masks, out_ious, out_low = batch.predict_batch(points, labels, boxes, masks, multimask_output=multimask)
    logits, _, _ = batch.predict_batch(points, labels, boxes, masks, multimask_output=multimask, return_logits=True)
    embeddings = batch.get_image_embedding()
    assert embeddings.shape[0] == 3 and len(out_masks) == len(out_ious) == len(out_low) == 3

    for i, image in enumerate(IMAGES):
        single.set_image(image)
        np.testing.assert_allclose(embeddings[i : i + 1], single.get_image_embedding(), rtol=0, atol=1e-5)
        m, iou, low = single.predict(points[i], labels[i], boxes[i], masks[i], multimask_output=multimask)
        assert out_masks[i].shape == m.shape == (1 + 2 * multimask, *image.shape[:2]) and out_masks[i].dtype == bool
        np.testing.assert_allclose(out_ious[i], iou, rtol=0, atol=1e-6)
        np.testing.assert_allclose(out_low[i], low, rtol=0, atol=1e-4)
        near_threshold = np.abs(logits[i]) < 1e-4
        assert np.array_equal(out_masks[i] | near_threshold, m | near_threshold)
    assert batch.original_size == IMAGES[-1].shape[:2]  # predict() answers on the last image, as SAM 2's
    np.testing.assert_allclose(batch.predict(np.array([[50.0, 50.0]]), np.array([1]))[1],
                               single.predict(np.array([[50.0, 50.0]]), np.array([1]))[1], rtol=0, atol=1e-6)


def test_batch_errors_are_typed(tiny_random_sam) -> None:
    predictor = segany.Predictor(tiny_random_sam)
    for bad, words in (([], "empty list"), (IMAGES[0], "ndarray"), ("a.jpg", "str"),
                       ([IMAGES[0], IMAGES[1].astype(np.float32)], r"image_list\[1\].*uint8"),
                       ([IMAGES[0], IMAGES[1][..., :2]], r"image_list\[1\].*HxWx3")):
        with pytest.raises(ImageError, match=words):
            predictor.set_image_batch(bad)
    with pytest.raises(PredictorStateError):
        predictor.predict_batch()
    predictor.set_image(IMAGES[0])
    with pytest.raises(PredictorStateError, match="set_image_batch"):
        predictor.predict_batch()
    predictor.set_image_batch(IMAGES[:2])
    with pytest.raises(UnsupportedOperationError):
        predictor.image_features()
    for kwargs, words in (({"box_batch": [None]}, r"box_batch must have one entry per image \(2\), got 1"),
                          ({"point_coords_batch": np.array(3.0)}, "got a ndarray"),
                          ({"point_coords_batch": [np.array([[1.0, 1.0]]), None], "point_labels_batch": [None, None]},
                           "together")):
        with pytest.raises(PromptError, match=words):
            predictor.predict_batch(**kwargs)
    assert predictor.original_size == IMAGES[1].shape[:2]  # a failed image does not move the current one


def test_onnxruntime_encoder_takes_a_batch_image_by_image(tiny_random_sam) -> None:
    pytest.importorskip("onnxruntime")
    predictor = segany.Predictor(tiny_random_sam, backend="onnxruntime")
    predictor.set_image_batch(IMAGES[:2])
    embeddings = predictor.get_image_embedding()
    for i, image in enumerate(IMAGES[:2]):
        predictor.set_image(image)
        np.testing.assert_allclose(embeddings[i : i + 1], predictor.get_image_embedding(), rtol=0, atol=1e-6)


# -- the automatic mask generator, several whole images per encoder pass ----------------------

GENERATOR = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 0.95,
             "output_mode": "coco_rle"}


def _records_equal(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(
        np.array_equal(x[k], y[k]) if isinstance(x[k], np.ndarray) else x[k] == y[k] for k in x) for x, y in zip(a, b))


def test_generate_batch_one_per_pass_is_generate(tiny_random_mobilesam, monkeypatch: pytest.MonkeyPatch) -> None:
    from segany.amg.generator import SamMaskGenerator, default_images_per_pass

    generator = SamMaskGenerator(tiny_random_mobilesam, **GENERATOR)
    expected = [generator.generate(image) for image in IMAGES]
    assert min(map(len, expected)) > 5 and default_images_per_pass(generator.predictor.device) == 1  # CPU: no gain (benchmark)
    passes = []
    encode = Runtime.encode
    monkeypatch.setattr(Runtime, "encode", lambda self, images: passes.append(len(images)) or encode(self, images))
    got = generator.generate_batch(IMAGES)
    assert passes == [1, 1, 1] and all(_records_equal(a, b) for a, b in zip(got, expected))


def test_generate_batch_several_per_pass(tiny_random_mobilesam, monkeypatch: pytest.MonkeyPatch) -> None:
    from segany.amg.generator import SamMaskGenerator

    generator = SamMaskGenerator(tiny_random_mobilesam, **GENERATOR)
    batch = segany.Predictor(tiny_random_mobilesam)
    batch.set_image_batch(IMAGES[:2])
    expected = [generator.generate(image, features=f) for image, f in zip(IMAGES[:2], batch.batch_features())]
    expected.append(generator.generate(IMAGES[2]))
    passes = []
    encode = Runtime.encode
    monkeypatch.setattr(Runtime, "encode", lambda self, images: passes.append(len(images)) or encode(self, images))
    got = generator.generate_batch(IMAGES, images_per_pass=2)
    assert passes == [2, 1] and len(got) == 3 and all(_records_equal(a, b) for a, b in zip(got, expected))
    for bad in (0, 1.5, True):
        with pytest.raises(segany.errors.GeneratorArgumentError, match="images_per_pass"):
            generator.generate_batch(IMAGES, images_per_pass=bad)
    with pytest.raises(ImageError, match="empty"):
        generator.generate_batch([])
