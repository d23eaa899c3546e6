"""``segany track``: prompt objects on any frame of a video, track them through it, and write each
frame's masks as soon as the frame is done.

Prompt grammar: every ``--point`` / ``--box`` / ``--mask`` belongs to the current object and
frame. ``--obj ID`` makes ID the current object (and frame 0 the current frame), ``--frame N``
moves the prompts that follow to frame N; prompts before any ``--obj`` are object 1's. An object's
points on one frame are one click set, given with its box on that frame if it has one; ``--mask``
prompts an object on a frame with a mask instead (not together with points or a box there).

Order of work: forward from the earliest prompted frame to the last frame, then backward from it
to frame 0, so every frame gets masks; ``--reverse``: backward from the latest prompted frame
first, then forward from it. ``--max-frames N`` is the official ``max_frame_num_to_track``: each
direction tracks N frames beyond its start. An object first prompted on a later frame gets, on the
frames before, what the tracker makes of its later prompt (SAM 2 attends to every prompted frame).

Resume: ``OUT/track.json`` records the settings (model, weights, video, prompts, order of work,
format) before any frame is written; each frame's files are written atomically when the frame is
done and are the record that it is. A re-run with the same settings skips done frames: the
tracker starts again from the prompts plus, as a mask prompt (``add_new_mask``), the masks of the
last done frame of the direction it stopped in, and continues from that frame. Its results can
differ from an uninterrupted run's, since the tracker's memory of the frames before that one is
gone. A re-run with other settings is refused (:class:`SettingsMismatchError`) unless ``--overwrite``.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PromptError, SettingsMismatchError
from .common import add_image_arguments, add_model_arguments, checkpoint_sha256, info, load_model_from_args, number_type

RECORD_FILE = "track.json"
FORMATS = ("davis", "png", "coco", "mp4")


class _InOrder(argparse.Action):
    """Keeps ``--obj/--frame/--point/--box/--mask`` in command-line order, in ``args.prompt_events``."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        events = getattr(namespace, "prompt_events", None) or []
        events.append((self.dest, values))
        namespace.prompt_events = events


def register(subparsers: argparse._SubParsersAction) -> None:
    from .segment import parse_box, parse_point

    parser = subparsers.add_parser(
        "track", help="click objects on any frame of a video and track them through it",
        description="Track objects through a video (a file or a folder of frames) from points, boxes or masks "
                    "on any frame; each frame's masks are written as soon as it is done, and a re-run continues "
                    "an interrupted one.",
        epilog="Prompts belong to the current object and frame: --obj ID starts object ID (on frame 0), --frame N "
               "moves the following prompts to frame N; before any --obj they are object 1's. Example: "
               "--point 100,80 --obj 2 --frame 10 --box 5,5,60,40 --point 30,20,0. Tracking runs forward from "
               "the earliest prompted frame, then backward from it to frame 0 (--reverse: backward from the latest "
               "prompted frame first). A re-run with the same settings skips finished frames and continues from "
               "the last one's masks (results may then differ slightly from an uninterrupted run).",
    )
    parser.add_argument("video", metavar="VIDEO|FRAMES_DIR", help="a video file (PyAV) or a folder of frames (00000.jpg...)")
    prompt = {"action": _InOrder, "default": argparse.SUPPRESS}
    parser.add_argument("--obj", type=number_type(int, 1), metavar="ID", help="start prompting object ID (1, 2, ...)", **prompt)
    parser.add_argument("--frame", type=number_type(int, 0), metavar="N", help="the following prompts are on frame N (default 0)", **prompt)
    parser.add_argument("--point", type=parse_point, metavar="X,Y[,LABEL]",
                        help="click in pixels; LABEL 1 = foreground (default), 0 = background; repeatable", **prompt)
    parser.add_argument("--box", type=parse_box, metavar="X0,Y0,X1,Y1", help="box in pixels (one per object and frame)", **prompt)
    parser.add_argument("--mask", metavar="PNG", help="mask image of the frame's size (non-zero = object)", **prompt)
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    parser.add_argument("--format", choices=FORMATS, default="davis",
                        help="davis: <frame>.png DAVIS palette PNGs, object ids as indices (default); png: "
                             "<obj>/<frame>.png binary masks; coco: annotations.json, COCO video (YouTube-VIS) JSON "
                             "with RLE; mp4: <video>.mp4 overlay video (coco/mp4 keep per-frame parts in frames/)")
    parser.add_argument("--reverse", action="store_true", help="track backward first, from the latest prompted frame")
    parser.add_argument("--max-frames", type=number_type(int, 0), default=None, metavar="N",
                        help="track N frames beyond the start in each direction (default: to both ends)")
    parser.add_argument("--fps", type=float, default=None, help="mp4 frame rate (default: the video's, else 24)")
    parser.add_argument("--overwrite", action="store_true",
                        help="track every frame again, also when OUT holds results made with other settings")
    add_image_arguments(parser)
    add_model_arguments(parser, default="classic")
    parser.set_defaults(handler=run, prompt_events=None)


@dataclass
class ObjectPrompt:
    """One object's prompt on one frame: clicks (and/or a box), or a mask file."""

    obj_id: int
    frame: int
    points: list[tuple[float, float, int]] = field(default_factory=list)
    box: list[float] | None = None
    mask: str | None = None


def collect_prompts(events: list[tuple[str, Any]] | None) -> list[ObjectPrompt]:
    """The prompts of the command line's ``--obj/--frame/--point/--box/--mask`` sequence (see the module doc)."""
    prompts: dict[tuple[int, int], ObjectPrompt] = {}
    obj_id, frame, started = 1, 0, {}
    for kind, value in events or []:
        if kind == "obj":
            obj_id, frame = value, 0
            started.setdefault(obj_id, False)
            continue
        if kind == "frame":
            frame = value
            continue
        prompt = prompts.setdefault((obj_id, frame), ObjectPrompt(obj_id, frame))
        started[obj_id] = True
        if kind == "point":
            prompt.points.append(value)
        elif (prompt.box if kind == "box" else prompt.mask) is not None:
            raise PromptError(f"object {obj_id} has two --{kind} prompts on frame {frame}: give one")
        elif kind == "box":
            prompt.box = value
        else:
            prompt.mask = value
        if prompt.mask is not None and (prompt.points or prompt.box is not None):
            raise PromptError(f"object {obj_id} on frame {frame}: give either --mask or --point/--box, not both")
    empty = [o for o, has in started.items() if not has]
    if empty:
        raise PromptError(f"object {empty[0]} has no prompt: give --point/--box/--mask after --obj {empty[0]}")
    if not prompts:
        raise PromptError("give at least one --point X,Y[,LABEL], --box X0,Y0,X1,Y1 or --mask PNG (see segany track --help)")
    return sorted(prompts.values(), key=lambda p: (p.frame, p.obj_id))


@dataclass(frozen=True)
class Pass:
    """One direction of tracking: ``start`` to ``end`` (both included)."""

    start: int
    end: int
    reverse: bool

    def frames(self) -> list[int]:
        step = -1 if self.reverse else 1
        return list(range(self.start, self.end + step, step))


def plan_passes(prompted: set[int], num_frames: int, reverse: bool = False, max_frames: int | None = None) -> list[Pass]:
    """The directions to track, in order (see the module doc); a direction with nothing beyond its
    start is dropped unless it is the only one."""
    reach = num_frames if max_frames is None else max_frames
    anchor = max(prompted) if reverse else min(prompted)
    forward = Pass(anchor, min(anchor + reach, num_frames - 1), False)
    backward = Pass(anchor, max(anchor - reach, 0), True)
    ordered = [backward, forward] if reverse else [forward, backward]
    return [p for p in ordered if p.end != p.start] or ordered[:1]


def _checked(prompts: list[ObjectPrompt], source: Any) -> list[dict[str, Any]]:
    """Each prompt checked against the video (frame in range, points / box inside, mask of the
    frame's size) as the tracker's arguments; :class:`VideoError` / :class:`PromptError` naming it."""
    import numpy as np

    from ..data.images import load_image
    from ..prompts import check_box, check_points

    checked = []
    for p in prompts:
        frame = source.index(p.frame)
        where = f"object {p.obj_id} on frame {frame}"
        try:
            if p.mask is not None:
                mask = load_image(p.mask).any(axis=2)  # a palette PNG's index 0 is black: background
                if mask.shape != source.size:
                    raise PromptError(f"--mask {p.mask} is {mask.shape[1]}x{mask.shape[0]}, "
                                      f"the video is {source.width}x{source.height}")
                if not mask.any():
                    raise PromptError(f"--mask {p.mask} is empty")
                checked.append({"obj_id": p.obj_id, "frame": frame, "mask": mask})
                continue
            points = check_points(np.array([q[:2] for q in p.points], dtype=np.float32).reshape(-1, 2),
                                  np.array([q[2] for q in p.points], dtype=np.int32), source.size) if p.points else None
            box = check_box(np.array(p.box, dtype=np.float32), source.size) if p.box is not None else None
        except PromptError as exc:
            raise PromptError(f"{where}: {exc}") from None
        checked.append({"obj_id": p.obj_id, "frame": frame, "points": points, "box": box})
    return checked


def _settings(args: argparse.Namespace, model: Any, source: Any, prompts: list[ObjectPrompt],
              passes: list[Pass]) -> dict[str, Any]:
    """What the run record holds and a re-run compares."""
    from ..batch.engine import job_settings
    from ..fileio import json_text
    from ..weights import sha256_of

    settings = job_settings(model, checkpoint_sha256(args), {})
    settings.pop("generator")
    settings["video"] = {"path": str(Path(args.video).resolve()), "frames": len(source), "size": list(source.size)}
    settings["prompts"] = [{"obj_id": p.obj_id, "frame": p.frame, "points": [list(q) for q in p.points], "box": p.box,
                            "mask_sha256": sha256_of(Path(p.mask)) if p.mask is not None else None} for p in prompts]
    settings["tracking"] = {"passes": [[p.start, p.end, p.reverse] for p in passes], "format": args.format}
    return json.loads(json_text(settings))


def _recorded(out: Path) -> Any:
    try:
        record = json.loads((out / RECORD_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    block = record.get("segany") if isinstance(record, dict) else None
    return block.get("settings") if isinstance(block, dict) else None


def _mp4_decorations(checked: list[dict[str, Any]]) -> Callable[[int], dict[str, Any]]:
    """The clicks to draw on each frame of the overlay video (those given on that frame)."""
    import numpy as np

    clicks: dict[int, list[dict[str, Any]]] = {}
    for c in checked:
        if c.get("points") is not None:
            clicks.setdefault(c["frame"], []).append(c)

    def decorations(frame_idx: int) -> dict[str, Any]:
        on_frame = clicks.get(frame_idx)
        if not on_frame:
            return {}
        return {"points": np.concatenate([c["points"][0] for c in on_frame]),
                "labels": np.concatenate([c["points"][1] for c in on_frame])}
    return decorations


def _writer(args: argparse.Namespace, out: Path, source: Any, obj_ids: list[int], checked: list[dict[str, Any]]) -> Any:
    from ..data.formats.video import DEFAULT_FPS, WRITERS, frame_names, video_fps
    from ..data.frames import FolderFrames

    names = frame_names(source)
    options: dict[str, Any] = {}
    if args.format == "coco":
        options["file_names"] = [p.name for p in source.files] if isinstance(source, FolderFrames) else names
    elif args.format == "mp4":
        options.update(name=f"{Path(args.video).stem or 'track'}.mp4", decorations=_mp4_decorations(checked),
                       fps=args.fps or video_fps(args.video) or DEFAULT_FPS)
    return WRITERS[args.format](out, names, obj_ids, source.size, **options)


def _check_record(out: Path, settings: dict[str, Any], writer: Any, planned: list[int]) -> None:
    """:class:`SettingsMismatchError` when ``out`` holds results of a run with other settings."""
    from ..batch.engine import settings_difference

    recorded = _recorded(out)
    if recorded == settings or (recorded is None and not any(writer.done(i) for i in planned)):
        return
    raise SettingsMismatchError(
        f"{out} holds results of a track run with other settings ({settings_difference(recorded, settings)}): "
        f"--overwrite tracks every frame again, or write to another folder")


def _masks_of(obj_ids: list[int], ids: list[int], logits: Any, size: tuple[int, int]) -> dict[int, Any]:
    """Each object's HxW bool mask from the tracker's (O, 1, H, W) logits (an object it left out: empty)."""
    import numpy as np

    masks = (logits[:, 0] > 0).cpu().numpy()
    by_id = {int(o): masks[k] for k, o in enumerate(ids)}
    return {o: by_id[o] if o in by_id else np.zeros(size, dtype=bool) for o in obj_ids}


def track_frames(tracker: Any, state: Any, checked: list[dict[str, Any]], passes: list[Pass], finished: set[int],
                 writer: Any, size: tuple[int, int]) -> Iterator[int]:
    """Prompt ``tracker`` and run ``passes``, writing each frame not in ``finished`` as soon as it is
    tracked (and adding it there); yields each frame written. A pass that stopped part-way before
    continues from its last finished frame, whose masks become mask prompts (the resume rule)."""
    for c in checked:
        if "mask" in c:
            tracker.add_new_mask(state, c["frame"], c["obj_id"], c["mask"])
        else:
            points, labels = c["points"] if c["points"] is not None else (None, None)
            tracker.add_new_points_or_box(state, c["frame"], c["obj_id"], points, labels, box=c["box"])
    planned = {i for p in passes for i in p.frames()}
    covered: set[int] = set()
    for track in passes:
        new = [i for i in track.frames() if i not in covered]
        covered.update(new)
        first = next((j for j, i in enumerate(new) if i not in finished), None)
        if first is None:
            continue
        start = track.start
        if first > 0:
            start = new[first - 1]
            for obj_id, mask in writer.read(start).items():
                if mask.any():
                    tracker.add_new_mask(state, start, obj_id, mask)
        for frame_idx, ids, logits in tracker.propagate_in_video(
                state, start_frame_idx=start, max_frame_num_to_track=abs(track.end - start), reverse=track.reverse):
            if frame_idx in finished or frame_idx not in planned:
                continue
            writer.write(frame_idx, _masks_of(writer.obj_ids, list(ids), logits, size))
            finished.add(frame_idx)
            yield frame_idx


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..data.frames import open_frames
    from ..engine import VideoPredictor
    from ..fileio import atomic_write_json, ensure_directory
    from ..version import __version__

    prompts = collect_prompts(args.prompt_events)
    source = open_frames(args.video, max_pixels=args.max_pixels)
    checked = _checked(prompts, source)
    obj_ids = sorted({p.obj_id for p in prompts})
    if args.format == "davis" and obj_ids[-1] > 255:
        raise PromptError(f"object id {obj_ids[-1]} does not fit a DAVIS palette PNG (ids 1..255): use --format png or coco")
    passes = plan_passes({p.frame for p in prompts}, len(source), args.reverse, args.max_frames)
    out = ensure_directory(args.output)
    model = load_model_from_args(args, fallback_to_classic=False)
    tracker = VideoPredictor(model)
    writer = _writer(args, out, source, obj_ids, checked)
    planned = sorted({i for p in passes for i in p.frames()})
    settings = _settings(args, model, source, prompts, passes)
    if not args.overwrite:
        _check_record(out, settings, writer, planned)
    finished = set() if args.overwrite else {i for i in planned if writer.done(i)}
    atomic_write_json(out / RECORD_FILE, {"segany": {"version": __version__, "settings": settings}}, indent=1)
    todo = len(planned) - len(finished)
    if finished and todo:
        info(f"segany track: {len(finished)} frame(s) already done in {out}; continuing from the last one's masks")
    written = 0
    try:
        if todo:
            with tqdm(total=todo, unit="frame", desc="track", disable=None) as bar:
                state = tracker.init_state(str(args.video))
                for _ in track_frames(tracker, state, checked, passes, finished, writer, source.size):
                    written += 1
                    bar.update()
    except KeyboardInterrupt:
        info(f"segany track: stopped after {written} new frame(s); every written frame is complete: "
             f"run the same command again to continue")
        raise
    files = writer.finish(planned, source)
    info(f"segany track: {len(obj_ids)} object(s), {len(finished)} of {len(source)} frame(s) done "
         f"({written} now); results in {out}/" + (f" ({', '.join(f.name for f in files)})" if files else ""))
    return 0
