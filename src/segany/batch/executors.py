"""How a batch job's images get done: the job of per-image work, and the executors that run it.

A job (:class:`ImageJob`) is picklable and knows nothing of where it runs: ``setup()`` builds the
worker's state once (the model and its generator or predictor; a factory loads the model there),
``run(state, task)`` does one image and writes its finished document atomically (the record that
it is done). The driver (:func:`segany.batch.label_images`, :func:`segany.batch.embed_images`)
finds the images, skips those done before, hands the rest as :class:`Task` s to an executor and
turns the :class:`Outcome` s it yields into one progress bar and the summary.

Executors: :class:`LocalExecutor` (this process, one image after another: the default) and
:class:`~segany.batch.ray_executor.RayExecutor` (an actor pool on a Ray cluster). Either way one
image's failure (unreadable, too large, out of memory...) is an outcome, not the end of the job; a
failure to write the output (:class:`OutputError`) stops the job.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import OutputError
from .discover import ImageItem

ATTEMPTS_FOLDER = ".segany-attempts"


@dataclass(frozen=True)
class Task:
    """One image to do: the image, its id, and its COCO ``--coco-images`` entry (or None)."""

    item: ImageItem
    image_id: int
    entry: dict[str, Any] | None = None

    def to_row(self) -> dict[str, Any]:
        """A flat row of plain values (what a Ray dataset holds)."""
        return {"path": str(self.item.path), "relative": self.item.name, "image_id": self.image_id,
                "entry": json.dumps(self.entry) if self.entry is not None else ""}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Task:
        """The task of a :meth:`to_row` row."""
        entry = str(row["entry"])
        return cls(ImageItem(str(row["path"]), Path(str(row["relative"]))), int(row["image_id"]),
                   json.loads(entry) if entry else None)


@dataclass(frozen=True)
class Outcome:
    """What became of one image: done (``ok``) or failed with a one-line ``reason``; ``attempts``
    counts how often it was started (more than 1: a worker died and the image was retried);
    ``fatal``: its output could not be written (:class:`OutputError`), which stops the job."""

    name: str
    ok: bool
    reason: str = ""
    attempts: int = 1
    fatal: bool = False


class ImageJob(Protocol):
    """Per-image work, picklable (it travels to Ray workers)."""

    def setup(self) -> Any:
        """The worker's state, built once per worker (e.g. a model and its generator)."""

    def run(self, state: Any, task: Task) -> None:
        """Do one image with ``state``; write its result atomically (idempotent: same bytes on a re-run)."""


class Executor(Protocol):
    """Runs a job's tasks somewhere and yields one :class:`Outcome` per task, as they finish."""

    def run(self, job: ImageJob, tasks: list[Task], out: Path) -> Iterator[Outcome]: ...


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line: a failed image's reason."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def attempt(job: ImageJob, state: Any, task: Task, attempts: int = 1) -> Outcome:
    """Run one task; any failure but :class:`OutputError` (and Ctrl-C) becomes a failed outcome."""
    try:
        job.run(state, task)
    except OutputError:
        raise
    except Exception as exc:  # noqa: BLE001 - one image's failure never stops the job
        return Outcome(task.item.name, False, one_line(exc), attempts)
    return Outcome(task.item.name, True, "", attempts)


def claim_attempt(out: Path, task: Task) -> int:
    """Record one more start of ``task`` under ``out/.segany-attempts/`` and return its number (1 the
    first time). Each start creates the next numbered marker file exclusively, so workers that die
    and restart count every start, on any machine that shares ``out``."""
    folder = out / ATTEMPTS_FOLDER
    folder.mkdir(exist_ok=True)
    number = 1
    while True:
        try:
            os.close(os.open(folder / f"{task.image_id}.{number}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            number += 1
        else:
            return number


def clear_attempts(out: Path, tasks: Iterable[Task]) -> None:
    """Remove the attempt markers of ``tasks`` (and the folder once empty)."""
    folder = out / ATTEMPTS_FOLDER
    if not folder.is_dir():
        return
    ids = {str(task.image_id) for task in tasks}
    for marker in folder.iterdir():
        if marker.name.split(".")[0] in ids:
            marker.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # markers of another job's images remain


class LocalExecutor:
    """This process, one image after another (the state is built once, on the first image)."""

    def run(self, job: ImageJob, tasks: list[Task], out: Path) -> Iterator[Outcome]:
        """Yields each task's outcome as it finishes."""
        if not tasks:
            return
        state = job.setup()
        for task in tasks:
            yield attempt(job, state, task)


class Sized:
    """An iterator with a length (so ``tqdm`` shows a total and an ETA)."""

    def __init__(self, iterator: Iterable[Any], length: int) -> None:
        self.iterator, self.length = iterator, length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[Any]:
        return iter(self.iterator)
