"""The annotator's in-page mask work for editing an accepted annotation, timed in Chromium: the
page's RLE encoder (``maskToRle``, js/edit.js: what a save PATCHes), the decoder (``rleToMask``,
js/masks.js: every edit step starts from it) and a brush stroke (``paint``), on a 4000x2893 mask
(the issue's photo size) holding a disc. Median and spread over ``--tries`` runs.

    .venv/bin/python benchmarks/annotator_edit.py [--tries 9]

Needs Chromium (``/usr/bin/chromium``) and the playwright package; serves the page's static folder
with the standard library's HTTP server (no model, no segany server).
"""
from __future__ import annotations

import argparse
import functools
import http.server
import json
import threading
from pathlib import Path

STATIC = Path(__file__).resolve().parents[1] / "src" / "segany" / "serve" / "static"
CHROMIUM = "/usr/bin/chromium"

SCRIPT = """async ([height, width, tries]) => {
  const { maskToRle, paint } = await import('/js/edit.js');
  const { rleToMask } = await import('/js/masks.js');
  const mask = new Uint8Array(height * width);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) mask[y * width + x] = (x - width / 2) ** 2 + (y - height / 2) ** 2 < 1e6 ? 1 : 0;
  }
  const stroke = Array.from({ length: 50 }, (_, i) => [500 + i * 40, height / 2 + 300 * Math.sin(i / 5)]);
  const times = { encode: [], decode: [], brush: [] };
  let rle = null;
  for (let i = 0; i < tries; i++) {
    let start = performance.now();
    rle = maskToRle(mask, height, width);
    times.encode.push(performance.now() - start);
    start = performance.now();
    rleToMask(rle);
    times.decode.push(performance.now() - start);
    start = performance.now();
    paint(mask, height, width, stroke, 40, 1);
    times.brush.push(performance.now() - start);
  }
  return times;
}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=9)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(STATIC)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    height, width = 2893, 4000
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{server.server_port}/index.html")
        times = page.evaluate(SCRIPT, [height, width, args.tries])
        browser.close()
    server.shutdown()
    summary = {name: {"median_ms": round(sorted(values)[len(values) // 2], 1), "min_ms": round(min(values), 1),
                      "max_ms": round(max(values), 1)} for name, values in times.items()}
    print(json.dumps({"mask": f"{width}x{height}", "tries": args.tries, **summary}, indent=1))


if __name__ == "__main__":
    main()
