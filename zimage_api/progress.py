"""The progress of the units (pictures or tasks) of one run, shared between worker threads and the reporter."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BatchProgress"]


@dataclass
class _Unit:
    state: str = "waiting"
    fraction: float = 0.0
    before_retry: str | None = None  # the unit's own state while a retry notice stands in for it


class BatchProgress:
    """Thread-safe progress of the units (pictures or tasks) of one run.

    Worker threads call :meth:`update`; the caller's thread reads :meth:`total` and :meth:`summary` and uses
    :attr:`version` to redraw only when something changed.
    """

    def __init__(self, units: int) -> None:
        self._units = [_Unit() for _ in range(max(units, 1))]
        self._lock = threading.Lock()
        self.version = 0
        self.changed = threading.Event()  # set on every update, so a waiting reader can redraw at once

    def __len__(self) -> int:
        return len(self._units)

    def update(self, index: int, fraction: float | None = None, state: str | None = None) -> None:
        """Record a unit's progress (0..1) and/or state word ("queued", "processing 45%", "done"...)."""
        with self._lock:
            unit = self._units[index]
            if fraction is not None and math.isfinite(fraction):
                unit.fraction = min(max(fraction, 0.0), 1.0)
            if state:
                unit.state = state
                unit.before_retry = None
            self.version += 1
        self.changed.set()

    def retrying(self, index: int, notice: str | None) -> None:
        """Show a retry notice ("Qingbo busy (HTTP 503), retrying in 4 s (attempt 2 of 6)") as the unit's state;
        ``None`` puts the unit's own state back once the retried request got its answer."""
        with self._lock:
            unit = self._units[index]
            if notice is None:
                if unit.before_retry is None:
                    return
                unit.state, unit.before_retry = unit.before_retry, None
            else:
                if unit.before_retry is None:
                    unit.before_retry = unit.state
                unit.state = notice
            self.version += 1
        self.changed.set()

    def callback(self, index: int) -> Callable[[float, str], None]:
        """A progress callback for the library's waits: ``(fraction, "processing 45%, 3.1s")``."""

        def report(fraction: float, text: str) -> None:
            self.update(index, fraction, text.split(",")[0].strip() or None)

        return report

    def total(self) -> float:
        """The units' progress summed, 0..len(self)."""
        with self._lock:
            return sum(unit.fraction for unit in self._units)

    def summary(self) -> str:
        """The states counted, e.g. "2 done, 1 processing 45%, 1 queued" (or the single state for one unit)."""
        with self._lock:
            states = [unit.state for unit in self._units]
        if len(states) == 1:
            return states[0]
        counts: dict[str, int] = {}
        for state in states:
            counts[state] = counts.get(state, 0) + 1
        return ", ".join(f"{n} {state}" for state, n in counts.items())
