"""Class-agnostic average recall of ``segany everything`` on a COCO dataset, by pycocotools' COCOeval.

Runs ``segany everything IMAGES -o OUT --format coco --coco-images GT.json`` (resumable: a second
run reuses the results), then ``COCOeval(iouType="segm")`` with ``params.useCats = 0`` and
``maxDets = [1, 10, 100]`` over the images that were segmented, and prints AR@1/10/100 (and AP)::

    PYTHONPATH=src python scripts/coco_ar.py --model classic            # ../shared/data/coco_val2017_tiny
    PYTHONPATH=src python scripts/coco_ar.py --data DIR --out OUT --model vit_b
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

DEFAULT_DATA = Path(os.environ.get("SEGANY_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data" / "coco_val2017_tiny"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"folder with images/ and annotations/ (default {DEFAULT_DATA})")
    parser.add_argument("--gt", type=Path, default=None, help="ground truth (default DATA/annotations/instances_val2017.json)")
    parser.add_argument("--out", type=Path, default=Path("coco_ar_out"), help="output folder of segany everything")
    parser.add_argument("--model", default="classic", help="segany model (default classic)")
    args, extra = parser.parse_known_args()  # anything else goes to segany everything

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from segany.cli import main as segany

    gt_file = args.gt or args.data / "annotations" / "instances_val2017.json"
    command = ["everything", str(args.data / "images"), "-o", str(args.out), "--model", args.model,
               "--format", "coco", "--coco-images", str(gt_file), *extra]
    print("segany " + " ".join(command), file=sys.stderr)
    start = time.perf_counter()
    code = segany(command)
    seconds = time.perf_counter() - start
    if code not in (0, 1):
        return code
    results = json.loads((args.out / "annotations.json").read_text())
    gt = COCO(str(gt_file))
    evaluation = COCOeval(gt, gt.loadRes(results["annotations"]), iouType="segm")
    evaluation.params.useCats = 0
    evaluation.params.imgIds = sorted(image["id"] for image in results["images"])
    evaluation.params.maxDets = [1, 10, 100]
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    stats = evaluation.stats
    print(json.dumps({
        "model": args.model, "images": len(results["images"]), "masks": len(results["annotations"]),
        "AR@1": round(float(stats[6]), 4), "AR@10": round(float(stats[7]), 4), "AR@100": round(float(stats[8]), 4),
        "AP@100": round(float(stats[0]), 4), "segany_seconds": round(seconds, 1),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
