"""``segany track`` end to end on a synthetic frames folder, with a fake tracker registered as a
plug-in family (each object's mask moves one pixel a frame from its prompt), so the expected masks
of every frame are known: every format, several objects, prompts on later frames, resume after
Ctrl-C, a re-run with other settings, bad inputs; and once with the real weight-free tracker."""
from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image

from segany import engine
from segany.cli import main
from segany.data.formats.video import davis_palette, read_davis_png
from segany.data.frames import open_frames
from segany.masks import decode_rle, mask_bbox_xywh

H, W, N = 24, 32, 8
SQUARE = 2  # a click is the (2 * SQUARE + 1)^2 square around it


class FakeModel:
    """A model only the fake family owns."""


class ShiftTracker:
    """A :class:`segany.engine.VideoTracker` whose memory is the previous frame: a prompted mask
    moves one pixel right per frame forward (left backward). ``interrupt_at``: Ctrl-C on that frame."""

    interrupt_at: ClassVar[int | None] = None
    log: ClassVar[list[tuple]] = []

    def __init__(self, model: FakeModel) -> None:
        pass

    def init_state(self, video_path, offload_video_to_cpu=False, offload_state_to_cpu=False, async_loading_frames=False):
        source = open_frames(video_path)
        ShiftTracker.log.append(("init",))
        return {"source": source, "prompts": {}}

    def _logits(self, masks: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(masks).astype(np.float32) * 20 - 10)[:, None]

    def _ids(self, state) -> list[int]:
        return sorted({o for _, o in state["prompts"]})

    def add_new_points_or_box(self, inference_state, frame_idx, obj_id, points=None, labels=None,
                              clear_old_points=True, normalize_coords=True, box=None):
        mask = np.zeros(inference_state["source"].size, dtype=bool)
        if box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in np.asarray(box).reshape(4))
            mask[y0:y1 + 1, x0:x1 + 1] = True
        for (x, y), label in zip(points if points is not None else [], labels if labels is not None else []):
            x, y = int(round(x)), int(round(y))
            mask[max(0, y - SQUARE):y + SQUARE + 1, max(0, x - SQUARE):x + SQUARE + 1] = bool(label)
        return self.add_new_mask(inference_state, frame_idx, obj_id, mask)

    def add_new_mask(self, inference_state, frame_idx, obj_id, mask):
        ShiftTracker.log.append(("mask", frame_idx, obj_id))
        inference_state["prompts"][(frame_idx, obj_id)] = np.asarray(mask, dtype=bool)
        ids = self._ids(inference_state)
        empty = np.zeros_like(inference_state["prompts"][(frame_idx, obj_id)])
        return frame_idx, ids, self._logits([inference_state["prompts"].get((frame_idx, o), empty) for o in ids])

    def propagate_in_video(self, inference_state, start_frame_idx=None, max_frame_num_to_track=None, reverse=False):
        ShiftTracker.log.append(("propagate", start_frame_idx, max_frame_num_to_track, reverse))
        count = len(inference_state["source"])
        reach = count if max_frame_num_to_track is None else max_frame_num_to_track
        end = max(start_frame_idx - reach, 0) if reverse else min(start_frame_idx + reach, count - 1)
        step = -1 if reverse else 1
        ids = self._ids(inference_state)
        current: dict[int, np.ndarray] = {}
        empty = np.zeros(inference_state["source"].size, dtype=bool)
        for t in range(start_frame_idx, end + step, step):
            if t == ShiftTracker.interrupt_at:
                raise KeyboardInterrupt
            for o in ids:
                if (t, o) in inference_state["prompts"]:
                    current[o] = inference_state["prompts"][(t, o)]
                elif o in current:
                    current[o] = np.roll(current[o], step, axis=1)
            yield t, ids, self._logits([current.get(o, empty) for o in ids])

    def remove_object(self, inference_state, obj_id, strict=False, need_output=True):
        raise NotImplementedError

    def clear_all_prompts_in_frame(self, inference_state, frame_idx, obj_id, need_output=True):
        raise NotImplementedError

    def reset_state(self, inference_state) -> None:
        inference_state["prompts"].clear()


@pytest.fixture
def fake(monkeypatch):
    """The fake family registered (and removed afterwards); ``segany track`` loads its model."""
    family = engine.EngineFamily(name="fake", owns=lambda m: isinstance(m, FakeModel), predictor=None,
                                 generator=None, generator_options=frozenset(), video_predictor=ShiftTracker)
    monkeypatch.setattr(engine, "_families", [family, *engine.families()])
    monkeypatch.setattr("segany.cli.track.load_model_from_args", lambda args, **kw: FakeModel())
    monkeypatch.setattr(ShiftTracker, "interrupt_at", None)
    monkeypatch.setattr(ShiftTracker, "log", [])
    return ShiftTracker


@pytest.fixture
def frames(tmp_path) -> Path:
    folder = tmp_path / "clip"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(N):
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    return folder


def square(x: int, y: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[max(0, y - SQUARE):y + SQUARE + 1, max(0, x - SQUARE):x + SQUARE + 1] = True
    return mask


def box_mask(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1 + 1, x0:x1 + 1] = True
    return mask


def expected(prompt: np.ndarray, prompt_frame: int, frame: int, first_frame: int | None = None) -> np.ndarray:
    """The fake tracker's mask on ``frame``: the prompt moved by the distance (empty before ``first_frame``)."""
    if first_frame is not None and frame < first_frame:
        return np.zeros((H, W), dtype=bool)
    return np.roll(prompt, frame - prompt_frame, axis=1)


def track(frames: Path, out: Path, *prompts: str, fmt: str = "davis") -> int:
    return main(["track", str(frames), *prompts, "-o", str(out), "--format", fmt])


# Two objects: 1 clicked on frame 0, 2 boxed on frame 2 (nothing before it; the forward pass only).
TWO = ("--point", "6,8", "--obj", "2", "--frame", "2", "--box", "3,14,9,20")


def two_objects(frame: int) -> dict[int, np.ndarray]:
    return {1: expected(square(6, 8), 0, frame), 2: expected(box_mask(3, 14, 9, 20), 2, frame, first_frame=2)}


def test_davis_palette_pngs_for_several_objects(fake, frames, tmp_path) -> None:
    assert track(frames, tmp_path / "out", *TWO) == 0
    for i in range(N):
        with Image.open(tmp_path / "out" / f"{i:05d}.png") as image:
            assert image.mode == "P" and image.getpalette()[:9] == davis_palette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]
        labels = read_davis_png(tmp_path / "out" / f"{i:05d}.png")
        masks = two_objects(i)
        want = np.where(masks[1], 1, np.where(masks[2], 2, 0))
        assert np.array_equal(labels, want), i
    assert fake.log[-1] == ("propagate", 0, N - 1, False)  # prompts from frame 0: one forward pass


def test_overlapping_objects_keep_the_smaller_id(fake, frames, tmp_path) -> None:
    assert track(frames, tmp_path / "out", "--box", "0,0,10,10", "--obj", "2", "--box", "5,5,15,15") == 0
    labels = read_davis_png(tmp_path / "out" / "00000.png")
    assert labels[7, 7] == 1 and labels[12, 12] == 2 and labels[20, 20] == 0


def test_per_object_pngs(fake, frames, tmp_path) -> None:
    assert track(frames, tmp_path / "out", *TWO, fmt="png") == 0
    for i in range(N):
        for obj_id, mask in two_objects(i).items():
            png = np.asarray(Image.open(tmp_path / "out" / str(obj_id) / f"{i:05d}.png"))
            assert set(np.unique(png)) <= {0, 255} and np.array_equal(png > 0, mask), (i, obj_id)


def test_coco_video_json(fake, frames, tmp_path) -> None:
    assert track(frames, tmp_path / "out", *TWO, fmt="coco") == 0
    coco = json.loads((tmp_path / "out" / "annotations.json").read_text())
    video = coco["videos"][0]
    assert (video["length"], video["height"], video["width"]) == (N, H, W)
    assert video["file_names"] == [f"{i:05d}.png" for i in range(N)]
    assert [a["obj_id"] for a in coco["annotations"]] == [1, 2]
    for annotation in coco["annotations"]:
        assert annotation["video_id"] == video["id"] and len(annotation["segmentations"]) == N
        for i, rle in enumerate(annotation["segmentations"]):
            mask = two_objects(i)[annotation["obj_id"]]
            if not mask.any():
                assert rle is None and annotation["areas"][i] is None
                continue
            assert np.array_equal(decode_rle(rle), mask) and annotation["areas"][i] == int(mask.sum())
            assert annotation["bboxes"][i] == mask_bbox_xywh(mask)
    assert sorted(p.name for p in (tmp_path / "out" / "frames").iterdir()) == [f"{i:05d}.json" for i in range(N)]


def test_mp4_overlay_video(fake, frames, tmp_path) -> None:
    av = pytest.importorskip("av")
    assert track(frames, tmp_path / "out", *TWO, fmt="mp4") == 0
    with av.open(str(tmp_path / "out" / "clip.mp4")) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == N and decoded[0].shape == (H, W, 3)
    source = open_frames(frames)
    for i in (0, N - 1):  # tinted inside the masks (lossy video: compare the mean change)
        inside = two_objects(i)[1]
        change = np.abs(decoded[i].astype(int) - source[i].astype(int)).mean(axis=2)
        assert change[inside].mean() > 20
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_prompts_on_a_later_frame_track_backward_too(fake, frames, tmp_path) -> None:
    assert track(frames, tmp_path / "out", "--frame", "3", "--point", "15,10") == 0
    for i in range(N):
        assert np.array_equal(read_davis_png(tmp_path / "out" / f"{i:05d}.png") == 1, expected(square(15, 10), 3, i)), i
    assert [e for e in fake.log if e[0] == "propagate"] == [("propagate", 3, N - 1 - 3, False), ("propagate", 3, 3, True)]


def test_reverse_tracks_backward_first_from_the_latest_prompt(fake, frames, tmp_path) -> None:
    assert main(["track", str(frames), "--frame", "2", "--point", "15,10", "--obj", "2", "--frame", "5",
                 "--point", "20,5", "--reverse", "-o", str(tmp_path / "out")]) == 0
    assert [e for e in fake.log if e[0] == "propagate"] == [("propagate", 5, 5, True), ("propagate", 5, 2, False)]
    assert len(list((tmp_path / "out").glob("*.png"))) == N


def test_max_frames_limits_each_direction(fake, frames, tmp_path) -> None:
    assert main(["track", str(frames), "--frame", "4", "--point", "15,10", "--max-frames", "2", "-o", str(tmp_path / "out")]) == 0
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.png")) == [f"{i:05d}" for i in range(2, 7)]


@pytest.mark.parametrize("interrupt_at", [5, 1])  # in the forward pass; in the backward pass
def test_interrupted_run_keeps_its_frames_and_a_rerun_continues(fake, frames, tmp_path, interrupt_at, capsys) -> None:
    prompt = ("--frame", "3", "--point", "15,10", "--obj", "2", "--frame", "3", "--box", "2,2,8,6")
    assert track(frames, tmp_path / "whole", *prompt, fmt="coco") == 0
    fake.interrupt_at = interrupt_at
    assert track(frames, tmp_path / "out", *prompt, fmt="coco") == 130
    assert "run the same command again" in capsys.readouterr().err
    done = sorted(int(p.stem) for p in (tmp_path / "out" / "frames").iterdir())
    assert done == ([3, 4] if interrupt_at == 5 else [2, 3, 4, 5, 6, 7])
    assert not (tmp_path / "out" / "annotations.json").exists() and not list((tmp_path / "out").rglob(".*.tmp"))
    for i in done:  # every written frame is complete
        part = json.loads((tmp_path / "out" / "frames" / f"{i:05d}.json").read_text())
        assert np.array_equal(decode_rle(part["objects"]["1"]["segmentation"]), expected(square(15, 10), 3, i))

    inodes = {i: (tmp_path / "out" / "frames" / f"{i:05d}.json").stat().st_ino for i in done}
    fake.interrupt_at, fake.log[:] = None, []
    assert track(frames, tmp_path / "out", *prompt, fmt="coco") == 0
    assert inodes == {i: (tmp_path / "out" / "frames" / f"{i:05d}.json").stat().st_ino for i in done}  # not rewritten
    resume_frame = done[-1] if interrupt_at == 5 else done[0]
    assert ("mask", resume_frame, 1) in fake.log and ("mask", resume_frame, 2) in fake.log
    first_propagation = next(e for e in fake.log if e[0] == "propagate")
    assert first_propagation[1] == resume_frame
    # this tracker's memory is the previous frame, so the continued run equals the uninterrupted one
    assert (json.loads((tmp_path / "out" / "annotations.json").read_text())
            == json.loads((tmp_path / "whole" / "annotations.json").read_text()))


def test_a_finished_run_is_not_tracked_again(fake, frames, tmp_path) -> None:
    assert track(frames, tmp_path / "out", *TWO) == 0
    fake.log[:] = []
    assert track(frames, tmp_path / "out", *TWO) == 0
    assert fake.log == []


def test_rerun_with_other_settings_is_refused(fake, frames, tmp_path, capsys) -> None:
    assert track(frames, tmp_path / "out", *TWO) == 0
    capsys.readouterr()
    assert track(frames, tmp_path / "out", "--point", "7,8") == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert main(["track", str(frames), "--point", "7,8", "-o", str(tmp_path / "out"), "--overwrite"]) == 0
    assert np.array_equal(read_davis_png(tmp_path / "out" / "00000.png") == 1, square(7, 8))


def test_outputs_without_a_run_record_are_refused(fake, frames, tmp_path) -> None:
    out = tmp_path / "out"
    assert track(frames, out, *TWO) == 0
    (out / "track.json").unlink()
    assert track(frames, out, *TWO) == 2


@pytest.mark.parametrize(
    "prompts, message",
    [
        ((), "at least one"),
        (("--frame", "99", "--point", "1,1"), "out of range"),
        (("--point", "500,1"), "outside"),
        (("--obj", "2", "--frame", "1", "--box", "9,9,1,1"), "object 2 on frame 1"),
        (("--point", "1,1", "--obj", "3"), "object 3 has no prompt"),
        (("--box", "1,1,5,5", "--box", "2,2,6,6"), "two --box"),
        (("--mask", "{tmp}/small.png"), "is 5x5"),
        (("--mask", "{tmp}/small.png", "--point", "1,1"), "not both"),
        (("--obj", "300", "--point", "1,1"), "1..255"),
    ],
)
def test_bad_prompts_are_one_error_line(fake, frames, tmp_path, capsys, prompts, message) -> None:
    Image.fromarray(np.full((5, 5), 255, np.uint8)).save(tmp_path / "small.png")
    prompts = tuple(p.replace("{tmp}", str(tmp_path)) for p in prompts)
    assert track(frames, tmp_path / "out", *prompts) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("segany: error:") and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out" / "track.json").exists()


@pytest.mark.parametrize("video", ["missing.mp4", "broken.mp4", "empty"])
def test_unreadable_video_is_one_error_line(fake, tmp_path, capsys, video) -> None:
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    (tmp_path / "empty").mkdir()
    assert main(["track", str(tmp_path / video), "--point", "1,1", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("segany: error:") and len(err.splitlines()) == 1, err


def test_a_mask_prompt(fake, frames, tmp_path) -> None:
    mask = box_mask(4, 4, 12, 9)
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    assert track(frames, tmp_path / "out", "--frame", "1", "--mask", str(tmp_path / "mask.png")) == 0
    for i in range(N):
        assert np.array_equal(read_davis_png(tmp_path / "out" / f"{i:05d}.png") == 1, expected(mask, 1, i)), i


def test_a_model_without_a_tracker_is_one_error_line(fake, frames, tmp_path, monkeypatch, capsys) -> None:
    family = engine.EngineFamily(name="still", owns=lambda m: isinstance(m, FakeModel), predictor=None,
                                 generator=None, generator_options=frozenset())
    monkeypatch.setattr(engine, "_families", [family, *engine.families()])
    assert track(frames, tmp_path / "out", "--point", "1,1") == 2
    err = capsys.readouterr().err.strip()
    assert "does not track" in err and len(err.splitlines()) == 1


def test_classic_tracker_follows_a_moving_square(tmp_path) -> None:
    """The real weight-free tracker through the CLI."""
    folder = tmp_path / "clip"
    folder.mkdir()
    height, width, count = 64, 80, 6
    truth = []
    for i in range(count):
        image = np.full((height, width, 3), (40, 90, 40), np.uint8)
        mask = np.zeros((height, width), dtype=bool)
        mask[20:40, 10 + 4 * i:30 + 4 * i] = True
        image[mask] = (230, 60, 60)
        Image.fromarray(image).save(folder / f"{i:05d}.png")
        truth.append(mask)
    assert main(["track", str(folder), "--point", "20,30", "-o", str(tmp_path / "out"), "--model", "classic"]) == 0
    for i in range(count):
        mask = read_davis_png(tmp_path / "out" / f"{i:05d}.png") == 1
        iou = (mask & truth[i]).sum() / (mask | truth[i]).sum()
        assert iou > 0.7, (i, iou)


def test_sam2_model_through_the_cli_equals_the_python_api(tiny_sam2_files, tmp_path) -> None:
    """`segany track --model CONFIG.yaml --checkpoint PT` writes what segany.VideoPredictor computes."""
    from segany import VideoPredictor, load_model

    config, checkpoint = tiny_sam2_files
    rng = np.random.default_rng(3)
    folder = tmp_path / "clip"
    folder.mkdir()
    base = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    for i in range(4):
        Image.fromarray(np.roll(base, 2 * i, axis=1)).save(folder / f"{i:05d}.png")
    assert main(["track", str(folder), "--point", "30,20", "--obj", "2", "--box", "5,5,25,30",
                 "-o", str(tmp_path / "out"), "--model", str(config), "--checkpoint", str(checkpoint)]) == 0
    predictor = VideoPredictor(load_model(config, checkpoint=checkpoint))
    state = predictor.init_state(str(folder))
    predictor.add_new_points_or_box(state, 0, 1, points=[[30, 20]], labels=[1])
    predictor.add_new_points_or_box(state, 0, 2, box=[5, 5, 25, 30])
    for frame_idx, obj_ids, logits in predictor.propagate_in_video(state):
        written = read_davis_png(tmp_path / "out" / f"{frame_idx:05d}.png")
        expected = np.zeros(written.shape, dtype=np.uint8)
        for obj_id, mask in reversed(list(zip(obj_ids, (logits[:, 0] > 0).numpy()))):
            expected[mask] = obj_id  # where objects overlap the smaller id wins
        assert np.array_equal(written, expected), frame_idx
        assert set(np.unique(written)) - {0}, frame_idx  # the random model's masks are not empty


def test_a_video_file_keeps_its_frame_rate(fake, frames, tmp_path) -> None:
    av = pytest.importorskip("av")
    from segany.data.formats.video import OverlayVideoWriter

    source = open_frames(frames)
    with OverlayVideoWriter(tmp_path / "input.mp4", fps=10) as video:
        for i in range(N):
            video.write(source[i], [])
    assert track(tmp_path / "input.mp4", tmp_path / "out", "--point", "6,8", fmt="mp4") == 0
    assert sorted(p.name for p in (tmp_path / "out" / "frames").iterdir()) == [f"{i:05d}.json" for i in range(N)]
    with av.open(str(tmp_path / "out" / "input.mp4")) as container:
        stream = container.streams.video[0]
        assert float(stream.average_rate) == 10 and sum(1 for _ in container.decode(stream)) == N


def test_an_interrupted_overlay_video_leaves_no_file(frames, tmp_path) -> None:
    pytest.importorskip("av")
    from segany.data.formats.video import OverlayVideoWriter

    source = open_frames(frames)
    with pytest.raises(KeyboardInterrupt), OverlayVideoWriter(tmp_path / "out.mp4") as video:
        video.write(source[0], [square(6, 8)])
        raise KeyboardInterrupt
    assert list(tmp_path.glob("*.mp4")) == [] and list(tmp_path.glob(".*.tmp")) == []
