"""The ``segany`` command end to end on the tiny random model saved to files (no shared folder needed)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from segany.cli import main
from segany.masks import decode_rle
from tiny_models import model_args


def test_segment_writes_masks_overlay_and_json(tiny_model_files, tmp_path, synthetic_small) -> None:
    Image.fromarray(synthetic_small).save(tmp_path / "cat.png")
    out = tmp_path / "out"
    code = main([
        "segment", str(tmp_path / "cat.png"), "--point", "30,10", "--point", "5,30,0", "--multimask",
        *model_args(tiny_model_files), "-o", str(out),
    ])
    assert code == 0
    result = json.loads((out / "cat.json").read_text())
    assert result["prompt"]["labels"] == [1, 0] and len(result["masks"]) == 3
    scores = [m["score"] for m in result["masks"]]
    assert scores == sorted(scores, reverse=True)
    for record in result["masks"]:
        png = np.asarray(Image.open(out / record["png"])) > 0
        assert png.shape == (37, 53)
        assert np.array_equal(decode_rle(record["segmentation"]), png)
        assert record["area"] == int(png.sum())
    overlay = np.asarray(Image.open(out / "cat_overlay.png"))
    assert overlay.shape == (37, 53, 3) and not np.array_equal(overlay, synthetic_small)


def test_segment_matches_predictor(tiny_model_files, tmp_path, synthetic_small, tiny_random_sam) -> None:
    from segany import Predictor

    Image.fromarray(synthetic_small).save(tmp_path / "cat.png")
    main(["segment", str(tmp_path / "cat.png"), "--box", "4.5,3,41,33", *model_args(tiny_model_files), "-o", str(tmp_path)])
    predictor = Predictor(tiny_random_sam)
    predictor.set_image(synthetic_small)
    masks, scores, _ = predictor.predict(box=np.array([4.5, 3, 41, 33]), multimask_output=False)
    record = json.loads((tmp_path / "cat.json").read_text())["masks"][0]
    assert np.array_equal(decode_rle(record["segmentation"]), masks[0])
    assert record["score"] == pytest.approx(float(scores[0]))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["segment", "{tmp}/missing.png", "--point", "1,1"], "does not exist"),
        (["segment", "{tmp}/corrupt.png", "--point", "1,1"], "cannot be read"),
        (["segment", "{tmp}/ok.png"], "at least one"),
        (["segment", "{tmp}/ok.png", "--point", "500,1"], "outside"),
        (["segment", "{tmp}/ok.png", "--box", "9,9,1,1"], "reversed"),
    ],
)
def test_segment_errors_are_one_line(tiny_model_files, tmp_path, argv: list[str], message: str) -> None:
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "ok.png")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    argv += model_args(tiny_model_files)
    proc = subprocess.run([sys.executable, "-m", "segany", *argv], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_bad_point_syntax_is_an_argparse_error(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["segment", "x.png", "--point", "1,2,3,4"])
    assert info.value.code == 2
    assert "--point must be 2 or 3" in capsys.readouterr().err


def test_models_lists_zoo_and_cache(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SEGANY_HOME", str(tmp_path))
    (tmp_path / "sam_vit_b_01ec64.pth").write_bytes(b"x")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path) in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("vit_")}
    assert set(rows) == {"vit_t", "vit_b", "vit_l", "vit_h"}
    assert " yes " in rows["vit_b"] and " no " in rows["vit_t"]


def tiny_segment(tiny_model_files, tmp_path, *extra: str) -> list[str]:
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "ok.png")
    return ["segment", str(tmp_path / "ok.png"), "--point", "5,5", "-o", str(tmp_path / "out"),
            *model_args(tiny_model_files), *extra]


@pytest.mark.parametrize("device, message", [
    ("bogus", "unknown device 'bogus': this machine has cpu"),
    pytest.param("cuda", "device 'cuda' is not available: this machine has cpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_unusable_device_is_a_one_line_error(tiny_model_files, tmp_path, capsys, device: str, message: str) -> None:
    assert main(tiny_segment(tiny_model_files, tmp_path, "--device", device)) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"segany: error: {message}"]


def test_nan_score_is_an_error_and_writes_nothing(tiny_model_files, tmp_path, capsys, monkeypatch) -> None:
    from segany import SamPredictor as Predictor

    real_predict = Predictor.predict

    def broken(self, *args, **kwargs):  # what a checkpoint with NaN weights predicts
        masks, scores, logits = real_predict(self, *args, **kwargs)
        return masks, np.full_like(scores, np.nan), logits

    monkeypatch.setattr(Predictor, "predict", broken)
    assert main(tiny_segment(tiny_model_files, tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "masks[0].score is not a finite number" in err[0]
    assert list((tmp_path / "out").iterdir()) == []


def test_segment_max_pixels(tiny_model_files, tmp_path, capsys) -> None:
    assert main(tiny_segment(tiny_model_files, tmp_path, "--max-pixels", "399")) == 2
    assert "20x20 (400 pixels), over the limit of 399 pixels" in capsys.readouterr().err
    assert main(tiny_segment(tiny_model_files, tmp_path, "--max-pixels", "400")) == 0
    with pytest.raises(SystemExit):
        main(tiny_segment(tiny_model_files, tmp_path, "--max-pixels", "-1"))
