"""WaveSpeed's account routes, read defensively: the prediction history, the balance and the price of a request.

The history (``POST /api/v3/predictions``) is how a prediction whose id never reached us, because the process
died between sending the submit and reading its answer, is found again. These functions only read answers; the
requests go out through :class:`~zimage_api.providers.wavespeed_v3.WaveSpeedClient`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from ..config import WAVESPEED
from ..errors import InvalidResponseError
from ..logs import logger

__all__ = [
    "HistoryItem", "HISTORY_PAGE_SIZE_MAX", "HISTORY_STATUSES", "ORPHAN_SKEW_SECONDS", "parse_timestamp",
    "iso_utc", "parse_history_page", "parse_balance", "parse_unit_price",
]

HISTORY_PAGE_SIZE_MAX = 100
HISTORY_STATUSES = ("completed", "failed", "processing")
ORPHAN_SKEW_SECONDS = 5.0
"""How far apart our clock and WaveSpeed's may be: an orphan search widens its window by this much on each side."""

_MS_THRESHOLD = 1e11  # a unix time above this is in milliseconds (1e11 s would be the year 5138)
_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
    r"\s*([Zz]|[+-]\d{2}(?::?\d{2})?)?"
)
_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class HistoryItem:
    """One prediction in WaveSpeed's history: ``created_at`` in unix seconds, ``status`` the provider's own word
    (``created``, ``processing``, ``completed``, ``failed``...), ``outputs`` its URLs (or base64) once completed."""

    id: str
    model: str
    status: str
    created_at: float
    outputs: tuple[str, ...] = ()
    error: str = ""


def _from_number(value: float) -> float | None:
    if not math.isfinite(value) or value <= 0:
        return None
    return value / 1000.0 if value > _MS_THRESHOLD else float(value)


def _offset(text: str | None) -> timezone:
    if not text or text in ("Z", "z"):
        return timezone.utc
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def parse_timestamp(value: Any) -> float | None:
    """Unix seconds from an ISO 8601 text (``Z``, an offset, or none for UTC; any number of fraction digits) or
    from a unix time in seconds or milliseconds (a number or a numeric text); ``None`` when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return _from_number(float(value))
    if not isinstance(value, str):
        return None
    text = value.strip()
    if _NUMBER.fullmatch(text):
        return _from_number(float(text))
    match = _ISO.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                          int((fraction or "0")[:6].ljust(6, "0")), tzinfo=_offset(zone))
    except (ValueError, OverflowError):  # a 31 February, an offset of 25 hours
        return None
    return moment.timestamp()


def iso_utc(moment: datetime | float, *, round_up: bool = False) -> str:
    """``moment`` (a datetime, naive meaning UTC, or unix seconds) as ``2026-05-28T12:00:00Z``, whole seconds
    rounded down, or up with ``round_up``: the conservative form of ISO 8601, and a window rounded outwards."""
    if isinstance(moment, datetime):
        seconds = (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
    else:
        seconds = float(moment)
    whole = math.ceil(seconds) if round_up else math.floor(seconds)
    return datetime.fromtimestamp(whole, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _invalid(what: str, answer: Any) -> InvalidResponseError:
    return InvalidResponseError(f"WaveSpeed answered {what} without the documented data; try again shortly.",
                                provider=WAVESPEED.name, status=200, body=answer)


def _data(answer: Any, what: str) -> dict[str, Any]:
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, dict):
        raise _invalid(what, answer)
    return data


def _item(raw: Any) -> HistoryItem | None:
    """One history item, or ``None`` (logged) when it has no id or no readable creation time."""
    if not isinstance(raw, dict):
        logger.debug("skipped a WaveSpeed history item that is not an object")
        return None
    pid = raw.get("id")
    if not isinstance(pid, str) or not pid.strip():
        logger.debug("skipped a WaveSpeed history item without an id")
        return None
    created = parse_timestamp(raw.get("created_at"))
    if created is None:
        logger.debug("skipped WaveSpeed history item %s: its created_at is unreadable", pid[:64])
        return None
    outputs = raw.get("outputs")
    return HistoryItem(
        id=pid.strip(),
        model=str(raw.get("model") or ""),
        status=str(raw.get("status") or "").strip().lower(),
        created_at=created,
        outputs=tuple(str(o) for o in outputs if isinstance(o, str) and o) if isinstance(outputs, list) else (),
        error=str(raw.get("error") or ""),
    )


def parse_history_page(answer: Any) -> tuple[list[HistoryItem], int | None, int]:
    """``(items, total, raw count)`` of one history page; a malformed item is skipped, a malformed page raises
    :class:`InvalidResponseError`. ``total`` is ``None`` when the answer does not say it."""
    data = _data(answer, "the prediction history")
    raw_items = data.get("items")
    if raw_items is None:
        raw_items = []
    if not isinstance(raw_items, list):
        raise _invalid("the prediction history", answer)
    total = data.get("total")
    known_total = int(total) if isinstance(total, (int, float)) and not isinstance(total, bool) and total >= 0 \
        else None
    items = [item for item in map(_item, raw_items) if item is not None]
    return items, known_total, len(raw_items)


def _amount(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _usd(data: dict[str, Any], answer: Any, what: str) -> None:
    currency = data.get("currency")
    if currency is not None and str(currency).upper() != "USD":
        raise InvalidResponseError(f"WaveSpeed answered {what} in {str(currency)[:8]}, not in US dollars.",
                                   provider=WAVESPEED.name, status=200, body=answer)


def parse_balance(answer: Any) -> float:
    """The balance in USD from ``data.balance``, with or without ``data.currency``."""
    data = _data(answer, "the balance")
    balance = _amount(data.get("balance"))
    if balance is None:
        raise _invalid("the balance", answer)
    _usd(data, answer, "the balance")
    return balance


def parse_unit_price(answer: Any) -> float:
    """The price of one request in USD from ``data.unit_price``."""
    data = _data(answer, "the price")
    price = _amount(data.get("unit_price"))
    if price is None or price < 0:
        raise _invalid("the price", answer)
    _usd(data, answer, "the price")
    return price
