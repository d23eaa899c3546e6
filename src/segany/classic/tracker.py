"""Click and track without weights: the classic engine behind the :class:`segany.VideoPredictor` interface.

``segany.VideoPredictor(load_model("classic"))`` is a :class:`ClassicVideoPredictor`, with the
official ``SAM2VideoPredictor`` calls (see :class:`segany.engine.VideoTracker`):

* A prompt on a frame (clicks, a box: :class:`~.predictor.ClassicPredictor`, GrabCut; or a mask
  with ``add_new_mask``) gives the object's mask there. Every prompted frame is a *conditioning*
  frame: when propagation reaches it, the track restarts from that mask (a correction click on a
  tracked frame refines the tracked mask there, which is then kept).
* Propagation carries each object's mask from one frame to the next: dense optical flow (OpenCV
  DIS, at the working resolution) warps it, pixel by pixel and as one rigid piece, GrabCut in a thin
  band around each guess snaps it to the object's edges, and the guess with the stronger outline
  is kept (:mod:`.propagation`). A mask that collapses in one step (occlusion, a flow failure),
  that wore down below ``min_expected`` of the object's expected area (its size before an occlusion,
  ``area_memory``), or whose colours stop looking like the object's (it left, the mask stayed on
  the background) counts as lost; the object is then searched for on every frame by the colours of
  its last prompted frame (histogram back-projection), at its expected size, until it is found again.
* Bounded memory: frames are decoded on demand (:func:`segany.data.frames.open_frames`); the state
  keeps the prompts and their masks, and per object only the last frame's mask, whatever the
  video's length. The masks of finished frames belong to the caller.

Logits are signed distances to the mask boundary in video pixels, clipped to +-20 (mask = logits > 0),
(O, 1, H, W) float32 at the video's resolution; an object with no mask on a frame (not reached yet,
or lost) gets -20 everywhere.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from ..data.frames import FrameSource, open_frames
from ..errors import NotFoundError, PredictorStateError, PromptError
from .lowres import LOGIT_CLIP, mask_to_logits, signed_distance
from .model import ClassicModel
from .predictor import ClassicPredictor
from .propagation import Appearance, FlowField, PropagationConfig, object_window, propagate_mask, redetect, to_gray
from .scoring import gradient_magnitude


@dataclass
class _Prompt:
    """What was given for one object on one frame: clicks (video pixels) and a box, or a mask."""

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    box: np.ndarray | None = None
    mask: np.ndarray | None = None


@dataclass
class _Object:
    """One tracked object: its prompts and their masks (working resolution), its appearance, and
    the last mask it was given (frame index, mask), from which the next frame is tracked."""

    prompts: dict[int, _Prompt] = field(default_factory=dict)
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    appearances: dict[int, Appearance | None] = field(default_factory=dict)
    last: tuple[int, np.ndarray] | None = None
    appearance: Appearance | None = None
    area: int = 0  # the object's expected area (:meth:`ClassicVideoPredictor._advance`)


class ClassicTrackState:
    """The tracking state ``init_state`` returns: the video, the objects in the order they were
    added, and small caches of the last working frames and flow field.

    Official keys are readable as ``state["num_frames"]``, ``["video_height"]``, ``["video_width"]``,
    ``["obj_ids"]``."""

    def __init__(self, frames: FrameSource, max_side: int) -> None:
        self.frames = frames
        scale = min(1.0, max_side / max(frames.height, frames.width))
        self.work_size = (max(1, round(frames.height * scale)), max(1, round(frames.width * scale)))
        self.objects: OrderedDict[int, _Object] = OrderedDict()
        self.tracking_has_started = False
        self._work: OrderedDict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()
        self._flow: tuple[tuple[int, int, tuple[int, int, int, int]], FlowField] | None = None

    @property
    def obj_ids(self) -> list[int]:
        return list(self.objects)

    def __getitem__(self, key: str) -> Any:
        values = {"num_frames": len(self.frames), "video_height": self.frames.height,
                  "video_width": self.frames.width, "obj_ids": self.obj_ids}
        if key not in values:
            raise KeyError(key)
        return values[key]

    def work_frame(self, frame_idx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(BGR and gradient magnitude at the working resolution, gray at the video's) of a frame
        (the last three frames are kept)."""
        cached = self._work.get(frame_idx)
        if cached is None:
            full = np.ascontiguousarray(self.frames[frame_idx][..., ::-1])
            h, w = self.work_size
            bgr = full if (h, w) == full.shape[:2] else cv2.resize(full, (w, h), interpolation=cv2.INTER_AREA)
            cached = (bgr, to_gray(full), gradient_magnitude(bgr))
            self._work[frame_idx] = cached
            while len(self._work) > 3:
                self._work.popitem(last=False)
        return cached

    def flow(self, old: int, new: int, mask: np.ndarray) -> FlowField:
        """Backward flow from frame ``new`` to frame ``old`` in the window around ``mask``
        (:func:`~.propagation.object_window`), from the video-resolution frames."""
        window = object_window(mask)
        if self._flow is None or self._flow[0] != (old, new, window):
            self._flow = ((old, new, window),
                          FlowField(self.work_frame(new)[1], self.work_frame(old)[1], self.work_size, window))
        return self._flow[1]

    def forget_caches(self) -> None:
        self._work.clear()
        self._flow = None


def _as_numpy(value: Any, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise PromptError(f"{name} must be numeric, got {type(value).__name__}") from None


class ClassicVideoPredictor:
    """Weight-free video object tracker (see the module docstring).

    ``max_side``: longest side of the working resolution (default: the model's ``max_side``);
    ``config``: the frame-to-frame settings (:class:`~.propagation.PropagationConfig`).
    """

    def __init__(self, model: ClassicModel | None = None, max_side: int | None = None,
                 config: PropagationConfig | None = None) -> None:
        self.model = model or ClassicModel()
        self.max_side = int(max_side or self.model.config.max_side)
        self.config = config or PropagationConfig()
        self.predictor = ClassicPredictor(self.model)

    # --- state -----------------------------------------------------------------------------------

    def init_state(self, video_path: Any, offload_video_to_cpu: bool = False, offload_state_to_cpu: bool = False,
                   async_loading_frames: bool = False) -> ClassicTrackState:
        """Open a video (folder of frames, video file, arrays); the offload / async flags change
        nothing here (everything is on the CPU and decoded on demand)."""
        return ClassicTrackState(open_frames(video_path), self.max_side)

    def reset_state(self, inference_state: ClassicTrackState) -> None:
        """Forget every object and prompt (the video stays open)."""
        state = self._state(inference_state)
        state.objects.clear()
        state.tracking_has_started = False
        state.forget_caches()

    @staticmethod
    def _state(state: Any) -> ClassicTrackState:
        if not isinstance(state, ClassicTrackState):
            raise PredictorStateError(f"expected the state returned by init_state(), got {type(state).__name__}")
        return state

    @staticmethod
    def _object(state: ClassicTrackState, obj_id: int, create: bool = False) -> _Object:
        if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)):
            raise PromptError(f"obj_id must be an integer, got {obj_id!r}")
        obj_id = int(obj_id)
        if obj_id in state.objects:
            return state.objects[obj_id]
        if not create:
            raise NotFoundError(f"no object with id {obj_id}; the objects are {state.obj_ids}")
        if state.tracking_has_started:
            raise PredictorStateError(
                f"cannot add new object id {obj_id} after tracking starts (objects: {state.obj_ids}); "
                "call reset_state() to start over")
        state.objects[obj_id] = _Object()
        return state.objects[obj_id]

    # --- prompts ---------------------------------------------------------------------------------

    def add_new_points_or_box(self, inference_state: ClassicTrackState, frame_idx: int, obj_id: int,
                              points: np.ndarray | None = None, labels: np.ndarray | None = None,
                              clear_old_points: bool = True, normalize_coords: bool = True,
                              box: np.ndarray | None = None) -> tuple[int, list[int], torch.Tensor]:
        """Clicks and/or a box for one object on one frame; (frame_idx, obj_ids, logits on that frame).

        Coordinates are video pixels, or fractions of the frame with ``normalize_coords=False`` (as
        the official predictor). ``clear_old_points=False`` adds the clicks to those already on the frame."""
        state = self._state(inference_state)
        t = state.frames.index(frame_idx)
        coords = np.zeros((0, 2)) if points is None else _as_numpy(points, "points").reshape(-1, 2)
        labs = np.zeros(0, dtype=np.int64) if labels is None else _as_numpy(labels, "labels").reshape(-1).astype(np.int64)
        if len(coords) != len(labs):
            raise PromptError(f"points and labels must have the same size: {len(coords)} points, {len(labs)} labels")
        if box is not None:
            if not clear_old_points:
                raise PromptError("a box must come before any point on a frame: use clear_old_points=True with a box")
            box_np = _as_numpy(box, "box").reshape(-1)
            if box_np.shape != (4,):
                raise PromptError(f"box must be XYXY (4 numbers or 2x2), got {box_np.size} numbers")
        else:
            box_np = None
        if not normalize_coords:
            scale = np.array([state.frames.width, state.frames.height], dtype=np.float64)
            coords = coords * scale
            box_np = None if box_np is None else box_np * np.tile(scale, 2)
        obj = self._object(state, obj_id, create=True)
        old = obj.prompts.get(t)
        if clear_old_points or old is None or old.mask is not None:
            prompt = _Prompt(coords, labs, box_np)
        else:
            prompt = _Prompt(np.concatenate([old.points, coords]), np.concatenate([old.labels, labs]), old.box)
        mask = self._segment(state, obj, t, prompt)
        self._condition(state, obj, t, prompt, mask)
        return t, state.obj_ids, self._frame_logits(state, t)

    def add_new_mask(self, inference_state: ClassicTrackState, frame_idx: int, obj_id: int,
                     mask: np.ndarray | torch.Tensor) -> tuple[int, list[int], torch.Tensor]:
        """A mask (HxW, any size: resized to the video; values >= 0.5 are the object) for one object
        on one frame; it replaces the clicks there. (frame_idx, obj_ids, logits on that frame)."""
        state = self._state(inference_state)
        t = state.frames.index(frame_idx)
        array = _as_numpy(mask, "mask")
        if array.ndim != 2 or 0 in array.shape:
            raise PromptError(f"mask must be a 2-D HxW array, got shape {array.shape}")
        if not np.isfinite(array).all():
            raise PromptError("mask has NaN or infinite values")
        obj = self._object(state, obj_id, create=True)
        h, w = state.work_size
        small = array.astype(np.float32)
        if small.shape != (h, w):
            shrink = small.shape[0] > h or small.shape[1] > w
            small = cv2.resize(small, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        work = small >= 0.5
        self._condition(state, obj, t, _Prompt(mask=work), work)
        return t, state.obj_ids, self._frame_logits(state, t)

    def _segment(self, state: ClassicTrackState, obj: _Object, t: int, prompt: _Prompt) -> np.ndarray:
        """The classic predictor's mask for a click/box prompt, seeded by the object's mask on that
        frame when it has one (a correction), at the working resolution. One mask, not the best
        scored of three: on the DAVIS clips' one-click prompts the engine's score picks worse
        masks (first-frame IoU 0.58) than its single-mask answer (0.65)."""
        prior = self._mask_at(obj, t)
        self.predictor.set_image(state.frames[t])
        masks, _, _ = self.predictor.predict(
            point_coords=prompt.points if len(prompt.points) else None,
            point_labels=prompt.labels if len(prompt.points) else None,
            box=prompt.box, mask_input=None if prior is None else mask_to_logits(prior)[None],
            multimask_output=False)
        self.predictor.reset_image()
        full = masks[0].astype(np.float32)
        h, w = state.work_size
        return cv2.resize(full, (w, h), interpolation=cv2.INTER_AREA) >= 0.5

    def _condition(self, state: ClassicTrackState, obj: _Object, t: int, prompt: _Prompt, mask: np.ndarray) -> None:
        obj.prompts[t] = prompt
        obj.masks[t] = mask
        obj.appearances[t] = Appearance.of(state.work_frame(t)[0], mask)

    # --- removing prompts and objects ------------------------------------------------------------

    def clear_all_prompts_in_frame(self, inference_state: ClassicTrackState, frame_idx: int, obj_id: int,
                                   need_output: bool = True) -> tuple[int, list[int], torch.Tensor] | None:
        """Drop one object's prompts on one frame (its last tracked mask there, if any, stays its
        output); (frame_idx, obj_ids, logits on that frame) with ``need_output``."""
        state = self._state(inference_state)
        t = state.frames.index(frame_idx)
        obj = self._object(state, obj_id)
        obj.prompts.pop(t, None)
        obj.masks.pop(t, None)
        obj.appearances.pop(t, None)
        if not need_output:
            return None
        return t, state.obj_ids, self._frame_logits(state, t)

    def remove_object(self, inference_state: ClassicTrackState, obj_id: int, strict: bool = False,
                      need_output: bool = True) -> tuple[list[int], list[tuple[int, torch.Tensor]]]:
        """Forget one object; (remaining obj_ids, [(frame_idx, logits of the others)] for the frames
        it had prompts on). An unknown id is ignored, or :class:`NotFoundError` with ``strict``."""
        state = self._state(inference_state)
        key = int(obj_id) if isinstance(obj_id, (int, np.integer)) and not isinstance(obj_id, bool) else obj_id
        if key not in state.objects:
            if strict:
                raise NotFoundError(f"cannot remove object id {obj_id!r}: it does not exist (objects: {state.obj_ids})")
            return state.obj_ids, []
        if len(state.objects) == 1:
            self.reset_state(state)
            return state.obj_ids, []
        frames = sorted(state.objects.pop(key).prompts)
        updated = [(t, self._frame_logits(state, t)) for t in frames] if need_output else []
        return state.obj_ids, updated

    # --- propagation -----------------------------------------------------------------------------

    def propagate_in_video(self, inference_state: ClassicTrackState, start_frame_idx: int | None = None,
                           max_frame_num_to_track: int | None = None, reverse: bool = False,
                           ) -> Iterator[tuple[int, list[int], torch.Tensor]]:
        """Yield (frame_idx, obj_ids, logits) from ``start_frame_idx`` (default: the first prompted
        frame) for ``max_frame_num_to_track`` frames after it (default: to the end), backwards
        with ``reverse`` (the official frame order: a reverse run from frame 0 yields nothing)."""
        state = self._state(inference_state)
        prompted = [t for obj in state.objects.values() for t in obj.masks]
        if not prompted:
            raise PredictorStateError("no points, box or mask given for any object: add a prompt before propagating")
        start = min(prompted) if start_frame_idx is None else state.frames.index(start_frame_idx)
        if max_frame_num_to_track is None:
            count = len(state.frames)
        elif isinstance(max_frame_num_to_track, bool) or not isinstance(max_frame_num_to_track, (int, np.integer)) \
                or max_frame_num_to_track < 0:
            raise PromptError(f"max_frame_num_to_track must be a non-negative integer, got {max_frame_num_to_track!r}")
        else:
            count = int(max_frame_num_to_track)
        state.tracking_has_started = True
        if reverse:
            order = range(start, max(start - count, 0) - 1, -1) if start > 0 else range(0)
        else:
            order = range(start, min(start + count, len(state.frames) - 1) + 1)
        step = -1 if reverse else 1
        for t in order:
            for obj in state.objects.values():
                self._advance(state, obj, t, step)
            yield t, state.obj_ids, self._frame_logits(state, t)

    def _advance(self, state: ClassicTrackState, obj: _Object, t: int, step: int) -> None:
        """The object's mask on frame ``t``: its prompt's, or tracked from frame ``t - step``."""
        if t in obj.masks:
            mask = obj.masks[t]
            obj.appearance = obj.appearances.get(t) or obj.appearance
        elif obj.last is not None and obj.last[0] == t:
            return
        elif obj.last is not None and obj.last[0] == t - step:
            mask = self._track(state, obj, t - step, t)
        else:
            return
        obj.last = (t, mask)
        area = int(np.count_nonzero(mask))
        if t in obj.masks:
            obj.area = area
        elif area:
            obj.area = max(area, int(self.config.area_memory * obj.area))

    def _track(self, state: ClassicTrackState, obj: _Object, old: int, new: int) -> np.ndarray:
        """Frame ``new``'s mask from frame ``old``'s (:func:`~.propagation.propagate_mask`); when
        the object is lost (its mask is empty, below ``min_expected`` of its expected area, or
        has left its colours), searched for by its colours (:func:`~.propagation.redetect`)."""
        assert obj.last is not None
        image, _, gradient = state.work_frame(new)
        previous = obj.last[1]
        min_area = self.config.min_area * previous.size
        if np.count_nonzero(previous) >= min_area:
            mask = propagate_mask(image, gradient, previous, state.flow(old, new, previous), self.config,
                                  obj.appearance)
            if np.count_nonzero(mask) >= max(min_area, self.config.min_expected * obj.area) and not (
                    obj.appearance is not None and obj.appearance.lost(image, mask, self.config)):
                return mask
        if obj.appearance is None:
            return np.zeros_like(previous)
        found = redetect(image, obj.appearance, obj.area, self.config)
        return found if np.count_nonzero(found) >= min_area else np.zeros_like(previous)

    # --- outputs ---------------------------------------------------------------------------------

    @staticmethod
    def _mask_at(obj: _Object, t: int) -> np.ndarray | None:
        if t in obj.masks:
            return obj.masks[t]
        if obj.last is not None and obj.last[0] == t:
            return obj.last[1]
        return None

    def _frame_logits(self, state: ClassicTrackState, t: int) -> torch.Tensor:
        """(O, 1, H, W) float32 logits of every object on frame ``t``."""
        h, w = state.frames.size
        out = np.full((len(state.objects), 1, h, w), -LOGIT_CLIP, dtype=np.float32)
        scale = w / state.work_size[1]
        for i, obj in enumerate(state.objects.values()):
            mask = self._mask_at(obj, t)
            if mask is None or not mask.any():
                continue
            distance = signed_distance(mask) * scale
            if distance.shape != (h, w):
                distance = cv2.resize(distance, (w, h), interpolation=cv2.INTER_LINEAR)
            out[i, 0] = np.clip(distance, -LOGIT_CLIP, LOGIT_CLIP)
        return torch.from_numpy(out)
