"""Differential fuzzing against the official packages: seeded random calls on segany and on the
official implementation, both loaded from the same golden tiny checkpoint, every output compared.
The golden cases fix a few calls each; this walks the rest of the argument space (prompt kinds
and batch shapes, generator settings, video call sequences with several objects, corrections,
removals, resets, start frames and directions) the way held-out cases could.

Benchmark environment only (``bash benchmarks/setup_env.sh``):

    PYTHONPATH=src .venv-bench/bin/python scripts/fuzz_official.py --target image --seeds 0-5
    PYTHONPATH=src .venv-bench/bin/python scripts/fuzz_official.py --target generator --seeds 0-20
    PYTHONPATH=src .venv-bench/bin/python scripts/fuzz_official.py --target sam1-generator --seeds 0-20
    PYTHONPATH=src .venv-bench/bin/python scripts/fuzz_official.py --target video --seeds 0-10

One line per seed; exit status 1 when a problem was found. A problem: an output that differs
beyond float rounding (masks: more than two pixels and more than 5e-3 of the pixels for video,
whose memories amplify rounding, 1e-4 otherwise; values: 1e-3 of their scale), a different
frame / object list, or segany refusing a call the official code answers. Calls the official code
fails on and segany answers are counted, not problems: the official generators fail when crop
layers are on and no mask survives, and the official video predictor (float32, no autocast)
cannot track an object on a frame with no object pointer before it in the tracking direction (a
second object first prompted later in the video, a start frame before every prompt): it keeps
memories in bfloat16 and relies on ``torch.cat`` with the float32 pointers to promote them. To
fuzz past that, ``--target video`` upcasts the official memories (exact) before its memory attention.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import SHARED, import_official  # noqa: E402
from benchmarks.video_memory import _checkpoint as sam2_checkpoint  # noqa: E402  (the golden .pt, unpacked once)

GOLDEN = SHARED / "golden"
SAM2_DIR = GOLDEN / "sam2"
SAM2_YAML = "sam2.1_hiera_golden_tiny.yaml"


class Findings:
    """Problems and official failures of one seed."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.official_failed = 0
        self.compared = 0

    def outcome(self, what: str, call: Callable[[Any], Any], ours: Any, theirs: Any) -> tuple[Any, Any] | None:
        """Both implementations' results of ``call`` (None when either raised, recording why)."""
        results = []
        for impl in (ours, theirs):
            try:
                results.append(call(impl))
            except Exception as error:  # noqa: BLE001 - a refusal is an outcome to compare
                results.append(error)
        a, b = results
        if isinstance(a, Exception) and not isinstance(b, Exception):
            self.problems.append(f"{what}: segany raised {type(a).__name__}: {a}; the official answered")
        elif isinstance(b, Exception) and not isinstance(a, Exception):
            self.official_failed += 1
        if isinstance(a, Exception) or isinstance(b, Exception):
            return None
        return a, b

    def arrays(self, what: str, ours: Any, theirs: Any, binary: bool, pixel_tolerance: float = 1e-4) -> None:
        ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
        self.compared += 1
        if ours.shape != theirs.shape:
            self.problems.append(f"{what}: shape {ours.shape}, official {theirs.shape}")
        elif binary:
            differ = int((ours != theirs).sum())
            if differ > max(2, pixel_tolerance * ours.size):  # two pixels at the threshold: rounding
                self.problems.append(f"{what}: {differ} of {ours.size} pixels differ")
        else:
            diff = float(np.abs(ours - theirs).max()) if ours.size else 0.0
            if diff > 1e-3 * max(1.0, float(np.abs(theirs).max()) if theirs.size else 1.0):
                self.problems.append(f"{what}: max difference {diff:.5f}")


# ---- models ------------------------------------------------------------------------------------

def _hydra() -> None:
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    initialize_config_dir(config_dir=str(SAM2_DIR), version_base="1.2")


def official_sam2(checkpoint: Path) -> torch.nn.Module:
    from sam2.build_sam import build_sam2

    _hydra()
    return build_sam2(SAM2_YAML, str(checkpoint), device="cpu")


def official_video(checkpoint: Path, options: dict[str, bool]) -> Any:
    """The official video predictor with ``options``, hole filling off (it needs the CUDA extension),
    memories upcast before the memory attention (see the module docstring) and every frame's
    features kept (the official keeps the last frame's only; the features are deterministic)."""
    from sam2.build_sam import build_sam2_video_predictor

    _hydra()
    overrides = ["++model.fill_hole_area=0"] + [f"++model.{k}={str(v).lower()}" for k, v in options.items()]
    predictor = build_sam2_video_predictor(SAM2_YAML, str(checkpoint), device="cpu", hydra_overrides_extra=overrides)
    attend = predictor.memory_attention.forward

    def float_memory(curr, memory, curr_pos=None, memory_pos=None, num_obj_ptr_tokens=0):
        return attend(curr, memory.float(), curr_pos, None if memory_pos is None else memory_pos.float(),
                      num_obj_ptr_tokens)

    predictor.memory_attention.forward = float_memory
    features: dict[int, Any] = {}
    compute = predictor._get_image_feature

    def cached(state: dict, frame_idx: int, batch_size: int) -> Any:
        if frame_idx in features:
            state["cached_features"] = {frame_idx: features[frame_idx]}
        out = compute(state, frame_idx, batch_size)
        features[frame_idx] = state["cached_features"][frame_idx]
        return out

    predictor._get_image_feature = cached
    return predictor


def segany_video(model: Any, options: dict[str, bool]) -> Any:
    """segany's video predictor with ``options``, every frame's features kept."""
    from segany.video.sam2_video import Sam2VideoPredictor

    features: dict[int, Any] = {}

    class KeptFeatures(Sam2VideoPredictor):
        def _features(self, state: Any, frame_idx: int) -> Any:
            if frame_idx not in features:
                features[frame_idx] = super()._features(state, frame_idx)
            return features[frame_idx]

    return KeptFeatures(model, fill_hole_area=0, **options)


def golden_images() -> dict[str, np.ndarray]:
    with np.load(SAM2_DIR / "images.npz") as data:
        return {name: data[name] for name in ("photo", "small", "wide")}


# ---- random prompts ----------------------------------------------------------------------------

def random_points(rng: np.random.Generator, h: int, w: int, n: int) -> np.ndarray:
    return np.stack([rng.uniform(0, w - 1, n), rng.uniform(0, h - 1, n)], -1).astype(np.float32)


def random_labels(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    labels = (rng.random(shape) < 0.7).astype(np.int32)
    labels[..., 0] = 1
    return labels


def random_box(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    x0, y0 = rng.uniform(0, w * 0.7), rng.uniform(0, h * 0.7)
    return np.array([x0, y0, x0 + rng.uniform(10, w - x0 - 1), y0 + rng.uniform(10, h - y0 - 1)], np.float32)


def image_prompts(rng: np.random.Generator, h: int, w: int, previous: np.ndarray | None,
                  batched: bool, relative: bool = False) -> dict[str, Any]:
    """``predict`` arguments: clicks, a box, both, or clicks with the previous low-res logits; with
    ``batched`` sometimes B sets (B, N, 2) / (B, 4), shorter click sets padded with -1; with
    ``relative`` the coordinates in [0, 1] (``normalize_coords=False``)."""
    kind = int(rng.integers(0, 5))
    sets = int(rng.integers(2, 4)) if batched and rng.random() < 0.4 else 0
    n = int(rng.integers(1, 5))
    args: dict[str, Any] = {"multimask_output": bool(rng.random() < 0.5), "return_logits": bool(rng.random() < 0.5)}
    if kind != 2:
        if sets:
            args["point_coords"] = np.stack([random_points(rng, h, w, n) for _ in range(sets)])
            args["point_labels"] = random_labels(rng, (sets, n))
            if n > 1 and rng.random() < 0.3:
                args["point_labels"][0, 1:] = -1
        else:
            args["point_coords"], args["point_labels"] = random_points(rng, h, w, n), random_labels(rng, (n,))
    if kind in (1, 2):
        args["box"] = np.stack([random_box(rng, h, w) for _ in range(sets)]) if sets else random_box(rng, h, w)
    if kind == 3 and previous is not None and not sets:
        args["mask_input"] = previous
    if relative:
        args["normalize_coords"] = False
        for key, scale in (("point_coords", [w, h]), ("box", [w, h, w, h])):
            if key in args:
                args[key] = args[key] / np.array(scale, np.float32)
    return args


# ---- targets -----------------------------------------------------------------------------------

def fuzz_predictor(seed: int, ours: Any, theirs: Any, sam2: bool, findings: Findings, calls: int = 30) -> str:
    """Random ``predict`` calls on every golden image (and, for SAM 2, ``predict_batch``)."""
    images = golden_images()
    for name, image in images.items():
        ours.set_image(image)
        theirs.set_image(image)
        rng = np.random.default_rng([seed, len(name)])
        previous = None
        for k in range(calls):
            args = image_prompts(rng, *image.shape[:2], previous, batched=sam2, relative=sam2 and rng.random() < 0.2)
            result = findings.outcome(f"{name} call {k}", lambda p, args=args: p.predict(**args), ours, theirs)
            if result is None:
                continue
            for part, a, b in zip(("masks", "ious", "low-res logits"), *result):
                findings.arrays(f"{name} call {k} {part}", a, b, binary=part == "masks" and not args["return_logits"])
            _, ious, low = result[1]
            if low.ndim == 3:
                previous = low[int(np.argmax(ious))][None]
    if not sam2:
        return f"{calls} predict calls per image"
    ours.set_image_batch(list(images.values()))
    theirs.set_image_batch(list(images.values()))
    rng = np.random.default_rng([seed, 99])
    for k in range(10):
        relative = bool(rng.random() < 0.2)
        per_image = [image_prompts(rng, *image.shape[:2], None, batched=True, relative=relative)
                     for image in images.values()]
        batch = {f"{key}_batch": [args.get(key) for args in per_image]
                 for key in ("point_coords", "point_labels", "box")}
        flags = {key: per_image[0][key] for key in ("multimask_output", "return_logits")}
        flags["normalize_coords"] = not relative
        result = findings.outcome(f"batch call {k}", lambda p, b=batch, f=flags: p.predict_batch(**b, **f),
                                  ours, theirs)
        if result is None:
            continue
        for i in range(len(images)):
            for part, a, b in zip(("masks", "ious", "low-res logits"), result[0], result[1]):
                findings.arrays(f"batch call {k} image {i} {part}", a[i], b[i],
                                binary=part == "masks" and not flags["return_logits"])
    return f"{calls} predict calls per image, 10 predict_batch calls"


def generator_settings(rng: np.random.Generator, sam2: bool) -> dict[str, Any]:
    settings = {
        "points_per_side": int(rng.choice([2, 3, 4])), "points_per_batch": int(rng.choice([3, 16, 64])),
        "pred_iou_thresh": float(rng.choice([0.0, 0.0, 0.3, 0.6])),
        "stability_score_thresh": float(rng.choice([0.0, 0.0, 0.5, 0.9])),
        "stability_score_offset": float(rng.choice([0.5, 1.0, 2.0])),
        "box_nms_thresh": float(rng.choice([0.5, 0.7, 1.0])), "crop_n_layers": int(rng.choice([0, 0, 1])),
        "crop_nms_thresh": float(rng.choice([0.5, 0.7])), "crop_overlap_ratio": float(rng.choice([512 / 1500, 0.2])),
        "crop_n_points_downscale_factor": int(rng.choice([1, 2])),
        "min_mask_region_area": int(rng.choice([0, 0, 20, 200])),
        "output_mode": str(rng.choice(["binary_mask", "uncompressed_rle", "coco_rle"])),
    }
    if sam2:
        settings.update(mask_threshold=float(rng.choice([-1.0, 0.0, 1.0])), use_m2m=bool(rng.random() < 0.3),
                        multimask_output=bool(rng.random() < 0.7))
    return settings


def decoded(segmentation: Any, mode: str) -> np.ndarray:
    """A record's mask as an HxW bool array, whatever its ``output_mode``."""
    from segany.masks import decode_rle

    return np.asarray(segmentation, bool) if mode == "binary_mask" else decode_rle(segmentation)


def fuzz_generator(seed: int, ours_model: Any, theirs_model: Any, sam2: bool, findings: Findings) -> str:
    """One generator run with random settings on a random golden image; records compared in order."""
    if sam2:
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator as Official

        from segany.amg.sam2_generator import Sam2MaskGenerator as Ours
    else:
        from segment_anything import SamAutomaticMaskGenerator as Official

        from segany.amg.generator import SamMaskGenerator as Ours
    rng = np.random.default_rng(seed)
    name = str(rng.choice(["small", "small", "wide", "photo"]))
    settings = generator_settings(rng, sam2)
    image = golden_images()[name]
    result = findings.outcome("generate", lambda model: (Ours if model is ours_model else Official)(
        model, **settings).generate(image), ours_model, theirs_model)
    if result is None:
        return f"{name} {settings}"
    ours, theirs = result
    if len(ours) != len(theirs):
        findings.problems.append(f"{len(ours)} records, official {len(theirs)}")
    for i, (a, b) in enumerate(zip(ours, theirs)):
        mode = settings["output_mode"]
        findings.arrays(f"record {i} mask", decoded(a["segmentation"], mode), decoded(b["segmentation"], mode), True)
        findings.arrays(f"record {i} scores", [a["predicted_iou"], a["stability_score"]],
                        [b["predicted_iou"], b["stability_score"]], False)
        if set(a) != set(b) or type(a["segmentation"]) is not type(b["segmentation"]):
            findings.problems.append(f"record {i}: keys or segmentation type differ")
        if a["crop_box"] != b["crop_box"] or np.abs(np.subtract(a["bbox"], b["bbox"])).max() > 1.01:
            findings.problems.append(f"record {i}: bbox {a['bbox']} / crop {a['crop_box']}, "
                                     f"official {b['bbox']} / {b['crop_box']}")
    return f"{name} {len(ours)} records {settings}"


VIDEO_HW = (480, 854)


def video_calls(rng: np.random.Generator, num_frames: int) -> list[dict[str, Any]]:
    """A random call sequence: prompts for 1-3 objects, then propagations, corrections (with or
    without the old clicks), new objects, mask prompts, clears, removals and resets."""
    objects = list(range(1, int(rng.integers(1, 4)) + 1))
    calls = [prompt_call(rng, o, int(rng.integers(0, num_frames)), True) for o in objects
             for _ in range(int(rng.integers(1, 3)))]
    for _ in range(int(rng.integers(2, 6))):
        r = rng.random()
        if r < 0.4:
            call: dict[str, Any] = {"op": "propagate", "reverse": bool(rng.random() < 0.4)}
            if rng.random() < 0.4:
                call["start_frame_idx"] = int(rng.integers(0, num_frames))
            if rng.random() < 0.3:
                call["max_frame_num_to_track"] = int(rng.integers(0, num_frames))
            calls.append(call)
        elif r < 0.7:
            calls.append(prompt_call(rng, int(rng.choice(objects + [max(objects) + 1])),
                                     int(rng.integers(0, num_frames)), False))
        elif r < 0.8:
            calls.append({"op": "clear", "frame_idx": int(rng.integers(0, num_frames)),
                          "obj_id": int(rng.choice(objects))})
        elif r < 0.9:
            calls.append({"op": "remove", "obj_id": int(rng.choice(objects))})
        else:
            calls += [{"op": "reset"}, prompt_call(rng, 1, int(rng.integers(0, num_frames)), True)]
    return calls + [{"op": "propagate", "reverse": False}, {"op": "propagate", "reverse": True}]


def prompt_call(rng: np.random.Generator, obj_id: int, frame_idx: int, first: bool) -> dict[str, Any]:
    h, w = VIDEO_HW
    r = rng.random()
    if r < 0.15:
        return {"op": "mask", "frame_idx": frame_idx, "obj_id": obj_id, "seed": int(rng.integers(1 << 30))}
    call: dict[str, Any] = {"op": "points", "frame_idx": frame_idx, "obj_id": obj_id}
    n = int(rng.integers(1, 4))
    if r < 0.4:
        call["box"] = random_box(rng, h, w)
    if r >= 0.4 or rng.random() < 0.5:
        call["points"], call["labels"] = random_points(rng, h, w, n), random_labels(rng, (n,))
        if not first and "box" not in call and rng.random() < 0.5:
            call["clear_old_points"] = False
    if rng.random() < 0.15:
        call["normalize_coords"] = False
        for key, scale in (("points", [w, h]), ("box", [w, h, w, h])):
            if key in call:
                call[key] = call[key] / np.array(scale, np.float32)
    return call


def ellipse_mask(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = VIDEO_HW
    yy, xx = np.mgrid[:h, :w]
    cy, cx, ry, rx = rng.uniform(100, 380), rng.uniform(150, 700), rng.uniform(20, 150), rng.uniform(20, 250)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def run_video_call(predictor: Any, state: Any, call: dict[str, Any]) -> list[tuple[int, list[int], Any]]:
    """(frame_idx, obj_ids, logits or None) of every output of one call."""
    op = call["op"]
    if op == "points":
        options = {k: call[k] for k in ("clear_old_points", "normalize_coords") if k in call}
        frame, ids, logits = predictor.add_new_points_or_box(state, call["frame_idx"], call["obj_id"],
                                                             points=call.get("points"), labels=call.get("labels"),
                                                             box=call.get("box"), **options)
        return [(frame, list(ids), logits)]
    if op == "mask":
        mask = ellipse_mask(call["seed"])
        frame, ids, logits = predictor.add_new_mask(state, call["frame_idx"], call["obj_id"], mask)
        return [(frame, list(ids), logits)]
    if op == "propagate":
        options = {k: call[k] for k in ("start_frame_idx", "max_frame_num_to_track", "reverse") if k in call}
        return [(frame, list(ids), logits) for frame, ids, logits in predictor.propagate_in_video(state, **options)]
    if op == "clear":
        frame, ids, logits = predictor.clear_all_prompts_in_frame(state, call["frame_idx"], call["obj_id"])
        return [(frame, list(ids), logits)]
    if op == "remove":
        ids, updated = predictor.remove_object(state, call["obj_id"])
        return [(frame, list(ids), logits) for frame, logits in updated] or [(-1, list(ids), None)]
    predictor.reset_state(state)
    return []


def fuzz_video(seed: int, model: Any, checkpoint: Path, findings: Findings) -> str:
    rng = np.random.default_rng(seed)
    options = {"non_overlap_masks": bool(rng.random() < 0.3),
               "add_all_frames_to_correct_as_cond": bool(rng.random() < 0.3)}
    clip = str(SAM2_DIR / "clip_blackswan")
    calls = video_calls(rng, num_frames=len(list(Path(clip).glob("*.jpg"))))
    ours, theirs = segany_video(model, options), official_video(checkpoint, options)
    states = {id(ours): ours.init_state(clip), id(theirs): theirs.init_state(clip)}
    for k, call in enumerate(calls):
        result = findings.outcome(f"call {k} {call['op']}",
                                  lambda p, call=call: run_video_call(p, states[id(p)], call), ours, theirs)
        if result is None:
            continue
        a, b = result
        if [(f, ids) for f, ids, _ in a] != [(f, ids) for f, ids, _ in b]:
            findings.problems.append(f"call {k} {call['op']}: frames / objects {[(f, i) for f, i, _ in a]}, "
                                     f"official {[(f, i) for f, i, _ in b]}")
            continue
        for (frame, _, la), (_, _, lb) in zip(a, b):
            if la is not None and lb is not None:
                la, lb = la.float().numpy(), lb.float().numpy()
                findings.arrays(f"call {k} {call['op']} frame {frame} masks", la > 0, lb > 0, True, 5e-3)
                findings.arrays(f"call {k} {call['op']} frame {frame} absent", la <= -1023, lb <= -1023, True, 0.0)
    return f"{options} {len(calls)} calls"


def targets(name: str, tmp: Path) -> Callable[[int, Findings], str]:
    """``name``'s fuzzing of one seed (both implementations built once)."""
    import segany

    if name.startswith("sam1"):
        from segment_anything import SamPredictor
        from segment_anything.build_sam import _build_sam

        ours = segany.load_model(GOLDEN / "tiny_sam.json", checkpoint=GOLDEN / "tiny_sam.pth")
        theirs = _build_sam(encoder_embed_dim=96, encoder_depth=4, encoder_num_heads=3,
                            encoder_global_attn_indexes=[1, 3], checkpoint=str(GOLDEN / "tiny_sam.pth"))
        if name == "sam1-image":
            return lambda seed, found: fuzz_predictor(seed, segany.Predictor(ours), SamPredictor(theirs), False, found)
        return lambda seed, found: fuzz_generator(seed, ours, theirs, False, found)
    checkpoint = sam2_checkpoint(tmp)
    ours = segany.load_model(SAM2_DIR / SAM2_YAML, checkpoint=checkpoint)
    if name == "video":
        return lambda seed, found: fuzz_video(seed, ours, checkpoint, found)
    theirs = official_sam2(checkpoint)
    if name == "image":
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        return lambda seed, found: fuzz_predictor(seed, segany.Predictor(ours), SAM2ImagePredictor(theirs), True,
                                                  found)
    return lambda seed, found: fuzz_generator(seed, ours, theirs, True, found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("image", "generator", "video", "sam1-image", "sam1-generator"),
                        required=True, help="SAM 2.1 image predictor, generator, video predictor; SAM 1's two")
    parser.add_argument("--seeds", default="0-10", help="A-B: seeds A..B-1")
    args = parser.parse_args(argv)
    first, last = map(int, args.seeds.split("-"))
    torch.set_num_threads(1)
    import_official()
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        fuzz = targets(args.target, Path(tmp))
        for seed in range(first, last):
            findings = Findings()
            what = fuzz(seed, findings)
            failed += bool(findings.problems)
            print(f"seed {seed}: {len(findings.problems)} problems, {findings.compared} outputs compared, "
                  f"{findings.official_failed} official failures | {what}", flush=True)
            for problem in findings.problems[:8]:
                print("   ", problem, flush=True)
    print(f"{failed} of {last - first} seeds with problems")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
