"""The annotator's data side in a real browser (issue 18 items 4-8): image states and progress kept in
the COCO file and the export, proposals kept only with an explicit category, project categories
renamed and merged, the selected mask's polygon, and errors that clear after a server restart."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from browser import ARTIFACTS, CANVAS_PIXELS, HEIGHT, WIDTH, predict_answer
from segany.masks import decode_rle

READY = "document.body.dataset.embedding === 'ready'"
STATUS_ERROR = "document.getElementById('status').classList.contains('error')"


def _open(page, url: str) -> float:
    """Open the page, wait for the first image's embedding; the canvas zoom (screen px per image px)."""
    page.goto(url)
    page.wait_for_function(READY, timeout=120_000)
    return page.locator("#canvas").bounding_box()["width"] / WIDTH


def _current(page) -> int:
    return page.evaluate("[...document.querySelectorAll('#images li')].findIndex((li) => li.classList.contains('current'))")


def _states(page) -> list[str]:
    return page.evaluate("[...document.querySelectorAll('#images li')].map((li) => li.dataset.state)")


def test_image_states_progress_and_export(server, labelling, page) -> None:
    served, annotations = labelling
    zoom = _open(page, served.url)
    assert page.inner_text("#progress") == "0/3 done" and _states(page) == ["not_started"] * 3
    with page.expect_response(lambda r: r.url.endswith("/state")):
        page.keyboard.press("m")  # a.png has no objects
    page.wait_for_function("document.getElementById('progress').textContent === '1/3 done (1 empty)'")
    page.keyboard.press("u")  # next unfinished: b.png
    page.wait_for_function("document.querySelector('#images li.current').title === 'b.png'")
    page.wait_for_function(READY, timeout=120_000)
    predict_answer(page, lambda: page.locator("#canvas").click(position={"x": 55 * zoom, "y": 65 * zoom}))
    page.fill("#category", "red")
    page.press("#category", "Enter")
    page.wait_for_selector("#annotations li")
    assert _states(page) == ["empty", "in_progress", "not_started"]  # the first annotation starts the image
    page.click("#mark-done")
    page.wait_for_function("document.getElementById('progress').textContent === '2/3 done (1 empty)'")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser_progress.png"))
    page.keyboard.press("Shift+U")  # previous unfinished, wrapping round: c.png
    page.wait_for_function("document.querySelector('#images li.current').title === 'c.png'")

    on_disk = json.loads(annotations.read_text())  # the empty image is kept without annotations
    assert {i["file_name"]: i["segany_state"] for i in on_disk["images"]} == {"a.png": "empty", "b.png": "done"}
    exported = page.request.get(f"{served.url}/api/export/coco").json()
    assert {i["file_name"]: i["segany_state"] for i in exported["images"]} == {
        "a.png": "empty", "b.png": "done", "c.png": "not_started"}

    # keyboard: Tab moves the focus through the page (it no longer cycles candidates); a row opens with Enter
    page.locator("#images li").first.focus()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.title") == "b.png"
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#images li.current').title === 'b.png'")
    page.wait_for_selector("#annotations li")
    assert page.locator("#annotations li").first.get_attribute("tabindex") == "0"
    assert page.errors == []


@pytest.mark.parametrize("labelling", ["classic"], indirect=True)  # its proposals: the squares and the rest
def test_proposal_is_kept_only_with_an_explicit_category(server, labelling, page) -> None:
    served, annotations = labelling
    _open(page, served.url)
    assert page.locator("#category-list li").all_inner_texts() == ["red\n0\n1", "blue\n0\n2"]  # name, count, hotkey
    with page.expect_response(lambda r: r.url.endswith("/everything"), timeout=120_000) as info:
        page.click("#everything")
    assert info.value.request.post_data_json == {"fast": True}  # the classic engine honours none of the form's options
    proposals = info.value.json()["proposals"]
    assert len(proposals) >= 3, "the classic engine proposes both squares and the background"
    assert "iou" not in page.inner_text("#proposals")  # nor filters on SAM's scores
    page.wait_for_selector("#proposals li")
    colours = page.evaluate("[...document.querySelectorAll('#proposals .swatch')].map((s) => s.style.background)")
    # the focused proposal is outlined in white (the picture has no white): only round its edge
    pixels = np.asarray(page.evaluate(CANVAS_PIXELS), np.uint8).reshape(HEIGHT, WIDTH, 4)
    white = (pixels[..., :3] >= 250).all(-1)
    focused = decode_rle(proposals[0]["rle"]).astype(np.uint8)
    kernel = np.ones((7, 7), np.uint8)
    ring = cv2.dilate(focused, kernel).astype(bool) & ~cv2.erode(focused, kernel).astype(bool)
    assert white.sum() > 20 and not white[~ring].any()

    page.fill("#category", "llama")  # typed for the accept form: K must not use it
    page.press("#category", "Escape")  # leave the field: keys go to the page
    page.keyboard.press("k")
    page.wait_for_function(STATUS_ERROR)
    assert "choose a category" in page.inner_text("#status")
    assert page.locator("#categories-panel.ask").count() == 1
    assert not json.loads(annotations.read_text())["annotations"] and page.locator("#annotations li").count() == 0

    with page.expect_response(lambda r: r.url.endswith("/annotations") and r.request.method == "POST") as saved:
        page.keyboard.press("2")  # category hotkey 2: keep the focused proposal as "blue"
    assert saved.value.request.post_data_json["category"] == "blue"
    page.wait_for_selector("#annotations li")
    [kept] = json.loads(annotations.read_text())["annotations"]
    assert {c["id"]: c["name"] for c in json.loads(annotations.read_text())["categories"]}[kept["category_id"]] == "blue"
    after = page.evaluate("[...document.querySelectorAll('#proposals .swatch')].map((s) => s.style.background)")
    assert after == colours[1:]  # stable colours: the others keep theirs
    assert "blue" in page.inner_text("#chosen-category")
    page.keyboard.press("x")
    page.keyboard.press("k")  # K now uses the category chosen by the hotkey
    page.wait_for_function("document.querySelectorAll('#annotations li').length === 2")
    page.screenshot(path=str(ARTIFACTS / "browser_review.png"))

    # rename blue to navy (same id), then merge navy into red: annotations move to red's id
    page.fill("#category-name", "navy")
    page.click("#rename-category")
    page.wait_for_function("document.getElementById('annotations').textContent.includes('navy')")
    page.fill("#category-name", "red")
    page.click("#merge-category")
    page.wait_for_function("!document.getElementById('annotations').textContent.includes('navy')")
    data = json.loads(annotations.read_text())
    assert [c["name"] for c in data["categories"]] == ["red"]
    assert {a["category_id"] for a in data["annotations"]} == {data["categories"][0]["id"]}

    # the selected annotation's polygon outline, computed by the server
    page.locator("#annotations li").first.click()
    page.wait_for_function("Number(document.body.dataset.polygonPoints) >= 3")
    page.screenshot(path=str(ARTIFACTS / "browser_polygon.png"))
    assert page.errors == []


@pytest.mark.parametrize("labelling", ["classic"], indirect=True)
def test_errors_clear_after_a_server_restart(server, labelling, page) -> None:
    served, _ = labelling
    zoom = _open(page, served.url)
    # the classic engine ignores SAM's grid and score thresholds: the form does not offer them
    assert page.locator("#min-iou").is_hidden() and page.locator("#grid").is_hidden()
    assert page.locator("#min-stability").is_hidden()
    page.evaluate("""() => {
      window.busySeen = false;
      new MutationObserver(() => { if (!document.getElementById('busy').hidden) window.busySeen = true; })
        .observe(document.getElementById('busy'), { attributes: true });
    }""")
    click = {"x": 55 * zoom, "y": 65 * zoom}
    predict_answer(page, lambda: page.locator("#canvas").click(position=click))
    assert page.evaluate("window.busySeen") and page.locator("#busy").is_hidden()
    page.keyboard.press("Escape")

    served.stop()
    page.keyboard.press("n")
    page.wait_for_function(STATUS_ERROR)
    assert "cannot reach the server" in page.inner_text("#status") and _current(page) == 0
    page.locator("#canvas").click(position=click)  # a prompt whose predict fails is not kept
    page.wait_for_function("document.body.dataset.requests === '0'")
    assert page.locator("#candidates li").count() == 0
    page.screenshot(path=str(ARTIFACTS / "browser_server_down.png"))

    served.start()
    body, _ = predict_answer(page, lambda: page.locator("#canvas").click(position=click))
    assert len(body["points"]) == 1  # no orphan point from the failed click
    page.wait_for_function(f"!({STATUS_ERROR})")
    assert "cannot reach" not in page.inner_text("#status")
    page.keyboard.press("n")  # the failed N did not move the index: this one goes to the second image
    page.wait_for_function("document.querySelector('#images li.current').title === 'b.png'")
    assert page.errors == []
