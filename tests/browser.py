"""Browser-test support: the annotator served by uvicorn in a thread on a free loopback port, a page
of Debian's Chromium (headless, driven by Playwright), canvas-pixel helpers. Test modules import
fixtures (``server``, ``page``) are registered for every test module by ``conftest.py`` and skip the
test where Chromium, Playwright or uvicorn is missing. Screenshots go to ``ARTIFACTS`` (git-ignored)."""
from __future__ import annotations

import base64
import contextlib
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segany.serve import create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDTH, HEIGHT = 200, 150
MARKER_PIXELS = 8  # point markers: 6 screen px discs with a 2 px outline, whatever the zoom

# The canvas as shown, sampled at each image pixel's centre through the page's view transform
# (window.seganyView: the canvas fills the stage, zoomed and panned): RGBA at image resolution, 0 where
# the pixel is off the canvas. CANVAS_PIXELS answers a list (slow: ~2 s per call); canvas_pixels() an array.
_SAMPLE = """(() => {
  const c = document.getElementById('canvas'), view = window.seganyView, d = view.dpr;
  const all = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const out = new Uint8Array(4 * view.width * view.height);
  for (let y = 0, o = 0; y < view.height; y++) for (let x = 0; x < view.width; x++, o += 4) {
    const cx = Math.floor(((x + 0.5) * view.scale + view.x) * d), cy = Math.floor(((y + 0.5) * view.scale + view.y) * d);
    if (cx >= 0 && cy >= 0 && cx < c.width && cy < c.height) out.set(all.subarray(4 * (cy * c.width + cx), 4 * (cy * c.width + cx) + 4), o);
  }
  return out;
})()"""
CANVAS_PIXELS = f"() => Array.from({_SAMPLE})"
_CANVAS_BASE64 = f"""() => {{
  const bytes = {_SAMPLE};
  let text = '';
  for (let i = 0; i < bytes.length; i += 8192) text += String.fromCharCode(...bytes.subarray(i, i + 8192));
  return btoa(text);
}}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_browser() -> None:
    """Skip the test where uvicorn or Chromium is missing (Playwright is checked by ``page``)."""
    pytest.importorskip("uvicorn", reason="the serve extra (uvicorn) is not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (apt-get install chromium); the browser test needs it")


@pytest.fixture()
def server(request: pytest.FixtureRequest, tmp_path: Path, tiny_random_sam) -> Iterator[tuple[str, Path]]:
    """The annotator on a free port; parametrized indirectly with "gdino", with a tiny random Grounding
    DINO (box threshold 0: every query is proposed) for the page's 'find' field; with "web-runtime",
    serving onnxruntime-web (fetched once into the segany cache; skips when it cannot be) for the
    in-browser decoder."""
    require_browser()
    images = tmp_path / "images"
    images.mkdir()
    picture = np.full((HEIGHT, WIDTH, 3), (225, 228, 220), np.uint8)
    picture[30:100, 20:90] = (200, 40, 40)
    picture[60:140, 110:190] = (40, 80, 200)
    Image.fromarray(picture).save(images / "shapes.png")
    annotations = tmp_path / "coco.json"
    detector = None
    if getattr(request, "param", None) == "gdino":
        from segany.text import GroundingDino
        from tiny_text_models import save_tiny_grounding_dino

        detector = GroundingDino(save_tiny_grounding_dino(tmp_path / "gdino"), box_threshold=0.0)
    runtime = web_runtime_or_skip() if getattr(request, "param", None) == "web-runtime" else None
    app = create_app(images, tiny_random_sam, annotations, model_name="tiny_random_sam", detector=detector,
                     web_runtime=runtime)
    with serving(app) as url:
        yield url, annotations


@pytest.fixture()
def page(server):
    """A 1200x720 Chromium page; ``page.errors`` collects the page's uncaught errors."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": 720})
        page.errors = []
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        yield page
        browser.close()


def changed(before: list[int], after: list[int]) -> np.ndarray:
    a = np.asarray(before, np.int16).reshape(HEIGHT, WIDTH, 4)
    b = np.asarray(after, np.int16).reshape(HEIGHT, WIDTH, 4)
    return np.abs(a - b).max(axis=2) > 8


def away_from(points: list[tuple[float, float]], radius: float) -> np.ndarray:
    ys, xs = np.mgrid[:HEIGHT, :WIDTH]
    keep = np.ones((HEIGHT, WIDTH), bool)
    for x, y in points:
        keep &= (xs + 0.5 - x) ** 2 + (ys + 0.5 - y) ** 2 > radius**2
    return keep


def predict_answer(page, action) -> tuple[dict, dict]:
    with page.expect_response(lambda r: r.url.endswith("/predict")) as info:
        action()
    response = info.value
    assert response.status == 200, response.text()
    return response.request.post_data_json, response.json()


class Served:
    """The app ``make_app()`` builds, served by uvicorn in a thread on one loopback port; ``stop()``
    then ``start()`` is a server killed and restarted in the middle of labelling (a new app on the
    same port and files, as a new process would be: a stopped app's service is closed)."""

    def __init__(self, make_app) -> None:
        self.make_app, self.port, self._server, self._thread = make_app, free_port(), None, None
        self.url = f"http://127.0.0.1:{self.port}"
        self.start()

    def start(self) -> None:
        require_browser()
        import uvicorn

        config = uvicorn.Config(self.make_app(), host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)


def shapes_picture(shift: int = 0) -> np.ndarray:
    """The two-squares test image, its squares moved right by ``shift`` pixels."""
    picture = np.full((HEIGHT, WIDTH, 3), (225, 228, 220), np.uint8)
    picture[30:100, 20 + shift:90 + shift] = (200, 40, 40)
    picture[60:140, 110:190] = (40, 80, 200)
    return picture


@pytest.fixture()
def labelling(request: pytest.FixtureRequest, tmp_path: Path, tiny_random_sam) -> Iterator[tuple[Served, Path]]:
    """A folder of three images (a.png, b.png, c.png) served with the project categories red, blue;
    the tiny random SAM, or the classic engine when parametrized indirectly with "classic"."""
    pytest.importorskip("uvicorn", reason="the serve extra (uvicorn) is not installed")
    images = tmp_path / "labelling"
    images.mkdir()
    for shift, name in enumerate(("a.png", "b.png", "c.png")):
        Image.fromarray(shapes_picture(shift)).save(images / name)
    (tmp_path / "classes.txt").write_text("red\nblue\n")
    model = tiny_random_sam
    if getattr(request, "param", None) == "classic":
        import segany

        model = segany.load_model("classic")
    annotations = tmp_path / "labelling.coco.json"
    served = Served(lambda: create_app(images, model, annotations, model_name="test", categories=tmp_path / "classes.txt"))
    yield served, annotations
    served.stop()
@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """``app`` served by uvicorn in a thread on a free loopback port: its base URL."""
    require_browser()
    served = Served(lambda: app)
    try:
        yield served.url
    finally:
        served.stop()


def web_runtime_or_skip() -> Path:
    """onnxruntime-web's folder (:func:`segany.cli.serve.ensure_web_runtime`: downloaded once
    from the npm registry, sha256-checked, into the segany cache); skips the test when unreachable."""
    from segany.cli.serve import ensure_web_runtime
    from segany.errors import WeightsUnavailableError

    try:
        return ensure_web_runtime(progress=False)
    except WeightsUnavailableError as exc:
        pytest.skip(f"onnxruntime-web is not cached and cannot be downloaded: {exc}")


def screen_point(page, x: float, y: float) -> tuple[float, float]:
    """Where image point (x, y) is on the page now (viewport pixels), through the zoom and pan."""
    sx, sy = page.evaluate("([x, y]) => window.seganyView.toScreen(x, y)", [x, y])
    return sx, sy


def view_scale(page) -> float:
    """Screen pixels per image pixel now."""
    return page.evaluate("window.seganyView.scale")


def canvas_pixels(page) -> np.ndarray:
    """The canvas as shown at image resolution, (HEIGHT, WIDTH, 4) RGBA (as CANVAS_PIXELS, fast)."""
    return np.frombuffer(base64.b64decode(page.evaluate(_CANVAS_BASE64)), np.uint8).reshape(HEIGHT, WIDTH, 4)
