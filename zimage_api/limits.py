"""One limit of paid requests in flight per provider, shared by every node, pool and CLI job of the process, and
through the store by every process that shares it.

Nodes that run side by side must not trip a provider's rate limit together: WaveSpeed's default account allows 2
concurrent tasks, so that is the default there. Set a limit with ``ZIMAGE_WAVESPEED_CONCURRENCY`` /
``ZIMAGE_QINGBO_CONCURRENCY``, or ``concurrency = N`` in the provider's section of ``zimage.ini``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .config import read_setting
from .logs import logger
from .store import LeaseKeeper, Store, new_owner

__all__ = ["ProviderLimits", "LIMITS", "DEFAULT_LIMITS"]

DEFAULT_LIMITS = {"wavespeed": 2, "qingbo": 4}
# The longest a run waiting for another process's slot sleeps before it looks again: PostgreSQL wakes it as soon as a
# slot is given back; this bounds the wait for a slot whose holder died (free once its lease ends).
SHARED_WAIT_SECONDS = 5.0
_MAX_LIMIT = 64


def _configured_limit(provider: str) -> int:
    env = f"ZIMAGE_{provider.upper()}_CONCURRENCY"
    raw = os.environ.get(env, "").strip() or read_setting(provider, "concurrency").strip()
    if not raw:
        return DEFAULT_LIMITS.get(provider, 2)
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= _MAX_LIMIT:
        logger.warning("%s concurrency %r is not a whole number 1-%d; using %d", provider, raw, _MAX_LIMIT,
                       DEFAULT_LIMITS.get(provider, 2))
        return DEFAULT_LIMITS.get(provider, 2)
    return value


class ProviderLimits:
    """A counting limit per provider (``"wavespeed"``, ``"qingbo"``). ``limits`` overrides the configuration."""

    def __init__(self, limits: dict[str, int] | None = None) -> None:
        self._fixed = dict(limits or {})
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._in_flight: dict[str, int] = {}

    def limit(self, provider: str) -> int:
        """The limit in force now; the configuration is read each time, so a change applies to the next unit."""
        return self._fixed.get(provider) or _configured_limit(provider)

    def in_flight(self, provider: str) -> int:
        with self._lock:
            return self._in_flight.get(provider, 0)

    @contextmanager
    def slot(self, provider: str, *, cancelled: Callable[[], bool] = lambda: False,
             on_wait: Callable[[int, int], None] | None = None, poll_seconds: float = 0.25,
             store: Store | None = None, keeper: LeaseKeeper | None = None,
             cancel_event: threading.Event | None = None) -> Iterator[None]:
        """Hold one of ``provider``'s slots for the block; wait for one first if all are taken.

        With a ``store``, the slot is also a row in it, so every process of that store (every ComfyUI of a farm
        sharing one PostgreSQL store) counts against one limit; ``keeper`` renews its lease while the block runs,
        and a slot whose process died is free once its lease ends.

        ``on_wait(in_flight, limit)`` is called once when the wait starts. The wait checks ``cancelled`` every
        ``poll_seconds`` and raises :class:`InterruptedError` when it answers True; nothing was sent then.
        """
        told = False

        def wait_started(in_flight: int) -> None:
            nonlocal told
            if not told and on_wait is not None:
                told = True
                on_wait(in_flight, self.limit(provider))

        with self._cond:
            while self._in_flight.get(provider, 0) >= self.limit(provider):
                if cancelled():
                    raise InterruptedError("cancelled while waiting for a free slot")
                wait_started(self._in_flight.get(provider, 0))
                self._cond.wait(poll_seconds)
            self._in_flight[provider] = self._in_flight.get(provider, 0) + 1
        owner = None
        try:
            if store is not None:
                owner = new_owner()
                while not (taken := store.take_slot(provider, owner, self.limit(provider))).taken:
                    if cancelled():
                        raise InterruptedError("cancelled while waiting for a free slot")
                    wait_started(taken.in_flight)
                    # Woken when a slot is given back; at the latest when the first lease would end (a holder
                    # that died gives nothing back).
                    until_free = (taken.free_at - time.time()) if taken.free_at is not None else SHARED_WAIT_SECONDS
                    store.wait(min(max(until_free, 0.05), SHARED_WAIT_SECONDS), cancel_event)
                if keeper is not None:
                    keeper.hold(f"slot:{provider}", owner)
            yield
        finally:
            if store is not None and owner is not None:
                if keeper is not None:
                    keeper.drop(f"slot:{provider}", owner)
                try:
                    store.free_slot(provider, owner)
                except OSError as err:  # the store went away: the slot is free again once its lease ends
                    logger.warning("could not give back a %s slot: %s", provider, err)
            with self._cond:
                self._in_flight[provider] -= 1
                self._cond.notify_all()


LIMITS = ProviderLimits()
