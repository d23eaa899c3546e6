"""The Ray Data executor: a batch job's images over an actor pool on a Ray cluster.

The driver's tasks become a ``ray.data`` dataset of rows (image path, name, id, COCO entry);
``map_batches`` runs :class:`JobWorker`, a stateful callable class, on a fixed pool of actors:
each builds the job's state once (loads the model) and, per image, claims an attempt marker,
does the image (its document is written atomically by the job) and returns a status row. The
driver iterates the results as they stream in.

Exactly once: Ray restarts an actor that dies (``max_restarts=-1``) and resubmits the batch it
was running (``max_task_retries``), so a killed worker's images are done again by its successor;
the job's writes are idempotent (same bytes, atomic replace), so an image re-run after a kill is
neither lost, nor half-written, nor written twice with different content. An image counts as
retried when its attempt markers (``OUT/.segany-attempts/<image id>.<n>``, one per start) show
more than one start; the driver removes the markers when the job ends.
"""
from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BackendError, OutputError
from .executors import ImageJob, Outcome, Task, attempt, claim_attempt
from .sources import process_local

MAX_TASK_RETRIES = 4


def import_ray() -> Any:
    """``ray`` with Ray Data, or :class:`BackendError` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise BackendError("the ray executor needs Ray Data: pip install 'segany[ray]'") from None
    return ray


def _quiet_ray_data() -> None:
    """Ray Data's console messages (execution started / finished, progress bars off) go to its log file only."""
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.ERROR)


class JobWorker:
    """One actor of the pool: the job's state, built once; per batch, one status row per image."""

    def __init__(self, job: ImageJob, out: str) -> None:
        self.job, self.out = job, Path(out)
        self.state = job.setup()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        rows: dict[str, list[Any]] = {"name": [], "ok": [], "reason": [], "attempts": [], "fatal": []}
        for i in range(len(batch["relative"])):
            task = Task.from_row({key: column[i] for key, column in batch.items()})
            attempts = claim_attempt(self.out, task)
            try:
                outcome = attempt(self.job, self.state, task, attempts)
            except OutputError as exc:  # the driver stops the job with it (an exception would lose its type)
                outcome = Outcome(task.item.name, False, str(exc), attempts, fatal=True)
            for key in rows:
                rows[key].append(getattr(outcome, key))
        return rows


@dataclass
class RayExecutor:
    """Run a job on Ray: ``workers`` actors of ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs,
    ``batch_size`` images per call. ``address``: a running cluster (``auto``, ``ray://host:10001``);
    None starts a local Ray on this machine (quiet, no dashboard) unless one is running in this
    process already, and stops it when the job ends."""

    address: str | None = None
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    batch_size: int = 1

    def __post_init__(self) -> None:
        if self.workers < 1 or self.batch_size < 1 or self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise BackendError(f"the ray executor needs workers >= 1, batch size >= 1, cpus per worker > 0 and gpus "
                               f"per worker >= 0 (got {self.workers}, {self.batch_size}, {self.cpus_per_worker}, "
                               f"{self.gpus_per_worker})")

    def _start(self, ray: Any) -> bool:
        """Connect to (or start) Ray; True when this call started it."""
        if ray.is_initialized():
            return False
        options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}
        if self.address is None:
            needed = int(-(-self.workers * self.cpus_per_worker // 1))
            options["num_cpus"] = max(os.cpu_count() or 1, needed)
        ray.init(address=self.address, **options)
        return True

    def _check_resources(self, ray: Any) -> None:
        resources = ray.cluster_resources()
        for name, each in (("CPU", self.cpus_per_worker), ("GPU", self.gpus_per_worker)):
            if each > 0 and resources.get(name, 0) < each:
                raise BackendError(f"each ray worker asks for {each:g} {name}(s); the cluster has "
                                   f"{resources.get(name, 0):g}")

    def run(self, job: ImageJob, tasks: list[Task], out: Path) -> Iterator[Outcome]:
        """Yields each task's outcome as the actors finish it (in no fixed order)."""
        if not tasks:
            return
        local = [task.item.path for task in tasks if task.item.is_uri and process_local(str(task.item.path))]
        if local:
            raise BackendError(f"{local[0]} is on this process's own memory:// filesystem, which Ray workers "
                               f"cannot read: use the local executor, or a file:// / shared URI")
        ray = import_ray()
        started = self._start(ray)
        try:
            self._check_resources(ray)
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False  # one bar, the driver's
            context.print_on_execution_start = False
            _quiet_ray_data()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # max_restarts & co. as map_batches kwargs
                dataset = ray.data.from_items([task.to_row() for task in tasks]).map_batches(
                    JobWorker, fn_constructor_args=(job, str(out)), batch_size=self.batch_size,
                    compute=ray.data.ActorPoolStrategy(size=self.workers), num_cpus=self.cpus_per_worker,
                    num_gpus=self.gpus_per_worker or None, max_restarts=-1, max_task_retries=MAX_TASK_RETRIES,
                )
            for row in dataset.iter_rows():
                outcome = Outcome(str(row["name"]), bool(row["ok"]), str(row["reason"]), int(row["attempts"]),
                                  bool(row["fatal"]))
                if outcome.fatal:
                    raise OutputError(outcome.reason)
                yield outcome
        finally:
            if started:
                ray.shutdown()
