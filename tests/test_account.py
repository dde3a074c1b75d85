"""Money before a run, against the emulator: the WaveSpeed balance check and its cache, prices from the pricing route
and their catalog fallback, one message for a balance too low at either provider, the budget's words, a task's cost
and the daily budget setting."""

from __future__ import annotations

import logging
import time

import pytest

from zimage_api.account import BalanceCheck, Prices, budget_message, key_digest, pricing_inputs, task_cost_usd
from zimage_api.budget import BUDGET_ENV, daily_budget, day_start
from zimage_api.catalog import QINGBO_USD_PER_PICTURE
from zimage_api.emulator import DEMO_KEY, Emulator
from zimage_api.errors import (
    BudgetExceededError,
    CancelledError,
    ConfigError,
    InsufficientBalanceError,
    PaymentRequiredError,
    ZImageError,
)
from zimage_api.orders import Lora, QingboTasks, TextToImage
from zimage_api.providers.qingbo_tasks import QingboClient
from zimage_api.providers.wavespeed_v3 import WaveSpeedClient

PROMPT = "Editorial-style product photo of a ceramic mug on a linen table, soft morning light."
BALANCE = "GET /api/v3/balance"
PRICING = "POST /api/v3/model/pricing"
PAID = "POST /api/v3/wavespeed-ai/*"


def wave(clock) -> WaveSpeedClient:
    return WaveSpeedClient(sleep=clock.sleep, now=clock)


def order(**fields) -> TextToImage:
    return TextToImage(prompt=PROMPT, api="v3", width=256, height=256, **fields)


def run(check: BalanceCheck, client: WaveSpeedClient, price: float) -> str:
    """A run as the engine makes it: the balance check, then the paid submit."""
    check.check(price, key_id=DEMO_KEY)
    return client.submit(PROMPT, width=256, height=256, seed=1).id


# -- the balance check -------------------------------------------------------------------------------------------------


def test_three_runs_within_a_minute_ask_the_balance_once(emu: Emulator, clock) -> None:
    client = wave(clock)
    check = BalanceCheck(client, clock=clock)
    for _ in range(3):
        run(check, client, 0.024)
        clock.advance(15.0)
    assert len(emu.requests_to(BALANCE)) == 1
    assert len(emu.requests_to(PAID)) == 3
    clock.advance(15.0)  # 60 s after the first reading
    run(check, client, 0.024)
    assert len(emu.requests_to(BALANCE)) == 2


def test_a_low_balance_refuses_the_run_before_anything_is_sent_and_is_asked_again(emu: Emulator, clock) -> None:
    emu.balance = 0.01
    client = wave(clock)
    check = BalanceCheck(client, clock=clock)
    with pytest.raises(InsufficientBalanceError) as info:
        run(check, client, 0.024)
    assert str(info.value) == ("Your WaveSpeed balance is $0.010, and this run costs $0.024: top up at WaveSpeed, "
                               "then queue again. Nothing was sent.")
    assert isinstance(info.value, PaymentRequiredError)
    assert (info.value.balance, info.value.price) == (0.01, 0.024)
    assert emu.requests_to(PAID) == [] and emu.task_count() == 0
    with pytest.raises(InsufficientBalanceError):  # the very next run asks again: the artist may have topped up
        run(check, client, 0.024)
    assert len(emu.requests_to(BALANCE)) == 2
    emu.balance = 5.0
    run(check, client, 0.024)
    assert len(emu.requests_to(BALANCE)) == 3 and len(emu.requests_to(PAID)) == 1


def test_a_remembered_balance_less_the_runs_since_is_asked_again_when_it_runs_short(emu: Emulator, clock) -> None:
    emu.balance = 0.05
    check = BalanceCheck(wave(clock), clock=clock)
    assert check.check(0.02, key_id=DEMO_KEY) == 0.05
    assert check.check(0.02, key_id=DEMO_KEY) == pytest.approx(0.03)
    assert len(emu.requests_to(BALANCE)) == 1
    assert check.check(0.02, key_id=DEMO_KEY) == 0.05  # 0.01 left by the reckoning: WaveSpeed is asked again
    assert len(emu.requests_to(BALANCE)) == 2
    emu.balance = 0.01  # the runs were charged meanwhile
    clock.advance(60.0)
    with pytest.raises(InsufficientBalanceError, match=r"balance is \$0\.010, and this run costs \$0\.020"):
        check.check(0.02, key_id=DEMO_KEY)


def test_each_key_has_its_own_reading_kept_under_a_hash(emu: Emulator, clock) -> None:
    check = BalanceCheck(wave(clock), clock=clock)
    check.check(0.01, key_id=DEMO_KEY)
    check.check(0.01, key_id="another-key")
    check.check(0.01, key_id=DEMO_KEY)
    assert len(emu.requests_to(BALANCE)) == 2
    kept = repr(vars(check))
    assert DEMO_KEY not in kept and "another-key" not in kept and key_digest(DEMO_KEY) in kept
    check.forget(DEMO_KEY)
    check.check(0.01, key_id=DEMO_KEY)
    assert len(emu.requests_to(BALANCE)) == 3


def test_an_unreachable_balance_route_never_blocks_the_run(emu: Emulator, clock, caplog) -> None:
    client = wave(clock)
    check = BalanceCheck(client, clock=clock)
    emu.inject(BALANCE, "status", status=503, times=20)
    with caplog.at_level(logging.WARNING, logger="zimage_api"):
        assert check.check(0.024, key_id=DEMO_KEY) is None
    assert "the WaveSpeed balance could not be read" in caplog.text and DEMO_KEY not in caplog.text
    asked = len(emu.requests_to(BALANCE))
    run(check, client, 0.024)  # not asked again within the minute
    assert len(emu.requests_to(BALANCE)) == asked and len(emu.requests_to(PAID)) == 1


def test_a_stopped_server_is_passed_over_but_a_cancel_is_not(emu: Emulator, clock) -> None:
    emu.stop()
    check = BalanceCheck(wave(clock), clock=clock)
    assert check.check(0.024, key_id=DEMO_KEY) is None
    with pytest.raises(CancelledError):
        BalanceCheck(wave(clock), clock=clock).check(0.024, key_id=DEMO_KEY, cancel_check=lambda: True)


# -- prices ------------------------------------------------------------------------------------------------------------


def test_a_price_comes_from_the_pricing_route_and_is_kept_per_model_size_and_loras(emu: Emulator, clock) -> None:
    prices = Prices(wave(clock), clock=clock)
    assert prices.price_of(order()) == (0.01, "wavespeed")
    assert prices.price_of(order(seed=9, negative_prompt="blurry")) == (0.01, "wavespeed")  # same price key
    assert [r.json for r in emu.requests_to(PRICING)] == [
        {"model_id": "wavespeed-ai/z-image/base", "inputs": {"prompt": PROMPT, "size": "256*256"}}]
    assert prices.price_of(TextToImage(prompt=PROMPT, api="v3", width=512, height=256)) == (0.01, "wavespeed")
    lora = order(loras=(Lora("owner/film-grain", 0.8),))
    assert prices.price_of(lora) == (0.012, "wavespeed")
    assert emu.requests_to(PRICING)[-1].json == {
        "model_id": "wavespeed-ai/z-image/base-lora",
        "inputs": {"prompt": PROMPT, "size": "256*256", "loras": [{"path": "owner/film-grain", "scale": 0.8}]}}
    assert len(emu.requests_to(PRICING)) == 3
    clock.advance(3600.0)
    prices.price_of(order())
    assert len(emu.requests_to(PRICING)) == 4


def test_the_quoted_price_wins_over_the_catalog(emu: Emulator, clock) -> None:
    emu.inject(PRICING, "status", status=200,
               body={"code": 200, "message": "success",
                     "data": {"model_id": "wavespeed-ai/z-image/base", "unit_price": 0.015, "currency": "USD"}})
    assert Prices(wave(clock), clock=clock).price_of(order()) == (0.015, "wavespeed")


def test_a_stopped_pricing_route_falls_back_to_the_catalog(emu: Emulator, clock, caplog) -> None:
    emu.stop()
    with caplog.at_level(logging.WARNING, logger="zimage_api"):
        assert Prices(wave(clock), clock=clock).price_of(order(model="Z-Image-Turbo")) == (0.01, "catalog")
    assert "using the catalog price" in caplog.text


def test_a_failing_pricing_route_falls_back_and_is_asked_again_a_minute_later(emu: Emulator, clock) -> None:
    emu.inject(PRICING, "status", status=500, times=20)
    prices = Prices(wave(clock), clock=clock)
    lora = order(loras=(Lora("owner/film-grain", 0.8),))
    assert prices.price_of(lora) == (0.012, "catalog")
    asked = len(emu.requests_to(PRICING))
    assert prices.price_of(lora) == (0.012, "catalog")
    assert len(emu.requests_to(PRICING)) == asked
    emu.clear_faults()
    clock.advance(60.0)
    assert prices.price_of(lora) == (0.012, "wavespeed")


def test_orders_without_a_pricing_route_take_the_catalog_price(emu: Emulator, clock) -> None:
    prices = Prices(wave(clock), clock=clock)
    assert prices.price_of(QingboTasks(prompt=PROMPT)) == (QINGBO_USD_PER_PICTURE, "catalog")
    assert prices.price_of(TextToImage(prompt=PROMPT, width=256, height=256)) == (0.01, "catalog")  # /v1/images
    assert Prices(None).price_of(order()) == (0.01, "catalog")
    assert emu.requests_to(PRICING) == []


def test_pricing_inputs_carry_what_may_change_the_price() -> None:
    assert pricing_inputs(order()) == {"prompt": PROMPT, "size": "256*256"}


# -- a balance too low at the provider: HTTP 402 -----------------------------------------------------------------------


def test_qingbo_402_reads_like_the_balance_check_and_is_not_retried(emu: Emulator, clock) -> None:
    emu.inject("POST /v1/tasks", "status", status=402,
               body={"error": {"message": "insufficient balance", "code": "insufficient_quota"}})
    with pytest.raises(InsufficientBalanceError) as info:
        QingboClient(sleep=clock.sleep, now=clock).submit(PROMPT)
    assert str(info.value) == ("Your Qingbo balance is too low (HTTP 402: insufficient balance): top up at Qingbo, "
                               "then queue again. Nothing was charged.")
    assert (info.value.provider, info.value.status, info.value.code) == ("Qingbo", 402, "insufficient_quota")
    assert len(emu.requests_to("POST /v1/tasks")) == 1 and emu.task_count() == 0


def test_wavespeed_402_on_a_submit_reads_the_same(emu: Emulator, clock) -> None:
    emu.inject(PAID, "status", status=402, body={"code": 402, "message": "Insufficient balance"})
    with pytest.raises(InsufficientBalanceError, match=r"^Your WaveSpeed balance is too low \(HTTP 402: Insufficient "
                                                       r"balance\): top up at WaveSpeed, then queue again\. Nothing "
                                                       r"was charged\.$"):
        wave(clock).submit(PROMPT, width=256, height=256)
    assert len(emu.requests_to(PAID)) == 1


# -- the budget --------------------------------------------------------------------------------------------------------


def test_budget_message() -> None:
    assert budget_message(0.05, 0.048, 0.012) == (
        "Today's Z-Image budget of $0.05 is spent: $0.048 so far, and this picture costs $0.012. Raise "
        "`[budget] daily_usd` in zimage.ini or wait until midnight.")
    assert budget_message(2, 1.995, 0.01).startswith("Today's Z-Image budget of $2.00 is spent: $1.995 so far")
    err = BudgetExceededError(budget_message(0.05, 0.048, 0.012), budget=0.05, spent=0.048, price=0.012)
    assert isinstance(err, ZImageError) and not isinstance(err, PaymentRequiredError)
    assert (err.budget, err.spent, err.price) == (0.05, 0.048, 0.012)


def test_daily_budget_from_the_config_file_and_the_environment(monkeypatch, isolated_env) -> None:
    assert daily_budget() is None
    ini = isolated_env.parent / "zimage.ini"
    ini.write_text("[budget]\ndaily_usd = 0.50\n", encoding="utf-8")
    assert daily_budget() == 0.5
    monkeypatch.setenv(BUDGET_ENV, "$2")
    assert daily_budget() == 2.0  # the environment wins
    monkeypatch.setenv(BUDGET_ENV, "  ")
    assert daily_budget() == 0.5


@pytest.mark.parametrize("value", ["ten", "-1", "nan", "inf", "0.5.1"])
def test_an_invalid_budget_names_its_variable(monkeypatch, value: str) -> None:
    monkeypatch.setenv(BUDGET_ENV, value)
    with pytest.raises(ConfigError, match=f"^{BUDGET_ENV} must be an amount of US dollars"):
        daily_budget()


def test_an_invalid_budget_in_the_file_names_the_setting(isolated_env) -> None:
    (isolated_env.parent / "zimage.ini").write_text("[budget]\ndaily_usd = lots\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^daily_usd under \[budget\] in .*zimage\.ini must be an amount"):
        daily_budget()


def test_day_start_is_local_midnight() -> None:
    now = 1_780_000_000.0
    start = day_start(now)
    moment = time.localtime(start)
    assert (moment.tm_hour, moment.tm_min, moment.tm_sec) == (0, 0, 0)
    assert 0 <= now - start < 86400 + 3600 and time.localtime(now).tm_mday == moment.tm_mday


# -- a recorded task's cost --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "usd"),
    [({"provider": "qingbo", "status": "completed", "cost_quota": 5313}, 0.010626),
     ({"provider": "qingbo", "status": "completed", "cost_quota": "5313"}, 0.010626),
     ({"provider": "qingbo", "status": "queued"}, None),
     ({"provider": "qingbo", "status": "cancelled", "cost_quota": 5313}, 0.0),
     ({"provider": "wavespeed", "status": "completed", "model": "Z-Image-Base"}, 0.01),
     ({"provider": "wavespeed", "status": "created", "model": "wavespeed-ai/z-image/turbo-inpaint"}, 0.02),
     ({"provider": "wavespeed", "status": "completed", "model": "wavespeed-ai/z-image/turbo"}, 0.01),
     ({"provider": "wavespeed", "status": "failed", "model": "Z-Image-Base"}, 0.0)],
)
def test_task_cost(entry: dict, usd: float | None) -> None:
    assert task_cost_usd(entry) == usd


def test_a_slow_balance_route_stays_inside_the_orders_timeout(emu: Emulator, clock) -> None:
    from zimage_api.account import Funds
    from zimage_api.clients import Clients
    from zimage_api.engine import Engine

    emu.inject(BALANCE, "status", status=503, times=50)  # retried with waits, until its share of the deadline ends
    engine = Engine(Clients(sleep=clock.sleep, now=clock), clock=clock, sleep=clock.sleep, funds=Funds.new(clock))
    started = clock()
    [outcome] = engine.pictures(order(timeout=12, seed=7))
    assert outcome.error is None and len(outcome.value.images) == 1
    assert len(emu.requests_to(PAID)) == 1
    assert clock() - started <= 12  # the balance check, the submit and the wait together: one timeout
    assert 2 <= len(emu.requests_to(BALANCE)) < 50
