"""Retry decisions as pure functions over a small frozen policy.

Nothing here sleeps or sends anything: the transport asks :func:`should_retry` and :func:`delay_for`, then sleeps
through the sleep function it was given. Two kinds of failure matter for money:

* the server certainly never got the request (connection refused, a 429 or 503 answer): any request may be retried;
* the server may have processed it (a reset or a read timeout after the request was sent, a 500): only requests
  that are safe to repeat (GETs, or POSTs under an ``Idempotency-Key``) may be retried, or a paid job is duplicated.
"""

from __future__ import annotations

import email.utils
import math
import random
from dataclasses import dataclass
from enum import Enum

__all__ = ["Failure", "RetryPolicy", "RetryNotice", "should_retry", "delay_for", "parse_retry_after", "DEFAULT_POLICY"]


class Failure(Enum):
    """How an attempt failed, as far as the client can tell."""

    CONNECT = "connect"  # the connection was never made: the server did nothing
    RESET = "reset"  # the connection dropped after the request was (maybe) sent
    READ_TIMEOUT = "read_timeout"  # sent, no answer in time: the server may be working on it
    STATUS = "status"  # an HTTP answer with an error status


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: ``base_delay * 2**n``, capped, for at most ``max_attempts`` attempts."""

    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 20.0
    jitter: float = 0.25  # +/- fraction of the delay, so parallel clients do not retry in lockstep
    max_retry_after: float = 60.0  # the longest server-requested wait that is honoured before giving up
    never_processed_statuses: frozenset[int] = frozenset({429, 503})
    retryable_statuses: frozenset[int] = frozenset({408, 425, 429, 500, 502, 503, 504})


DEFAULT_POLICY = RetryPolicy()


@dataclass(frozen=True)
class RetryNotice:
    """What a retry wait is about, for a status line: "WaveSpeed busy (HTTP 503), retrying in 4 s (attempt 2 of 6)".

    ``attempt`` is the attempt that follows the wait (2 for the first retry), ``attempts`` the most there will be.
    """

    provider: str
    cause: str
    delay: float
    attempt: int
    attempts: int

    def __str__(self) -> str:
        wait = f"{self.delay:.0f} s" if self.delay >= 1 else f"{self.delay:.1f} s"
        return f"{self.provider} {self.cause}, retrying in {wait} (attempt {self.attempt} of {self.attempts})"


def should_retry(policy: RetryPolicy, attempt: int, failure: Failure, *, status: int | None = None,
                 repeatable: bool) -> bool:
    """Whether attempt number ``attempt`` (1-based) that failed this way may be tried again.

    ``repeatable`` is True for GETs and for POSTs that carry an ``Idempotency-Key``.
    """
    if attempt >= policy.max_attempts:
        return False
    if failure is Failure.CONNECT:
        return True
    if failure is Failure.STATUS:
        if status in policy.never_processed_statuses:
            return True
        return repeatable and status in policy.retryable_statuses
    return repeatable


def delay_for(policy: RetryPolicy, attempt: int, *, retry_after: float | None = None,
              rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    A server-given ``retry_after`` wins (capped at ``max_retry_after``); otherwise exponential backoff with jitter.
    """
    if retry_after is not None:
        return min(max(retry_after, 0.0), policy.max_retry_after)
    delay = min(policy.base_delay * 2 ** (attempt - 1), policy.max_delay)
    spread = (rng or random).uniform(-policy.jitter, policy.jitter)
    return max(0.0, min(delay * (1.0 + spread), policy.max_delay))


def parse_retry_after(value: str | float | int | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: a number of seconds or an HTTP date. None when unusable.

    ``now`` is the current unix time, used for dates. Negative, NaN and infinite values are unusable.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip()
        if not text:
            return None
        try:
            seconds = float(text)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError):
                return None
            if when is None:
                return None
            seconds = when.timestamp() - now
            return max(seconds, 0.0)
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        return None
    return seconds
