"""Running the paid units of one request side by side on a small bounded thread pool.

The caller's thread stays free to report progress and notice Cancel: it passes an ``on_tick`` callable that runs in
its own thread between short waits. Nothing here knows about ComfyUI.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["MAX_WORKERS", "JobOutcome", "run_jobs", "first_error", "Once"]

MAX_WORKERS = 4
T = TypeVar("T")


@dataclass
class JobOutcome(Generic[T]):
    """What one job ended with: a value, an error, or neither when it never finished (cancelled)."""

    value: T | None = None
    error: BaseException | None = None
    finished: bool = False


def run_jobs(
    jobs: Sequence[Callable[[], T]],
    *,
    cancel: threading.Event,
    on_tick: Callable[[], None] | None = None,
    wake: threading.Event | None = None,
    workers: int = MAX_WORKERS,
    tick_seconds: float = 0.1,
    grace_seconds: float = 1.0,
) -> list[JobOutcome[T]]:
    """Run ``jobs`` on at most ``workers`` threads and return their outcomes in order.

    ``on_tick`` runs in the calling thread whenever ``wake`` is set (e.g. by :class:`BatchProgress`) or a job ends,
    and at least every ``tick_seconds`` (real time), until all jobs end; it may set ``cancel``. Once ``cancel`` is
    set, jobs not yet started never start, running ones get ``grace_seconds`` to notice it (their waits check the
    same event), and the rest are abandoned: their outcomes stay unfinished. A failing job does not stop the others,
    so paid work already in flight is still collected.
    """
    outcomes: list[JobOutcome[T]] = [JobOutcome() for _ in jobs]
    if not jobs:
        return outcomes
    wake = wake if wake is not None else threading.Event()
    lock = threading.Lock()
    queue = iter(range(len(jobs)))
    started: set[int] = set()

    def worker() -> None:
        while not cancel.is_set():
            with lock:
                index = next(queue, None)
                if index is None:
                    return
                started.add(index)
            outcome = outcomes[index]
            try:
                outcome.value = jobs[index]()
            except BaseException as err:  # noqa: B036  (Ctrl-C raised by an injected sleep is an outcome too)
                outcome.error = err
            finally:
                outcome.finished = True
                wake.set()

    # Daemon threads: a request that cannot be interrupted must never keep the process from exiting.
    threads = [threading.Thread(target=worker, name=f"zimage-{n}", daemon=True)
               for n in range(max(1, min(workers, len(jobs))))]
    for thread in threads:
        thread.start()

    def busy() -> bool:
        return any(thread.is_alive() for thread in threads)

    while not cancel.is_set() and busy():
        wake.wait(tick_seconds)
        wake.clear()
        if on_tick is not None:
            on_tick()
    if cancel.is_set():
        end = time.monotonic() + grace_seconds
        while busy() and time.monotonic() < end:
            wake.wait(min(tick_seconds, max(end - time.monotonic(), 0.0)))
            wake.clear()
    with lock:
        for index, outcome in enumerate(outcomes):
            if not outcome.finished:
                # Never started, or abandoned mid-way: unfinished, and a late end is not taken as delivered.
                outcomes[index] = JobOutcome()
    return outcomes


def first_error(outcomes: Sequence[JobOutcome[Any]]) -> BaseException | None:
    """The first job's error, in job order (not in time order), or None."""
    return next((o.error for o in outcomes if o.error is not None), None)


class Once:
    """Compute a value per key at most once, even when several threads ask for it together (e.g. one upload per
    reference picture shared by its count of edits)."""

    def __init__(self, make: Callable[..., Any]) -> None:
        self._make = make
        self._values: dict[int, Any] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: int, *args: Any) -> Any:
        """The value for ``key``, made by ``make(key, *args)`` by the first caller (later callers' args are unused)."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._values:
                self._values[key] = self._make(key, *args)
            return self._values[key]
