"""z-image-turbo through Qingbo's task API: ``POST /v1/tasks``, then ``GET /v1/tasks/{id}`` until final.

Every submit carries an ``Idempotency-Key``, so a submit whose answer was lost is sent again safely: Qingbo returns
the same task and bills once. Every task id goes to the ledger the moment it is issued. Result URLs are short-lived,
so pictures are downloaded as soon as the task completes and kept beside the ledger.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..catalog import QINGBO_QUOTA_PER_PICTURE as PRICE_QUOTA
from ..config import QINGBO
from ..errors import (
    InvalidResponseError,
    NotFoundError,
    TaskFailedError,
)
from ..http.deadline import Deadline
from ..http.transport import RetryCallback
from ..images import check_picture
from ..logs import log_call, logger
from ..polling import (
    CancelCheck,
    PollSchedule,
    TaskSnapshot,
    TaskState,
)
from ..results import GenerationResult, quota_to_usd
from ..validation import (
    ASPECT_RATIOS,
    QINGBO_PROMPT_LIMIT,
    RESOLUTIONS,
    check_choice,
    check_prompt,
    check_seed,
    check_task_id,
)
from .task_client import TaskClient

__all__ = ["QingboClient", "QingboTask", "MODEL", "PRICE_QUOTA", "parse_progress", "parse_timestamp", "output_size"]

MODEL = "z-image-turbo"
PICTURES_PER_TASK = 1  # a z-image-turbo task makes one picture (its request has no count)
FAILURE_ADVICE = {
    "upstream_unavailable": "the upstream service is temporarily unavailable; this is retryable, run again",
    "upstream_bad_request": "the upstream model rejected the request (often the prompt); change it and run again",
    "upstream_rate_limited": "the upstream service is rate-limited; wait a minute and run again",
    "task_failed": "the task failed at Qingbo; run again, or change the prompt if it keeps failing",
}
_RATIOS = {"1:1": (1, 1), "4:3": (4, 3), "3:4": (3, 4), "16:9": (16, 9), "9:16": (9, 16), "3:2": (3, 2), "2:3": (2, 3)}


def parse_progress(value: Any) -> float | None:
    """Qingbo's ``progress`` (45, 45.0, "45", "45%" or "") as a fraction 0..1; None when absent or unreadable."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip().rstrip("%").strip()
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            return None
    if not isinstance(value, (int, float)) or value != value:  # NaN
        return None
    return min(max(float(value) / 100.0, 0.0), 1.0)


def parse_timestamp(value: Any) -> float | None:
    """A unix time in seconds from seconds or milliseconds (both appear in Qingbo's docs)."""
    number = _number(value)
    if number is None or number != number or number <= 0:
        return None
    return number / 1000.0 if number > 1e11 else number


def output_size(aspect_ratio: str, resolution: str) -> tuple[int, int]:
    """The nominal picture size of an aspect ratio at 1K (long side 1024) or 2K (long side 2048)."""
    a, b = _RATIOS[aspect_ratio]
    long_side = 2048 if resolution.upper() == "2K" else 1024
    if a >= b:
        return long_side, round(long_side * b / a)
    return round(long_side * a / b), long_side


DEFAULT_SCHEDULE = PollSchedule()


@dataclass(frozen=True)
class QingboTask:
    """A Qingbo task as last seen."""

    task_id: str
    state: TaskState
    progress: float | None = None
    created_at: float | None = None
    completed_at: float | None = None
    cost: float | None = None
    pre_consumed_cost: float | None = None
    billing_status: str | None = None
    urls: list[str] = field(default_factory=list)
    expires_at: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, answer: Any) -> "QingboTask":
        if not isinstance(answer, dict) or not answer.get("task_id"):
            raise InvalidResponseError("Qingbo answered without a task_id.", provider=QINGBO.name, status=200,
                                       body=answer)
        task_id = str(answer["task_id"])
        urls: list[str] = []
        expires: list[float] = []
        result = answer["result"] if isinstance(answer.get("result"), dict) else {}
        for image in result.get("images") or []:
            if not isinstance(image, dict):
                continue
            url = image.get("url")
            for item in url if isinstance(url, list) else [url]:
                if isinstance(item, str) and item:
                    urls.append(item)
            stamp = parse_timestamp(image.get("expires_at"))
            if stamp is not None:
                expires.append(stamp)
        error = answer["error"] if isinstance(answer.get("error"), dict) else {}
        return cls(
            task_id=task_id,
            state=TaskState.parse(answer.get("status"), task_id=task_id, provider=QINGBO.name),
            progress=parse_progress(answer.get("progress")),
            created_at=parse_timestamp(answer.get("created_at")),
            completed_at=parse_timestamp(answer.get("completed_at")),
            cost=_number(answer.get("cost")),
            pre_consumed_cost=_number(answer.get("pre_consumed_cost")),
            billing_status=answer.get("billing_status"),
            urls=urls,
            expires_at=min(expires) if expires else None,
            # Words for an artist only: a nested object in either field is left in ``raw``.
            error_code=error.get("code") if isinstance(error.get("code"), str) else None,
            error_message=error.get("message") if isinstance(error.get("message"), str) else None,
            raw=answer,
        )

    def snapshot(self) -> TaskSnapshot["QingboTask"]:
        return TaskSnapshot(self.state, self.progress, self)


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else number


class QingboClient(TaskClient):
    """Client of Qingbo's task API for z-image-turbo.

    Task ids go to the ledger as soon as they are issued; see :class:`~zimage_api.providers.task_client.TaskClient` for
    ``transport``, ``ledger`` and the transport options.
    """

    protocol = "qingbo"
    provider = QINGBO

    # -- single calls ---------------------------------------------------------------------------------------------

    def submit(
        self,
        prompt: str,
        *,
        aspect_ratio: str = "1:1",
        resolution: str = "1K",
        prompt_extend: bool = False,
        seed: int | None = None,
        callback_url: str | None = None,
        callback_events: Sequence[str] | None = None,
        idempotency_key: str | None = None,
        prefer_wait: int | None = None,
        deadline: Deadline | None = None,
        on_retry: RetryCallback | None = None,
        cancel_check: CancelCheck | None = None,
    ) -> QingboTask:
        """Create a task and record its id. Only documented parameters are sent; ``seed`` only when fixed.

        ``prefer_wait`` (1-60 s) asks Qingbo to answer with the final task if it finishes within that time.
        ``deadline``, ``on_retry`` and ``cancel_check`` go to the transport (see :meth:`Transport.request`).
        """
        body = self.build_body(prompt, aspect_ratio=aspect_ratio, resolution=resolution,
                               prompt_extend=prompt_extend, seed=seed, callback_url=callback_url,
                               callback_events=callback_events)
        headers = {"Idempotency-Key": idempotency_key or f"zimage-{uuid.uuid4().hex}"}
        if prefer_wait:
            headers["Prefer"] = f"wait={max(1, min(int(prefer_wait), 60))}"
        started = time.monotonic()
        self._check_store()  # no record, no payment
        answer = self.transport.request_json("POST", "/v1/tasks", json=body, headers=headers,
                                             what="the task request", deadline=deadline, on_retry=on_retry,
                                             cancel_check=cancel_check)
        issued = answer.get("task_id") if isinstance(answer, dict) else None
        if issued:
            # Recorded before the answer is interpreted: a paid id must survive even an answer this code misreads.
            self._record_submitted(str(issued), model=MODEL, prompt=prompt, status=str(answer.get("status", "")),
                                   params={k: v for k, v in body.items() if k not in ("prompt", "callback_url")})
        task = QingboTask.parse(answer)
        log_call("qingbo.submit", model=MODEL, size=f"{aspect_ratio}@{body['resolution']}", prompt=prompt,
                 task_id=task.task_id, status=200, duration=time.monotonic() - started,
                 pre_consumed_quota=task.pre_consumed_cost)
        return task

    @staticmethod
    def build_body(prompt: str, *, aspect_ratio: str = "1:1", resolution: str = "1K", prompt_extend: bool = False,
                   seed: int | None = None, callback_url: str | None = None,
                   callback_events: Sequence[str] | None = None) -> dict[str, Any]:
        """The validated request body (raises :class:`ValidationError` before anything is sent)."""
        body: dict[str, Any] = {
            "model": MODEL,
            "action": "generate",
            "prompt": check_prompt(prompt, limit=QINGBO_PROMPT_LIMIT, provider="Qingbo"),
            "aspect_ratio": check_choice(aspect_ratio, "aspect_ratio", ASPECT_RATIOS),
            "resolution": check_choice(resolution, "resolution", RESOLUTIONS, case_insensitive=True),
        }
        if prompt_extend:
            body["prompt_extend"] = True
        fixed = check_seed(seed)
        if fixed is not None:
            body["seed"] = fixed
        if callback_url:
            body["callback_url"] = callback_url.strip()
        events = [e.strip() for e in (callback_events or []) if e and e.strip()]
        if events:
            body["callback_events"] = events
        return body

    def get(self, task_id: str, *, cancel_check: CancelCheck | None = None, deadline: Deadline | None = None,
            on_retry: RetryCallback | None = None) -> QingboTask:
        """The task's current state (a free GET, retried on transient failures until ``cancel_check`` or
        ``deadline``)."""
        tid = check_task_id(task_id, provider="Qingbo")
        try:
            answer = self.transport.request_json("GET", f"/v1/tasks/{tid}", what="the status request",
                                                 cancel_check=cancel_check, deadline=deadline, on_retry=on_retry)
        except NotFoundError as err:
            raise NotFoundError(
                f"Qingbo has no task {tid} (HTTP 404); check the id, and that it belongs to this API key.",
                provider=QINGBO.name, status=404, code=err.code, body=err.body) from err
        return QingboTask.parse(answer)

    def cancel(self, task_id: str, *, cancel_check: CancelCheck | None = None) -> bool:
        """Cancel a queued task; returns True when Qingbo cancelled and refunded it. Processing tasks can't be."""
        tid = check_task_id(task_id, provider="Qingbo")
        answer = self.transport.request_json("POST", f"/v1/tasks/{tid}/cancel", repeatable=True,
                                             what="the cancel request", cancel_check=cancel_check)
        refunded = isinstance(answer, dict) and str(answer.get("status", "")).lower() == "cancelled"
        if refunded:
            self._note(tid, "cancelled", refunded_quota=answer.get("refunded_quota"))
        return refunded

    def try_cancel(self, task: QingboTask | None, task_id: str) -> bool:
        """Best-effort remote cancel of a queued task (used on Cancel); never raises and never waits to retry.

        A task known to be processing is left alone (Qingbo cannot cancel it). When its state is unknown and the
        status request fails, the cancel is sent anyway: Qingbo refuses it harmlessly if the task is not queued.
        """
        def at_once() -> bool:
            return True  # one attempt each: the artist is waiting for Cancel to finish

        if task is None:
            try:
                task = self.get(task_id, cancel_check=at_once)
            except Exception as err:
                logger.info("state of %s unknown on cancel (%s); cancelling anyway", task_id, type(err).__name__)
        if task is not None and task.state is not TaskState.QUEUED:
            return False
        try:
            return self.cancel(task_id, cancel_check=at_once)
        except Exception as err:  # the local cancel must win even if the remote one fails
            logger.info("remote cancel of %s failed: %s", task_id, type(err).__name__)
            return False

    def _cancel_on_stop(self, last: TaskSnapshot[Any] | None, task_id: str) -> bool:
        """On Cancel, a task still queued is cancelled at Qingbo (and refunded)."""
        return self.try_cancel(last.task if last else None, task_id)

    def _error_of(self, task: Any) -> object:
        return {"code": task.error_code, "message": task.error_message}

    def _final_error(self, tid: str, task: Any) -> TaskFailedError:
        """Why a task that ended without a picture has none."""
        if task.state is TaskState.FAILED:
            code = task.error_code or "task_failed"
            advice = FAILURE_ADVICE.get(code, "run again, or change the prompt if it keeps failing")
            said = f": {task.error_message}" if task.error_message else ""
            return TaskFailedError(
                f"Qingbo task {tid} failed ({code}{said}); {advice}. Failed tasks are not billed.",
                task_id=tid, provider=QINGBO.name, code=code, retryable=code in ("upstream_unavailable",
                                                                                "upstream_rate_limited"))
        return TaskFailedError(
            f"Qingbo task {tid} was {task.state.value} (refunded), so it has no picture; submit a new task for one "
            "(in ComfyUI, change the seed of Qingbo Task Submit).", task_id=tid, provider=QINGBO.name,
            code=task.state.value)



    def _snapshot(self, task: QingboTask) -> TaskSnapshot[QingboTask]:
        """The task as the polling loop sees it, with its age by its ``created_at`` (seconds or milliseconds)."""
        age = self.transport.now() - task.created_at if task.created_at is not None else None
        return TaskSnapshot(task.state, task.progress, task, age=age)

    def _expired_message(self, task_id: str) -> str:
        return (f"Qingbo task {task_id} finished, but its picture is no longer hosted (the result URL expired) and "
                "no local copy was kept; submit a new task for a picture (in ComfyUI, queue Qingbo Task Submit "
                "again).")

    def _outputs(self, task: Any, deadline: Deadline | None = None) -> tuple[list[bytes], list[str]]:
        """The picture of a completed task, downloaded at once (within ``deadline``) and checked to be one, and its
        URL. A task makes one picture: more URLs are dropped with a warning, never downloaded."""
        if not task.urls:
            raise InvalidResponseError(f"Qingbo task {task.task_id} completed without a result URL.",
                                       provider=QINGBO.name, status=200, body=task.raw)
        urls = list(task.urls[:PICTURES_PER_TASK])
        if len(task.urls) > PICTURES_PER_TASK:
            logger.warning("Qingbo task %s lists %d result URLs for the %d asked; keeping the first %d",
                           task.task_id, len(task.urls), PICTURES_PER_TASK, PICTURES_PER_TASK)
        images = self.transport.download_all(urls, what=f"the picture of task {task.task_id}", deadline=deadline)
        for data in images:
            check_picture(data, source=f"Qingbo's result URL of task {task.task_id}")
        return images, urls

    def _completed(self, task_id: str, task: Any, started: float) -> dict[str, Any]:
        log_call("qingbo.collect", model=MODEL, task_id=task_id, status="completed",
                 duration=time.monotonic() - started, cost_quota=task.cost)
        took = (task.completed_at - task.created_at) if task.completed_at and task.created_at else None
        return {"cost_quota": task.cost, "expires_at": task.expires_at,
                "took": round(took, 3) if took is not None and 0 < took < 3600 else None}

    # -- internals ------------------------------------------------------------------------------------------------

    def _result(self, task_id: str, entry: dict[str, Any], task: Any | None, images: list[bytes], urls: list[str],
                paths: list[str], elapsed: float, *, seed: int | None = None, size: tuple[int, int] | None = None,
                notes: list[str] | None = None) -> GenerationResult:
        """Qingbo's result: its size, seed and cost come from the task's record (and answer) in the ledger."""
        tid = task_id
        cost = task.cost if task is not None else entry.get("cost_quota")
        params = entry.get("params") or {}
        ratio, resolution = params.get("aspect_ratio"), params.get("resolution")
        size = output_size(ratio, resolution) if ratio in _RATIOS and resolution else None
        quota = _number(cost)
        return GenerationResult(
            provider=QINGBO.name, protocol=self.protocol, model=MODEL, images=images,
            prompt_sha256=str(entry.get("prompt_sha256", "")), urls=urls, task_ids=[tid],
            seeds=[params.get("seed")] * len(images), size=size, cost_quota=quota, cost_usd=quota_to_usd(quota),
            elapsed=elapsed, paths=paths, notes=list(notes or []))

