"""The classic engine: seconds per click, and its NoC table next to the published classical baselines.

``python -m benchmarks.classic speed [N]``: per-click time of ``ClassicPredictor.predict`` on the
first N GrabCut images (5 RITM clicks each, previous logits fed back), wall clock and CPU, against
the reference measured in the same run: OpenCV's ``cv2.grabCut`` as shipped (its own colour-model
initialisation, full resolution) on the same trimaps.

``python -m benchmarks.classic table``: reads the ``segany eval --model classic --protocol noc``
results in benchmarks/results/classic_noc_{grabcut,berkeley,davis}.json and prints NoC@85/90
beside the published numbers of graph cut, random walker and geodesic star convexity (NoC@90 on
GrabCut / Berkeley / DAVIS-345, as tabulated in the f-BRS and RITM papers).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import REPO, RESULTS, SHARED, table, write_results

sys.path.insert(0, str(REPO / "src"))

PUBLISHED_NOC90 = {  # method -> (GrabCut, Berkeley, DAVIS-345)
    "graph cut": (10.00, 14.22, 17.41),
    "random walker": (12.30, 14.02, 18.31),
    "geodesic star convexity": (9.12, 12.57, 17.52),
}
DATASETS = ("grabcut", "berkeley", "davis")


def _opencv_reference(predictor, seeds, prior) -> None:
    """What the engine replaces: the same trimap through cv2.grabCut with OpenCV's own initialisation."""
    from segany.classic.grabcut import initial_trimap, paint_clicks

    config = predictor.model.config
    work = predictor._work
    trimap = initial_trimap(work.shape[:2], seeds, prior, round(config.seed_radius * max(work.shape[:2])))
    paint_clicks(trimap, seeds, prior, config.click_radius, config.click_reach)
    bgd, fgd = np.zeros((1, 65)), np.zeros((1, 65))
    cv2.grabCut(work, trimap, None, bgd, fgd, config.iterations, cv2.GC_INIT_WITH_MASK)


def speed(count: int) -> None:
    os.environ.setdefault("SEGANY_DATA", str(SHARED / "data"))
    from segany.classic import ClassicPredictor
    from segany.data.datasets import open_dataset
    from segany.evaluation.clicker import next_click_ritm

    predictor = ClassicPredictor()
    rows, measured = [], {"segany": [0.0, 0.0, 0], "opencv": [0.0, 0.0, 0]}
    for sample in open_dataset("grabcut")[:count]:
        image, target = sample.load()
        predictor.set_image(image)
        pred, logits = np.zeros_like(target.mask), None
        coords, labels = [], []
        clicked = np.zeros_like(target.mask)
        for _ in range(5):
            click = next_click_ritm(target.mask, pred, target.ignore, clicked)
            if click is None:
                break
            coords.append((click.x, click.y))
            labels.append(int(click.positive))
            clicked[click.y, click.x] = True
            seeds = predictor._seeds(np.array(coords, float), np.array(labels), None)
            prior = predictor._prior(logits)
            wall, cpu = time.perf_counter(), time.process_time()
            _opencv_reference(predictor, seeds, prior)
            measured["opencv"][0] += time.perf_counter() - wall
            measured["opencv"][1] += time.process_time() - cpu
            measured["opencv"][2] += 1
            wall, cpu = time.perf_counter(), time.process_time()
            masks, _, low_res = predictor.predict(np.array(coords, float), np.array(labels), mask_input=logits,
                                                  multimask_output=False)
            measured["segany"][0] += time.perf_counter() - wall
            measured["segany"][1] += time.process_time() - cpu
            measured["segany"][2] += 1
            pred, logits = masks[0], low_res[0][None]
    per = {k: (w / n, c / n) for k, (w, c, n) in measured.items()}
    rows.append(["segany classic predict (whole call)", f"{per['segany'][0]:.3f}", f"{per['segany'][1]:.3f}", "1.00"])
    rows.append(["cv2.grabCut as shipped (reference)", f"{per['opencv'][0]:.3f}", f"{per['opencv'][1]:.3f}",
                 f"{per['opencv'][1] / per['segany'][1]:.2f}"])
    print(f"classic engine, seconds per click, {measured['segany'][2]} clicks on {count} GrabCut images")
    print(table(rows, ["what", "wall s/click", "CPU s/click", "CPU ratio ref/segany"]))
    path = write_results("classic_speed", {"clicks": measured["segany"][2], "images": count,
                                           "seconds_per_click": {k: {"wall": v[0], "cpu": v[1]} for k, v in per.items()}})
    print(f"wrote {path}")


def noc_table() -> None:
    results = {}
    for name in DATASETS:
        path = RESULTS / f"classic_noc_{name}.json"
        if path.exists():
            results[name] = json.loads(Path(path).read_text())
    rows = [[method, *[f"{v:.2f}" for v in values]] for method, values in PUBLISHED_NOC90.items()]
    cells = []
    for name in DATASETS:
        r = results.get(name)
        if r is None:
            cells.append("not run")
            continue
        done = "" if r.get("complete", True) else f" (first {r['num_objects']} objects, run incomplete)"
        cells.append(f"{r['noc@90']:.2f}{done}")
    rows.append(["segany classic (this run)", *cells])
    print("NoC@90 (lower is better), RITM clicker, 20 clicks max")
    print(table(rows, ["method", "GrabCut", "Berkeley", "DAVIS-345"]))
    detail = [[n, r["num_objects"], f"{r['noc@85']:.2f}", f"{r['noc@90']:.2f}", r["nof@90"],
               f"{r['miou@k'].get('1', float('nan')):.3f}", f"{r['miou@k'].get('5', float('nan')):.3f}",
               f"{r['seconds_per_prompt']:.2f}"] for n, r in results.items()]
    print(table(detail, ["dataset", "objects", "NoC@85", "NoC@90", "NoF@90", "mIoU@1", "mIoU@5", "s/prompt"]))
    summary = {n: {k: r[k] for k in ("num_objects", "noc@85", "noc@90", "nof@90", "miou@k", "seconds_per_prompt")}
               for n, r in results.items()}
    print(f"wrote {write_results('classic_noc_table', {'published_noc90': PUBLISHED_NOC90, 'segany_classic': summary})}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "speed":
        speed(int(sys.argv[2]) if len(sys.argv) > 2 else 5)
    elif len(sys.argv) > 1 and sys.argv[1] == "table":
        noc_table()
    else:
        sys.exit("usage: python -m benchmarks.classic speed [N] | table")
