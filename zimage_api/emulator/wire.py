"""Requests and answers as the emulator sees them: the request record, body parsing, and error shapes.

Each provider has its own error shape, chosen from the path:

* ``openai`` (``/v1/images/...``): ``{"error": {"message", "code", "param"?}}``
* ``v3`` (``/api/v3/...``): ``{"code": <status>, "message"}``
* ``qingbo`` (``/v1/tasks...``) and anything else: ``{"error": {"message", "code"}}``
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qsl

__all__ = [
    "RecordedRequest",
    "Response",
    "RouteError",
    "replace_base64",
    "error_shape_for",
    "error_response",
    "json_response",
    "parse_body",
    "is_number",
    "media_type",
]

OPENAI, V3, QINGBO, PLAIN = "openai", "v3", "qingbo", "plain"


@dataclass(frozen=True)
class RecordedRequest:
    """One request the emulator received.

    ``headers`` has lower-case keys (``r.headers["authorization"]``).  ``json`` is the parsed body of a JSON request
    (``None`` otherwise or when it does not parse); ``form`` and ``files`` are the parsed fields of a multipart or
    url-encoded body, ``files`` mapping a field to ``(filename, data, content_type)``.  ``status`` is the status of
    the answer, ``0`` while it has not been sent or when the connection was reset.  ``fault`` names the injected
    fault this request consumed, if any.  ``time`` is the emulator's clock at arrival.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str] = field(repr=False)
    body: bytes = field(repr=False)
    json: Any | None = field(repr=False)
    form: dict[str, str] = field(repr=False)
    files: dict[str, tuple[str, bytes, str]] = field(repr=False)
    status: int = 0
    fault: str | None = None
    time: float = 0.0

    @property
    def content_type(self) -> str:
        """The bare media type of the body, lower-case (``"application/json"``), or ``""``."""
        return media_type(self.headers.get("content-type", ""))


@dataclass
class Response:
    """An answer ready to be written: ``payload`` keeps the JSON object so that faults can rewrite it.

    A ``stream`` is written chunk by chunk instead of ``body`` (a slow or endless answer); ``length`` is then the
    Content-Length announced, or None for an answer that ends when the connection closes.
    """

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    payload: Any = None
    stream: Iterator[bytes] | None = field(default=None, repr=False)
    length: int | None = None


class RouteError(Exception):
    """Raised by a route to answer an error in the provider's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = dict(headers or {})


def error_shape_for(path: str) -> str:
    """The error shape of the provider that owns ``path``."""
    if path.startswith("/v1/images"):
        return OPENAI
    if path.startswith("/api/v3"):
        return V3
    if path.startswith("/v1/tasks"):
        return QINGBO
    return PLAIN


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer; the payload is kept for later rewriting."""
    body = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")
    return Response(status, body, "application/json", dict(headers or {}), payload)


def error_response(
    shape: str,
    status: int,
    message: str,
    code: str,
    *,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    """An error answer in ``shape``; ``extra`` adds keys inside the error object (ignored by the v3 shape)."""
    if shape == V3:
        return json_response(status, {"code": status, "message": message}, headers)
    error: dict[str, Any] = {"message": message, "code": code}
    if param is not None and shape == OPENAI:
        error["param"] = param
    error.update(extra or {})
    return json_response(status, {"error": error}, headers)


def media_type(content_type: str) -> str:
    """``"multipart/form-data; boundary=x"`` -> ``"multipart/form-data"``."""
    return content_type.split(";", 1)[0].strip().lower()


def is_number(value: Any) -> bool:
    """True for a finite JSON number (``bool`` is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_body(
    content_type: str, body: bytes
) -> tuple[Any | None, dict[str, str], dict[str, tuple[str, bytes, str]]]:
    """Parse a request body into ``(json, form, files)`` according to its content type; never raises."""
    kind = media_type(content_type)
    if kind == "application/json" or kind.endswith("+json"):
        try:
            return json.loads(body.decode("utf-8")), {}, {}
        except (UnicodeDecodeError, ValueError):
            return None, {}, {}
    if kind == "multipart/form-data":
        form, files = _parse_multipart(content_type, body)
        return None, form, files
    if kind == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            return None, {}, {}
        return None, dict(pairs), {}
    return None, {}, {}


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, tuple[str, bytes, str]]]:
    """Split a multipart/form-data body with the stdlib MIME parser; a malformed body gives empty fields."""
    form: dict[str, str] = {}
    files: dict[str, tuple[str, bytes, str]] = {}
    if "boundary=" not in content_type.lower():
        return form, files
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    try:
        message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    except Exception:  # the parser is lenient; anything it still rejects is a malformed body
        return form, files
    if not message.is_multipart():
        return form, files
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or not name:
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_param("filename", header="content-disposition")
        if isinstance(filename, str):
            files[name] = (filename, data, part.get_content_type() if part.get("content-type") else "")
        else:
            charset = part.get_content_charset() or "utf-8"
            try:
                form[name] = data.decode(charset, "replace")
            except LookupError:
                form[name] = data.decode("utf-8", "replace")
    return form, files


def replace_base64(payload: dict[str, Any], text: str) -> bool:
    """Put ``text`` in place of every base64 picture of a JSON answer (``b64_json`` items of ``/v1/images``, data-URL
    outputs of v3); whether there was any."""
    data = payload.get("data")
    changed = False
    if isinstance(data, list):
        for item in data:
            if isinstance(item, dict) and "b64_json" in item:
                item["b64_json"] = text
                changed = True
    elif isinstance(data, dict) and isinstance(data.get("outputs"), list):
        outputs = data["outputs"]
        for index, output in enumerate(outputs):
            if isinstance(output, str) and output.startswith("data:") and "," in output:
                outputs[index] = output.split(",", 1)[0] + "," + text
                changed = True
    return changed
