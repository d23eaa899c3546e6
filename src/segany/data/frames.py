"""Video frames on demand: a folder of images, a video file (PyAV) or arrays, as HxWx3 RGB uint8.

Nothing is decoded up front. :func:`open_frames` gives a :class:`FrameSource`: ``len()``, the
frame size, and ``source[i]`` decoding frame ``i`` when it is asked for, with a small cache of the
most recent frames (trackers read each frame a few times around the current one: prompt, track,
memory). A video file is indexed once from its packets (no pixel decoded) so that any frame can be
reached by seeking to the keyframe before it; forward reading decodes each frame once.

Folders are read as the official SAM 2 video predictor reads them: ``.jpg``/``.jpeg`` files (and
``.png`` here) sorted by the integer of their name (``00000.jpg``...; by name when not numeric),
each decoded with Pillow and converted to RGB.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ImageError, VideoError
from .images import DEFAULT_MAX_PIXELS, check_image_array

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif")
DEFAULT_CACHE = 8


class FrameSource:
    """Frames ``0 .. len-1`` of one video, all ``height x width``; ``source[i]`` is HxWx3 RGB uint8.

    Subclasses decode one frame in :meth:`_decode`; this class keeps the last ``cache`` frames
    and checks indices (:class:`VideoError` for one out of range)."""

    def __init__(self, num_frames: int, height: int, width: int, name: str, cache: int = DEFAULT_CACHE) -> None:
        if num_frames <= 0:
            raise VideoError(f"{name} has no frames")
        self.num_frames, self.height, self.width, self.name = num_frames, height, width, name
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = max(1, int(cache))

    def __len__(self) -> int:
        return self.num_frames

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of every frame."""
        return self.height, self.width

    def index(self, frame_idx: int) -> int:
        """``frame_idx`` as an int in range, or :class:`VideoError` naming the valid range."""
        if isinstance(frame_idx, bool) or not isinstance(frame_idx, (int, np.integer)):
            raise VideoError(f"frame index must be an integer, got {frame_idx!r}")
        if not 0 <= int(frame_idx) < self.num_frames:
            raise VideoError(f"frame index {frame_idx} is out of range: {self.name} has frames 0..{self.num_frames - 1}")
        return int(frame_idx)

    def __getitem__(self, frame_idx: int) -> np.ndarray:
        i = self.index(frame_idx)
        frame = self._cache.get(i)
        if frame is None:
            frame = self._checked(i, self._decode(i))
            frame.setflags(write=False)
            self._cache[i] = frame
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(i)
        return frame

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(self.num_frames))

    def _checked(self, frame_idx: int, frame: np.ndarray) -> np.ndarray:
        """``frame`` if it has the video's size, else :class:`VideoError`."""
        if frame.shape[:2] != (self.height, self.width):
            raise VideoError(f"frame {frame_idx} of {self.name} is {frame.shape[1]}x{frame.shape[0]}, "
                             f"the video is {self.width}x{self.height}")
        return frame

    def _decode(self, frame_idx: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release the decoder and the cache."""
        self._cache.clear()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.num_frames} frames, {self.width}x{self.height})"


def _frame_order(path: Path) -> tuple[int, int | str]:
    return (0, int(path.stem)) if path.stem.isdigit() else (1, path.name)


class FolderFrames(FrameSource):
    """Image files of a folder, in the order of their integer names."""

    def __init__(self, folder: str | os.PathLike, cache: int = DEFAULT_CACHE,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        folder = Path(folder)
        self.files = sorted((p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file()),
                            key=_frame_order)
        if not self.files:
            raise VideoError(f"folder {folder} has no frames ({', '.join(FRAME_SUFFIXES)} files)")
        self.max_pixels = max_pixels
        first = self._read(0)
        super().__init__(len(self.files), first.shape[0], first.shape[1], str(folder), cache)
        self._cache[0] = first

    def _read(self, frame_idx: int) -> np.ndarray:
        try:
            with Image.open(self.files[frame_idx]) as img:
                if self.max_pixels is not None and img.width * img.height > self.max_pixels:
                    raise VideoError(f"frame {frame_idx} ({self.files[frame_idx]}) is {img.width}x{img.height}: more "
                                     f"than the limit of {self.max_pixels} pixels (max_pixels)")
                return np.asarray(img.convert("RGB"), dtype=np.uint8)
        except VideoError:
            raise
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise VideoError(f"frame {frame_idx} ({self.files[frame_idx]}) cannot be read: {exc}") from None

    def _decode(self, frame_idx: int) -> np.ndarray:
        return self._read(frame_idx)


class ArrayFrames(FrameSource):
    """Frames already in memory: a sequence of HxWx3 uint8 arrays or one NxHxWx3 array."""

    def __init__(self, frames: Sequence[np.ndarray] | np.ndarray, name: str = "frames") -> None:
        if len(frames) == 0:
            raise VideoError(f"{name} has no frames")
        try:
            self.frames = [check_image_array(f) for f in frames]
        except ImageError as exc:
            raise VideoError(f"{name}: {exc}") from None
        h, w = self.frames[0].shape[:2]
        super().__init__(len(self.frames), h, w, name, cache=1)

    def __getitem__(self, frame_idx: int) -> np.ndarray:
        """The caller's own array, not cached (nor made read-only)."""
        i = self.index(frame_idx)
        return self._checked(i, self.frames[i])


def _import_av() -> Any:
    try:
        import av
    except ImportError:
        raise VideoError("reading video files needs PyAV: pip install 'segany[video]' "
                         "(or give a folder of frames)") from None
    return av


class VideoFileFrames(FrameSource):
    """Frames of a video file, decoded with PyAV when asked for.

    The packets are read once (no decoding) to list every frame's presentation time; frame ``i`` is
    then decoded by continuing the current decoder when it is just ahead, or by seeking to the
    keyframe before it and decoding forward."""

    def __init__(self, path: str | os.PathLike, cache: int = DEFAULT_CACHE) -> None:
        self.av = _import_av()
        self.path = str(path)
        try:
            with self.av.open(self.path) as container:
                if not container.streams.video:
                    raise VideoError(f"{self.path} has no video stream")
                stream = container.streams.video[0]
                self._pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None and p.size > 0)
                height, width = stream.codec_context.height, stream.codec_context.width
        except self.av.FFmpegError as exc:
            raise VideoError(f"video {self.path} cannot be read: {exc}") from None
        self._container: Any = None
        self._frames: Iterator[Any] | None = None
        self._next = -1  # index of the frame the open decoder yields next
        super().__init__(len(self._pts), height, width, self.path, cache)

    def _open_at(self, frame_idx: int) -> None:
        if self._container is None:
            self._container = self.av.open(self.path)
        stream = self._container.streams.video[0]
        self._container.seek(self._pts[frame_idx], stream=stream, backward=True, any_frame=False)
        self._frames = self._container.decode(stream)
        self._next = -1

    def _decode(self, frame_idx: int) -> np.ndarray:
        try:
            if self._frames is None or frame_idx != self._next:
                self._open_at(frame_idx)
            target = self._pts[frame_idx]
            for frame in self._frames:
                if frame.pts is None or frame.pts < target:
                    continue
                image = frame.to_ndarray(format="rgb24")
                self._next = frame_idx + 1 if frame.pts == target else -1
                if frame.pts != target:
                    raise VideoError(f"frame {frame_idx} of {self.path} could not be reached by seeking")
                return np.ascontiguousarray(image)
        except self.av.FFmpegError as exc:
            raise VideoError(f"frame {frame_idx} of {self.path} cannot be decoded: {exc}") from None
        raise VideoError(f"frame {frame_idx} of {self.path} is missing (the file ends early)")

    def close(self) -> None:
        super().close()
        if self._container is not None:
            self._container.close()
        self._container, self._frames, self._next = None, None, -1


def open_frames(video: Any, cache: int = DEFAULT_CACHE, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> FrameSource:
    """A :class:`FrameSource` for a folder of frames, a video file, a sequence of HxWx3 uint8 arrays
    or an NxHxWx3 array (a :class:`FrameSource` is returned as it is). :class:`VideoError` for
    anything else, a missing path, or a folder or file without frames."""
    if isinstance(video, FrameSource):
        return video
    if isinstance(video, (str, os.PathLike)):
        path = Path(video)
        if path.is_dir():
            return FolderFrames(path, cache=cache, max_pixels=max_pixels)
        if not path.exists():
            raise VideoError(f"video {path} does not exist (give a folder of frames or a video file)")
        if path.suffix.lower() in FRAME_SUFFIXES:
            raise VideoError(f"{path} is one image, not a video: give the folder of its frames")
        return VideoFileFrames(path, cache=cache)
    if isinstance(video, np.ndarray) and video.ndim == 4 or isinstance(video, Sequence) and not isinstance(video, (str, bytes)):
        return ArrayFrames(video)
    raise VideoError(f"a video is a folder of frames, a video file or a sequence of HxWx3 uint8 arrays, "
                     f"got {type(video).__name__}")
