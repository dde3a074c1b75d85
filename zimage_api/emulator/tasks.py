"""Emulated asynchronous tasks (Qingbo tasks and WaveSpeed v3 predictions) and their clock-driven lifecycle.

Nothing runs in the background: a task's status is computed from the emulator's clock whenever it is asked for.
A task waits ``queue_seconds`` after creation, then takes a processing slot (at once, or when one frees if the
emulator limits concurrency), then processes for ``process_seconds``.  Slot assignments are made lazily, in
arrival order, and never change once made, so the history seen by a client is consistent.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backend import Backend

__all__ = ["EmulatedTask", "QUEUED", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED", "FINAL", "assign_slots",
           "phase_of", "peak_overlap"]

QUEUED, PROCESSING, COMPLETED, FAILED, CANCELLED = "queued", "processing", "completed", "failed", "cancelled"
FINAL = frozenset({COMPLETED, FAILED, CANCELLED})
_STUCK_FRACTION = 0.95


@dataclass(eq=False)
class EmulatedTask:
    """A Qingbo task or a WaveSpeed v3 prediction.

    ``status`` is computed from the emulator's clock when read (Qingbo vocabulary: ``queued`` is reported as
    ``created`` by the v3 routes).  ``created_at``/``completed_at`` are unix seconds; ``completed_at`` is ``None``
    until the task is final.  ``outputs`` holds the encoded pictures served for the task (rendered when it first
    completes).  ``params`` is the submitted JSON.
    """

    id: str
    provider: str
    params: dict[str, Any]
    created_at: float
    model: str
    prompt: str
    width: int
    height: int
    seed: int
    output_format: str
    file_ext: str
    card: dict[str, Any]
    queue_seconds: float
    process_seconds: float
    serial: int
    quota: int = 0
    reference: bytes | None = field(default=None, repr=False)
    strength: float = 0.5
    mask: bytes | None = field(default=None, repr=False)  # inpainting: white = repaint, black = keep
    base64_output: bool = False
    stuck: bool = False
    fail_code: str | None = None
    fail_message: str | None = None
    cancelled_at: float | None = None
    started_at: float | None = None
    inference_ms: int = 0
    scope: str = ""  # a hash of the key that created it: the history lists a key's own predictions only
    file_tokens: list[str] = field(default_factory=list, repr=False)
    _outputs: list[bytes] = field(default_factory=list, repr=False)
    _owner: Backend | None = field(default=None, repr=False)
    _render_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def ready_at(self) -> float:
        """When the task leaves its queue and may take a processing slot."""
        return self.created_at + self.queue_seconds

    @property
    def ends_at(self) -> float:
        """When processing ends (infinite for a stuck task, ``inf`` before it has a slot)."""
        if self.started_at is None or self.stuck:
            return math.inf
        return self.started_at + self.process_seconds

    @property
    def cancelled(self) -> bool:
        """True once the task was cancelled."""
        return self.cancelled_at is not None

    @property
    def status(self) -> str:
        """The current status: queued, processing, completed, failed or cancelled."""
        if self._owner is None:
            return QUEUED
        return self._owner._task_phase(self)[0]

    @property
    def completed_at(self) -> float | None:
        """Unix seconds when the task became final, or ``None`` while it is not."""
        status = self.status
        if status == CANCELLED:
            return self.cancelled_at
        if status in FINAL:
            return self.ends_at
        return None

    @property
    def outputs(self) -> list[bytes]:
        """The encoded pictures served for this task (empty until it completed)."""
        if self._owner is not None and self.status == COMPLETED:
            return list(self._owner._materialize(self))
        return list(self._outputs)


def phase_of(task: EmulatedTask, now: float) -> tuple[str, float]:
    """``(status, fraction of processing done)`` of ``task`` at ``now``; slots must be assigned first."""
    if task.cancelled_at is not None:
        return CANCELLED, 0.0
    start = task.started_at
    if start is None:
        return QUEUED, 0.0
    if not task.stuck and now >= start + task.process_seconds:
        return (FAILED if task.fail_code else COMPLETED), 1.0
    if now <= start:
        return QUEUED, 0.0
    fraction = (now - start) / task.process_seconds if task.process_seconds > 0 else 1.0
    if task.stuck:
        fraction = min(fraction, _STUCK_FRACTION)
    return PROCESSING, max(0.0, min(fraction, 0.99))


def assign_slots(tasks: Iterable[EmulatedTask], now: float, max_concurrent: int | None) -> None:
    """Give processing slots, first come first served, to tasks whose queue time is over by ``now``."""
    ordered = list(tasks)
    waiting = [t for t in ordered if t.started_at is None and t.cancelled_at is None and t.ready_at <= now]
    if not waiting:
        return
    waiting.sort(key=lambda t: (t.ready_at, t.serial))
    if max_concurrent is None:
        for task in waiting:
            task.started_at = task.ready_at
        return
    running = [t for t in ordered if t.started_at is not None and t.cancelled_at is None]
    for task in waiting:
        # A slot can only free up when a running task ends, so those ends are the only candidate start times.
        candidates = sorted({task.ready_at} | {r.ends_at for r in running if task.ready_at < r.ends_at <= now})
        start = next(
            (
                moment
                for moment in candidates
                if sum(1 for r in running if r.started_at is not None and r.started_at <= moment < r.ends_at)
                < max_concurrent
            ),
            None,
        )
        if start is None:
            return  # every later task is blocked as well: keep arrival order
        task.started_at = start
        running.append(task)


def peak_overlap(tasks: Iterable[EmulatedTask]) -> int:
    """The largest number of tasks that were (or are) processing at the same moment."""
    events: list[tuple[float, int]] = []
    for task in tasks:
        if task.started_at is None or task.cancelled_at is not None:
            continue
        if task.ends_at > task.started_at:
            events.append((task.started_at, 1))
            events.append((task.ends_at, -1))
    events.sort()  # at equal times an end (-1) sorts before a start (+1)
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak
