"""The video object segmentation benchmark (DAVIS): region similarity J, contour accuracy F, J&F.

A tracker (any :class:`~segany.engine.VideoTracker`) is prompted on each sequence's first frame and
propagates to the end; every later frame that has a ground-truth annotation is scored, for every
object of the first frame, the way the DAVIS benchmark's ``davis2017-evaluation`` does:

* J — IoU of the predicted and true masks (1 when both are empty).
* F — boundary F-measure (:func:`f_measure`): the one-pixel boundaries of both masks
  (:func:`seg2bmap`), each matched within ``ceil(0.008 * image diagonal)`` pixels of the other
  (dilation by a disk), precision and recall of the matches, their harmonic mean.

The first frame (the prompt) is left out of the scores. Per object, J and F are means over the
scored frames; a sequence's J and F are the means over its objects, and the dataset's over all objects.
Prompts: ``mask`` — the ground-truth first-frame mask (the semi-supervised protocol); ``click`` —
one positive click on the first frame's object centre, its interior point farthest from the
boundary (the Track Anything protocol).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from time import perf_counter
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from ..data.datasets import VideoDataset, VideoSequence
from ..engine import VideoTracker
from ..errors import DatasetError, PromptError
from .clicker import inner_distance
from .metrics import iou

VOS_PROMPTS = ("mask", "click")
BOUND_TH = 0.008


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """The one-pixel boundary map of an HxW mask, as DAVIS computes it: a pixel is on the boundary
    when it differs from its east, south or south-east neighbour (last row / column compared
    with their only neighbour, the bottom-right corner never)."""
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def disk(radius: int) -> np.ndarray:
    """skimage's ``disk(radius)``: the uint8 (2r+1)x(2r+1) mask of the points with x^2 + y^2 <= r^2."""
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def f_measure(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None, bound_th: float = BOUND_TH) -> float:
    """DAVIS contour accuracy of two HxW bool masks (``void`` pixels left out); ``bound_th`` below 1
    is a fraction of the image diagonal, else pixels."""
    if pred.shape != gt.shape:
        raise DatasetError(f"prediction is {pred.shape[::-1]} (WxH) but the ground truth is {gt.shape[::-1]}")
    keep = np.ones_like(gt, dtype=bool) if void is None else ~void.astype(bool)
    bound_pix = bound_th if bound_th >= 1 else math.ceil(bound_th * np.linalg.norm(gt.shape))
    fg_boundary = seg2bmap(pred.astype(bool) & keep)
    gt_boundary = seg2bmap(gt.astype(bool) & keep)
    structure = disk(int(bound_pix))
    fg_dil = cv2.dilate(fg_boundary.astype(np.uint8), structure).astype(bool)
    gt_dil = cv2.dilate(gt_boundary.astype(np.uint8), structure).astype(bool)
    n_fg, n_gt = int(fg_boundary.sum()), int(gt_boundary.sum())
    if n_fg == 0 and n_gt == 0:
        return 1.0
    if n_fg == 0 or n_gt == 0:
        return 0.0  # precision 1 / recall 0, or the reverse
    precision = np.count_nonzero(fg_boundary & gt_dil) / n_fg
    recall = np.count_nonzero(gt_boundary & fg_dil) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def object_centre(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the mask's interior point farthest from its boundary (the image border counts as
    boundary; the first such pixel in row-major order)."""
    distance = inner_distance(mask.astype(bool))
    y, x = divmod(int(np.argmax(distance)), distance.shape[1])
    return x, y


def _prompt(tracker: VideoTracker, state: Any, obj_id: int, gt: np.ndarray, prompt: str) -> None:
    if prompt == "mask":
        tracker.add_new_mask(state, 0, obj_id, gt)
    else:
        x, y = object_centre(gt)
        tracker.add_new_points_or_box(state, 0, obj_id, points=np.array([[x, y]], dtype=np.float32),
                                      labels=np.array([1], dtype=np.int32))


def evaluate_sequence(tracker: VideoTracker, sequence: VideoSequence, prompt: str = "mask") -> dict[str, Any]:
    """J, F and J&F of one sequence (means over its objects), per-object scores, and timing."""
    ids = sequence.object_ids()
    first = sequence.annotation(0)
    assert first is not None
    start = perf_counter()
    state = tracker.init_state(str(sequence.frames_dir))
    for obj_id in ids:
        _prompt(tracker, state, obj_id, first == obj_id, prompt)
    scores: dict[int, tuple[list[float], list[float]]] = {k: ([], []) for k in ids}
    seconds = perf_counter() - start  # the tracker's time only, not the scoring's
    frames = 0
    tracked = tracker.propagate_in_video(state)
    while True:
        start = perf_counter()
        try:
            frame_idx, obj_ids, logits = next(tracked)
        except StopIteration:
            break
        finally:
            seconds += perf_counter() - start
        frames += 1
        label = sequence.annotation(frame_idx) if frame_idx != 0 else None
        if label is None:
            continue
        masks = (logits[:, 0] > 0).cpu().numpy()
        if masks.shape[1:] != label.shape:
            raise DatasetError(f"{sequence.name} frame {frame_idx}: the tracker's masks are {masks.shape[:0:-1]} (WxH), "
                               f"the annotation is {label.shape[::-1]}")
        for k in ids:
            pred = masks[obj_ids.index(k)]
            gt = label == k
            scores[k][0].append(iou(pred, gt))
            scores[k][1].append(f_measure(pred, gt))
    objects = {str(k): {"j": float(np.mean(j)) if j else float("nan"), "f": float(np.mean(f)) if f else float("nan"),
                        "frames": len(j)} for k, (j, f) in scores.items()}
    j = float(np.mean([o["j"] for o in objects.values()]))
    f = float(np.mean([o["f"] for o in objects.values()]))
    return {"j": j, "f": f, "jf": (j + f) / 2, "objects": objects, "frames": frames,
            "seconds_per_frame": seconds / max(frames, 1)}


def evaluate_vos(tracker: VideoTracker, dataset: VideoDataset, prompt: str = "mask", progress: bool = True,
                 on_sequence: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the VOS protocol over every sequence; a JSON-ready summary (``dataset``, ``protocol``,
    ``prompt``, per-sequence ``sequences`` {name: {j, f, jf, ...}}, the means ``j``, ``f``, ``jf``
    over all objects). ``on_sequence`` gets the partial summary after each sequence."""
    if prompt not in VOS_PROMPTS:
        raise PromptError(f"unknown VOS prompt {prompt!r}; choose from {', '.join(VOS_PROMPTS)}")
    sequences: dict[str, dict[str, Any]] = {}
    bar = tqdm(dataset, desc=f"{dataset.name}/vos-{prompt}", unit="seq", disable=not progress, dynamic_ncols=True)
    summary: dict[str, Any] = {}
    for sequence in bar:
        sequences[sequence.name] = evaluate_sequence(tracker, sequence, prompt)
        summary = _vos_summary(dataset, prompt, sequences)
        bar.set_postfix_str(f"J&F {summary['jf']:.3f}")
        if on_sequence is not None:
            on_sequence({**summary, "complete": False})
    return {**summary, "complete": True}


def _vos_summary(dataset: VideoDataset, prompt: str, sequences: dict[str, dict[str, Any]]) -> dict[str, Any]:
    objects = [o for s in sequences.values() for o in s["objects"].values()]
    j = float(np.mean([o["j"] for o in objects]))
    f = float(np.mean([o["f"] for o in objects]))
    frames = sum(s["frames"] for s in sequences.values())
    seconds = sum(s["seconds_per_frame"] * s["frames"] for s in sequences.values())
    return {"dataset": dataset.name, "protocol": "vos", "prompt": prompt, "num_sequences": len(sequences),
            "num_objects": len(objects), "j": j, "f": f, "jf": (j + f) / 2,
            "seconds_per_frame": seconds / max(frames, 1), "sequences": sequences}


def format_vos_table(summary: dict[str, Any]) -> str:
    """A plain-text table of a summary from :func:`evaluate_vos`: J, F, J&F per sequence and the mean."""
    lines = [(f"{summary['dataset']} / vos, prompt {summary['prompt']}: {summary['num_sequences']} sequences, "
              f"{summary['seconds_per_frame'] * 1000:.0f} ms per frame"),
             "| sequence | J | F | J&F |", "| --- | --- | --- | --- |"]
    for name, s in summary["sequences"].items():
        lines.append(f"| {name} | {s['j']:.3f} | {s['f']:.3f} | {s['jf']:.3f} |")
    lines.append(f"| mean | {summary['j']:.3f} | {summary['f']:.3f} | {summary['jf']:.3f} |")
    return "\n".join(lines)
