"""SAM 2.1 video predictor: parity with the official ``SAM2VideoPredictor`` cases (golden/sam2
video_*.npz, README "How a test should compare"), the frame loading, bounded memory (spill and
read back), streaming, hole filling, typed errors, and a tiny random SAM 2 without the shared folder."""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import segany
import segany.engine
from conftest import torch_threads
from segany.data.frames import open_frames
from segany.errors import BackendError, NotFoundError, PredictorStateError, PromptError, VideoError
from segany.masks import fill_holes_in_mask_scores
from segany.models.sam2 import NO_OBJ_SCORE, Sam2
from segany.video.memory_store import FrameStore, SpillFolder
from segany.video.sam2_video import Sam2VideoPredictor, VideoState, mask_prompt_tensor, video_frame_tensor
from test_sam2_predictor import tiny_random_sam2

CASES = ["video_click_forward", "video_correction_click", "video_correction_click_as_cond", "video_two_objects",
         "video_remove_reset", "video_reverse_box", "video_mask_prompts", "video_start_max_frames"]
WITH_CORRECTION = {"video_correction_click", "video_correction_click_as_cond"}
# video_reverse_box: the box's logits on frame 7 match to 1.5e-5, but 2 of the 1024x1024 pixels of
# their upsampling lie that close to 0 and binarise the other way in the conditioning memory, which
# moves every tracked frame by a mean of ~1.2e-3 (max 0.34): inside the README's loose rule, not the
# strict one. The strict rule is then checked on the tracker alone, from the golden prompt logits.
LOOSE = WITH_CORRECTION | {"video_reverse_box"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tracking runs many small ops: on the shared 2-core machine two OpenMP threads wait for each
    other whenever one is descheduled (10x slower under load), one thread does not."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def golden_model(golden_sam2: Sam2) -> Sam2:
    """The golden tiny SAM 2.1 (conftest's, loaded once for the session)."""
    return golden_sam2


@pytest.fixture(scope="module")
def video_cases(sam2_dir: Path) -> dict[str, dict]:
    index = json.loads((sam2_dir / "cases.json").read_text())["video"]
    return {entry["file"].removesuffix(".npz"): entry for entry in index}


def _unpack(packed: np.ndarray, width: int) -> np.ndarray:
    return np.unpackbits(packed, axis=-1, count=width).astype(bool)


class Checker:
    """Compares one case's outputs with the golden file, recording the worst differences."""

    def __init__(self, data: np.lib.npyio.NpzFile, strict: bool) -> None:
        self.data, self.strict = data, strict
        self.width = int(data["video_size"][1])
        self.worst: dict[str, float] = {}

    def note(self, key: str, value: float) -> None:
        self.worst[key] = max(self.worst.get(key, 0.0), float(value))

    def low_res(self, ours: torch.Tensor, gold: np.ndarray, no_memory: bool, what: str) -> None:
        ours_np = ours.reshape(gold.shape).float().cpu().numpy()
        absent = gold == NO_OBJ_SCORE
        assert np.array_equal(ours_np == NO_OBJ_SCORE, absent), f"{what}: NO_OBJ_SCORE frames differ"
        diff = np.abs(ours_np - gold)
        if no_memory:
            assert diff.max() <= 1e-3, f"{what}: low-res max {diff.max()}"
        else:
            assert diff.mean() <= (1e-3 if self.strict else 1e-2) and diff.max() <= 2, \
                f"{what}: low-res mean {diff.mean()} max {diff.max()}"
        self.note("low_res_max", diff.max())
        self.note("low_res_mean", diff.mean())

    def video_res(self, logits: torch.Tensor, prefix: str, row: int | None, no_memory: bool) -> None:
        gold = self.data[f"{prefix}_video_res_logits_stride8"]
        packed = self.data[f"{prefix}_video_res_masks_packed"]
        if row is not None:
            gold, packed = gold[row], packed[row]
        ours = logits[:, 0].float().cpu().numpy()
        self.low_res(torch.from_numpy(ours[:, ::8, ::8].copy()), gold, no_memory, f"{prefix} video-res")
        ours_masks, gold_masks = ours > 0, _unpack(packed, self.width)
        for o in range(len(gold_masks)):
            frac = float((ours_masks[o] != gold_masks[o]).mean())
            assert frac <= 2e-3, f"{prefix}: {frac} of the pixels differ"
            self.note("mask_px_fraction", frac)

    def scalars(self, score: torch.Tensor, ptr: torch.Tensor, gold_score: float, gold_ptr: np.ndarray,
                no_memory: bool, what: str) -> None:
        d_score = abs(float(score.reshape(-1)[0]) - float(gold_score))
        d_ptr = float(np.abs(ptr.reshape(-1).float().cpu().numpy() - gold_ptr.reshape(-1)).max())
        assert d_score <= (1e-4 if no_memory else 2e-3), f"{what}: object score {d_score}"
        assert d_ptr <= (1e-4 if no_memory else 1e-3), f"{what}: obj_ptr {d_ptr}"
        self.note("object_score", d_score)
        self.note("obj_ptr", d_ptr)


def _replay(predictor: Sam2VideoPredictor, state: VideoState, ops: list[dict], data, checker: Checker,
            golden_prompt_logits: bool = False) -> None:
    """Run a case's calls on ``state``, comparing every output with ``data``; with
    ``golden_prompt_logits`` the prompted frames then carry the golden low-res logits (so that
    the memory's binarisation of them cannot flip a pixel) before tracking."""
    for k, op in enumerate(ops):
        p = f"op{k}"
        kind = op["op"]
        if kind in ("add_points_or_box", "add_mask"):
            obj_idx = state.obj_idx(op["obj_id"])
            is_init = obj_idx is None or op["frame_idx"] not in state.objects[obj_idx].tracked
            if kind == "add_mask":
                mask = _unpack(data[f"{p}_mask_packed"], int(data[f"{p}_mask_shape"][1]))
                frame_idx, obj_ids, logits = predictor.add_new_mask(state, op["frame_idx"], op["obj_id"], mask)
            else:
                frame_idx, obj_ids, logits = predictor.add_new_points_or_box(
                    state, op["frame_idx"], op["obj_id"], points=op.get("points"), labels=op.get("labels"),
                    box=op.get("box"))
            obj = state.objects[state.obj_idx(op["obj_id"])]
            is_cond = str(data[f"{p}_storage"]) == "cond"
            out = obj.temp(is_cond)[frame_idx]
            assert frame_idx == int(data[f"{p}_frame_idx"]) and obj_ids == data[f"{p}_obj_ids"].tolist()
            if kind == "add_mask":
                ours_mask = mask_prompt_tensor(mask, predictor.image_size)[0, 0].numpy().astype(bool)
                assert np.array_equal(ours_mask, _unpack(data[f"{p}_mask_input_model_packed"], predictor.image_size))
            else:
                inputs = obj.point_inputs[frame_idx]
                np.testing.assert_allclose(inputs.point_coords.numpy(), data[f"{p}_point_coords_model"], atol=1e-4)
                assert np.array_equal(inputs.point_labels.numpy(), data[f"{p}_point_labels_model"])
            checker.low_res(out.pred_masks, data[f"{p}_low_res_masks"], is_init, f"{p} low-res")
            checker.scalars(out.object_score_logits, out.obj_ptr, data[f"{p}_object_score_logits"][0],
                            data[f"{p}_obj_ptr"], is_init, p)
            checker.video_res(logits, p, None, is_init)
            if golden_prompt_logits:
                out.pred_masks = torch.from_numpy(data[f"{p}_low_res_masks"][None].copy())
        elif kind == "propagate":
            args = {key: op[key] for key in ("start_frame_idx", "max_frame_num_to_track", "reverse") if key in op}
            yielded = []
            for i, (frame_idx, obj_ids, logits) in enumerate(predictor.propagate_in_video(state, **args)):
                yielded.append(frame_idx)
                assert obj_ids == data[f"{p}_obj_ids"].tolist()
                checker.video_res(logits, p, i, False)
                for o, obj in enumerate(state.objects):
                    is_cond = frame_idx in obj.cond
                    assert is_cond == bool(data[f"{p}_storage_is_cond"][i, o])
                    out = obj.output(frame_idx)
                    what = f"{p} frame {frame_idx} obj {obj.obj_id}"
                    checker.low_res(out.pred_masks, data[f"{p}_low_res_masks"][i, o], False, what)
                    checker.scalars(out.object_score_logits, out.obj_ptr, data[f"{p}_object_score_logits"][i, o],
                                    data[f"{p}_obj_ptr"][i, o], False, what)
                    mem_sum = float(out.maskmem_features.double().sum())
                    gold_sum = float(data[f"{p}_maskmem_features_sum"][i, o])
                    assert abs(mem_sum - gold_sum) <= 1e-3 * abs(gold_sum), f"{what}: memory sum"
                    checker.note("maskmem_sum_rel", abs(mem_sum - gold_sum) / abs(gold_sum))
                    multimask = int(data[f"{p}_decoder_multimask"][i, o])
                    if is_cond:
                        assert multimask == -1
                    else:
                        assert multimask == int(out.multimask)
                        d_iou = float(np.abs(out.decoder_ious.reshape(-1).numpy() - data[f"{p}_decoder_ious"][i, o]).max())
                        assert d_iou <= 2e-4, f"{what}: decoder IoUs {d_iou}"
                        checker.note("decoder_ious", d_iou)
                    if f"{p}_maskmem_features_stride4" in data.files:
                        ours = out.maskmem_features.float()[0, :, ::4, ::4].numpy()
                        gold = data[f"{p}_maskmem_features_stride4"][i, o]
                        diff = np.abs(ours - gold)
                        assert (diff > 0).mean() <= 0.1 and diff.mean() <= 5e-4 and diff.max() <= 0.1, what
                        checker.note("maskmem_max", diff.max())
            assert yielded == data[f"{p}_frame_idx"].tolist()
        elif kind == "remove_object":
            obj_ids, updated = predictor.remove_object(state, op["obj_id"])
            assert obj_ids == data[f"{p}_obj_ids"].tolist()
            assert [f for f, _ in updated] == data[f"{p}_updated_frame_idx"].tolist()
            for j, (_, logits) in enumerate(updated):
                checker.video_res(logits, f"{p}_updated{j}", None, False)
        elif kind == "reset_state":
            predictor.reset_state(state)
        else:
            raise AssertionError(f"unknown op {kind}")


class CachedFeaturesPredictor(Sam2VideoPredictor):
    """Test scaffolding: the golden cases all run on the same 8 frames, so each frame's image
    features are computed once per module (the encoder is deterministic; its parity is tested
    with the image predictor) and only the tracking runs again."""

    features: dict[int, object]

    def _features(self, state, frame_idx):
        cached = self.features.get(frame_idx)
        if cached is None:
            cached = self.features[frame_idx] = super()._features(state, frame_idx)
        return cached


@pytest.fixture(scope="module")
def replay(golden_model: Sam2, video_cases: dict, sam2_dir: Path):
    """``replay(name)`` runs a golden case (after its base case, whose final state is reused
    through a deep copy as the official generator did) and returns its worst differences."""
    features: dict[int, object] = {}
    final_states: dict[str, tuple[Sam2VideoPredictor, VideoState]] = {}

    def run(name: str) -> dict[str, float]:
        case = video_cases[name]
        as_cond = any("add_all_frames_to_correct_as_cond=true" in o for o in case["model_overrides"])
        predictor = CachedFeaturesPredictor(golden_model, fill_hole_area=0, add_all_frames_to_correct_as_cond=as_cond,
                                            keep_history=False)
        predictor.features = features
        if case["base_case"]:
            if case["base_case"] not in final_states:
                run(case["base_case"])
            state = copy.deepcopy(final_states[case["base_case"]][1])
        else:
            state = predictor.init_state(str(sam2_dir / case["clip"]))
        with np.load(sam2_dir / case["file"]) as data:
            checker = Checker(data, strict=name not in LOOSE)
            _replay(predictor, state, case["ops"], data, checker)
            if name == "video_reverse_box":
                strict = Checker(data, strict=True)
                _replay(predictor, predictor.init_state(str(sam2_dir / case["clip"])), case["ops"], data, strict,
                        golden_prompt_logits=True)
                print(name, "from the golden prompt logits", {k: f"{v:.3g}" for k, v in strict.worst.items()})
        final_states[name] = (predictor, copy.deepcopy(state))
        print(name, {k: f"{v:.3g}" for k, v in checker.worst.items()})
        return checker.worst

    return run


@pytest.mark.parametrize("name", CASES)
def test_golden_video_case(name: str, replay) -> None:
    worst = replay(name)
    assert worst["low_res_max"] <= 2


def test_frame_loading_matches_official(sam2_dir: Path) -> None:
    """Every normalised 3x1024x1024 frame tensor is the official loader's (sha256), frame 0 also by value."""
    with np.load(sam2_dir / "video_frames_clip_blackswan.npz") as data:
        frames = open_frames(sam2_dir / "clip_blackswan")
        for i in range(len(frames)):
            tensor = video_frame_tensor(frames[i], 1024)
            assert tensor.dtype == torch.float32 and tensor.shape == (3, 1024, 1024)
            assert hashlib.sha256(tensor.numpy().tobytes()).hexdigest() == str(data["input_tensor_sha256"][i])
            if i == 0:
                np.testing.assert_array_equal(tensor[:, ::4, ::4].numpy(), data["frame0_input_tensor_stride4"])


# ---- without the shared folder: a tiny random SAM 2 ----


@pytest.fixture(scope="module")
def random_sam2() -> Sam2:
    return tiny_random_sam2()


def _clip(n: int, seed: int = 0) -> list[np.ndarray]:
    """A moving bright square on a noisy background, n frames of 40x56."""
    rng = np.random.default_rng(seed)
    frames = []
    for t in range(n):
        frame = rng.integers(0, 60, (40, 56, 3), dtype=np.uint8)
        frame[8 + t % 5:24 + t % 5, 10 + t:30 + t] = 220
        frames.append(frame)
    return frames


def _prompt(predictor: Sam2VideoPredictor, state: VideoState, objects: int) -> torch.Tensor:
    logits = predictor.add_new_points_or_box(state, 0, 1, points=[[20, 15]], labels=[1])[2]
    if objects == 2:
        logits = predictor.add_new_points_or_box(state, 0, 2, box=[0, 0, 30, 20])[2]
    return logits


def _run(predictor: Sam2VideoPredictor, frames, objects: int = 2, **propagate,
         ) -> tuple[VideoState, list[tuple[int, torch.Tensor]]]:
    state = predictor.init_state(frames)
    _prompt(predictor, state, objects)
    return state, [(f, logits.clone()) for f, _, logits in predictor.propagate_in_video(state, **propagate)]


def test_tiny_random_sam2_tracks_without_shared(random_sam2: Sam2) -> None:
    predictor = segany.VideoPredictor(random_sam2, fill_hole_area=0)
    assert isinstance(predictor, Sam2VideoPredictor) and isinstance(predictor, segany.engine.VideoTracker)
    state, outputs = _run(predictor, _clip(6))
    assert [f for f, _ in outputs] == list(range(6)) and state.obj_ids == [1, 2]
    for _, logits in outputs:
        assert logits.shape == (2, 1, 40, 56) and logits.dtype == torch.float32 and torch.isfinite(logits).all()
    obj = state.objects[0]
    assert sorted(obj.cond) == [0] and obj.non_cond.frames() == [1, 2, 3, 4, 5]
    for t in range(6):
        memory = obj.output(t).maskmem_features
        assert memory.dtype == torch.bfloat16 and memory.shape == (1, 16, 8, 8)  # stored as the official
    reverse = list(predictor.propagate_in_video(state, start_frame_idx=3, reverse=True))
    assert [f for f, _, _ in reverse] == [3, 2, 1, 0]
    assert [f for f, _, _ in predictor.propagate_in_video(state, start_frame_idx=2, max_frame_num_to_track=1)] == [2, 3]
    assert Sam2VideoPredictor(random_sam2).fill_hole_area == 8  # the official video builder's default


def test_add_new_points_is_the_official_earlier_name(random_sam2: Sam2) -> None:
    predictor = Sam2VideoPredictor(random_sam2, fill_hole_area=0)
    frames = _clip(2)
    new = predictor.add_new_points_or_box(predictor.init_state(frames), 1, 3, points=[[20, 15]], labels=[1])
    old = predictor.add_new_points(predictor.init_state(frames), 1, 3, [[20, 15]], [1])
    assert old[:2] == new[:2] == (1, [3]) and torch.equal(old[2], new[2])


def test_video_file_tracks_like_its_frames(random_sam2: Sam2, tmp_path: Path) -> None:
    """A video file (PyAV) is tracked as the arrays of its decoded frames."""
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 56, 40, "yuv420p"
        for frame in _clip(3):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    predictor = Sam2VideoPredictor(random_sam2)
    decoded = [frame.copy() for frame in open_frames(path)]
    _, from_file = _run(predictor, str(path), objects=1)
    _, from_arrays = _run(predictor, decoded, objects=1)
    assert len(from_file) == 3 and all(torch.equal(a, b) for (_, a), (_, b) in zip(from_file, from_arrays))


def test_spilled_memories_read_back_give_the_same_answers(random_sam2: Sam2, tmp_path: Path) -> None:
    """Frames that leave the RAM window go to disk and come back bit-identical: a tiny window
    (everything spilled) gives the answers of the default one, for tracking and for a correction
    click on an old frame; without history the state stays within the window."""
    frames = _clip(12)
    roomy = Sam2VideoPredictor(random_sam2, fill_hole_area=0)
    tight = Sam2VideoPredictor(random_sam2, fill_hole_area=0, spill_dir=tmp_path)
    tight.memory_window = 2
    state_a, out_a = _run(roomy, frames, objects=1)
    state_b, out_b = _run(tight, frames, objects=1)
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(out_a, out_b))
    store = state_b.objects[0].non_cond
    assert store.spilled > 0 and len(store.in_ram()) <= 2 and store.frames() == list(range(1, 12))
    assert len(list(state_b.spill.path.iterdir())) >= 11 - 2
    fix_a = roomy.add_new_points_or_box(state_a, 3, 1, points=[[40, 30]], labels=[0], clear_old_points=False)
    fix_b = tight.add_new_points_or_box(state_b, 3, 1, points=[[40, 30]], labels=[0], clear_old_points=False)
    loaded = store.loaded
    assert torch.equal(fix_a[2], fix_b[2])
    redo_a = [logits for _, _, logits in roomy.propagate_in_video(state_a, start_frame_idx=3, max_frame_num_to_track=2)]
    redo_b = [logits for _, _, logits in tight.propagate_in_video(state_b, start_frame_idx=3, max_frame_num_to_track=2)]
    assert store.loaded > loaded and all(torch.equal(a, b) for a, b in zip(redo_a, redo_b))
    spill_path = state_b.spill.path
    state_b.close()
    assert not spill_path.exists()

    forgetful = Sam2VideoPredictor(random_sam2, fill_hole_area=0, keep_history=False)
    forgetful.memory_window = 9  # what frame t reads here: t-1 .. t-6 memories, t-1 .. t-min(12, 16)+1 pointers
    state_c, out_c = _run(forgetful, frames, objects=1)
    assert state_c.spill is None and len(state_c.objects[0].non_cond) == 9
    assert torch.equal(out_a[9][1], out_c[9][1])  # frame 9 still saw all it attends to
    assert not torch.equal(out_a[11][1], out_c[11][1])  # frame 11's pointers of frames 1, 2 were forgotten


def test_stream_equals_propagate(random_sam2: Sam2) -> None:
    """track(frame) on a stream gives propagate_in_video's logits: with the default pointer
    normalisation (16) on a video of >= 16 frames, and with num_frames given on a short one."""
    predictor = Sam2VideoPredictor(random_sam2, fill_hole_area=8)
    for n, num_frames in ((16, None), (5, 5)):
        frames = _clip(n, seed=n)
        _, offline = _run(predictor, frames, objects=1)
        stream = predictor.init_stream(frames[0], num_frames=num_frames)
        assert torch.equal(_prompt(predictor, stream, 1), offline[0][1])
        for t in range(1, n):
            frame_idx, obj_ids, logits = predictor.track(stream, frames[t])
            assert frame_idx == t and obj_ids == [1]
            assert torch.equal(logits, offline[t][1]), (n, t)
        assert len(stream.objects[0].non_cond) <= predictor.memory_window and stream.spill is None
    short = predictor.init_stream(frames[0])  # 5 frames tracked with the default 16
    _prompt(predictor, short, 1)
    later = [predictor.track(short, frames[t])[2] for t in range(1, 5)]
    assert not any(torch.equal(a, b[1]) for a, b in zip(later, offline[1:]))  # the normalisation matters


def test_fill_holes_in_mask_scores_known_holes() -> None:
    scores = torch.full((1, 1, 20, 20), 5.0)
    scores[0, 0, 0:3, :] = -2.0  # background touching the border, 60 px: kept
    scores[0, 0, 5:7, 5:7] = -1.0  # a 4-pixel hole: filled
    scores[0, 0, 10:13, 10:13] = -3.0  # a 9-pixel hole: above max_area 8, kept
    scores[0, 0, 15, 15] = scores[0, 0, 16, 16] = -4.0  # diagonal neighbours: one 2-pixel hole (8-connected)
    filled = fill_holes_in_mask_scores(scores, 8)
    expected = scores.clone()
    expected[0, 0, 5:7, 5:7] = 0.1
    expected[0, 0, 15, 15] = expected[0, 0, 16, 16] = 0.1
    assert torch.equal(filled, expected)
    assert torch.equal(fill_holes_in_mask_scores(scores, 9)[0, 0, 10:13, 10:13], torch.full((3, 3), 0.1))
    with pytest.raises(ValueError):
        fill_holes_in_mask_scores(scores, 0)


def test_video_predictor_fills_holes_of_its_outputs(random_sam2: Sam2) -> None:
    frames = _clip(3)
    raw, filled = Sam2VideoPredictor(random_sam2, fill_hole_area=0), Sam2VideoPredictor(random_sam2, fill_hole_area=40)
    out = {}
    for name, predictor in (("raw", raw), ("filled", filled)):
        state = predictor.init_state(frames)
        predictor.add_new_points_or_box(state, 0, 1, points=[[20, 15]], labels=[1])
        out[name] = state.objects[0].temp_cond[0].pred_masks
    assert torch.equal(out["filled"], fill_holes_in_mask_scores(out["raw"], 40))


def test_bfloat16_option_runs_in_float32_outside_autocast(random_sam2: Sam2) -> None:
    predictor = Sam2VideoPredictor(random_sam2, dtype="bfloat16")
    state, outputs = _run(predictor, _clip(3))
    assert all(logits.dtype == torch.float32 and torch.isfinite(logits).all() for _, logits in outputs)
    assert state.objects[0].output(2).obj_ptr.dtype == torch.float32
    with pytest.raises(BackendError, match="unknown dtype"):
        Sam2VideoPredictor(random_sam2, dtype="int8")


def test_typed_errors(random_sam2: Sam2, tmp_path: Path) -> None:
    predictor = Sam2VideoPredictor(random_sam2)
    frames = _clip(4)
    state = predictor.init_state(frames)
    with pytest.raises(PredictorStateError, match="no object"):
        next(predictor.propagate_in_video(state))
    with pytest.raises(VideoError, match="out of range"):
        predictor.add_new_points_or_box(state, 4, 1, points=[[1, 1]], labels=[1])
    with pytest.raises(PromptError, match="outside"):
        predictor.add_new_points_or_box(state, 0, 1, points=[[100, 1]], labels=[1])
    with pytest.raises(PromptError, match="clear_old_points"):
        predictor.add_new_points_or_box(state, 0, 1, box=[0, 0, 9, 9], clear_old_points=False)
    with pytest.raises(PromptError, match="2-D"):
        predictor.add_new_mask(state, 0, 1, np.zeros((2, 40, 56), bool))
    assert state.obj_ids == []  # a refused prompt adds no object
    predictor.add_new_points_or_box(state, 0, 1, points=[[20, 15]], labels=[1])
    with pytest.raises(VideoError, match="out of range"):
        next(predictor.propagate_in_video(state, start_frame_idx=9))
    list(predictor.propagate_in_video(state))
    with pytest.raises(NotFoundError, match="object id 7"):
        predictor.remove_object(state, 7, strict=True)
    with pytest.raises(NotFoundError, match="object id 7"):
        predictor.clear_all_prompts_in_frame(state, 0, 7)
    assert predictor.remove_object(state, 7) == ([1], [])
    predictor.clear_all_prompts_in_frame(state, 0, 1)  # frame 0 is no longer a conditioning frame
    with pytest.raises(PredictorStateError, match="object 1 has no prompt"):
        next(predictor.propagate_in_video(state))
    with pytest.raises(PredictorStateError, match="streams"):
        predictor.track(state, frames[0])
    stream = predictor.init_stream(frames[0])
    with pytest.raises(PredictorStateError, match="frame by frame"):
        next(predictor.propagate_in_video(stream))
    predictor.add_new_points_or_box(stream, 0, 1, points=[[20, 15]], labels=[1])
    for frame in frames * 2:
        predictor.track(stream, frame)
    with pytest.raises(VideoError, match="no longer held"):
        predictor.add_new_points_or_box(stream, 0, 1, points=[[20, 15]], labels=[1])
    with pytest.raises(VideoError, match="is 10x10"):
        predictor.track(stream, np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(VideoError, match="does not exist"):
        predictor.init_state(tmp_path / "missing")
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "00000.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(VideoError, match="cannot be read"):
        predictor.init_state(tmp_path / "clip")


def test_frame_store_window_and_spill(tmp_path: Path) -> None:
    from segany.video.memory_store import FrameOutput

    spill = SpillFolder(tmp_path)
    store = FrameStore(window=2, spill=spill)
    outs = {t: FrameOutput(torch.full((1, 1, 4, 4), float(t)), torch.zeros(1, 8), torch.ones(1, 1),
                           torch.ones(1, 2, 2, 2, dtype=torch.bfloat16) * t) for t in range(5)}
    for t, out in outs.items():
        store[t] = out
    assert store.in_ram() == [3, 4] and store.frames() == [0, 1, 2, 3, 4] and store.spilled == 3
    back = store.get(0)
    assert torch.equal(back.pred_masks, outs[0].pred_masks) and back.maskmem_features.dtype == torch.bfloat16
    store[0] = outs[4]  # overwriting a spilled frame drops its file
    assert not (spill.path / "obj_0.pt").exists() and torch.equal(store.get(0).pred_masks, outs[4].pred_masks)
    store.pop(1)
    assert 1 not in store and store.frames() == [0, 2, 3, 4]
    store.clear()
    assert len(store) == 0 and not any(spill.path.iterdir())


def test_sine_position_encoding_computed_once_per_grid_in_inference() -> None:
    """Trackers ask for the neck's and the memory's position encodings on every frame: under
    inference mode they are computed once per grid (same values), outside it every time."""
    from segany.models.position_encoding import PositionEmbeddingSine

    pe = PositionEmbeddingSine(16)
    fresh = pe.encoding(8, 8)
    with torch.inference_mode():
        first, again = pe.encoding(8, 8), pe.encoding(8, 8)
        other = pe.encoding(4, 8)
    assert first is again and torch.equal(first, fresh) and other.shape == (16, 4, 8)
    assert pe.encoding(8, 8) is not pe.encoding(8, 8)  # autograd / export: not the cached inference tensor
