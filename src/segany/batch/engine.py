"""Labelling many images with a mask generator: resumable, one atomic SA-1B document per image.

Per image, an SA-1B style JSON is written atomically once the image is finished; it is the record
that the image is done. It carries, under ``"segany"``, the job's settings (model and its
configuration, the checkpoint's sha256, the generator arguments that change results), so a re-run
skips an image only when its result was made with the same settings; results made with other
settings stop the job before any work unless ``overwrite`` redoes them (mixing settings in one
folder would make one COCO file out of incomparable results). A failure of one image (unreadable,
too large, out of memory, a broken score, anything but Ctrl-C) is reported in one line, counted,
and the job goes on; a failure to write the output (full disk, no permission) stops the job,
leaving earlier results and no temporary files behind. The images still to do run as a
:class:`LabelJob` on an executor (:mod:`segany.batch.executors`: this process, or a Ray actor pool).
"""
from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..data.formats.coco import CocoImageIndex, coco_instances
from ..data.images import DEFAULT_MAX_PIXELS
from ..errors import AnnotationError, ImageError, SettingsMismatchError
from ..fileio import atomic_write_json, atomic_write_text, ensure_directory, json_text
from ..version import __version__
from .discover import ImageItem, result_path, unique_images
from .executors import Executor, ImageJob, LocalExecutor, Outcome, Sized, Task, clear_attempts

COCO_FILE = "annotations.json"


class Generator(Protocol):
    def generate(self, image: Any) -> list[dict[str, Any]]: ...


@dataclass
class Summary:
    """What a batch job did: images done now, skipped (done before) and failed; how many were retried."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    retried: int = 0  # of those done or failed, started more than once (a worker died on them)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (image name, one-line reason)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def job_settings(model: Any, checkpoint_sha256: str | None, generator_args: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a result records and a re-run compares: the model's name and configuration, the
    checkpoint file's sha256 (None: no weights), the generator arguments that change results.

    The segany version is recorded beside them (:func:`label_images`) but not compared: results
    are the official ones whatever the version.
    """
    config = getattr(model, "config", None)
    settings = {
        "model": getattr(config, "name", type(model).__name__),
        "model_config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else None,
        "checkpoint_sha256": checkpoint_sha256,
        "generator": dict(generator_args),
    }
    return json.loads(json_text(settings))  # as a result's JSON reads back (tuples become lists)


def _read_result(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) and isinstance(document.get("image"), dict) else None


def _recorded_settings(document: dict[str, Any] | None) -> Any:
    block = document.get("segany") if document else None
    return block.get("settings") if isinstance(block, dict) else None


def settings_difference(recorded: Any, settings: dict[str, Any]) -> str:
    """The first setting that differs, for the refusal message."""
    if not isinstance(recorded, dict):
        return "no settings recorded"
    for key, value in settings.items():
        if isinstance(value, dict) and isinstance(recorded.get(key), dict):
            for sub, sub_value in value.items():
                if recorded[key].get(sub) != sub_value:
                    return f"{sub} {recorded[key].get(sub)!r}, now {sub_value!r}"
        elif recorded.get(key) != value:
            return f"{key} {recorded.get(key)!r}, now {value!r}"
    return "other settings"


def _reference_entries(images: list[ImageItem], reference: CocoImageIndex) -> dict[ImageItem, dict[str, Any]]:
    entries = {item: reference.find(item.name) for item in images}
    missing = [item.name for item, entry in entries.items() if entry is None]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise AnnotationError(f"{len(missing)} image(s) are not in {reference.source} (matched by file name): {shown}")
    return entries  # type: ignore[return-value]


class GeneratorFactory(Protocol):
    def __call__(self) -> Generator: ...


@dataclass(frozen=True)
class _Given:
    """A generator already built, as a factory (for the local executor; Ray pickles it whole)."""

    generator: Generator

    def __call__(self) -> Generator:
        return self.generator


@dataclass(frozen=True)
class LabelJob:
    """Segment everything, one image at a time: the :class:`~segany.batch.executors.ImageJob` of
    :func:`label_images`. ``factory`` (picklable) builds the generator once per worker."""

    factory: GeneratorFactory
    out: Path
    extra: dict[str, Any]
    overlay: bool = False
    mask_pngs: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def setup(self) -> Generator:
        """The worker's generator (its model loaded here)."""
        return self.factory()

    def run(self, generator: Generator, task: Task) -> None:
        """Label one image; its SA-1B document is written atomically, last."""
        _label_one(task.item, generator, self.out, task.image_id, task.entry, self.extra, self.overlay,
                   self.mask_pngs, self.max_pixels)


def run_job(job: ImageJob, tasks: list[Task], out: Path, summary: Summary, executor: Executor | None,
            report: Callable[[str], None], progress: Callable[[Iterable[Outcome]], Iterator[Outcome]]) -> Summary:
    """Run ``tasks`` on ``executor`` (default :class:`LocalExecutor`), counting outcomes into ``summary``.

    Attempt markers of these tasks left by an earlier, interrupted run are cleared first and once the
    job ends. Re-raises ``KeyboardInterrupt`` after reporting how far it got.
    """
    executor = LocalExecutor() if executor is None else executor
    clear_attempts(out, tasks)
    try:
        for outcome in progress(Sized(executor.run(job, tasks, out), len(tasks))):
            summary.retried += outcome.attempts > 1
            if outcome.ok:
                summary.done += 1
            else:
                report(f"failed: {outcome.name}: {outcome.reason}")
                summary.failures.append((outcome.name, outcome.reason))
                summary.failed += 1
    except KeyboardInterrupt:
        report(f"stopped after {summary.done} image(s); results so far are kept: run the same job again to finish the rest")
        raise
    finally:
        clear_attempts(out, tasks)
    return summary


def label_images(
    images: list[ImageItem],
    generator: Generator | GeneratorFactory,
    out: str | Path,
    settings: dict[str, Any],
    *,
    overwrite: bool = False,
    overlay: bool = False,
    mask_pngs: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    reference: CocoImageIndex | None = None,
    report: Callable[[str], None] = _stderr,
    progress: Callable[[Iterable[Outcome]], Iterator[Outcome]] = iter,
    executor: Executor | None = None,
) -> Summary:
    """Label ``images`` with ``generator`` (``output_mode="coco_rle"``) into the folder ``out``.

    ``generator`` is a generator, or a picklable factory that builds one (called once per worker:
    what :class:`~segany.batch.ray_executor.RayExecutor` needs to load the model on each actor).
    ``settings`` (from :func:`job_settings`) are recorded in every result and decide which results
    count as done; those are skipped before anything is scheduled. ``overlay`` / ``mask_pngs`` also
    write ``<image>_overlay.png`` / ``<image>_masks/NNNN.png``. With ``reference`` (a COCO file's
    images), image ids come from it by file name and every image must be in it; else each image's
    id is a stable hash of its relative name (:attr:`ImageItem.image_id`). ``report`` gets one line
    per failed image; ``progress`` wraps the outcomes of the images still to do (a sized iterable,
    e.g. for ``tqdm``); ``executor`` runs them (default: this process, one after another).

    Raises :class:`SettingsMismatchError` (before any work) for results made with other settings
    unless ``overwrite``, :class:`OutputError` when the output cannot be written; re-raises
    ``KeyboardInterrupt`` after reporting how far it got.
    """
    out = ensure_directory(out)
    images = unique_images(images, out)
    entries = _reference_entries(images, reference) if reference is not None else {}
    image_ids = {item: entries[item]["id"] if entries else item.image_id for item in images}
    summary = Summary()
    todo, stale = [], []
    for item in images:
        path = result_path(out, item.relative)
        if not path.exists() or overwrite:
            todo.append(Task(item, image_ids[item], entries.get(item)))
            continue
        document = _read_result(path)
        if _recorded_settings(document) != settings:
            stale.append((item, settings_difference(_recorded_settings(document), settings)))
            continue
        summary.skipped += 1
        if document["image"].get("image_id") != image_ids[item]:  # the same masks, ids from another source
            document["image"]["image_id"] = image_ids[item]
            atomic_write_json(path, document)
    if stale:
        item, why = stale[0]
        raise SettingsMismatchError(
            f"{len(stale)} result(s) in {out} were made with other settings (e.g. {item.name}: {why}): "
            f"--overwrite (overwrite=True) redoes every image, or write to another folder"
        )
    factory = _Given(generator) if hasattr(generator, "generate") else generator
    job = LabelJob(factory, out, {"version": __version__, "settings": settings}, overlay, mask_pngs, max_pixels)
    return run_job(job, todo, out, summary, executor, report, progress)


def _label_one(
    item: ImageItem,
    generator: Generator,
    out: Path,
    image_id: int,
    entry: dict[str, Any] | None,
    extra: dict[str, Any],
    overlay: bool,
    mask_pngs: bool,
    max_pixels: int | None,
) -> None:
    from ..data.formats.overlay import draw_overlay
    from ..data.formats.png import save_png
    from ..data.formats.sa1b import sa1b_document
    from ..masks import decode_rle

    image = item.load(max_pixels)
    height, width = image.shape[:2]
    if entry is not None and (entry["height"], entry["width"]) != (height, width):
        raise ImageError(f"image {item.path} is {width}x{height}, its COCO entry says {entry['width']}x{entry['height']}")
    records = generator.generate(image)
    document = sa1b_document(records, item.name, height, width, image_id=image_id,
                             extra={**extra, "source": str(item.path)})
    text = json_text(document)  # a broken score fails here, before any file is written
    stem = out / item.relative.parent / item.relative.name
    if mask_pngs or overlay:
        masks = [decode_rle(r["segmentation"]) for r in records]
        if mask_pngs:
            for number, mask in enumerate(masks, start=1):
                save_png(Path(f"{stem}_masks") / f"{number:04d}.png", mask)
        if overlay:
            save_png(Path(f"{stem}_overlay.png"), draw_overlay(image, sorted(masks, key=lambda m: -int(m.sum()))))
    atomic_write_text(result_path(out, item.relative), text)  # last: marks the image done


def write_coco(
    images: list[ImageItem],
    out: str | Path,
    settings: dict[str, Any],
    reference: CocoImageIndex | None = None,
    name: str = COCO_FILE,
    categories: list[str] | None = None,
) -> dict[str, Any]:
    """One COCO instances file ``out/name`` from the finished results (made with ``settings``) of
    ``images``; returns what it wrote. ``categories``: the class names of masks that carry one
    (text-prompted labelling), in category-id order (:func:`~segany.data.formats.coco.coco_instances`)."""
    out = Path(out)
    documents = []
    for item in unique_images(images, out):
        document = _read_result(result_path(out, item.relative))
        if _recorded_settings(document) == settings:
            documents.append(document)
    coco = coco_instances(documents, reference=reference, categories=categories)
    atomic_write_json(out / name, coco)
    return coco
