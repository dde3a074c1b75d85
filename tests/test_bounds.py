"""Every exchange is bounded: a timeout of T ends within T + 2 s whatever the server sends, no body is read past its
cap, a paid picture that cannot be fetched says so, and no answer makes the parsing raise anything but a
:class:`ZImageError`."""

from __future__ import annotations

import re
import threading
import time
import tracemalloc

import pytest

from tests.runs import run_task
from zimage_api.config import QINGBO
from zimage_api.emulator import Emulator
from zimage_api.errors import (
    APIConnectionError,
    APITimeoutError,
    BadRequestError,
    InvalidResponseError,
    RateLimitError,
    ResponseTooLargeError,
    ResultDownloadError,
    ResultDownloadTimeoutError,
    ServerError,
    ZImageError,
)
from zimage_api.http.deadline import Deadline
from zimage_api.http.retry import RetryPolicy
from zimage_api.http.transport import MAX_ERROR_BODY_BYTES, MAX_JSON_BYTES, MAX_PICTURE_BYTES, Transport
from zimage_api.providers.openai_images import ImagesClient
from zimage_api.providers.qingbo_tasks import QingboClient

PROMPT = "Editorial-style product photo of a ceramic mug on a linen table, soft morning light."
GENERATIONS = "POST /v1/images/generations"
PAID_TAIL = ("; the request was paid, so its picture is kept as a URL to download again on the next run at no new "
             "charge.")


class FastClock:
    """A monotonic clock that runs ``factor`` times faster than real time: a 10 s timeout passes in 2.5 real seconds
    while the socket still trickles for real."""

    def __init__(self, factor: float = 4.0) -> None:
        self.factor = factor
        self.start = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return (time.monotonic() - self.start) * self.factor


def test_a_trickling_paid_answer_stops_at_the_deadline(emu, clock) -> None:
    fast = FastClock()
    emu.inject(GENERATIONS, "trickle", bytes_per_second=200)
    deadline = Deadline.after(10, fast)
    with pytest.raises(APITimeoutError) as info:
        ImagesClient(sleep=clock.sleep).generate(PROMPT, width=256, height=256, deadline=deadline)
    assert fast() - (deadline.at - 10) <= 10 + 2  # T + 2 on the deadline's own clock
    assert re.fullmatch(
        r"WaveSpeed was still sending its answer after 10 s \(\d+(\.\d)?( kB| bytes)? received\); the image "
        r"generation request may have been processed and charged, so it was not sent again\. Check your WaveSpeed "
        r"dashboard before re-running\.", str(info.value)), str(info.value)
    assert info.value.out_of_time and info.value.may_have_processed
    assert len(emu.requests_to(GENERATIONS)) == 1 and clock.sleeps == []  # a paid request is never sent twice


def test_an_endless_status_answer_stops_at_the_deadline(emu, clock) -> None:
    fast = FastClock()
    emu.inject("GET /v1/tasks/*", "endless", bytes_per_second=100, content_type="application/json")
    deadline = Deadline.after(10, fast)
    transport = Transport(QINGBO, sleep=clock.sleep)
    with pytest.raises(APITimeoutError) as info:
        transport.request_json("GET", "/v1/tasks/task-1", deadline=deadline)
    assert fast() - (deadline.at - 10) <= 10 + 2
    assert re.fullmatch(r"Qingbo was still sending its answer after 10 s \(\d+ bytes received\); try again in a "
                        r"minute, or give it a longer timeout\.", str(info.value)), str(info.value)
    assert len(emu.requests_to("GET /v1/tasks/*")) == 1


def test_without_a_deadline_the_read_timeout_bounds_the_whole_body(emu, clock) -> None:
    emu.inject("GET /v1/tasks/*", "endless", bytes_per_second=50)
    transport = Transport(QINGBO, sleep=clock.sleep, timeout=(2.0, 1.0))
    started = time.monotonic()
    with pytest.raises(APITimeoutError) as info:
        transport.request_json("GET", "/v1/tasks/task-1")
    assert time.monotonic() - started < 1 + 5  # a loose sanity bound: the socket itself is what is measured
    assert str(info.value).startswith("Qingbo was still sending its answer after 1 s (")
    assert not info.value.out_of_time and len(emu.requests_to("GET /v1/tasks/*")) == 1


def test_a_trickling_picture_stops_at_the_collect_deadline_and_keeps_the_urls(emu, clock) -> None:
    fast = FastClock()
    emu.inject("GET /files/*", "trickle", bytes_per_second=200)
    client = QingboClient(sleep=clock.sleep, now=clock)
    task = client.submit(PROMPT)
    deadline = Deadline.after(10, fast)
    with pytest.raises(ResultDownloadTimeoutError) as info:
        client.collect(task.task_id, sleep=clock.sleep, clock=clock, deadline=deadline)
    assert fast() - (deadline.at - 10) <= 10 + 2
    host = emu.url.removeprefix("http://")
    assert re.fullmatch(rf"{re.escape(host)} was still sending its answer after 10 s \(\d+(\.\d)?( kB| bytes)? "
                        rf"received\){re.escape(PAID_TAIL)}", str(info.value)), str(info.value)
    err = info.value
    assert isinstance(err, APITimeoutError) and err.paid and err.url.startswith(f"{emu.url}/files/")
    assert err.urls == [err.url] and len(emu.requests_to("GET /files/*")) == 1


def test_a_download_that_never_answers_is_bounded_by_the_read_timeout(emu, clock) -> None:
    emu.inject("GET /files/*", "delay", times=6, seconds=5)
    client = QingboClient(sleep=clock.sleep, now=clock, timeout=(2.0, 1.0))
    task_id = client.submit(PROMPT).task_id
    started = time.monotonic()
    with pytest.raises(ResultDownloadTimeoutError) as info:
        client.collect(task_id, sleep=clock.sleep, clock=clock)  # no deadline: the read timeout bounds it all
    assert time.monotonic() - started < 1 + 5  # was 6 tries of the whole read timeout each
    host = emu.url.removeprefix("http://")
    assert str(info.value) == (f"{host} did not send the picture of task {task_id} in time (read timeout)"
                               + PAID_TAIL)
    assert info.value.out_of_time
    assert 1 <= len(emu.requests_to("GET /files/*")) <= 2  # at most one last attempt at the deadline


def test_a_failed_paid_v1_download_names_the_result_host_and_never_says_nothing_was_sent(emu, clock,
                                                                                       monkeypatch) -> None:
    gone = Emulator(clock=clock).start()
    url = f"{gone.url}/files/{'ab' * 16}.png"
    gone.stop()  # the port is closed: connection refused
    monkeypatch.setenv("ZIMAGE_ALLOW_PRIVATE_URLS", "1")  # the result host is on this machine, as in a gateway
    emu.inject(GENERATIONS, "status", status=200, body={"created": 1, "data": [{"url": url}]})
    with pytest.raises(ResultDownloadError) as info:
        ImagesClient(sleep=clock.sleep).generate(PROMPT, width=256, height=256, response_format="url")
    host = gone.url.removeprefix("http://")
    assert str(info.value) == f"Could not download the result picture from {host} (connection refused)" + PAID_TAIL
    assert "Nothing was sent" not in str(info.value) and emu.url.removeprefix("http://") not in str(info.value)
    err = info.value
    assert isinstance(err, APIConnectionError) and err.paid and err.may_have_processed
    assert err.url == url and err.urls == [url]
    assert len(emu.requests_to(GENERATIONS)) == 1


def test_an_html_page_at_a_result_url_is_not_saved_as_the_picture(emu, clock) -> None:
    emu.inject("GET /files/*", "html_page")
    with pytest.raises(ResultDownloadError) as info:
        run_task(QingboClient(sleep=clock.sleep, now=clock), PROMPT, sleep=clock.sleep, clock=clock)
    task_id = next(iter(emu.tasks))
    host = emu.url.removeprefix("http://")
    assert str(info.value) == f"{host} sent an HTML page instead of the picture of task {task_id}" + PAID_TAIL
    assert len(emu.requests_to("GET /files/*")) == 1


def test_an_endless_picture_stops_at_the_cap_with_bounded_memory(emu, clock) -> None:
    emu.inject("GET /files/*", "endless")
    transport = Transport(QINGBO, sleep=clock.sleep)
    url = f"{emu.url}/files/{'cd' * 16}.png"
    tracemalloc.start()
    try:
        with pytest.raises(ResponseTooLargeError) as info:
            transport.download(url)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    host = emu.url.removeprefix("http://")
    assert str(info.value) == (f"{host} sent more than 64 MB for the result picture, far more than any picture, so "
                               "the download was stopped there.")
    assert info.value.limit == MAX_PICTURE_BYTES and info.value.url == url
    assert peak < MAX_PICTURE_BYTES + 8 * 1024 * 1024
    assert len(emu.requests_to("GET /files/*")) == 1


@pytest.mark.parametrize("announce", [True, False])
def test_a_huge_json_answer_is_stopped_at_the_cap(emu, clock, announce: bool) -> None:
    emu.inject("GET /v1/tasks/*", "huge_json", megabytes=80, announce_length=announce)
    transport = Transport(QINGBO, sleep=clock.sleep)
    with pytest.raises(ResponseTooLargeError) as info:
        transport.request_json("GET", "/v1/tasks/task-1")
    assert str(info.value) == ("Qingbo answered HTTP 200 with more than 64 MB for the request, far more than any "
                               "answer of the service, so it was stopped there; the service may be having trouble, "
                               "try again shortly.")
    assert info.value.limit == MAX_JSON_BYTES and isinstance(info.value, InvalidResponseError)
    assert len(emu.requests_to("GET /v1/tasks/*")) == 1


def test_a_huge_error_body_is_stopped_at_its_own_cap(emu, clock) -> None:
    emu.inject("GET /v1/tasks/*", "status", status=500, body="x" * (MAX_ERROR_BODY_BYTES + 1))
    transport = Transport(QINGBO, sleep=clock.sleep, retry=RetryPolicy(max_attempts=1))
    with pytest.raises(ResponseTooLargeError, match=r"^Qingbo answered HTTP 500 with more than 1 MB for the request"):
        transport.request_json("GET", "/v1/tasks/task-1")


JSON = {"Content-Type": "application/json"}
DEEP = "[" * 200_000 + "]" * 200_000


@pytest.mark.parametrize(("status", "body", "error", "message"), [
    (200, DEEP, InvalidResponseError,
     "Qingbo answered HTTP 200 with cut-off or malformed JSON instead of the expected JSON; the service may be having "
     "trouble, try again shortly."),
    (500, DEEP, InvalidResponseError,
     "Qingbo answered HTTP 500 with cut-off or malformed JSON; the service may be down or overloaded, try again "
     "shortly."),
    (200, "1" * 5000, InvalidResponseError,
     "Qingbo answered HTTP 200 with unexpected text instead of the expected JSON; the service may be having trouble, "
     "try again shortly."),
    (429, '{"error": {"message": "slow down", "reset_at": 1e20}}', RateLimitError,
     "Qingbo is rate-limiting this key (HTTP 429: slow down). The quota window resets at 23:59:59 UTC."),
    (429, '{"error": {"message": "slow down", "reset_at": 1e400}}', RateLimitError,
     "Qingbo is rate-limiting this key (HTTP 429: slow down)."),
    (429, '{"error": {"message": "slow down", "reset_at": Infinity}}', RateLimitError,
     "Qingbo is rate-limiting this key (HTTP 429: slow down)."),
    (429, '{"error": {"message": "slow down", "reset_at": NaN}}', RateLimitError,
     "Qingbo is rate-limiting this key (HTTP 429: slow down)."),
    (429, '{"error": {"message": "slow down", "reset_at": -5}, "reset_at": "soon"}', RateLimitError,
     "Qingbo is rate-limiting this key (HTTP 429: slow down)."),
    (400, '{"error": {"message": "bad size", "code": {"kind": "size"}, "param": ["size"]}}', BadRequestError,
     "Qingbo rejected the request (HTTP 400: bad size)."),
    (400, '{"error": {"message": {"text": "bad"}, "code": ["x"]}}', BadRequestError,
     "Qingbo rejected the request (HTTP 400)."),
    (500, '[1, 2, 3]', ServerError, "Qingbo had a server error (HTTP 500); try again in a minute."),
    (500, '"down"', ServerError, "Qingbo had a server error (HTTP 500); try again in a minute."),
    (500, '{"error": ["a", {"b": 1}], "message": {"c": 2}}', ServerError,
     "Qingbo had a server error (HTTP 500); try again in a minute."),
])
def test_no_answer_makes_the_parsing_raise_anything_but_a_zimage_error(emu, clock, status: int, body: str,
                                                                      error: type, message: str) -> None:
    emu.inject("GET /v1/tasks/*", "status", status=status, body=body, headers=JSON)
    transport = Transport(QINGBO, sleep=clock.sleep, now=clock, retry=RetryPolicy(max_attempts=1))
    with pytest.raises(ZImageError) as info:
        transport.request_json("GET", "/v1/tasks/task-1")
    assert type(info.value) is error and str(info.value) == message


def test_a_dict_error_code_in_a_failed_task_is_a_task_error(emu, clock) -> None:
    from zimage_api.errors import TaskFailedError

    emu.inject("GET /v1/tasks/*", "status", status=200,
               body={"task_id": "task-odd-1", "status": "failed", "error": {"code": {"a": 1}, "message": ["x"]}})
    with pytest.raises(TaskFailedError) as info:
        QingboClient(sleep=clock.sleep, now=clock).wait("task-odd-1", sleep=clock.sleep, clock=clock)
    assert str(info.value).startswith("Qingbo task task-odd-1 failed (task_failed);")


def test_emulator_streamed_faults_are_checked_and_end_when_the_client_leaves(clock) -> None:
    with Emulator(clock=clock) as emu:
        with pytest.raises(ValueError, match="bytes_per_second must be > 0"):
            emu.inject("GET /files/*", "trickle", bytes_per_second=0)
        with pytest.raises(TypeError, match="missing \\['location'\\]"):
            emu.inject("GET /files/*", "redirect")
        emu.inject("GET /v1/tasks/*", "endless")
        transport = Transport(QINGBO, api_key="k" * 20, base_url=emu.url + "/v1", sleep=clock.sleep)
        with pytest.raises(ResponseTooLargeError):
            transport.request_json("GET", "/v1/tasks/task-1")
        transport.close()
        ends = time.monotonic() + 5
        while emu._connections and time.monotonic() < ends:
            time.sleep(0.02)
        assert not emu._connections  # the server stopped writing once the client went away
