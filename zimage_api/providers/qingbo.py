"""Qingbo's z-image-turbo tasks as the engine drives them: submitted under an Idempotency-Key derived from the
request, so a submit whose run died is sent again safely and Qingbo answers the same task."""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from typing import TYPE_CHECKING

from ..catalog import QINGBO_USD_PER_PICTURE
from ..config import QINGBO
from ..orders import QingboTasks, fingerprint
from ..results import GenerationResult
from .base import Call, Handle, ProviderName, Recovery, Unit

if TYPE_CHECKING:
    from ..clients import Clients
    from ..orders import Order

__all__ = ["QingboProvider"]


def _tasks(order: Order) -> QingboTasks:
    if not isinstance(order, QingboTasks):
        raise TypeError(f"Qingbo takes task orders, not {type(order).__name__}")
    return order


class QingboProvider:
    """Qingbo tasks: submitted, then collected by id (polling is free)."""

    name: ProviderName = "qingbo"
    label = QINGBO.name

    def __init__(self, clients: Clients) -> None:
        self._clients = clients

    def endpoint(self) -> str:
        return self._clients.qingbo().transport.base_url

    def plan(self, order: Order, endpoint: str) -> list[Unit]:
        tasks = _tasks(order)
        return [Unit(i, tasks.seed_of(i), fingerprint(tasks.kind, endpoint=endpoint, prompt=tasks.prompt, index=i,
                                                       **tasks.options(), seed=tasks.seed_of(i)))
                for i in range(tasks.count)]

    def price(self, order: Order) -> float:
        return QINGBO_USD_PER_PICTURE

    def check_funds(self, order: Order, units: int, call: Call) -> float | None:
        return None  # Qingbo documents no balance route: its HTTP 402 says the same, before anything is charged

    def model_id(self, order: Order) -> str:
        from .qingbo_tasks import MODEL

        return MODEL

    def what(self, order: Order) -> str:
        return "the task request"

    def submit(self, order: Order, unit: Unit, call: Call, *, idempotency_key: Callable[[], str]) -> Handle:
        tasks = _tasks(order)
        options = tasks.options()
        task = self._clients.qingbo().submit(
            tasks.prompt, seed=unit.seed, idempotency_key=idempotency_key(), on_retry=call.on_retry,
            cancel_check=call.cancel, aspect_ratio=str(options["aspect_ratio"]),
            resolution=str(options["resolution"]), prompt_extend=bool(options["prompt_extend"]),
            callback_url=tasks.callback_url, callback_events=tasks.callback_events)
        return Handle(task_id=task.task_id, first=task, pre_consumed=task.pre_consumed_cost)

    def earlier(self, task_id: str) -> Handle:
        from ..polling import TaskState
        from .qingbo_tasks import QingboTask

        return Handle(task_id=task_id, first=QingboTask(task_id=task_id, state=TaskState.QUEUED,
                                                        raw={"receipt": True}))

    def collect(self, handle: Handle, call: Call, *, seed: int | None = None,
                size: tuple[int, int] | None = None) -> GenerationResult:
        task_id = str(handle.task_id)
        return self._clients.qingbo().collect(
            task_id, on_progress=call.on_progress, deadline=call.deadline, sleep=call.sleep,
            cancel_check=call.cancel, on_retry=call.on_retry, resume_hint=call.resume_hint(task_id))

    def fetch_again(self, order: Order, unit: Unit, urls: Sequence[str], kept: dict[str, object],
                    call: Call) -> GenerationResult:
        raise ValueError("a Qingbo task is collected by its id")

    def recover(self, order: Order, since: float, until: float, known: Container[str], call: Call) -> Recovery:
        return Recovery(resend=True)  # the same Idempotency-Key: Qingbo answers the task it made, if it made one

    def cancel(self, task_id: str) -> bool:
        return self._clients.qingbo().try_cancel(None, task_id)
