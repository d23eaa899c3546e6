"""Latencies of the web annotator measured in the browser (headless Chromium, Playwright, the page's
performance.now()): click-to-mask (mouse down → the candidate's overlay drawn) and hover (pointer
move → preview drawn, the 80 ms debounce included, and without it; decoded in the browser by
onnxruntime-web, or by the server without it), median and p90 over ``--tries`` random points on one
GrabCut photo.

    .venv/bin/python benchmarks/annotator_latency.py --model classic vit_t --tries 20

``vit_t`` is MobileSAM's architecture with random weights (``segany.build_model``): latency does not
depend on weight values. The server is the real command (``segany serve``, started as
``benchmarks/serve_load.py`` does), once with onnxruntime-web (fetched once into the segany cache,
``--web-runtime download``) and once without it. Writes benchmarks/results/annotator_latency.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))
from benchmarks.serve_load import free_port, random_checkpoint, start_server

SHARED = Path(os.environ.get("SEGANY_SHARED", REPO.parent / "shared"))
IMAGE = SHARED / "data" / "grabcut" / "images" / "106024.jpg"

# In the page: mouse down → the candidates list rebuilt, which refresh() does right before draw()
# in the same task, so the observer (a microtask) runs once the overlay is drawn.
CLICK_PROBE = """() => {
  window.benchClicks = [];
  let down = null;
  window.addEventListener('mousedown', () => { down = performance.now(); }, true);
  new MutationObserver(() => {
    if (down !== null && document.querySelectorAll('#candidates li').length) {
      window.benchClicks.push(performance.now() - down);
      down = null;
    }
  }).observe(document.getElementById('candidates'), { childList: true });
}"""


def percentiles(values: list[float]) -> dict[str, float]:
    return {"median_ms": float(np.median(values)), "p90_ms": float(np.percentile(values, 90)), "n": len(values)}


@contextmanager
def serving(images: Path, name: str, checkpoint: Path | None, runtime: str, threads: int | None,
            log: Path) -> Iterator[str]:
    """``segany serve --web-runtime RUNTIME`` on a free port (``benchmarks/serve_load.py``'s way); its URL."""
    port = free_port()
    process = start_server(images, argparse.Namespace(model=name, threads=threads), checkpoint, port, log,
                           ("--web-runtime", runtime))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(30)


def measure(page, url: str, points: np.ndarray, hover_source: str) -> dict:
    page.goto(url)
    page.wait_for_function("document.body.dataset.embedding === 'ready'", timeout=300_000)
    page.evaluate(CLICK_PROBE)
    screen = lambda x, y: page.evaluate("([x, y]) => window.seganyView.toScreen(x, y)", [x, y])
    hover, decode = [], []  # pointer move → drawn; after the debounce → drawn
    for i, (x, y) in enumerate(np.vstack([points[:1], points])):  # the first, a warm-up, is not counted
        page.mouse.move(*screen(x, y))
        page.wait_for_function("([x, y]) => { const l = window.seganyHover.last;"
                               " return l && Math.abs(l.point[0] - x) < 1 && Math.abs(l.point[1] - y) < 1; }",
                               arg=[float(x), float(y)], timeout=120_000)
        last = page.evaluate("(() => { const l = window.seganyHover.last;"
                             " return [l.source, l.drawn - l.moved, l.drawn - l.started]; })()")
        assert last[0] == hover_source, f"the preview came from the {last[0]}, expected the {hover_source}"
        if i:
            hover.append(last[1])
            decode.append(last[2])
    clicks = []
    for i, (x, y) in enumerate(np.vstack([points[:1], points])):
        page.keyboard.press("Escape")  # a new object: the click's mouse move starts no preview (mouse down cancels it)
        count = page.evaluate("window.benchClicks.length")
        page.mouse.click(*screen(x, y))
        page.wait_for_function(f"window.benchClicks.length > {count}", timeout=120_000)
        if i:
            clicks.append(page.evaluate("window.benchClicks[window.benchClicks.length - 1]"))
    return {"click_to_mask": percentiles(clicks), "hover": percentiles(hover), "hover_after_debounce": percentiles(decode)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["classic", "vit_t"], help="classic, vit_t, vit_b, ...")
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--image", type=Path, default=IMAGE)
    parser.add_argument("--threads", type=int, default=None, help="the server's OMP_NUM_THREADS (default: torch's)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "annotator_latency.json")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from browser import CHROMIUM, FLAGS
    from segany.cli.serve import ensure_web_runtime

    runtime = ensure_web_runtime(progress=False)
    width, height = Image.open(args.image).size
    points = np.random.default_rng(0).uniform([0.1 * width, 0.1 * height], [0.9 * width, 0.9 * height], (args.tries, 2))
    rows = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        folder = Path(tmp)
        images = folder / "images"
        images.mkdir()
        shutil.copy(args.image, images / args.image.name)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        for name in args.model:
            checkpoint = random_checkpoint(name, folder)
            runs = [("browser", str(runtime)), ("server", "none")] if name != "classic" else [("server", "none")]
            for source, choice in runs:
                with serving(images, name, checkpoint, choice, args.threads, folder / f"{name}-{source}.log") as url:
                    page = browser.new_page(viewport={"width": 1200, "height": 720})
                    try:
                        result = measure(page, url, points, source)
                    finally:
                        page.close()
                rows.append({"model": name, "hover_decoder": source, **result})
                print(json.dumps(rows[-1]), flush=True)
        browser.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"image": args.image.name, "size": [height, width], "tries": args.tries,
                                    "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                                    "threads": args.threads, "load": os.getloadavg(),
                                    "rows": rows}, indent=2))
    print("| model | hover decoded by | click → mask ms, median / p90 | hover ms, median / p90 | hover after the debounce |")
    print("|---|---|---|---|---|")
    for row in rows:
        cells = [f"{row[k]['median_ms']:.0f} / {row[k]['p90_ms']:.0f}" for k in ("click_to_mask", "hover",
                                                                                "hover_after_debounce")]
        print(f"| {row['model']} | {row['hover_decoder']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
