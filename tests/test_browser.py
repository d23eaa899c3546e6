"""The web annotator in a real browser: click on the image, check the mask overlay in the canvas
pixels, accept it with a category and read the COCO file back; proposals kept from "everything"
and from text search."""
from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from browser import (
    ARTIFACTS,
    HEIGHT,
    MARKER_PIXELS,
    WIDTH,
    away_from,
    canvas_pixels,
    changed,
    predict_answer,
    screen_point,
    view_scale,
)
from segany.masks import decode_rle, encode_rle


def test_click_gives_a_mask_that_is_accepted_into_coco(server, page) -> None:
    url, annotations = server
    page.goto(url)
    page.wait_for_function("document.body.dataset.embedding === 'ready'", timeout=120_000)
    assert page.locator("#spinner").is_hidden()
    assert "Ctrl+Z" in page.inner_text("#shortcuts")
    zoom = view_scale(page)  # small images are shown enlarged
    assert zoom >= 1
    before = canvas_pixels(page)

    click = (55, 65)  # inside the red square, in image pixels
    body, first = predict_answer(page, lambda: page.mouse.click(*screen_point(page, *click)))
    assert np.allclose(body["points"], [click], atol=1 / zoom) and body["labels"] == [1] and body["multimask"] is True
    page.wait_for_selector("#candidates li >> nth=2")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser_candidates.png"))
    best = decode_rle(first["candidates"][0]["rle"])
    assert best.any(), "the tiny model's best mask for this click is not empty"
    tinted = changed(before, canvas_pixels(page))
    region = away_from([click], MARKER_PIXELS / zoom + 1)
    # the overlay tints exactly the best candidate's pixels (the click marker aside)
    assert np.mean(tinted[region] == best[region]) > 0.99
    assert tinted[region].sum() > 0.9 * best[region].sum()

    # right click: a background point refining the mask, then undo it with the keyboard
    body, _ = predict_answer(page, lambda: page.mouse.click(*screen_point(page, 150, 40), button="right"))
    assert body["labels"] == [1, 0] and body["logits"] == first["candidates"][0]["logits"]
    assert body["multimask"] is False
    page.wait_for_function("document.querySelectorAll('#candidates li').length === 1")
    page.keyboard.press("z")
    page.wait_for_function("document.querySelectorAll('#candidates li').length === 3")

    # choose the second candidate with its key, accept it with a category
    page.keyboard.press("2")
    assert page.locator("#candidates li.selected").inner_text().endswith("2")
    page.fill("#category", "red square")
    page.press("#category", "Enter")
    page.wait_for_selector("#annotations li")
    assert "red square" in page.inner_text("#annotations")

    page.screenshot(path=str(ARTIFACTS / "browser_annotator.png"))

    # remove preview: this random model's mask, dilated, covers the whole image: a clear refusal
    page.click("#annotations li")
    with page.expect_response(lambda r: r.url.endswith("/remove")) as removal:
        page.keyboard.press("o")
    assert removal.value.status == 422
    page.wait_for_function("document.getElementById('status').textContent.includes('whole image')")
    # ... and a small object's preview is shown instead of the image, then the image again
    disc = np.zeros((HEIGHT, WIDTH), bool)
    disc[60:80, 40:70] = True
    rle = encode_rle(disc)
    image_id = page.request.get(f"{url}/api/images").json()[0]["id"]
    made = page.request.post(f"{url}/api/images/{image_id}/annotations",
                             data={"category": "patch", "rle": {"size": rle["size"], "counts": rle["counts"]}})
    assert made.status == 201
    page.reload()
    page.wait_for_selector("#annotations li >> nth=1")
    page.click("#annotations li >> text=patch")
    with page.expect_response(lambda r: r.url.endswith("/remove")) as removal:
        page.click("#remove-preview")
    assert removal.value.status == 200
    page.wait_for_function("document.getElementById('remove-preview').textContent.startsWith('Back')")
    page.screenshot(path=str(ARTIFACTS / "browser_remove_preview.png"))
    page.click("#remove-preview")
    page.wait_for_function("document.getElementById('remove-preview').textContent === 'Remove preview'")
    assert page.errors == []

    data = json.loads(annotations.read_text())
    assert [c["name"] for c in data["categories"]] == ["red square", "patch"]
    assert len(data["annotations"]) == 2
    coco = COCO(str(annotations))
    ann = coco.loadAnns(coco.getAnnIds())[0]  # the one accepted in the page
    assert coco.loadImgs(ann["image_id"])[0]["file_name"] == "shapes.png"
    assert np.array_equal(coco.annToMask(ann).astype(bool), decode_rle(first["candidates"][1]["rle"]))


def test_everything_proposals_can_be_kept(server, page) -> None:
    pytest.importorskip("segany.amg.generator", reason="segany.amg (the automatic mask generator) is not available")
    url, annotations = server
    page.goto(url)
    page.wait_for_function("document.body.dataset.embedding === 'ready'", timeout=120_000)
    page.fill("#grid", "4")
    page.fill("#min-iou", "0")
    page.fill("#min-stability", "0")
    with page.expect_response(lambda r: r.url.endswith("/everything"), timeout=120_000) as info:
        page.click("#everything")
    assert info.value.request.post_data_json == {"points_per_side": 4, "pred_iou_thresh": 0, "stability_score_thresh": 0,
                                                 "fast": True}
    proposals = info.value.json()["proposals"]
    assert proposals, "with both thresholds at 0 every distinct mask is proposed"
    page.wait_for_selector("#proposals li")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser_proposals.png"))
    page.fill("#category-name", "proposal")  # issue 18: a proposal is kept only with a category chosen explicitly
    page.click("#add-category")  # adding a category chooses it
    page.wait_for_selector("#category-list li.selected")
    page.click("#keep")
    page.wait_for_selector("#annotations li")
    assert page.locator("#proposals li").count() == len(proposals) - 1
    data = json.loads(annotations.read_text())
    assert len(data["annotations"]) == 1
    assert np.array_equal(decode_rle(data["annotations"][0]["segmentation"]), decode_rle(proposals[0]["rle"]))
    assert page.errors == []


@pytest.mark.parametrize("server", ["gdino"], indirect=True)
def test_found_proposal_is_kept_with_its_category(server, page) -> None:
    pytest.importorskip("transformers", reason="the text extra (transformers) is not installed")
    url, annotations = server
    page.goto(url)
    page.wait_for_function("document.body.dataset.embedding === 'ready'", timeout=120_000)
    page.fill("#category", "typed")  # a found proposal keeps its own category, not this one
    page.fill("#find-text", "cat, dog")
    with page.expect_response(lambda r: r.url.endswith("/find"), timeout=120_000) as info:
        page.click("#find")
    assert info.value.status == 200, info.value.text()
    proposals = info.value.json()["proposals"]
    assert proposals, "box threshold 0: every query survives up to NMS"
    page.wait_for_selector("#proposals li")
    assert proposals[0]["category"] in page.locator("#proposals li").first.inner_text()
    page.click("#keep")
    page.wait_for_selector("#annotations li")
    coco = COCO(str(annotations))
    [annotation] = coco.loadAnns(coco.getAnnIds())
    assert coco.loadCats(annotation["category_id"])[0]["name"] == proposals[0]["category"]
    assert np.array_equal(coco.annToMask(annotation).astype(bool), decode_rle(proposals[0]["rle"]))
    assert page.errors == []
