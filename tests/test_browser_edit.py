"""Editing accepted annotations in the page and the one undo/redo history, in Chromium: refine an
accepted mask with clicks (union / difference with SAM's mask of the click), the brush and the
eraser, and see the COCO file change; undo and redo an accept, a delete, a relabel and an edit,
with the server as the source of truth (the COCO file read back with pycocotools)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from browser import ARTIFACTS, HEIGHT, WIDTH, predict_answer, screen_point, view_scale
from segany.masks import decode_rle, encode_rle

READY = "document.body.dataset.embedding === 'ready'"
SAVABLE = "!document.getElementById('edit-tools').hidden && !document.getElementById('save-edit').disabled"


def _open(page, url: str) -> tuple[object, float]:
    page.goto(url)
    page.wait_for_function(READY, timeout=120_000)
    canvas = page.locator("#canvas")
    return canvas, view_scale(page)


def _click_the_red_square(page, url: str) -> dict:
    """Open the page, click the red square (its masks listed) and name the category; the predict answer."""
    _open(page, url)
    _, answer = predict_answer(page, lambda: page.mouse.click(*screen_point(page, 55, 65)))
    page.wait_for_selector("#candidates li")
    page.fill("#category", "red square")
    return answer


def _stored_mask(annotations, ann_id: int) -> np.ndarray:
    coco = COCO(str(annotations))
    return coco.annToMask(coco.loadAnns([ann_id])[0]).astype(bool)


def _saved(page, action) -> tuple[dict, dict]:
    """Run action, which PATCHes an annotation; the request body and the answer."""
    with page.expect_response(lambda r: r.request.method == "PATCH") as info:
        action()
    assert info.value.status == 200, info.value.text()
    return info.value.request.post_data_json, info.value.json()


def _stroke(page, a: tuple[float, float], b: tuple[float, float]) -> None:
    """Drag the mouse from image pixel a to b."""
    page.mouse.move(*screen_point(page, *a))
    page.mouse.down()
    page.mouse.move(*screen_point(page, *b), steps=8)
    page.mouse.up()


def _segment_distance(width: int, height: int, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    ys, xs = np.mgrid[:height, :width] + 0.5
    (ax, ay), (bx, by) = a, b
    t = np.clip(((xs - ax) * (bx - ax) + (ys - ay) * (by - ay)) / ((bx - ax) ** 2 + (by - ay) ** 2), 0, 1)
    return np.hypot(xs - ax - t * (bx - ax), ys - ay - t * (by - ay))


def _answers_late(page, methods: list[str], delay_ms: int) -> None:
    """The page gets the answers of these requests delay_ms after they came (a remote server)."""
    page.add_init_script(f"""{{ const fetch = window.fetch, methods = {json.dumps(methods)};
      window.fetch = async (...args) => {{
        const answer = await fetch(...args);
        if (args[1] && methods.includes(args[1].method)) await new Promise((done) => setTimeout(done, {delay_ms}));
        return answer;
      }}; }}""")


@pytest.mark.parametrize("answer_delay_ms", [0, 400], ids=["saves-answered-at-once", "saves-answered-late"])
def test_refine_an_accepted_mask_with_clicks_brush_and_eraser(server, page, answer_delay_ms: int) -> None:
    """With saves answered late (a remote server), the next stroke, Esc and Ctrl+Z come while a save
    is out: strokes land where they are drawn, and the history keeps the order they were made in."""
    url, annotations = server
    if answer_delay_ms:
        _answers_late(page, ["PATCH"], answer_delay_ms)
    start = np.zeros((HEIGHT, WIDTH), bool)
    start[40:60, 30:50] = True
    image_id = page.request.get(f"{url}/api/images").json()[0]["id"]
    made = page.request.post(f"{url}/api/images/{image_id}/annotations",
                             data={"category": "square", "rle": encode_rle(start)}).json()
    canvas, zoom = _open(page, url)
    page.click("#annotations li")
    assert page.locator("#edit-tools").is_visible()

    def at(x: float, y: float) -> dict:  # image pixels to a canvas position, through the page's zoom and pan
        (sx, sy), box = screen_point(page, x, y), canvas.bounding_box()
        return {"x": sx - box["x"], "y": sy - box["y"]}

    # a click adds SAM's best mask for it, a right click subtracts one; Enter saves the result
    body, added = predict_answer(page, lambda: canvas.click(position=at(150, 100)))
    assert np.allclose(body["points"], [[150, 100]], atol=1 / zoom) and body["labels"] == [1]
    body, removed = predict_answer(page, lambda: canvas.click(position=at(60, 45), button="right"))
    expected = (start | decode_rle(added["candidates"][0]["rle"])) & ~decode_rle(removed["candidates"][0]["rle"])
    assert expected.any() and not np.array_equal(expected, start)
    page.wait_for_function(SAVABLE)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser_edit_clicks.png"))
    sent, answer = _saved(page, lambda: page.keyboard.press("Enter"))
    assert sent["rle"]["counts"] == encode_rle(expected)["counts"]  # the page's RLE encoder is pycocotools'
    assert answer["id"] == made["id"] and answer["area"] == expected.sum()
    assert np.array_equal(_stored_mask(annotations, made["id"]), expected)

    # the brush paints a stroke in image pixels at this zoom; the size is in image pixels
    page.keyboard.press("b")
    page.keyboard.press("]")
    radius = int(page.inner_text("#brush-size").split()[0])
    assert radius > 10
    a, b = (20, 130), (90, 125)
    _stroke(page, a, b)
    page.screenshot(path=str(ARTIFACTS / "browser_edit_brush.png"))
    _saved(page, lambda: page.click("#save-edit"))
    brushed = _stored_mask(annotations, made["id"])
    distance = _segment_distance(WIDTH, HEIGHT, a, b)
    assert brushed[distance < radius - 1].all()
    assert np.array_equal(brushed[distance > radius + 1], expected[distance > radius + 1])

    # the eraser (Shift+B) takes a stroke out again; Esc drops the unsaved change, Ctrl+Z brings it back
    page.keyboard.press("Shift+B")
    _stroke(page, a, b)
    page.keyboard.press("Escape")
    assert page.locator("#edit-tools").is_hidden() and "Ctrl+Z" in page.inner_text("#status")
    page.keyboard.press("Control+z")
    page.wait_for_function(SAVABLE)
    _saved(page, lambda: page.keyboard.press("Enter"))
    erased = _stored_mask(annotations, made["id"])
    assert not erased[distance < radius - 1].any()
    assert np.array_equal(erased[distance > radius + 1], expected[distance > radius + 1])

    # undo the eraser's save: the server's mask is the brushed one again
    _saved(page, lambda: page.keyboard.press("Control+z"))
    assert np.array_equal(_stored_mask(annotations, made["id"]), brushed)
    assert page.errors == []


def test_page_rle_encoder_is_pycocotools(server, page) -> None:
    url, _ = server
    page.goto(url)
    rng = np.random.default_rng(0)
    masks = [rng.random((HEIGHT, WIDTH)) < p for p in (0.02, 0.5, 0.98)]
    masks += [np.ones((HEIGHT, WIDTH), bool), np.zeros((HEIGHT, WIDTH), bool)]
    masks[-1][HEIGHT - 1, WIDTH - 1] = True  # one long run of 0s, then a single 1 at the very end
    masks += [rng.random((HEIGHT, WIDTH - 1)) < 0.3, rng.random((7, 5)) < 0.5]  # rows not 4-byte aligned
    encoded = page.evaluate("""async (masks) => {
      const { maskToRle } = await import('/static/js/edit.js');
      return masks.map(([m, height, width]) => maskToRle(Uint8Array.from(m), height, width));
    }""", [[m.ravel().astype(int).tolist(), *m.shape] for m in masks])
    for mask, rle in zip(masks, encoded):
        assert rle == {"size": list(mask.shape), "counts": encode_rle(mask)["counts"]}


def test_undo_and_redo_accept_delete_and_relabel(server, page) -> None:
    url, annotations = server
    first = _click_the_red_square(page, url)
    page.press("#category", "Enter")
    page.wait_for_selector("#annotations li")
    [accepted] = json.loads(annotations.read_text())["annotations"]
    mask = _stored_mask(annotations, accepted["id"])
    assert np.array_equal(mask, decode_rle(first["candidates"][0]["rle"]))

    def request(method: str, key: str) -> dict:
        with page.expect_response(lambda r: r.request.method == method) as info:
            page.keyboard.press(key)
        assert info.value.ok, info.value.text()
        return info.value

    # undo the accept: the annotation leaves the COCO file, the prompt and its masks come back
    request("DELETE", "Control+z")
    assert json.loads(annotations.read_text())["annotations"] == []
    page.wait_for_selector("#candidates li >> nth=2")
    assert page.locator("#annotations li").count() == 0
    # redo it: back under the same id, with the same mask
    request("PUT", "Control+Shift+Z")
    page.wait_for_selector("#annotations li")
    assert [a["id"] for a in json.loads(annotations.read_text())["annotations"]] == [accepted["id"]]
    assert np.array_equal(_stored_mask(annotations, accepted["id"]), mask)

    # relabel, undone with Ctrl+Z and redone with Ctrl+Y
    page.click("#annotations li")
    page.fill("#category", "blob")
    page.click("#relabel")
    page.wait_for_selector("#annotations li >> text=blob")
    request("PATCH", "Control+z")
    page.wait_for_selector("#annotations li >> text=red square")
    request("PATCH", "Control+y")
    page.wait_for_selector("#annotations li >> text=blob")

    # Delete: gone, with a visible way back; Ctrl+Z restores it with its id, mask and category
    request("DELETE", "Delete")
    assert json.loads(annotations.read_text())["annotations"] == []
    assert "Ctrl+Z to undo" in page.inner_text("#status")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser_deleted_undo.png"))
    request("PUT", "Control+z")
    page.wait_for_selector("#annotations li")
    coco = COCO(str(annotations))
    [restored] = coco.loadAnns(coco.getAnnIds())
    assert restored["id"] == accepted["id"] and coco.loadCats(restored["category_id"])[0]["name"] == "blob"
    assert np.array_equal(coco.annToMask(restored).astype(bool), mask)
    assert page.errors == []


def test_delete_then_undo_at_once_with_late_answers(server, page) -> None:
    """Ctrl+Z pressed while the delete's answer is still out undoes the delete (it waits for it), not
    the step before it; the annotation comes back with its id."""
    url, annotations = server
    _answers_late(page, ["DELETE", "PUT"], 400)
    _click_the_red_square(page, url)
    page.press("#category", "Enter")
    page.wait_for_selector("#annotations li")
    [accepted] = json.loads(annotations.read_text())["annotations"]
    page.click("#annotations li")
    with page.expect_response(lambda r: r.request.method == "PUT") as restored:
        page.keyboard.press("Delete")
        page.keyboard.press("Control+z")
    assert restored.value.ok, restored.value.text()
    page.wait_for_function("document.getElementById('status').textContent.includes('undid delete')")
    assert [a["id"] for a in json.loads(annotations.read_text())["annotations"]] == [accepted["id"]]
    assert page.locator("#annotations li").count() == 1 and page.errors == []


def test_accept_then_undo_at_once_with_late_answers(server, page) -> None:
    """Enter then Ctrl+Z before the accept's answer is in: the undo takes the accept back (DELETE once
    the annotation exists) and its prompt and masks come back; a second Enter saves nothing twice."""
    url, annotations = server
    _answers_late(page, ["POST"], 400)
    _click_the_red_square(page, url)
    with page.expect_response(lambda r: r.request.method == "DELETE") as undone:
        page.press("#category", "Enter")
        page.keyboard.press("Enter")
        page.keyboard.press("Control+z")
    assert undone.value.ok, undone.value.text()
    page.wait_for_selector("#candidates li >> nth=2")
    assert json.loads(annotations.read_text())["annotations"] == []
    assert page.locator("#annotations li").count() == 0 and page.errors == []


def test_a_failed_accept_leaves_its_prompts_and_no_step(server, page) -> None:
    """The server refuses the accept: the prompt and its masks are back, the error is shown, and the
    history has no accept to undo."""
    url, annotations = server
    page.route("**/annotations", lambda route: route.fulfill(status=507, json={"detail": "disk full"})
               if route.request.method == "POST" else route.fallback())
    _click_the_red_square(page, url)
    page.press("#category", "Enter")
    page.wait_for_function("document.getElementById('status').textContent.includes('disk full')")
    assert page.locator("#candidates li").count() == 3
    assert "accept" not in page.get_attribute("#undo", "title")
    assert not annotations.exists() or json.loads(annotations.read_text())["annotations"] == []


def test_undo_and_redo_keep_and_drop_of_proposals(server, page) -> None:
    pytest.importorskip("segany.amg.generator", reason="segany.amg (the automatic mask generator) is not available")
    url, annotations = server
    _open(page, url)
    page.fill("#grid", "4")
    page.fill("#min-iou", "0")
    page.fill("#min-stability", "0")
    with page.expect_response(lambda r: r.url.endswith("/everything"), timeout=120_000) as info:
        page.click("#everything")
    count = len(info.value.json()["proposals"])
    assert count >= 1, "with both thresholds at 0 every distinct mask is proposed"
    rows = "document.querySelectorAll('#proposals li').length"
    page.wait_for_function(f"{rows} === {count}")
    page.fill("#category-name", "proposal")  # a proposal is kept only with a category chosen explicitly
    page.click("#add-category")
    page.wait_for_selector("#category-list li.selected")
    page.click("#keep")
    page.wait_for_selector("#annotations li")
    [kept] = json.loads(annotations.read_text())["annotations"]

    def undo_redo(key: str, method: str, rows_after: int) -> None:
        with page.expect_response(lambda r: r.request.method == method):
            page.keyboard.press(key)
        page.wait_for_function(f"{rows} === {rows_after}")

    undo_redo("Control+z", "DELETE", count)  # the keep: the annotation leaves the file, the proposal is back
    assert json.loads(annotations.read_text())["annotations"] == []
    undo_redo("Control+Shift+Z", "PUT", count - 1)
    assert json.loads(annotations.read_text())["annotations"] == [kept]
    undo_redo("Control+z", "DELETE", count)
    page.keyboard.press("x")  # a drop, and its undo: nothing asked of the server
    page.wait_for_function(f"{rows} === {count - 1}")
    page.keyboard.press("Control+z")
    page.wait_for_function(f"{rows} === {count}")
    assert json.loads(annotations.read_text())["annotations"] == []
    assert page.errors == []
