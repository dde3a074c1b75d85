"""Z-Image through WaveSpeed's native v3 prediction API: submit, then poll ``/api/v3/predictions/{id}/result``.

Reference pictures for image-to-image are uploaded first with ``/api/v3/media/upload/binary``. Every prediction id
goes to the ledger the moment it is issued, so a paid result can always be collected later.
"""

from __future__ import annotations

import time
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..catalog import CONTROL_MODES, LORA_MAX, LORA_SCALE_MAX, V3_MODELS, V3Model
from ..catalog import V3_MODEL_PATHS as MODEL_PATHS
from ..catalog import V3_OUTPUT_FORMATS as OUTPUT_FORMATS
from ..config import WAVESPEED
from ..errors import (
    InvalidResponseError,
    NotFoundError,
    TaskFailedError,
    ValidationError,
)
from ..http.deadline import Deadline
from ..http.transport import RetryCallback
from ..images import check_picture, decode_base64
from ..logs import log_call, logger
from ..polling import (
    CancelCheck,
    PollSchedule,
    TaskSnapshot,
    TaskState,
)
from ..results import GenerationResult
from ..validation import (
    V3_SIZE,
    check_choice,
    check_lora_path,
    check_number,
    check_prompt,
    check_seed,
    check_size,
    check_task_id,
)
from .task_client import TaskClient
from .wavespeed_account import (
    HISTORY_PAGE_SIZE_MAX,
    HISTORY_STATUSES,
    ORPHAN_SKEW_SECONDS,
    HistoryItem,
    iso_utc,
    parse_balance,
    parse_history_page,
    parse_unit_price,
)

__all__ = ["WaveSpeedClient", "Prediction", "MODEL_PATHS", "v3_model", "HistoryItem", "ORPHAN_SKEW_SECONDS"]


def v3_model(model: str) -> V3Model:
    """The v3 model of a model name (Z-Image-Base, Z-Image-Turbo: text to image) or of a v3 model id."""
    if model in MODEL_PATHS:
        return V3_MODELS[MODEL_PATHS[model]]
    return V3_MODELS[check_choice(model, "model", [*MODEL_PATHS, *V3_MODELS])]


def _takes(spec: V3Model, name: str) -> None:
    if name not in spec.fields:
        raise ValidationError(f"{spec.id} takes no {name}.", field=name)


def _lora_items(loras: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if len(loras) > LORA_MAX:
        raise ValidationError(f"{len(loras)} LoRAs given; WaveSpeed takes at most {LORA_MAX}.", field="loras")
    return [{"path": check_lora_path(item.get("path")),
             "scale": check_number(item.get("scale", 1.0), "LoRA scale", 0.0, LORA_SCALE_MAX)} for item in loras]



DEFAULT_SCHEDULE = PollSchedule()
OUTPUTS_PER_PREDICTION = 1  # every Z-Image model at v3 makes one picture per prediction


@dataclass(frozen=True)
class Prediction:
    """One v3 prediction as last seen."""

    id: str
    state: TaskState
    outputs: list[str] = field(default_factory=list)
    error: str = ""
    inference_ms: float | None = None
    model: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, answer: Any) -> "Prediction":
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, dict) or not data.get("id"):
            raise InvalidResponseError("WaveSpeed answered without a prediction id.", provider=WAVESPEED.name,
                                       status=200, body=answer)
        pid = str(data["id"])
        outputs = data.get("outputs") or []
        timings = data["timings"] if isinstance(data.get("timings"), dict) else {}
        return cls(
            id=pid,
            state=TaskState.parse(data.get("status"), task_id=pid, provider=WAVESPEED.name),
            outputs=[str(o) for o in outputs if o] if isinstance(outputs, list) else [],
            error=str(data.get("error") or ""),
            inference_ms=timings.get("inference"),
            model=str(data.get("model") or ""),
            raw=data,
        )


class WaveSpeedClient(TaskClient):
    """Client of WaveSpeed's v3 API for the Z-Image models.

    Prediction ids go to the store as soon as they are issued; see
    :class:`~zimage_api.providers.task_client.TaskClient` for ``transport``, ``store`` and the transport options.
    """

    protocol = "v3"
    provider = WAVESPEED

    # -- single calls ---------------------------------------------------------------------------------------------

    def upload(self, data: bytes, filename: str = "reference.png", content_type: str = "image/png", *,
               deadline: Deadline | None = None, on_retry: RetryCallback | None = None,
               cancel_check: CancelCheck | None = None) -> str:
        """Upload a reference picture; returns the URL to pass as ``image``."""
        answer = self.transport.request_json(
            "POST", "/api/v3/media/upload/binary", files=lambda: {"file": (filename, data, content_type)},
            # An upload creates nothing billable, so repeating it after a dropped connection is harmless.
            repeatable=True, what="the reference upload", deadline=deadline, on_retry=on_retry,
            cancel_check=cancel_check)
        url = (answer.get("data") or {}).get("download_url") if isinstance(answer, dict) else None
        if not url:
            raise InvalidResponseError("WaveSpeed answered the upload without a download_url.",
                                       provider=WAVESPEED.name, status=200, body=answer)
        return str(url)

    def submit(
        self,
        prompt: str,
        *,
        model: str = "Z-Image-Base",
        negative_prompt: str = "",
        width: int = 1024,
        height: int = 1024,
        seed: int | None = None,
        image_url: str | None = None,
        strength: float | None = None,
        output_format: str = "png",
        sync: bool = False,
        base64_output: bool = False,
        loras: Sequence[Mapping[str, Any]] = (),
        mask_url: str | None = None,
        mode: str | None = None,
        deadline: Deadline | None = None,
        on_retry: RetryCallback | None = None,
        cancel_check: CancelCheck | None = None,
    ) -> Prediction:
        """Submit a prediction and record its id in the ledger. Never retried after the request may have arrived.

        ``model`` is a model name (Z-Image-Base, Z-Image-Turbo) or a v3 model id; the body holds exactly the
        fields that model takes. ``deadline``, ``on_retry`` and ``cancel_check`` go to the transport (see
        :meth:`Transport.request`).
        """
        body = self.build_body(prompt, model, negative_prompt, width, height, seed, image_url, strength, output_format,
                               sync, base64_output, loras=loras, mask_url=mask_url, mode=mode)
        started = time.monotonic()
        self._check_store()  # no record, no payment
        answer = self.transport.request_json("POST", f"/api/v3/{v3_model(model).id}", json=body,
                                             what="the prediction request", deadline=deadline, on_retry=on_retry,
                                             cancel_check=cancel_check)
        data = answer.get("data") if isinstance(answer, dict) else None
        if isinstance(data, dict) and data.get("id"):
            # Recorded before the answer is interpreted: a paid id must survive even an answer this code misreads.
            self._record_submitted(str(data["id"]), model=model, prompt=prompt, status=str(data.get("status", "")),
                                   params={k: v for k, v in body.items() if k != "prompt"})
        prediction = Prediction.parse(answer)
        log_call("v3.submit", model=model, size=body["size"], prompt=prompt, task_id=prediction.id, status=200,
                 duration=time.monotonic() - started)
        return prediction

    def get(self, prediction_id: str, *, cancel_check: CancelCheck | None = None, deadline: Deadline | None = None,
            on_retry: RetryCallback | None = None) -> Prediction:
        """The prediction's current state (a free GET, retried on transient failures until ``cancel_check`` or
        ``deadline``)."""
        pid = check_task_id(prediction_id, provider="WaveSpeed")
        try:
            answer = self.transport.request_json("GET", f"/api/v3/predictions/{pid}/result",
                                                 what="the status request", cancel_check=cancel_check,
                                                 deadline=deadline, on_retry=on_retry)
        except NotFoundError as err:
            raise NotFoundError(
                f"WaveSpeed has no prediction {pid} (HTTP 404); check the id, and that it belongs to this API key.",
                provider=WAVESPEED.name, status=404, code=err.code, body=err.body) from err
        return Prediction.parse(answer)

    def _snapshot(self, task: Prediction) -> TaskSnapshot[Prediction]:
        return TaskSnapshot(task.state, None, task)

    def _cancel_on_stop(self, last: TaskSnapshot[Any] | None, task_id: str) -> bool:
        return False  # WaveSpeed has no cancel endpoint for predictions: the run stops locally, it finishes

    def _error_of(self, task: Any) -> object:
        return task.error or None

    def _final_error(self, tid: str, task: Any) -> TaskFailedError:
        """Why a prediction that ended without a picture has none."""
        if task.state is TaskState.CANCELLED:
            return TaskFailedError(f"WaveSpeed prediction {tid} was cancelled at WaveSpeed; it has no pictures.",
                                  task_id=tid, provider=WAVESPEED.name, code="cancelled")
        reason = task.error or "no reason given"
        return TaskFailedError(f"WaveSpeed prediction {tid} {task.state.value}: {reason}.", task_id=tid,
                              provider=WAVESPEED.name, code=task.state.value)


    def fetch_outputs(self, prediction: Prediction, *, keep: int = OUTPUTS_PER_PREDICTION,
                      deadline: Deadline | None = None) -> tuple[list[bytes], list[str]]:
        """The pictures of a completed prediction (base64 decoded, URLs downloaded at once, within ``deadline``) and
        its URLs.

        At most ``keep`` outputs count (a prediction makes one picture): more are dropped with a warning, never
        downloaded. Each is checked to be a picture before it counts.

        Raises:
            ImageDecodeError: an output is not a picture (an HTML page at its URL, base64 of other bytes...).
            InvalidResponseError: the prediction completed without any output.
        """
        outputs = prediction.outputs
        if len(outputs) > keep:
            logger.warning("WaveSpeed prediction %s lists %d outputs for the %d asked; keeping the first %d",
                           prediction.id, len(outputs), keep, keep)
            outputs = outputs[:keep]
        images: list[bytes] = []
        urls: list[str] = [o for o in outputs if o.startswith(("http://", "https://"))]
        deadline = deadline or (Deadline.after(self.transport.timeout[1]) if urls else None)
        for output in outputs:
            if output.startswith(("http://", "https://")):
                data = self.transport.download(output, what=f"the picture of prediction {prediction.id}",
                                               deadline=deadline, urls=urls)
                check_picture(data, source=f"WaveSpeed's result URL of prediction {prediction.id}")
            else:
                data = decode_base64(output)
                check_picture(data, source=f"WaveSpeed's base64 output of prediction {prediction.id}")
            images.append(data)
        if not images:
            raise InvalidResponseError(f"WaveSpeed prediction {prediction.id} completed without any output.",
                                       provider=WAVESPEED.name, status=200, body=prediction.raw)
        return images, urls

    def _expired_message(self, task_id: str) -> str:
        return (f"WaveSpeed prediction {task_id} finished, but its picture is no longer hosted (the result URL "
                "expired) and no local copy was kept; run it again for a picture.")

    def _outputs(self, task: Any, deadline: Deadline | None = None) -> tuple[list[bytes], list[str]]:
        return self.fetch_outputs(task, deadline=deadline)

    def _model_name(self, prediction: Prediction | None, entry: dict[str, Any]) -> str:
        path = prediction.model if prediction is not None else ""
        return next((name for name, p in MODEL_PATHS.items() if p == path), str(entry.get("model") or path))

    def _completed(self, task_id: str, task: Any, started: float) -> dict[str, Any]:
        entry = (self.ledger.get(task_id) if self.ledger is not None else None) or {}
        log_call("v3.collect", model=self._model_name(task, entry), task_id=task_id, status="completed",
                 duration=time.monotonic() - started, inference_ms=task.inference_ms)
        took = task.inference_ms / 1000.0 if isinstance(task.inference_ms, (int, float)) else None
        return {"inference_ms": task.inference_ms,
                "took": round(took, 3) if took is not None and 0 < took < 3600 else None}

    def _result(self, task_id: str, entry: dict[str, Any], task: Any | None, images: list[bytes], urls: list[str],
                paths: list[str], elapsed: float, *, seed: int | None, size: tuple[int, int] | None,
                notes: list[str] | None = None) -> GenerationResult:
        return GenerationResult(
            provider=WAVESPEED.name, protocol=self.protocol, model=self._model_name(task, entry), images=images,
            prompt_sha256=str(entry.get("prompt_sha256", "")), urls=urls, task_ids=[task_id],
            seeds=[seed] * len(images), size=size, elapsed=elapsed, paths=paths, notes=list(notes or []))

    # -- account: history, balance, price -------------------------------------------------------------------------

    def history(
        self,
        *,
        model: str | None = None,
        status: str | None = None,
        created_after: datetime | float | None = None,
        created_before: datetime | float | None = None,
        page_size: int = HISTORY_PAGE_SIZE_MAX,
        max_pages: int = 5,
        deadline: Deadline | None = None,
        cancel_check: CancelCheck | None = None,
        on_retry: RetryCallback | None = None,
    ) -> list[HistoryItem]:
        """This key's predictions of the past 7 days, most recent first, read page by page until the last page or
        ``max_pages``.

        ``model`` is a model name (Z-Image-Base, Z-Image-Turbo) or any model id; ``status`` is completed, failed or
        processing; ``created_after``/``created_before`` are datetimes (naive meaning UTC) or unix seconds, sent as
        ISO 8601 UTC in whole seconds, widened outwards. Reading the history costs nothing, so its requests are
        retried like status requests. An item without an id or a readable time is skipped.
        """
        if not isinstance(page_size, int) or not 1 <= page_size <= HISTORY_PAGE_SIZE_MAX:
            raise ValidationError(f"page_size must be 1..{HISTORY_PAGE_SIZE_MAX}, got {page_size!r}.",
                                  field="page_size")
        if not isinstance(max_pages, int) or max_pages < 1:
            raise ValidationError(f"max_pages must be 1 or more, got {max_pages!r}.", field="max_pages")
        filters: dict[str, Any] = {}
        if model:
            filters["model"] = MODEL_PATHS.get(model, model)
        if status is not None:
            filters["status"] = check_choice(status, "status", HISTORY_STATUSES)
        if created_after is not None:
            filters["created_after"] = iso_utc(created_after)
        if created_before is not None:
            filters["created_before"] = iso_utc(created_before, round_up=True)
        items: list[HistoryItem] = []
        seen: set[str] = set()
        for page in range(1, max_pages + 1):
            answer = self.transport.request_json(
                "POST", "/api/v3/predictions", json={"page": page, "page_size": page_size, **filters},
                repeatable=True, what="the prediction history request", deadline=deadline, on_retry=on_retry,
                cancel_check=cancel_check)
            found, total, count = parse_history_page(answer)
            # A prediction made while paging pushes the others down a place: one may be listed twice.
            for item in found:
                if item.id not in seen:
                    seen.add(item.id)
                    items.append(item)
            if count < page_size or (total is not None and page * page_size >= total):
                break
        return items

    def find_orphans(
        self,
        model: str,
        since: float,
        until: float,
        known_ids: Container[str],
        *,
        deadline: Deadline | None = None,
        cancel_check: CancelCheck | None = None,
        on_retry: RetryCallback | None = None,
    ) -> list[HistoryItem]:
        """The predictions of ``model`` created between ``since`` and ``until`` (unix seconds of the wall clock, as
        ``time.time()``, each widened by :data:`ORPHAN_SKEW_SECONDS`) whose id is not in ``known_ids``, most recent
        first. ``model`` is a model name (Z-Image-Base, Z-Image-Turbo) or a v3 model id.

        After a submit whose answer never arrived, exactly one candidate is the paid prediction to collect; none
        means WaveSpeed never created it; more than one cannot be told apart from here.
        """
        if not since <= until:
            raise ValidationError(f"the search window starts ({since}) after it ends ({until}).", field="since")
        model_id = v3_model(model).id
        low, high = since - ORPHAN_SKEW_SECONDS, until + ORPHAN_SKEW_SECONDS
        listed = self.history(model=model_id, created_after=low, created_before=high, deadline=deadline,
                              cancel_check=cancel_check, on_retry=on_retry)
        # Filtered again here: a server that ignores a filter must not turn someone else's prediction into ours.
        # ``known_ids`` is asked by membership only (the store answers each id with an indexed lookup).
        return [item for item in listed
                if item.model == model_id and low <= item.created_at <= high and item.id not in known_ids]

    def balance(self, *, deadline: Deadline | None = None, cancel_check: CancelCheck | None = None,
                on_retry: RetryCallback | None = None) -> float:
        """The account balance in USD (``GET /api/v3/balance``; the older ``/api/v3/account/balance`` where the
        first is not found)."""
        call: dict[str, Any] = dict(what="the balance request", deadline=deadline, cancel_check=cancel_check,
                                    on_retry=on_retry)
        try:
            answer = self.transport.request_json("GET", "/api/v3/balance", **call)
        except NotFoundError:
            answer = self.transport.request_json("GET", "/api/v3/account/balance", **call)
        return parse_balance(answer)

    def price(self, model_id: str, inputs: Mapping[str, Any], *, deadline: Deadline | None = None,
              cancel_check: CancelCheck | None = None, on_retry: RetryCallback | None = None) -> float:
        """What one request of ``model_id`` (a v3 model id, or Z-Image-Base/Z-Image-Turbo) with the body ``inputs``
        costs, in USD. Nothing runs and nothing is charged."""
        answer = self.transport.request_json(
            "POST", "/api/v3/model/pricing", json={"model_id": MODEL_PATHS.get(model_id, model_id),
                                                   "inputs": dict(inputs)},
            repeatable=True, what="the price request", deadline=deadline, cancel_check=cancel_check,
            on_retry=on_retry)
        return parse_unit_price(answer)

    # -- internals ------------------------------------------------------------------------------------------------


    @staticmethod
    def build_body(prompt: str, model: str, negative_prompt: str, width: int, height: int, seed: int | None,
                   image_url: str | None, strength: float | None, output_format: str, sync: bool,
                   base64_output: bool, *, loras: Sequence[Mapping[str, Any]] = (), mask_url: str | None = None,
                   mode: str | None = None) -> dict[str, Any]:
        """The validated JSON body: the common fields and exactly the fields ``model`` takes (raises
        :class:`ValidationError` before anything is sent). A negative prompt is left out where the model takes
        none; an image, mask or LoRAs where it takes none are refused."""
        spec = v3_model(model)
        w, h = check_size(width, height, V3_SIZE)
        body: dict[str, Any] = {"prompt": check_prompt(prompt), "size": f"{w}*{h}"}
        if negative_prompt and negative_prompt.strip() and "negative_prompt" in spec.fields:
            body["negative_prompt"] = negative_prompt
        fixed = check_seed(seed)
        body["seed"] = -1 if fixed is None else fixed
        if image_url:
            _takes(spec, "image")
            body["image"] = image_url
            if "strength" in spec.fields:
                default = 1.0 if "mode" in spec.fields else 0.6
                body["strength"] = check_number(default if strength is None else strength, "strength", 0.0, 1.0)
        if mask_url:
            _takes(spec, "mask_image")
            body["mask_image"] = mask_url
        if "mode" in spec.fields:
            body["mode"] = check_choice(mode or "depth", "mode", CONTROL_MODES)
        if loras:
            _takes(spec, "loras")
            body["loras"] = _lora_items(loras)
        missing = sorted(spec.required - set(body))
        if missing:
            raise ValidationError(f"{spec.id} needs {' and '.join(missing)}.", field=missing[0])
        body["output_format"] = check_choice(output_format, "output_format", OUTPUT_FORMATS)
        body["enable_sync_mode"] = bool(sync)
        body["enable_base64_output"] = bool(base64_output)
        return body
