"""One cancellation token, from the node or the command line down to every wait and every retry sleep.

The caller makes a :class:`CancelToken` (with ComfyUI's interrupt flag, or Ctrl-C, as its ``check``) and hands it
to the engine, which hands it to the polling loop and the transport. Waiting code never sleeps longer than a slice
without asking the token, and on cancel raises :class:`~zimage_api.errors.CancelledError` (or its task form).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .errors import CancelledError

__all__ = ["CancelToken", "SLICE_SECONDS", "sleep_unless"]

SLICE_SECONDS = 0.25  # the longest sleep between two looks at the token: Cancel is felt within it


class CancelToken:
    """Set once by the caller, read from any thread.

    ``check`` is asked too (ComfyUI's ``processing_interrupted``); once it says yes the token stays cancelled.
    A token is also a cancel check: ``token()`` is :meth:`cancelled`.
    """

    def __init__(self, check: Callable[[], bool] | None = None, *, event: threading.Event | None = None) -> None:
        self.event = event if event is not None else threading.Event()
        self._check = check

    def cancel(self) -> None:
        self.event.set()

    def cancelled(self) -> bool:
        if self.event.is_set():
            return True
        if self._check is not None and self._check():
            self.event.set()
            return True
        return False

    __call__ = cancelled

    def raise_if_cancelled(self, what: str = "The run was cancelled.") -> None:
        if self.cancelled():
            raise CancelledError(what)

    def sleep(self, seconds: float, sleep: Callable[[float], None] = time.sleep,
              slice_seconds: float = SLICE_SECONDS) -> bool:
        """Sleep ``seconds`` through ``sleep`` in slices, looking at the token between them; True if cancelled."""
        return sleep_unless(self, seconds, sleep, slice_seconds)


def sleep_unless(cancelled: Callable[[], bool] | None, seconds: float, sleep: Callable[[float], None],
                 slice_seconds: float = SLICE_SECONDS) -> bool:
    """Sleep ``seconds`` in slices unless ``cancelled()`` turns true (checked before each slice); True if it did.

    Without a cancel check there is nothing to look at between slices: one sleep.
    """
    remaining = max(seconds, 0.0)
    if cancelled is None:
        if remaining > 0:
            sleep(remaining)
        return False
    while True:
        if cancelled is not None and cancelled():
            return True
        if remaining <= 0:
            return False
        step = min(slice_seconds, remaining)
        sleep(step)
        remaining -= step
