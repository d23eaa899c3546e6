"""Bounded, cancellable queues of compute work ("lanes"), one worker thread each.

The server runs image encoding, prompt decoding and automatic proposals on separate lanes, so a
long "everything" job never holds up another image's embedding or a click. A lane accepts at
most ``max_pending`` jobs (waiting or running); beyond that :meth:`Lane.submit` raises
:class:`~segany.errors.ServerBusyError` (answered 503 with ``Retry-After``). A job that has not
started is dropped when cancelled; a running one sees its cancellation at its next
``check()`` (between decoder batches for "everything"). :meth:`Lane.shutdown` cancels all of it.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..errors import ServerBusyError

V = TypeVar("V")


class Cancelled(Exception):
    """Raised inside a job by its ``check()`` once the job was cancelled (client gone, server stopping)."""


@dataclass
class Ticket(Generic[V]):
    """A piece of work in progress: its ``future`` and how to give it up."""

    future: Future[V]
    cancel: Callable[[], None]


class Lane(Executor):
    """A one-thread executor with a cap on queued work and cooperative cancellation."""

    def __init__(self, name: str, max_pending: int) -> None:
        if max_pending < 1:
            raise ValueError(f"a lane needs room for at least one job, got max_pending={max_pending}")
        self.name = name
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"segany-{name}")
        self._lock = threading.Lock()
        self._pending = 0
        self._closed = False
        self._stops: set[threading.Event] = set()

    @property
    def pending(self) -> int:
        """Jobs waiting or running."""
        with self._lock:
            return self._pending

    def submit(self, fn: Callable[..., V], /, *args: Any, **kwargs: Any) -> Future[V]:
        """Queue ``fn(*args, **kwargs)``; :class:`ServerBusyError` when the lane is full or closed."""
        with self._lock:
            if self._closed:
                raise ServerBusyError("the server is shutting down")
            if self._pending >= self.max_pending:
                raise ServerBusyError(f"the server is busy: {self._pending} {self.name} jobs are queued "
                                      f"(the limit is {self.max_pending}); try again in a moment")
            self._pending += 1
        future = self._executor.submit(fn, *args, **kwargs)
        future.add_done_callback(self._finished)
        return future

    def job(self, fn: Callable[[Callable[[], None]], V]) -> Ticket[V]:
        """Queue ``fn(check)``: ``check()`` raises :class:`Cancelled` once the ticket is cancelled."""
        stop = threading.Event()

        def check() -> None:
            if stop.is_set():
                raise Cancelled(f"{self.name} job cancelled")

        def run() -> V:
            check()
            return fn(check)

        def forget(_: Future) -> None:
            with self._lock:
                self._stops.discard(stop)

        with self._lock:
            self._stops.add(stop)
        try:
            future = self.submit(run)
        except ServerBusyError:
            forget(Future())
            raise
        future.add_done_callback(forget)

        def cancel() -> None:
            stop.set()
            future.cancel()

        return Ticket(future, cancel)

    def shutdown(self, wait: bool = False, *, cancel_futures: bool = True) -> None:
        """Refuse new jobs, drop the queued ones and tell the running one to stop."""
        with self._lock:
            self._closed = True
            for stop in self._stops:
                stop.set()
        self._executor.shutdown(wait=wait, cancel_futures=cancel_futures)

    def _finished(self, _: Future) -> None:
        with self._lock:
            self._pending -= 1
