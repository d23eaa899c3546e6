"""The annotator's video page timed in Chromium on a DAVIS clip: a click on the object until its
mask is drawn, Track until every frame is done (per frame), scrubbing to a frame not seen yet until
it is drawn with its masks, and the track's J (mean IoU with the clip's annotations) from that one
click; a screenshot of a tracked frame goes to test-artifacts/.

    .venv/bin/python benchmarks/annotator_video.py [--clip DIR] [--frames 20] [--model classic]

The click is at the centre of the first annotated mask. Needs Chromium (``/usr/bin/chromium``), the
playwright package and the shared DAVIS clips (``SEGANY_SHARED``, default ../shared).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
SHARED = Path(os.environ.get("SEGANY_SHARED", REPO.parent / "shared"))
CLIP = SHARED / "data" / "davis2016_clips" / "JPEGImages" / "480p" / "blackswan"


def annotation(clip: Path, frame: int) -> np.ndarray:
    path = clip.parents[2] / "Annotations" / clip.parent.name / clip.name / f"{frame:05d}.png"
    return np.asarray(Image.open(path).convert("L")) > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, default=CLIP, help="a DAVIS JPEGImages/480p/<name> folder")
    parser.add_argument("--frames", type=int, default=20, help="the clip's first N frames")
    parser.add_argument("--model", default="classic", help="a model with a tracker (classic, sam2.1_hiera_t, ...)")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    import segany
    from browser import ARTIFACTS, CHROMIUM, FLAGS, serving
    from segany.masks import decode_rle
    from segany.serve import create_app

    root = Path(tempfile.mkdtemp())
    (root / "images").mkdir()
    frames = root / "videos" / args.clip.name
    frames.mkdir(parents=True)
    for i in range(args.frames):
        shutil.copy(args.clip / f"{i:05d}.jpg", frames)
    width = Image.open(frames / "00000.jpg").width
    ys, xs = np.nonzero(annotation(args.clip, 0))
    app = create_app(root / "images", segany.load_model(args.model), videos=root / "videos")
    with serving(app) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        page.goto(f"{url}/video")
        page.wait_for_function("document.body.dataset.shown === '0'")
        canvas = page.locator("#canvas")
        zoom = canvas.bounding_box()["width"] / width
        start = time.perf_counter()
        canvas.click(position={"x": xs.mean() * zoom, "y": ys.mean() * zoom})
        page.wait_for_function("document.getElementById('objects').textContent.includes('frame 0') "
                               "&& !document.body.dataset.busy")
        click_ms = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        page.keyboard.press("t")
        page.wait_for_function("document.getElementById('track-state').textContent.startsWith('tracked')",
                               timeout=3_600_000)
        track_ms = (time.perf_counter() - start) * 1000 / args.frames
        scrub = []
        for frame in range(1, args.frames):
            start = time.perf_counter()
            page.locator("#frame").fill(str(frame))
            page.wait_for_function(f"document.body.dataset.shown === '{frame}'")
            scrub.append((time.perf_counter() - start) * 1000)
        page.screenshot(path=str(ARTIFACTS / f"video_{args.clip.name}.png"))
        vid = page.request.get(f"{url}/api/videos").json()[0]["id"]
        ious = []
        for frame in range(args.frames):
            objects = page.request.get(f"{url}/api/videos/{vid}/frames/{frame}/masks").json()["objects"]
            truth = annotation(args.clip, frame)
            mask = decode_rle(objects[0]["rle"]) if objects else np.zeros_like(truth)
            ious.append((mask & truth).sum() / max(1, (mask | truth).sum()))
        browser.close()
    print(f"{args.clip.name}, {args.frames} frames, {args.model}: click to mask {click_ms:.0f} ms, "
          f"track {track_ms:.0f} ms/frame, scrub {statistics.median(scrub):.0f} ms "
          f"(max {max(scrub):.0f}), J {np.mean(ious):.3f} from one click")


if __name__ == "__main__":
    main()
