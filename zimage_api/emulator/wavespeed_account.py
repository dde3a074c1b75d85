"""WaveSpeed's v3 account routes: the prediction history, the balance (both documented shapes) and pricing.

* ``POST /api/v3/predictions`` with ``{"page", "page_size" (1..100), "model"?, "status"? (completed, failed or
  processing, which also lists predictions still ``created``), "created_after"?, "created_before"? (ISO 8601,
  both ends included)}``: the predictions the calling key made in the past 7 days, most recent first.
* ``GET /api/v3/balance`` (``data.balance``) and ``GET /api/v3/account/balance`` (``data: {balance, currency}``).
* ``POST /api/v3/model/pricing`` with ``{"model_id", "inputs"}``: the model's catalog price per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..catalog import V3_MODELS
from ..providers.wavespeed_account import HISTORY_PAGE_SIZE_MAX, HISTORY_STATUSES, parse_timestamp
from .faults import Fault
from .tasks import COMPLETED, FAILED, FINAL, PROCESSING, QUEUED, assign_slots, phase_of
from .wavespeed_v3 import prediction_view
from .wire import RecordedRequest, Response, RouteError, json_response

if TYPE_CHECKING:
    from .server import Emulator

__all__ = ["history", "balance", "account_balance", "pricing", "HISTORY_DAYS", "DEFAULT_PAGE_SIZE"]

HISTORY_DAYS = 7
DEFAULT_PAGE_SIZE = 20
_HISTORY_FIELDS = frozenset({"page", "page_size", "model", "status", "created_after", "created_before"})
_STATUS_PHASES = {"completed": {COMPLETED}, "failed": {FAILED}, "processing": {QUEUED, PROCESSING}}


def _bad(message: str) -> RouteError:
    return RouteError(400, message, "invalid_parameter")


def _envelope(data: dict[str, Any]) -> Response:
    return json_response(200, {"code": 200, "message": "success", "data": data})


def _json_object(request: RecordedRequest) -> dict[str, Any]:
    if not request.body.strip():
        return {}
    if request.content_type != "application/json":
        raise RouteError(415, "Send this request as JSON with 'Content-Type: application/json'.",
                         "unsupported_media_type")
    if not isinstance(request.json, dict):
        raise _bad("The body must be a JSON object.")
    return request.json


def _whole(body: dict[str, Any], name: str, default: int, low: int, high: int | None) -> int:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        limit = f"{low}..{high}" if high is not None else f"{low} or more"
        raise _bad(f"{name} must be an integer {limit}, got {value!r}.")
    return value


def _moment(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    moment = parse_timestamp(value) if isinstance(value, str) else None
    if moment is None:
        raise _bad(f"{name} must be an ISO 8601 time such as 2026-05-28T12:00:00Z, got {str(value)[:40]!r}.")
    return moment


def history(emu: Emulator, request: RecordedRequest, fault: Fault | None) -> Response:
    """``POST /api/v3/predictions``: one page of the calling key's predictions of the past 7 days."""
    body = _json_object(request)
    unknown = sorted(set(body) - _HISTORY_FIELDS)
    if unknown:
        raise _bad(f"unsupported parameter: {unknown[0]}")
    page = _whole(body, "page", 1, 1, None)
    page_size = _whole(body, "page_size", DEFAULT_PAGE_SIZE, 1, HISTORY_PAGE_SIZE_MAX)
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise _bad(f"model must be a model id such as wavespeed-ai/z-image/turbo, got {model!r}.")
    status = body.get("status")
    if status is not None and status not in HISTORY_STATUSES:
        raise _bad(f"status must be one of {', '.join(HISTORY_STATUSES)}, got {status!r}.")
    after, before = _moment(body, "created_after"), _moment(body, "created_before")
    scope = emu._key_scope(request)
    with emu._lock:
        now = emu._now()
        kept_from = now - HISTORY_DAYS * 86400.0
        assign_slots(emu._tasks.values(), now, emu.max_concurrent)
        matching = [
            task for task in emu._tasks.values()
            if task.provider == "wavespeed" and task.scope == scope and task.created_at >= kept_from
            and (model is None or task.model == model)
            and (status is None or phase_of(task, now)[0] in _STATUS_PHASES[status])
            and (after is None or task.created_at >= after) and (before is None or task.created_at <= before)
        ]
    matching.sort(key=lambda task: (task.created_at, task.serial), reverse=True)
    items = []
    for task in matching[(page - 1) * page_size: page * page_size]:
        view = prediction_view(emu, task)
        view["executionTime"] = task.inference_ms if view["status"] in FINAL else 0
        items.append(view)
    return _envelope({"page": page, "total": len(matching), "items": items})


def balance(emu: Emulator, request: RecordedRequest, fault: Fault | None) -> Response:
    """``GET /api/v3/balance``: ``data.balance`` in USD."""
    return _envelope({"balance": emu.balance})


def account_balance(emu: Emulator, request: RecordedRequest, fault: Fault | None) -> Response:
    """``GET /api/v3/account/balance``, the older shape: ``data: {balance, currency}``."""
    return _envelope({"balance": emu.balance, "currency": "USD"})


def pricing(emu: Emulator, request: RecordedRequest, fault: Fault | None) -> Response:
    """``POST /api/v3/model/pricing``: the catalog price of one request of ``model_id``; nothing runs."""
    body = _json_object(request)
    model_id = body.get("model_id")
    if not isinstance(model_id, str) or not model_id.strip():
        raise _bad("model_id is required, such as wavespeed-ai/z-image/turbo.")
    spec = V3_MODELS.get(model_id)
    if spec is None:
        raise _bad(f"Unknown model {model_id[:80]}.")
    if not isinstance(body.get("inputs"), dict):
        raise _bad("inputs is required: the request body the model would get, as a JSON object.")
    return _envelope({"model_id": spec.id, "unit_price": spec.price, "currency": "USD"})
