"""Click and track with SAM 2 / 2.1: the official ``SAM2VideoPredictor`` semantics and names, with
bounded memory and a frame-at-a-time stream.

``init_state`` opens the video (:func:`segany.data.frames.open_frames`: frames are decoded when
asked for, never all up front); each frame is resized to S x S exactly as the official loader
does (Pillow's bicubic resize of the uint8 frame, ``/ 255`` in float64, then the ImageNet
normalisation in float32) when the tracker reaches it, and only the last frame's features are
kept. Prompts (``add_new_points_or_box``, ``add_new_mask``) run their frame without the memory
encoder; ``propagate_in_video`` encodes the prompted frames' memories, then tracks frame by frame
and hands each frame's masks to the caller. The state keeps the conditioning frames' outputs and
a window of the most recent tracked frames (:mod:`segany.video.memory_store`); older tracked
frames are spilled to a temporary folder (read back for a correction click or a re-propagation
near them) or, with ``keep_history=False``, forgotten.

Streams (a webcam, a generator of frames): ``init_stream(first_frame)``, prompts on that frame,
then ``track(state, frame)`` for each new frame.
"""
from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.frames import FrameSource, open_frames
from ..data.images import check_image_array
from ..errors import ConfigError, ImageError, NotFoundError, PredictorStateError, PromptError, VideoError
from ..masks import fill_holes_in_mask_scores
from ..models.sam2 import NO_OBJ_SCORE, FrameFeatures, ObjectPointer, Sam2, SpatialMemory
from ..predict.runtime import Sam2Runtime, resolve_dtype
from ..predict.sam2_transforms import SAM2_PIXEL_MEAN, SAM2_PIXEL_STD
from ..prompts import as_array, check_boxes, check_inside, check_labels
from .fast_frames import FrameEncoder, frame_features_in
from .fast_memory import MemoryConditioner, MemoryKeyCache
from .fast_memory_encoder import MemoryEncoderFast
from .memory_store import FrameOutput, FrameStore, SpillFolder

FRAME_CACHE = 4  # decoded frames kept by the frame source


@functools.cache
def _normalised_values() -> np.ndarray:
    """(3, 256) float32: what the official loader makes of each uint8 value in each channel
    (``/ 255`` in float64, stored as float32, minus the mean, over the std, in float32)."""
    values = torch.from_numpy(np.arange(256) / 255.0).to(torch.float32)
    mean = torch.tensor(SAM2_PIXEL_MEAN, dtype=torch.float32)[:, None]
    std = torch.tensor(SAM2_PIXEL_STD, dtype=torch.float32)[:, None]
    return ((values[None] - mean) / std).numpy()


def video_frame_tensor(frame: np.ndarray, image_size: int) -> torch.Tensor:
    """HxWx3 uint8 RGB → the (3, S, S) float32 tensor of the official video loader: Pillow's
    default (bicubic) resize to S x S, ``/ 255`` in float64, stored as float32, normalised
    (looked up per value: the same bits as computing it per pixel)."""
    resized = np.asarray(Image.fromarray(frame).resize((image_size, image_size)))
    table = _normalised_values()
    image = np.empty((3, image_size, image_size), dtype=np.float32)
    for c in range(3):
        np.take(table[c], resized[..., c], out=image[c])
    return torch.from_numpy(image)


def mask_prompt_tensor(mask: np.ndarray | torch.Tensor, image_size: int) -> torch.Tensor:
    """An HxW mask prompt → the official (1, 1, S, S) float 0/1 mask: resized (bilinear,
    antialiased) and thresholded at 0.5 unless it is already S x S."""
    if not isinstance(mask, torch.Tensor):
        mask = torch.tensor(as_array(mask, "mask"), dtype=torch.bool)
    if mask.dim() != 2 or min(mask.shape) == 0:
        raise PromptError(f"mask must be a 2-D HxW array, got shape {tuple(mask.shape)}")
    mask_inputs = mask[None, None].float()
    if tuple(mask.shape) != (image_size, image_size):
        mask_inputs = F.interpolate(mask_inputs, size=(image_size, image_size), align_corners=False,
                                    mode="bilinear", antialias=True)
        mask_inputs = (mask_inputs >= 0.5).float()
    return mask_inputs


def select_closest_cond_frames(frame_idx: int, cond_outputs: dict[int, FrameOutput], max_cond_frames: int,
                               ) -> tuple[dict[int, FrameOutput], dict[int, FrameOutput]]:
    """The conditioning frames attended to (all with -1; else the closest before, the closest at or
    after, then the nearest others) and the rest (official ``select_closest_cond_frames``)."""
    if max_cond_frames == -1 or len(cond_outputs) <= max_cond_frames:
        return cond_outputs, {}
    selected: dict[int, FrameOutput] = {}
    before = max((t for t in cond_outputs if t < frame_idx), default=None)
    if before is not None:
        selected[before] = cond_outputs[before]
    after = min((t for t in cond_outputs if t >= frame_idx), default=None)
    if after is not None:
        selected[after] = cond_outputs[after]
    rest = sorted((t for t in cond_outputs if t not in selected), key=lambda t: abs(t - frame_idx))
    selected.update((t, cond_outputs[t]) for t in rest[: max_cond_frames - len(selected)])
    return selected, {t: v for t, v in cond_outputs.items() if t not in selected}


class StreamFrames(FrameSource):
    """A live source: frames are appended one by one; only the last ``cache`` are held."""

    def __init__(self, first_frame: np.ndarray, cache: int = FRAME_CACHE, name: str = "stream") -> None:
        frame = _stream_frame(first_frame, name)
        super().__init__(1, frame.shape[0], frame.shape[1], name, cache)
        frame.setflags(write=False)
        self._cache[0] = frame

    def append(self, frame: np.ndarray) -> int:
        """Add the next frame; returns its index."""
        frame = _stream_frame(frame, self.name)
        if frame.shape[:2] != (self.height, self.width):
            raise VideoError(f"frame {self.num_frames} of {self.name} is {frame.shape[1]}x{frame.shape[0]}, "
                             f"the stream is {self.width}x{self.height}")
        frame.setflags(write=False)
        self.num_frames += 1
        self._cache[self.num_frames - 1] = frame
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return self.num_frames - 1

    def _decode(self, frame_idx: int) -> np.ndarray:
        raise VideoError(f"frame {frame_idx} of {self.name} is no longer held (a stream keeps its last "
                         f"{self._cache_size} frames)")


def _stream_frame(frame: Any, name: str) -> np.ndarray:
    try:
        return np.array(check_image_array(frame), copy=True)
    except ImageError as exc:
        raise VideoError(f"{name}: {exc}") from None


@dataclass
class PointInputs:
    """An object's clicks on one frame: (1, N, 2) float32 in the S x S frame, (1, N) int32 labels."""

    point_coords: torch.Tensor
    point_labels: torch.Tensor


@dataclass
class ObjectTrack:
    """One object's prompts and outputs (the official ``*_per_obj[obj_idx]`` entries).

    ``cond`` holds the conditioning frames' outputs (all kept), ``non_cond`` the tracked frames'
    (bounded :class:`FrameStore`), ``temp_cond`` / ``temp_non_cond`` the prompt outputs not yet
    encoded into memory, ``tracked`` frame -> whether it was tracked in reverse, ``memory_keys``
    the cross-attention keys of the memories it attended to last (the memory fast path)."""

    obj_id: int
    non_cond: FrameStore
    point_inputs: dict[int, PointInputs] = field(default_factory=dict)
    mask_input_frames: set[int] = field(default_factory=set)
    cond: dict[int, FrameOutput] = field(default_factory=dict)
    temp_cond: dict[int, FrameOutput] = field(default_factory=dict)
    temp_non_cond: dict[int, FrameOutput] = field(default_factory=dict)
    tracked: dict[int, bool] = field(default_factory=dict)
    memory_keys: MemoryKeyCache = field(default_factory=MemoryKeyCache)

    def temp(self, is_cond: bool) -> dict[int, FrameOutput]:
        return self.temp_cond if is_cond else self.temp_non_cond

    def output(self, frame_idx: int) -> FrameOutput | None:
        """The stored (not temporary) output on ``frame_idx``, conditioning first."""
        out = self.cond.get(frame_idx)
        return out if out is not None else self.non_cond.get(frame_idx)

    def input_frames(self) -> set[int]:
        return set(self.point_inputs) | self.mask_input_frames


@dataclass
class VideoState:
    """A tracking session (the official ``inference_state``), for one video or stream."""

    frames: FrameSource
    device: torch.device
    storage_device: torch.device
    offload_video_to_cpu: bool = False
    offload_state_to_cpu: bool = False
    objects: list[ObjectTrack] = field(default_factory=list)
    spill: SpillFolder | None = None
    maskmem_pos_enc: torch.Tensor | None = None  # the same for every frame: kept once
    cached_features: tuple[int, FrameFeatures] | None = None
    stream: bool = False
    ptr_num_frames: int | None = None  # frames of the pointer normalisation (None: the video's)

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def video_height(self) -> int:
        return self.frames.height

    @property
    def video_width(self) -> int:
        return self.frames.width

    @property
    def obj_ids(self) -> list[int]:
        return [obj.obj_id for obj in self.objects]

    def obj_idx(self, obj_id: int) -> int | None:
        return next((i for i, obj in enumerate(self.objects) if obj.obj_id == obj_id), None)

    def close(self) -> None:
        """Release the frame source and the spill folder."""
        self.frames.close()
        if self.spill is not None:
            self.spill.close()


class Sam2VideoPredictor:
    """The official ``SAM2VideoPredictor`` on a :class:`~segany.models.sam2.Sam2` (what
    ``segany.VideoPredictor`` returns for SAM 2 / 2.1 models).

    Options as the official video builder: ``fill_hole_area`` (8; holes of at most that many
    low-res pixels are filled, with OpenCV), ``non_overlap_masks``, ``add_all_frames_to_correct_as_cond``,
    ``binarize_mask_from_pts_for_mem_enc`` (True). ``keep_history``: spill tracked frames that
    leave the memory window to ``spill_dir`` (a temporary folder; default: the system's) so
    corrections on old frames give the official answers; False forgets them (bounded RAM, no disk).
    ``dtype`` (float32: the official answers; bfloat16 / float16 faster where the CPU has them)
    runs the image encoder (a copy with its weights cast once) and the memory attention (under
    ``torch.autocast``) in that dtype; their outputs are taken back to float32 and everything else
    stays float32. ``fast`` (the default): the inference fast paths, in float32 the same answers up
    to float rounding — frames encoded by
    :class:`~segany.video.fast_frames.FrameEncoder` (the high-resolution projections folded into
    the neck's), tracked frames conditioned on their memories by
    :class:`~segany.video.fast_memory.MemoryConditioner` (each memory's keys computed once, no
    value projection), memories encoded channels-last by
    :class:`~segany.video.fast_memory_encoder.MemoryEncoderFast`; False runs the plain
    ``Sam2.frame_features`` / ``condition_on_memory`` / ``encode_memory``. In bfloat16 / float16
    only the frame encoder's fast path runs (on the encoder's copy in that dtype).
    """

    def __init__(self, model: Sam2, fill_hole_area: int = 8, non_overlap_masks: bool = False,
                 add_all_frames_to_correct_as_cond: bool = False, binarize_mask_from_pts_for_mem_enc: bool = True,
                 keep_history: bool = True, spill_dir: str | Path | None = None,
                 dtype: torch.dtype | str | None = None, fast: bool = True) -> None:
        if not isinstance(model, Sam2):
            raise ConfigError(f"Sam2VideoPredictor needs a segany Sam2 model (segany.load_model(NAME)), "
                              f"got {type(model).__name__}")
        if fill_hole_area < 0:
            raise ConfigError(f"fill_hole_area must be >= 0, got {fill_hole_area}")
        self.model = model.eval()
        self.fill_hole_area = int(fill_hole_area)
        self.non_overlap_masks = bool(non_overlap_masks)
        self.add_all_frames_to_correct_as_cond = bool(add_all_frames_to_correct_as_cond)
        self.binarize_mask_from_pts_for_mem_enc = bool(binarize_mask_from_pts_for_mem_enc)
        self.keep_history = bool(keep_history)
        self.spill_dir = spill_dir
        self.dtype = resolve_dtype(dtype)
        exact = fast and self.dtype == torch.float32
        self.fast_memory = MemoryConditioner(model) if exact else None
        # the image path's runtime keeps the trunk's position embedding (and a bf16 copy of the encoder)
        self.frame_encoder = FrameEncoder(model, Sam2Runtime(model, self.dtype)) if fast else None
        self.memory_encoder = MemoryEncoderFast(model.memory_encoder) if exact else None
        cfg = model.config
        self._frames_lock = threading.Lock()
        self._reader: ThreadPoolExecutor | None = None  # reads the next frame ahead while tracking
        self._read: dict[int, tuple[VideoState, Future]] = {}  # frames read ahead (the state they are of)
        # tracking frame t reads t-1 .. t-(num_maskmem-1) memories and up to max_obj_ptrs-1 pointers
        self.memory_window = max(cfg.num_maskmem, cfg.max_obj_ptrs_in_encoder) + 1

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def image_size(self) -> int:
        return self.model.image_size

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    # ---- sessions ----

    @torch.inference_mode()
    def init_state(self, video_path: Any, offload_video_to_cpu: bool = False, offload_state_to_cpu: bool = False,
                   async_loading_frames: bool = False) -> VideoState:
        """A session on a folder of frames, a video file or a sequence of HxWx3 uint8 arrays.
        Frames are always decoded on demand, the next one read ahead in a background thread while
        ``propagate_in_video`` tracks the current one (``async_loading_frames`` is accepted for the
        official signature); frame 0's features are computed now, as the official code does."""
        frames = open_frames(video_path, cache=FRAME_CACHE)
        spill = SpillFolder(self.spill_dir) if self.keep_history else None
        state = self._new_state(frames, offload_video_to_cpu, offload_state_to_cpu, spill)
        self._features(state, 0)
        return state

    @torch.inference_mode()
    def init_stream(self, first_frame: np.ndarray, num_frames: int | None = None) -> VideoState:
        """A session on a live source starting with ``first_frame`` (HxWx3 RGB uint8); prompt it
        with ``add_new_*`` on frame 0, then :meth:`track` each new frame.

        The official pointer encoding divides the temporal offset by ``min(num_frames, 16) - 1``,
        which needs the video's length: give ``num_frames`` when it is known (the stream then
        equals ``propagate_in_video`` on those frames); by default 16 (the maximum, what
        ``propagate_in_video`` uses on any video of 16 frames or more)."""
        if num_frames is not None and (isinstance(num_frames, bool) or int(num_frames) < 1):
            raise VideoError(f"num_frames must be a positive number of frames, got {num_frames!r}")
        frames = StreamFrames(first_frame)
        state = self._new_state(frames, False, False, None)
        state.stream = True
        state.ptr_num_frames = int(num_frames) if num_frames is not None else self.model.config.max_obj_ptrs_in_encoder
        self._features(state, 0)
        return state

    def _new_state(self, frames: FrameSource, offload_video: bool, offload_state: bool,
                   spill: SpillFolder | None) -> VideoState:
        device = self.device
        return VideoState(frames=frames, device=device, storage_device=torch.device("cpu") if offload_state else device,
                          offload_video_to_cpu=bool(offload_video), offload_state_to_cpu=bool(offload_state), spill=spill)

    def _object(self, state: VideoState, obj_id: int, create: bool) -> ObjectTrack:
        if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)):
            raise PromptError(f"obj_id must be an integer, got {obj_id!r}")
        idx = state.obj_idx(int(obj_id))
        if idx is not None:
            return state.objects[idx]
        if not create:
            raise NotFoundError(f"object id {obj_id} is not tracked; objects: {state.obj_ids or 'none'}")
        obj = ObjectTrack(int(obj_id), FrameStore(self.memory_window, state.spill, name=f"obj{obj_id}"))
        state.objects.append(obj)
        return obj

    def _frame(self, state: VideoState, frame_idx: int) -> int:
        return state.frames.index(frame_idx)

    # ---- prompts ----

    @torch.inference_mode()
    def add_new_points_or_box(self, inference_state: VideoState, frame_idx: int, obj_id: int,
                              points: Any = None, labels: Any = None, clear_old_points: bool = True,
                              normalize_coords: bool = True, box: Any = None) -> tuple[int, list[int], torch.Tensor]:
        """Clicks (N, 2) with labels (N,) of 1 / 0 and / or a box XYXY for ``obj_id`` on
        ``frame_idx``; returns (frame_idx, obj_ids, (O, 1, H, W) logits of every object there)."""
        state = inference_state
        frame_idx = self._frame(state, frame_idx)
        coords, point_labels = self._prompt_tensors(state, points, labels, box, clear_old_points, normalize_coords)
        obj = self._object(state, obj_id, create=True)
        old = obj.point_inputs.get(frame_idx) if not clear_old_points else None
        if old is not None:
            coords = torch.cat([old.point_coords, coords], dim=1)
            point_labels = torch.cat([old.point_labels, point_labels], dim=1)
        point_inputs = PointInputs(coords, point_labels)
        obj.point_inputs[frame_idx] = point_inputs
        obj.mask_input_frames.discard(frame_idx)
        is_init_cond_frame = frame_idx not in obj.tracked
        reverse = False if is_init_cond_frame else obj.tracked[frame_idx]
        is_cond = is_init_cond_frame or self.add_all_frames_to_correct_as_cond
        prev = obj.temp(is_cond).get(frame_idx)
        if prev is None:
            prev = obj.output(frame_idx)
        prev_logits = None if prev is None else prev.pred_masks.to(state.device).clamp(-32.0, 32.0)
        out, _ = self._run_single_frame(state, obj, frame_idx, is_init_cond_frame, point_inputs, None, reverse,
                                        run_mem_encoder=False, prev_sam_mask_logits=prev_logits)
        obj.temp(is_cond)[frame_idx] = out
        return frame_idx, state.obj_ids, self._consolidated(state, frame_idx, is_cond)

    def add_new_points(self, inference_state: VideoState, frame_idx: int, obj_id: int, points: Any = None,
                       labels: Any = None, clear_old_points: bool = True, normalize_coords: bool = True,
                       box: Any = None) -> tuple[int, list[int], torch.Tensor]:
        """The official predictor's earlier name of :meth:`add_new_points_or_box` (SAM 2's first notebooks)."""
        return self.add_new_points_or_box(inference_state, frame_idx, obj_id, points, labels, clear_old_points,
                                          normalize_coords, box)

    def _prompt_tensors(self, state: VideoState, points: Any, labels: Any, box: Any, clear_old_points: bool,
                        normalize_coords: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Checked clicks (and a box as points labelled 2, 3 before them) in the S x S frame."""
        if (points is None) != (labels is None):
            raise PromptError("points and labels must be given together")
        if points is None and box is None:
            raise PromptError("give points (with labels) or a box")
        bounds = (state.video_height, state.video_width) if normalize_coords else (1, 1)
        where = "" if normalize_coords else " (relative, normalize_coords=False)"
        coords = torch.zeros(1, 0, 2, dtype=torch.float32)
        point_labels = torch.zeros(1, 0, dtype=torch.int32)
        if points is not None:
            pts = as_array(points, "points")
            lbl = as_array(labels, "labels")
            pts = pts.reshape(-1, 2) if pts.ndim == 3 and pts.shape[0] == 1 else pts
            lbl = lbl.reshape(-1) if lbl.ndim == 2 and lbl.shape[0] == 1 else lbl
            if pts.ndim != 2 or pts.shape[-1] != 2:
                raise PromptError(f"points must have shape (N, 2), got {as_array(points, 'points').shape}")
            if lbl.shape != pts.shape[:1]:
                raise PromptError(f"labels must have shape ({pts.shape[0]},), got {as_array(labels, 'labels').shape}")
            check_inside(pts, bounds, "points" + where)
            check_labels(lbl, {0, 1}, "labels")
            coords = torch.tensor(pts, dtype=torch.float32)[None]
            point_labels = torch.tensor(lbl, dtype=torch.int32)[None]
        if box is not None:
            if not clear_old_points:
                raise PromptError("a box must come before any click: add it with clear_old_points=True "
                                  "(the official predictor refuses a box added to old points)")
            box_np = as_array(box, "box").astype(np.float32)
            if box_np.size != 4:
                raise PromptError(f"box must be XYXY (4 numbers), got shape {box_np.shape}")
            check_boxes(box_np.reshape(4))
            check_inside(box_np.reshape(2, 2), bounds, "box" + where)
            coords = torch.cat([torch.tensor(box_np).reshape(1, 2, 2), coords], dim=1)
            point_labels = torch.cat([torch.tensor([[2, 3]], dtype=torch.int32), point_labels], dim=1)
        if normalize_coords:
            coords = coords / torch.tensor([state.video_width, state.video_height])
        coords = coords * self.image_size
        return coords.to(state.device), point_labels.to(state.device)

    @torch.inference_mode()
    def add_new_mask(self, inference_state: VideoState, frame_idx: int, obj_id: int,
                     mask: np.ndarray | torch.Tensor) -> tuple[int, list[int], torch.Tensor]:
        """An HxW mask (bool, or 0..1 floats) of ``obj_id`` on ``frame_idx``; resized to S x S
        (bilinear, antialiased) and thresholded at 0.5 as the official code does."""
        state = inference_state
        frame_idx = self._frame(state, frame_idx)
        mask_inputs = mask_prompt_tensor(mask, self.image_size).to(state.device)
        obj = self._object(state, obj_id, create=True)
        obj.mask_input_frames.add(frame_idx)
        obj.point_inputs.pop(frame_idx, None)
        is_init_cond_frame = frame_idx not in obj.tracked
        reverse = False if is_init_cond_frame else obj.tracked[frame_idx]
        is_cond = is_init_cond_frame or self.add_all_frames_to_correct_as_cond
        out, _ = self._run_single_frame(state, obj, frame_idx, is_init_cond_frame, None, mask_inputs, reverse,
                                        run_mem_encoder=False)
        obj.temp(is_cond)[frame_idx] = out
        return frame_idx, state.obj_ids, self._consolidated(state, frame_idx, is_cond)

    # ---- one frame ----

    def _features(self, state: VideoState, frame_idx: int) -> FrameFeatures:
        """The frame's features; only the most recent frame's are kept."""
        cached = state.cached_features
        if cached is not None and cached[0] == frame_idx:
            return cached[1]
        ahead = self._read.pop(frame_idx, None)
        if ahead is not None and ahead[0] is state:
            image = ahead[1].result()
        else:
            image = self._frame_tensor(state, frame_idx)
        image = image[None].to(state.device)
        features = (self.frame_encoder(image) if self.frame_encoder is not None
                    else frame_features_in(self.model, image, self.dtype))
        state.cached_features = (frame_idx, features)
        return features

    def _frame_tensor(self, state: VideoState, frame_idx: int) -> torch.Tensor:
        """The frame's (3, S, S) input (:func:`video_frame_tensor`); decoding is serialised (the
        read-ahead thread shares the frame source)."""
        with self._frames_lock:
            frame = state.frames[frame_idx]
        return video_frame_tensor(frame, self.image_size)

    def _read_ahead(self, state: VideoState, frame_idx: int) -> None:
        """Decode and resize ``frame_idx`` in the background while the current frame is tracked."""
        if self._reader is None:
            self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segany-frames")
        if frame_idx not in self._read:
            self._read[frame_idx] = (state, self._reader.submit(self._frame_tensor, state, frame_idx))
        while len(self._read) > 2:  # the current frame and the next: older ones were skipped
            del self._read[next(iter(self._read))]

    def _memory_inputs(self, state: VideoState, obj: ObjectTrack, frame_idx: int, reverse: bool,
                       ) -> tuple[list[SpatialMemory], list[ObjectPointer]]:
        """What frame ``frame_idx`` attends to: every selected conditioning frame's memory (slot 0)
        and the last num_maskmem - 1 tracked ones; pointers of the past conditioning frames and up
        to min(num_frames, max_obj_ptrs) - 1 tracked ones (``_prepare_memory_conditioned_features``)."""
        cfg = self.model.config
        num_frames = state.num_frames
        if not obj.cond:
            raise PredictorStateError(f"object {obj.obj_id} has no conditioning frame to track from")
        selected, unselected = select_closest_cond_frames(frame_idx, obj.cond, cfg.max_cond_frames_in_attn)

        def tracked(t: int) -> FrameOutput | None:
            out = obj.non_cond.get(t)
            return out if out is not None else unselected.get(t)

        memories = [SpatialMemory(out.maskmem_features, 0) for out in selected.values()]
        stride = cfg.memory_temporal_stride_for_eval
        for t_pos in range(1, cfg.num_maskmem):
            t_rel = cfg.num_maskmem - t_pos
            if t_rel == 1:
                prev = frame_idx + 1 if reverse else frame_idx - 1
            elif not reverse:
                prev = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
            else:
                prev = -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride
            out = tracked(prev)
            if out is not None:
                memories.append(SpatialMemory(out.maskmem_features, t_pos))
        pointers: list[ObjectPointer] = []
        if cfg.use_obj_ptrs_in_encoder:
            ptr_cond = selected
            if cfg.only_obj_ptrs_in_the_past_for_eval:
                ptr_cond = {t: o for t, o in selected.items() if (t >= frame_idx if reverse else t <= frame_idx)}
            sign = -1 if reverse else 1
            pointers = [ObjectPointer((frame_idx - t) * sign if cfg.use_signed_tpos_enc_to_obj_ptrs else abs(frame_idx - t),
                                      o.obj_ptr) for t, o in ptr_cond.items()]
            for t_diff in range(1, min(num_frames, cfg.max_obj_ptrs_in_encoder)):
                t = frame_idx + t_diff if reverse else frame_idx - t_diff
                if t < 0 or t >= num_frames:
                    break
                out = tracked(t)
                if out is not None:
                    pointers.append(ObjectPointer(t_diff, out.obj_ptr))
        return memories, pointers

    def _run_single_frame(self, state: VideoState, obj: ObjectTrack, frame_idx: int, is_init_cond_frame: bool,
                          point_inputs: PointInputs | None, mask_inputs: torch.Tensor | None, reverse: bool,
                          run_mem_encoder: bool, prev_sam_mask_logits: torch.Tensor | None = None,
                          ) -> tuple[FrameOutput, torch.Tensor]:
        """One object on one frame (``_run_single_frame_inference``): its compact output and the
        (1, 1, 4h, 4w) low-res logits."""
        model = self.model
        feats = self._features(state, frame_idx)
        if mask_inputs is not None and model.config.use_mask_input_as_output_without_sam:
            heads = model.mask_as_output(feats.vision_feats, feats.high_res, mask_inputs)
        else:
            memories, pointers = ([], []) if is_init_cond_frame else self._memory_inputs(state, obj, frame_idx, reverse)
            num_frames = state.ptr_num_frames or state.num_frames
            if self.fast_memory is not None and memories and model.num_maskmem > 0:
                pix_feat = self.fast_memory.condition(feats, memories, pointers, state.maskmem_pos_enc, num_frames,
                                                      obj.memory_keys)
            else:
                with self._autocast():
                    pix_feat = model.condition_on_memory(feats, is_init_cond_frame, memories, pointers,
                                                         state.maskmem_pos_enc, num_frames)
            pix_feat = pix_feat.float()
            if prev_sam_mask_logits is not None:
                mask_inputs = prev_sam_mask_logits
            num_points = 0 if point_inputs is None else point_inputs.point_labels.shape[1]
            heads = model.sam_heads(
                pix_feat, feats.high_res,
                None if point_inputs is None else point_inputs.point_coords,
                None if point_inputs is None else point_inputs.point_labels,
                mask_inputs, model.use_multimask(is_init_cond_frame, num_points))
        maskmem = None
        if run_mem_encoder and model.num_maskmem > 0:
            maskmem = self._encode_memory(state, feats, heads.high_res_masks, heads.object_score_logits,
                                          from_points=point_inputs is not None)
        pred_masks = heads.low_res_masks
        if self.fill_hole_area > 0:
            pred_masks = fill_holes_in_mask_scores(pred_masks, self.fill_hole_area)
        out = FrameOutput(pred_masks.to(state.storage_device), heads.obj_ptr, heads.object_score_logits, maskmem,
                          None if heads.multimask is None else heads.ious, heads.multimask)
        return out, pred_masks

    def _encode_memory(self, state: VideoState, feats: FrameFeatures, high_res_masks: torch.Tensor,
                       object_score_logits: torch.Tensor, from_points: bool) -> torch.Tensor:
        """The frame's memory, stored in bfloat16 as the official code does (its position
        encoding is the same on every frame: kept once in the state)."""
        maskmem, pos = self.model.encode_memory(feats, high_res_masks, object_score_logits,
                                                binarize=self.binarize_mask_from_pts_for_mem_enc and from_points,
                                                memory_encoder=self.memory_encoder)
        if state.maskmem_pos_enc is None:
            state.maskmem_pos_enc = pos[0:1].clone()
        return maskmem.to(torch.bfloat16).to(state.storage_device)

    # ---- outputs ----

    def _video_res(self, state: VideoState, masks: torch.Tensor) -> torch.Tensor:
        """(O, 1, h, w) logits → (O, 1, H, W) at the video's size (bilinear), optionally non-overlapping."""
        masks = masks.to(state.device)
        if tuple(masks.shape[-2:]) != (state.video_height, state.video_width):
            masks = F.interpolate(masks, size=(state.video_height, state.video_width), mode="bilinear",
                                  align_corners=False)
        if self.non_overlap_masks:
            masks = apply_non_overlapping_constraints(masks)
        return masks

    def _consolidated(self, state: VideoState, frame_idx: int, is_cond: bool) -> torch.Tensor:
        """Every object's logits on a frame at the video's size (NO_OBJ_SCORE where an object has none)."""
        size = (state.video_height, state.video_width)
        masks = torch.full((len(state.objects), 1, *size), NO_OBJ_SCORE, dtype=torch.float32, device=state.storage_device)
        for i, obj in enumerate(state.objects):
            out = obj.temp(is_cond).get(frame_idx)
            if out is None:
                out = obj.output(frame_idx)
            if out is None:
                continue
            pred = out.pred_masks
            if tuple(pred.shape[-2:]) != size:
                pred = F.interpolate(pred, size=size, mode="bilinear", align_corners=False)
            masks[i:i + 1] = pred
        return self._video_res(state, masks)

    # ---- tracking ----

    @torch.inference_mode()
    def propagate_in_video_preflight(self, inference_state: VideoState) -> None:
        """Encode the memories of the prompted frames and move them into the outputs."""
        state = inference_state
        if not state.objects:
            raise PredictorStateError("no object has a prompt: add points, a box or a mask first")
        for obj in state.objects:
            for is_cond in (False, True):
                temp = obj.temp(is_cond)
                for frame_idx, out in temp.items():
                    if out.maskmem_features is None:
                        high_res = F.interpolate(out.pred_masks.to(state.device), size=(self.image_size, self.image_size),
                                                 mode="bilinear", align_corners=False)
                        out.maskmem_features = self._encode_memory(state, self._features(state, frame_idx), high_res,
                                                                   out.object_score_logits, from_points=True)
                    if is_cond:
                        obj.cond[frame_idx] = out
                    else:
                        obj.non_cond[frame_idx] = out
                temp.clear()
            if not obj.cond:
                raise PredictorStateError(f"object {obj.obj_id} has no prompt on a frame it was not tracked on: "
                                          f"give it points, a box or a mask first")
            for frame_idx in obj.cond:
                obj.non_cond.pop(frame_idx)

    def _track_frame(self, state: VideoState, frame_idx: int, reverse: bool) -> torch.Tensor:
        """Every object on one frame: conditioning frames give their stored output, the others
        are tracked with memory. Returns the (O, 1, H, W) video-resolution logits."""
        per_obj = []
        for obj in state.objects:
            cond_out = obj.cond.get(frame_idx)
            if cond_out is not None:
                pred = cond_out.pred_masks.to(state.device)
            else:
                out, pred = self._run_single_frame(state, obj, frame_idx, False, None, None, reverse, run_mem_encoder=True)
                obj.non_cond[frame_idx] = out
            obj.tracked[frame_idx] = reverse
            per_obj.append(pred)
        return self._video_res(state, torch.cat(per_obj, dim=0) if len(per_obj) > 1 else per_obj[0])

    @torch.inference_mode()
    def propagate_in_video(self, inference_state: VideoState, start_frame_idx: int | None = None,
                           max_frame_num_to_track: int | None = None, reverse: bool = False,
                           ) -> Iterator[tuple[int, list[int], torch.Tensor]]:
        """Track every object from ``start_frame_idx`` (default: the earliest prompted frame) over
        ``max_frame_num_to_track + 1`` frames (default: to the end), forward or in reverse;
        yields (frame_idx, obj_ids, (O, 1, H, W) logits) as each frame is done."""
        state = inference_state
        if state.stream:
            raise PredictorStateError("a stream is tracked frame by frame with track(state, frame)")
        if start_frame_idx is not None:
            start_frame_idx = self._frame(state, start_frame_idx)
        if max_frame_num_to_track is not None and (isinstance(max_frame_num_to_track, bool)
                                                   or not isinstance(max_frame_num_to_track, (int, np.integer))
                                                   or max_frame_num_to_track < 0):
            raise VideoError(f"max_frame_num_to_track must be a non-negative integer, got {max_frame_num_to_track!r}")
        self.propagate_in_video_preflight(state)
        num_frames = state.num_frames
        if start_frame_idx is None:
            start_frame_idx = min(t for obj in state.objects for t in obj.cond)
        if max_frame_num_to_track is None:
            max_frame_num_to_track = num_frames
        if reverse:
            end = max(start_frame_idx - max_frame_num_to_track, 0)
            order = range(start_frame_idx, end - 1, -1) if start_frame_idx > 0 else range(0)
        else:
            end = min(start_frame_idx + max_frame_num_to_track, num_frames - 1)
            order = range(start_frame_idx, end + 1)
        order = list(order)
        for k, frame_idx in enumerate(order):
            if k + 1 < len(order):
                self._read_ahead(state, order[k + 1])
            yield frame_idx, state.obj_ids, self._track_frame(state, frame_idx, reverse)

    @torch.inference_mode()
    def track(self, inference_state: VideoState, frame: np.ndarray) -> tuple[int, list[int], torch.Tensor]:
        """The next frame of a stream (:meth:`init_stream`): (frame_idx, obj_ids, (O, 1, H, W) logits)."""
        state = inference_state
        if not state.stream:
            raise PredictorStateError("track(state, frame) is for streams opened with init_stream; "
                                      "use propagate_in_video on a video")
        self.propagate_in_video_preflight(state)
        frame_idx = state.frames.append(frame)
        for obj in state.objects:
            for t in obj.cond:
                obj.tracked.setdefault(t, False)
        return frame_idx, state.obj_ids, self._track_frame(state, frame_idx, reverse=False)

    # ---- editing ----

    @torch.inference_mode()
    def clear_all_prompts_in_frame(self, inference_state: VideoState, frame_idx: int, obj_id: int,
                                   need_output: bool = True) -> tuple[int, list[int], torch.Tensor] | None:
        """Remove ``obj_id``'s prompts on ``frame_idx`` (its conditioning output becomes a tracked one)."""
        state = inference_state
        frame_idx = self._frame(state, frame_idx)
        obj = self._object(state, obj_id, create=False)
        obj.point_inputs.pop(frame_idx, None)
        obj.mask_input_frames.discard(frame_idx)
        obj.temp_cond.pop(frame_idx, None)
        obj.temp_non_cond.pop(frame_idx, None)
        out = obj.cond.pop(frame_idx, None)
        if out is not None:
            obj.non_cond[frame_idx] = out
            obj.tracked.pop(frame_idx, None)
        if not need_output:
            return None
        is_cond = any(frame_idx in o.temp_cond for o in state.objects)
        return frame_idx, state.obj_ids, self._consolidated(state, frame_idx, is_cond)

    @torch.inference_mode()
    def reset_state(self, inference_state: VideoState) -> None:
        """Forget every object, prompt and output (the video stays open)."""
        for obj in inference_state.objects:
            obj.non_cond.clear()
        inference_state.objects.clear()

    @torch.inference_mode()
    def remove_object(self, inference_state: VideoState, obj_id: int, strict: bool = False,
                      need_output: bool = True) -> tuple[list[int], list[tuple[int, torch.Tensor]]]:
        """Drop ``obj_id`` (with ``strict``, :class:`NotFoundError` if it is not tracked); returns
        the remaining ids and the updated logits of the frames it had prompts on."""
        state = inference_state
        idx = state.obj_idx(obj_id)
        if idx is None:
            if strict:
                raise NotFoundError(f"object id {obj_id} is not tracked; objects: {state.obj_ids or 'none'}")
            return state.obj_ids, []
        if len(state.objects) == 1:
            self.reset_state(state)
            return state.obj_ids, []
        obj = state.objects[idx]
        input_frames = sorted(obj.input_frames())
        for frame_idx in input_frames:
            self.clear_all_prompts_in_frame(state, frame_idx, obj_id, need_output=False)
        obj.non_cond.clear()
        del state.objects[idx]
        updated = []
        if need_output:
            for frame_idx in input_frames:
                is_cond = any(frame_idx in o.temp_cond for o in state.objects)
                updated.append((frame_idx, self._consolidated(state, frame_idx, is_cond)))
        return state.obj_ids, updated


def apply_non_overlapping_constraints(masks: torch.Tensor) -> torch.Tensor:
    """(O, 1, H, W) logits: where an object is not the highest-scoring one, its logit is clamped
    to at most -10 (official ``_apply_non_overlapping_constraints``)."""
    if masks.shape[0] == 1:
        return masks
    best = torch.argmax(masks, dim=0, keepdim=True)
    keep = best == torch.arange(masks.shape[0], device=masks.device)[:, None, None, None]
    return torch.where(keep, masks, torch.clamp(masks, max=-10.0))
