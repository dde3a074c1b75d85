"""WaveSpeed's native v3 routes: submit a Z-Image prediction, poll its result, and upload a reference file.

Answers use the envelope ``{"code": 200, "message": "success", "data": {...}}``; errors are
``{"code": <status>, "message": ...}`` with the same HTTP status.
"""

from __future__ import annotations

import base64
import io
import re
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from PIL import Image, UnidentifiedImageError

from ..catalog import CONTROL_MODES, LORA_MAX, LORA_SCALE_MAX, SEED_MAX, V3_COMMON_FIELDS, V3_MODELS, V3Model
from ..errors import ValidationError
from ..validation import check_lora_path
from .faults import TASK_FAILURE_CODES, Fault
from .files import content_type_for
from .tasks import COMPLETED, FAILED, FINAL, QUEUED, EmulatedTask
from .wire import V3, RecordedRequest, Response, RouteError, is_number, json_response

if TYPE_CHECKING:
    from .server import Emulator

__all__ = ["submit", "result", "upload", "prediction_view"]

_SIZE = re.compile(r"(\d{1,5})\*(\d{1,5})")
_MIN_SIDE, _MAX_SIDE = 256, 1536
_DEFAULT_STRENGTH = 0.6
_EXT = re.compile(r"[A-Za-z0-9]{1,8}")


def _bad(message: str) -> RouteError:
    return RouteError(400, message, "invalid_parameter")


def _envelope(data: dict[str, Any]) -> Response:
    return json_response(200, {"code": 200, "message": "success", "data": data})


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_size(value: Any) -> tuple[int, int]:
    if not isinstance(value, str):
        raise _bad(f"size must be a string 'WIDTH*HEIGHT' such as '1024*1024', got {value!r}.")
    match = _SIZE.fullmatch(value)
    if match is None:
        raise _bad(f"size must be 'WIDTH*HEIGHT' with an asterisk, such as '1024*1024'; got {value!r}.")
    width, height = int(match.group(1)), int(match.group(2))
    if not (_MIN_SIDE <= width <= _MAX_SIDE and _MIN_SIDE <= height <= _MAX_SIDE):
        raise _bad(f"size {value} is not supported: each side must be {_MIN_SIDE}..{_MAX_SIDE} pixels.")
    return width, height


def _check_bool(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise _bad(f"{name} must be true or false, got {value!r}.")
    return value


def _reference(emu: Emulator, url: Any, name: str = "image") -> bytes:
    if not isinstance(url, str) or not url:
        raise _bad(f"{name} must be the URL of a picture (upload it with /api/v3/media/upload/binary first).")
    stored = emu._file_from_url(url)
    if stored is None:
        raise _bad(f"{name} URL could not be downloaded: upload the picture with /api/v3/media/upload/binary and "
                   "pass its download_url.")
    if emu._now() >= stored.expires_at:
        raise _bad(f"{name} URL has expired: upload the picture again.")
    try:
        with Image.open(io.BytesIO(stored.data)) as opened:
            opened.verify()
    except (UnidentifiedImageError, OSError, ValueError):
        raise _bad(f"{name} URL does not point to a picture this service can read.") from None
    return stored.data


def _picture(emu: Emulator, body: dict[str, Any], name: str) -> bytes | None:
    return _reference(emu, body[name], name) if body.get(name) is not None else None


def _loras(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _bad("loras must be an array of {path, scale} objects.")
    if len(value) > LORA_MAX:
        raise _bad(f"loras has {len(value)} items; at most {LORA_MAX} are allowed.")
    for item in value:
        if not isinstance(item, dict) or set(item) - {"path", "scale"} or "path" not in item:
            raise _bad("each item of loras must be an object with path and scale.")
        try:
            check_lora_path(item["path"])
        except ValidationError:
            raise _bad(f"loras path {str(item['path'])[:60]!r} is neither a Hugging Face repo id nor an https "
                       "URL of a .safetensors file.") from None
        scale = item.get("scale", 1.0)
        if not is_number(scale) or not 0.0 <= scale <= LORA_SCALE_MAX:
            raise _bad(f"loras scale must be a number between 0 and {LORA_SCALE_MAX:g}, got {scale!r}.")
    return value


def _checked(spec: V3Model, body: dict[str, Any]) -> None:
    """Refuse what the model page does not list: unknown fields, missing required ones, wrong types and ranges."""
    short = spec.id.removeprefix("wavespeed-ai/")
    unknown = sorted(set(body) - spec.fields - V3_COMMON_FIELDS)
    if unknown:
        raise _bad(f"unsupported parameter for {short}: {unknown[0]}")
    missing = sorted(name for name in spec.required if body.get(name) in (None, ""))
    if missing:
        raise _bad(f"{missing[0]} is required for {short}.")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _bad("prompt is required and must be a non-empty string.")
    if body.get("negative_prompt") is not None and not isinstance(body["negative_prompt"], str):
        raise _bad("negative_prompt must be a string.")
    seed = body.get("seed", -1)
    if not isinstance(seed, int) or isinstance(seed, bool) or not -1 <= seed <= SEED_MAX:
        raise _bad(f"seed must be an integer 0..{SEED_MAX}, or -1 for a random seed; got {seed!r}.")
    strength = body.get("strength")
    if strength is not None and (not is_number(strength) or not 0.0 <= strength <= 1.0):
        raise _bad(f"strength must be a number between 0 and 1, got {strength!r}.")
    if "mode" in body and body["mode"] not in CONTROL_MODES:
        raise _bad(f"mode must be one of {', '.join(CONTROL_MODES)}, got {body['mode']!r}.")
    if "loras" in body:
        _loras(body["loras"])


def submit(emu: Emulator, request: RecordedRequest, fault: Fault | None, model_id: str) -> Response:
    """``POST /api/v3/wavespeed-ai/<model>``: create a prediction (or answer it done in sync mode).

    Each model takes only the fields its model page lists. ``strength`` is the denoise (higher moves further from
    ``image``); at ControlNet it is how strictly the control is followed. The inpaint model keeps ``image`` where
    ``mask_image`` is black.
    """
    spec = V3_MODELS.get(model_id)
    if spec is None:
        raise RouteError(404, f"No model {model_id}.", "not_found")
    if request.content_type != "application/json":
        raise RouteError(415, "Send this request as JSON with 'Content-Type: application/json'.",
                         "unsupported_media_type")
    body = request.json
    if not isinstance(body, dict):
        raise _bad("The body must be a JSON object.")
    _checked(spec, body)
    prompt = str(body["prompt"])
    width, height = _parse_size(body.get("size", "1024*1024"))
    seed = body.get("seed", -1)
    output_format = body.get("output_format", "jpeg")
    if output_format not in ("jpeg", "png"):
        raise _bad(f"output_format must be 'jpeg' or 'png', got {output_format!r}.")
    sync = _check_bool(body, "enable_sync_mode")
    base64_output = _check_bool(body, "enable_base64_output")
    image = _picture(emu, body, "image")
    mask = _picture(emu, body, "mask_image")
    if mask is not None and image is not None:
        sizes = [Image.open(io.BytesIO(data)).size for data in (image, mask)]
        if sizes[0] != sizes[1]:
            raise _bad(f"mask_image is {sizes[1][0]}x{sizes[1][1]}, but image is {sizes[0][0]}x{sizes[0][1]}: "
                       "the mask must have the picture's size.")
    controlnet = "mode" in spec.fields
    strength = float(body.get("strength", 1.0 if controlnet else _DEFAULT_STRENGTH))
    if controlnet:
        weight = 0.6 * strength  # the control map shows through as strongly as it is followed
    elif mask is not None:
        weight = 0.0  # outside the mask the picture is kept as it was, inside it is new
    else:
        weight = 1.0 - strength  # the denoise: 1 leaves nothing of the reference
    loras = body.get("loras") or []

    out_w, out_h = emu._scaled(width, height)
    short = spec.id.removeprefix("wavespeed-ai/")

    def factory(now: float) -> EmulatedTask:
        serial = emu._next_serial()
        picture_seed = emu._effective_seed(seed, serial, "v3")
        queue_s, process_s = emu._durations(f"wavespeed:{serial}:{seed}")
        card = {"model": short, "size": f"{width}*{height}", "seed": picture_seed,
                "strength": strength if image is not None and mask is None else None,
                "mode": body.get("mode"),
                "lora": ", ".join(f"{item['path']}x{item.get('scale', 1.0):g}" for item in loras) or None}
        task = EmulatedTask(
            id=uuid.uuid4().hex, provider="wavespeed", params=dict(body), created_at=now, model=spec.id,
            prompt=prompt, width=out_w, height=out_h, seed=picture_seed, output_format=output_format,
            file_ext=output_format, card=card, queue_seconds=0.0 if sync else queue_s,
            process_seconds=0.0 if sync else process_s, serial=serial,
            reference=_control_map(image, str(body.get("mode", "depth"))) if controlnet and image else image,
            strength=weight, base64_output=base64_output, inference_ms=round(process_s * 1000), mask=mask,
            scope=emu._key_scope(request),
        )
        _apply_task_fault(task, fault)
        return task

    if not sync:
        task, _ = emu._submit(factory)
        return _envelope(prediction_view(emu, task))
    with emu._sync_slot(V3):
        task, _ = emu._submit(factory, started=True)
        emu._sleep(emu.sync_latency)
        return _envelope(prediction_view(emu, task))


def _control_map(data: bytes, mode: str) -> bytes:
    """What the emulator's ControlNet follows: the control picture as a map of its mode (none: as it is)."""
    from PIL import ImageFilter, ImageOps

    with Image.open(io.BytesIO(data)) as opened:
        grey = ImageOps.grayscale(opened.convert("RGB"))
    if mode == "canny":
        grey = ImageOps.autocontrast(grey.filter(ImageFilter.FIND_EDGES))
    elif mode == "depth":
        grey = grey.filter(ImageFilter.GaussianBlur(radius=max(1.0, min(grey.size) / 64)))
    buffer = io.BytesIO()
    grey.convert("RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _apply_task_fault(task: EmulatedTask, fault: Fault | None) -> None:
    if fault is None:
        return
    if fault.kind == "stuck":
        task.stuck = True
    elif fault.kind == "task_failed":
        task.fail_code = fault.params.get("code", "task_failed")
        task.fail_message = fault.params.get("message") or TASK_FAILURE_CODES[task.fail_code]


def prediction_view(emu: Emulator, task: EmulatedTask) -> dict[str, Any]:
    """The ``data`` object describing a prediction now."""
    status = emu._task_phase(task)[0]
    outputs: list[str] = []
    if status == COMPLETED:
        pictures = emu._materialize(task)
        if task.base64_output:
            mime = content_type_for(task.file_ext)
            outputs = [f"data:{mime};base64,{base64.b64encode(p).decode('ascii')}" for p in pictures]
        else:
            outputs = [f"{emu.url}/files/{token}.{task.file_ext}" for token in task.file_tokens]
    return {
        "id": task.id,
        "model": task.model,
        "status": "created" if status == QUEUED else status,
        "urls": {"get": f"{emu.url}/api/v3/predictions/{task.id}/result"},
        "outputs": outputs,
        "has_nsfw_contents": [False] * len(outputs),
        "created_at": _iso(task.created_at),
        "error": (task.fail_message or "") if status == FAILED else "",
        "timings": {"inference": task.inference_ms if status in FINAL else 0},
    }


def result(emu: Emulator, request: RecordedRequest, fault: Fault | None, task_id: str) -> Response:
    """``GET /api/v3/predictions/{id}/result``."""
    task = emu._get_task(task_id, "wavespeed")
    if task is None:
        raise RouteError(404, f"Prediction {task_id} not found.", "not_found")
    view = prediction_view(emu, task)
    if fault is not None and fault.kind == "status_word":
        view["status"] = str(fault.params["word"])
    return _envelope(view)


def upload(emu: Emulator, request: RecordedRequest, fault: Fault | None) -> Response:
    """``POST /api/v3/media/upload/binary``: store the multipart field ``file`` and answer its download URL."""
    if request.content_type != "multipart/form-data":
        raise RouteError(415, "Send the file as multipart/form-data in the field 'file'.", "unsupported_media_type")
    part = request.files.get("file")
    if part is None:
        raise _bad("file is required: send the picture in the multipart field 'file'.")
    filename, data, part_type = part
    if not data:
        raise _bad("file is empty.")
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if not _EXT.fullmatch(ext):
        ext = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}.get(part_type, "bin")
    content_type = part_type if part_type and part_type != "application/octet-stream" else content_type_for(ext)
    token = emu._store_file(data, ext, content_type)
    return _envelope({
        "type": "image" if content_type.startswith("image/") else "file",
        "download_url": f"{emu.url}/files/{token}.{ext}",
        "filename": filename or f"upload.{ext}",
        "size": len(data),
    })
