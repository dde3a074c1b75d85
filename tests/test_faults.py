"""The fault matrix: each ordinary failure of a paid image API, its outcome, the requests it cost, and proof that
no task was ever submitted twice."""

from __future__ import annotations

import pytest

from tests.runs import run_task
from zimage_api.errors import (
    APIConnectionError,
    APITimeoutError,
    InvalidResponseError,
    RateLimitError,
    ResultExpiredError,
)
from zimage_api.http.retry import RetryPolicy
from zimage_api.ledger import Ledger
from zimage_api.providers.openai_images import ImagesClient
from zimage_api.providers.qingbo_tasks import QingboClient
from zimage_api.providers.wavespeed_v3 import WaveSpeedClient

PROMPT = "Editorial-style product photo of a ceramic mug on a linen table, soft morning light."
GENERATIONS = "POST /v1/images/generations"


def qingbo(clock, **kw) -> QingboClient:
    return QingboClient(sleep=clock.sleep, now=clock, **kw)


def test_429_with_retry_after_twice_then_ok(emu, clock) -> None:
    emu.inject(GENERATIONS, "rate_limit", times=2, retry_after="1")
    result = ImagesClient(sleep=clock.sleep, now=clock).generate(PROMPT, width=256, height=256)
    assert result.images == [emu.served_images[-1]]
    assert len(emu.requests_to(GENERATIONS)) == 3
    assert clock.sleeps == [1.0, 1.0]  # the header's wait, not the backoff's


def test_quota_window_beyond_the_cap_names_the_reset_time(emu, clock) -> None:
    emu.inject("POST /v1/tasks", "quota", reset_in=3600)
    with pytest.raises(RateLimitError) as info:
        qingbo(clock, retry=RetryPolicy(max_retry_after=60)).submit(PROMPT)
    assert "The quota window resets at" in str(info.value) and "UTC" in str(info.value)
    assert info.value.reset_at == pytest.approx(clock() + 3600, abs=1)
    assert len(emu.requests_to("POST /v1/tasks")) == 1 and clock.sleeps == [] and emu.task_count() == 0


def test_503_three_times_then_ok_backs_off_with_jitter(emu, clock) -> None:
    emu.inject(GENERATIONS, "overloaded", times=3)
    result = ImagesClient(sleep=clock.sleep, now=clock).generate(PROMPT, width=256, height=256)
    assert result.images == [emu.served_images[-1]]
    assert len(emu.requests_to(GENERATIONS)) == 4
    low_high = [(0.375, 0.625), (0.75, 1.25), (1.5, 2.5)]
    assert len(clock.sleeps) == 3 and all(lo <= s <= hi for s, (lo, hi) in zip(clock.sleeps, low_high, strict=True))
    assert clock.sleeps != [0.5, 1.0, 2.0]  # jittered


def test_reset_before_the_submit_is_processed_is_retried_once_only(emu, clock) -> None:
    emu.inject("POST /v1/tasks", "reset_before")
    task = qingbo(clock).submit(PROMPT)
    posts = emu.requests_to("POST /v1/tasks")
    assert len(posts) == 2 and posts[0].status == 0
    assert posts[0].headers["idempotency-key"] == posts[1].headers["idempotency-key"]
    assert emu.task_count("qingbo") == 1 and task.task_id in emu.tasks


def test_reset_after_the_submit_is_processed_returns_the_same_task(emu, clock) -> None:
    emu.inject("POST /v1/tasks", "reset_after")
    task = qingbo(clock).submit(PROMPT)
    posts = emu.requests_to("POST /v1/tasks")
    assert len(posts) == 2
    assert posts[0].headers["idempotency-key"] == posts[1].headers["idempotency-key"]
    assert emu.task_count("qingbo") == 1 and list(emu.tasks) == [task.task_id]
    assert [e["task_id"] for e in Ledger.default().unfinished()] == [task.task_id]


def test_reset_after_a_wavespeed_submit_is_not_sent_again(emu, clock) -> None:
    # WaveSpeed documents no idempotency key, so a dropped answer can hide a paid prediction: never resend it.
    emu.inject("POST /api/v3/wavespeed-ai/z-image/base", "reset_after")
    with pytest.raises(APIConnectionError) as info:
        WaveSpeedClient(sleep=clock.sleep).submit(PROMPT, width=256, height=256)
    assert info.value.may_have_processed and "Check your WaveSpeed dashboard" in str(info.value)
    assert len(emu.requests_to("POST /api/v3/wavespeed-ai/*")) == 1 and emu.task_count("wavespeed") == 1


def test_server_down_before_a_wavespeed_submit_is_retried(emu, clock) -> None:
    # Connection refused: the server certainly did nothing, so even a paid submit may be sent again.
    emu.stop()
    calls = []

    def sleep(seconds: float) -> None:
        calls.append(seconds)
        clock.sleep(seconds)
        if len(calls) == 2:
            emu.start()

    prediction = WaveSpeedClient(sleep=sleep).submit(PROMPT, width=256, height=256)
    assert len(calls) == 2 and emu.task_count("wavespeed") == 1 and prediction.id in emu.tasks


def test_read_timeout_on_a_sync_images_post_is_not_retried(emu, clock) -> None:
    emu.inject(GENERATIONS, "delay", seconds=0.5)
    with pytest.raises(APITimeoutError) as info:
        ImagesClient(sleep=clock.sleep, timeout=(2.0, 0.15)).generate(PROMPT, width=256, height=256)
    assert "may have been processed" in str(info.value)
    assert len(emu.requests_to(GENERATIONS)) == 1 and clock.sleeps == []


def test_status_get_failing_five_times_mid_poll_resumes(emu, clock) -> None:
    client = qingbo(clock)
    task = client.submit(PROMPT)
    emu.inject("GET /v1/tasks/*", "reset_before", times=3)
    emu.inject("GET /v1/tasks/*", "overloaded", times=2)
    result = client.collect(task.task_id, sleep=clock.sleep, clock=clock)
    assert result.images == [emu.served_images[-1]]
    assert len(emu.requests_to("POST /v1/tasks")) == 1
    assert sum(1 for r in emu.requests_to("GET /v1/tasks/*") if r.fault) == 5


def test_malformed_json_is_named(emu, clock) -> None:
    emu.inject("POST /v1/tasks", "malformed_json")
    with pytest.raises(InvalidResponseError) as info:
        qingbo(clock).submit(PROMPT)
    assert str(info.value).startswith("Qingbo answered HTTP 200 with cut-off or malformed JSON")
    assert len(emu.requests_to("POST /v1/tasks")) == 1


def test_html_502_on_a_wavespeed_submit_is_named_not_repeated(emu, clock) -> None:
    emu.inject(GENERATIONS, "html_502")
    with pytest.raises(InvalidResponseError) as info:
        ImagesClient(sleep=clock.sleep).generate(PROMPT, width=256, height=256)
    assert str(info.value).startswith("WaveSpeed answered HTTP 502 with an HTML page (a gateway or proxy error)")
    assert "<html" not in str(info.value) and len(emu.requests_to(GENERATIONS)) == 1


def test_html_502_on_an_idempotent_qingbo_submit_is_retried_once(emu, clock) -> None:
    emu.inject("POST /v1/tasks", "html_502")
    task = qingbo(clock).submit(PROMPT)
    assert len(emu.requests_to("POST /v1/tasks")) == 2 and emu.task_count("qingbo") == 1
    assert list(emu.tasks) == [task.task_id]


def test_invalid_base64_from_v3_is_a_clear_error(emu, clock) -> None:
    from zimage_api.errors import ImageDecodeError

    emu.inject("GET /api/v3/predictions/*", "invalid_base64", times=50)
    with pytest.raises(ImageDecodeError, match="invalid base64"):
        run_task(WaveSpeedClient(sleep=clock.sleep), PROMPT, width=256, height=256, base64_output=True,
                                                    sleep=clock.sleep, clock=clock)


def test_truncated_download_is_retried_once(emu, clock) -> None:
    emu.inject("GET /files/*", "truncated")
    result = run_task(qingbo(clock), PROMPT, sleep=clock.sleep, clock=clock)
    assert result.images == [emu.served_images[-1]]
    assert len(emu.requests_to("GET /files/*")) == 2


def test_truncated_download_twice_is_a_clear_error_and_the_task_stays_recoverable(emu, clock) -> None:
    emu.inject("GET /files/*", "truncated", times=2)
    client = qingbo(clock)
    with pytest.raises(APIConnectionError, match="was cut off twice") as info:
        run_task(client, PROMPT, sleep=clock.sleep, clock=clock)
    assert "the request was paid" in str(info.value) and "kept as a URL" in str(info.value)
    task_id = next(iter(emu.tasks))
    assert [e["task_id"] for e in Ledger.default().unfinished()] == [task_id]
    again = client.collect(task_id, sleep=clock.sleep, clock=clock)  # no fault left: collected, not re-submitted
    assert again.images == [emu.served_images[-1]] and len(emu.requests_to("POST /v1/tasks")) == 1


def test_expired_result_url(emu, clock) -> None:
    emu.inject("GET /files/*", "expired")
    with pytest.raises(ResultExpiredError) as info:
        run_task(qingbo(clock), PROMPT, sleep=clock.sleep, clock=clock)
    task_id = next(iter(emu.tasks))
    assert str(info.value) == (
        f"Qingbo task {task_id} finished, but its picture is no longer hosted (the result URL expired) and no local "
        "copy was kept; submit a new task for a picture (in ComfyUI, queue Qingbo Task Submit again).")
    assert len(emu.requests_to("GET /files/*")) == 1
    # it is no longer listed as collectable, so `tasks resume` and receipts do not come back to it
    assert Ledger.default().unfinished() == [] and Ledger.default().get(task_id)["status"] == "expired"


def test_emulator_restarted_mid_poll(emu, clock) -> None:
    client = qingbo(clock)
    task = client.submit(PROMPT)
    state = {"down_at": None}

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if state["down_at"] is None and len(emu.requests_to("GET /v1/tasks/*")) >= 1:
            emu.stop()  # the port is closed: connection refused
            state["down_at"] = clock()
        elif state["down_at"] is not None and not emu.running and clock() - state["down_at"] >= 2.0:
            emu.start()

    result = client.collect(task.task_id, sleep=sleep, clock=clock)
    assert result.images == [emu.served_images[-1]]
    assert state["down_at"] is not None and len(emu.requests_to("POST /v1/tasks")) == 1


def test_fifty_tasks_at_once_bounded_pool_no_leaks(emu, clock) -> None:
    import os
    import threading
    import time

    from zimage_api.parallel import run_jobs

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    import gc

    gc.collect()  # a socket of an earlier test that only a collection closes must not count against this one
    threads_before, fds_before = threading.active_count(), open_fds()
    client = qingbo(clock)
    running = {"now": 0, "peak": 0}
    lock = threading.Lock()

    def job(index: int):
        def collect_one():
            with lock:
                running["now"] += 1
                running["peak"] = max(running["peak"], running["now"])
            try:
                task = client.submit(f"{PROMPT} #{index}")
                return client.collect(task.task_id, first=task, sleep=clock.sleep, clock=clock, timeout=600)
            finally:
                with lock:
                    running["now"] -= 1
        return collect_one

    outcomes = run_jobs([job(i) for i in range(50)], cancel=threading.Event(), workers=8, tick_seconds=0.01)
    client.transport.close()
    assert all(o.finished and o.error is None for o in outcomes), [o.error for o in outcomes if o.error][:3]
    assert len({o.value.task_ids[0] for o in outcomes}) == 50
    assert emu.task_count("qingbo") == 50 and len(emu.requests_to("POST /v1/tasks")) == 50
    assert running["peak"] <= 8
    deadline = time.monotonic() + 5
    while (threading.active_count() > threads_before or open_fds() > fds_before) and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)  # a thread left by an earlier test may still hold a file for a moment
    assert threading.active_count() <= threads_before  # (a thread left by an earlier test may end meanwhile)
    # A leak of this run's 50 tasks would be dozens of files; one or two may belong to an earlier test's server
    # thread that is still closing on a loaded machine.
    assert open_fds() <= fds_before + 2, sorted(os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                                                if os.path.exists(f"/proc/self/fd/{fd}"))


def test_cancel_during_a_status_retry_wait_still_cancels_the_queued_task(emu, clock) -> None:
    client = qingbo(clock)
    task = client.submit(PROMPT)
    emu.inject("GET /v1/tasks/*", "rate_limit", times=10, retry_after="5")
    cancel_at = clock() + 0.2  # still queued (the emulator queues for 0.5 s), inside the 5 s retry wait
    with pytest.raises(Exception) as info:
        client.wait(task.task_id, sleep=clock.sleep, clock=clock, cancel_check=lambda: clock() >= cancel_at)
    from zimage_api.errors import TaskCancelledError

    assert isinstance(info.value, TaskCancelledError) and info.value.remote_cancelled
    assert clock() - cancel_at <= 0.25 + 1e-9  # the 5 s retry wait was cut short
    assert emu.tasks[task.task_id].status == "cancelled"


def test_the_key_never_goes_to_a_plain_http_url_of_an_https_api(clock, monkeypatch) -> None:
    from zimage_api.config import QINGBO
    from zimage_api.emulator import Emulator
    from zimage_api.http.transport import Transport

    with Emulator(clock=clock) as files:
        host = files.url.removeprefix("http://")
        transport = Transport(QINGBO, api_key="qb-secret-key-0123456789", base_url=f"https://{host}",
                              sleep=clock.sleep)
        with pytest.raises(Exception):
            transport.download(f"http://{host}/files/missing.jpg")
        assert [r.headers.get("authorization") for r in files.requests] == [None]


def test_a_store_that_cannot_record_pays_nothing(emu, clock, monkeypatch, tmp_path) -> None:
    from zimage_api.store.sqlite import StoreError

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x", encoding="utf-8")
    monkeypatch.setenv("ZIMAGE_DATA_DIR", str(blocker))
    with pytest.raises(StoreError) as caught:
        run_task(qingbo(clock), PROMPT, sleep=clock.sleep, clock=clock, cancel_check=lambda: False)
    assert str(caught.value) == (
        f"The task store {blocker}/zimage.sqlite3 cannot be created ({blocker} is a file, not a folder), so nothing "
        "was sent: a paid request is made only once its record can be kept. Fix the folder's permissions or free "
        "some disk space, or set ZIMAGE_DATA_DIR to a folder you can write.")
    assert emu.requests_to("POST /v1/tasks") == []


def test_an_unknown_status_in_the_submit_answer_keeps_the_id(emu, clock) -> None:
    from zimage_api.polling import UnknownStatusError

    emu.inject("POST /v1/tasks", "status", status=200,
               body={"task_id": "task-wave-odd-1", "status": "pending_review", "progress": 0})
    with pytest.raises(UnknownStatusError, match="task-wave-odd-1"):
        qingbo(clock).submit(PROMPT)
    assert [e["task_id"] for e in Ledger.default().unfinished()] == ["task-wave-odd-1"]
