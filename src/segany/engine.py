"""What every engine provides, and how segany finds the engine of a model.

An *engine family* is one kind of model with its predictor and its automatic mask generator:
SAM 1 / MobileSAM (:mod:`segany.predict`, :mod:`segany.amg`), the weight-free classic engine
(:mod:`segany.classic`), and later SAM 2. Clients (server, CLI, evaluation, batch jobs) hold
models and talk to them only through :func:`Predictor`, :func:`MaskGenerator` and the protocols
below; they never test for a concrete engine class.

The families are listed in :mod:`segany.families` and loaded on first use, so this module imports
no engine: every engine may import it.
"""
from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from .errors import BackendError, ConfigError, GeneratorArgumentError, SeganyError, UnsupportedOperationError

FAMILIES_MODULE = "segany.families"


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    return int(getattr(value, "nbytes", 0))


@dataclass(frozen=True)
class ImageFeatures:
    """What ``set_image`` computed for one image: all a predictor needs to answer prompts on it.

    ``maps`` are the engine's per-image arrays: SAM 1's (1, C, h, w) image embedding; SAM 2's
    embedding and high-resolution skip features; the classic engine's working copy and its
    gradient. ``original_size`` is the image's (H, W), ``input_size`` its (h, w) in the model's
    frame. Pass it to another predictor of the same model (``set_image_features``) to skip the encoder.
    """

    maps: tuple[Any, ...]
    original_size: tuple[int, int]
    input_size: tuple[int, int]

    @property
    def nbytes(self) -> int:
        """Memory the features hold (what a cache of images counts)."""
        return sum(_nbytes(m) for m in self.maps)


@runtime_checkable
class PromptPredictor(Protocol):
    """One image, many prompts: the official ``SamPredictor`` interface every engine gives.

    Coordinates are (x, y) pixels of the original image, boxes XYXY, images HWC RGB uint8.
    """

    is_image_set: bool
    original_size: tuple[int, int] | None

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None: ...

    def predict(self, point_coords: np.ndarray | None = None, point_labels: np.ndarray | None = None,
                box: np.ndarray | None = None, mask_input: np.ndarray | None = None,
                multimask_output: bool = True, return_logits: bool = False,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(C, H, W) masks (bool; SAM 2: float32 0/1, as the official predictor), (C,) predicted
        IoUs, (C, low, low) low-res logits."""

    def predict_torch(self, point_coords: torch.Tensor | None, point_labels: torch.Tensor | None,
                      boxes: torch.Tensor | None = None, mask_input: torch.Tensor | None = None,
                      multimask_output: bool = True, return_logits: bool = False,
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """B prompt sets at once, in the model's input frame (engines without it raise UnsupportedOperationError)."""

    def get_image_embedding(self) -> torch.Tensor: ...

    def reset_image(self) -> None: ...

    def image_features(self) -> ImageFeatures:
        """The current image's features (what set_image computed)."""

    def set_image_features(self, features: ImageFeatures) -> None:
        """Take another predictor's features of an image instead of computing them."""


@runtime_checkable
class AutomaticMaskGenerator(Protocol):
    """Segment everything: the official ``SamAutomaticMaskGenerator`` records for one image."""

    def generate(self, image: np.ndarray, features: ImageFeatures | None = None,
                 check: Callable[[], None] | None = None) -> list[dict[str, Any]]:
        """Records (``segmentation``, ``area``, ``bbox``, ``predicted_iou``, ``point_coords``,
        ``stability_score``, ``crop_box``). ``features``: the whole image's, already computed by a
        predictor of the same model (the encoder is not run again for it). ``check`` is called
        between units of work and may raise to stop the job (a cancelled request)."""


@runtime_checkable
class VideoTracker(Protocol):
    """Click and track: the official ``SAM2VideoPredictor`` interface every tracking engine gives.

    ``init_state`` opens a video (a folder of frames, a video file, a sequence of HxWx3 RGB uint8
    arrays: :func:`segany.data.frames.open_frames`) and returns the tracking state that every other
    call takes. Prompts are (x, y) pixels of the video frame (``normalize_coords=True``), boxes
    XYXY. Masks are returned as (O, 1, H, W) float32 logits at the video's resolution, one row per
    object of ``obj_ids`` (a mask is ``logits > 0``).
    """

    def init_state(self, video_path: Any, offload_video_to_cpu: bool = False, offload_state_to_cpu: bool = False,
                   async_loading_frames: bool = False) -> Any: ...

    def add_new_points_or_box(self, inference_state: Any, frame_idx: int, obj_id: int,
                              points: np.ndarray | None = None, labels: np.ndarray | None = None,
                              clear_old_points: bool = True, normalize_coords: bool = True,
                              box: np.ndarray | None = None) -> tuple[int, list[int], torch.Tensor]:
        """(frame_idx, obj_ids, video-res logits of every object on that frame)."""

    def add_new_mask(self, inference_state: Any, frame_idx: int, obj_id: int,
                     mask: np.ndarray | torch.Tensor) -> tuple[int, list[int], torch.Tensor]: ...

    def propagate_in_video(self, inference_state: Any, start_frame_idx: int | None = None,
                           max_frame_num_to_track: int | None = None, reverse: bool = False,
                           ) -> Iterator[tuple[int, list[int], torch.Tensor]]:
        """Yields (frame_idx, obj_ids, video-res logits) frame by frame."""

    def remove_object(self, inference_state: Any, obj_id: int, strict: bool = False,
                      need_output: bool = True) -> tuple[list[int], list[tuple[int, torch.Tensor]]]: ...

    def clear_all_prompts_in_frame(self, inference_state: Any, frame_idx: int, obj_id: int,
                                   need_output: bool = True) -> Any: ...

    def reset_state(self, inference_state: Any) -> None: ...


@dataclass(frozen=True)
class EngineFamily:
    """One kind of model with the predictor and generator that serve it.

    ``owns(obj)`` says whether a model, or a predictor, belongs to the family. ``predictor(model,
    **options)`` and ``generator(model_or_predictor, *args, **options)`` build its engines.
    ``generator_options``: the official generator arguments its generator honours (others are
    accepted only at their defaults); clients pass on only these. ``video_predictor(model,
    **options)``: its tracker, where the family has one. ``browser_decoder(model)``: its prompt
    decoder as ONNX bytes for onnxruntime-web (the annotator's in-browser hover preview), where it has one.
    """

    name: str
    owns: Callable[[Any], bool]
    predictor: Callable[..., PromptPredictor]
    generator: Callable[..., AutomaticMaskGenerator]
    generator_options: frozenset[str]
    video_predictor: Callable[..., VideoTracker] | None = None
    browser_decoder: Callable[[Any], bytes] | None = None


_families: list[EngineFamily] = []
BUILTIN = ("sam", "classic")  # the families segany.families registers


def register_family(family: EngineFamily) -> EngineFamily:
    """Add a family (later registrations are asked first, so a plug-in can claim its models)."""
    _families.insert(0, family)
    return family


def families() -> tuple[EngineFamily, ...]:
    """Every registered family; the built-in ones are loaded on first use."""
    if not any(f.name in BUILTIN for f in _families):
        importlib.import_module(FAMILIES_MODULE)
    return tuple(_families)



def family_of(model: Any, error: type[SeganyError] = ConfigError) -> EngineFamily:
    """The family of a model or predictor; ``error`` (a :class:`ConfigError`) for anything no engine serves."""
    for family in families():
        if family.owns(model):
            return family
    raise error(
        f"{type(model).__name__} is not a segany model: build one with segany.load_model(NAME) "
        f"(families: {', '.join(f.name for f in families())})"
    )


def Predictor(model: Any, **options: Any) -> PromptPredictor:  # noqa: N802 (the public name users know)
    """The predictor of ``model``'s family: ``segany.Predictor(load_model("vit_b"))`` is a
    :class:`~segany.predict.predictor.SamPredictor`; ``options`` are that predictor's (dtype, backend, ...)."""
    family = family_of(model)
    _check_options(family.predictor, options, f"the {family.name} engine's predictor")
    return family.predictor(model, **options)


def _check_options(factory: Callable[..., Any], options: Mapping[str, Any], what: str) -> None:
    """:class:`BackendError` naming the options ``factory`` does not take (and those it does)."""
    parameters = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    taken = [name for name, p in parameters.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL][1:]
    unknown = sorted(set(options) - set(taken))
    if unknown:
        raise BackendError(f"{what} takes no option {', '.join(unknown)} (it takes: {', '.join(taken) or 'none'})")


def MaskGenerator(model: Any = None, *args: Any, **options: Any) -> AutomaticMaskGenerator:  # noqa: N802
    """The automatic mask generator of ``model``'s family (a model, or a predictor whose image it
    replaces), with the official ``SamAutomaticMaskGenerator`` arguments."""
    if model is None:
        raise GeneratorArgumentError("MaskGenerator needs a model (or a predictor): MaskGenerator(model, ...)")
    return family_of(model, GeneratorArgumentError).generator(model, *args, **options)


def VideoPredictor(model: Any, **options: Any) -> VideoTracker:  # noqa: N802 (the public name users know)
    """The tracker of ``model``'s family: ``segany.VideoPredictor(load_model("sam2.1_hiera_t"))``;
    :class:`UnsupportedOperationError` for a family without one (it names those that have one)."""
    family = family_of(model)
    if family.video_predictor is None:
        trackers = [f.name for f in families() if f.video_predictor is not None]
        raise UnsupportedOperationError(
            f"the {family.name} engine does not track objects in videos; use a model of: {', '.join(trackers) or 'none'}")
    _check_options(family.video_predictor, options, f"the {family.name} engine's video predictor")
    return family.video_predictor(model, **options)


def supported_options(model: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of generator ``options`` that ``model``'s generator honours."""
    honoured = family_of(model).generator_options
    return {k: v for k, v in options.items() if k in honoured}
