"""The one waiting loop shared by WaveSpeed v3 predictions and Qingbo tasks.

:func:`wait_for_task` polls a ``fetch`` callable until the task reaches a final state, with typed states, a
deadline on a monotonic clock, an adaptive interval, and injected ``sleep``/``clock``/``cancel_check``/
``on_progress``. It never re-submits anything: a timeout raises :class:`TaskTimeoutError` naming the task id so the
result can be collected later.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Generic, TypeVar

from .errors import (
    APIConnectionError,
    InvalidResponseError,
    RateLimitError,
    ServerError,
    TaskCancelledError,
    TaskTimeoutError,
    ZImageError,
)
from .logs import logger

__all__ = [
    "TaskState", "FINAL_STATES", "TaskSnapshot", "PollSchedule", "wait_for_task", "sleep_interruptibly",
    "CancelCheck", "ProgressCallback", "DEFAULT_TIMEOUT", "UnknownStatusError",
]

DEFAULT_TIMEOUT = 120.0
CancelCheck = Callable[[], bool]
ProgressCallback = Callable[[float, str], None]


class TaskState(str, Enum):
    """A remote task's state, whatever the provider calls it."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @classmethod
    def parse(cls, status: object, *, task_id: str, provider: str) -> "TaskState":
        """Map a provider status word to a state; an unknown word raises :class:`UnknownStatusError`."""
        word = str(status or "").strip().lower()
        state = _ALIASES.get(word)
        if state is None:
            raise UnknownStatusError(
                f"{provider} reported the unknown status {word!r} for task {task_id}; the task was left as it is "
                "and can be collected later by its id.", provider=provider, status=None, code="unknown_status")
        return state

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


_ALIASES = {
    "queued": TaskState.QUEUED, "pending": TaskState.QUEUED, "created": TaskState.QUEUED,
    "submitted": TaskState.QUEUED, "starting": TaskState.QUEUED, "waiting": TaskState.QUEUED,
    "processing": TaskState.PROCESSING, "running": TaskState.PROCESSING, "in_progress": TaskState.PROCESSING,
    "completed": TaskState.COMPLETED, "succeeded": TaskState.COMPLETED, "success": TaskState.COMPLETED,
    "failed": TaskState.FAILED, "error": TaskState.FAILED,
    "cancelled": TaskState.CANCELLED, "canceled": TaskState.CANCELLED,
    "timeout": TaskState.EXPIRED, "expired": TaskState.EXPIRED,
}
FINAL_STATES = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED, TaskState.EXPIRED})


class UnknownStatusError(InvalidResponseError):
    """The provider reported a status word this library does not know."""


T = TypeVar("T")


@dataclass(frozen=True)
class TaskSnapshot(Generic[T]):
    """One observation of a task: its state, progress in 0..1 (None when unknown), and the parsed task."""

    state: TaskState
    progress: float | None
    task: T


@dataclass(frozen=True)
class PollSchedule:
    """How long to wait between status requests.

    Without a prediction: ``first``, then growing by ``growth`` per unchanged answer, up to ``slowest``. Once two
    progress readings give a rate, the loop sleeps until just after the predicted end (``margin``), so a finished
    task is usually noticed by one request; if the task runs late, polling restarts at ``near`` and slows down again.
    """

    first: float = 0.75
    growth: float = 1.5
    slowest: float = 2.0
    near: float = 0.25
    margin: float = 0.05

    def next_delay(self, unchanged: int, eta: float | None) -> float:
        """Seconds until the next status request.

        ``unchanged`` counts the answers in a row that showed no change; ``eta`` is the predicted seconds to
        completion (0 when the prediction has passed), or None without a prediction.
        """
        if eta is None:
            return min(self.first * self.growth ** unchanged, self.slowest)
        if eta > 0:
            return min(eta + self.margin, self.slowest * 2)
        return min(self.near * self.growth ** unchanged, self.slowest)


@dataclass
class _RateEstimator:
    samples: list[tuple[float, float]] = field(default_factory=list)

    def add(self, when: float, progress: float | None) -> None:
        if progress is None or not 0.0 < progress < 1.0:
            return
        if self.samples and progress <= self.samples[-1][1]:
            return
        self.samples.append((when, progress))
        del self.samples[:-4]

    def eta(self, now: float) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, p0), (t1, p1) = self.samples[0], self.samples[-1]
        if t1 <= t0:
            return None
        rate = (p1 - p0) / (t1 - t0)
        remaining = (1.0 - p1) / rate - (now - t1)
        return max(remaining, 0.0) if math.isfinite(remaining) else None


def sleep_interruptibly(seconds: float, *, sleep: Callable[[float], None], cancel_check: CancelCheck | None,
                        slice_seconds: float = 0.25) -> bool:
    """Sleep ``seconds`` in slices, checking ``cancel_check`` between them. Returns True if cancelled."""
    remaining = max(seconds, 0.0)
    while True:
        if cancel_check is not None and cancel_check():
            return True
        if remaining <= 0:
            return False
        step = min(slice_seconds, remaining)
        sleep(step)
        remaining -= step


_TRANSIENT = (APIConnectionError, ServerError, RateLimitError, InvalidResponseError)


def wait_for_task(
    fetch: Callable[[], TaskSnapshot[T]],
    *,
    task_id: str,
    provider: str,
    timeout: float = DEFAULT_TIMEOUT,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    cancel_check: CancelCheck | None = None,
    on_progress: ProgressCallback | None = None,
    on_cancel: Callable[[TaskSnapshot[T] | None], bool] | None = None,
    schedule: PollSchedule = PollSchedule(),
    first: TaskSnapshot[T] | None = None,
    resume_hint: str | None = None,
) -> TaskSnapshot[T]:
    """Poll ``fetch`` until the task is final and return the final snapshot (completed, failed or cancelled).

    Transient failures of a status request (connection drops, 5xx, 429, garbled answers) do not end the wait:
    polling resumes until the deadline. ``on_cancel`` is called once when ``cancel_check`` turns true; it returns
    whether the provider cancelled the task remotely. ``first`` is a snapshot already in hand (from the submit).
    ``resume_hint`` ends the timeout message: how to collect the task later.
    """
    hint = resume_hint or f"collect it later by its id {task_id}"
    deadline = clock() + timeout
    started = clock()
    estimator = _RateEstimator()
    unchanged = 0
    last: TaskSnapshot[T] | None = first
    last_key: tuple[TaskState, float | None] | None = None
    failures = 0

    def cancelled() -> TaskCancelledError:
        remote = bool(on_cancel(last)) if on_cancel else False
        state = "cancelled at the provider and refunded" if remote else "left running at the provider"
        return TaskCancelledError(f"Cancelled while waiting for {provider} task {task_id}; the task was {state}.",
                                  task_id=task_id, provider=provider, remote_cancelled=remote)

    while True:
        if cancel_check is not None and cancel_check():
            raise cancelled()
        snapshot: TaskSnapshot[T] | None
        if first is not None:
            snapshot, first = first, None
        else:
            try:
                snapshot = fetch()
                failures = 0
            except _TRANSIENT as err:
                failures += 1
                snapshot = None
                logger.info("status of %s task %s not available (%s); polling resumes", provider, task_id,
                            type(err).__name__)
                if clock() >= deadline:
                    raise _timeout(task_id, provider, timeout, last, hint) from err
            except Exception:
                # A cancel noticed inside the status request (a retry wait that was cut short) still gets the
                # remote cancel of a queued task.
                if cancel_check is not None and cancel_check():
                    raise cancelled() from None
                raise
        now = clock()
        changed = False
        if snapshot is not None:
            last = snapshot
            estimator.add(now, snapshot.progress)
            key = (snapshot.state, snapshot.progress)
            changed = key != last_key
            unchanged = 0 if changed else unchanged + 1
            last_key = key
            if on_progress is not None and changed:
                on_progress(_display_progress(snapshot), _status_text(snapshot, now - started))
            if snapshot.state.is_final:
                return snapshot
        if now >= deadline:
            raise _timeout(task_id, provider, timeout, last, hint)
        eta = estimator.eta(now) if last is not None and last.state is TaskState.PROCESSING else None
        if snapshot is None:
            delay = min(schedule.first * 2 ** min(failures, 3), schedule.slowest)
        else:
            delay = schedule.next_delay(unchanged, eta)
        delay = min(delay, max(deadline - now, 0.0))
        if sleep_interruptibly(delay, sleep=sleep, cancel_check=cancel_check):
            raise cancelled()


def _display_progress(snapshot: TaskSnapshot[Any]) -> float:
    if snapshot.state is TaskState.COMPLETED:
        return 1.0
    return min(max(snapshot.progress or 0.0, 0.0), 1.0)


def _status_text(snapshot: TaskSnapshot[Any], elapsed: float) -> str:
    text = snapshot.state.value
    if snapshot.progress is not None and snapshot.state is TaskState.PROCESSING:
        text += f" {snapshot.progress * 100:.0f}%"
    return f"{text}, {elapsed:.1f}s"


def _timeout(task_id: str, provider: str, timeout: float, last: TaskSnapshot[Any] | None,
             hint: str) -> TaskTimeoutError:
    state = f" (last seen {last.state.value})" if last is not None else ""
    return TaskTimeoutError(
        f"{provider} task {task_id} was still running after {timeout:g} s{state}. It was not re-submitted, so "
        f"nothing was charged twice: {hint}.", task_id=task_id, provider=provider)


def is_transient(err: ZImageError) -> bool:
    """Whether a failed status request is worth repeating."""
    return isinstance(err, _TRANSIENT)
