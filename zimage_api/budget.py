"""The daily spending budget: how many US dollars of paid pictures a day may cost, and when a day starts.

The budget is ``ZIMAGE_DAILY_BUDGET_USD`` in the environment, else ``daily_usd`` under ``[budget]`` in
``zimage.ini``; the environment wins. Empty or absent means no budget. A day starts at local midnight.
"""

from __future__ import annotations

import math
import os
import time

from .config import config_path, read_setting
from .errors import ConfigError

__all__ = ["BUDGET_ENV", "daily_budget", "day_start", "parse_budget", "budget_setting"]

BUDGET_ENV = "ZIMAGE_DAILY_BUDGET_USD"


def parse_budget(text: str, where: str) -> float | None:
    """A budget in USD from ``text`` (a leading ``$`` is allowed; empty: None). ``where`` names the variable or the
    setting for the :class:`ConfigError` of a value that is not a finite amount of 0 or more."""
    cleaned = text.strip().removeprefix("$").strip()
    if not cleaned:
        return None
    try:
        value = float(cleaned)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{where} must be an amount of US dollars such as 0.50, got {text.strip()[:40]!r}; fix it "
                          "or leave it empty for no budget.")
    return value


def daily_budget() -> float | None:
    """Today's budget in USD, or None when no budget is set. Read at every call, so an edit applies to the next run.

    Raises :class:`ConfigError` naming ``ZIMAGE_DAILY_BUDGET_USD`` or ``[budget] daily_usd`` when the value is not
    an amount.
    """
    from_env = os.environ.get(BUDGET_ENV, "")
    if from_env.strip():
        return parse_budget(from_env, BUDGET_ENV)
    return parse_budget(read_setting("budget", "daily_usd"), f"daily_usd under [budget] in {config_path()}")


def budget_setting() -> str:
    """Where the day's budget is set, as messages name it: the environment variable when it is set, else the file."""
    if os.environ.get(BUDGET_ENV, "").strip():
        return BUDGET_ENV
    return f"`[budget] daily_usd` in {config_path()}"


def day_start(now: float | None = None) -> float:
    """The unix time of the local midnight that began the day of ``now`` (unix seconds; default: now)."""
    moment = time.localtime(time.time() if now is None else now)
    return time.mktime((moment.tm_year, moment.tm_mon, moment.tm_mday, 0, 0, 0, 0, 0, -1))
