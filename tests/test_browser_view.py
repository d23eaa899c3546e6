"""Zoom, pan and the hover preview of the web annotator in Chromium: prompts keep image coordinates
at any zoom; the preview under the cursor matches the server's best single-point mask, decoded in
the browser (onnxruntime-web on the exported ONNX decoder) or, without the runtime, by the server."""
from __future__ import annotations

import numpy as np
import pytest

import browser
from browser import ARTIFACTS, MARKER_PIXELS, away_from, canvas_pixels, changed, predict_answer, screen_point
from segany.masks import decode_rle

READY = "document.body.dataset.embedding === 'ready'"
LAST_HOVER = "window.seganyHover.last && window.seganyHover.last.source === '{}'"


def open_page(page, url: str) -> None:
    page.goto(url)
    page.wait_for_function(READY, timeout=120_000)


def test_the_image_keeps_its_place_while_requests_are_out(server, page) -> None:
    """The header is one line whatever it shows (the busy indicator, a long status): the canvas, and
    so the image under a stroke being drawn, does not move when a request goes out or comes back."""
    url, _ = server
    open_page(page, url)
    where = "() => [document.getElementById('canvas').getBoundingClientRect().toJSON(), window.seganyView.toScreen(20, 130)]"
    before = page.evaluate(where)
    page.evaluate("""() => {
      document.getElementById('busy').hidden = false;
      document.getElementById('status').textContent = 'a status much longer than the header has room for '.repeat(4);
    }""")
    page.wait_for_timeout(100)  # a frame: the canvas's resize observer refits the view
    assert page.evaluate(where) == before


def wheel_zoom(page, cursor: tuple[int, int], factor: float) -> float:
    """Wheel-zoom by ``factor`` with the mouse at ``cursor`` (viewport pixels); the new scale."""
    before = browser.view_scale(page)
    page.mouse.move(*cursor)
    page.mouse.wheel(0, -np.log(factor) / 0.0015)  # the page zooms by exp(-deltaY * 0.0015)
    page.wait_for_function(f"window.seganyView.scale > {before * factor * 0.99}")
    return browser.view_scale(page)


def drag(page, start: tuple[float, float], delta: tuple[float, float], button: str = "left") -> None:
    page.mouse.move(*start)
    page.mouse.down(button=button)
    page.mouse.move(start[0] + delta[0], start[1] + delta[1], steps=4)
    page.mouse.up(button=button)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_zoom_and_pan_keep_clicks_in_image_coordinates(server, page) -> None:
    url, _ = server
    open_page(page, url)
    page.keyboard.press("h")  # hover preview off: only the clicks' masks are drawn here
    fit = browser.view_scale(page)
    target = (55.3, 65.7)  # a point of the red square, in image pixels
    cursor = tuple(round(v) for v in screen_point(page, *target))  # mouse events have whole pixels
    under = page.evaluate("([x, y]) => window.seganyView.toImage(x, y)", cursor)
    zoom = wheel_zoom(page, cursor, 4.0)
    assert zoom == pytest.approx(4 * fit, rel=0.01)
    assert np.allclose(page.evaluate("([x, y]) => window.seganyView.toImage(x, y)", cursor), under, atol=1e-6), \
        "the wheel zooms about the cursor"
    assert page.inner_text("#zoom") == f"{round(zoom * 100)}%"

    before = canvas_pixels(page)
    body, first = predict_answer(page, lambda: page.mouse.click(*screen_point(page, *target)))
    assert np.allclose(body["points"], [target], atol=1 / zoom) and body["labels"] == [1]
    page.wait_for_selector("#candidates li >> nth=2")
    # the candidate's overlay is drawn through the zoom: the visible pixels it tints are the mask's
    best = decode_rle(first["candidates"][0]["rle"])
    after = canvas_pixels(page)
    shown = (after[..., 3] > 0) & away_from([target], MARKER_PIXELS / zoom + 1)
    assert shown.sum() > 1000 and not shown.all(), "part of the zoomed image is off the canvas"
    assert np.mean(changed(before, after)[shown] == best[shown]) > 0.99
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser_zoomed.png"))

    # Space + drag pans (no prompt added); so does a middle-button drag
    before = screen_point(page, *target)
    page.keyboard.down(" ")
    drag(page, before, (-120, -80))
    page.keyboard.up(" ")
    assert np.allclose(screen_point(page, *target), (before[0] - 120, before[1] - 80), atol=0.5)
    drag(page, screen_point(page, *target), (30, 50), button="middle")
    assert np.allclose(screen_point(page, *target), (before[0] - 90, before[1] - 30), atol=0.5)
    assert page.locator("#candidates li").count() == 3, "panning adds no prompt"
    page.screenshot(path=str(ARTIFACTS / "browser_panned.png"))

    second = (60.8, 70.2)
    body, _ = predict_answer(page, lambda: page.mouse.click(*screen_point(page, *second), button="right"))
    assert np.allclose(body["points"], [target, second], atol=1 / zoom) and body["labels"] == [1, 0]

    page.keyboard.press("0")
    assert browser.view_scale(page) == pytest.approx(fit)
    page.keyboard.press("+")
    assert browser.view_scale(page) == pytest.approx(1.25 * fit)
    page.click("#fit")
    assert browser.view_scale(page) == pytest.approx(fit)
    assert page.errors == []


def hover_at(page, point: tuple[float, float], source: str) -> dict:
    page.mouse.move(*screen_point(page, *point))
    page.wait_for_function(LAST_HOVER.format(source), timeout=60_000)
    return page.evaluate("(() => { const l = window.seganyHover.last; return {point: l.point, mask: Array.from(l.mask)}; })()")


def server_best(page, url: str, point: list[float]) -> np.ndarray:
    image_id = page.request.get(f"{url}/api/images").json()[0]["id"]
    answer = page.request.post(f"{url}/api/images/{image_id}/predict",
                               data={"points": [point], "labels": [1], "multimask": True})
    assert answer.status == 200, answer.text()
    return decode_rle(answer.json()["candidates"][0]["rle"])


def check_preview(page, url: str, source: str, artifact: str) -> float:
    """Hover over the red square: the preview's mask against the server's best single-point mask (IoU)."""
    before = canvas_pixels(page)
    hover = hover_at(page, (55, 65), source)
    expected = server_best(page, url, hover["point"])
    mask = np.asarray(hover["mask"], bool).reshape(expected.shape)
    assert expected.any()
    tinted = changed(before, canvas_pixels(page))
    assert np.mean(tinted == mask) > 0.99, "the preview drawn is its mask"
    assert page.locator("#candidates li").count() == 0, "a preview adds no prompt"
    page.screenshot(path=str(ARTIFACTS / artifact))
    page.keyboard.press("h")  # off: the preview goes
    assert not changed(before, canvas_pixels(page)).any()
    return iou(mask, expected)


@pytest.mark.parametrize("server", ["web-runtime"], indirect=True)
def test_hover_preview_decoded_in_the_browser_matches_the_server(server, page) -> None:
    url, _ = server
    hover_requests = []
    page.on("request", lambda r: hover_requests.append(r.url) if "hover=1" in r.url else None)
    open_page(page, url)
    ARTIFACTS.mkdir(exist_ok=True)
    assert check_preview(page, url, "browser", "browser_hover_onnx.png") >= 0.99
    assert hover_requests == [], "the browser decoder needs no request per preview"
    assert page.errors == []


def test_hover_preview_falls_back_to_the_server(server, page) -> None:
    url, _ = server
    open_page(page, url)
    info = page.request.get(f"{url}/api/browser-decoder").json()
    assert info["runtime"] is None and "web-runtime" in info["reason"]
    ARTIFACTS.mkdir(exist_ok=True)
    assert check_preview(page, url, "server", "browser_hover_server.png") == 1.0
    page.keyboard.press("h")  # on again: a click is a prompt as usual, the preview goes
    body, _ = predict_answer(page, lambda: page.mouse.click(*screen_point(page, 55, 65)))
    assert body["points"] == [[pytest.approx(55, abs=1), pytest.approx(65, abs=1)]]
    assert page.errors == []
