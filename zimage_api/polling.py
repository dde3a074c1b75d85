"""The one waiting loop shared by WaveSpeed v3 predictions and Qingbo tasks.

:func:`wait_for_task` polls a ``fetch`` callable until the task reaches a final state, with typed states, a
deadline on a monotonic clock, an adaptive interval, and injected ``sleep``/``clock``/``cancel_check``/
``on_progress``. The schedule counts from the task's submission when it is known, so that a task just submitted
is not asked about at once, and keeps to at most about one status request a second. It never re-submits anything:
a timeout raises :class:`TaskTimeoutError` naming the task id so the result can be collected later.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Generic, TypeVar

from .cancel import sleep_unless
from .errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    CancelledError,
    InvalidResponseError,
    RateLimitError,
    ServerError,
    TaskCancelledError,
    TaskTimeoutError,
    ZImageError,
)
from .http.deadline import Deadline
from .logs import logger

__all__ = [
    "TaskState", "FINAL_STATES", "TaskSnapshot", "PollSchedule", "wait_for_task",
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
    """One observation of a task: its state, progress in 0..1 (None when unknown), the parsed task, and how many
    seconds before this answer the provider created the task (``age``; None when the answer does not say)."""

    state: TaskState
    progress: float | None
    task: T
    age: float | None = None


@dataclass(frozen=True)
class PollSchedule:
    """How long to wait between status requests: pure arithmetic, no sleeping.

    Times count from the task's submission when it is known (the store's record of a pasted id, the provider's
    ``created_at``), else from the start of the wait. Nothing is asked before ``opening`` of the shortest
    duration expected (``shortest`` when nothing is known): a task just submitted is not done yet. Without a
    prediction, the wait between two requests is ``share`` of the time waited so far, between ``fastest`` and
    ``slowest``. With a predicted end (from the progress, or from how long this model's tasks took before), the loop
    sleeps until just after it (``margin``), at most ``longest`` at a time. Inside the window in which earlier tasks
    of the kind ended, it looks every ``sweep`` of that window (at least ``near`` apart); past it, it slows by
    ``late_share`` of how late the task is, back to the plain schedule. Under all of it lies a budget: at most
    ``rate`` requests per second since the submission, so that a wait never asks more often than about once a second
    overall, whatever the progress says. A sharp prediction (the progress, or earlier tasks that ended within
    ``tight`` of the time waited of each other, until that window has passed) may spend one request ahead of it: a
    short task is then seen at its end, not a second later.
    """

    rate: float = 1.0
    shortest: float = 1.25
    opening: float = 0.8
    fastest: float = 1.0
    share: float = 0.05
    slowest: float = 2.5
    margin: float = 0.05
    longest: float = 10.0
    near: float = 0.25
    sweep: float = 0.06
    late_share: float = 0.25
    tight: float = 0.25

    def plain(self, waited: float) -> float:
        """The wait without any prediction, after ``waited`` seconds of waiting."""
        return min(max(self.share * waited, self.fastest), self.slowest)

    def budget(self, since: float, sent: int, ahead: int = 1) -> float:
        """The seconds to wait before one more request keeps ``sent`` requests within ``rate`` per second since
        the submission, ``since`` seconds ago, ``ahead`` requests ahead of it."""
        return max((sent + 1 - ahead) / self.rate - since, 0.0)

    def first_delay(self, since: float, eta: float | None = None) -> float:
        """Seconds until the first status request of a task submitted ``since`` seconds ago, when nothing was seen of
        it yet; ``eta`` is the end predicted by earlier tasks of its kind, if any. A task submitted long ago is asked
        about at once."""
        if eta is not None:
            return eta + self.margin if eta > 0 else 0.0
        return max(self.opening * self.shortest - since, 0.0)

    def next_delay(self, waited: float, eta: float | None = None, overdue: float = 0.0, window: float = 0.0, *,
                   since: float | None = None, sent: int = 0) -> float:
        """Seconds until the next status request.

        ``waited`` is the time since the wait began, ``since`` the time since the task was submitted (None when
        unknown: ``waited`` stands in) and ``sent`` the status requests sent so far; ``eta`` the predicted seconds
        to the end (0 once it has passed), or None without a prediction; ``overdue`` the seconds since the predicted
        end passed; ``window`` how far past the prediction such a task may still end (the spread of the earlier
        tasks it came from).
        """
        age = waited if since is None else since
        plain = self.plain(age)
        if eta is None:
            opening = self.opening * self.shortest
            delay = opening - age if age < opening else plain
        elif eta > 0:
            delay = min(eta + self.margin, self.longest)
        elif overdue <= window:
            delay = min(max(self.near, self.sweep * window), plain)
        else:
            delay = min(max(self.near, self.late_share * (overdue - window)), plain)
        sharp = eta is not None and (eta > 0 or overdue <= window <= self.tight * age)
        return max(delay, self.budget(age, sent, ahead=1 if sharp else 0))


STEP_SHIFT = 0.25
SHARP_SECONDS = 0.5  # past the earlier tasks' end, a prediction from progress counts only if read this sharply
SMOOTH_TOLERANCE = 0.05  # a reading this close to the predicted progress is taken as exact
CHECK_SECONDS = 1.0  # a prediction from one reading further than this is checked halfway


@dataclass
class _EndEstimator:
    """Predicts when a task ends: from its progress when that moves, else from how long such tasks took before.

    Progress readings in 0..1 give a rate once two of them differ; the moment a task is first seen processing at
    0 counts as a reading, and so does its submission (``start``) while it was never seen queued after it: one
    reading of a moving progress then predicts, checked halfway when its end is far. A progress that jumps
    (0, 50, 100) predicts as well as a smooth one. A progress that never moves (absent, always 0, or an empty
    string) gives no rate, and ``expected_end`` is used instead.
    """

    expected_end: float | None = None  # on the wait's clock, from earlier tasks; None when unknown
    window: float = 0.0  # how much later than ``expected_end`` the earlier tasks ended
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # (when, progress, how unsure when)
    start: float | None = None  # when the task was submitted, or last seen queued, on the wait's clock
    read_at: float | None = None  # when the last sample was read
    seen_at: float | None = None  # when the last answer came

    def add(self, when: float, state: TaskState, progress: float | None, since: float | None = None) -> None:
        """A reading at ``when``; ``since`` is the reading before it. A new value appeared somewhere between the
        two: it counts from their middle, at most ``STEP_SHIFT`` seconds back, unless the readings before predicted
        it (a smooth progress, exact when read). A jump seen late then predicts early, which costs a request or two,
        rather than late, which costs lag."""
        self.seen_at = when
        if state is TaskState.QUEUED and self.start is not None and not self.samples:
            self.start = max(self.start, when)
        if state is not TaskState.PROCESSING or progress is None or not 0.0 <= progress < 1.0:
            return
        if self.samples and progress <= self.samples[-1][1]:
            return
        if not self.samples and self.start is not None and progress <= 0.0:
            return  # the submission already counts as the reading at 0
        smooth = self._expects(when, progress)
        at = when if since is None or smooth else when - min((when - since) / 2, STEP_SHIFT)
        # A first reading is taken as exact (a smooth progress is), but not sharp: its value may have come any time
        # since the task started. A reading where the earlier ones predicted it is exact and sharp.
        unsure = 0.0 if smooth else when - since if since is not None else \
            when - self.start if self.start is not None else 0.0
        self.samples.append((at, progress, unsure))
        self.read_at = when
        del self.samples[:-4]

    def _expects(self, when: float, progress: float) -> bool:
        """Whether the readings so far predicted ``progress`` at ``when`` (within ``SMOOTH_TOLERANCE``): a smooth
        progress, whose readings are exact when read."""
        end = self._from_progress(halfway=False)
        if end is None or not self.samples:
            return False
        t1, p1, _ = self.samples[-1]
        if end <= t1:
            return False
        predicted = p1 + (1.0 - p1) * (when - t1) / (end - t1)
        return abs(predicted - progress) <= SMOOTH_TOLERANCE

    def window_for(self, end: float) -> float:
        """How far past ``end`` the task may still end without being late: the earlier tasks' spread."""
        return self.window if end == self.expected_end else 0.0

    def end(self, now: float) -> float | None:
        """The predicted end on the wait's clock, or None.

        Before the end that earlier tasks predict, the earlier of the two predictions wins: one that comes too early
        costs a few requests, one that comes too late costs lag. Once that end has passed, it stays the reference
        (looked at closely inside the window of earlier tasks, less often the later it gets), unless the progress
        predicts sharply: from a smooth progress, or from a reading taken between two close answers. A jump (0, 50,
        100) seen after a long sleep may have happened any time in it, and predicts nothing sharp.
        """
        expected, progress = self.expected_end, self._from_progress()
        if expected is None:
            return progress
        if now < expected:
            return min(expected, progress) if progress is not None and progress > now else expected
        sharp = progress is not None and progress > now and bool(self.samples) and self.samples[-1][2] <= SHARP_SECONDS
        return progress if sharp else expected

    def _from_progress(self, halfway: bool = True) -> float | None:
        points = self.samples
        if len(points) < 2 and self.start is not None and points:
            points = [(self.start, 0.0, 0.0), *points]
        if len(points) < 2:
            return None
        (t0, p0, _), (t1, p1, _) = points[0], points[-1]
        if t1 <= t0 or p1 <= p0:
            return None
        end = t1 + (1.0 - p1) * (t1 - t0) / (p1 - p0)
        if not math.isfinite(end):
            return None
        if halfway and points is not self.samples and end - t1 > CHECK_SECONDS and self.seen_at == self.read_at:
            end = t1 + (end - t1) / 2  # the task may have waited in a queue unseen: look again halfway, once
        return end


_AGE_LIMIT = 86400.0  # an age beyond a day says more of a clock than of the task
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
    deadline: Deadline | None = None,
    expected: float | None = None,
    expected_spread: float = 0.0,
    submitted_ago: float | None = None,
    where: str = "",
) -> TaskSnapshot[T]:
    """Poll ``fetch`` until the task is final and return the final snapshot (completed, failed or cancelled).

    ``deadline`` (default: ``timeout`` from now, on ``clock``) is the one deadline of this wait: ``fetch`` should
    hand the same deadline to its transport, so that no retry inside it outlives the wait. Failures of a status
    request (an unreachable server, 5xx, 429, a garbled answer) do not end the wait before the deadline; at the
    deadline, the error says what was seen, and the task id stays collectable. A status word outside the known set
    ends the wait at once. ``on_cancel`` is called once when ``cancel_check`` turns true; it returns whether the
    provider cancelled the task remotely. ``first`` is a snapshot already in hand (from the submit). ``expected``
    is how many seconds from now such a task should end at the earliest, judged by earlier tasks, and
    ``expected_spread`` how much later than that they ended (a fallback when the progress says nothing).
    ``submitted_ago`` is how many seconds ago the task was submitted, when known (else the ``age`` of the first
    answer that tells it): the schedule counts from there, and a task just submitted is not asked about at once.
    ``where`` names the server in messages; ``resume_hint`` ends them: how to collect the task later.
    """
    hint = resume_hint or f"collect it later by its id {task_id}"
    if deadline is None:
        deadline = Deadline.after(timeout, clock)
    clock = deadline.clock
    started = clock()
    promised = deadline.seconds or max(deadline.at - started, 0.0)
    origin = started - max(submitted_ago, 0.0) if submitted_ago is not None else None  # the submission
    estimator = _EndEstimator(expected_end=started + expected if expected is not None else None,
                              window=max(expected_spread, 0.0), start=origin)
    last: TaskSnapshot[T] | None = first
    last_key: tuple[TaskState, float | None] | None = None
    failing_since: float | None = None
    seen_at: float | None = None  # when the last answer came
    sent = 0  # status requests sent

    def cancelled() -> TaskCancelledError:
        remote = bool(on_cancel(last)) if on_cancel else False
        state = "cancelled at the provider and refunded" if remote else "left running at the provider"
        return TaskCancelledError(f"Cancelled while waiting for {provider} task {task_id}; the task was {state}.",
                                  task_id=task_id, provider=provider, remote_cancelled=remote)

    if first is None and origin is not None:
        # A task of known age: its first look comes when it may be done, not at once.
        end = estimator.end(started)
        delay = schedule.first_delay(started - origin, None if end is None else max(end - started, 0.0))
        if sleep_unless(cancel_check, min(delay, max(deadline.at - started, 0.0)), sleep):
            raise cancelled()
    while True:
        if cancel_check is not None and cancel_check():
            raise cancelled()
        snapshot: TaskSnapshot[T] | None
        if first is not None:
            snapshot, first = first, None
        else:
            asked = clock()
            sent += 1
            try:
                snapshot = fetch()
                failing_since = None
            except UnknownStatusError:
                raise
            except _TRANSIENT as err:
                snapshot = None
                failing_since = asked if failing_since is None else failing_since
                logger.info("status of %s task %s not available (%s); polling resumes", provider, task_id,
                            type(err).__name__)
                if err.out_of_time or deadline.passed():
                    raise _gave_up(task_id, provider, where, clock() - failing_since, err, hint) from err
            except CancelledError:
                raise cancelled() from None
            except Exception:
                # A cancel noticed inside the status request still gets the remote cancel of a queued task.
                if cancel_check is not None and cancel_check():
                    raise cancelled() from None
                raise
        now = clock()
        if snapshot is not None:
            last = snapshot
            if origin is None and snapshot.age is not None and math.isfinite(snapshot.age):
                origin = now - min(max(snapshot.age, 0.0), _AGE_LIMIT)
                if not estimator.samples:
                    estimator.start = origin
            estimator.add(now, snapshot.state, snapshot.progress, since=seen_at)
            seen_at = now
            key = (snapshot.state, snapshot.progress)
            if on_progress is not None and key != last_key:
                on_progress(_display_progress(snapshot), _status_text(snapshot, now - started))
            last_key = key
            if snapshot.state.is_final:
                return snapshot
        if now >= deadline.at:
            raise _timeout(task_id, provider, promised, last, hint)
        end = estimator.end(now)
        eta = None if end is None else max(end - now, 0.0)
        overdue = 0.0 if end is None else max(now - end, 0.0)
        window = 0.0 if end is None else estimator.window_for(end)
        delay = schedule.next_delay(now - started, eta, overdue, window,
                                    since=None if origin is None else now - origin, sent=sent)
        delay = min(delay, max(deadline.at - now, 0.0))
        if sleep_unless(cancel_check, delay, sleep):
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


def _gave_up(task_id: str, provider: str, where: str, seconds: float, err: ZImageError,
             hint: str) -> TaskTimeoutError:
    """The deadline came while the status requests failed: say what they met, not that the task was running."""
    at = f" at {where}" if where else ""
    took = f"{max(seconds, 0.0):.0f} s"
    if err.retry_at is not None:
        seen = err.message.rstrip(".") + "."
    elif isinstance(err, APITimeoutError):
        seen = f"{provider}{at} did not answer the status requests in time, for {took} (read timeout)."
    elif isinstance(err, APIConnectionError):
        seen = f"Could not reach {provider}{at} for {took} ({err.reason or 'no connection'})."
    elif isinstance(err, APIError) and err.status is not None:
        seen = f"{provider}{at} answered every status request with HTTP {err.status} for {took}."
    else:
        seen = f"{provider}{at} answered the status requests with something unreadable for {took}."
    return TaskTimeoutError(f"{seen} Task {task_id} is recorded and was not re-submitted; {hint}.",
                            task_id=task_id, provider=provider, cause=err)


def is_transient(err: ZImageError) -> bool:
    """Whether a failed status request is worth repeating."""
    return isinstance(err, _TRANSIENT)
