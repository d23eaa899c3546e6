"""A tracked video's per-frame masks as files, each written atomically when its frame is done.

* DAVIS palette PNGs (:func:`save_davis_png` / :func:`read_davis_png`): one ``P`` mode PNG per
  frame, pixel value = object id (0 background), the DAVIS palette; where objects overlap the
  smaller id wins, as the official SAM 2 ``vos_inference`` writes them.
* Per-object binary PNGs: ``<object id>/<frame>.png``, 0 / 255.
* COCO video JSON (:func:`coco_video`): the YouTube-VIS layout (``videos`` with ``file_names``;
  one annotation per object with per-frame ``segmentations`` as COCO RLE, ``areas``, ``bboxes``,
  ``None`` where the object has no mask), assembled from per-frame RLE parts.
* An overlay video (:class:`OverlayVideoWriter`, PyAV): each frame with its masks tinted and
  outlined, for a person to watch.

The ``*Writer`` classes are the per-frame sinks of a tracking job: ``write(frame_idx, masks)``
when a frame is finished, ``done(frame_idx)`` / ``read(frame_idx)`` for a re-run that continues
where an interrupted one stopped, ``finish(...)`` for what is assembled from all frames.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...errors import AnnotationError, VideoError
from ...fileio import AtomicFile, atomic_write_bytes, atomic_write_json, atomic_write_text, json_text
from ...masks import decode_rle, encode_rle, mask_bbox_xywh
from ..frames import FolderFrames, FrameSource, _import_av
from .coco import CATEGORY
from .overlay import draw_overlay
from .png import save_png

Masks = Mapping[int, np.ndarray]  # object id -> HxW bool mask
COCO_VIDEO_FILE = "annotations.json"
PARTS_FOLDER = "frames"
DEFAULT_FPS = 24.0  # DAVIS's frame rate


def davis_palette() -> list[int]:
    """The DAVIS (PASCAL VOC) palette: 256 RGB triples, flat, index 0 black, 1 dark red, 2 green..."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette


_PALETTE = davis_palette()


def label_map(masks: Masks, size: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 object ids (0: background) from per-object masks; the smaller id wins overlaps."""
    labels = np.zeros(size, dtype=np.uint8)
    for obj_id in sorted(masks, reverse=True):
        if not 0 < obj_id < 256:
            raise AnnotationError(f"object id {obj_id} does not fit a DAVIS palette PNG (ids 1..255)")
        labels[masks[obj_id]] = obj_id
    return labels


def save_davis_png(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """(H, W) uint8 object ids as a DAVIS palette PNG, written atomically."""
    image = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="P")
    image.putpalette(_PALETTE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def read_davis_png(path: str | os.PathLike) -> np.ndarray:
    """(H, W) uint8 object ids of a DAVIS annotation PNG (palette or grey); :class:`AnnotationError` if unreadable."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise AnnotationError(f"{path} is a {image.mode} PNG, not a DAVIS label PNG (palette or grey)")
            return np.array(image, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as exc:
        raise AnnotationError(f"mask {path} cannot be read: {exc}") from None


def frame_names(source: FrameSource) -> list[str]:
    """A file stem per frame: the frame files' own names for a folder (when unique), else ``00000``..."""
    if isinstance(source, FolderFrames):
        stems = [p.stem for p in source.files]
        if len(set(stems)) == len(stems):
            return stems
    return [f"{i:05d}" for i in range(len(source))]


def video_fps(path: str | os.PathLike) -> float | None:
    """The frame rate a video file declares (PyAV), None for a folder or when it declares none."""
    if Path(path).is_dir():
        return None
    av = _import_av()
    try:
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate
    except (av.FFmpegError, IndexError):
        return None
    return float(rate) if rate else None


def _read_mask_png(path: Path, size: tuple[int, int]) -> np.ndarray:
    mask = read_davis_png(path) > 0
    if mask.shape != size:
        raise AnnotationError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]}, the video is {size[1]}x{size[0]}")
    return mask


class FrameWriter:
    """A tracking job's per-frame output in ``folder``: frame ``i`` is done once its files exist.

    ``names`` gives each frame's file stem (:func:`frame_names`), ``obj_ids`` the tracked objects,
    ``size`` the frames' (H, W)."""

    def __init__(self, folder: str | os.PathLike, names: Sequence[str], obj_ids: Sequence[int],
                 size: tuple[int, int]) -> None:
        self.folder, self.names, self.obj_ids, self.size = Path(folder), list(names), list(obj_ids), size

    def done(self, frame_idx: int) -> bool:
        return all(p.is_file() for p in self._paths(frame_idx))

    def _paths(self, frame_idx: int) -> list[Path]:
        raise NotImplementedError

    def read(self, frame_idx: int) -> dict[int, np.ndarray]:
        """The masks a done frame was written with."""
        raise NotImplementedError

    def write(self, frame_idx: int, masks: Masks) -> None:
        raise NotImplementedError

    def finish(self, frames: Sequence[int], source: FrameSource) -> list[Path]:
        """Assemble what is built from all of ``frames`` (done ones); the files written."""
        return []


class DavisWriter(FrameWriter):
    """``<frame>.png``: one DAVIS palette PNG per frame."""

    def _paths(self, frame_idx: int) -> list[Path]:
        return [self.folder / f"{self.names[frame_idx]}.png"]

    def read(self, frame_idx: int) -> dict[int, np.ndarray]:
        labels = read_davis_png(self._paths(frame_idx)[0])
        return {obj_id: labels == obj_id for obj_id in self.obj_ids}

    def write(self, frame_idx: int, masks: Masks) -> None:
        save_davis_png(self._paths(frame_idx)[0], label_map(masks, self.size))


class ObjectPngWriter(FrameWriter):
    """``<object id>/<frame>.png``: one binary PNG (0 / 255) per object and frame."""

    def _paths(self, frame_idx: int) -> list[Path]:
        return [self.folder / str(obj_id) / f"{self.names[frame_idx]}.png" for obj_id in self.obj_ids]

    def read(self, frame_idx: int) -> dict[int, np.ndarray]:
        return {o: _read_mask_png(p, self.size) for o, p in zip(self.obj_ids, self._paths(frame_idx))}

    def write(self, frame_idx: int, masks: Masks) -> None:
        for obj_id, path in zip(self.obj_ids, self._paths(frame_idx)):
            save_png(path, masks[obj_id])


class RlePartsWriter(FrameWriter):
    """``frames/<frame>.json``: each object's :func:`mask_record` on the frame (``None``: no mask), the
    parts a whole-video file is built from without decoding them again."""

    def _paths(self, frame_idx: int) -> list[Path]:
        return [self.folder / PARTS_FOLDER / f"{self.names[frame_idx]}.json"]

    def records(self, frame_idx: int) -> dict[int, dict[str, Any] | None]:
        """A done frame's record per object."""
        path = self._paths(frame_idx)[0]
        try:
            objects = json.loads(path.read_bytes())["objects"]
            return {obj_id: objects[str(obj_id)] for obj_id in self.obj_ids}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AnnotationError(f"frame part {path} cannot be read: {exc}") from None

    def read(self, frame_idx: int) -> dict[int, np.ndarray]:
        return {obj_id: decode_rle(r["segmentation"]) if r is not None else np.zeros(self.size, dtype=bool)
                for obj_id, r in self.records(frame_idx).items()}

    def write(self, frame_idx: int, masks: Masks) -> None:
        part = {"frame": frame_idx, "name": self.names[frame_idx],
                "objects": {str(obj_id): mask_record(masks[obj_id]) for obj_id in self.obj_ids}}
        atomic_write_text(self._paths(frame_idx)[0], json_text(part))


class CocoVideoWriter(RlePartsWriter):
    """Per-frame RLE parts, then one COCO video JSON (:func:`coco_video`) ``annotations.json``;
    ``file_names``: the frames' file names recorded in it (default ``<name>.jpg``)."""

    def __init__(self, *args: Any, file_names: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.file_names = list(file_names) if file_names is not None else [f"{n}.jpg" for n in self.names]

    def finish(self, frames: Sequence[int], source: FrameSource) -> list[Path]:
        per_frame = {i: self.records(i) for i in frames if self.done(i)}
        document = coco_video(per_frame, self.obj_ids, self.file_names, self.size)
        return [atomic_write_json(self.folder / COCO_VIDEO_FILE, document)]


class OverlayMp4Writer(RlePartsWriter):
    """Per-frame RLE parts, then an overlay video ``name`` (frames in order, masks drawn over them).

    ``decorations(frame_idx)`` may give :func:`~segany.data.formats.overlay.draw_overlay` keywords
    (the prompts' ``points`` / ``labels`` / ``box``) to draw on that frame."""

    def __init__(self, *args: Any, name: str = "track.mp4", fps: float = DEFAULT_FPS,
                 decorations: Callable[[int], dict[str, Any]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.video_path, self.fps, self.decorations = self.folder / name, fps, decorations

    def finish(self, frames: Sequence[int], source: FrameSource) -> list[Path]:
        with OverlayVideoWriter(self.video_path, fps=self.fps) as video:
            for i in sorted(frames):
                if self.done(i):
                    masks = self.read(i)
                    video.write(source[i], [masks[o] for o in self.obj_ids],
                                **(self.decorations(i) if self.decorations else {}))
        return [self.video_path]


WRITERS: dict[str, type[FrameWriter]] = {
    "davis": DavisWriter, "png": ObjectPngWriter, "coco": CocoVideoWriter, "mp4": OverlayMp4Writer,
}


def mask_record(mask: np.ndarray) -> dict[str, Any] | None:
    """An HxW bool mask as ``{"segmentation": COCO RLE, "area", "bbox": XYWH}``; ``None`` when empty."""
    if not mask.any():
        return None
    return {"segmentation": encode_rle(mask), "area": int(mask.sum()), "bbox": mask_bbox_xywh(mask)}


def coco_video(per_frame: Mapping[int, Mapping[int, dict[str, Any] | None]], obj_ids: Sequence[int],
               file_names: Sequence[str], size: tuple[int, int], video_id: int = 1,
               description: str = "segany track") -> dict[str, Any]:
    """A COCO video (YouTube-VIS layout) dict: one video of ``file_names`` and one annotation per
    object (``obj_id`` kept) with per-frame ``segmentations`` (COCO RLE), ``areas`` and XYWH
    ``bboxes`` from ``per_frame[frame][obj_id]`` (:func:`mask_record`); ``None`` for a frame not in
    ``per_frame`` or where the object has no mask."""
    height, width = size
    annotations = []
    for number, obj_id in enumerate(obj_ids, start=1):
        records = [per_frame.get(i, {}).get(obj_id) for i in range(len(file_names))]
        annotations.append({
            "id": number, "video_id": video_id, "obj_id": int(obj_id), "category_id": CATEGORY["id"], "iscrowd": 0,
            "height": height, "width": width,
            "segmentations": [r["segmentation"] if r else None for r in records],
            "areas": [r["area"] if r else None for r in records],
            "bboxes": [r["bbox"] if r else None for r in records],
        })
    video = {"id": video_id, "height": height, "width": width, "length": len(file_names),
             "file_names": list(file_names)}
    return {"info": {"description": description}, "licenses": [], "videos": [video],
            "annotations": annotations, "categories": [CATEGORY]}


class OverlayVideoWriter:
    """An H.264 MP4 (PyAV) of frames with masks drawn over them, written to a temporary file and
    renamed into place at :meth:`close` (an interrupted or failed writer leaves no file).

    ``open(width, height)`` (or the first ``write``) starts it; ``write(frame, masks, **decorations)``
    adds a frame (HxWx3 RGB uint8, masks HxW bool in a fixed object order, so each object keeps its
    colour); odd sizes are padded by one pixel, as H.264 needs even ones."""

    def __init__(self, path: str | os.PathLike, fps: float = DEFAULT_FPS, codec: str = "libx264") -> None:
        self.path, self.fps, self.codec = Path(path), fps, codec
        self._file: AtomicFile | None = None
        self._container: Any = None
        self._stream: Any = None
        self.frames = 0

    def open(self, width: int, height: int) -> None:
        av = _import_av()
        self._file = AtomicFile(self.path)
        try:
            self._container = av.open(str(self._file.tmp), mode="w", format="mp4")
            self._stream = self._container.add_stream(self.codec, rate=Fraction(self.fps).limit_denominator(1001))
            self._stream.width, self._stream.height = width + width % 2, height + height % 2
            self._stream.pix_fmt = "yuv420p"
            if self.codec == "libx264":
                self._stream.options = {"preset": "veryfast"}  # 3x faster than the default, files about as small
        except BaseException:
            self.abort()
            raise

    def write(self, frame: np.ndarray, masks: Sequence[np.ndarray], **decorations: Any) -> None:
        height, width = frame.shape[:2]
        if self._container is None:
            self.open(width, height)
        if (width + width % 2, height + height % 2) != (self._stream.width, self._stream.height):
            raise VideoError(f"frame {self.frames} is {width}x{height}, the video is {self._stream.width}x{self._stream.height}")
        image = draw_overlay(frame, list(masks), **decorations)
        image = np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        av = _import_av()
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> Path:
        """Flush the encoder and put the file in place; :class:`VideoError` if no frame was written."""
        if self._container is None:
            raise VideoError(f"no frames to write to {self.path}")
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
        except BaseException:
            self.abort()
            raise
        assert self._file is not None
        return self._file.commit()

    def abort(self) -> None:
        """Stop without a file."""
        if self._container is not None:
            with contextlib.suppress(Exception):  # the file is discarded anyway
                self._container.close()
            self._container = None
        if self._file is not None:
            self._file.discard()

    def __enter__(self) -> OverlayVideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
