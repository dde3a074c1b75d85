"""WaveSpeed's v3 account routes against the emulator: the prediction history, orphan search, balance and pricing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
import requests

from zimage_api.catalog import V3_MODELS
from zimage_api.emulator import DEMO_KEY, Emulator
from zimage_api.errors import APIConnectionError, BadRequestError, InvalidResponseError, ValidationError
from zimage_api.providers.wavespeed_account import ORPHAN_SKEW_SECONDS, HistoryItem, parse_timestamp
from zimage_api.providers.wavespeed_v3 import WaveSpeedClient

PROMPT = "Editorial-style product photo of a ceramic mug on a linen table, soft morning light."
BASE, TURBO = "wavespeed-ai/z-image/base", "wavespeed-ai/z-image/turbo"
HISTORY = "POST /api/v3/predictions"
OTHER_KEY = "zimage-emulator-second-key"


def client(clock, **options) -> WaveSpeedClient:
    return WaveSpeedClient(sleep=clock.sleep, now=clock, **options)


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def submit(wave: WaveSpeedClient, clock, model: str = "Z-Image-Base", *, after: float = 10.0) -> str:
    """Submit one small prediction, then move the clock on ``after`` seconds."""
    pid = wave.submit(PROMPT, model=model, width=256, height=256, seed=3).id
    clock.advance(after)
    return pid


def history_bodies(emu: Emulator) -> list[dict]:
    return [r.json for r in emu.requests_to(HISTORY)]


# -- history -------------------------------------------------------------------------------------------------------


def test_history_lists_newest_first_and_follows_pages(emu, clock) -> None:
    wave = client(clock)
    ids = [submit(wave, clock) for _ in range(5)]
    items = wave.history(page_size=2)
    assert [item.id for item in items] == ids[::-1]
    assert history_bodies(emu) == [{"page": 1, "page_size": 2}, {"page": 2, "page_size": 2},
                                   {"page": 3, "page_size": 2}]
    first = items[-1]
    assert first.model == BASE and first.created_at == pytest.approx(clock() - 50.0, abs=0.001)
    assert first.status == "completed" and first.outputs[0].startswith(emu.url + "/files/")


def test_history_stops_at_max_pages_and_after_the_last_full_page(emu, clock) -> None:
    wave = client(clock)
    ids = [submit(wave, clock) for _ in range(4)]
    assert [item.id for item in wave.history(page_size=2, max_pages=1)] == ids[:1:-1]
    assert len(emu.requests_to(HISTORY)) == 1
    emu.reset()
    # Four items in pages of two: the total says page 2 was the last, so page 3 is never asked for.
    ids = [submit(wave, clock) for _ in range(4)]
    assert [item.id for item in wave.history(page_size=2)] == ids[::-1]
    assert [body["page"] for body in history_bodies(emu)] == [1, 2]


def test_history_filters_by_model_and_status(emu, clock) -> None:
    wave = client(clock)
    base_done = submit(wave, clock, "Z-Image-Base", after=30.0)
    turbo_done = submit(wave, clock, "Z-Image-Turbo", after=30.0)
    emu.inject("POST /api/v3/wavespeed-ai/z-image/base", "task_failed", message="NSFW content detected")
    base_failed = submit(wave, clock, "Z-Image-Base", after=30.0)
    turbo_new = submit(wave, clock, "Z-Image-Turbo", after=1.0)  # processing now

    assert [i.id for i in wave.history(model="Z-Image-Turbo")] == [turbo_new, turbo_done]
    assert [i.id for i in wave.history(model=BASE, status="completed")] == [base_done]
    failed = wave.history(status="failed")
    assert [i.id for i in failed] == [base_failed] and failed[0].error == "NSFW content detected"
    assert [i.id for i in wave.history(status="processing")] == [turbo_new]
    assert history_bodies(emu) == [
        {"page": 1, "page_size": 100, "model": TURBO},
        {"page": 1, "page_size": 100, "model": BASE, "status": "completed"},
        {"page": 1, "page_size": 100, "status": "failed"},
        {"page": 1, "page_size": 100, "status": "processing"},
    ]


def test_processing_lists_predictions_still_waiting_to_start(emu, clock) -> None:
    wave = client(clock)
    pid = submit(wave, clock, after=0.0)
    items = wave.history(status="processing")
    assert [(i.id, i.status) for i in items] == [(pid, "created")]


def test_history_windows_are_sent_as_iso_utc_and_both_ends_count(emu, clock) -> None:
    wave = client(clock)
    start = clock()
    ids = [submit(wave, clock) for _ in range(4)]  # created at start, +10, +20, +30
    after = datetime.fromtimestamp(start + 10, tz=timezone.utc)
    items = wave.history(created_after=after, created_before=start + 20.4)
    assert [i.id for i in items] == [ids[2], ids[1]]
    assert history_bodies(emu)[-1] == {"page": 1, "page_size": 100, "created_after": iso(start + 10),
                                       "created_before": iso(start + 21)}  # rounded outwards
    assert [i.id for i in wave.history(created_after=start + 25)] == [ids[3]]
    naive_utc = datetime.fromtimestamp(start + 5, tz=timezone.utc).replace(tzinfo=None)
    assert [i.id for i in wave.history(created_before=naive_utc)] == [ids[0]]


def test_the_emulator_reads_windows_with_an_offset(emu, clock) -> None:
    wave = client(clock)
    start = clock()
    ids = [submit(wave, clock) for _ in range(3)]
    eight = datetime.fromtimestamp(start + 10, tz=timezone(timedelta(hours=8)))
    body = {"page": 1, "page_size": 10, "created_after": eight.isoformat(), "created_before": iso(start + 10)}
    answer = requests.post(f"{emu.url}/api/v3/predictions", json=body, timeout=5,
                           headers={"Authorization": f"Bearer {DEMO_KEY}"})
    assert answer.status_code == 200
    assert [item["id"] for item in answer.json()["data"]["items"]] == [ids[1]]
    assert answer.json()["data"]["items"][0]["created_at"].endswith("Z")


def test_history_keeps_seven_days(emu, clock) -> None:
    wave = client(clock)
    submit(wave, clock)
    clock.advance(6 * 86400)
    recent = submit(wave, clock)
    clock.advance(86400)
    assert [i.id for i in wave.history()] == [recent]


@pytest.fixture
def two_keys(clock, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    emulator = Emulator(clock=clock, queue_seconds=0.5, process_seconds=2.0, picture_scale=0.25,
                        wavespeed_keys={DEMO_KEY, OTHER_KEY}).start()
    monkeypatch.setenv("WAVESPEED_BASE_URL", emulator.url)
    try:
        yield emulator
    finally:
        emulator.stop()


def test_history_lists_only_the_callers_own_predictions(two_keys, clock) -> None:
    mine, theirs = client(clock, api_key=DEMO_KEY), client(clock, api_key=OTHER_KEY)
    my_ids = [submit(mine, clock), submit(mine, clock)]
    their_id = submit(theirs, clock)
    assert [i.id for i in mine.history()] == my_ids[::-1]
    assert [i.id for i in theirs.history()] == [their_id]
    assert [i.id for i in mine.find_orphans("Z-Image-Base", clock() - 60, clock(), known_ids=())] == my_ids[::-1]


@pytest.mark.parametrize(
    ("body", "message"),
    [({"page": 1, "page_size": 0}, "page_size must be an integer 1..100, got 0."),
     ({"page": 1, "page_size": 101}, "page_size must be an integer 1..100, got 101."),
     ({"page": 0, "page_size": 10}, "page must be an integer 1 or more, got 0."),
     ({"page": 1, "page_size": 10, "status": "created"},
      "status must be one of completed, failed, processing, got 'created'."),
     ({"page": 1, "page_size": 10, "created_after": "yesterday"},
      "created_after must be an ISO 8601 time such as 2026-05-28T12:00:00Z, got 'yesterday'."),
     ({"page": 1, "page_size": 10, "created_before": 1780000000},
      "created_before must be an ISO 8601 time such as 2026-05-28T12:00:00Z, got '1780000000'."),
     ({"page": 1, "page_size": 10, "limit": 5}, "unsupported parameter: limit")],
)
def test_the_emulator_refuses_bad_history_queries(emu, body: dict, message: str) -> None:
    answer = requests.post(f"{emu.url}/api/v3/predictions", json=body, timeout=5,
                           headers={"Authorization": f"Bearer {DEMO_KEY}"})
    assert answer.status_code == 400 and answer.json() == {"code": 400, "message": message}


def test_a_rejected_history_query_is_a_typed_error(emu, clock) -> None:
    emu.inject(HISTORY, "status", status=400, body={"code": 400, "message": "page_size must be 1..100"})
    with pytest.raises(BadRequestError, match=r"WaveSpeed rejected the request \(HTTP 400: page_size must be 1..100"):
        client(clock).history()


@pytest.mark.parametrize(("kwargs", "field"), [({"page_size": 0}, "page_size"), ({"page_size": 101}, "page_size"),
                                               ({"max_pages": 0}, "max_pages"), ({"status": "created"}, "status")])
def test_bad_history_arguments_send_nothing(emu, clock, kwargs: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        client(clock).history(**kwargs)
    assert info.value.field == field and emu.requests == []


def test_history_requests_are_retried_like_status_requests(emu, clock) -> None:
    wave = client(clock)
    pid = submit(wave, clock)
    emu.inject(HISTORY, "reset_after")
    assert [i.id for i in wave.history()] == [pid]
    assert [r.status for r in emu.requests_to(HISTORY)] == [0, 200]


# -- reading every documented variant ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2026-05-28T20:26:40Z", 1_780_000_000.0), ("2026-05-28T20:26:40.250Z", 1_780_000_000.25),
     ("2026-05-28T20:26:40.250000123Z", 1_780_000_000.25), ("2026-05-28T22:26:40+02:00", 1_780_000_000.0),
     ("2026-05-28T15:26:40-0500", 1_780_000_000.0), ("2026-05-28 20:26:40", 1_780_000_000.0),
     ("2026-05-28t20:26:40z", 1_780_000_000.0), (1_780_000_000, 1_780_000_000.0),
     (1_780_000_000_250, 1_780_000_000.25), (1_780_000_000.5, 1_780_000_000.5), ("1780000000", 1_780_000_000.0),
     ("1780000000250", 1_780_000_000.25), ("soon", None), ("", None), (None, None), (True, None), (0, None),
     (-5, None), (float("nan"), None), ("2026-02-31T00:00:00Z", None), ("2026-05-28T20:26:40+25:00", None),
     ({"at": 1}, None)],
)
def test_created_at_in_every_documented_form(value: object, expected: float | None) -> None:
    moment = parse_timestamp(value)
    assert moment == (pytest.approx(expected) if expected is not None else None)


def test_malformed_history_items_are_skipped(emu, clock) -> None:
    good = {"id": "a1", "model": TURBO, "status": "completed", "created_at": 1_780_000_000_000,
            "outputs": ["https://cdn.example/a1.png", 7], "error": ""}
    items = [good, {"id": "a2", "model": TURBO, "status": "Processing", "created_at": "2026-05-28T22:26:40+02:00"},
             {"model": TURBO, "created_at": "2026-05-28T20:26:40Z"}, {"id": "a4", "created_at": "later"},
             "a5", {"id": "a6", "model": BASE, "status": "failed", "created_at": 1_780_000_000.5, "error": "NSFW"}]
    emu.inject(HISTORY, "status", status=200,
               body={"code": 200, "message": "success", "data": {"page": 1, "total": 6, "items": items}})
    assert client(clock).history() == [
        HistoryItem("a1", TURBO, "completed", 1_780_000_000.0, ("https://cdn.example/a1.png",)),
        HistoryItem("a2", TURBO, "processing", 1_780_000_000.0),
        HistoryItem("a6", BASE, "failed", 1_780_000_000.5, error="NSFW"),
    ]
    assert len(emu.requests_to(HISTORY)) == 1  # six listed, six read: the total says that was all


@pytest.mark.parametrize("body", [{"code": 200, "data": {"items": {"id": "a1"}}}, {"code": 200, "data": []},
                                  {"code": 200, "message": "success"}, ["a1"]])
def test_a_malformed_history_page_is_a_typed_error(emu, clock, body: object) -> None:
    emu.inject(HISTORY, "status", status=200, body=body)
    with pytest.raises(InvalidResponseError, match="WaveSpeed answered the prediction history without the "
                                                   "documented data"):
        client(clock).history()


# -- orphans: a paid prediction whose id never reached us -----------------------------------------------------------


def test_a_dropped_submit_answer_is_found_again_as_the_one_orphan(emu, clock) -> None:
    wave = client(clock)
    known = submit(wave, clock, after=1.0)
    submit(wave, clock, "Z-Image-Turbo", after=1.0)  # another model in the window
    since = clock()
    emu.inject("POST /api/v3/wavespeed-ai/z-image/base", "reset_after")
    with pytest.raises(APIConnectionError) as info:
        wave.submit(PROMPT, width=256, height=256, seed=3)
    assert info.value.may_have_processed
    until = clock()
    lost = [pid for pid, task in emu.tasks.items() if task.created_at == until and task.model == BASE]
    assert len(lost) == 1 and len(emu.requests_to("POST /api/v3/wavespeed-ai/*")) == 3

    orphans = wave.find_orphans("Z-Image-Base", since, until, known_ids={known})
    assert [o.id for o in orphans] == lost and orphans[0].status == "created"
    assert history_bodies(emu)[-1] == {"page": 1, "page_size": 100, "model": BASE,
                                       "created_after": iso(since - ORPHAN_SKEW_SECONDS),
                                       "created_before": iso(until + ORPHAN_SKEW_SECONDS)}
    clock.advance(10.0)
    assert wave.collect(lost[0], sleep=clock.sleep, clock=clock).images == [emu.served_images[-1]]


def test_no_orphan_when_the_window_holds_only_known_predictions(emu, clock) -> None:
    wave = client(clock)
    since = clock()
    known = submit(wave, clock, after=0.0)
    assert wave.find_orphans(BASE, since, clock(), known_ids=[known]) == []
    clock.advance(ORPHAN_SKEW_SECONDS + 2)
    assert wave.find_orphans(BASE, clock(), clock(), known_ids=[]) == []  # the window starts after it


def test_two_dropped_answers_give_two_candidates(emu, clock) -> None:
    wave = client(clock)
    since = clock()
    emu.inject("POST /api/v3/wavespeed-ai/z-image/turbo", "reset_after", times=2)
    for _ in range(2):
        with pytest.raises(APIConnectionError):
            wave.submit(PROMPT, model="Z-Image-Turbo", width=256, height=256)
        clock.advance(1.0)
    orphans = wave.find_orphans("Z-Image-Turbo", since, clock(), known_ids=())
    assert len(orphans) == 2 and orphans[0].created_at > orphans[1].created_at
    assert {o.id for o in orphans} == set(emu.tasks)


def test_orphans_are_filtered_again_when_the_server_ignores_the_filters(emu, clock) -> None:
    start = clock()
    items = [{"id": "inside", "model": BASE, "status": "completed", "created_at": iso(start)},
             {"id": "other-model", "model": TURBO, "status": "completed", "created_at": iso(start)},
             {"id": "too-old", "model": BASE, "status": "completed", "created_at": iso(start - 60)},
             {"id": "known", "model": BASE, "status": "completed", "created_at": iso(start)}]
    emu.inject(HISTORY, "status", status=200, body={"code": 200, "data": {"page": 1, "total": 4, "items": items}})
    orphans = client(clock).find_orphans(BASE, start, start, known_ids={"known"})
    assert [o.id for o in orphans] == ["inside"]


def test_an_inverted_window_is_refused(emu, clock) -> None:
    with pytest.raises(ValidationError, match="the search window starts"):
        client(clock).find_orphans(BASE, clock(), clock() - 1, known_ids=())
    assert emu.requests == []


# -- balance and pricing --------------------------------------------------------------------------------------------


def test_balance_is_charged_for_each_completed_prediction(emu, clock) -> None:
    wave = client(clock)
    assert wave.balance() == 10.0
    submit(wave, clock)  # base: $0.01
    wave.submit(PROMPT, model="wavespeed-ai/z-image/turbo-inpaint", width=256, height=256,
                image_url=wave.upload(_png()), mask_url=wave.upload(_png()))  # still queued: not charged yet
    assert wave.balance() == pytest.approx(9.99)
    clock.advance(10.0)
    assert wave.balance() == pytest.approx(9.97)
    emu.balance = 0.5
    assert wave.balance() == 0.5
    assert [(r.method, r.path, r.body) for r in emu.requests_to("GET /api/v3/*")] == \
        [("GET", "/api/v3/balance", b"")] * 4


def test_balance_in_the_older_shape(emu, clock) -> None:
    emu.balance = 4.25
    emu.inject("GET /api/v3/balance", "status", status=404)
    assert client(clock).balance() == 4.25
    assert [r.path for r in emu.requests_to("GET /api/v3/*")] == ["/api/v3/balance", "/api/v3/account/balance"]
    answer = requests.get(f"{emu.url}/api/v3/account/balance", headers={"Authorization": f"Bearer {DEMO_KEY}"},
                          timeout=5)
    assert answer.json() == {"code": 200, "message": "success", "data": {"balance": 4.25, "currency": "USD"}}


@pytest.mark.parametrize(
    ("data", "expected"),
    [({"balance": 3}, 3.0), ({"balance": "2.5", "currency": "USD"}, 2.5), ({"balance": 1.5, "currency": "usd"}, 1.5),
     ({"balance": None}, None), ({"balance": True}, None), ({"currency": "USD"}, None),
     ({"balance": 2, "currency": "CNY"}, None)],
)
def test_balance_answers_are_read_defensively(emu, clock, data: dict, expected: float | None) -> None:
    emu.inject("GET /api/v3/balance", "status", status=200, body={"code": 200, "message": "success", "data": data})
    if expected is None:
        with pytest.raises(InvalidResponseError):
            client(clock).balance()
    else:
        assert client(clock).balance() == expected


@pytest.mark.parametrize("model_id", sorted(V3_MODELS))
def test_price_of_each_v3_model(emu, clock, model_id: str) -> None:
    inputs = {"prompt": PROMPT, "size": "1024*1024", "seed": -1}
    assert client(clock).price(model_id, inputs) == V3_MODELS[model_id].price
    sent = emu.requests_to("POST /api/v3/model/pricing")
    assert [(r.method, r.json) for r in sent] == [("POST", {"model_id": model_id, "inputs": inputs})]


def test_price_takes_a_model_name(emu, clock) -> None:
    assert client(clock).price("Z-Image-Base", {"prompt": PROMPT}) == 0.01
    assert emu.requests_to("POST /api/v3/model/pricing")[0].json["model_id"] == BASE


def test_price_of_an_unknown_model_is_refused(emu, clock) -> None:
    with pytest.raises(BadRequestError, match=r"WaveSpeed rejected the request \(HTTP 400: Unknown model "
                                              r"wavespeed-ai/flux-dev\.\)\."):
        client(clock).price("wavespeed-ai/flux-dev", {"prompt": PROMPT})


def test_a_malformed_price_is_a_typed_error(emu, clock) -> None:
    emu.inject("POST /api/v3/model/pricing", "status", status=200,
               body={"code": 200, "data": {"model_id": BASE, "unit_price": -1}})
    with pytest.raises(InvalidResponseError, match="WaveSpeed answered the price without the documented data"):
        client(clock).price(BASE, {"prompt": PROMPT})


def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), (200, 200, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def test_the_emulator_command_takes_a_balance(capsys: pytest.CaptureFixture[str]) -> None:
    from zimage_api.emulator.__main__ import main as emulator_main

    assert emulator_main(["--port", "0", "--balance", "2.5", "--serve-seconds", "0"]) == 0
    with pytest.raises(SystemExit) as info:
        emulator_main(["--port", "0", "--balance", "-1", "--serve-seconds", "0"])
    assert info.value.code == 2
    assert "'-1' is not an amount of USD, 0 or more" in capsys.readouterr().err
    assert Emulator(balance=2.5).balance == 2.5
    with pytest.raises(ValueError, match="balance must be a finite number of USD"):
        Emulator(balance=float("inf"))
