"""The retry policy's pure decisions: what may be repeated, how long to wait, and Retry-After parsing."""

from __future__ import annotations

import random

import pytest

from zimage_api.http.retry import DEFAULT_POLICY, Failure, RetryPolicy, delay_for, parse_retry_after, should_retry

NOW = 1_780_000_000.0


@pytest.mark.parametrize(
    ("failure", "status", "repeatable", "expected"),
    [
        (Failure.CONNECT, None, False, True),  # never reached the server: safe even for a paid submit
        (Failure.STATUS, 429, False, True),
        (Failure.STATUS, 503, False, True),
        (Failure.STATUS, 500, False, False),  # may have processed: a paid submit is not repeated
        (Failure.STATUS, 502, False, False),
        (Failure.RESET, None, False, False),
        (Failure.READ_TIMEOUT, None, False, False),
        (Failure.STATUS, 500, True, True),  # a GET or an idempotent submit may be repeated
        (Failure.STATUS, 504, True, True),
        (Failure.RESET, None, True, True),
        (Failure.READ_TIMEOUT, None, True, True),
        (Failure.STATUS, 400, True, False),
        (Failure.STATUS, 401, True, False),
        (Failure.STATUS, 404, True, False),
    ],
)
def test_should_retry_table(failure: Failure, status: int | None, repeatable: bool, expected: bool) -> None:
    assert should_retry(DEFAULT_POLICY, 1, failure, status=status, repeatable=repeatable) is expected


def test_gives_up_after_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=6)
    assert should_retry(policy, 5, Failure.CONNECT, repeatable=True)
    assert not should_retry(policy, 6, Failure.CONNECT, repeatable=True)


def test_backoff_grows_from_half_a_second_and_caps_at_twenty() -> None:
    policy = RetryPolicy(jitter=0.0)
    assert [delay_for(policy, n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 20.0]


def test_jitter_stays_within_its_band_and_varies() -> None:
    policy = RetryPolicy(jitter=0.25)
    rng = random.Random(7)
    delays = [delay_for(policy, 3, rng=rng) for _ in range(200)]
    assert all(1.5 <= d <= 2.5 for d in delays)
    assert len({round(d, 6) for d in delays}) > 50


def test_retry_after_wins_and_is_capped() -> None:
    policy = RetryPolicy(max_retry_after=60.0)
    assert delay_for(policy, 1, retry_after=3.0) == 3.0
    assert delay_for(policy, 1, retry_after=500.0) == 60.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", 1.0),
        ("2.5", 2.5),
        (" 7 ", 7.0),
        (3, 3.0),
        ("0", 0.0),
        ("inf", None),
        ("nan", None),
        ("-3", None),
        ("", None),
        (None, None),
        ("soon", None),
        (True, None),
    ],
)
def test_parse_retry_after_table(value: object, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected  # type: ignore[arg-type]


def test_parse_retry_after_http_date() -> None:
    import email.utils

    date = email.utils.formatdate(NOW + 30, usegmt=True)
    assert parse_retry_after(date, NOW) == pytest.approx(30.0)
    past = email.utils.formatdate(NOW - 30, usegmt=True)
    assert parse_retry_after(past, NOW) == 0.0
