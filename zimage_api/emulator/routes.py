"""The route table and request dispatch: faults first, then authentication, then the provider's handler."""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import openai_images, qingbo_tasks, wavespeed_account, wavespeed_v3
from .faults import Fault, corrupt_base64, immediate_answer
from .files import FILE_ROUTE, serve_file
from .picture_faults import html_page_answer, rewrite_pictures
from .wire import RecordedRequest, Response, RouteError, error_response, error_shape_for

if TYPE_CHECKING:
    from .server import Emulator

__all__ = ["respond", "ROUTES"]

logger = logging.getLogger("zimage_api.emulator")

Handler = Callable[..., Response]
ROUTES: list[tuple[frozenset[str], re.Pattern[str], str | None, Handler]] = [
    (frozenset({"POST"}), re.compile(r"/v1/images/generations"), "wavespeed", openai_images.generations),
    (frozenset({"POST"}), re.compile(r"/v1/images/edits"), "wavespeed", openai_images.edits),
    (frozenset({"POST"}), re.compile(r"/api/v3/(wavespeed-ai/z-image(?:-turbo)?/[a-z-]+)"), "wavespeed",
     wavespeed_v3.submit),
    (frozenset({"GET"}), re.compile(r"/api/v3/predictions/([^/]+)/result"), "wavespeed", wavespeed_v3.result),
    (frozenset({"POST"}), re.compile(r"/api/v3/media/upload/binary"), "wavespeed", wavespeed_v3.upload),
    (frozenset({"POST"}), re.compile(r"/api/v3/predictions"), "wavespeed", wavespeed_account.history),
    (frozenset({"GET"}), re.compile(r"/api/v3/balance"), "wavespeed", wavespeed_account.balance),
    (frozenset({"GET"}), re.compile(r"/api/v3/account/balance"), "wavespeed", wavespeed_account.account_balance),
    (frozenset({"POST"}), re.compile(r"/api/v3/model/pricing"), "wavespeed", wavespeed_account.pricing),
    (frozenset({"POST"}), re.compile(r"/v1/tasks"), "qingbo", qingbo_tasks.submit),
    (frozenset({"GET"}), re.compile(r"/v1/tasks/([^/]+)"), "qingbo", qingbo_tasks.fetch),
    (frozenset({"POST"}), re.compile(r"/v1/tasks/([^/]+)/cancel"), "qingbo", qingbo_tasks.cancel),
    (frozenset({"GET", "HEAD"}), re.compile(FILE_ROUTE), None, serve_file),
]
"""(methods, path pattern, provider whose keys are checked or None, handler(emu, request, fault, *groups))."""


def respond(emu: Emulator, request: RecordedRequest, fault: Fault | None) -> Response:
    """Answer one request: an injected fault's answer, or the route's (authenticated) answer."""
    shape = error_shape_for(request.path)
    if fault is not None:
        answer = html_page_answer(fault) or immediate_answer(fault, shape, emu._now(), emu._sleep)
        if answer is not None:
            return answer
    allowed: set[str] = set()
    for methods, pattern, provider, handler in ROUTES:
        match = pattern.fullmatch(request.path)
        if match is None:
            continue
        if request.method not in methods:
            allowed |= methods
            continue
        if provider is not None and not _authorized(emu, provider, request.headers):
            missing = "authorization" not in request.headers
            message = ("Missing API key: send 'Authorization: Bearer <key>'." if missing
                       else "Invalid API key: check the key sent in 'Authorization: Bearer <key>'.")
            return error_response(shape, 401, message, "invalid_api_key")
        try:
            response = handler(emu, request, fault, *match.groups())
        except RouteError as err:
            return error_response(shape, err.status, err.message, err.code, param=err.param, headers=err.headers)
        except Exception:
            logger.exception("the emulator failed on %s %s", request.method, request.path)
            return error_response(shape, 500, "The emulator failed on this request.", "internal_error")
        if fault is not None and fault.kind == "invalid_base64":
            response = corrupt_base64(response)
        if fault is not None:
            response = rewrite_pictures(emu, response, fault)
        return response
    if allowed:
        return error_response(shape, 405, f"{request.method} is not allowed on {request.path}.",
                              "method_not_allowed", headers={"Allow": ", ".join(sorted(allowed))})
    return error_response(shape, 404, f"No route {request.method} {request.path}.", "not_found")


def _authorized(emu: Emulator, provider: str, headers: dict[str, str]) -> bool:
    scheme, _, key = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return False
    keys = emu._wavespeed_keys if provider == "wavespeed" else emu._qingbo_keys
    given = key.strip().encode("utf-8", "replace")
    return any(hmac.compare_digest(given, k.encode("utf-8", "replace")) for k in keys)
