"""Video sessions of the annotator: click objects on any frame of a video, track them, correct, accept.

The videos are the sub-folders of frames and the video files (PyAV) directly inside the
``--videos`` folder, each named by an opaque id (a hash of its name, as images are). Each video
has a folder ``TRACKS/<name>/`` (``--tracks``; default ``VIDEOS/.segany-tracks``, hidden so that an
images folder holding the videos does not list its PNGs as images):

* ``session.json``: the prompts (per object and frame: clicks and/or a box), saved after every
  change, so a restarted server continues where the labeller was;
* ``work/<frame>.png``: every frame's latest masks, one DAVIS palette PNG per frame, on disk
  rather than in memory (a long video's masks never fill the server);
* ``seeds/<obj>_<frame>.png``: the tracked mask a correction on that frame started from;
* ``davis/<frame>.png`` and ``annotations.json`` (COCO video, YouTube-VIS layout): the accepted
  tracks, what the exports serve.

All tracker work (:func:`segany.engine.VideoPredictor` of the server's model) runs on one bounded
lane. A click answers its frame's masks at once. A click for an object on a frame where it was
tracked refines the tracked mask: the tracker gets that mask first, then the clicks. "Track" is a
background job whose progress the page polls: the tracker's state is reset and every prompt
replayed (a track depends on the prompts only), then it propagates forward from the earliest
prompted frame to the last frame and backward from it to frame 0, writing each frame's masks as
the frame is done; it stops between frames when cancelled.
"""
from __future__ import annotations

import io
import json
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from PIL import Image
from pydantic import BaseModel, Field, model_validator

from ..data.formats.video import (
    COCO_VIDEO_FILE,
    coco_video,
    frame_names,
    label_map,
    mask_record,
    read_davis_png,
    save_davis_png,
)
from ..data.frames import FRAME_SUFFIXES, VIDEO_SUFFIXES, FolderFrames, FrameSource, open_frames
from ..data.images import DEFAULT_MAX_PIXELS
from ..engine import VideoPredictor
from ..errors import NotConfiguredError, NotFoundError, PromptError, SeganyError, ServerBusyError, VideoError
from ..fileio import atomic_write_json, ensure_directory
from ..prompts import check_box, check_points
from .catalogue import image_id
from .lanes import Cancelled, Lane, Ticket
from .schemas import MAX_POINTS, RLE, Box, Closed, Point

TRACKS_FOLDER = ".segany-tracks"
SESSION_FILE = "session.json"
MAX_OBJECT_ID = 255  # DAVIS palette PNGs hold ids 1..255
DEFAULT_MAX_SESSIONS = 8
JPEG_QUALITY = 90

JobStatus = Literal["idle", "queued", "running", "done", "failed", "cancelled"]


# -- request and response bodies --------------------------------------------------------------

class VideoPromptRequest(Closed):
    frame: int = Field(ge=0)
    obj_id: int = Field(ge=1, le=MAX_OBJECT_ID)
    points: list[Point] = Field(default_factory=list, max_length=MAX_POINTS)
    labels: list[Literal[0, 1]] = Field(default_factory=list, max_length=MAX_POINTS,
                                        description="1 = foreground, 0 = background, one per point")
    box: Box | None = None

    @model_validator(mode="after")
    def _prompts(self) -> VideoPromptRequest:
        if len(self.points) != len(self.labels):
            raise ValueError(f"points and labels must have the same length, got {len(self.points)} and {len(self.labels)}")
        if not self.points and self.box is None:
            raise ValueError("give at least one point (with its label) or a box")
        return self


class AcceptRequest(Closed):
    obj_ids: list[int] | None = Field(None, description="the objects to accept (default: all)")


class VideoSummary(BaseModel):
    id: str
    name: str
    kind: Literal["frames", "file"]
    objects: int
    accepted: bool


class PromptOut(BaseModel):
    obj_id: int
    frame: int
    points: list[list[float]]
    labels: list[int]
    box: list[float] | None
    seeded: bool = Field(description="a correction of the object's tracked mask on that frame")


class TrackStatus(BaseModel):
    status: JobStatus
    done: int = Field(description="tracking steps done: frames forward from the earliest prompt, then backward")
    total: int
    error: str | None = None


class VideoDetail(VideoSummary):
    frames: int
    width: int
    height: int
    prompts: list[PromptOut]
    object_ids: list[int]
    tracked: bool = Field(description="every frame's masks come from a track of the current prompts")
    accepted_objects: list[int]
    track: TrackStatus


class FrameObject(BaseModel):
    obj_id: int
    rle: RLE
    area: int
    bbox: list[int]


class FrameMasks(BaseModel):
    frame: int
    objects: list[FrameObject] = Field(description="the objects with a mask on this frame")


# -- sessions ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoEntry:
    """One video: ``id`` for clients, ``name`` (its file or folder name), ``path`` on disk."""

    id: str
    name: str
    path: Path

    @property
    def kind(self) -> Literal["frames", "file"]:
        return "frames" if self.path.is_dir() else "file"


@dataclass
class FramePrompt:
    """One object's prompt on one frame; ``seeded``: it corrects the tracked mask saved in seeds/."""

    obj_id: int
    frame: int
    points: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    box: list[float] | None = None
    seeded: bool = False


@dataclass
class TrackJob:
    """A running or finished track: its progress and outcome."""

    total: int
    done: int = 0
    status: JobStatus = "queued"
    error: str | None = None
    ticket: Ticket[None] | None = None

    def view(self) -> dict[str, Any]:
        return {"status": self.status, "done": self.done, "total": self.total, "error": self.error}


class VideoSession:
    """One open video: its frames (for the page), prompts, masks on disk and tracker state.

    The tracker calls happen on the library's lane only; ``lock`` guards the prompts and flags
    that the routes read meanwhile."""

    def __init__(self, entry: VideoEntry, folder: Path, max_pixels: int | None) -> None:
        self.entry, self.folder = entry, folder
        try:
            self.source: FrameSource = open_frames(entry.path, max_pixels=max_pixels)
        except VideoError as exc:  # messages name the video, never its path on the server
            raise VideoError(str(exc).replace(str(entry.path), entry.name)) from None
        self.names = frame_names(self.source)
        self.lock = threading.Lock()
        self.decoding = threading.Lock()  # a video file's decoder serves one frame at a time
        self.prompts: dict[tuple[int, int], FramePrompt] = {}
        self.tracked = False
        self.accepted: list[int] = []
        self.state: Any = None  # the tracker's, made on the lane
        self.propagated = False  # the state has tracked: a new object needs a reset and replay
        self.job: TrackJob | None = None
        self.pending = 0  # lane jobs of this session queued or running
        self._load()

    # persistence
    def _load(self) -> None:
        path = self.folder / SESSION_FILE
        if not path.is_file():
            return
        try:
            record = json.loads(path.read_bytes())
            prompts = [FramePrompt(**p) for p in record["prompts"]]
            tracked, accepted = bool(record["tracked"]), [int(o) for o in record["accepted"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise VideoError(f"the session of video {self.entry.name} ({path.name}) cannot be read: {exc}; "
                             f"move it away to start the video again") from None
        for p in prompts:
            self.index(p.frame)
        self.prompts = {(p.obj_id, p.frame): p for p in prompts}
        self.tracked, self.accepted = tracked, accepted

    def save(self) -> None:
        record = {"video": self.entry.name, "prompts": [asdict(p) for p in self.ordered_prompts()],
                  "tracked": self.tracked, "accepted": self.accepted}
        atomic_write_json(self.folder / SESSION_FILE, record, indent=1)

    def ordered_prompts(self) -> list[FramePrompt]:
        return sorted(self.prompts.values(), key=lambda p: (p.frame, p.obj_id))

    def index(self, frame: int) -> int:
        """``frame`` if the video has it, else :class:`VideoError` naming the frames it has."""
        if not 0 <= frame < len(self.source):
            raise VideoError(f"frame {frame} is out of range: video {self.entry.name} has frames 0..{len(self.source) - 1}")
        return frame

    @property
    def obj_ids(self) -> list[int]:
        return sorted({o for o, _ in self.prompts})

    # masks on disk
    def mask_path(self, folder: str, frame: int) -> Path:
        return self.folder / folder / f"{self.names[frame]}.png"

    def seed_path(self, obj_id: int, frame: int) -> Path:
        return self.folder / "seeds" / f"{obj_id}_{self.names[frame]}.png"

    def labels(self, frame: int, folder: str = "work") -> np.ndarray:
        """(H, W) object ids of a frame's masks (zeros when it has none yet)."""
        path = self.mask_path(folder, frame)
        return read_davis_png(path) if path.is_file() else np.zeros(self.source.size, dtype=np.uint8)

    def write_labels(self, frame: int, masks: dict[int, np.ndarray], folder: str = "work") -> None:
        save_davis_png(self.mask_path(folder, frame), label_map(masks, self.source.size))

    def set_object_mask(self, frame: int, obj_id: int, mask: np.ndarray | None) -> None:
        """Replace one object's mask on a frame (None: remove it), keeping the others'."""
        labels = self.labels(frame)
        masks = {o: labels == o for o in self.obj_ids if o != obj_id}
        if mask is not None:
            masks[obj_id] = mask
        self.write_labels(frame, masks)

    def frame_masks(self, frame: int) -> list[dict[str, Any]]:
        labels = self.labels(self.index(frame))
        with self.lock:
            ids = self.obj_ids
        out = []
        for obj_id in ids:
            record = mask_record(labels == obj_id)
            if record is not None:
                out.append({"obj_id": obj_id, "rle": record["segmentation"], "area": record["area"],
                            "bbox": record["bbox"]})
        return out

    def file_names(self) -> list[str]:
        """The frames' file names as a COCO video lists them."""
        if isinstance(self.source, FolderFrames):
            return [p.name for p in self.source.files]
        return [f"{n}.jpg" for n in self.names]

    def busy(self) -> bool:
        return self.job is not None and self.job.status in ("queued", "running")

    def track_view(self) -> dict[str, Any]:
        """The last track's status (idle before any)."""
        return self.job.view() if self.job else {"status": "idle", "done": 0, "total": len(self.source), "error": None}


def _masks_of(ids: list[int], logits: Any) -> dict[int, np.ndarray]:
    """Each object's HxW bool mask from the tracker's (O, 1, H, W) logits."""
    masks = (logits[:, 0] > 0).cpu().numpy()
    return {int(o): masks[k] for k, o in enumerate(ids)}


class VideoLibrary:
    """The videos of a folder, their sessions (the last ``max_sessions`` opened kept open) and the
    tracker lane. :class:`~segany.errors.UnsupportedOperationError` when ``model`` cannot track."""

    def __init__(self, folder: str | Path, model: Any, tracks: str | Path | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, max_queue: int = 8,
                 max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        self.root = Path(folder).resolve()
        if not self.root.is_dir():
            raise VideoError(f"videos folder {folder} does not exist or is not a folder")
        self.tracks = Path(tracks).resolve() if tracks is not None else self.root / TRACKS_FOLDER
        self.tracker = VideoPredictor(model)
        self.max_pixels, self.max_sessions = max_pixels, max_sessions
        self.lane = Lane("video", max_queue)
        self.entries = self._scan()
        self.sessions: OrderedDict[str, VideoSession] = OrderedDict()
        self._lock = threading.Lock()

    def _scan(self) -> dict[str, VideoEntry]:
        found = []
        for path in sorted(self.root.iterdir()):
            if path.name.startswith(".") or path.resolve() == self.tracks:
                continue
            frames = path.is_dir() and any(p.suffix.lower() in FRAME_SUFFIXES for p in path.iterdir())
            if frames or path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
                found.append(path)
        return {image_id(p.name): VideoEntry(image_id(p.name), p.name, p) for p in found}

    def close(self) -> None:
        """Stop a running track and refuse new work."""
        self.lane.shutdown()

    def entry(self, video_id: str) -> VideoEntry:
        entry = self.entries.get(video_id)
        if entry is None:
            raise NotFoundError(f"unknown video id {video_id!r}")
        return entry

    def session(self, video_id: str) -> VideoSession:
        """The video's session, opened (and its saved prompts read) on first use."""
        entry = self.entry(video_id)
        with self._lock:
            session = self.sessions.get(video_id)
            if session is None:
                session = VideoSession(entry, ensure_directory(self.tracks / entry.name), self.max_pixels)
                self.sessions[video_id] = session
                for key, old in list(self.sessions.items()):
                    if len(self.sessions) <= self.max_sessions:
                        break
                    if not old.pending and key != video_id:  # no work of it queued or running
                        del self.sessions[key]
                        old.source.close()
            self.sessions.move_to_end(video_id)
        return session

    def summary(self, entry: VideoEntry) -> dict[str, Any]:
        session = self.sessions.get(entry.id)
        objects = len(session.obj_ids) if session else self._saved_objects(entry)
        accepted = (self.tracks / entry.name / COCO_VIDEO_FILE).is_file()
        return {"id": entry.id, "name": entry.name, "kind": entry.kind, "objects": objects, "accepted": accepted}

    def _saved_objects(self, entry: VideoEntry) -> int:
        try:
            prompts = json.loads((self.tracks / entry.name / SESSION_FILE).read_bytes())["prompts"]
            return len({p["obj_id"] for p in prompts})
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def detail(self, video_id: str) -> dict[str, Any]:
        session = self.session(video_id)
        with session.lock:
            prompts = [asdict(p) for p in session.ordered_prompts()]
            job = session.track_view()
            return {**self.summary(session.entry), "frames": len(session.source), "width": session.source.width,
                    "height": session.source.height, "prompts": prompts, "object_ids": session.obj_ids,
                    "tracked": session.tracked, "accepted_objects": session.accepted, "track": job}

    # -- frames ----------------------------------------------------------------------------

    def frame_image(self, video_id: str, frame: int) -> Response:
        """The frame as the page shows it: a folder's own file, or a video file's frame as JPEG."""
        session = self.session(video_id)
        index = session.index(frame)
        if isinstance(session.source, FolderFrames):
            path = session.source.files[index]
            media = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
            return FileResponse(path, media_type=media)
        with session.decoding:
            pixels = session.source[index]
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY)
        return Response(buffer.getvalue(), media_type="image/jpeg")

    # -- tracker work (on the lane) ------------------------------------------------------------

    def _not_busy(self, session: VideoSession) -> None:
        if session.busy():
            assert session.job is not None
            raise ServerBusyError(f"video {session.entry.name} is being tracked ({session.job.done}/"
                                  f"{session.job.total} frames): wait for it or stop it")

    def _apply(self, session: VideoSession, prompt: FramePrompt) -> tuple[list[int], Any]:
        """Give the tracker one recorded prompt; (obj_ids, logits on its frame)."""
        points = np.asarray(prompt.points, dtype=np.float32).reshape(-1, 2) if prompt.points else None
        labels = np.asarray(prompt.labels, dtype=np.int32) if prompt.points else None
        box = np.asarray(prompt.box, dtype=np.float32) if prompt.box is not None else None
        if prompt.seeded:  # clicks (never a box) on the tracked mask
            seed = read_davis_png(session.seed_path(prompt.obj_id, prompt.frame)) > 0
            self.tracker.add_new_mask(session.state, prompt.frame, prompt.obj_id, seed)
            _, ids, logits = self.tracker.add_new_points_or_box(session.state, prompt.frame, prompt.obj_id, points,
                                                                labels, clear_old_points=False)
            return ids, logits
        _, ids, logits = self.tracker.add_new_points_or_box(session.state, prompt.frame, prompt.obj_id, points,
                                                            labels, box=box)
        return ids, logits

    def _fresh_state(self, session: VideoSession) -> None:
        """The tracker's state with exactly the recorded prompts."""
        if session.state is None:
            session.state = self.tracker.init_state(str(session.entry.path))
        else:
            self.tracker.reset_state(session.state)
        session.propagated = False
        for prompt in session.ordered_prompts():
            self._apply(session, prompt)

    def _run(self, session: VideoSession, work: Callable[[Callable[[], None]], Any]) -> Ticket[Any]:
        """Queue ``work`` for ``session`` on the lane; the session stays open until it is done."""
        def guarded(check: Callable[[], None]) -> Any:
            try:
                return work(check)
            except (SeganyError, Cancelled):
                raise
            except (IndexError, ValueError) as exc:
                raise PromptError(f"the tracker cannot do this ({type(exc).__name__}: {exc})") from None

        def finished(_: Any) -> None:
            with session.lock:
                session.pending -= 1

        with session.lock:
            session.pending += 1
        try:
            ticket = self.lane.job(guarded)
        except ServerBusyError:
            finished(None)
            raise
        ticket.future.add_done_callback(finished)
        return ticket

    def prompt(self, video_id: str, body: VideoPromptRequest) -> Ticket[dict[str, Any]]:
        """Queue one object's prompt on one frame (it replaces the object's earlier prompt there);
        the ticket's result is that frame's masks."""
        session = self.session(video_id)
        frame = session.index(body.frame)
        size = session.source.size
        try:
            check_points(np.asarray(body.points, dtype=np.float64).reshape(-1, 2),
                         np.asarray(body.labels, dtype=np.int64), size) if body.points else None
            check_box(np.asarray(body.box, dtype=np.float64), size) if body.box is not None else None
        except PromptError as exc:
            raise PromptError(f"frame {frame}: {exc}") from None
        self._not_busy(session)

        def run(_: Callable[[], None]) -> dict[str, Any]:
            key = (body.obj_id, frame)
            with session.lock:
                old = session.prompts.get(key)
                new_object = body.obj_id not in session.obj_ids
            if session.state is None or (new_object and session.propagated):
                self._fresh_state(session)
            seeded = body.box is None and (old.seeded if old is not None else
                                           bool((session.labels(frame) == body.obj_id).any()))
            if seeded and (old is None or not old.seeded):
                save_davis_png(session.seed_path(body.obj_id, frame),
                               (session.labels(frame) == body.obj_id).astype(np.uint8))
            prompt = FramePrompt(body.obj_id, frame, [list(map(float, p)) for p in body.points], list(body.labels),
                                 [float(v) for v in body.box] if body.box is not None else None, seeded)
            ids, logits = self._apply(session, prompt)
            with session.lock:
                session.prompts[key] = prompt
                session.tracked = False
            session.set_object_mask(frame, body.obj_id, _masks_of(ids, logits).get(body.obj_id))
            session.save()
            return {"frame": frame, "objects": session.frame_masks(frame)}

        return self._run(session, run)

    def clear(self, video_id: str, obj_id: int, frame: int | None = None) -> Ticket[dict[str, Any]]:
        """Queue removing an object's prompt on one frame (its mask there goes back to the tracked
        one it corrected, or none), or the whole object (``frame`` None: its masks everywhere)."""
        session = self.session(video_id)
        if frame is not None:
            frame = session.index(frame)

        def check_known() -> None:  # when asked and again when the work starts
            if obj_id not in session.obj_ids:
                raise NotFoundError(f"video {session.entry.name} has no object {obj_id} (objects: {session.obj_ids})")
            if frame is not None and (obj_id, frame) not in session.prompts:
                raise NotFoundError(f"object {obj_id} has no prompt on frame {frame} of video {session.entry.name}")

        with session.lock:
            check_known()
        self._not_busy(session)

        def run(_: Callable[[], None]) -> dict[str, Any]:
            with session.lock:
                check_known()
                removed = [session.prompts.pop(k) for k in list(session.prompts)
                           if k[0] == obj_id and (frame is None or k[1] == frame)]
                gone = obj_id not in session.obj_ids
                session.tracked = False
            if gone:
                for t in range(len(session.source)):
                    if session.mask_path("work", t).is_file():
                        session.set_object_mask(t, obj_id, None)
            elif frame is not None:
                seed = read_davis_png(session.seed_path(obj_id, frame)) > 0 if removed[0].seeded else None
                session.set_object_mask(frame, obj_id, seed)
            if session.state is not None:
                self._fresh_state(session)
            session.save()
            shown = frame if frame is not None else 0
            return {"frame": shown, "objects": session.frame_masks(shown)}

        return self._run(session, run)

    def start_track(self, video_id: str) -> dict[str, Any]:
        """Start tracking every object through the whole video in the background; the job's status."""
        session = self.session(video_id)
        with session.lock:
            if not session.prompts:
                raise PromptError(f"video {session.entry.name} has no prompts: click an object on a frame first")
            self._not_busy(session)
            job = TrackJob(total=self._steps(session))
            session.job = job

        def run(check: Callable[[], None]) -> None:
            job.status = "running"
            try:
                with session.lock:  # the prompts as they are now, after the work queued before this
                    if not session.prompts:
                        raise PromptError(f"video {session.entry.name} has no prompts left to track")
                    firsts = self._first_frames(session)
                    job.total = self._steps(session)
                self._fresh_state(session)
                session.propagated = True
                for frame, masks in self._propagate(session, firsts):
                    check()
                    if masks is not None:
                        session.write_labels(frame, masks)
                    job.done += 1
                with session.lock:
                    session.tracked = True
                session.save()
                job.status = "done"
            except Cancelled:
                job.status = "cancelled"
                raise
            except SeganyError as exc:
                job.status, job.error = "failed", str(exc)
                raise
            except Exception as exc:
                job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
                raise

        try:
            job.ticket = self._run(session, run)
        except ServerBusyError:
            session.job = None
            raise
        job.ticket.future.add_done_callback(lambda f: f.cancelled() and setattr(job, "status", "cancelled"))
        return job.view()

    def _steps(self, session: VideoSession) -> int:
        """A track's steps: forward from the earliest first prompt, backward from the latest one."""
        firsts = self._first_frames(session).values()
        start, latest = min(firsts), max(firsts)
        return len(session.source) - start + (latest + 1 if latest else 0)

    @staticmethod
    def _first_frames(session: VideoSession) -> dict[int, int]:
        """Each object's earliest prompted frame."""
        firsts: dict[int, int] = {}
        for p in session.prompts.values():
            firsts[p.obj_id] = min(p.frame, firsts.get(p.obj_id, p.frame))
        return firsts

    def _propagate(self, session: VideoSession, firsts: dict[int, int]) -> Iterator[tuple[int, dict[int, np.ndarray] | None]]:
        """Each tracking step's frame and the masks to write there (None: nothing new): forward from
        the earliest prompted frame to the end, then backward from the latest first prompt of an
        object to frame 0, for the objects first prompted after each frame (the others keep the
        forward pass's masks)."""
        empty = np.zeros(session.source.size, dtype=bool)
        start = min(firsts.values())
        for frame, ids, logits in self.tracker.propagate_in_video(session.state, start_frame_idx=start):
            masks = _masks_of(list(ids), logits)
            yield frame, {o: masks.get(o, empty) for o in firsts}
        latest = max(firsts.values())
        if latest == 0:
            return
        for frame, ids, logits in self.tracker.propagate_in_video(session.state, start_frame_idx=latest, reverse=True):
            late = [o for o, first in firsts.items() if first > frame]
            if not late:
                yield frame, None
                continue
            masks = _masks_of(list(ids), logits)
            labels = session.labels(frame)
            yield frame, {o: masks.get(o, empty) if o in late else labels == o for o in firsts}

    def track_status(self, video_id: str) -> dict[str, Any]:
        return self.session(video_id).track_view()

    def stop_track(self, video_id: str) -> dict[str, Any]:
        session = self.session(video_id)
        if session.busy():
            assert session.job is not None and session.job.ticket is not None
            session.job.ticket.cancel()
        return self.track_status(video_id)

    # -- accept and export ---------------------------------------------------------------------

    def accept(self, video_id: str, obj_ids: list[int] | None) -> Ticket[dict[str, Any]]:
        """Queue accepting the tracks (of ``obj_ids``, default all): every frame's masks written as
        DAVIS PNGs in ``davis/`` and one COCO video JSON; the ticket's result is the video's detail."""
        session = self.session(video_id)

        def chosen_objects() -> list[int]:  # checked when asked and again when the work starts
            with session.lock:
                known = session.obj_ids
                if not session.tracked:
                    raise PromptError(f"video {session.entry.name} has prompts that are not tracked yet: Track first")
                chosen = known if obj_ids is None else sorted(set(obj_ids))
                unknown = [o for o in chosen if o not in known]
                if unknown:
                    raise NotFoundError(f"video {session.entry.name} has no object {unknown[0]} (objects: {known})")
                if not chosen:
                    raise PromptError("give at least one object to accept")
                return chosen

        chosen_objects()
        self._not_busy(session)

        def run(check: Callable[[], None]) -> dict[str, Any]:
            chosen = chosen_objects()
            per_frame = {}
            for t in range(len(session.source)):
                check()
                labels = session.labels(t)
                masks = {o: labels == o for o in chosen}
                session.write_labels(t, masks, folder="davis")
                per_frame[t] = {o: mask_record(m) for o, m in masks.items()}
            document = coco_video(per_frame, chosen, session.file_names(), session.source.size,
                                  description=f"segany serve: {session.entry.name}")
            atomic_write_json(session.folder / COCO_VIDEO_FILE, document)
            with session.lock:
                session.accepted = chosen
            session.save()
            return self.detail(video_id)

        return self._run(session, run)

    def _accepted(self, video_id: str) -> VideoSession:
        session = self.session(video_id)
        if not (session.folder / COCO_VIDEO_FILE).is_file():
            raise NotFoundError(f"video {session.entry.name} has no accepted tracks yet: Track, then Accept")
        return session

    def export_coco(self, video_id: str) -> Path:
        return self._accepted(video_id).folder / COCO_VIDEO_FILE

    def export_davis(self, video_id: str) -> bytes:
        """The accepted DAVIS palette PNGs as a zip (``<video>/<frame>.png``)."""
        session = self._accepted(video_id)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # PNGs are compressed already
            for t in range(len(session.source)):
                path = session.mask_path("davis", t)
                if path.is_file():
                    archive.write(path, f"{Path(session.entry.name).stem}/{path.name}")
        return buffer.getvalue()


# -- routes -----------------------------------------------------------------------------------

Waiter = Callable[[Request, Ticket[Any]], Awaitable[Any]]


def video_routes(library: VideoLibrary | None, outcome: Waiter, static: Path) -> APIRouter:
    """The video page and its API; without a library (no ``--videos``) the API answers 409."""
    router = APIRouter(tags=["videos"])

    def videos() -> VideoLibrary:
        if library is None:
            raise NotConfiguredError("this server has no videos: start it with segany serve IMAGES --videos DIR")
        return library

    @router.get("/video", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(static / "video.html", media_type="text/html")

    @router.get("/api/videos", response_model=list[VideoSummary])
    def list_videos() -> list[dict[str, Any]]:
        lib = videos()
        return [lib.summary(e) for e in lib.entries.values()]

    @router.get("/api/videos/{video_id}", response_model=VideoDetail)
    def get_video(video_id: str) -> dict[str, Any]:
        return videos().detail(video_id)

    @router.get("/api/videos/{video_id}/frames/{frame}", response_class=Response,
                responses={200: {"content": {"image/*": {}}, "description": "the frame"}})
    def frame_image(video_id: str, frame: int) -> Response:
        return videos().frame_image(video_id, frame)

    @router.get("/api/videos/{video_id}/frames/{frame}/masks", response_model=FrameMasks)
    def frame_masks(video_id: str, frame: int) -> dict[str, Any]:
        return {"frame": frame, "objects": videos().session(video_id).frame_masks(frame)}

    @router.post("/api/videos/{video_id}/prompts", response_model=FrameMasks)
    async def add_prompt(request: Request, video_id: str, body: VideoPromptRequest) -> dict[str, Any]:
        return await outcome(request, videos().prompt(video_id, body))

    @router.delete("/api/videos/{video_id}/prompts", response_model=FrameMasks)
    async def clear_prompt(request: Request, video_id: str, obj_id: int, frame: int) -> dict[str, Any]:
        return await outcome(request, videos().clear(video_id, obj_id, frame))

    @router.delete("/api/videos/{video_id}/objects/{obj_id}", response_model=FrameMasks)
    async def remove_object(request: Request, video_id: str, obj_id: int) -> dict[str, Any]:
        return await outcome(request, videos().clear(video_id, obj_id))

    @router.post("/api/videos/{video_id}/track", response_model=TrackStatus, status_code=202)
    def start_track(video_id: str) -> dict[str, Any]:
        return videos().start_track(video_id)

    @router.get("/api/videos/{video_id}/track", response_model=TrackStatus)
    def track_status(video_id: str) -> dict[str, Any]:
        return videos().track_status(video_id)

    @router.delete("/api/videos/{video_id}/track", response_model=TrackStatus)
    def stop_track(video_id: str) -> dict[str, Any]:
        return videos().stop_track(video_id)

    @router.post("/api/videos/{video_id}/accept", response_model=VideoDetail)
    async def accept(request: Request, video_id: str, body: AcceptRequest | None = None) -> dict[str, Any]:
        return await outcome(request, videos().accept(video_id, (body or AcceptRequest()).obj_ids))

    @router.get("/api/videos/{video_id}/export/coco",
                responses={200: {"description": "the accepted tracks as COCO video (YouTube-VIS) JSON"}})
    def export_coco(video_id: str) -> FileResponse:
        lib = videos()
        name = Path(lib.entry(video_id).name).stem
        return FileResponse(lib.export_coco(video_id), media_type="application/json",
                            filename=f"{name}.coco-video.json")

    @router.get("/api/videos/{video_id}/export/davis", response_class=Response,
                responses={200: {"content": {"application/zip": {}}, "description": "DAVIS palette PNGs, zipped"}})
    def export_davis(video_id: str) -> Response:
        lib = videos()
        name = Path(lib.entry(video_id).name).stem
        return Response(lib.export_davis(video_id), media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{name}.davis.zip"'})

    return router
