"""The VOS benchmark (segany.evaluation.vos): DAVIS J and F on shapes with known answers, the
DAVIS-layout loader, and ``segany eval --protocol vos`` on a tiny synthetic dataset."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segany.cli import main
from segany.data.datasets import data_root, load_davis_videos, open_video_dataset
from segany.errors import DatasetError
from segany.evaluation.vos import disk, f_measure, object_centre, seg2bmap
from test_classic_tracker import make_video


def square(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[top:top + side, left:left + side] = True
    return mask


def test_seg2bmap_of_a_square_has_four_sides_of_pixels() -> None:
    # the inner right column and bottom row, the outer left column and top row, and the outer corner
    boundary = seg2bmap(square(50, 10, 12, 9))
    assert boundary.sum() == 4 * 9
    assert boundary[18, 12:21].all() and boundary[10:19, 20].all()  # bottom row, right column (inside)
    assert boundary[9, 11:21].all() and boundary[10:19, 11].all()  # top row, left column (outside)
    assert not seg2bmap(np.zeros((5, 5), dtype=bool)).any()


def test_disk_is_skimages() -> None:
    assert disk(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert disk(2).sum() == 13 and disk(2)[0].tolist() == [0, 0, 1, 0, 0] and disk(2)[1].tolist() == [0, 1, 1, 1, 0]


def test_f_measure_on_known_shapes() -> None:
    gt = square(100, 20, 20, 20)
    assert f_measure(gt, gt) == 1.0
    empty = np.zeros_like(gt)
    assert f_measure(empty, empty) == 1.0
    assert f_measure(empty, gt) == 0.0 and f_measure(gt, empty) == 0.0
    # a far extra blob: recall 1, precision 4*20 / (4*20 + 4*10) = 2/3, F = 2P/(P+1) = 0.8
    extra = gt | square(100, 70, 70, 10)
    assert f_measure(extra, gt) == pytest.approx(0.8)
    # tolerance ceil(0.008 * diagonal) = 2 px on 100x100: a 2 px shift is still a perfect contour
    assert f_measure(np.roll(gt, 2, axis=1), gt) == 1.0
    assert f_measure(np.roll(gt, 6, axis=1), gt) < 0.8
    with pytest.raises(DatasetError):
        f_measure(gt, gt[:50])


def test_object_centre_is_the_deepest_interior_point() -> None:
    assert object_centre(square(60, 10, 20, 21)) == (30, 20)


def write_davis(root: Path, sequences: dict[str, tuple[list[np.ndarray], list[list[np.ndarray]]]],
                resolution: str = "480p") -> Path:
    for name, (frames, masks) in sequences.items():
        images = root / "JPEGImages" / resolution / name
        annotations = root / "Annotations" / resolution / name
        images.mkdir(parents=True)
        annotations.mkdir(parents=True)
        for k, (frame, frame_masks) in enumerate(zip(frames, masks)):
            Image.fromarray(frame).save(images / f"{k:05d}.jpg", quality=95)
            label = np.zeros(frame.shape[:2], dtype=np.uint8)
            for m in frame_masks:
                label[m] = 255
            Image.fromarray(label).save(annotations / f"{k:05d}.png")
    return root


@pytest.fixture
def tiny_davis(tmp_path: Path) -> Path:
    return write_davis(tmp_path / "tiny", {
        "disc": make_video([((25, 36), (5, 0.5), (250, 200, 60))], n=6),
        "other": make_video([((80, 40), (-4, 0), (60, 230, 230))], seed=1, n=5),
    })


def test_loader_pairs_frames_and_annotations(tiny_davis: Path) -> None:
    dataset = load_davis_videos(tiny_davis)
    assert [s.name for s in dataset] == ["disc", "other"] and dataset.name == "tiny"
    disc = dataset[0]
    assert len(disc.frame_files) == 6 and sorted(disc.annotations) == list(range(6))
    assert disc.object_ids() == [255] and disc.annotation(3).shape == (72, 112)
    assert open_video_dataset(tiny_davis).name == "tiny"
    with pytest.raises(DatasetError, match="DAVIS layout"):
        load_davis_videos(tiny_davis / "JPEGImages")
    with pytest.raises(DatasetError, match="unknown video dataset"):
        open_video_dataset(tiny_davis / "nothing")


def test_eval_cli_vos_on_a_tiny_dataset(tiny_davis: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "vos.json"
    assert main(["eval", "--protocol", "vos", "--dataset", str(tiny_davis), "--model", "classic",
                 "--out", str(out), "--quiet"]) == 0
    summary = json.loads(out.read_text())
    assert (summary["dataset"], summary["protocol"], summary["prompt"]) == ("tiny", "vos", "mask")
    assert set(summary["sequences"]) == {"disc", "other"}
    for scores in summary["sequences"].values():
        assert scores["jf"] == pytest.approx((scores["j"] + scores["f"]) / 2)
        assert scores["objects"]["255"]["frames"] == scores["frames"] - 1  # the prompted frame is not scored
        assert scores["j"] > 0.8 and scores["f"] > 0.8
    assert 0.8 < summary["j"] <= 1 and 0.8 < summary["f"] <= 1 and summary["complete"]
    assert "| mean |" in capsys.readouterr().out
    assert main(["eval", "--protocol", "vos", "--prompt", "click", "--dataset", str(tiny_davis), "--model", "classic",
                 "--out", str(out), "--quiet", "--limit", "1"]) == 0
    clicked = json.loads(out.read_text())
    assert clicked["prompt"] == "click" and list(clicked["sequences"]) == ["disc"] and clicked["jf"] > 0.7


def test_eval_cli_vos_errors(tiny_davis: Path, tmp_path: Path, capsys) -> None:
    assert main(["eval", "--protocol", "vos", "--dataset", str(tmp_path / "missing"), "--model", "classic"]) == 2
    assert "unknown video dataset" in capsys.readouterr().err
    (tiny_davis / "Annotations" / "480p" / "disc" / "00000.png").unlink()
    assert main(["eval", "--protocol", "vos", "--dataset", str(tiny_davis), "--model", "classic", "--quiet"]) == 2
    assert "no annotation to prompt from" in capsys.readouterr().err


def test_one_real_clip(tmp_path: Path) -> None:
    """The first 12 frames of DAVIS blackswan, when the shared data is there: an easy clip."""
    clips = data_root().resolve() / "davis2016_clips"
    if not clips.is_dir():
        pytest.skip(f"davis2016_clips not found under {data_root()} (set SEGANY_SHARED)")
    for kind, suffix in (("JPEGImages", "jpg"), ("Annotations", "png")):
        folder = tmp_path / kind / "480p" / "blackswan"
        folder.mkdir(parents=True)
        for k in range(12):
            os.symlink(clips / kind / "480p" / "blackswan" / f"{k:05d}.{suffix}", folder / f"{k:05d}.{suffix}")
    from segany import VideoPredictor, load_model
    from segany.evaluation.vos import evaluate_vos

    summary = evaluate_vos(VideoPredictor(load_model("classic")), load_davis_videos(tmp_path), progress=False)
    assert summary["j"] > 0.85 and summary["f"] > 0.85
