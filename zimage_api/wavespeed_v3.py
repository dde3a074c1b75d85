"""Z-Image through WaveSpeed's native v3 prediction API: submit, then poll ``/api/v3/predictions/{id}/result``.

Reference pictures for image-to-image are uploaded first with ``/api/v3/media/upload/binary``. Every prediction id
goes to the ledger the moment it is issued, so a paid result can always be collected later.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .catalog import CONTROL_MODES, LORA_MAX, LORA_SCALE_MAX, V3_MODELS, V3Model
from .catalog import V3_MODEL_PATHS as MODEL_PATHS
from .catalog import V3_OUTPUT_FORMATS as OUTPUT_FORMATS
from .config import WAVESPEED
from .deadline import Deadline
from .errors import (
    InvalidResponseError,
    NotFoundError,
    TaskFailedError,
    ValidationError,
)
from .images import decode_base64
from .logs import log_call
from .polling import (
    DEFAULT_TIMEOUT,
    CancelCheck,
    PollSchedule,
    ProgressCallback,
    TaskSnapshot,
    TaskState,
    wait_for_task,
)
from .results import GenerationResult
from .task_client import TaskClient
from .transport import RetryCallback
from .validation import (
    V3_SIZE,
    check_choice,
    check_lora_path,
    check_number,
    check_prompt,
    check_seed,
    check_size,
    check_task_id,
)

__all__ = ["WaveSpeedClient", "Prediction", "MODEL_PATHS", "v3_model"]


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

    Prediction ids go to the ledger as soon as they are issued; see :class:`~zimage_api.task_client.TaskClient`
    for ``transport``, ``ledger`` and the transport options.
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

    def wait(
        self,
        prediction_id: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        cancel_check: CancelCheck | None = None,
        on_progress: ProgressCallback | None = None,
        schedule: PollSchedule = DEFAULT_SCHEDULE,
        first: Prediction | None = None,
        deadline: Deadline | None = None,
        on_retry: RetryCallback | None = None,
        resume_hint: str | None = None,
        expected: float | None = None,
        expected_spread: float = 0.0,
    ) -> Prediction:
        """Poll until the prediction is final; return it completed, or raise a task error.

        ``deadline`` (default: ``timeout`` from now, on ``clock``) is the one deadline of the wait, down to each
        status request's retries. ``resume_hint`` ends a timeout's message: how the caller collects it later.
        """
        pid = check_task_id(prediction_id, provider="WaveSpeed")
        deadline = deadline or Deadline.after(timeout, clock)

        def fetch() -> TaskSnapshot[Prediction]:
            p = self.get(pid, cancel_check=cancel_check, deadline=deadline, on_retry=on_retry)
            return TaskSnapshot(p.state, None, p)

        snapshot = wait_for_task(
            fetch, task_id=pid, provider=WAVESPEED.name, deadline=deadline, sleep=sleep,
            cancel_check=cancel_check, on_progress=on_progress, schedule=schedule, where=self.transport.base_url,
            expected=expected, expected_spread=expected_spread,
            # WaveSpeed has no cancel endpoint for predictions: the run stops locally, the prediction finishes.
            on_cancel=lambda _last: False,
            first=TaskSnapshot(first.state, None, first) if first is not None else None,
            resume_hint=resume_hint or f"collect it later with `python -m zimage_api poll --provider wavespeed {pid}`",
        )
        prediction = snapshot.task
        if prediction.state is TaskState.COMPLETED:
            return prediction
        self._note(pid, prediction.state.value, error=prediction.error or None)
        if prediction.state is TaskState.CANCELLED:
            raise TaskFailedError(f"WaveSpeed prediction {pid} was cancelled at WaveSpeed; it has no pictures.",
                                  task_id=pid, provider=WAVESPEED.name, code="cancelled")
        reason = prediction.error or "no reason given"
        raise TaskFailedError(f"WaveSpeed prediction {pid} {prediction.state.value}: {reason}.", task_id=pid,
                              provider=WAVESPEED.name, code=prediction.state.value)

    def fetch_outputs(self, prediction: Prediction,
                      deadline: Deadline | None = None) -> tuple[list[bytes], list[str]]:
        """The pictures of a completed prediction (base64 decoded, URLs downloaded at once, within ``deadline``) and
        its URLs."""
        images: list[bytes] = []
        urls: list[str] = [o for o in prediction.outputs if o.startswith(("http://", "https://"))]
        deadline = deadline or (Deadline.after(self.transport.timeout[1]) if urls else None)
        for output in prediction.outputs:
            if output.startswith(("http://", "https://")):
                images.append(self.transport.download(output, deadline=deadline, urls=urls))
            else:
                images.append(decode_base64(output))
        if not images:
            raise InvalidResponseError(f"WaveSpeed prediction {prediction.id} completed without any output.",
                                       provider=WAVESPEED.name, status=200, body=prediction.raw)
        return images, urls

    def _wait_for(self, task_id: str, **wait_options: Any) -> Any:
        return self.wait(task_id, **wait_options)

    # -- whole runs -----------------------------------------------------------------------------------------------

    def generate(self, prompt: str, *, timeout: float = DEFAULT_TIMEOUT, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, cancel_check: CancelCheck | None = None,
                 on_progress: ProgressCallback | None = None, **submit_options: Any) -> GenerationResult:
        """Submit, wait and download: text to image (or image to image with ``image_url``/``strength``)."""
        started = time.monotonic()
        prediction = self.submit(prompt, **submit_options)
        return self.collect(prediction.id, timeout=timeout, sleep=sleep, clock=clock, cancel_check=cancel_check,
                            on_progress=on_progress, first=prediction, started=started,
                            seed=submit_options.get("seed"),
                            size=(submit_options.get("width", 1024), submit_options.get("height", 1024)))

    def edit(self, image: tuple[bytes, str, str], prompt: str, *, strength: float = 0.6,
             **options: Any) -> GenerationResult:
        """Upload the reference ``(bytes, filename, content_type)``, then :meth:`generate` from it.

        ``strength`` is what v3 itself takes, the denoise: higher moves further from the reference. The nodes, the
        command line and :class:`~zimage_api.orders.Edit` take the seed guide's meaning instead (higher follows the
        reference more) and send ``1 - strength``.
        """
        check_prompt(prompt)
        check_number(strength, "strength", 0.0, 1.0)
        url = self.upload(*image)
        return self.generate(prompt, image_url=url, strength=strength, **options)

    def _expired_message(self, task_id: str) -> str:
        return (f"WaveSpeed prediction {task_id} finished, but its picture is no longer hosted (the result URL "
                "expired) and no local copy was kept; run it again for a picture.")

    def _outputs(self, task: Any, deadline: Deadline | None = None) -> tuple[list[bytes], list[str]]:
        return self.fetch_outputs(task, deadline)

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
