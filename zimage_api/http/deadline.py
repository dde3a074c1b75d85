"""One deadline per wait, passed down from the caller to the polling loop and the transport.

A :class:`Deadline` carries its own clock, so the layers below never measure it against another one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Deadline"]


@dataclass(frozen=True)
class Deadline:
    """The moment ``at`` (on ``clock``, monotonic) by which a wait must end; ``seconds`` is what was promised."""

    at: float
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)
    seconds: float = 0.0

    @classmethod
    def after(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> "Deadline":
        return cls(clock() + seconds, clock, float(seconds))

    def left(self) -> float:
        """Seconds until the deadline (negative once it has passed)."""
        return self.at - self.clock()

    def passed(self) -> bool:
        return self.left() <= 0
