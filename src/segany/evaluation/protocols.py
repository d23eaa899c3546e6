"""The standard evaluation protocols, run on any predictor with the ``set_image`` / ``predict`` API.

* ``noc`` — RITM/f-BRS: up to ``max_clicks`` clicks from :func:`~.clicker.next_click_ritm`, every
  click sent with all previous clicks and the previous low-res logits as ``mask_input``. The first
  click asks for multimask output and keeps the candidate with the highest predicted IoU (a single
  click is ambiguous); later clicks ask for one mask. Reports NoC@85/90, NoF@85/90 and mIoU@k.
* ``sam`` — the SAM paper (appendix D.1): points from :func:`~.clicker.next_click_sam`, each call
  with all points so far and no previous mask, multimask output; mIoU at 1, 2, 3, 5 and 9 points for
  the top-1 candidate by predicted IoU (whose errors place the next point) and for the oracle
  best-of-candidates.
* ``box`` — the ground-truth box (tight XYXY around the object pixels) as the only prompt, one mask.
"""
from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from typing import Any

import numpy as np
from tqdm import tqdm

from ..data.datasets import Dataset, Target
from ..engine import PromptPredictor
from ..errors import PromptError
from ..masks import mask_bbox_xywh
from .clicker import Click, next_click_ritm, next_click_sam
from .metrics import clicks_to_reach, iou, miou_at, noc, nof

PROTOCOLS = ("noc", "sam", "box")
SAM_POINTS = (1, 2, 3, 5, 9)
THRESHOLDS = (0.85, 0.90)


class _Clicks:
    """The clicks of one object so far, as predictor arrays, plus the map of clicked pixels."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.coords: list[tuple[int, int]] = []
        self.labels: list[int] = []
        self.clicked = np.zeros(shape, dtype=bool)

    def add(self, click: Click) -> None:
        self.coords.append((click.x, click.y))
        self.labels.append(int(click.positive))
        self.clicked[click.y, click.x] = True

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.coords, dtype=np.float64), np.asarray(self.labels, dtype=np.int64)

    def as_json(self) -> list[list[int]]:
        """The clicks as ``[x, y, label]`` rows."""
        return [[x, y, label] for (x, y), label in zip(self.coords, self.labels)]


def _key(threshold: float) -> str:
    return f"{round(threshold * 100)}"


class _Timer:
    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def predict(self, predictor: PromptPredictor, **prompt: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        start = perf_counter()
        masks, scores, low_res = predictor.predict(**prompt)
        out = (masks.astype(bool, copy=False), scores, low_res)  # SAM 2's masks are float32 0/1
        self.seconds += perf_counter() - start
        self.calls += 1
        return out


def _noc_object(predictor: PromptPredictor, target: Target, max_clicks: int, timer: _Timer) -> dict[str, Any]:
    clicks = _Clicks(target.mask.shape)
    pred = np.zeros_like(target.mask)
    logits = None
    ious: list[float] = []
    for k in range(1, max_clicks + 1):
        click = next_click_ritm(target.mask, pred, target.ignore, clicks.clicked)
        if click is None:  # nothing left to correct: the result stands for the remaining clicks
            ious.append(ious[-1])
            continue
        clicks.add(click)
        coords, labels = clicks.arrays()
        masks, scores, low_res = timer.predict(predictor, point_coords=coords, point_labels=labels,
                                               mask_input=logits, multimask_output=k == 1)
        best = int(np.argmax(scores))
        pred, logits = masks[best], low_res[best][None]
        ious.append(iou(pred, target.mask, target.ignore))
    result: dict[str, Any] = {"ious": [round(v, 6) for v in ious], "clicks": clicks.as_json()}
    for t in THRESHOLDS:
        result[f"noc@{_key(t)}"] = clicks_to_reach(ious, t, max_clicks)
    return result


def _sam_object(predictor: PromptPredictor, target: Target, max_clicks: int, timer: _Timer) -> dict[str, Any]:
    clicks = _Clicks(target.mask.shape)
    pred = np.zeros_like(target.mask)
    top1: list[float] = []
    oracle: list[float] = []
    for _ in range(max_clicks):
        click = next_click_sam(target.mask, pred, target.ignore, clicks.clicked)
        if click is None:
            top1.append(top1[-1])
            oracle.append(oracle[-1])
            continue
        clicks.add(click)
        coords, labels = clicks.arrays()
        masks, scores, _ = timer.predict(predictor, point_coords=coords, point_labels=labels, multimask_output=True)
        candidates = [iou(m, target.mask, target.ignore) for m in masks]
        pred = masks[int(np.argmax(scores))]
        top1.append(candidates[int(np.argmax(scores))])
        oracle.append(max(candidates))
    return {"ious": [round(v, 6) for v in top1], "oracle_ious": [round(v, 6) for v in oracle],
            "clicks": clicks.as_json()}


def gt_box(mask: np.ndarray) -> np.ndarray:
    """The tight XYXY box around a mask's pixels (inclusive pixel indices, SAM's convention)."""
    x, y, w, h = mask_bbox_xywh(mask)
    return np.array([x, y, x + w, y + h], dtype=np.float64)


def _box_object(predictor: PromptPredictor, target: Target, _max_clicks: int, timer: _Timer) -> dict[str, Any]:
    box = gt_box(target.mask)
    masks, _, _ = timer.predict(predictor, box=box, multimask_output=False)
    return {"ious": [round(iou(masks[0], target.mask, target.ignore), 6)], "box": box.tolist()}


_RUNNERS: dict[str, Callable[[PromptPredictor, Target, int, _Timer], dict[str, Any]]] = {
    "noc": _noc_object, "sam": _sam_object, "box": _box_object,
}


def _summary(dataset: Dataset, protocol: str, max_clicks: int, objects: list[dict[str, Any]], timer: _Timer,
             set_image_seconds: float) -> dict[str, Any]:
    ious = [o["ious"] for o in objects]
    summary: dict[str, Any] = {"dataset": dataset.name, "protocol": protocol, "num_objects": len(objects),
                               "max_clicks": max_clicks}
    for t in THRESHOLDS:
        charged = protocol == "noc"
        summary[f"noc@{_key(t)}"] = noc(ious, t, max_clicks) if charged else None
        summary[f"nof@{_key(t)}"] = nof(ious, t, max_clicks) if charged else None
    if protocol == "sam":
        points = [k for k in SAM_POINTS if k <= max_clicks]
        summary["miou@k"] = {str(k): v for k, v in miou_at(ious, points).items()}
        summary["miou_oracle@k"] = {str(k): v for k, v in miou_at([o["oracle_ious"] for o in objects], points).items()}
    else:
        summary["miou@k"] = {str(k): v for k, v in miou_at(ious, range(1, max_clicks + 1)).items()}
    summary["seconds_per_prompt"] = timer.seconds / max(timer.calls, 1)
    summary["seconds_per_set_image"] = set_image_seconds / max(len(objects), 1)
    summary["objects"] = objects
    return summary


def evaluate(predictor: PromptPredictor, dataset: Dataset, protocol: str = "noc", max_clicks: int = 20,
             progress: bool = True, done: list[dict[str, Any]] | None = None,
             on_object: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run ``protocol`` ("noc", "sam" or "box") over every object of ``dataset``; a JSON-ready summary
    with the aggregate metrics and a per-object list (IoU after each click, the clicks, NoC).

    ``done``: per-object results of an interrupted run (the ``objects`` of its partial summary),
    reused for the objects they name so a long run resumes where it stopped. ``on_object`` gets the
    partial summary after every object (``"complete": False``), e.g. to save it.
    """
    if protocol not in _RUNNERS:
        raise PromptError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    if protocol == "box":
        max_clicks = 1
    elif protocol == "sam":
        max_clicks = min(max_clicks, max(SAM_POINTS))
    if max_clicks < 1:
        raise PromptError(f"max_clicks must be at least 1, got {max_clicks}")
    run = _RUNNERS[protocol]
    timer = _Timer()
    set_image_seconds = 0.0
    previous = {o["name"]: o for o in done or []}
    objects: list[dict[str, Any]] = []
    bar = tqdm(dataset, desc=f"{dataset.name}/{protocol}", unit="obj", disable=not progress, dynamic_ncols=True)
    for sample in bar:
        if sample.name in previous:
            objects.append(previous[sample.name])
            continue
        image, target = sample.load()
        start = perf_counter()
        predictor.set_image(image)
        set_image_seconds += perf_counter() - start
        result = run(predictor, target, max_clicks, timer)
        objects.append({"name": sample.name, **result})
        if protocol == "noc":
            bar.set_postfix_str(f"NoC@90 {noc([o['ious'] for o in objects], 0.9, max_clicks):.2f}")
        else:
            bar.set_postfix_str(f"mIoU@1 {np.mean([o['ious'][0] for o in objects]):.3f}")
        if on_object is not None:
            on_object({**_summary(dataset, protocol, max_clicks, objects, timer, set_image_seconds), "complete": False})
    return {**_summary(dataset, protocol, max_clicks, objects, timer, set_image_seconds), "complete": True}


def format_table(summary: dict[str, Any]) -> str:
    """A short plain-text table of a summary from :func:`evaluate`."""
    lines = [f"{summary['dataset']} / {summary['protocol']}: {summary['num_objects']} objects, "
             f"{summary['seconds_per_prompt'] * 1000:.0f} ms per prompt"]
    if summary["protocol"] == "noc":
        ks = [str(k) for k in sorted({1, 5, summary["max_clicks"]}) if str(k) in summary["miou@k"]]
        lines.append("| NoC@85 | NoC@90 | NoF@85 | NoF@90 | " + " | ".join(f"mIoU@{k}" for k in ks) + " |")
        lines.append("|" + " --- |" * (4 + len(ks)))
        cells = [f"{summary['noc@85']:.2f}", f"{summary['noc@90']:.2f}", str(summary["nof@85"]), str(summary["nof@90"]),
                 *(f"{summary['miou@k'][k]:.3f}" for k in ks)]
        lines.append("| " + " | ".join(cells) + " |")
    elif summary["protocol"] == "sam":
        ks = list(summary["miou@k"])
        lines.append("| points | " + " | ".join(ks) + " |")
        lines.append("| --- |" + " --- |" * len(ks))
        lines.append("| mIoU top-1 | " + " | ".join(f"{summary['miou@k'][k]:.3f}" for k in ks) + " |")
        lines.append("| mIoU oracle | " + " | ".join(f"{summary['miou_oracle@k'][k]:.3f}" for k in ks) + " |")
    else:
        lines.append(f"| box mIoU | {summary['miou@k']['1']:.3f} |")
    return "\n".join(lines)
