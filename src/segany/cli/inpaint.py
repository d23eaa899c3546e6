"""``segany remove`` / ``fill`` / ``replace``: click an object, then make it disappear, or fill its
place from a text prompt, or keep it and regenerate the rest (Inpaint Anything's three commands).

The mask comes from ``--mask FILE`` or from the SAM engine's best mask for the clicks / box (the
classic engine on an offline machine), grown by ``--dilate`` pixels. The work is
:mod:`segany.inpaint`; ``remove`` on a video (a file or a folder of frames) tracks the object with
the video engine and inpaints every frame.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import InpaintError, PromptError
from .common import add_image_arguments, add_model_arguments, info, load_model_from_args
from .segment import parse_box, parse_point

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
DEFAULT_DILATE = 15  # Inpaint Anything's dilate_kernel_size


def register(subparsers: argparse._SubParsersAction) -> None:
    remove = subparsers.add_parser("remove", help="remove an object: click it, it is filled from its surroundings",
                                   description="Remove an object from an image or a video (Inpaint Anything).")
    _add_common(remove, DEFAULT_DILATE, media="image file, video file or folder of frames")
    remove.add_argument("--engine", choices=("classic", "lama"), default="classic",
                        help="classic: OpenCV, no weights (default); lama: big-lama, downloaded once (196 MiB)")
    from ..inpaint.classic import DEFAULT_METHOD, FAST_METHOD, method_names

    remove.add_argument("--method", choices=method_names(), default=None,
                        help=f"the classic engine's method (default {DEFAULT_METHOD} for an image: the best of "
                             f"benchmarks/inpaint.py; {FAST_METHOD} for a video: 30-120 ms a frame)")
    remove.add_argument("--lama-checkpoint", default=None, metavar="PATH", help="a big-lama.pt you downloaded yourself")
    remove.add_argument("--frame", type=int, default=0, metavar="N", help="video: the frame the prompts are on (default 0)")
    remove.add_argument("--fps", type=float, default=None, help="video: frame rate of the output (default: the input's)")
    remove.set_defaults(handler=run_remove)
    for name, what in (("fill", "fill the object's place with what the text describes"),
                       ("replace", "keep the object, regenerate everything else from the text")):
        parser = subparsers.add_parser(name, help=what + " (Stable Diffusion inpainting)", description=what + ".")
        _add_common(parser, DEFAULT_DILATE if name == "fill" else 0, media="image file")
        parser.add_argument("--text", required=True, help="what to generate, e.g. 'a red car' / 'a beach at sunset'")
        from ..inpaint.diffusion import DEFAULT_MODEL

        parser.add_argument("--sd-model", default=DEFAULT_MODEL, metavar="ID_OR_DIR",
                            help=f"diffusers inpainting model id or save_pretrained folder (default {DEFAULT_MODEL})")
        parser.add_argument("--steps", type=int, default=50, help="denoising steps (default 50)")
        parser.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
        parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        parser.add_argument("--size", type=int, default=512, metavar="PX",
                            help="generate at this long side, then resize back (default 512, the model's training size)")
        parser.set_defaults(handler=run_generate, invert=name == "replace")


def _add_common(parser: argparse.ArgumentParser, dilate: int, media: str) -> None:
    parser.add_argument("image", help=media)
    parser.add_argument("--point", action="append", type=parse_point, default=[], metavar="X,Y[,LABEL]",
                        help="click on the object (LABEL 1 = on it, 0 = not on it); repeatable")
    parser.add_argument("--box", type=parse_box, default=None, metavar="X0,Y0,X1,Y1", help="a box around the object")
    parser.add_argument("--mask", default=None, metavar="FILE", help="the object's mask (non-zero = object) instead of prompts")
    parser.add_argument("--dilate", type=int, default=dilate, metavar="PX", help=f"grow the mask by PX pixels (default {dilate})")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="output image (its suffix chooses the format; a side-by-side PNG is written beside it) "
                             "or, for a video, an .mp4")
    add_image_arguments(parser)
    add_model_arguments(parser)


def _prompts(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    import numpy as np

    if args.mask is None and not args.point and args.box is None:
        raise PromptError("give --point X,Y (repeatable), --box X0,Y0,X1,Y1 or --mask FILE for the object")
    coords = np.array([p[:2] for p in args.point], dtype=np.float64) if args.point else None
    labels = np.array([p[2] for p in args.point], dtype=np.int64) if args.point else None
    box = np.array(args.box, dtype=np.float64) if args.box is not None else None
    return coords, labels, box


def object_mask(args: argparse.Namespace, image: Any) -> Any:
    """The object's HxW bool mask: ``--mask``, else the engine's best mask for the prompts; dilated."""
    import numpy as np

    from ..data.images import load_image
    from ..engine import Predictor
    from ..inpaint import dilate_mask

    coords, labels, box = _prompts(args)
    if args.mask is not None:
        mask = load_image(args.mask, max_pixels=args.max_pixels)[..., 0] > 0
        if mask.shape != image.shape[:2]:
            raise InpaintError(f"--mask {args.mask} is {mask.shape[1]}x{mask.shape[0]}, "
                               f"the image is {image.shape[1]}x{image.shape[0]}")
    else:
        predictor = Predictor(load_model_from_args(args))
        predictor.set_image(image)
        multimask = box is None and coords is not None and len(coords) == 1  # one click is ambiguous
        masks, scores, _ = predictor.predict(coords, labels, box, multimask_output=multimask)
        mask = np.asarray(masks[int(np.argmax(scores))]).astype(bool)
    return dilate_mask(mask, args.dilate)


def _write_outputs(args: argparse.Namespace, image: Any, mask: Any, result: Any, verb: str) -> None:
    import numpy as np

    from ..data.formats.overlay import draw_overlay
    from ..data.images import save_image

    out = Path(args.output)
    save_image(out, result, like=args.image)
    side = out.with_name(f"{out.stem}_side_by_side.png")
    gap = np.full((image.shape[0], 8, 3), 255, np.uint8)
    save_image(side, np.concatenate([draw_overlay(image, [mask]), gap, result], axis=1))
    info(f"{verb} {int(mask.sum()):,} pixels: wrote {out} and {side.name}")


def run_remove(args: argparse.Namespace) -> int:
    from ..data.images import load_image

    source = Path(args.image)
    if source.is_dir() or source.suffix.lower() in VIDEO_SUFFIXES:
        return remove_from_video(args)
    image = load_image(source, max_pixels=args.max_pixels)
    mask = object_mask(args, image)
    result = _inpainter(args).inpaint(image, mask)
    _write_outputs(args, image, mask, result, "removed")
    return 0


def _inpainter(args: argparse.Namespace, video: bool = False) -> Any:
    from ..inpaint import ClassicInpainter, LamaInpainter
    from ..inpaint.classic import DEFAULT_METHOD, FAST_METHOD

    if args.engine == "lama":
        return LamaInpainter(args.lama_checkpoint, device=args.device)
    return ClassicInpainter(args.method or (FAST_METHOD if video else DEFAULT_METHOD))


def run_generate(args: argparse.Namespace) -> int:
    from ..data.images import load_image
    from ..inpaint.diffusion import DiffusionInpainter

    image = load_image(args.image, max_pixels=args.max_pixels)
    mask = object_mask(args, image)
    hole = ~mask if args.invert else mask
    engine = DiffusionInpainter(args.text, model=args.sd_model, device=args.device, steps=args.steps,
                                guidance_scale=args.guidance, seed=args.seed, size=args.size)
    result = engine.inpaint(image, hole)
    _write_outputs(args, image, hole, result, "regenerated" if args.invert else "filled")
    return 0


def remove_from_video(args: argparse.Namespace) -> int:
    """Track the object from the prompts on ``--frame`` and inpaint it on every frame, into an MP4."""
    import numpy as np
    from tqdm import tqdm

    from ..data.formats.video import DEFAULT_FPS, OverlayVideoWriter, video_fps
    from ..data.frames import open_frames
    from ..engine import VideoPredictor
    from ..inpaint import dilate_mask

    if args.mask is not None:
        raise PromptError("a video takes --point / --box prompts on --frame N, not --mask")
    coords, labels, box = _prompts(args)
    source = open_frames(args.image, max_pixels=args.max_pixels)
    if not 0 <= args.frame < len(source):
        raise PromptError(f"--frame {args.frame} is outside the video's frames 0..{len(source) - 1}")
    tracker = VideoPredictor(load_model_from_args(args, fallback_to_classic=False))
    state = tracker.init_state(source)
    tracker.add_new_points_or_box(state, args.frame, 1, coords, labels, box=box)
    inpainter = _inpainter(args, video=True)
    masks: dict[int, np.ndarray] = {}
    passes = [False] + ([True] if args.frame > 0 else [])
    with tqdm(total=len(source), unit="frame", desc="tracking", disable=None) as bar:
        for reverse in passes:
            for frame_idx, _, logits in tracker.propagate_in_video(state, start_frame_idx=args.frame, reverse=reverse):
                if frame_idx not in masks:
                    masks[frame_idx] = dilate_mask((logits[0, 0] > 0).cpu().numpy(), args.dilate)
                    bar.update()
    out = Path(args.output)
    with OverlayVideoWriter(out, fps=args.fps or video_fps(args.image) or DEFAULT_FPS) as video:
        for i in tqdm(range(len(source)), unit="frame", desc="removing", disable=None):
            frame, mask = source[i], masks[i]
            video.write(inpainter.inpaint(frame, mask) if mask.any() and not mask.all() else frame, [])
    info(f"removed the object from {len(source)} frame(s) ({sum(m.any() for m in masks.values())} with it): wrote {out}")
    return 0
