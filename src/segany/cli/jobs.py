"""What the batch subcommands (``everything``, ``embed``, ``label``) share: the executor options, and
the picklable factories that build a model's generator, predictor or text labeler once per worker."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from .common import add_image_arguments, add_model_arguments, load_model_from_args

RAY_DEFAULTS = {"address": None, "workers": 1, "cpus_per_worker": 1.0, "gpus_per_worker": 0.0, "batch_size": 1}


def add_input_output_arguments(parser: argparse.ArgumentParser) -> None:
    """The images (``PATH...``) and the output folder (``-o``) of a batch job."""
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (searched recursively) or glob patterns")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """A batch job's image, model and executor options."""
    add_image_arguments(parser)
    add_model_arguments(parser)
    add_executor_arguments(parser)


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """``--executor local|ray`` and the Ray pool's options."""
    group = parser.add_argument_group("executor")
    group.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="local: this process, one image after another (default); ray: an actor pool on Ray "
                            "(pip install 'segany[ray]')")
    group.add_argument("--address", default=RAY_DEFAULTS["address"], metavar="ADDR",
                       help="ray: a running cluster (auto, ray://HOST:10001); default: start Ray on this machine")
    group.add_argument("--workers", type=int, default=RAY_DEFAULTS["workers"], metavar="N", help="ray: actors, each loading the model once (default 1)")
    group.add_argument("--cpus-per-worker", type=float, default=RAY_DEFAULTS["cpus_per_worker"], metavar="C", help="ray: CPUs per actor (default 1)")
    group.add_argument("--gpus-per-worker", type=float, default=RAY_DEFAULTS["gpus_per_worker"], metavar="G", help="ray: GPUs per actor (default 0)")
    group.add_argument("--batch-size", type=int, default=RAY_DEFAULTS["batch_size"], metavar="B", help="ray: images per actor call (default 1)")


def executor_from_args(args: argparse.Namespace) -> Any:
    """None (the local executor) or the :class:`~segany.batch.ray_executor.RayExecutor` the options name."""
    from ..errors import BackendError

    ray_options = tuple(RAY_DEFAULTS)
    if args.executor == "local":
        given = [f"--{name.replace('_', '-')}" for name in ray_options if getattr(args, name) != RAY_DEFAULTS[name]]
        if given:
            raise BackendError(f"{', '.join(given)} only apply with --executor ray")
        return None
    from ..batch.ray_executor import RayExecutor

    return RayExecutor(**{name: getattr(args, name) for name in ray_options})


@dataclass
class ModelFactory:
    """The model of ``--model/--checkpoint/--device``, loaded where it is called (once per worker).

    ``loaded`` is the model the driver already holds (it is reused in this process and never pickled:
    a Ray actor loads its own copy from the files, on ``device``).
    """

    model: str
    checkpoint: str | None
    device: str
    loaded: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_args(cls, args: argparse.Namespace, driver_device: str | None = None) -> ModelFactory:
        """Load the model on the driver (for the job's settings) on ``driver_device`` (default
        ``--device``; a Ray job's driver loads it on the CPU: the GPUs are the workers'); where the
        default model's weights are missing and the classic engine stood in, the workers load the
        classic engine too."""
        from ..engine import family_of

        device = args.device if driver_device is None else driver_device
        model = load_model_from_args(argparse.Namespace(**{**vars(args), "device": device}))
        if family_of(model).name == "classic" and args.model != "classic":
            return cls("classic", None, "cpu", model)
        return cls(args.model, args.checkpoint, args.device, model)

    def load(self) -> Any:
        """The model: the driver's own, else loaded from the files."""
        if self.loaded is None:
            from ..build import load_model

            self.loaded = load_model(self.model, checkpoint=self.checkpoint, device=self.device, progress=False)
        return self.loaded

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "loaded": None}


@dataclass
class GeneratorFactory:
    """A model's automatic mask generator with ``options``, built where it is called."""

    model: ModelFactory
    options: dict[str, Any]

    def __call__(self) -> Any:
        from ..engine import MaskGenerator

        return MaskGenerator(self.model.load(), **self.options)


@dataclass
class PredictorFactory:
    """A model's predictor, built where it is called."""

    model: ModelFactory

    def __call__(self) -> Any:
        from ..engine import Predictor

        return Predictor(self.model.load())


@dataclass
class TextLabelerFactory:
    """A :class:`~segany.text.TextLabeler` of the text route ``settings`` (its detector or CLIP, on
    ``device``) for ``classes``, or for each image's caption by the BLIP model ``captioner``, built
    where it is called and kept there (a Ray actor builds its own: ``built`` is never pickled)."""

    model: ModelFactory
    settings: dict[str, Any]
    classes: list[str] | None
    captioner: str | None
    device: str
    built: Any = field(default=None, repr=False, compare=False)

    def __call__(self) -> Any:
        if self.built is None:
            from ..text.caption import BlipCaptioner
            from ..text.labeler import TextLabeler
            from ..text.routes import build_route

            captioner = BlipCaptioner(self.captioner, device=self.device) if self.captioner is not None else None
            self.built = TextLabeler(build_route(self.model.load(), self.settings, device=self.device), self.classes,
                                     captioner)
        return self.built

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "built": None}
