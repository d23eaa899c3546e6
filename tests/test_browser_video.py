"""The video page in a real browser, with the weight-free classic tracker on the synthetic clip of
test_serve_video: click an object, Track, scrub, correct on a later frame with a box, add a second
object, Track again, accept and download the exports. Screenshots of each state go to ARTIFACTS."""
from __future__ import annotations

import io
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image

import segany
from browser import ARTIFACTS, serving
from segany.masks import decode_rle
from segany.serve import create_app
from test_serve_video import SIDE, SPEED, H, N, W, disc_mask, iou, masks_of, square_mask, write_clip

FRAME_PIXELS = """(width) => {
  // the canvas holds a whole number of canvas pixels per frame pixel: one sample each
  const c = document.getElementById('canvas');
  const k = c.width / width, data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data, out = [];
  for (let y = 0; y < c.height; y += k) for (let x = 0; x < c.width; x += k) out.push(...data.slice(4 * (y * c.width + x), 4 * (y * c.width + x) + 4));
  return out;
}"""


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, FastAPI]]:
    """The annotator with a videos folder (one clip), tracking with the classic engine; the page
    fixture opens Chromium on it."""
    images, videos = tmp_path / "images", tmp_path / "videos"
    images.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "a.png")
    write_clip(videos / "clip")
    app = create_app(images, segany.load_model("classic"), tmp_path / "coco.json", videos=videos)
    with serving(app) as url:
        yield url, app


def pixels(page) -> np.ndarray:
    """The canvas at frame resolution."""
    return np.asarray(page.evaluate(FRAME_PIXELS, W), np.int16).reshape(H, W, 4)


def shown(page, frame: int) -> None:
    page.wait_for_function(f"document.body.dataset.shown === '{frame}' && !document.body.dataset.busy")


def prompt(page, action) -> dict:
    with page.expect_response(lambda r: r.url.endswith("/prompts") and r.request.method == "POST") as info:
        action()
    assert info.value.status == 200, info.value.text()
    page.wait_for_function("!document.body.dataset.busy")  # the page has the new prompts too
    return info.value.json()


def masks_on(page, url: str, vid: str, frame: int) -> dict[int, np.ndarray]:
    return masks_of(page.request.get(f"{url}/api/videos/{vid}/frames/{frame}/masks").json())


def tracked(page) -> None:
    with page.expect_response(lambda r: r.url.endswith("/track") and r.request.method == "POST") as info:
        page.keyboard.press("t")
    assert info.value.status == 202, info.value.text()
    page.wait_for_function("document.getElementById('track-state').textContent.startsWith('tracked')", timeout=30_000)


def hold_tracker(app: FastAPI, after: int) -> threading.Event:
    """Make the next track wait after ``after`` frames until the returned event is set."""
    tracker = app.state.videos.tracker
    propagate = tracker.propagate_in_video
    release = threading.Event()

    def held(*args, **kwargs):
        for k, out in enumerate(propagate(*args, **kwargs)):
            if k == after:
                release.wait(20)
            yield out
        tracker.propagate_in_video = propagate

    tracker.propagate_in_video = held
    return release


def test_click_track_correct_and_export_in_the_page(server, page) -> None:
    url, app = server
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{url}/video")
    shown(page, 0)
    vid = page.request.get(f"{url}/api/videos").json()[0]["id"]
    assert "shift+" in page.inner_text("#shortcuts")
    canvas = page.locator("#canvas")
    zoom = canvas.bounding_box()["width"] / W
    at = lambda x, y: {"x": x * zoom, "y": y * zoom}  # frame pixels to the canvas's screen pixels
    before = pixels(page)

    answer = prompt(page, lambda: canvas.click(position=at(16, 22)))
    mask = masks_of(answer)[1]
    assert iou(mask, square_mask(0)) > 0.8
    page.wait_for_function("document.getElementById('objects').textContent.includes('frame 0')")
    tinted = np.abs(pixels(page) - before).max(axis=2) > 8
    assert tinted[mask].mean() > 0.95 and tinted[~mask].mean() < 0.05  # the overlay is the mask (and its click)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "video_click.png"))

    # Track: the page polls the job's progress; clicks wait until it is done
    release = hold_tracker(app, after=3)
    page.keyboard.press("t")
    page.wait_for_function("document.getElementById('track-state').textContent === 'tracking: 3 / 10 frames'")
    assert page.locator("#progress").evaluate("p => p.value") == 3 and page.locator("#stop").is_enabled()
    page.screenshot(path=str(ARTIFACTS / "video_tracking.png"))
    canvas.click(position=at(60, 10))
    assert "wait for it or Stop" in page.inner_text("#status")
    release.set()
    page.wait_for_function("document.getElementById('track-state').textContent.startsWith('tracked')", timeout=30_000)
    assert page.locator("#progress").evaluate("p => p.value === p.max")
    assert len(page.request.get(f"{url}/api/videos/{vid}").json()["prompts"]) == 1  # the refused click sent nothing
    page.keyboard.press("End")
    shown(page, N - 1)
    assert "frame 9 / 9" in page.inner_text("#frame-label")
    assert iou(masks_on(page, url, vid, N - 1)[1], square_mask(N - 1)) > 0.6
    page.screenshot(path=str(ARTIFACTS / "video_tracked.png"))

    # a correction on frame 7: a box around the square there
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    shown(page, 7)
    x0 = 8 + SPEED * 7

    def drag() -> None:
        box = canvas.bounding_box()
        page.mouse.move(box["x"] + x0 * zoom, box["y"] + 14 * zoom)
        page.mouse.down()
        page.mouse.move(box["x"] + (x0 + SIDE) * zoom, box["y"] + (14 + SIDE) * zoom, steps=4)
        page.mouse.up()

    correction = masks_of(prompt(page, drag))[1]
    assert iou(correction, square_mask(7)) > 0.8
    page.wait_for_function("document.getElementById('track-state').textContent.startsWith('prompts changed')")
    assert page.locator("#accept").is_disabled()
    page.screenshot(path=str(ARTIFACTS / "video_correction.png"))
    # a background click joins the box; Z takes it back
    with page.expect_request(lambda r: r.url.endswith("/prompts") and r.method == "POST") as sent:
        prompt(page, lambda: canvas.click(position=at(x0 + 3, 16), button="right"))
    assert sent.value.post_data_json["labels"] == [0] and np.allclose(sent.value.post_data_json["box"], [x0, 14, x0 + SIDE, 14 + SIDE], atol=0.1)
    undone = masks_of(prompt(page, lambda: page.keyboard.press("z")))[1]
    assert np.array_equal(undone, correction)

    # a second object on the same frame, then Track again
    page.keyboard.press("n")
    assert "object 2" in page.inner_text("#objects li.selected")
    second = masks_of(prompt(page, lambda: canvas.click(position=at(58, 42))))
    assert set(second) == {1, 2} and iou(second[2], disc_mask()) > 0.7
    tracked(page)
    page.focus("#frame")
    page.keyboard.press("Home")  # the slider itself, moved with the keyboard
    shown(page, 0)
    first = masks_on(page, url, vid, 0)
    assert iou(first[1], square_mask(0)) > 0.8 and iou(first[2], disc_mask()) > 0.7
    assert np.array_equal(masks_on(page, url, vid, 7)[1], correction)
    page.screenshot(path=str(ARTIFACTS / "video_retracked.png"))

    page.locator("#canvas").focus()
    page.keyboard.press("a")
    page.wait_for_selector("#export-coco:not(.disabled)")
    assert "accepted objects 1, 2" in page.inner_text("#track-state")
    page.screenshot(path=str(ARTIFACTS / "video_accepted.png"))
    with page.expect_download() as download:
        page.click("#export-coco")
    document = json.loads(Path(download.value.path()).read_bytes())
    assert [a["obj_id"] for a in document["annotations"]] == [1, 2] and document["videos"][0]["length"] == N
    assert np.array_equal(decode_rle(document["annotations"][0]["segmentations"][7]), correction)
    archive = page.request.get(f"{url}{page.get_attribute('#export-davis', 'href')}")
    assert len(zipfile.ZipFile(io.BytesIO(archive.body())).namelist()) == N
    assert page.errors == []
