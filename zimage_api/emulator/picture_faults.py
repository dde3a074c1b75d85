"""Injected faults in the pictures an answer carries, as a careless gateway or a broken provider serves them.

Kinds: ``extra_pictures`` (the answer lists ``count`` pictures, default 400, whatever was asked: an images answer
gets more ``data`` items, a completed v3 prediction more ``outputs``, a completed Qingbo task more result images;
the extras are tiny pictures, as URLs or base64 like the first one), ``not_a_picture`` (every base64 picture is
replaced by valid base64 of ``data``, bytes that are no picture) and ``html_page`` (the request is answered 200
with an HTML login page, as a proxy in front of a result URL does).
"""

from __future__ import annotations

import base64
import functools
import io
import json
from typing import TYPE_CHECKING, Any

from PIL import Image

from .wire import Response, replace_base64

if TYPE_CHECKING:
    from .faults import Fault
    from .server import Emulator

__all__ = ["PICTURE_FAULT_PARAMS", "check_picture_fault", "html_page_answer", "rewrite_pictures",
           "NOT_A_PICTURE", "HTML_LOGIN_PAGE"]

# kind -> (required params, optional params)
PICTURE_FAULT_PARAMS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "extra_pictures": (frozenset(), frozenset({"count"})),
    "not_a_picture": (frozenset(), frozenset({"data"})),
    "html_page": (frozenset(), frozenset()),
}

NOT_A_PICTURE = bytes(range(7, 71))
"""The default ``not_a_picture`` bytes: 64 bytes that no picture format starts with."""

HTML_LOGIN_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n<body><form action=\"/login\" method=\"post\">"
    b"<input name=\"user\"><input name=\"password\" type=\"password\"><button>Sign in</button></form></body></html>\n"
)
_DEFAULT_COUNT = 400


def check_picture_fault(kind: str, params: dict[str, Any]) -> None:
    """Refuse impossible parameters of a picture fault when it is injected (other kinds pass)."""
    if kind == "extra_pictures":
        count = params.get("count", _DEFAULT_COUNT)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"extra_pictures count must be a positive integer, got {count!r}")
    if kind == "not_a_picture" and not isinstance(params.get("data", b""), (bytes, str)):
        raise ValueError(f"not_a_picture data must be bytes or text, got {type(params['data']).__name__}")


def html_page_answer(fault: Fault) -> Response | None:
    """The HTML page a ``html_page`` fault answers with instead of processing the request; None for other kinds."""
    if fault.kind != "html_page":
        return None
    return Response(200, HTML_LOGIN_PAGE, "text/html; charset=utf-8")


def rewrite_pictures(emu: Emulator, response: Response, fault: Fault) -> Response:
    """Apply an ``extra_pictures`` or ``not_a_picture`` fault to a JSON answer; other answers pass unchanged."""
    payload = response.payload
    if response.status != 200 or not isinstance(payload, dict):
        return response
    if fault.kind == "extra_pictures":
        changed = _add_pictures(emu, payload, int(fault.params.get("count", _DEFAULT_COUNT)))
    elif fault.kind == "not_a_picture":
        data = fault.params.get("data", NOT_A_PICTURE)
        changed = _replace_base64(payload, data.encode("utf-8") if isinstance(data, str) else data)
    else:
        return response
    if changed:
        response.body = json.dumps(payload).encode("utf-8")
    return response


@functools.lru_cache(maxsize=1)
def _tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def _extra_url(emu: Emulator) -> str:
    return f"{emu.url}/files/{emu._store_file(_tiny_png(), 'png')}.png"


def _tiny_data_url() -> str:
    return "data:image/png;base64," + base64.b64encode(_tiny_png()).decode("ascii")


def _add_pictures(emu: Emulator, payload: dict[str, Any], count: int) -> bool:
    """Pad the answer's picture list to ``count`` with tiny pictures in the style of its first one."""
    data = payload.get("data")
    if isinstance(data, list) and data and isinstance(data[0], dict):  # an images answer
        first = data[0]
        for _ in range(count - len(data)):
            if "url" in first:
                data.append({"url": _extra_url(emu)})
            else:
                data.append({"b64_json": base64.b64encode(_tiny_png()).decode("ascii")})
        return True
    outputs = data.get("outputs") if isinstance(data, dict) else None
    if isinstance(outputs, list) and outputs:  # a completed v3 prediction
        base64_style = str(outputs[0]).startswith("data:")
        outputs.extend(_tiny_data_url() if base64_style else _extra_url(emu) for _ in range(count - len(outputs)))
        if isinstance(data, dict) and isinstance(data.get("has_nsfw_contents"), list):
            data["has_nsfw_contents"] = [False] * len(outputs)
        return True
    result = payload.get("result")
    images = result.get("images") if isinstance(result, dict) else None
    if isinstance(images, list) and images and isinstance(images[0], dict):  # a completed Qingbo task
        expires_at = images[0].get("expires_at")
        images.extend({"url": [_extra_url(emu)], "expires_at": expires_at} for _ in range(count - len(images)))
        return True
    return False


def _replace_base64(payload: dict[str, Any], blob: bytes) -> bool:
    """Every base64 picture (``b64_json`` items, v3 data-URL outputs) replaced by valid base64 of ``blob``."""
    return replace_base64(payload, base64.b64encode(blob).decode("ascii"))
