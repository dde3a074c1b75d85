"""``spend``: what the paid pictures of today (or of a window) cost, by provider, against the daily budget."""

from __future__ import annotations

import json
import re
import time
from typing import Protocol

from ..account import format_budget, format_usd
from ..budget import BUDGET_ENV, daily_budget, day_start
from .runtime import UsageError, to_stdout

__all__ = ["SpendSource", "show_spend", "window_start", "PROVIDERS"]

PROVIDERS = ("wavespeed", "qingbo")
_WINDOW = re.compile(r"(\d{1,5})\s*([dh])")


class SpendSource(Protocol):
    """What ``spend`` reads of the store: USD per provider of the paid units in ``[since, until)``."""

    def spend(self, since: float, until: float | None = None) -> dict[str, float]: ...


def window_start(since: str, now: float) -> float:
    """The unix time a ``--since`` value starts at: ``today`` (local midnight), ``Nd`` (N days ago) or ``Nh`` (N
    hours ago). Anything else is a :class:`UsageError`."""
    text = since.strip().lower()
    if text == "today":
        return day_start(now)
    match = _WINDOW.fullmatch(text)
    if match is None:
        raise UsageError(f"--since takes today, a number of days such as 7d or of hours such as 12h, got "
                         f"{since.strip()[:20]!r}.", field="since")
    count, unit = int(match.group(1)), match.group(2)
    return now - count * (86400.0 if unit == "d" else 3600.0)


def _by_provider(store: SpendSource, since: float, until: float) -> dict[str, float]:
    raw = store.spend(since, until)
    spent = {name: round(float(raw.get(name) or 0.0), 6) for name in PROVIDERS}
    spent.update((name, round(float(usd or 0.0), 6)) for name, usd in raw.items() if name not in spent)
    return spent


def _when(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(moment))


def show_spend(store: SpendSource, *, since: str = "today", as_json: bool = False, now: float | None = None) -> None:
    """Print the spend of the window ``since`` by provider, and today's spend against the daily budget.

    With ``as_json``, one object: ``since`` (as given), ``window_start`` (unix seconds), ``by_provider`` (USD of the
    window per provider), ``total_usd`` (of the window), ``today_usd``, ``budget_usd`` and ``left_usd`` (today's;
    null when no budget is set).
    """
    moment = time.time() if now is None else now
    start = window_start(since, moment)
    budget = daily_budget()
    by_provider = _by_provider(store, start, moment)
    midnight = day_start(moment)
    today = by_provider if start == midnight else _by_provider(store, midnight, moment)
    today_usd = round(sum(today.values()), 6)
    total = round(sum(by_provider.values()), 6)
    left = None if budget is None else round(max(budget - today_usd, 0.0), 6)
    if as_json:
        to_stdout(json.dumps({"since": since.strip().lower(), "window_start": round(start, 3),
                              "by_provider": by_provider, "total_usd": total, "today_usd": today_usd,
                              "budget_usd": budget, "left_usd": left}, separators=(",", ":")))
        return
    if start == midnight:
        to_stdout(f"Spent today (since {_when(start)}):")
    else:
        to_stdout(f"Spent since {_when(start)} ({since.strip().lower()}):")
    for name, usd in by_provider.items():
        to_stdout(f"  {name:<10} {format_usd(usd)}")
    to_stdout(f"  {'total':<10} {format_usd(total)}")
    if budget is None:
        to_stdout(f"Today: {format_usd(today_usd)}; no daily budget (set {BUDGET_ENV} or daily_usd under [budget] "
                  "in zimage.ini).")
    else:
        to_stdout(f"Today: {format_usd(today_usd)} of the daily budget of {format_budget(budget)}; "
                  f"{format_usd(left or 0.0)} left.")

