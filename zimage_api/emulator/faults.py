"""Injected faults: what a flaky network, gateway or provider does to a request.

``Emulator.inject(pattern, kind, times=1, **params)`` queues a fault for the next ``times`` requests whose
``"METHOD /path"`` matches the fnmatch ``pattern``.  A request consumes the first queued fault that matches it.

Kinds answered instead of processing: ``status``, ``rate_limit``, ``quota``, ``overloaded``, ``malformed_json``,
``html_502``, ``expired``, ``reset_before``.  Kinds that change the processing: ``delay`` (sleep first),
``reset_after`` (process, then reset the connection), ``invalid_base64`` (corrupt base64 in the answer),
``truncated`` (send half the body), ``task_failed`` and ``stuck`` (the created task fails or never ends),
``status_word`` (a status answer reports ``word`` as the task's status, as a server with words of its own would).

Faults in the pictures themselves (``extra_pictures``, ``not_a_picture``, ``html_page``) are in ``picture_faults``.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from typing import Any

from .picture_faults import PICTURE_FAULT_PARAMS, check_picture_fault
from .wire import OPENAI, QINGBO, V3, Response, error_response, json_response

__all__ = ["Fault", "FaultQueue", "FAULT_KINDS", "TASK_FAILURE_CODES", "immediate_answer", "corrupt_base64"]

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


def immediate_answer(fault: Fault, shape: str, now: float) -> Response | None:
    """The answer a fault gives instead of processing the request, or ``None`` if the request is processed."""
    kind, params = fault.kind, fault.params
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
    if not isinstance(payload, dict):
        return response
    data = payload.get("data")
    changed = False
    if isinstance(data, list):
        for item in data:
            if isinstance(item, dict) and "b64_json" in item:
                item["b64_json"] = _BROKEN_BASE64
                changed = True
    elif isinstance(data, dict) and isinstance(data.get("outputs"), list):
        outputs = data["outputs"]
        for index, output in enumerate(outputs):
            if isinstance(output, str) and output.startswith("data:") and "," in output:
                outputs[index] = output.split(",", 1)[0] + "," + _BROKEN_BASE64
                changed = True
    if changed:
        response.body = json.dumps(payload).encode("utf-8")
    return response

