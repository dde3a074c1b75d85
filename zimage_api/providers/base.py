"""The one protocol every provider speaks, and the values that travel through it.

The engine drives every provider the same way: plan an order into units, submit a unit, collect its handle,
recover a request whose run died while sending it, cancel a task. A provider builds its requests from the typed
order; the engine never looks at which provider, api or order kind it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..cancel import CancelToken
from ..catalog import PROVIDERS, ROUTES, Route
from ..catalog import Provider as ProviderName
from ..http.deadline import Deadline

if TYPE_CHECKING:
    from ..http.retry import RetryNotice
    from ..orders import Order
    from ..results import GenerationResult

__all__ = ["ProviderName", "Route", "PROVIDER_NAMES", "ROUTES", "Unit", "Call", "Handle", "Accepted", "Recovery",
           "Provider"]


# Who is paid (a provider's name in the store, the limits and the configuration) and how an order is sent (its
# route: WaveSpeed's /v1/images, WaveSpeed's v3, or Qingbo's tasks) are defined once, in the catalog.
PROVIDER_NAMES: tuple[ProviderName, ...] = PROVIDERS


@dataclass(frozen=True)
class Unit:
    """One paid picture (or task) of an order: its place, its seed, the fingerprint of its request, and which
    reference picture it edits (None for a text-to-image order)."""

    index: int
    seed: int | None
    key: str
    reference: int | None = None


@dataclass(frozen=True)
class Call:
    """What the requests of one unit share: one deadline, the caller's Cancel, retry notices and progress."""

    deadline: Deadline
    cancel: CancelToken
    on_retry: Callable[[RetryNotice | None], None]
    on_progress: Callable[[float, str], None]
    on_state: Callable[[str], None]
    sleep: Callable[[float], None]
    resume_hint: Callable[[str], str | None]


@dataclass(frozen=True)
class Handle:
    """What a submit bought: a task to wait for (``task_id``), or, for a synchronous api, the finished result.

    ``first`` is the provider's first answer about the task (its status when submitted).
    """

    task_id: str | None = None
    result: GenerationResult | None = None
    first: object | None = None
    cost_usd: float | None = None
    pre_consumed: float | None = None  # the quota the provider reserved for the task, where it says


@dataclass(frozen=True)
class Accepted:
    """A task bought (or found bought ``earlier`` under the same inputs) and not waited for."""

    task_id: str
    earlier: bool = False
    pre_consumed_cost: float | None = None


@dataclass(frozen=True)
class Recovery:
    """What became of a request whose run died after sending it, as its provider can tell.

    * ``resend``: sending the same request again is safe (an Idempotency-Key returns the same task);
    * ``found``: the provider's history shows exactly this task (``task_id``), collected without paying;
    * ``absent``: the history shows the request never arrived: send it;
    * otherwise uncertain: ``candidates`` tasks could be it, or ``reason`` says why nothing can tell.
    """

    resend: bool = False
    task_id: str | None = None
    model: str | None = None  # the found task's model, as the store records it
    absent: bool = False
    candidates: int | None = None
    reason: str | None = None

    @property
    def certain(self) -> bool:
        return self.resend or self.absent or self.task_id is not None


class Provider(Protocol):
    """A paid service, as the engine drives it."""

    name: ProviderName
    label: str  # how messages name it: "WaveSpeed", "Qingbo"

    def endpoint(self) -> str:
        """The base URL of the server in use (part of every fingerprint: a receipt never crosses servers)."""
        ...

    def plan(self, order: Order, endpoint: str) -> list[Unit]:
        """The paid units of ``order``, in output order, each with its seed and request fingerprint."""
        ...

    def price(self, order: Order) -> float:
        """The price of one unit of ``order`` in USD (published, or the catalog's estimate)."""
        ...

    def check_funds(self, order: Order, units: int, call: Call) -> float | None:
        """Refuse, before anything is sent, a run of ``units`` paid units the account cannot pay
        (:class:`~zimage_api.errors.InsufficientBalanceError`); the balance in USD where the provider tells it."""
        ...

    def model_id(self, order: Order) -> str:
        """The model ``order`` runs, as the provider names it (recorded with what it cost)."""
        ...

    def what(self, order: Order) -> str:
        """The paid request as messages name it ("the image request", "the prediction request")."""
        ...

    def submit(self, order: Order, unit: Unit, call: Call, *, idempotency_key: Callable[[], str]) -> Handle:
        """Send the paid request of ``unit`` (``idempotency_key()`` gives its key, for a provider that takes one)."""
        ...

    def earlier(self, task_id: str) -> Handle:
        """The handle of a task submitted in an earlier run (nothing is sent)."""
        ...

    def collect(self, handle: Handle, call: Call, *, seed: int | None = None,
                size: tuple[int, int] | None = None) -> GenerationResult:
        """The pictures of a submitted task, waited for and downloaded (a finished handle is returned as it is).
        ``seed`` and ``size`` are what the unit asked for, for the result's record."""
        ...

    def fetch_again(self, order: Order, unit: Unit, urls: Sequence[str], kept: dict[str, object],
                    call: Call) -> GenerationResult:
        """The pictures of a paid result whose download failed, from its kept URLs (free)."""
        ...

    def recover(self, order: Order, since: float, until: float, known: Container[str], call: Call) -> Recovery:
        """What became of a request sent between ``since`` and ``until`` (unix seconds) by a run that died."""
        ...

    def cancel(self, task_id: str) -> bool:
        """Best-effort remote cancel of a queued task; False where the provider cannot."""
        ...
