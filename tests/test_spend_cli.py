"""``spend`` (today's or a window's spend by provider, against the daily budget) and the COST of each task in
``tasks``."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from zimage_api.budget import BUDGET_ENV, day_start
from zimage_api.cli import run
from zimage_api.cli.runtime import Runtime
from zimage_api.cli.spend import show_spend, window_start
from zimage_api.emulator import DEMO_KEY
from zimage_api.store import Store, open_store

TODAY = {"wavespeed": 0.036, "qingbo": 0.010626}
WEEK = {"wavespeed": 0.5, "qingbo": 0.212}


class SpendingStore(Store):
    """The store of record with the spend it reports set by the test: today's from local midnight, the week's
    from any earlier start."""

    def __init__(self, directory, now: float, today: dict[str, float] | None = None) -> None:
        super().__init__(directory)
        self.midnight = day_start(now)
        self.today = TODAY if today is None else today
        self.asked: list[tuple[float, float | None]] = []

    def spend(self, since: float, until: float | None = None) -> dict[str, float]:
        self.asked.append((since, until))
        return dict(self.today if since >= self.midnight else WEEK)


@pytest.fixture
def spend(clock, capsys, tmp_path) -> Callable[..., tuple[int, str, str, SpendingStore]]:
    def invoke(*argv: str, today: dict[str, float] | None = None) -> tuple[int, str, str, SpendingStore]:
        store = SpendingStore(tmp_path / "store", clock(), today)
        runtime = Runtime(sleep=clock.sleep, clock=clock, ledger=store)
        try:
            code = run(["spend", *argv], runtime=runtime)
        finally:
            runtime.close()
        out, err = capsys.readouterr()
        return code, out, err, store

    return invoke


def test_spend_today_with_a_budget(spend, clock, monkeypatch) -> None:
    monkeypatch.setenv(BUDGET_ENV, "0.05")
    code, out, err, store = spend()
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith("Spent today (since ") and lines[0].endswith(" 00:00):")
    assert lines[1:] == ["  wavespeed  $0.036", "  qingbo     $0.011", "  total      $0.047",
                         "Today: $0.047 of the daily budget of $0.05; $0.003 left."]
    assert store.asked == [(day_start(clock()), clock())]


def test_spend_without_a_budget_says_how_to_set_one(spend) -> None:
    code, out, _, _ = spend()
    assert code == 0
    assert out.splitlines()[-1] == (f"Today: $0.047; no daily budget (set {BUDGET_ENV} or daily_usd under [budget] in "
                                    "zimage.ini).")


def test_spend_json_shape(spend, clock, isolated_env) -> None:
    (isolated_env.parent / "zimage.ini").write_text("[budget]\ndaily_usd = 0.05\n", encoding="utf-8")
    code, out, _, _ = spend("--json")
    assert code == 0
    assert json.loads(out) == {"since": "today", "window_start": day_start(clock()),
                               "by_provider": {"wavespeed": 0.036, "qingbo": 0.010626}, "total_usd": 0.046626,
                               "today_usd": 0.046626, "budget_usd": 0.05, "left_usd": 0.003374}
    assert len(out.splitlines()) == 1


def test_spend_json_without_a_budget_has_null_budget_and_left(spend) -> None:
    answer = json.loads(spend("--json", today={})[1])
    assert answer["by_provider"] == {"wavespeed": 0.0, "qingbo": 0.0}
    assert (answer["today_usd"], answer["budget_usd"], answer["left_usd"]) == (0.0, None, None)


def test_spend_over_a_window_keeps_the_budget_to_today(spend, clock, monkeypatch) -> None:
    monkeypatch.setenv(BUDGET_ENV, "0.04")
    code, out, _, store = spend("--since", "7d", "--json")
    answer = json.loads(out)
    assert code == 0 and answer["since"] == "7d" and answer["window_start"] == clock() - 7 * 86400
    assert answer["by_provider"] == WEEK and answer["total_usd"] == 0.712
    assert (answer["today_usd"], answer["budget_usd"], answer["left_usd"]) == (0.046626, 0.04, 0.0)
    assert store.asked == [(clock() - 7 * 86400, clock()), (day_start(clock()), clock())]
    code, out, _, _ = spend("--since", "12h")
    assert code == 0 and out.splitlines()[0].startswith("Spent since ") and out.splitlines()[0].endswith(" (12h):")


@pytest.mark.parametrize("since", ["yesterday", "7", "-1d", "3w", "1.5d", ""])
def test_a_bad_since_is_a_usage_error(spend, since: str) -> None:
    code, out, err, store = spend(f"--since={since}")
    assert code == 2 and out == "" and store.asked == []
    assert "--since takes today, a number of days such as 7d or of hours such as 12h" in err


def test_an_invalid_budget_is_a_usage_error_naming_the_variable(spend, monkeypatch) -> None:
    monkeypatch.setenv(BUDGET_ENV, "a lot")
    code, out, err, _ = spend()
    assert code == 2 and out == "" and BUDGET_ENV in err


def test_window_start() -> None:
    now = 1_780_000_000.0
    assert window_start("today", now) == window_start(" TODAY ", now) == day_start(now)
    assert window_start("2d", now) == now - 172800 and window_start("3h", now) == now - 10800


def test_show_spend_takes_any_store_with_spend(capsys) -> None:
    class Minimal:
        def spend(self, since: float, until: float | None = None) -> dict[str, float]:
            return {"qingbo": 0.021252}

    show_spend(Minimal(), as_json=True, now=1_780_000_000.0)
    assert json.loads(capsys.readouterr().out)["by_provider"] == {"wavespeed": 0.0, "qingbo": 0.021252}


# -- tasks: the COST column and cost_usd -------------------------------------------------------------------------------


def _cli(clock, capsys):
    def invoke(*argv: str) -> tuple[int, str]:
        code = run(list(argv), sleep=clock.sleep, clock=clock)
        return code, capsys.readouterr().out

    return invoke


@pytest.mark.usefixtures("store_backend")
def test_tasks_show_each_tasks_cost(emu, clock, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cli = _cli(clock, capsys)
    code, out = cli("submit", "a boat", "--count", "2")
    done, waiting = out.split()
    assert cli("poll", done, "--out", "boats")[0] == 0
    code, out = cli("generate", "a mug", "--api", "v3", "--width", "256", "--height", "256", "--out", "mugs")
    assert code == 0
    prediction = next(tid for tid, task in emu.tasks.items() if task.provider == "wavespeed")
    code, out = cli("tasks")
    assert code == 0
    header = next(line for line in out.splitlines() if "TASK ID" in line)
    assert header.split() == ["TASK", "ID", "PROVIDER", "STATUS", "COST", "AGE"]
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  ") and
            line.split()[0] in (done, waiting, prediction)}
    assert rows[done][1:4] == ["qingbo", "completed", "$0.011"]
    assert rows[waiting][1:4] == ["qingbo", "queued", "-"]
    assert rows[prediction][1:4] == ["wavespeed", "completed", "$0.010"]
    code, out = cli("tasks", "--json")
    costs = {row["task_id"]: row["cost_usd"] for row in map(json.loads, out.splitlines())}
    assert costs == {done: 0.010626, waiting: None, prediction: 0.01}
    assert DEMO_KEY not in out


@pytest.mark.usefixtures("store_backend")
def test_spend_reads_what_the_store_reserved_and_recorded(tmp_path, capsys, monkeypatch) -> None:
    """The real store's figures: reservations with their claims, a refund taken back, nothing for a receipt."""
    from zimage_api.store import Price

    monkeypatch.setenv(BUDGET_ENV, "1")
    store = open_store(tmp_path / "store")
    today = day_start()
    for key, price in (("a", Price("wavespeed", "wavespeed-ai/z-image/base", 0.01)),
                       ("b", Price("qingbo", "z-image-turbo", 0.0106)),
                       ("c", Price("qingbo", "z-image-turbo", 0.0106))):
        assert store.claim(key, "run", price=price, budget=1.0, day_start=today).kind == "claimed"
        store.finish(key, "run", task_id=f"task-{key}")
    store.record_cost("task-c", 0.0)  # failed at Qingbo: not billed
    runtime = Runtime(ledger=store)
    try:
        assert run(["spend", "--json"], runtime=runtime) == 0
    finally:
        runtime.close()
    report = json.loads(capsys.readouterr().out)
    assert report["by_provider"] == {"wavespeed": 0.01, "qingbo": 0.0106}
    assert report["today_usd"] == pytest.approx(0.0206) and report["left_usd"] == pytest.approx(0.9794)
