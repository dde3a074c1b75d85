"""The daily budget: reserved with each paid unit's claim, so nodes side by side and separate processes never pass it
together; refused before anything is sent; released by a unit that failed; never charged for a receipt."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.comfy_stubs import MUG, call_node
from zimage_api.budget import day_start
from zimage_api.catalog import WAVESPEED_USD_PER_PICTURE
from zimage_api.emulator import Emulator
from zimage_api.store import Price, open_store

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("store_backend")  # every behaviour on SQLite and on PostgreSQL

PRICE = Price("wavespeed", "Z-Image-Base", 0.012)
GENERATIONS = "POST /v1/images/generations"


def _budget_error(nodes: ModuleType) -> type[Exception]:
    """The error class as the pack loaded in ComfyUI raises it (its own copy of the library)."""
    errors: type[Exception] = sys.modules[nodes.__name__.rsplit(".", 1)[0] + ".zimage_api.errors"].BudgetExceededError
    return errors


def _generate(nodes: ModuleType, seed: int, count: int = 2, unique_id: str = "1") -> Any:
    return call_node(nodes.ZImageGenerate().generate(
        prompt=MUG, negative_prompt="", model="Z-Image-Base", api="v1/images", guidance_scale=7.5, width=256,
        height=256, seed=seed, count=count, unique_id=unique_id))


def test_threads_reserving_at_once_never_pass_the_budget(tmp_path: Path) -> None:
    claimed: list[str] = []
    lock = threading.Lock()

    def claim(n: int) -> None:
        outcome = open_store(tmp_path).claim(f"unit-{n}", f"owner-{n}", price=PRICE, budget=0.05, day_start=0.0)
        if outcome.kind == "claimed":
            with lock:
                claimed.append(f"unit-{n}")

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(claimed) == 4  # 4 x $0.012 = $0.048 fits $0.05; a fifth would not
    assert open_store(tmp_path).spend(0.0) == {"wavespeed": 0.048, "qingbo": 0.0}


def test_two_processes_reserving_at_once_never_pass_the_budget(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from zimage_api.store import Price, open_store
        won = 0
        for n in range(10):
            outcome = open_store({str(tmp_path)!r}).claim(f"{{sys.argv[1]}}-{{n}}", sys.argv[1],
                                                    price=Price("qingbo", "z-image-turbo", 0.0106),
                                                    budget=0.1, day_start=0.0)
            won += outcome.kind == "claimed"
        print(won)
    """)
    runs = [subprocess.Popen([sys.executable, "-c", script, name], stdout=subprocess.PIPE, text=True)
            for name in ("a", "b")]
    won = [int(run.communicate(timeout=60)[0]) for run in runs]
    assert sum(won) == 9  # 9 x $0.0106 = $0.0954; the tenth would pass $0.10
    assert open_store(tmp_path).spend(0.0)["qingbo"] == pytest.approx(0.0954)


def test_nodes_side_by_side_pay_exactly_what_the_budget_allows(nodes: ModuleType, emu: Emulator,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZIMAGE_DAILY_BUDGET_USD", str(4 * WAVESPEED_USD_PER_PICTURE))  # four pictures
    errors: list[str] = []
    pictures: list[int] = []

    def run(seed: int) -> None:
        try:
            image, _info = _generate(nodes, seed, count=2, unique_id=str(seed))
            pictures.append(int(image.shape[0]))
        except _budget_error(nodes) as err:
            errors.append(str(err))

    threads = [threading.Thread(target=run, args=(seed,)) for seed in (100, 200, 300)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(emu.requests_to(GENERATIONS)) == 4
    said = ("Today's Z-Image budget of $0.04 is spent: $0.04 so far, and this picture costs $0.01. Raise "
            "ZIMAGE_DAILY_BUDGET_USD or wait until midnight.")
    assert errors and all(text in (said, said + " The other 1 picture(s) of this node were made and are kept: queue "
                                   "the prompt again to get them from their receipts, at no cost.") for text in errors)
    spent = open_store().spend(day_start())
    assert spent["wavespeed"] == pytest.approx(0.04)


def test_the_budget_message_names_the_amounts(emu: Emulator, nodes: ModuleType,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZIMAGE_DAILY_BUDGET_USD", "0.05")
    open_store().claim("earlier", "someone", price=Price("wavespeed", "x", 0.048), budget=None, day_start=day_start())
    with pytest.raises(_budget_error(nodes)) as caught:
        _generate(nodes, seed=1, count=1)
    assert str(caught.value) == (
        "Today's Z-Image budget of $0.05 is spent: $0.048 so far, and this picture costs $0.01. Raise "
        "ZIMAGE_DAILY_BUDGET_USD or wait until midnight.")
    assert emu.requests_to(GENERATIONS) == []


def test_a_failed_unit_releases_its_reservation_and_a_receipt_is_always_served(
        emu: Emulator, nodes: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZIMAGE_DAILY_BUDGET_USD", str(WAVESPEED_USD_PER_PICTURE))  # one picture
    emu.inject(GENERATIONS, "status", status=400, body={"error": {"message": "bad prompt", "code": "invalid"}})
    with pytest.raises(Exception, match="bad prompt"):
        _generate(nodes, seed=7, count=1)
    assert open_store().spend(day_start())["wavespeed"] == 0.0  # answered with an error: nothing was bought
    first, _info = _generate(nodes, seed=7, count=1)  # the budget still has room for it
    again, _info = _generate(nodes, seed=7, count=1)  # the day's budget is spent, but a receipt costs nothing
    assert (first == again).all() and len(emu.requests_to(GENERATIONS)) == 2
    with pytest.raises(_budget_error(nodes)):
        _generate(nodes, seed=8, count=1)
    assert len(emu.requests_to(GENERATIONS)) == 2


def test_the_days_total_follows_every_reservation_release_and_cost(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    day = day_start()
    for key in ("a", "b", "c"):
        assert store.claim(key, "me", price=PRICE, budget=0.04, day_start=day).kind == "claimed"
    store.release("b", "me")  # nothing was bought: its reservation goes back
    assert store.claim("d", "me", price=PRICE, budget=0.04, day_start=day).kind == "claimed"
    assert store.claim("e", "me", price=PRICE, budget=0.04, day_start=day).kind == "over_budget"
    store.finish("a", "me", task_id="t-a")
    store.record_cost("t-a", 0.0)  # refunded
    assert store.claim("e", "me", price=PRICE, budget=0.04, day_start=day).kind == "claimed"
    assert store.claim("c", "me", price=PRICE, budget=0.04, day_start=day).kind == "claimed"  # its own, again
    assert store.spend(day)["wavespeed"] == pytest.approx(0.036)  # c, d, e
