"""Money before a run: the WaveSpeed balance check, the price of a request, the budget's words, a task's cost.

Nothing here holds process-wide state: a :class:`BalanceCheck` or :class:`Prices` is an object its caller owns
(one per engine, say), with an injectable clock. The clients that ask WaveSpeed are passed in; this module only
decides when to ask, what to remember and what to tell the artist.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .catalog import QINGBO_USD_PER_PICTURE, QUOTA_PER_USD, V3_MODEL_PATHS, V3_MODELS, WAVESPEED_USD_PER_PICTURE, usd
from .errors import CancelledError, ConfigError, InsufficientBalanceError, InvalidResponseError, ZImageError
from .http.deadline import Deadline
from .http.retry import RetryNotice
from .logs import logger

__all__ = [
    "Funds",
    "BalanceCheck", "Prices", "PriceSource", "BalanceSource", "BALANCE_MAX_AGE", "PRICE_MAX_AGE",
    "balance_refusal", "budget_message", "format_budget", "format_usd", "key_digest", "price_key", "pricing_inputs",
    "task_cost_usd",
]

BALANCE_MAX_AGE = 60.0
"""Seconds a balance that covers the runs is trusted before WaveSpeed is asked again."""
PRICE_MAX_AGE = 3600.0
"""Seconds a price WaveSpeed quoted is kept; a price that could not be asked is asked again after a minute."""
_UNREACHABLE_RETRY = 60.0
_FINAL_UNPAID = ("failed", "cancelled", "canceled")


class BalanceSource(Protocol):
    """What :class:`BalanceCheck` needs of a client: :meth:`WaveSpeedClient.balance`."""

    def balance(self, *, deadline: Deadline | None = None, cancel_check: Callable[[], bool] | None = None,
                on_retry: Callable[[RetryNotice | None], None] | None = None) -> float: ...


class PriceSource(Protocol):
    """What :class:`Prices` needs of a client: :meth:`WaveSpeedClient.price`."""

    def price(self, model_id: str, inputs: Mapping[str, Any], *, deadline: Deadline | None = None,
              cancel_check: Callable[[], bool] | None = None,
              on_retry: Callable[[RetryNotice | None], None] | None = None) -> float: ...


def format_usd(amount: float) -> str:
    """An amount as the balance and price messages say it: ``$0.010``, ``$12.500`` (three decimals)."""
    return f"${amount:.3f}"


def format_budget(amount: float) -> str:
    """A budget as the artist wrote it: ``$0.05``, ``$2.00``, ``$0.125``."""
    return f"${amount:.2f}" if round(amount, 2) == amount else f"${amount:g}"


def key_digest(key: str) -> str:
    """The id under which a key's balance is remembered: the first 16 hex digits of its sha256, never the key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def balance_refusal(provider: str, /, *, balance: float | None = None, price: float | None = None,
                    sent: bool = False, detail: str = "", **error_fields: Any) -> InsufficientBalanceError:
    """The one message of a balance that does not cover a run, for both providers.

    With ``balance`` and ``price`` (WaveSpeed's balance read before sending, ``sent`` False): "Your WaveSpeed
    balance is $0.010, and this run costs $0.024: top up at WaveSpeed, then queue again. Nothing was sent." Without
    a balance (an HTTP 402, ``sent`` True, ``detail`` what the provider said): "Your Qingbo balance is too low for
    this run, which costs $0.011 (HTTP 402: insufficient balance): top up at Qingbo, then queue again. Nothing was
    charged." ``error_fields`` (status, code, body...) go to the error as :class:`APIError` takes them.
    """
    if balance is not None and price is not None:
        said = f"Your {provider} balance is {format_usd(balance)}, and this run costs {format_usd(price)}"
    else:
        said = f"Your {provider} balance is too low"
        if price is not None:
            said += f" for this run, which costs {format_usd(price)}"
        if sent:
            said += f" (HTTP 402{': ' + detail if detail else ''})"
    outcome = "Nothing was charged." if sent else "Nothing was sent."
    return InsufficientBalanceError(f"{said}: top up at {provider}, then queue again. {outcome}",
                                    balance=balance, price=price, **{"provider": provider, **error_fields})


def budget_message(budget: float, spent: float, price: float, *, setting: str = "`[budget] daily_usd` in zimage.ini"
                   ) -> str:
    """The words of :class:`~zimage_api.errors.BudgetExceededError`: "Today's Z-Image budget of $0.05 is spent:
    $0.048 so far, and this picture costs $0.012. Raise `[budget] daily_usd` in zimage.ini or wait until
    midnight." ``setting`` names where the budget was set (the environment wins over the file)."""
    return (f"Today's Z-Image budget of {_amount(budget)} is spent: {_amount(spent)} so far, and this picture costs "
            f"{_amount(price)}. Raise {setting} or wait until midnight.")


def _amount(amount: float) -> str:
    """$0.05, $0.048, $0.0106: as many decimals as the amount has (at least two, at most four)."""
    return usd(amount)


def _best_effort_failure(err: ZImageError) -> bool:
    """Whether a failed balance or price request may be passed over: anything but a cancel or a missing setup."""
    return not isinstance(err, (CancelledError, ConfigError))


@dataclass
class _Balance:
    usd: float | None  # None: the route could not be reached
    asked_at: float
    since: float = 0.0  # the prices of the runs let through on this reading


class BalanceCheck:
    """Refuses a WaveSpeed run the account's balance cannot pay, before anything is sent.

    ``client`` is a :class:`~zimage_api.providers.wavespeed_v3.WaveSpeedClient` (its :meth:`balance`); ``clock`` gives
    seconds (monotonic by default). A balance that covers a run is remembered per key for ``max_age`` seconds, less
    the price of each run let through meanwhile, so a key's balance is asked at most once a minute while it
    suffices; a balance that does not cover a run is asked again at the next run (the artist may have topped up).

    The check is best-effort: a balance route that cannot be reached (down, a server error, an unreadable answer)
    never blocks a run. It is logged, the run goes on, and the route is not asked again for that key for
    ``max_age`` seconds. A cancel and a missing key are raised as they are.
    """

    def __init__(self, client: BalanceSource, *, clock: Callable[[], float] = time.monotonic,
                 max_age: float = BALANCE_MAX_AGE, provider: str = "WaveSpeed") -> None:
        self.client = client
        self.clock = clock
        self.max_age = max_age
        self.provider = provider
        self._readings: dict[str, _Balance] = {}
        self._lock = threading.Lock()

    def check(self, run_price_usd: float, *, key_id: str, **call: Any) -> float | None:
        """The balance in USD that covers ``run_price_usd`` (from WaveSpeed, or the remembered reading less the runs
        let through since), or None when the balance could not be read.

        ``key_id`` is the API key the run pays with, or any stable id of it: only its sha256 is kept. ``call`` goes
        to the client's ``balance`` (``deadline``, ``cancel_check``, ``on_retry``). Raises
        :class:`~zimage_api.errors.InsufficientBalanceError` when the balance is below the price; nothing is sent.
        """
        digest = key_digest(key_id)
        with self._lock:
            now = self.clock()
            kept = self._readings.get(digest)
            if kept is not None and now - kept.asked_at < self.max_age:
                if kept.usd is None:
                    return None
                left = kept.usd - kept.since
                if left >= run_price_usd:
                    kept.since += run_price_usd
                    return left
            try:
                usd: float | None = self.client.balance(**call)
            except ZImageError as err:
                if not _best_effort_failure(err):
                    raise
                logger.warning("the %s balance could not be read (%s); the run goes on without the balance check",
                               self.provider, err)
                usd = None
            if usd is None:
                self._readings[digest] = _Balance(None, self.clock())
                return None
            if usd < run_price_usd:
                self._readings.pop(digest, None)  # a low balance is asked again at the next run
                raise balance_refusal(self.provider, balance=usd, price=run_price_usd)
            self._readings[digest] = _Balance(usd, self.clock(), since=run_price_usd)
            return usd

    def forget(self, key_id: str | None = None) -> None:
        """Drop the remembered balance of ``key_id`` (all keys when None): the next run asks again."""
        with self._lock:
            if key_id is None:
                self._readings.clear()
            else:
                self._readings.pop(key_digest(key_id), None)


def price_key(order: Any) -> tuple[str, str, int]:
    """What a price is remembered by: the v3 model id, the size ``W*H`` and the number of LoRAs. The Z-Image models
    are priced per picture; the prompt, seed and strength do not change the price."""
    width, height = order.size
    return order.v3_model.id, f"{width}*{height}", len(order.loras)


def pricing_inputs(order: Any) -> dict[str, Any]:
    """The body the price request describes: the prompt, the size and the LoRAs (what may change the price)."""
    model_id, size, _ = price_key(order)
    inputs: dict[str, Any] = {"prompt": order.prompt, "size": size}
    if order.loras:
        inputs["loras"] = [lora.as_json() for lora in order.loras]
    return inputs


def _catalog_price(order: Any) -> float:
    price = getattr(order, "price", None)
    if isinstance(price, (int, float)):
        return float(price)
    return QINGBO_USD_PER_PICTURE if getattr(order, "route", None) == "qingbo" else WAVESPEED_USD_PER_PICTURE


@dataclass
class _Price:
    usd: float
    source: str
    until: float


class Prices:
    """The price of one request before running it, asked of WaveSpeed (``POST /api/v3/model/pricing``) and kept.

    ``client`` is a :class:`~zimage_api.providers.wavespeed_v3.WaveSpeedClient` (its :meth:`price`), or None to use the
    catalog only. A quoted price is kept ``max_age`` seconds per :func:`price_key`; when the route cannot be reached
    the catalog price is used (and the route is asked again a minute later). Orders that do not go to WaveSpeed v3
    (Qingbo, ``/v1/images``) have no such route: their price is the catalog's.
    """

    def __init__(self, client: PriceSource | None, *, clock: Callable[[], float] = time.monotonic,
                 max_age: float = PRICE_MAX_AGE) -> None:
        self.client = client
        self.clock = clock
        self.max_age = max_age
        self._kept: dict[tuple[str, str, int], _Price] = {}
        self._lock = threading.Lock()

    def price_of(self, order: Any, **call: Any) -> tuple[float, str]:
        """``(usd, source)``: the price of one request (one picture) of ``order``; ``source`` is ``"wavespeed"``
        (quoted by the pricing route) or ``"catalog"`` (the published price, or the estimate where none is
        published). ``call`` goes to the client's ``price`` (``deadline``, ``cancel_check``, ``on_retry``)."""
        if self.client is None or getattr(order, "route", None) != "wavespeed-v3":
            return _catalog_price(order), "catalog"
        key = price_key(order)
        with self._lock:
            now = self.clock()
            kept = self._kept.get(key)
            if kept is not None and now < kept.until:
                return kept.usd, kept.source
            try:
                usd = self.client.price(key[0], pricing_inputs(order), **call)
            except ZImageError as err:
                if not _best_effort_failure(err):
                    raise
                logger.warning("WaveSpeed's price of %s could not be read (%s); using the catalog price", key[0], err)
                fallback = _Price(_catalog_price(order), "catalog", self.clock() + _UNREACHABLE_RETRY)
                self._kept[key] = fallback
                return fallback.usd, fallback.source
            self._kept[key] = _Price(usd, "wavespeed", self.clock() + self.max_age)
            return usd, "wavespeed"


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def task_cost_usd(entry: Mapping[str, Any]) -> float | None:
    """What a recorded task costs in USD: a Qingbo task its recorded ``cost_quota`` (500,000 quota = 1 USD), a
    WaveSpeed prediction its model's catalog price; a failed or cancelled task 0; None when not known yet (a Qingbo
    task still running)."""
    status = str(entry.get("status") or "").lower()
    if status in _FINAL_UNPAID:
        return 0.0
    if entry.get("provider") == "qingbo":
        quota = _number(entry.get("cost_quota"))
        return None if quota is None else round(quota / QUOTA_PER_USD, 6)
    model = str(entry.get("model") or "")
    spec = V3_MODELS.get(V3_MODEL_PATHS.get(model, model))
    return spec.price if spec is not None else WAVESPEED_USD_PER_PICTURE


@dataclass
class Funds:
    """What an entry point keeps between its runs: the balance readings and the quoted prices, so that a key's
    balance is asked at most once a minute and a price once an hour, however many runs go by. The providers hand
    each check the client of the run in progress."""

    balance: BalanceCheck
    prices: Prices

    @classmethod
    def new(cls, clock: Callable[[], float] = time.monotonic) -> Funds:
        return cls(BalanceCheck(_NoClient(), clock=clock), Prices(None, clock=clock))


class _NoClient:
    """A balance source before the first run hands over its client."""

    def balance(self, *, deadline: Deadline | None = None, cancel_check: Callable[[], bool] | None = None,
                on_retry: Callable[[RetryNotice | None], None] | None = None) -> float:
        raise InvalidResponseError("no client yet", provider="WaveSpeed")
