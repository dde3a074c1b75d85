"""The provider protocol: a provider written here, over the emulator, drives the engine's one path (claim, submit,
wait, collect, record, receipts, recovery) with no change outside the provider itself."""

from __future__ import annotations

import io
from collections.abc import Callable, Container, Sequence

import pytest
from PIL import Image

from tests.conftest import FakeClock
from zimage_api.clients import Clients
from zimage_api.config import QINGBO
from zimage_api.emulator import Emulator
from zimage_api.engine import Engine
from zimage_api.http.transport import Transport
from zimage_api.orders import Order, QingboTasks, fingerprint
from zimage_api.providers import Call, Handle, Providers, Recovery, Unit
from zimage_api.results import GenerationResult
from zimage_api.store import Store


class PlainTasks:
    """A provider of its own: Qingbo's task API spoken directly over a transport, no client class, no recording."""

    name = "qingbo"
    label = "Plain tasks"

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.submits: list[str] = []
        self.recoveries = 0

    def endpoint(self) -> str:
        return self.transport.base_url

    def plan(self, order: Order, endpoint: str) -> list[Unit]:
        assert isinstance(order, QingboTasks)
        return [Unit(i, order.seed_of(i), fingerprint("plain", endpoint=endpoint, prompt=order.prompt,
                                                       seed=order.seed_of(i))) for i in range(order.count)]

    def price(self, order: Order) -> float:
        return 0.002

    def model_id(self, order: Order) -> str:
        return "plain"

    def check_funds(self, order: Order, units: int, call: Call) -> float | None:
        return None

    def what(self, order: Order) -> str:
        return "the plain task request"

    def submit(self, order: Order, unit: Unit, call: Call, *, idempotency_key: Callable[[], str]) -> Handle:
        key = idempotency_key()
        self.submits.append(key)
        answer = self.transport.request_json(
            "POST", "/v1/tasks", json={"model": "z-image-turbo", "action": "generate", "prompt": order.prompt,
                                       "n": 1, "aspect_ratio": "1:1", "resolution": "1K", "seed": unit.seed},
            headers={"Idempotency-Key": key}, deadline=call.deadline, cancel_check=call.cancel)
        return Handle(task_id=str(answer["task_id"]))

    def earlier(self, task_id: str) -> Handle:
        return Handle(task_id=task_id)

    def collect(self, handle: Handle, call: Call, *, seed: int | None = None,
                size: tuple[int, int] | None = None) -> GenerationResult:
        while True:
            task = self.transport.request_json("GET", f"/v1/tasks/{handle.task_id}", deadline=call.deadline)
            if task["status"] == "completed":
                break
            call.sleep(1.0)
        url = task["result"]["images"][0]["url"][0]
        picture = self.transport.download(url, deadline=call.deadline)
        return GenerationResult(provider=self.label, protocol="plain", model="plain", images=[picture],
                                prompt_sha256="", task_ids=[str(handle.task_id)], seeds=[seed])

    def fetch_again(self, order: Order, unit: Unit, urls: Sequence[str], kept: dict[str, object],
                    call: Call) -> GenerationResult:
        raise AssertionError("tasks are collected by id")

    def recover(self, order: Order, since: float, until: float, known: Container[str], call: Call) -> Recovery:
        self.recoveries += 1
        return Recovery(resend=True)

    def cancel(self, task_id: str) -> bool:
        return False


def _engine(clock: FakeClock, provider: PlainTasks) -> Engine:
    clients = Clients(sleep=clock.sleep, now=clock)
    return Engine(clients, clock=clock, sleep=clock.sleep,
                  providers=Providers(clients, extra={"qingbo": provider}))


@pytest.fixture
def plain(emu: Emulator, clock: FakeClock) -> PlainTasks:
    return PlainTasks(Transport(QINGBO, sleep=clock.sleep, now=clock))


def test_a_provider_written_elsewhere_runs_the_engines_whole_path(emu: Emulator, clock: FakeClock,
                                                                  plain: PlainTasks) -> None:
    order = QingboTasks(prompt="a lighthouse at dusk", seed=11, count=2)
    [first, second] = _engine(clock, plain).submit(order)
    assert first.value is not None and second.value is not None
    assert not first.value.earlier and len(emu.requests_to("POST /v1/tasks")) == 2

    again = _engine(clock, plain).submit(order)  # the same inputs: the store answers, nothing is sent
    assert [o.value.task_id for o in again if o.value] == [first.value.task_id, second.value.task_id]
    assert all(o.value is not None and o.value.earlier for o in again)
    assert len(emu.requests_to("POST /v1/tasks")) == 2

    clock.advance(10)
    [collected] = _engine(clock, plain).collect([first.value.task_id], provider="qingbo")
    assert collected.value is not None
    assert Image.open(io.BytesIO(collected.value.images[0])).size[0] > 0
    assert Store().spend(0.0)["qingbo"] == pytest.approx(0.004)  # its own price, reserved with each claim


def test_a_run_that_died_sending_is_recovered_by_the_providers_own_rule(emu: Emulator, clock: FakeClock,
                                                                       plain: PlainTasks) -> None:
    order = QingboTasks(prompt="a kite", seed=3)
    [unit] = _engine(clock, plain).plan(order)
    store = Store()
    store.claim(unit.key, "gone")
    store.mark_sending(unit.key, "gone")
    store.expire(unit.key, "gone")  # a run that died after sending
    [outcome] = _engine(clock, plain).submit(order)
    assert outcome.value is not None and plain.recoveries == 1
    assert plain.submits == [f"zimage-{unit.key}-first"]  # sent again under the same key: no second charge
