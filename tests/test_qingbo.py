"""Qingbo's task API against the emulator: submit, poll, cancel, collect; parsing of every documented variant."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.runs import run_task
from zimage_api.errors import (
    NotFoundError,
    PaymentRequiredError,
    TaskCancelledError,
    TaskFailedError,
    TaskTimeoutError,
    ValidationError,
)
from zimage_api.images import bytes_to_tensor
from zimage_api.ledger import Ledger
from zimage_api.polling import TaskState
from zimage_api.providers.qingbo_tasks import QingboClient, QingboTask, output_size, parse_progress, parse_timestamp

PROMPT = "Seaside cafe at sunset, wooden deck, warm tones"


def client(clock) -> QingboClient:
    return QingboClient(sleep=clock.sleep, now=clock)


def wait_kw(clock) -> dict:
    return {"sleep": clock.sleep, "clock": clock}


def test_submit_sends_only_documented_parameters(emu, clock) -> None:
    task = client(clock).submit(PROMPT, aspect_ratio="16:9", resolution="1K")
    sent = emu.requests_to("POST /v1/tasks")[0]
    assert sent.json == {"model": "z-image-turbo", "action": "generate", "prompt": PROMPT, "aspect_ratio": "16:9",
                         "resolution": "1K"}
    assert "seed" not in sent.json and "n" not in sent.json and "negative_prompt" not in sent.json
    assert sent.headers["idempotency-key"].startswith("zimage-")
    assert "prefer" not in sent.headers
    assert task.state is TaskState.QUEUED and task.task_id.startswith("task-")
    assert task.pre_consumed_cost == 5313


def test_fixed_seed_extend_and_callbacks_are_passed_through(emu, clock) -> None:
    client(clock).submit(PROMPT, seed=1234, prompt_extend=True, callback_url="https://hooks.example/zimage",
                         callback_events="ignored-if-not-a-list".split(",") + [" task.completed "],
                         prefer_wait=90)
    sent = emu.requests_to("POST /v1/tasks")[0]
    assert sent.json["seed"] == 1234 and sent.json["prompt_extend"] is True
    assert sent.json["callback_url"] == "https://hooks.example/zimage"
    assert sent.json["callback_events"] == ["ignored-if-not-a-list", "task.completed"]
    assert sent.headers["prefer"] == "wait=60"


def test_generate_end_to_end_pixels_cost_and_ledger(emu, clock, isolated_env) -> None:
    progress: list[tuple[float, str]] = []
    result = run_task(client(clock), PROMPT, aspect_ratio="4:3", resolution="1K",
                                    on_progress=lambda f, t: progress.append((f, t)), **wait_kw(clock))
    task_id = result.task_ids[0]
    served = emu.served_images[-1]
    assert result.images == [served]
    image, _ = bytes_to_tensor(result.images)
    expected = np.asarray(Image.open(io.BytesIO(served)).convert("RGB")) / 255.0
    assert image.shape == (1, *expected.shape) and np.allclose(image[0].numpy(), expected, atol=1e-6)
    assert expected.shape[1] / expected.shape[0] == pytest.approx(4 / 3, rel=0.02)
    assert result.cost_quota == 5313 and result.cost_usd == pytest.approx(0.010626)
    assert progress[-1][0] == 1.0 and any(0 < f < 1 for f, _ in progress)
    entry = Ledger.default().get(task_id)
    assert entry["status"] == "completed" and entry["urls"] == result.urls and len(entry["paths"]) == 1
    polls = emu.requests_to("GET /v1/tasks/*")
    assert 1 <= len(polls) <= 8  # 2.5 s of work noticed with a handful of status requests


def test_collect_again_is_served_from_the_local_copy(emu, clock) -> None:
    qingbo = client(clock)
    first = run_task(qingbo, PROMPT, **wait_kw(clock))
    before = len(emu.requests)
    again = qingbo.collect(first.task_ids[0], **wait_kw(clock))
    assert again.images == first.images and len(emu.requests) == before
    assert "served from the local copy" in again.notes[0]


def test_cancel_while_queued_refunds(emu, clock) -> None:
    qingbo = client(clock)
    task = qingbo.submit(PROMPT)
    with pytest.raises(TaskCancelledError) as info:
        qingbo.wait(task.task_id, cancel_check=lambda: True, **wait_kw(clock))
    assert info.value.remote_cancelled
    assert len(emu.requests_to("POST /v1/tasks/*/cancel")) == 1
    assert emu.tasks[task.task_id].status == "cancelled"


def test_cancel_while_processing_is_local_only(emu, clock) -> None:
    qingbo = client(clock)
    task = qingbo.submit(PROMPT)
    clock.advance(1.0)  # past the queue time: processing now
    with pytest.raises(TaskCancelledError) as info:
        qingbo.wait(task.task_id, cancel_check=lambda: True, **wait_kw(clock))
    assert not info.value.remote_cancelled and "left running" in str(info.value)
    assert emu.requests_to("POST /v1/tasks/*/cancel") == []


@pytest.mark.parametrize(
    ("code", "retryable", "advice"),
    [
        ("upstream_bad_request", False, "change it and run again"),
        ("upstream_unavailable", True, "this is retryable"),
        ("upstream_rate_limited", True, "wait a minute"),
        ("task_failed", False, "run again"),
    ],
)
def test_failed_tasks_are_typed(emu, clock, code: str, retryable: bool, advice: str) -> None:
    emu.inject("POST /v1/tasks", "task_failed", code=code, message="the upstream said no")
    with pytest.raises(TaskFailedError) as info:
        run_task(client(clock), PROMPT, **wait_kw(clock))
    err = info.value
    assert err.code == code and err.retryable is retryable and err.task_id.startswith("task-")
    assert "the upstream said no" in str(err) and advice in str(err) and "not billed" in str(err)
    assert Ledger.default().get(err.task_id)["status"] == "failed"


def test_stuck_task_times_out_and_stays_unfinished(emu, clock) -> None:
    emu.inject("POST /v1/tasks", "stuck")
    with pytest.raises(TaskTimeoutError) as info:
        run_task(client(clock), PROMPT, timeout=30, **wait_kw(clock))
    tid = info.value.task_id
    assert f"collect it later by its id, {tid}, without paying again" in str(info.value)
    assert [e["task_id"] for e in Ledger.default().unfinished()] == [tid]
    assert len(emu.requests_to("POST /v1/tasks")) == 1


def test_unknown_task_and_payment_errors(emu, clock) -> None:
    with pytest.raises(NotFoundError, match="Qingbo has no task task-nope"):
        client(clock).get("task-nope")
    emu.inject("POST /v1/tasks", "status", status=402,
               body={"error": {"message": "insufficient balance", "code": "insufficient_quota"}})
    with pytest.raises(PaymentRequiredError, match="balance is too low .*insufficient balance"):
        client(clock).submit(PROMPT)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"prompt": "x" * 801}, "prompt"),
        ({"prompt": "  "}, "prompt"),
        ({"aspect_ratio": "21:9"}, "aspect_ratio"),
        ({"resolution": "4K"}, "resolution"),
        ({"seed": -7}, "seed"),
    ],
)
def test_bad_input_sends_nothing(emu, clock, kwargs: dict, field: str) -> None:
    args = {"prompt": PROMPT, **kwargs}
    with pytest.raises(ValidationError) as info:
        client(clock).submit(args.pop("prompt"), **args)
    assert info.value.field == field and emu.requests == []


def test_bad_task_id_sends_nothing(emu, clock) -> None:
    with pytest.raises(ValidationError):
        client(clock).get("../v1/tasks")
    assert emu.requests == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(45, 0.45), ("45%", 0.45), ("45", 0.45), ("", None), (None, None), (100, 1.0), (" 7 % ", 0.07),
     ("abc", None), (150, 1.0), (True, None), (float("nan"), None)],
)
def test_progress_variants(raw, expected) -> None:
    assert parse_progress(raw) == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(1775285160040, 1775285160.04), (1775285160, 1775285160.0), ("1775285160", 1775285160.0), (None, None),
     ("x", None), (0, None)],
)
def test_timestamp_variants(raw, expected) -> None:
    assert parse_timestamp(raw) == (pytest.approx(expected) if expected is not None else None)


def test_result_url_array_and_lowercase_resolution() -> None:
    task = QingboTask.parse({
        "task_id": "task-1", "status": "completed", "progress": "100%", "created_at": 1775285160040,
        "cost": 5313, "result": {"images": [{"url": ["https://a/1.jpg", "https://a/2.jpg"], "expires_at": 1775371560},
                                            {"url": "https://a/3.jpg"}]},
    })
    assert task.urls == ["https://a/1.jpg", "https://a/2.jpg", "https://a/3.jpg"]
    assert task.expires_at == 1775371560 and task.progress == 1.0 and task.cost == 5313
    assert output_size("16:9", "2K") == (2048, 1152) and output_size("2:3", "1k") == (683, 1024)


def test_rate_limit_quota_window_waits_until_reset(emu, clock) -> None:
    emu.inject("POST /v1/tasks", "quota", reset_in=12.0)
    task = client(clock).submit(PROMPT)
    assert task.task_id and len(emu.requests_to("POST /v1/tasks")) == 2
    assert clock.sleeps == [pytest.approx(12.0, abs=0.01)]


def test_prefer_wait_returns_a_quick_task_finished_without_polling(monkeypatch) -> None:
    from zimage_api.emulator import DEMO_KEY, Emulator

    with Emulator(queue_seconds=0.0, process_seconds=0.2, picture_scale=0.25, qingbo_keys={DEMO_KEY}) as emu:
        qingbo = QingboClient(api_key=DEMO_KEY, base_url=emu.url)
        result = run_task(qingbo, PROMPT)  # no cancel_check: the submit may hold its answer
        sent = emu.requests_to("POST /v1/tasks")[0]
        assert sent.headers["prefer"] == "wait=10"
        assert emu.requests_to("GET /v1/tasks/*") == [] and result.images == [emu.served_images[-1]]
        run_task(qingbo, PROMPT, cancel_check=lambda: False)
        assert "prefer" not in emu.requests_to("POST /v1/tasks")[1].headers  # Cancel must stay responsive


def test_collecting_a_cancelled_task_says_how_to_get_a_picture(emu, clock) -> None:
    qingbo = client(clock)
    task = qingbo.submit(PROMPT)
    assert qingbo.cancel(task.task_id) is True
    with pytest.raises(TaskFailedError) as info:
        qingbo.collect(task.task_id, **wait_kw(clock))
    assert str(info.value) == (f"Qingbo task {task.task_id} was cancelled (refunded), so it has no picture; submit a "
                               "new task for one (in ComfyUI, change the seed of Qingbo Task Submit).")
    assert Ledger.default().get(task.task_id)["status"] == "cancelled"
