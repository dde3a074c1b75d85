"""Qingbo's task routes for ``z-image-turbo``: submit, poll and cancel.

Pricing follows the provider: 5313 quota per picture (500,000 quota = 1 USD, about $0.0106), plus 1000 when
``prompt_extend`` is on.  The quota is pre-consumed at submission, settled when the task completes and refunded
when it fails or is cancelled.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import TYPE_CHECKING, Any

from .faults import TASK_FAILURE_CODES, Fault
from .tasks import CANCELLED, COMPLETED, FAILED, FINAL, PROCESSING, QUEUED, EmulatedTask
from .wire import RecordedRequest, Response, RouteError, json_response

if TYPE_CHECKING:
    from .server import Emulator

__all__ = ["submit", "fetch", "cancel", "task_view", "QUOTA_PER_IMAGE", "PROMPT_EXTEND_QUOTA", "output_size"]

MODEL = "z-image-turbo"
QUOTA_PER_IMAGE = 5313
PROMPT_EXTEND_QUOTA = 1000
MAX_PROMPT_CHARS = 800
MAX_WAIT_SECONDS = 60.0
RATIOS = {"1:1": (1, 1), "4:3": (4, 3), "3:4": (3, 4), "16:9": (16, 9), "9:16": (9, 16), "3:2": (3, 2), "2:3": (2, 3)}
RESOLUTIONS = {"1K": 1024, "2K": 2048, "1k": 1024, "2k": 2048}
_FIELDS = ("model", "action", "prompt", "n", "seed", "aspect_ratio", "resolution", "prompt_extend", "callback_url",
           "callback_events")
_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def _bad(message: str, code: str = "invalid_parameter") -> RouteError:
    return RouteError(400, message, code)


def output_size(aspect_ratio: str, resolution: str) -> tuple[int, int]:
    """The picture size before scaling: the long side is 1024 (1K) or 2048 (2K), the other follows the ratio."""
    long_side = RESOLUTIONS[resolution]
    wide, tall = RATIOS[aspect_ratio]
    if wide >= tall:
        return long_side, round(long_side * tall / wide)
    return round(long_side * wide / tall), long_side


def _validate(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _bad("The body must be a JSON object.", "invalid_json")
    for name in body:
        if name not in _FIELDS:
            raise _bad(f"Unsupported parameter '{name}': {MODEL} accepts only {', '.join(_FIELDS)}.")
    if body.get("model") is None:
        raise _bad(f"model is required; use '{MODEL}'.")
    if body["model"] != MODEL:
        raise _bad(f"Unknown model {body['model']!r}; use '{MODEL}'.", "model_not_found")
    if body.get("action", "generate") != "generate":
        raise _bad(f"action {body.get('action')!r} is not supported by {MODEL}; only 'generate' is.")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _bad("prompt is required and must be a non-empty string.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise _bad(f"prompt is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}.")
    n = body.get("n", 1)
    if n != 1 or isinstance(n, bool) or not isinstance(n, int):
        raise _bad(f"n is fixed at 1 for {MODEL}; got {n!r}. Submit one task per picture.")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise _bad(f"seed must be an integer, got {seed!r}.")
    if body.get("aspect_ratio", "1:1") not in RATIOS:
        raise _bad(f"aspect_ratio must be one of {' '.join(RATIOS)}; got {body.get('aspect_ratio')!r}.")
    if body.get("resolution", "1K") not in RESOLUTIONS:
        raise _bad(f"resolution must be 1K or 2K; got {body.get('resolution')!r}.")
    if not isinstance(body.get("prompt_extend", False), bool):
        raise _bad("prompt_extend must be true or false.")
    if body.get("callback_url") is not None and not isinstance(body["callback_url"], str):
        raise _bad("callback_url must be a string.")
    events = body.get("callback_events")
    if events is not None and not (isinstance(events, list) and all(isinstance(e, str) for e in events)):
        raise _bad("callback_events must be a list of strings.")
    return body


def _prefer_wait(header: str | None) -> float | None:
    match = _WAIT.search(header or "")
    return min(float(match.group(1)), MAX_WAIT_SECONDS) if match else None


def submit(emu: Emulator, request: RecordedRequest, fault: Fault | None) -> Response:
    """``POST /v1/tasks``: create a task, honouring ``Idempotency-Key`` and ``Prefer: wait=N``."""
    if request.content_type != "application/json":
        raise RouteError(415, "Send this request as JSON with 'Content-Type: application/json'.",
                         "unsupported_media_type")
    body = _validate(request.json)
    ratio = body.get("aspect_ratio", "1:1")
    base_w, base_h = output_size(ratio, body.get("resolution", "1K"))
    width, height = emu._scaled(base_w, base_h)
    quota = QUOTA_PER_IMAGE + (PROMPT_EXTEND_QUOTA if body.get("prompt_extend") else 0)
    key = request.headers.get("idempotency-key", "").strip()
    scope = hashlib.sha256(emu._api_key(request).encode("utf-8", "replace")).hexdigest()
    idempotency = (scope, key) if key else None

    def factory(now: float) -> EmulatedTask:
        serial = emu._next_serial()
        seed = body.get("seed")
        picture_seed = emu._effective_seed(seed, serial, "qingbo")
        queue_s, process_s = emu._durations(f"qingbo:{serial}:{seed}")
        card = {"model": MODEL, "size": f"{base_w}x{base_h}", "ratio": ratio, "seed": picture_seed}
        task = EmulatedTask(
            id=f"task-wave{int(now)}{secrets.token_hex(5)}", provider="qingbo", params=dict(body), created_at=now,
            model=MODEL, prompt=body["prompt"], width=width, height=height, seed=picture_seed,
            output_format="jpeg", file_ext="jpg", card=card, queue_seconds=queue_s, process_seconds=process_s,
            serial=serial, quota=quota, inference_ms=round(process_s * 1000),
        )
        if fault is not None and fault.kind == "stuck":
            task.stuck = True
        elif fault is not None and fault.kind == "task_failed":
            task.fail_code = fault.params.get("code", "task_failed")
            task.fail_message = fault.params.get("message") or TASK_FAILURE_CODES[task.fail_code]
        return task

    task, created = emu._submit(factory, idempotency=idempotency)
    wait = _prefer_wait(request.headers.get("prefer"))
    if wait is not None:
        emu._sleep(emu.sync_latency)
        if emu._wait_final(task, wait):
            return json_response(200, {**task_view(emu, task), "pre_consumed_cost": task.quota})
    answer = {
        "task_id": task.id,
        "model": task.model,
        "action": "generate",
        "status": QUEUED,
        "created_at": _stamp(emu, task.created_at),
        "progress": None,
        "pre_consumed_cost": task.quota,
    }
    status, fraction = QUEUED, 0.0
    if not created or wait is not None:
        status, fraction = emu._task_phase(task)
        answer["status"] = status
    return json_response(200, _with_progress(answer, _progress(emu, status, fraction)))


def _stamp(emu: Emulator, moment: float) -> int:
    return int(moment * 1000) if emu.created_at_unit == "ms" else int(moment)


PROGRESS_STYLES = ("int", "float", "percent", "stepped", "zero", "empty", "absent")
ABSENT = object()  # the answer has no progress field at all


def _progress(emu: Emulator, status: str, fraction: float) -> Any:
    """Qingbo's ``progress`` in the emulator's style: servers report it in every one of these ways.

    ``int`` 0-100 and ``float`` (45.3) grow linearly; ``percent`` is ``"45%"`` (``""`` while queued); ``stepped``
    jumps 0, 50, 100; ``zero`` stays 0 until the end; ``empty`` is ``""`` until the end; ``absent`` leaves it out.
    """
    style = emu.progress_style
    if style == "absent":
        return ABSENT
    done = status == COMPLETED
    if style == "zero":
        return 100 if done else 0
    if style == "empty":
        return "100%" if done else ""
    if done:
        value: float | None = 100.0
    elif status == PROCESSING:
        value = fraction * 100
        if style == "stepped":
            value = 50.0 if fraction >= 0.5 else 0.0
    elif status == FAILED:
        value = 0.0
    else:
        value = None  # queued or cancelled: nothing done yet
    if style == "percent":
        return "" if value is None else f"{int(value)}%"
    if style == "float":
        return round(value or 0.0, 1)
    return int(value or 0)


def _with_progress(answer: dict[str, Any], progress: Any) -> dict[str, Any]:
    if progress is ABSENT:
        answer.pop("progress", None)
    else:
        answer["progress"] = progress
    return answer


def task_view(emu: Emulator, task: EmulatedTask) -> dict[str, Any]:
    """The task as ``GET /v1/tasks/{id}`` describes it now."""
    status, fraction = emu._task_phase(task)
    view: dict[str, Any] = {
        "task_id": task.id,
        "model": task.model,
        "action": "generate",
        "status": status,
        "progress": None,
        "created_at": _stamp(emu, task.created_at),
        "billing_status": {COMPLETED: "settled", FAILED: "refunded", CANCELLED: "refunded"}.get(status,
                                                                                              "pre_consumed"),
        "urls": {"get": f"{emu.url}/v1/tasks/{task.id}", "cancel": f"{emu.url}/v1/tasks/{task.id}/cancel"},
    }
    if status in FINAL:
        finished = task.cancelled_at if status == CANCELLED else task.ends_at
        view["completed_at"] = _stamp(emu, finished if finished is not None else task.created_at)
        view["cost"] = task.quota if status == COMPLETED else 0
    if status == COMPLETED:
        emu._materialize(task)
        expires_at = int(task.ends_at + emu.url_ttl)
        view["result"] = {"images": [{"url": [f"{emu.url}/files/{token}.{task.file_ext}"], "expires_at": expires_at}
                                     for token in task.file_tokens]}
    if status == FAILED:
        view["error"] = {"message": task.fail_message or "", "code": task.fail_code or "task_failed"}
    return _with_progress(view, _progress(emu, status, fraction))


def _find(emu: Emulator, task_id: str) -> EmulatedTask:
    task = emu._get_task(task_id, "qingbo")
    if task is None:
        raise RouteError(404, f"Task {task_id} was not found.", "task_not_found")
    return task


def fetch(emu: Emulator, request: RecordedRequest, fault: Fault | None, task_id: str) -> Response:
    """``GET /v1/tasks/{task_id}``."""
    view = task_view(emu, _find(emu, task_id))
    if fault is not None and fault.kind == "status_word":
        view["status"] = str(fault.params["word"])
    return json_response(200, view)


def cancel(emu: Emulator, request: RecordedRequest, fault: Fault | None, task_id: str) -> Response:
    """``POST /v1/tasks/{task_id}/cancel``: only a queued task can be cancelled; its quota is refunded."""
    task = _find(emu, task_id)
    cancelled, status = emu._cancel(task)
    if not cancelled:
        raise RouteError(409, f"Task {task_id} is {status}; only a queued task can be cancelled.",
                         "task_not_cancellable")
    return json_response(200, {"task_id": task.id, "status": CANCELLED, "refunded": True,
                               "refunded_quota": task.quota})
