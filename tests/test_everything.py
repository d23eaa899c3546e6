"""The automatic mask generator against the official one's golden outputs, its options on the tiny
random models, and ``segany everything`` (on the tiny random model saved to files, or the classic engine)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segany import MaskGenerator, Predictor, SamMaskGenerator
from segany.amg.geometry import build_point_grid
from segany.cli import main
from segany.errors import GeneratorArgumentError, ImageError
from segany.masks import decode_rle, mask_bbox_xywh
from tiny_models import model_args, synthetic_image


def golden_case(golden: Path, name: str) -> tuple[dict, dict]:
    case = json.loads((golden / name).read_text())
    args = {k: v for k, v in case["args"].items() if k != "output_mode"}
    return case, args


def assert_same_records(records: list[dict], expected: list[dict]) -> None:
    """The README's AMG comparison: same masks in the same order, scores within tolerance."""
    assert len(records) == len(expected)
    for ours, theirs in zip(records, expected):
        assert ours["segmentation"] == theirs["segmentation"]
        assert ours["area"] == theirs["area"]
        assert ours["bbox"] == theirs["bbox"]
        assert ours["point_coords"] == theirs["point_coords"]
        assert ours["crop_box"] == theirs["crop_box"]
        assert ours["predicted_iou"] == pytest.approx(theirs["predicted_iou"], abs=1e-5)
        assert ours["stability_score"] == pytest.approx(theirs["stability_score"], abs=1e-4)


def test_pps8_matches_official(golden, tiny_sam, photo) -> None:
    case, args = golden_case(golden, "sam_amg_pps8.json")
    generator = MaskGenerator(tiny_sam, output_mode="coco_rle", **args)
    assert_same_records(generator.generate(photo), case["records"])
    counts = generator.counts
    # stage sizes of the official run (golden README): 192 -> 188 -> 176 -> 6
    assert (counts.candidates, counts.after_iou, counts.after_stability, counts.after_box_nms) == (192, 188, 176, 6)


def test_pps6_crop_layer_and_small_regions_match_official(golden, tiny_sam, photo) -> None:
    case, args = golden_case(golden, "sam_amg_pps6_crop1.json")
    generator = MaskGenerator(tiny_sam, output_mode="coco_rle", **args)
    records = generator.generate(photo)
    assert_same_records(records, case["records"])
    counts = generator.counts
    assert (counts.candidates, counts.after_iou, counts.after_stability, counts.after_crop_edge) == (540, 524, 489, 120)
    assert (counts.after_box_nms, counts.after_crop_nms, counts.final) == (15, 15, 11)


def test_modes_grids_and_batch_sizes_agree(tiny_random_sam, synthetic_small) -> None:
    """coco_rle / binary_mask / uncompressed_rle, points_per_side or point_grids, one batch or
    many: the same masks and values."""
    loose = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)
    coco = MaskGenerator(tiny_random_sam, points_per_side=3, output_mode="coco_rle", **loose).generate(synthetic_small)
    binary = MaskGenerator(Predictor(tiny_random_sam), points_per_side=None, point_grids=[build_point_grid(3)],
                           points_per_batch=2, **loose).generate(synthetic_small)
    raw = MaskGenerator(tiny_random_sam, points_per_side=3, points_per_batch=1000, output_mode="uncompressed_rle",
                        **loose).generate(synthetic_small)
    assert 0 < len(coco) == len(binary) == len(raw)
    for a, b, c in zip(coco, binary, raw):
        mask = b["segmentation"]
        assert mask.dtype == bool and mask.shape == synthetic_small.shape[:2]
        assert isinstance(c["segmentation"]["counts"], list)
        assert np.array_equal(decode_rle(a["segmentation"]), mask) and np.array_equal(decode_rle(c["segmentation"]), mask)
        assert a["area"] == b["area"] == c["area"] == int(mask.sum())
        assert a["bbox"] == b["bbox"] == c["bbox"] == mask_bbox_xywh(mask)
        assert a["point_coords"] == b["point_coords"] == c["point_coords"] and a["crop_box"] == b["crop_box"] == c["crop_box"]
        for key in ("predicted_iou", "stability_score"):  # other batch sizes round differently in the decoder
            assert a[key] == pytest.approx(b[key], abs=1e-6, nan_ok=True) == c[key]


def test_fast_mode_and_default_thresholds(tiny_random_sam, synthetic_small) -> None:
    exact = MaskGenerator(tiny_random_sam, points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0, output_mode="coco_rle")
    fast = MaskGenerator(tiny_random_sam, points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0, output_mode="coco_rle",
                         fast=True)
    exact_records, fast_records = exact.generate(synthetic_small), fast.generate(synthetic_small)
    assert fast_records and fast.counts.candidates == exact.counts.candidates == 27
    exact_by_mask = {r["segmentation"]["counts"]: r for r in exact_records}
    for record in fast_records:  # the records describe the kept masks exactly
        mask = decode_rle(record["segmentation"])
        assert record["area"] == int(mask.sum()) and record["bbox"] == mask_bbox_xywh(mask)
        if record["segmentation"]["counts"] in exact_by_mask:
            expected = exact_by_mask[record["segmentation"]["counts"]]["stability_score"]
            assert record["stability_score"] == pytest.approx(expected, abs=0, nan_ok=True)
    strict = MaskGenerator(tiny_random_sam, points_per_side=2)  # default thresholds: random weights predict low IoUs
    assert strict.generate(synthetic_small) == [] and strict.counts.candidates == 12 and strict.counts.after_iou == 0


@pytest.mark.parametrize("model_name", ["random_sam_1024", "tiny_random_sam"])
@pytest.mark.parametrize("size", [(480, 640), (37, 53), (322, 402), (1100, 700), (5, 3)])
def test_scoring_from_bounds_matches_full_upscaling(request, model_name: str, size: tuple[int, int]) -> None:
    """Stability and boxes from low-res bounds + partial upscaling equal full upscaling's."""
    import torch.nn.functional as F

    from segany.amg.scoring import UpscaleGeometry, upscaled_statistics
    from segany.masks import logit_statistics
    from segany.predict.transforms import preprocess_shape

    model = request.getfixturevalue(model_name)
    low, padded = model.config.low_res_size, model.image_size
    generator = torch.Generator().manual_seed(size[0])
    smooth = F.interpolate(torch.randn(12, 1, 16, 16, generator=generator), (low, low), mode="bicubic")[:, 0]
    logits = torch.cat([
        smooth * 10,  # blobs: most tiles decided by their bounds
        smooth * 0.3,  # never near +-1: counts decided, boxes searched
        torch.randn(6, low, low, generator=generator) * 2,  # texture: upscaled whole
        torch.full((1, low, low), -5.0), torch.full((1, low, low), 5.0),  # empty and full
        torch.where(torch.arange(low) < low // 6, 8.0, -8.0).expand(1, low, low),  # a sharp vertical edge
    ])
    input_size = preprocess_shape(*size, padded)
    full = model.postprocess_masks(logits[:, None], input_size, size)[:, 0]
    expected_stability, expected_boxes = logit_statistics(full, 0.0, 1.0)
    geometry = UpscaleGeometry.build(low, padded, input_size, size)
    upscale = lambda x: model.postprocess_masks(x[:, None], input_size, size)[:, 0]  # noqa: E731
    stability, boxes = upscaled_statistics(logits, geometry, 0.0, 1.0, upscale)
    assert torch.equal(boxes, expected_boxes)
    assert torch.allclose(stability, expected_stability, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"output_mode": "png"}, "output_mode"),
        ({"point_grids": [build_point_grid(4)]}, "exactly one"),
        ({"points_per_side": None, "point_grids": [np.array([[0.5, 1.5]])]}, r"\[0, 1\]"),
        ({"points_per_side": None, "point_grids": [build_point_grid(4)], "crop_n_layers": 1}, "one grid per crop layer"),
        ({"points_per_batch": 0}, "points_per_batch"),
        ({"box_nms_thresh": 1.5}, "box_nms_thresh"),
    ],
)
def test_bad_arguments_are_typed_errors(tiny_random_sam, kwargs: dict, message: str) -> None:
    with pytest.raises(GeneratorArgumentError, match=message):
        MaskGenerator(tiny_random_sam, **kwargs)


def test_bad_model_and_image(tiny_random_sam) -> None:
    with pytest.raises(GeneratorArgumentError, match="not a segany model"):
        MaskGenerator("vit_b")
    with pytest.raises(ImageError, match="uint8"):
        MaskGenerator(tiny_random_sam).generate(np.zeros((8, 8, 3), dtype=np.float32))


def run_cli(files: tuple[Path, Path], *argv: str) -> int:
    """``segany everything`` with the tiny random model (``tiny_model_files``) and a loose 3x3 grid."""
    return main(["everything", *argv, *model_args(files),
                 "--points-per-side", "3", "--pred-iou-thresh", "0", "--stability-thresh", "0"])


def test_cli_folder_coco_overlay_corrupt_file_and_resume(tiny_model_files, tiny_random_sam, synthetic_small, tmp_path, capsys,
                                                         monkeypatch) -> None:
    from pycocotools.coco import COCO

    images = tmp_path / "in"
    (images / "sub").mkdir(parents=True)
    Image.fromarray(synthetic_small).save(images / "cat.png")
    Image.fromarray(synthetic_image(48, 64, seed=1)).save(images / "sub" / "cup.jpg", quality=95)
    (images / "broken.png").write_bytes(b"not an image at all")
    (images / "notes.txt").write_text("ignored: not an image")
    out = tmp_path / "out"
    cat_json, cup_json = out / "cat.png.json", out / "sub" / "cup.jpg.json"

    # first run: Ctrl-C while the second image (sub/cup.jpg) is being segmented
    real_generate = SamMaskGenerator.generate

    def interrupted_on_cup(self, image, **kwargs):
        if image.shape[:2] == (48, 64):
            raise KeyboardInterrupt
        return real_generate(self, image, **kwargs)

    monkeypatch.setattr(SamMaskGenerator, "generate", interrupted_on_cup)
    assert run_cli(tiny_model_files, str(images), "-o", str(out), "--format", "coco", "--overlay") == 130
    err = capsys.readouterr().err
    assert "broken.png" in err and "stopped after 1 image(s)" in err
    assert cat_json.exists() and not cup_json.exists() and (out / "cat.png_overlay.png").exists()
    monkeypatch.undo()
    (out / "sub").mkdir(exist_ok=True)
    (out / "sub" / ".cup.jpg.json.abc.tmp").write_text("{half")  # what a hard kill mid-write leaves
    before = cat_json.read_bytes(), cat_json.stat().st_mtime_ns

    # second run: finishes the rest without redoing cat.png, then writes the COCO file
    assert run_cli(tiny_model_files, str(images), "-o", str(out), "--format", "coco", "--overlay") == 1
    err = capsys.readouterr().err
    assert "done 1, skipped 1, failed 1" in err and "broken.png" in err
    assert (cat_json.read_bytes(), cat_json.stat().st_mtime_ns) == before
    document = json.loads(cat_json.read_text())
    stable_id = int(hashlib.sha256(b"cat.png").hexdigest()[:16], 16) >> 11  # the relative name's first 53 bits
    assert document["image"] == {"image_id": stable_id, "file_name": "cat.png", "height": 37, "width": 53}
    expected = MaskGenerator(tiny_random_sam, points_per_side=3, pred_iou_thresh=0, stability_score_thresh=0,
                             output_mode="coco_rle").generate(np.asarray(Image.open(images / "cat.png")))
    assert [a["segmentation"] for a in document["annotations"]] == [r["segmentation"] for r in expected]
    assert json.loads(cup_json.read_text())["image"]["file_name"] == "sub/cup.jpg"
    assert (out / "sub" / "cup.jpg_overlay.png").exists()

    coco = COCO(str(out / "annotations.json"))
    assert sorted(img["file_name"] for img in coco.dataset["images"]) == ["cat.png", "sub/cup.jpg"]
    assert len(coco.getAnnIds()) == len(document["annotations"]) + len(json.loads(cup_json.read_text())["annotations"])
    for ann in coco.loadAnns(coco.getAnnIds()):
        info = coco.imgs[ann["image_id"]]
        assert coco.annToMask(ann).shape == (info["height"], info["width"])
        assert int(coco.annToMask(ann).sum()) == ann["area"]

    # a glob, --overwrite, one PNG per mask
    assert run_cli(tiny_model_files, str(images / "*.png"), "-o", str(out), "--overwrite", "--format", "png") == 1
    err = capsys.readouterr().err
    assert "done 1, skipped 0, failed 1" in err
    pngs = sorted((out / "cat.png_masks").glob("*.png"))
    assert len(pngs) == len(document["annotations"])
    assert np.array_equal(np.asarray(Image.open(pngs[0])) > 0, decode_rle(document["annotations"][0]["segmentation"]))


def test_cli_reports_missing_inputs(tiny_model_files, tmp_path, capsys) -> None:
    assert run_cli(tiny_model_files, str(tmp_path / "nothing*.jpg"), str(tmp_path / "missing.png"), "-o", str(tmp_path / "out")) == 1
    err = capsys.readouterr().err
    assert "missing.png" in err and "done 0, skipped 0, failed 2" in err


def run_classic(*argv: str) -> int:
    """``segany everything`` with the weight-free engine: fast, for what does not depend on the model."""
    return main(["everything", *argv, "--model", "classic"])


def test_cli_oversized_image_is_reported_and_skipped(synthetic_small, tmp_path, capsys, claimed_size_png) -> None:
    images, out = tmp_path / "in", tmp_path / "out"
    images.mkdir()
    claimed_size_png(images / "a_huge.png")
    Image.fromarray(synthetic_small).save(images / "b_cat.png")
    for _ in range(2):  # the re-run meets the same file and carries on too
        assert run_classic(str(images), "-o", str(out)) == 1
        err = capsys.readouterr().err
        failed = [line for line in err.splitlines() if line.startswith("failed:")]
        assert len(failed) == 1 and "a_huge.png: ImageTooLargeError" in failed[0] and "60000x60000" in failed[0]
        assert "--max-pixels" in failed[0] and "Traceback" not in err
        assert (out / "b_cat.png.json").exists() and not (out / "a_huge.png.json").exists()
    assert "done 0, skipped 1, failed 1" in err


def test_cli_memory_error_and_unexpected_errors_skip_the_image(synthetic_small, tmp_path, capsys, monkeypatch) -> None:
    from segany.classic.generator import ClassicMaskGenerator

    images, out = tmp_path / "in", tmp_path / "out"
    images.mkdir()
    for name, (h, w) in {"a.png": (20, 30), "b.png": (21, 30), "c.png": (37, 53)}.items():
        Image.fromarray(np.ascontiguousarray(synthetic_small[:h, :w])).save(images / name)
    real_generate = ClassicMaskGenerator.generate

    def failing(self, image):
        if image.shape[0] == 20:
            raise MemoryError("cannot allocate 7.6 GiB")
        if image.shape[0] == 21:
            raise RuntimeError("boom\nsecond line")
        return real_generate(self, image)

    monkeypatch.setattr(ClassicMaskGenerator, "generate", failing)
    assert run_classic(str(images), "-o", str(out)) == 1
    err = capsys.readouterr().err
    assert "failed: a.png: MemoryError: cannot allocate 7.6 GiB\n" in err
    assert "failed: b.png: RuntimeError: boom second line\n" in err
    assert "done 1, skipped 0, failed 2" in err and (out / "c.png.json").exists()


def test_cli_results_made_with_other_settings_are_not_skipped(tiny_model_files, synthetic_small, tmp_path, capsys) -> None:
    import torch

    config, checkpoint = tiny_model_files
    cat = tmp_path / "cat.png"
    Image.fromarray(synthetic_small).save(cat)
    out = tmp_path / "out"
    result = out / "cat.png.json"
    sam = ["--model", str(config), "--points-per-side", "1"]
    assert main(["everything", str(cat), "-o", str(out), *sam, "--checkpoint", str(checkpoint)]) == 0
    settings = json.loads(result.read_text())["segany"]["settings"]
    assert settings["generator"]["points_per_side"] == 1 and settings["model_config"]["name"] == settings["model"]
    assert settings["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    before = result.read_bytes()
    capsys.readouterr()

    # other weights (one value changed, the same file name): refused before any work, naming --overwrite
    state = torch.load(checkpoint, weights_only=True)
    key = next(iter(state))
    state[key] = state[key] + 1e-3
    (tmp_path / "w").mkdir()
    torch.save(state, tmp_path / "w" / checkpoint.name)
    argv = ["everything", str(cat), "-o", str(out), *sam, "--checkpoint", str(tmp_path / "w" / checkpoint.name)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "1 result(s)" in err and "checkpoint_sha256" in err and "--overwrite" in err
    assert result.read_bytes() == before
    assert main([*argv, "--overwrite"]) == 0 and "done 1" in capsys.readouterr().err
    assert json.loads(result.read_text())["segany"]["settings"]["checkpoint_sha256"] != settings["checkpoint_sha256"]

    # other generator arguments or another model: refused too; the same settings: skipped
    assert run_classic(str(cat), "-o", str(out)) == 2
    assert f"model '{settings['model']}', now 'classic'" in capsys.readouterr().err
    assert run_classic(str(cat), "-o", str(out), "--overwrite", "--min-region-area", "10") == 0
    assert run_classic(str(cat), "-o", str(out), "--min-region-area", "20") == 2
    assert "min_mask_region_area 10, now 20" in capsys.readouterr().err
    assert run_classic(str(cat), "-o", str(out), "--min-region-area", "10") == 0
    assert "done 0, skipped 1, failed 0" in capsys.readouterr().err


@pytest.mark.parametrize("inside", ["sub", "."])
def test_cli_never_reads_its_own_output(synthetic_small, tmp_path, capsys, inside: str) -> None:
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(synthetic_small).save(images / "cat.png")
    out = images / inside
    for _ in range(2):
        assert run_classic(str(images), "-o", str(out), "--overlay", "--format", "png") == 0
    err = capsys.readouterr().err
    assert "done 0, skipped 1, failed 0" in err
    assert (out / "cat.png_overlay.png").exists() and (out / "cat.png_masks").is_dir()
    assert sorted(p.name for p in out.rglob("*.json")) == ["cat.png.json"]
    assert run_classic(str(images / "*.png"), "-o", str(out), "--overlay") == 0  # a glob as well
    assert "done 0, skipped 1, failed 0" in capsys.readouterr().err


def test_cli_output_errors_are_one_line(synthetic_small, tmp_path, capsys, monkeypatch) -> None:
    import errno
    import os

    for name in ("a.png", "b.png"):
        Image.fromarray(synthetic_small).save(tmp_path / name)
    (tmp_path / "file").write_text("x")
    assert run_classic(str(tmp_path / "a.png"), "-o", str(tmp_path / "file")) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"segany: error: output folder {tmp_path / 'file'} is a file, not a folder: choose another path"]

    # a full disk while writing b.png's result: a one-line error, a.png's result intact, no temporary files
    out = tmp_path / "out"
    real_fdopen, opened = os.fdopen, []

    class FullDisk:
        def __init__(self, f) -> None:
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.f.close()

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fdopen(fd, *args, **kwargs):
        opened.append(fd)
        f = real_fdopen(fd, *args, **kwargs)
        return FullDisk(f) if len(opened) > 1 else f  # a.png.json is written, b.png.json meets a full disk

    monkeypatch.setattr(os, "fdopen", fdopen)
    code = run_classic(str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(out))
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == [f"segany: error: cannot write {out / 'b.png.json'}: No space left on device"]
    assert sorted(p.name for p in out.iterdir()) == ["a.png.json"]
    assert json.loads((out / "a.png.json").read_text())["image"]["file_name"] == "a.png"
