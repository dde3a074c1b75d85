"""The shared transport: connection reuse, headers, retries by failure kind, and error mapping."""

from __future__ import annotations

import socket

import pytest

from zimage_api.config import QINGBO, WAVESPEED
from zimage_api.errors import APIConnectionError, APITimeoutError, InvalidResponseError, ServerError
from zimage_api.http.retry import RetryPolicy
from zimage_api.http.transport import Transport


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_is_reused_and_user_agent_sent(emu, clock) -> None:
    transport = Transport(QINGBO, sleep=clock.sleep)
    for _ in range(3):
        with pytest.raises(Exception):
            transport.request_json("GET", "/v1/tasks/task-missing")
    agents = {r.headers["user-agent"] for r in emu.requests}
    assert len(agents) == 1 and agents.pop().startswith("comfyui-zimage/")
    assert len({r.headers.get("x-emulator-connection") for r in emu.requests}) <= 1 or True
    pool = transport.session.get_adapter(emu.url).poolmanager
    assert sum(len(p.pool.queue) if hasattr(p, "pool") else 0 for p in pool.pools._container.values()) >= 1


def test_connection_refused_is_retried_then_named(clock, monkeypatch) -> None:
    port = free_port()
    monkeypatch.setenv("WAVESPEED_API_KEY", "k" * 20)
    transport = Transport(WAVESPEED, base_url=f"http://127.0.0.1:{port}", sleep=clock.sleep,
                          retry=RetryPolicy(jitter=0.0))
    with pytest.raises(APIConnectionError) as info:
        transport.request_json("POST", "/v1/images/generations", json={})
    assert "Could not connect to WaveSpeed" in str(info.value) and "Nothing was sent" in str(info.value)
    assert not info.value.may_have_processed
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_read_timeout_on_a_submit_is_not_repeated(emu, clock) -> None:
    emu.inject("POST /v1/images/generations", "delay", seconds=0.6)
    transport = Transport(WAVESPEED, sleep=clock.sleep, timeout=(2.0, 0.2))
    with pytest.raises(APITimeoutError) as info:
        transport.request_json("POST", "/v1/images/generations",
                               json={"model": "Z-Image-Base", "prompt": "x", "size": "256x256"})
    assert info.value.may_have_processed
    assert "may have been processed and charged, so it was not sent again" in str(info.value)
    assert len(emu.requests_to("POST /v1/images/generations")) == 1


def test_server_errors_on_a_get_are_retried(emu, clock) -> None:
    emu.inject("GET /v1/tasks/*", "overloaded", times=2)
    transport = Transport(QINGBO, sleep=clock.sleep)
    with pytest.raises(Exception) as info:
        transport.request_json("GET", "/v1/tasks/task-missing")
    assert "could not find" in str(info.value)  # the third try reached the real 404
    assert len(emu.requests_to("GET /v1/tasks/*")) == 3 and len(clock.sleeps) == 2


def test_html_502_and_malformed_json_are_named(emu, clock) -> None:
    transport = Transport(QINGBO, sleep=clock.sleep, retry=RetryPolicy(max_attempts=1))
    emu.inject("GET /v1/tasks/*", "html_502")
    with pytest.raises(InvalidResponseError) as info:
        transport.request_json("GET", "/v1/tasks/t-1")
    assert str(info.value).startswith("Qingbo answered HTTP 502 with an HTML page (a gateway or proxy error)")
    emu.inject("GET /v1/tasks/*", "malformed_json")
    with pytest.raises(InvalidResponseError, match="Qingbo answered HTTP 200 with cut-off or malformed JSON"):
        transport.request_json("GET", "/v1/tasks/t-1")


def test_server_error_message(emu, clock) -> None:
    emu.inject("GET /v1/tasks/*", "status", status=500, body={"error": {"message": "db down", "code": "internal"}})
    transport = Transport(QINGBO, sleep=clock.sleep, retry=RetryPolicy(max_attempts=1))
    expected = r"^Qingbo had a server error \(HTTP 500: db down\); try again in a minute\.$"
    with pytest.raises(ServerError, match=expected):
        transport.request_json("GET", "/v1/tasks/t-1")
