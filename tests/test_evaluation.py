"""Clicker placement on hand-made masks, metric arithmetic, protocols and ``segany eval`` end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segany.cli import main
from segany.data.datasets import Dataset, Sample, Target, open_dataset
from segany.evaluation import evaluate, format_table, iou, miou_at, next_click_ritm, next_click_sam, noc, nof
from segany.evaluation.clicker import inner_distance
from segany.evaluation.protocols import gt_box
from tiny_models import model_args


def square(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


# --- clicker ---------------------------------------------------------------------------------------

def test_first_click_is_the_centre_of_the_object():
    gt = square(40, 50, 10, 21, 20, 31)  # 11x11 square, centre (25, 15)
    for rule in (next_click_ritm, next_click_sam):
        click = rule(gt, np.zeros_like(gt))
        assert (click.x, click.y, click.positive) == (25, 15, True)


def test_image_border_counts_as_boundary():
    gt = square(20, 40, 0, 20, 0, 9)  # a strip along the left border, 9 wide, full height
    click = next_click_ritm(gt, np.zeros_like(gt))
    # distance 5 holds for rows 4..15 once the border counts as boundary; ties go to the first in row-major order
    assert (click.x, click.y) == (4, 4)


def test_ritm_picks_the_larger_error_region_and_labels_it():
    gt = square(60, 60, 10, 30, 10, 30)
    pred = gt.copy()
    pred[12:16, 12:16] = False          # small false negative (4x4)
    pred[35:55, 35:55] = True           # large false positive (20x20), centre (44.5, 44.5)
    click = next_click_ritm(gt, pred)
    assert not click.positive and 44 <= click.x <= 45 and 44 <= click.y <= 45
    pred2 = gt.copy()
    pred2[12:28, 12:28] = False         # now the false negative is larger
    pred2[40:43, 40:43] = True
    click = next_click_ritm(gt, pred2)
    assert click.positive and 19 <= click.x <= 20 and 19 <= click.y <= 20


def test_sam_rule_measures_the_whole_error_region():
    gt = square(30, 60, 5, 25, 5, 25)
    pred = square(30, 60, 5, 25, 5, 45)  # 20x20 false positive strip beside the object
    click = next_click_sam(gt, pred)
    assert not click.positive and 34 <= click.x <= 35


def test_clicked_pixels_and_ignore_band_are_skipped():
    gt = square(21, 21, 0, 21, 0, 21)
    clicked = np.zeros_like(gt)
    clicked[10, 10] = True
    click = next_click_ritm(gt, np.zeros_like(gt), clicked=clicked)
    assert (click.x, click.y) == (9, 9)  # distance 10 is next best; (9, 9) comes first in row-major order
    ignore = ~square(21, 21, 3, 6, 3, 6)
    click = next_click_ritm(gt, np.zeros_like(gt), ignore=ignore)
    assert (click.x, click.y) == (4, 4)
    assert next_click_ritm(gt, gt) is None and next_click_sam(gt, gt) is None


def test_inner_distance_is_opencv_exact_euclidean():
    region = square(9, 9, 0, 9, 0, 9)
    d = inner_distance(region)
    assert d[4, 4] == pytest.approx(5.0) and d[0, 0] == pytest.approx(1.0)


# --- metrics ---------------------------------------------------------------------------------------

def test_iou_ignores_the_band():
    gt = square(10, 10, 2, 8, 2, 8)          # 36 px
    pred = square(10, 10, 2, 8, 2, 10)       # 48 px, 12 false positives in columns 8-9
    assert iou(pred, gt) == pytest.approx(36 / 48)
    ignore = np.zeros_like(gt)
    ignore[:, 8:] = True
    assert iou(pred, gt, ignore) == pytest.approx(1.0)
    assert iou(np.zeros_like(gt), np.zeros_like(gt)) == 1.0


def test_noc_charges_max_clicks_and_nof_counts_failures():
    ious = [[0.5, 0.86, 0.91], [0.95], [0.1, 0.2, 0.3]]
    assert noc(ious, 0.85, max_clicks=20) == pytest.approx((2 + 1 + 20) / 3)
    assert noc(ious, 0.90, max_clicks=20) == pytest.approx((3 + 1 + 20) / 3)
    assert nof(ious, 0.90, max_clicks=20) == 1
    assert noc([[0.5, 0.5, 0.95]], 0.9, max_clicks=2) == 2  # reached only after the limit
    assert miou_at([[0.2, 0.4], [0.6, 0.8]], [1, 2, 3]) == {1: pytest.approx(0.4), 2: pytest.approx(0.6)}


def test_gt_box_is_tight_xyxy():
    assert gt_box(square(20, 30, 3, 8, 5, 12)).tolist() == [5, 3, 11, 7]


# --- protocols with a perfect (cheating) predictor check the bookkeeping -----------------------------

class OraclePredictor:
    """Returns the ground truth after ``needed`` prompts: IoU curve and NoC are known in advance."""

    def __init__(self, gt: np.ndarray, needed: int) -> None:
        self.gt, self.needed = gt, needed

    def set_image(self, image: np.ndarray) -> None:
        self.calls = 0

    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None, multimask_output=True, return_logits=False):
        self.calls += 1
        mask = self.gt if self.calls >= self.needed else np.zeros_like(self.gt)
        c = 3 if multimask_output else 1
        return np.repeat(mask[None], c, 0), np.linspace(1, 0.5, c), np.zeros((c, 256, 256), np.float32)


def _one_object_dataset(gt: np.ndarray) -> Dataset:
    image = np.zeros((*gt.shape, 3), dtype=np.uint8)
    sample = Sample("obj", None, lambda size: Target(gt))  # type: ignore[arg-type]
    object.__setattr__(sample, "load", lambda: (image, Target(gt)))
    return Dataset("toy", (sample,))


def test_noc_protocol_bookkeeping():
    gt = square(30, 30, 5, 25, 5, 25)
    summary = evaluate(OraclePredictor(gt, needed=4), _one_object_dataset(gt), "noc", max_clicks=6, progress=False)
    assert summary["noc@90"] == 4 and summary["nof@90"] == 0 and summary["num_objects"] == 1
    assert summary["objects"][0]["ious"] == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert summary["miou@k"]["4"] == 1.0 and summary["miou@k"]["1"] == 0.0
    summary = evaluate(OraclePredictor(gt, needed=99), _one_object_dataset(gt), "noc", max_clicks=5, progress=False)
    assert summary["noc@90"] == 5 and summary["nof@90"] == 1


def test_sam_and_box_protocols_bookkeeping():
    gt = square(30, 30, 5, 25, 5, 25)
    summary = evaluate(OraclePredictor(gt, needed=2), _one_object_dataset(gt), "sam", progress=False)
    assert list(summary["miou@k"]) == ["1", "2", "3", "5", "9"]
    assert summary["miou@k"]["1"] == 0.0 and summary["miou@k"]["2"] == 1.0 and summary["noc@90"] is None
    summary = evaluate(OraclePredictor(gt, needed=1), _one_object_dataset(gt), "box", progress=False)
    assert summary["miou@k"] == {"1": 1.0} and summary["objects"][0]["box"] == [5, 5, 24, 24]


@pytest.mark.parametrize(("max_clicks", "columns"), [(3, ["1", "3"]), (5, ["1", "5"]), (1, ["1"]), (20, ["1", "5", "20"])])
def test_noc_table_has_one_column_per_measured_click_count(max_clicks: int, columns: list[str]) -> None:
    """No NaN column for clicks never made (mIoU@5 with --max-clicks 3), no column twice."""
    gt = square(30, 30, 5, 25, 5, 25)
    summary = evaluate(OraclePredictor(gt, needed=2), _one_object_dataset(gt), "noc", max_clicks=max_clicks, progress=False)
    header, rule, row = format_table(summary).splitlines()[1:]
    assert rule.count("---") == header.count("|") - 1 == row.count("|") - 1
    assert header.split(" | ")[4:] == [f"mIoU@{k}" for k in columns[:-1]] + [f"mIoU@{columns[-1]} |"]
    assert "nan" not in row and len(row.split(" | ")) == len(header.split(" | "))
    assert row.split(" | ")[4:] == [f"{summary['miou@k'][k]:.3f}" for k in columns[:-1]] + [f"{summary['miou@k'][columns[-1]]:.3f} |"]


# --- segany eval end to end -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory):
    """Three 72x96 images with a coloured object on a textured background, as a generic folder."""
    root = tmp_path_factory.mktemp("data")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        image = rng.integers(60, 110, size=(72, 96, 3), dtype=np.uint8)
        mask = np.zeros((72, 96), dtype=np.uint8)
        mask[15 + i * 3:50, 20:70 - i * 5] = 255
        image[mask > 0] = (200, 40 + 40 * i, 30)
        Image.fromarray(image).save(root / "images" / f"img{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"img{i}.png")
    return root


def test_eval_cli_classic_end_to_end(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["eval", "--model", "classic", "--dataset", str(tiny_dataset), "--limit", "3", "--quiet",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for key in ("dataset", "protocol", "num_objects", "noc@85", "noc@90", "nof@90", "miou@k", "objects"):
        assert key in result
    assert result["num_objects"] == 3 and len(result["objects"]) == 3 and len(result["miou@k"]) == 20
    assert result["noc@90"] <= 3 and result["miou@k"]["1"] > 0.85  # an easy, well-separated object
    assert "NoC@90" in capsys.readouterr().out


def test_eval_cli_tiny_sam_end_to_end(tiny_model_files, tiny_dataset, tmp_path):
    out = tmp_path / "r.json"
    assert main(["eval", *model_args(tiny_model_files), "--dataset", str(tiny_dataset), "--limit", "3",
                 "--max-clicks", "2", "--quiet", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["num_objects"] == 3 and all(len(o["ious"]) == 2 for o in result["objects"])
    assert all(0.0 <= v <= 1.0 for o in result["objects"] for v in o["ious"])


def test_eval_cli_on_a_benchmark_with_the_box_protocol(tmp_path, monkeypatch):
    from conftest import SHARED

    monkeypatch.setenv("SEGANY_DATA", str(SHARED / "data"))
    try:
        open_dataset("grabcut")
    except Exception as exc:  # absent shared data
        pytest.skip(f"GrabCut not available: {exc}")
    out = tmp_path / "r.json"
    assert main(["eval", "--model", "classic", "--dataset", "grabcut", "--protocol", "box", "--limit", "2", "--quiet",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["protocol"] == "box" and result["num_objects"] == 2 and result["miou@k"]["1"] > 0.5


def test_eval_cli_errors_are_typed(capsys):
    assert main(["eval", "--model", "classic", "--dataset", "no_such_dataset"]) == 2
    assert "unknown dataset" in capsys.readouterr().err


def test_eval_cli_saves_after_each_object_and_resumes(tiny_dataset, tmp_path):
    out = tmp_path / "r.json"
    args = ["eval", "--model", "classic", "--dataset", str(tiny_dataset), "--protocol", "box", "--quiet", "--out", str(out)]
    assert main(args + ["--limit", "2"]) == 0
    first = json.loads(out.read_text())
    assert first["complete"] and first["num_objects"] == 2
    assert main(args + ["--resume"]) == 0
    resumed = json.loads(out.read_text())
    assert resumed["num_objects"] == 3 and resumed["objects"][:2] == first["objects"]
    assert main(["eval", "--model", "classic", "--dataset", str(tiny_dataset), "--protocol", "noc", "--quiet",
                 "--out", str(out), "--resume"]) == 2  # a different evaluation is refused, not mixed in
