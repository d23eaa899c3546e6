"""The README's annotator screenshot: ``segany serve`` on three GrabCut photos with the weight-free
classic engine, in headless Chromium: one click on the object, its candidates, accepted as
"foreground", the image marked done, then a click on the next photo (its candidate masks shown).

    SEGANY_SHARED=../shared .venv/bin/python scripts/annotator_screenshot.py -o docs/images/annotator.png
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "src"))

from browser import CHROMIUM, FLAGS, Served  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

import segany  # noqa: E402
from segany.serve import create_app  # noqa: E402

SHARED = Path(os.environ.get("SEGANY_SHARED", REPO.parent / "shared"))
PHOTOS = {"106024.jpg": (235, 192), "124080.jpg": (227, 162), "153093.jpg": (235, 150)}  # a point on each object, in list order


def click(page, x: float, y: float) -> None:
    with page.expect_response(lambda r: r.url.endswith("/predict"), timeout=120_000):
        page.mouse.click(*page.evaluate("([x, y]) => window.seganyView.toScreen(x, y)", [x, y]))
    page.wait_for_selector("#candidates li", timeout=120_000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "images" / "annotator.png")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "grabcut"
        images.mkdir()
        for name in PHOTOS:
            shutil.copy(SHARED / "data" / "grabcut" / "images" / name, images / name)
        (Path(tmp) / "classes.txt").write_text("foreground\nbackground object\n")
        model = segany.load_model("classic")
        served = Served(lambda: create_app(images, model, Path(tmp) / "coco.json", model_name="classic",
                                           categories=Path(tmp) / "classes.txt"))
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
                page = browser.new_page(viewport={"width": 1280, "height": 760})
                page.goto(served.url)
                page.wait_for_function("document.body.dataset.embedding === 'ready'", timeout=120_000)
                click(page, *PHOTOS["106024.jpg"])
                page.fill("#category", "foreground")
                page.press("#category", "Enter")
                page.wait_for_selector("#annotations li")
                page.keyboard.press("d")  # done
                page.wait_for_function("document.querySelector('#images li[data-state=done]') !== null")
                page.keyboard.press("n")
                page.wait_for_function("document.body.dataset.embedding === 'ready'", timeout=120_000)
                click(page, *PHOTOS["124080.jpg"])
                args.output.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.output))
                browser.close()
        finally:
            served.stop()
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
