"""The daily budget: how much the pack may spend on one local calendar day, across every provider.

``ZIMAGE_DAILY_BUDGET_USD``, or ``daily_usd`` under ``[budget]`` in ``zimage.ini`` (the environment wins). Unset means
no budget. The store reserves each paid unit's price against it, in the same transaction as the unit's claim.
"""

from __future__ import annotations

import math
import os
import time
from datetime import datetime

from .config import config_path, read_setting
from .errors import ConfigError

__all__ = ["BUDGET_ENV", "daily_budget", "day_start"]

BUDGET_ENV = "ZIMAGE_DAILY_BUDGET_USD"


def daily_budget() -> float | None:
    """The day's budget in USD, or None when none is set. A value that is not a number of 0 or more is a
    :class:`ConfigError` naming where it came from."""
    text = os.environ.get(BUDGET_ENV, "").strip()
    where = BUDGET_ENV
    if not text:
        text = read_setting("budget", "daily_usd")
        where = f"daily_usd under [budget] in {config_path()}"
    if not text:
        return None
    try:
        value = float(text.lstrip("$"))
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"The daily budget {text!r} ({where}) is not an amount of USD; write it like 5 or 0.50.")
    return value


def day_start(now: float | None = None) -> float:
    """The unix time of the local midnight that began the day of ``now`` (default: now)."""
    moment = datetime.fromtimestamp(time.time() if now is None else now)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
