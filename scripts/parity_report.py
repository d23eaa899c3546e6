"""Print the measured distance to the official outputs for every golden case (for release notes).

Run: .venv/bin/python scripts/parity_report.py [--shared ../shared]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from golden_cases import run_case  # noqa: E402
from segany import Predictor, load_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", default=os.environ.get("SEGANY_SHARED", REPO.parent / "shared"))
    golden = Path(parser.parse_args().shared) / "golden"
    torch.set_num_threads(2)
    sam = load_model(golden / "tiny_sam.json", checkpoint=golden / "tiny_sam.pth")
    state = torch.load(golden / "tiny_mobilesam_image_encoder.pth", weights_only=True)
    state.update({k: v for k, v in torch.load(golden / "tiny_sam.pth", weights_only=True).items()
                  if not k.startswith("image_encoder.")})
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(state, Path(tmp) / "m.pth")
        mobile = load_model(golden / "tiny_mobilesam.json", checkpoint=Path(tmp) / "m.pth")
    models = {"sam": sam, "mobilesam": mobile}
    predictors: dict[tuple[str, bytes], Predictor] = {}

    def predictor_for(family: str, image: np.ndarray) -> Predictor:
        key = (family, image.tobytes())
        if key not in predictors:
            predictors[key] = Predictor(models[family])
            predictors[key].set_image(image)
        return predictors[key]

    print(f"{'case':<42} {'low_res max|d|':>14} {'iou max|d|':>11} {'mask px differ':>15}")
    cases = json.loads((golden / "cases.json").read_text())
    for family in ("sam", "mobilesam"):
        for case in cases[family]:
            data = np.load(golden / case["file"])
            logits, iou, low_res = run_case(predictor_for(family, data["image"]), data)
            differ = int(((logits > 0) != data["masks"]).sum())
            print(f"{case['file']:<42} {np.abs(low_res - data['low_res_logits']).max():>14.2e} "
                  f"{np.abs(iou - data['iou_predictions']).max():>11.2e} {differ:>15d}")
    for family, file, stride in (("sam", "sam_embedding_photo.npz", 1), ("sam", "sam_embedding_small.npz", 4),
                                 ("mobilesam", "mobilesam_embedding_photo.npz", 2)):
        data = np.load(golden / file)
        key = "features" if stride == 1 else f"features_stride{stride}"
        ours = predictor_for(family, data["image"]).get_image_embedding().numpy()[:, :, ::stride, ::stride]
        print(f"{file:<42} embedding max|d| {np.abs(ours - data[key]).max():.2e}")


if __name__ == "__main__":
    main()
