"""segany.text on tiny random models: detector adapters, text -> masks, the CLIP route, captions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from conftest import SHARED
from segany import MaskGenerator, Predictor, load_model
from segany.data.images import load_image
from segany.errors import ConfigError, PromptError, WeightsUnavailableError
from segany.masks import decode_rle, encode_rle
from segany.text import (
    BlipCaptioner,
    Clip,
    ClipTextPredictor,
    Detections,
    GroundingDino,
    Owlv2,
    TextLabeler,
    TextPredictor,
    per_category_nms,
    split_prompt,
)
from tiny_models import tiny_random_model
from tiny_text_models import tiny_text_model_folders

CLASSES = ["cat", "dog"]
PHOTO = SHARED / "data" / "coco_val2017_tiny" / "images" / "000000005001.jpg"


@pytest.fixture(scope="module")
def folders():
    return tiny_text_model_folders()


@pytest.fixture(scope="module")
def photo():
    if not PHOTO.exists():
        pytest.skip(f"the COCO photo {PHOTO} is not here (set SEGANY_SHARED to the shared folder)")
    return load_image(PHOTO)


@pytest.fixture(scope="module")
def sam():
    return tiny_random_model("sam")


def test_split_prompt():
    assert split_prompt("Dog. person.") == ["dog", "person"]
    assert split_prompt("cat,  big dog, cat") == ["cat", "big dog"]
    assert split_prompt(["Cat", "dog"]) == ["cat", "dog"]
    with pytest.raises(PromptError, match="names no class"):
        split_prompt(" . , ")


def _clipped(boxes: torch.Tensor, height: int, width: int) -> np.ndarray:
    return np.clip(boxes.numpy(), 0, [width, height, width, height]).astype(np.float32)


def test_grounding_dino_boxes_are_the_processors(folders, photo):
    detector = GroundingDino(folders["gdino"], box_threshold=0.3, text_threshold=0.25, nms_threshold=1.0)
    detections = detector.detect(photo, "cat. dog.")
    inputs, outputs = detector.raw(photo, CLASSES)
    height, width = photo.shape[:2]
    expected = detector.processor.post_process_grounded_object_detection(
        outputs, inputs["input_ids"], threshold=0.3, text_threshold=0.25, target_sizes=[(height, width)])[0]
    order = np.argsort(-expected["scores"].numpy(), kind="stable")
    assert 0 < len(detections) == len(order)
    np.testing.assert_array_equal(detections.scores, expected["scores"].numpy()[order])
    np.testing.assert_array_equal(detections.boxes, _clipped(expected["boxes"], height, width)[order])
    assert detections.labels == [expected["text_labels"][i] for i in order]
    assert set(detections.categories) <= {0, 1} and detections.classes == CLASSES


def test_grounding_dino_category_is_the_best_matching_class(folders, photo):
    detector = GroundingDino(folders["gdino"], box_threshold=0.0, nms_threshold=1.0)
    detections = detector.detect(photo, ["cat", "big dog"])
    _, outputs = detector.raw(photo, ["cat", "big dog"])
    # [CLS] cat . big dog . [SEP]: "cat" is token 1, "big dog" tokens 3-4 ("big" is not in the vocab: [UNK])
    probs = torch.sigmoid(outputs.logits[0])
    per_class = torch.stack([probs[:, 1], probs[:, 3:5].max(dim=1).values], dim=1).argmax(dim=1).numpy()
    order = np.argsort(-probs.max(dim=1).values.numpy(), kind="stable")
    np.testing.assert_array_equal(detections.categories, per_class[order])


def test_owlv2_boxes_are_the_processors_on_the_padded_square(folders, photo):
    detector = Owlv2(folders["owlv2"], threshold=0.0, nms_threshold=1.0)
    detections = detector.detect(photo, CLASSES)
    _, outputs = detector.raw(photo, CLASSES)
    height, width = photo.shape[:2]
    side = max(height, width)
    expected = detector.processor.post_process_grounded_object_detection(
        outputs, threshold=0.0, target_sizes=[(side, side)], text_labels=[CLASSES])[0]
    order = np.argsort(-expected["scores"].numpy(), kind="stable")
    assert len(detections) == len(order) == outputs.logits.shape[1]
    np.testing.assert_array_equal(detections.boxes, _clipped(expected["boxes"], height, width)[order])
    np.testing.assert_array_equal(detections.scores, expected["scores"].numpy()[order])
    assert detections.labels == [expected["text_labels"][i] for i in order]


def test_per_category_nms_suppresses_within_a_category_only():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    detections = Detections(boxes, np.array([0.9, 0.8, 0.7, 0.95], np.float32), ["a", "a", "b", "a"],
                            np.array([0, 0, 1, 0]), ["a", "b"])
    kept = per_category_nms(detections, 0.5)
    np.testing.assert_array_equal(kept.scores, np.array([0.95, 0.9, 0.7], np.float32))
    assert kept.labels == ["a", "a", "b"]
    assert len(per_category_nms(detections, 1.0)) == 4


def test_text_predictor_masks_are_predict_torch_on_the_boxes(folders, photo, sam):
    photo = np.ascontiguousarray(photo[::2, ::2])
    detector = GroundingDino(folders["gdino"], box_threshold=0.0)
    result = TextPredictor(detector, Predictor(sam)).predict(photo, "cat. dog.")
    assert len(result) > 1 and result.masks.shape == (len(result), *photo.shape[:2])
    predictor = Predictor(sam)
    predictor.set_image(photo)
    boxes = predictor.transform.apply_boxes_torch(torch.as_tensor(result.boxes), predictor.original_size)
    masks, ious, _ = predictor.predict_torch(None, None, boxes, multimask_output=False)
    np.testing.assert_array_equal(result.masks, masks[:, 0].numpy())
    np.testing.assert_array_equal(result.ious, ious[:, 0].numpy())
    records = result.records()
    assert [r["category"] for r in records] == result.category_names()
    np.testing.assert_array_equal(decode_rle(records[0]["segmentation"]), result.masks[0])
    assert all(0.0 <= r["stability_score"] <= 1.0 for r in records)


def test_text_predictor_on_the_classic_engine_calls_predict_per_box(folders, photo):
    small = np.ascontiguousarray(photo[::4, ::4])  # GrabCut per box: keep it quick
    predictor = Predictor(load_model("classic"))
    result = TextPredictor(Owlv2(folders["owlv2"], threshold=0.0, nms_threshold=0.2), predictor).predict(small, "cat")
    assert len(result) > 0
    for box, mask in zip(result.boxes, result.masks):
        expected = predictor.predict(box=box.astype(np.float64), multimask_output=False)[0][0]
        np.testing.assert_array_equal(mask, expected)


def test_no_detection_is_an_empty_valid_result(folders, photo, sam):
    result = TextPredictor(GroundingDino(folders["gdino"], box_threshold=1.0), Predictor(sam)).predict(photo, "cat")
    assert len(result) == 0 and result.records() == []
    assert result.masks.shape == (0, *photo.shape[:2]) and result.boxes.shape == (0, 4)


def test_offline_loading_names_the_model(folders, tmp_path):
    with pytest.raises(WeightsUnavailableError, match="IDEA-Research/grounding-dino-tiny.*save_pretrained"):
        GroundingDino("IDEA-Research/grounding-dino-tiny", local_files_only=True)
    with pytest.raises(WeightsUnavailableError, match="missing_clip"):
        Clip(tmp_path / "missing_clip")
    with pytest.raises(ConfigError, match="owlv2.*not a Grounding DINO"):
        GroundingDino(folders["owlv2"])


def test_clip_route_keeps_exactly_the_masks_whose_similarity_passes(folders, photo):
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    photo = np.ascontiguousarray(photo[::2, ::2])
    generator = MaskGenerator(load_model("classic"), output_mode="coco_rle")  # regions of many sizes, unlike a random SAM's
    records = generator.generate(photo)
    model, processor = CLIPModel.from_pretrained(folders["clip"]), CLIPProcessor.from_pretrained(folders["clip"])
    crops = [Image.fromarray(photo[y:y + h, x:x + w]) for x, y, w, h in (r["bbox"] for r in records)]
    with torch.no_grad():
        logits = model(**processor(text=CLASSES, images=crops, return_tensors="pt", padding=True)).logits_per_image
    cosine = (logits / model.logit_scale.exp()).detach().numpy()
    best = cosine.max(axis=1)
    values = np.unique(best.round(4))
    assert len(values) > 2  # masks with different boxes: a threshold between their similarities
    threshold = float(values[len(values) // 2] + values[len(values) // 2 - 1]) / 2
    passing = np.flatnonzero(best >= threshold)
    assert 0 < len(passing) < len(records)

    result = ClipTextPredictor(generator, Clip(folders["clip"]), threshold=threshold).predict(photo, "cat, dog")
    assert sorted(r["segmentation"]["counts"] for r in result.records()) == \
        sorted(records[i]["segmentation"]["counts"] for i in passing)
    np.testing.assert_allclose(np.sort(result.scores), np.sort(best[passing]), atol=1e-5)
    assert result.labels == [CLASSES[i] for i in result.detections.categories]
    assert list(result.scores) == sorted(result.scores, reverse=True)


def test_caption_labeler_grounds_the_caption(folders, photo, sam):
    photo = np.ascontiguousarray(photo[::4, ::4])
    captioner = BlipCaptioner(folders["blip"], max_new_tokens=8)
    caption = captioner.caption(photo)
    assert any(ch.isalpha() for ch in caption)
    route = TextPredictor(GroundingDino(folders["gdino"], box_threshold=0.0), Predictor(sam))
    records = TextLabeler(route, captioner=captioner).generate(photo)
    assert records and all(r["caption"] == caption and r["category"] for r in records)
    with pytest.raises(PromptError, match="either classes or a captioner"):
        TextLabeler(route)


def test_grounding_dino_splits_a_long_class_list_into_prompts_that_fit(folders, photo):
    detector = GroundingDino(folders["gdino"], box_threshold=0.0, nms_threshold=1.0)
    classes = ["cat", "dog", "person", "horse", "grass", "clouds", "sky", "tree", "car", "bird", "wall"] * 2
    classes = [f"{c} {i}" if i else c for i, c in enumerate(classes)]  # 22 classes, some of 2 tokens: > 32 tokens
    groups = detector.chunks(classes)
    assert len(groups) > 1 and [c for g in groups for c in g] == classes
    for group in groups:
        assert len(detector.processor(text=detector._text(group))["input_ids"]) <= 32
    detections = detector.detect(photo[::4, ::4].copy(), classes)
    assert len(detections) == 10 * len(groups)  # every query of every prompt
    assert detections.categories.max() >= len(groups[0])  # categories index the whole list


def test_text_predictor_on_sam2_decodes_the_boxes_in_one_batch(folders, photo, tmp_path):
    from tiny_models import save_tiny_sam2

    config, checkpoint = save_tiny_sam2(tmp_path)
    small = np.ascontiguousarray(photo[::4, ::4])
    predictor = Predictor(load_model(config, checkpoint=checkpoint))
    result = TextPredictor(Owlv2(folders["owlv2"], threshold=0.0), predictor).predict(small, "cat")
    assert len(result) > 1
    masks, ious, _ = predictor.predict(box=result.boxes.astype(np.float64), multimask_output=False)
    np.testing.assert_array_equal(result.masks, masks[:, 0] > 0)
    np.testing.assert_array_equal(result.ious, ious[:, 0])
    single = predictor.predict(box=result.boxes[0].astype(np.float64), multimask_output=False)
    np.testing.assert_allclose(result.ious[0], single[1][0], atol=1e-5)


def test_coco_categories_come_from_the_records():
    from segany.data.formats.coco import coco_instances
    from segany.data.formats.sa1b import sa1b_document
    from segany.errors import AnnotationError

    mask = np.zeros((4, 5), bool)
    mask[1:3, 1:4] = True
    base = {"segmentation": encode_rle(mask), "area": 6,
            "bbox": [1, 1, 3, 2], "predicted_iou": 0.9, "point_coords": [[2, 2]], "stability_score": 1.0,
            "crop_box": [0, 0, 5, 4]}
    records = [{**base, "category": "dog", "label": "a dog", "detector_score": 0.5}, {**base, "category": "cat",
                                                                                      "label": "cat", "detector_score": 0.7}]
    document = sa1b_document(records, "x.png", 4, 5, image_id=1)
    coco = coco_instances([document], categories=["cat", "dog"])
    assert coco["categories"] == [{"id": 1, "name": "cat", "supercategory": "object"},
                                  {"id": 2, "name": "dog", "supercategory": "object"}]
    assert [(a["category_id"], a["score"], a["label"]) for a in coco["annotations"]] == [(2, 0.5, "a dog"), (1, 0.7, "cat")]
    assert [c["name"] for c in coco_instances([document])["categories"]] == ["dog", "cat"]  # first appearance
    with pytest.raises(AnnotationError, match="'dog', not one of"):
        coco_instances([document], categories=["cat"])
    plain = sa1b_document([base], "x.png", 4, 5, image_id=1)
    assert coco_instances([plain])["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
