"""A bounded, thread-safe LRU cache whose misses are computed once, however many ask at once.

The server keeps one image embedding per entry (megabytes each, seconds to compute): the cache
is bounded both by entry count and by total bytes, and concurrent requests for the same missing
key share one computation ("single flight") instead of each running the image encoder.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Executor, Future
from typing import Generic, TypeVar

V = TypeVar("V")


class LRUCache(Generic[V]):
    """At most ``max_items`` values and ``max_bytes`` bytes (as measured by ``size_of``).

    The least recently used entries are evicted first; a single value larger than
    ``max_bytes`` is still kept (alone), so a big image never makes its own embedding uncacheable.
    """

    def __init__(self, max_items: int, max_bytes: int, size_of: Callable[[V], int]) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError(f"cache bounds must be positive, got max_items={max_items}, max_bytes={max_bytes}")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._entries: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> V | None:
        """The value for ``key`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: Hashable, value: V) -> None:
        """Store ``value`` under ``key``, evicting least recently used entries to fit the bounds."""
        size = int(self._size_of(value))
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (value, size)
            self._bytes += size
            while len(self._entries) > 1 and (len(self._entries) > self.max_items or self._bytes > self.max_bytes):
                _, (_, evicted) = self._entries.popitem(last=False)
                self._bytes -= evicted

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def num_bytes(self) -> int:
        with self._lock:
            return self._bytes


class ComputingCache(LRUCache[V]):
    """An :class:`LRUCache` that computes misses on ``executor``, once per key at a time.

    ``future(key, compute)`` returns a future of the value: done at once on a hit, the running
    computation's future when another caller already asked, else a new computation. A failed
    computation is not cached (the next request tries again); its message stays readable by
    :meth:`status` until then. A computation that has not started is dropped when every caller
    that waited for it abandons it (:meth:`abandon`) (and none asked for it in the background).
    """

    def __init__(self, max_items: int, max_bytes: int, size_of: Callable[[V], int], executor: Executor) -> None:
        super().__init__(max_items, max_bytes, size_of)
        self._executor = executor
        self._flight_lock = threading.Lock()
        self._in_flight: dict[Hashable, Future[V]] = {}
        self._failures: dict[Hashable, str] = {}
        self._waiters: dict[Hashable, int] = {}
        self._background: set[Hashable] = set()
        self.computed = 0  # number of computations started, for statistics and tests

    def future(self, key: Hashable, compute: Callable[[], V], background: bool = False) -> Future[V]:
        """The value's future; ``background=True``: computed even if no caller waits for it."""
        with self._flight_lock:
            value = self.get(key)
            if value is not None:
                done: Future[V] = Future()
                done.set_result(value)
                return done
            running = self._in_flight.get(key)
            if running is None:
                running = self._executor.submit(self._compute, key, compute)
                self._failures.pop(key, None)
                self.computed += 1
                self._in_flight[key] = running
            if background:
                self._background.add(key)
            else:
                self._waiters[key] = self._waiters.get(key, 0) + 1
        return running

    def abandon(self, key: Hashable, future: Future[V]) -> None:
        """A caller of :meth:`future` no longer waits: drop the computation if it is the last
        one and the computation has not started."""
        with self._flight_lock:
            if self._in_flight.get(key) is not future:
                return
            left = self._waiters.get(key, 0) - 1
            self._waiters[key] = max(left, 0)
            if left <= 0 and key not in self._background and future.cancel():
                self._forget(key)

    def get_or_compute(self, key: Hashable, compute: Callable[[], V]) -> V:
        """The value for ``key``, computed (or waited for) if absent; re-raises the computation's error."""
        return self.future(key, compute).result()

    def status(self, key: Hashable) -> tuple[str, str | None]:
        """("ready" | "computing" | "failed" | "absent", error message or None)."""
        with self._flight_lock:
            if key in self._in_flight:
                return "computing", None
            if key in self:
                return "ready", None
            if key in self._failures:
                return "failed", self._failures[key]
            return "absent", None

    def _compute(self, key: Hashable, compute: Callable[[], V]) -> V:
        # Runs on the executor; the cache is updated before the future resolves, so a caller
        # that waited on it sees the key "ready" (or "failed") at once.
        try:
            value = compute()
        except BaseException as exc:
            with self._flight_lock:
                self._failures[key] = str(exc)
                self._forget(key)
            raise
        with self._flight_lock:
            self.put(key, value)
            self._forget(key)
        return value

    def _forget(self, key: Hashable) -> None:
        # with the flight lock held
        self._in_flight.pop(key, None)
        self._waiters.pop(key, None)
        self._background.discard(key)
