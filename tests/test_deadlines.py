"""A timeout is a promise: one row per fault, over real HTTP to the emulator, on a fake clock.

Each row submits one Qingbo task, makes its status requests meet the fault, and waits with a 10 s timeout. It checks
the time taken on the fake clock, the error and its text, the requests that went out, and that the task id is
still collectable afterwards without a second submit.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from zimage_api.emulator import Emulator
from zimage_api.errors import APIConnectionError, APITimeoutError, RateLimitError, ServerError, TaskTimeoutError
from zimage_api.polling import PollSchedule, UnknownStatusError
from zimage_api.providers.qingbo_tasks import QingboClient

PROMPT = "A lighthouse on a cliff at dusk, long exposure."
STATUS = "GET /v1/tasks/task-*"
TIMEOUT = 10.0
# A task just submitted is first asked about after the schedule's opening; the deadline counts from the start.
OPENING = PollSchedule().opening * PollSchedule().shortest
LEFT = f"{TIMEOUT - OPENING:g} s"  # of the timeout, when the first status request goes out


@dataclass
class Row:
    name: str
    arrange: Callable[[Emulator], None]
    error: type[BaseException] | None  # None: the wait succeeds
    cause: type[BaseException] | None
    text: str  # a regular expression the message must match ({id} and {url} are filled in)
    seconds: tuple[float, float]  # time taken on the fake clock
    status_requests: tuple[int, int]  # status requests the emulator received
    client: dict[str, Any] | None = None


def refuse(emu: Emulator) -> None:
    emu.stop()  # the port stays reserved for start(): connections to it are refused meanwhile


ROWS = [
    Row("a Retry-After 60 storm inside a 10 s timeout",
        lambda emu: emu.inject(STATUS, "overloaded", times=50, retry_after=60),
        TaskTimeoutError, ServerError,
        r"^Qingbo is busy \(HTTP 503\) and asked to wait 60 s, until \d\d:\d\d:\d\d UTC, but only " + LEFT + r" of the "
        r"timeout were left, so it was not waited for\. Task {id} is recorded and was not re-submitted; collect "
        r"it later by its id, {id}, without paying again\.$",
        (OPENING - 0.1, OPENING + 0.5), (1, 1)),
    Row("a 429 whose reset_at is past the deadline",
        lambda emu: emu.inject(STATUS, "quota", times=50, reset_in=45),
        TaskTimeoutError, RateLimitError,
        r"^Qingbo is rate-limiting \(HTTP 429\) and asked to wait (?:45|44\.9\d*|45\.0\d*) s, until "
        r"\d\d:\d\d:\d\d UTC, but only " + LEFT + r" "
        r"of the timeout were left, so it was not waited for\. Task {id} is recorded",
        (OPENING - 0.1, OPENING + 0.5), (1, 1)),
    Row("a refused connection", refuse,
        TaskTimeoutError, APIConnectionError,
        r"^Could not reach Qingbo at {url} for " + LEFT + r" \(connection refused\)\. Task {id} is recorded and was "
        r"not re-submitted; collect it later",
        (TIMEOUT, TIMEOUT + 2), (0, 0)),
    Row("a connection that hangs until its read timeout",
        lambda emu: emu.inject(STATUS, "delay", times=50, seconds=0.4),
        TaskTimeoutError, APITimeoutError,
        r"^Qingbo at {url} did not answer the status requests in time, for " + LEFT + r" \(read timeout\)\. Task {id} "
        r"is recorded and was not re-submitted",
        (TIMEOUT, TIMEOUT + 2), (3, 12), client={"timeout": (2.0, 0.1)}),
    Row("an unknown status word",
        lambda emu: emu.inject(STATUS, "status_word", word="moderated"),
        UnknownStatusError, None,
        r"^Qingbo reported the unknown status 'moderated' for task {id}; the task was left as it is and can be "
        r"collected later by its id\.$",
        (OPENING - 0.1, OPENING + 0.5), (1, 1)),
    Row("a 503 storm that ends",
        lambda emu: emu.inject(STATUS, "overloaded", times=4),
        None, None, "", (2.0, TIMEOUT), (5, 12)),
]


def wait_kw(clock) -> dict[str, Any]:
    return {"sleep": clock.sleep, "clock": clock, "timeout": TIMEOUT}


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_a_timeout_holds_and_the_error_says_what_was_seen(row: Row, emu: Emulator, clock) -> None:
    client = QingboClient(sleep=clock.sleep, now=clock, **(row.client or {}))
    task = client.submit(PROMPT, seed=7)
    url = client.transport.base_url
    row.arrange(emu)
    started = clock()
    try:
        if row.error is None:
            result = client.collect(task.task_id, **wait_kw(clock))
            assert result.images and result.task_ids == [task.task_id]
        else:
            with pytest.raises(row.error) as caught:
                client.collect(task.task_id, **wait_kw(clock))
            message = str(caught.value)
            pattern = row.text.format(id=re.escape(task.task_id), url=re.escape(url))
            assert re.search(pattern, message), message
            if row.cause is not None:
                assert isinstance(caught.value.cause, row.cause) and caught.value.__cause__ is caught.value.cause
            assert "still running" not in message
    finally:
        if not emu.running:
            emu.start()
    taken = clock() - started
    assert row.seconds[0] <= taken <= row.seconds[1], taken
    statuses = len(emu.requests_to(STATUS))
    assert row.status_requests[0] <= statuses <= row.status_requests[1], statuses

    # The task id is still collectable, and nothing was submitted twice.
    emu.clear_faults()
    again = client.collect(task.task_id, **wait_kw(clock))
    assert again.images == emu.tasks[task.task_id].outputs
    assert len(emu.requests_to("POST /v1/tasks")) == 1


def test_a_timeout_holds_whatever_retry_after_says_on_v3(emu: Emulator, clock) -> None:
    from zimage_api.providers.wavespeed_v3 import WaveSpeedClient

    client = WaveSpeedClient(sleep=clock.sleep, now=clock)
    prediction = client.submit(PROMPT, width=256, height=256)
    emu.inject("GET /api/v3/predictions/*", "status", times=50, status=503, headers={"Retry-After": "60"})
    started = clock()
    with pytest.raises(TaskTimeoutError) as caught:
        client.collect(prediction.id, **wait_kw(clock))
    assert clock() - started <= OPENING + 0.5
    assert "WaveSpeed is busy (HTTP 503) and asked to wait 60 s" in str(caught.value)
    assert f"Task {prediction.id} is recorded" in str(caught.value)


def test_retry_waits_never_reach_past_the_deadline(emu: Emulator, clock) -> None:
    """Backoff without a Retry-After: the last attempt goes out at the deadline, never after it."""
    client = QingboClient(sleep=clock.sleep, now=clock)
    task = client.submit(PROMPT, seed=8)
    emu.inject(STATUS, "overloaded", times=500)
    started = clock()
    with pytest.raises(TaskTimeoutError) as caught:
        client.collect(task.task_id, **wait_kw(clock))
    assert TIMEOUT <= clock() - started <= TIMEOUT + 2
    assert re.match(r"Qingbo at \S+ answered every status request with HTTP 503 for " + LEFT + r"\. Task ",
                    str(caught.value)), str(caught.value)
    assert isinstance(caught.value.cause, ServerError)


# -- the same promises through the nodes and the command line -------------------------------------------------------


def _errors(nodes):
    import sys

    return sys.modules[nodes.__name__.rsplit(".", 1)[0] + ".zimage_api.errors"]


def _submit_node(nodes) -> str:
    from tests.comfy_stubs import call_node

    (task_ids,) = call_node(nodes.QingboTaskSubmit().submit(
        prompt=PROMPT, aspect_ratio="1:1", resolution="1K", prompt_extend=False, seed=3, count=1, unique_id="3"))
    return task_ids


def _poll_node(nodes, task_ids: str, timeout: int = 10):
    from tests.comfy_stubs import call_node

    return call_node(nodes.QingboTaskPoll().poll(task_id=task_ids, timeout=timeout, unique_id="4"))


def test_poll_node_says_at_once_that_the_server_asked_past_its_timeout(nodes, emu: Emulator, clock) -> None:
    task_id = _submit_node(nodes)
    emu.inject(STATUS, "overloaded", times=50, retry_after=60)
    started = clock()
    with pytest.raises(_errors(nodes).TaskTimeoutError) as caught:
        _poll_node(nodes, task_id)
    assert clock() - started <= OPENING + 0.5
    message = str(caught.value)
    assert message.startswith("Qingbo is busy (HTTP 503) and asked to wait 60 s, until ")
    assert f"Task {task_id} is recorded and was not re-submitted; queue the prompt again to collect it" in message
    emu.clear_faults()
    image, _info = _poll_node(nodes, task_id, timeout=60)
    assert image.shape[0] == 1 and len(emu.requests_to("POST /v1/tasks")) == 1


def test_the_status_line_shows_a_retry_wait_then_the_tasks_own_state(nodes, emu: Emulator, clock) -> None:
    task_id = _submit_node(nodes)
    emu.inject(STATUS, "overloaded", times=2, retry_after=2)
    image, _info = _poll_node(nodes, task_id, timeout=60)
    texts = [text.split(" · ")[0] for text, _ in nodes._Node.context.hooks.texts]
    first = texts.index("Qingbo busy (HTTP 503), retrying in 2 s (attempt 2 of 6)")
    second = texts.index("Qingbo busy (HTTP 503), retrying in 2 s (attempt 3 of 6)")
    assert first < second
    after = texts[second + 1:]
    assert after and not any("retrying" in text for text in after)  # back to the task's own state
    # The next line is the task's own state again (which one depends on when the node's thread redrew).
    assert after[0].split(" ")[0] in ("queued", "processing", "completed", "done") and texts[-1].startswith("done")
    assert image.shape[0] == 1


def test_generate_v3_node_timeout_holds_whatever_retry_after_says(nodes, emu: Emulator, clock) -> None:
    from tests.comfy_stubs import call_node

    emu.inject("GET /api/v3/predictions/*", "status", times=50, status=503, headers={"Retry-After": "60"})
    started = clock()
    with pytest.raises(_errors(nodes).TaskTimeoutError) as caught:
        call_node(nodes.ZImageGenerate().generate(
            prompt=PROMPT, negative_prompt="", model="Z-Image-Base", api="v3", guidance_scale=4.0, width=256,
            height=256, seed=5, count=1, timeout=10, unique_id="7"))
    assert clock() - started <= OPENING + 0.5
    assert "WaveSpeed is busy (HTTP 503) and asked to wait 60 s" in str(caught.value)
    assert len(emu.requests_to("POST /api/v3/wavespeed-ai/*")) == 1


def _cli(clock, capsys, *argv: str) -> tuple[int, str, str]:
    from zimage_api.cli import run

    code = run(list(argv), sleep=clock.sleep, clock=clock)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_poll_timeout_holds_and_names_the_command_to_resume(emu: Emulator, clock, capsys, tmp_path) -> None:
    task = QingboClient(sleep=clock.sleep, now=clock).submit(PROMPT, seed=9)
    emu.inject(STATUS, "overloaded", times=50, retry_after=60)
    started = clock()
    code, out, err = _cli(clock, capsys, "poll", task.task_id, "--timeout", "10", "--out", str(tmp_path))
    assert code == 1 and out == ""
    assert clock() - started <= OPENING + 0.5
    assert "Qingbo is busy (HTTP 503) and asked to wait 60 s" in err
    assert f"run `python -m zimage_api poll {task.task_id}` to collect it" in err


def test_cli_shows_each_retry_wait_on_stderr(emu: Emulator, clock, capsys, tmp_path) -> None:
    task = QingboClient(sleep=clock.sleep, now=clock).submit(PROMPT, seed=10)
    emu.inject(STATUS, "overloaded", times=2, retry_after=1)
    code, out, err = _cli(clock, capsys, "poll", task.task_id, "--out", str(tmp_path))
    assert code == 0, err
    assert "python -m zimage_api: Qingbo busy (HTTP 503), retrying in 1 s (attempt 2 of 6)" in err
    assert "python -m zimage_api: Qingbo busy (HTTP 503), retrying in 1 s (attempt 3 of 6)" in err
    assert len(out.splitlines()) == 1


def test_cli_tasks_resume_timeout_holds_against_an_unreachable_server(emu: Emulator, clock, capsys,
                                                                      tmp_path) -> None:
    task = QingboClient(sleep=clock.sleep, now=clock).submit(PROMPT, seed=11)
    emu.stop()
    try:
        started = clock()
        code, out, err = _cli(clock, capsys, "tasks", "resume", "--timeout", "10", "--out", str(tmp_path))
        taken = clock() - started
    finally:
        emu.start()
    assert code == 1 and TIMEOUT <= taken <= TIMEOUT + 2, (code, taken, err)
    assert f"error: Could not reach Qingbo at {emu.url} for {LEFT} (connection refused). Task {task.task_id}" in err
    assert "python -m zimage_api: Qingbo unreachable (connection refused), retrying in" in err
    assert "still running" not in err
    code, out, err = _cli(clock, capsys, "tasks", "resume", "--out", str(tmp_path))
    assert code == 0 and len(out.splitlines()) == 1, err
    assert len(emu.requests_to("POST /v1/tasks")) == 1 and emu.tasks[task.task_id].status == "completed"


def test_cancel_during_a_synchronous_images_request_stops_the_node_within_a_second(nodes, monkeypatch) -> None:
    """Real time: the emulator holds the answer for 2 s, and Cancel is pressed 0.2 s into it. The node stops at
    once; the request already sent still finishes (and would be billed), and its picture is kept in a receipt."""
    import threading
    import time

    from tests.comfy_stubs import FakeInterrupt, call_node
    from zimage_api.emulator import DEMO_KEY

    def generate():
        return call_node(nodes.ZImageGenerate().generate(
            prompt=PROMPT, negative_prompt="", model="Z-Image-Base", api="v1/images", guidance_scale=7.5,
            width=256, height=256, seed=21, count=1, timeout=60, unique_id="7"))

    with Emulator(sync_latency=2.0, wavespeed_keys={DEMO_KEY}, qingbo_keys={DEMO_KEY}) as emulator:
        monkeypatch.setenv("WAVESPEED_API_KEY", DEMO_KEY)
        monkeypatch.setenv("WAVESPEED_BASE_URL", emulator.url)
        monkeypatch.setattr(nodes._Node.context, "clock", time.monotonic)
        monkeypatch.setattr(nodes._Node.context, "sleep", time.sleep)
        pressed: list[float] = []

        def press() -> None:
            pressed.append(time.monotonic())
            nodes._Node.context.hooks.flag = True

        timer = threading.Timer(0.2, press)
        timer.start()
        try:
            with pytest.raises(FakeInterrupt):
                generate()
        finally:
            timer.cancel()
        stopped = time.monotonic()
        assert pressed and stopped - pressed[0] < 1.0
        assert emulator.served_images == []  # the answer had not come yet
        end = time.monotonic() + 5.0
        while time.monotonic() < end and any(t.name[7:].isdigit() for t in threading.enumerate()
                                             if t.name.startswith("zimage-")):
            time.sleep(0.05)  # the worker still carrying the request is left to finish it
        assert len(emulator.served_images) == 1

        nodes._Node.context.hooks.flag = False
        image, _info = generate()
        assert len(emulator.requests_to("POST /v1/images/generations")) == 1  # served from the receipt
        assert image.shape[0] == 1 and "from local receipts" in nodes._Node.context.hooks.texts[-1][0]
