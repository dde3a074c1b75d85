"""Injected faults: what a flaky network, gateway or provider does to a request.

``Emulator.inject(pattern, kind, times=1, **params)`` queues a fault for the next ``times`` requests whose
``"METHOD /path"`` matches the fnmatch ``pattern``.  A request consumes the first queued fault that matches it.

Kinds answered instead of processing: ``status``, ``rate_limit``, ``quota``, ``overloaded``, ``malformed_json``,
``html_502``, ``expired``, ``reset_before``, ``html_page`` (a 200 HTML page, as a login portal serves at a result
URL), ``redirect`` (to ``location``, another host:port), ``endless`` (a body that never ends, at ``bytes_per_second``
or as fast as it is read) and ``huge_json`` (``megabytes`` of valid JSON, its length announced unless
``announce_length=False``).  Kinds that change the processing: ``delay`` (sleep first), ``reset_after`` (process,
then reset the connection), ``invalid_base64`` (corrupt base64 in the answer), ``truncated`` (send half the body),
``trickle`` (send the real answer at ``bytes_per_second``), ``task_failed`` and ``stuck`` (the created task fails or
never ends), ``status_word`` (a status answer reports ``word`` as the task's status, as a server with words of its
own would).

A streamed answer (``trickle``, ``endless``, ``huge_json``) stops after :data:`STREAM_SECONDS`, when the client goes
away, or when the emulator stops.

Faults in the pictures themselves (``extra_pictures``, ``not_a_picture``, and ``html_page`` as a login page) are in
``picture_faults``.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .picture_faults import PICTURE_FAULT_PARAMS, check_picture_fault
from .wire import OPENAI, QINGBO, V3, Response, error_response, json_response, replace_base64

__all__ = ["Fault", "FaultQueue", "FAULT_KINDS", "TASK_FAILURE_CODES", "immediate_answer", "corrupt_base64", "trickle",
           "STREAM_SECONDS"]

STREAM_SECONDS = 30.0  # the longest a streamed fault answer goes on, whatever the client does
_STREAM_CHUNK = 64 * 1024

TASK_FAILURE_CODES = {
    "upstream_bad_request": "The model provider rejected the request (the prompt may break its content policy).",
    "upstream_unavailable": "The model provider is unavailable right now; try again in a moment.",
    "upstream_rate_limited": "The model provider is rate limiting requests; try again later.",
    "task_failed": "The task failed while generating the picture.",
}

# kind -> (required params, optional params)
_PARAMS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    **PICTURE_FAULT_PARAMS,
    "status": (frozenset({"status"}), frozenset({"body", "headers"})),
    "rate_limit": (frozenset(), frozenset({"retry_after"})),
    "quota": (frozenset(), frozenset({"reset_in"})),
    "overloaded": (frozenset(), frozenset({"retry_after"})),
    "reset_before": (frozenset(), frozenset()),
    "reset_after": (frozenset(), frozenset()),
    "delay": (frozenset({"seconds"}), frozenset()),
    "malformed_json": (frozenset(), frozenset()),
    "html_502": (frozenset(), frozenset()),
    "invalid_base64": (frozenset(), frozenset()),
    "truncated": (frozenset(), frozenset()),
    "expired": (frozenset(), frozenset()),
    "task_failed": (frozenset(), frozenset({"code", "message"})),
    "stuck": (frozenset(), frozenset()),
    "status_word": (frozenset({"word"}), frozenset()),
    "trickle": (frozenset({"bytes_per_second"}), frozenset()),
    "endless": (frozenset(), frozenset({"bytes_per_second", "content_type"})),
    "huge_json": (frozenset(), frozenset({"megabytes", "announce_length"})),
    "html_page": (frozenset(), frozenset()),
    "redirect": (frozenset({"location"}), frozenset({"status"})),
}
FAULT_KINDS = frozenset(_PARAMS)

_CUT_JSON = {
    OPENAI: '{"created": 1700000000, "data": [{"b64_json": "iVBO',
    V3: '{"code": 200, "message": "success", "data": {"id": "',
    QINGBO: '{"task_id": "task-wave',
}
_HTML_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n"
    "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
_HTML_PAGE = (
    "<!doctype html>\n<html><head><title>Sign in</title></head><body><h1>Sign in to continue</h1>"
    "<form method=\"post\"><input name=\"user\"><input name=\"password\" type=\"password\"></form></body></html>\n"
)
_BROKEN_BASE64 = "@@not-base64@@"
_STATUS_CODES = {
    400: "invalid_request", 401: "invalid_api_key", 402: "insufficient_balance", 403: "forbidden",
    404: "not_found", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
    422: "unprocessable_entity", 429: "rate_limited", 500: "internal_error", 502: "bad_gateway",
    503: "overloaded", 504: "gateway_timeout",
}


@dataclass
class Fault:
    """One queued fault and how many more requests it applies to."""

    pattern: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    remaining: int = 1

    def matches(self, method: str, path: str) -> bool:
        """True when ``"METHOD /path"`` matches the fault's pattern."""
        return fnmatch.fnmatchcase(f"{method} {path}", self.pattern)


def _check(kind: str, times: int, params: dict[str, Any]) -> None:
    if kind not in _PARAMS:
        raise ValueError(f"unknown fault {kind!r}; known faults: {', '.join(sorted(FAULT_KINDS))}")
    if not isinstance(times, int) or isinstance(times, bool) or times < 1:
        raise ValueError(f"times must be a positive integer, got {times!r}")
    required, optional = _PARAMS[kind]
    missing = required - params.keys()
    unknown = params.keys() - required - optional
    if missing or unknown:
        raise TypeError(f"fault {kind!r} takes {sorted(required | optional)}; missing {sorted(missing)}, "
                        f"unexpected {sorted(unknown)}")
    check_picture_fault(kind, params)
    if kind == "status" and not (isinstance(params["status"], int) and 200 <= params["status"] <= 599):
        raise ValueError(f"status must be an int in 200..599, got {params['status']!r}")
    if kind == "delay" and not (isinstance(params["seconds"], (int, float)) and params["seconds"] >= 0):
        raise ValueError(f"delay seconds must be >= 0, got {params['seconds']!r}")
    for name in ("bytes_per_second", "megabytes"):
        if name in params and not (isinstance(params[name], (int, float)) and params[name] > 0):
            raise ValueError(f"{name} must be > 0, got {params[name]!r}")
    if kind == "redirect" and params.get("status", 302) not in (301, 302, 303, 307, 308):
        raise ValueError(f"redirect status must be 301, 302, 303, 307 or 308, got {params['status']!r}")
    if kind == "task_failed" and params.get("code", "task_failed") not in TASK_FAILURE_CODES:
        raise ValueError(f"task_failed code must be one of {sorted(TASK_FAILURE_CODES)}")


class FaultQueue:
    """Queued faults in injection order.  Not thread-safe: the emulator calls it under its lock."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, pattern: str, kind: str, times: int, params: dict[str, Any]) -> Fault:
        """Validate and queue a fault."""
        _check(kind, times, params)
        fault = Fault(pattern, kind, dict(params), times)
        self._faults.append(fault)
        return fault

    def take(self, method: str, path: str) -> Fault | None:
        """Consume one use of the first queued fault matching the request, if any."""
        for index, fault in enumerate(self._faults):
            if fault.matches(method, path):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._faults[index]
                return fault
        return None

    def clear(self) -> None:
        """Drop every queued fault."""
        self._faults.clear()

    def __len__(self) -> int:
        return len(self._faults)


def _number_text(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(value, 3)


def immediate_answer(fault: Fault, shape: str, now: float,
                     sleep: Callable[[float], None] | None = None) -> Response | None:
    """The answer a fault gives instead of processing the request, or ``None`` if the request is processed.

    ``sleep`` paces a streamed answer (the emulator's own, which ``stop()`` cuts short).
    """
    kind, params = fault.kind, fault.params
    if kind == "redirect":
        return Response(int(params.get("status", 302)), b"", "text/plain; charset=utf-8",
                        {"Location": str(params["location"])})
    if kind == "html_page":
        return Response(200, _HTML_PAGE.encode(), "text/html; charset=utf-8")
    if kind == "endless":
        rate = params.get("bytes_per_second")
        junk = (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 256)[:_STREAM_CHUNK]
        stream = (_paced(_repeat(junk), float(rate), sleep) if rate is not None else _repeat(junk))
        return Response(200, b"", str(params.get("content_type", "image/png")), stream=stream)
    if kind == "huge_json":
        size = int(float(params.get("megabytes", 100)) * 1024 * 1024)
        announce = bool(params.get("announce_length", True))
        return Response(200, b"", "application/json", stream=_huge_json(size), length=size if announce else None)
    if kind == "status":
        return _status_answer(params, shape)
    if kind == "rate_limit":
        headers = {}
        if params.get("retry_after") is not None:
            headers["Retry-After"] = str(params["retry_after"])
        code = "rate_limit_exceeded" if shape == OPENAI else "rate_limited"
        return error_response(shape, 429, "Too many requests: slow down and retry later.", code, headers=headers)
    if kind == "quota":
        reset_at = _number_text(now + float(params.get("reset_in", 60.0)))
        payload = {
            "error": {
                "message": "The quota window is used up; wait until reset_at before sending more requests.",
                "code": "quota_window_exceeded",
                "reset_at": reset_at,
            },
            "reset_at": reset_at,
        }
        return json_response(429, payload)
    if kind == "overloaded":
        headers = {}
        if params.get("retry_after") is not None:
            headers["Retry-After"] = str(params["retry_after"])
        return error_response(shape, 503, "The service is overloaded; please retry shortly.", "overloaded",
                              headers=headers)
    if kind == "malformed_json":
        return Response(200, _CUT_JSON.get(shape, '{"data": [').encode(), "application/json")
    if kind == "html_502":
        return Response(502, _HTML_502.encode(), "text/html")
    if kind == "expired":
        return error_response(QINGBO if shape not in (OPENAI, V3) else shape, 404,
                              "This result URL has expired", "expired")
    return None


def trickle(response: Response, bytes_per_second: float, sleep: Callable[[float], None]) -> Response:
    """The same answer, sent at ``bytes_per_second`` (its full length announced)."""
    body = response.body
    response.stream = _paced(iter([body]), bytes_per_second, sleep)
    response.length = len(body)
    return response


def _paced(chunks: Iterator[bytes], bytes_per_second: float, sleep: Callable[[float], None] | None) -> Iterator[bytes]:
    """The bytes of ``chunks`` in pieces, about ten a second, at ``bytes_per_second``."""
    piece = max(1, int(bytes_per_second / 10))
    for chunk in chunks:
        for start in range(0, len(chunk), piece):
            part = chunk[start:start + piece]
            yield part
            if sleep is not None:
                sleep(len(part) / bytes_per_second)


def _repeat(chunk: bytes) -> Iterator[bytes]:
    while True:
        yield chunk


def _huge_json(size: int) -> Iterator[bytes]:
    """Exactly ``size`` bytes of valid JSON: ``{"data": [], "padding": "aaaa..."}``."""
    head, tail = b'{"data": [], "padding": "', b'"}'
    yield head
    left = size - len(head) - len(tail)
    pad = b"a" * _STREAM_CHUNK
    while left > 0:
        yield pad[:left]
        left -= len(pad)
    yield tail


def _status_answer(params: dict[str, Any], shape: str) -> Response:
    status: int = params["status"]
    headers = {str(k): str(v) for k, v in (params.get("headers") or {}).items()}
    body = params.get("body")
    if body is None:
        response = error_response(shape, status, f"The service answered HTTP {status}.",
                                  _STATUS_CODES.get(status, "error"))
    elif isinstance(body, (dict, list)):
        response = json_response(status, body)
    else:
        text = body if isinstance(body, bytes) else str(body).encode("utf-8")
        response = Response(status, text, "text/plain; charset=utf-8")
    for name, value in headers.items():
        if name.lower() == "content-type":
            response.content_type = value
        else:
            response.headers[name] = value
    return response


def corrupt_base64(response: Response) -> Response:
    """Replace every base64 picture in a JSON answer (``b64_json`` items, v3 data-URL outputs) with junk."""
    payload = response.payload
    if isinstance(payload, dict) and replace_base64(payload, _BROKEN_BASE64):
        response.body = json.dumps(payload).encode("utf-8")
    return response

