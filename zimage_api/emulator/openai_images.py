"""WaveSpeed's OpenAI-style routes: ``POST /v1/images/generations`` (JSON) and ``POST /v1/images/edits``
(multipart, reference picture in the field ``image``).  Both answer synchronously with PNG pictures."""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image, UnidentifiedImageError

from ..catalog import MODELS
from .faults import Fault
from .pictures import encode, render_card
from .wire import OPENAI, RecordedRequest, Response, RouteError, is_number, json_response

if TYPE_CHECKING:
    from .server import Emulator

__all__ = ["generations", "edits", "MODELS"]

_FIELDS = frozenset({"model", "prompt", "negative_prompt", "guidance_scale", "size", "n", "seed", "response_format"})
_EDIT_FIELDS = _FIELDS | {"strength", "image"}
_SIZE = re.compile(r"(\d{1,5})x(\d{1,5})")
_MIN_SIDE, _MAX_SIDE = 256, 2048
_DEFAULT_SIZE = (1024, 1024)
_DEFAULT_EDIT_STRENGTH = 0.5


@dataclass(frozen=True)
class _Options:
    model: str
    prompt: str
    guidance_scale: float | None
    size: tuple[int, int] | None
    n: int
    seed: int
    response_format: str


def _bad(message: str, param: str, code: str = "invalid_value") -> RouteError:
    return RouteError(400, message, code, param=param)


def _check_unknown(fields: set[str], allowed: frozenset[str]) -> None:
    unknown = sorted(fields - allowed)
    if unknown:
        raise _bad(f"Unrecognized request argument supplied: {unknown[0]}. Accepted: {', '.join(sorted(allowed))}.",
                   unknown[0], "unknown_parameter")


def _parse_size(value: Any) -> tuple[int, int]:
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise _bad(f"size must be 'WIDTHxHEIGHT' such as '1024x1024', got {value!r}.", "size")
    width, height = int(match.group(1)), int(match.group(2))
    if not (_MIN_SIDE <= width <= _MAX_SIDE and _MIN_SIDE <= height <= _MAX_SIDE) or width * height > _MAX_SIDE**2:
        raise _bad(f"size {width}x{height} is not supported: each side must be {_MIN_SIDE}..{_MAX_SIDE} pixels.",
                   "size")
    return width, height


def _typed(values: dict[str, Any], name: str, kind: type, *, from_form: bool) -> Any:
    """A field as ``kind`` (int or float); form fields arrive as text and are converted."""
    value = values.get(name)
    if value is None:
        return None
    if from_form and isinstance(value, str):
        try:
            return kind(value.strip())
        except ValueError:
            raise _bad(f"{name} must be a number, got {value!r}.", name) from None
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and is_number(value):
        return float(value)
    raise _bad(f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}.", name)


def _options(values: dict[str, Any], *, from_form: bool) -> _Options:
    model = values.get("model")
    if model is None:
        raise _bad("model is required: use 'Z-Image-Base' or 'Z-Image-Turbo'.", "model", "missing_required_parameter")
    if model not in MODELS:
        raise _bad(f"Unknown model {model!r}: use 'Z-Image-Base' or 'Z-Image-Turbo'.", "model", "model_not_found")
    prompt = values.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _bad("prompt is required and must be a non-empty string.", "prompt", "missing_required_parameter")
    negative = values.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        raise _bad("negative_prompt must be a string.", "negative_prompt")
    guidance = _typed(values, "guidance_scale", float, from_form=from_form)
    if guidance is not None and not 0.0 <= guidance <= 20.0:
        raise _bad(f"guidance_scale must be between 0 and 20, got {guidance}.", "guidance_scale")
    size = _parse_size(values["size"]) if values.get("size") is not None else None
    n = _typed(values, "n", int, from_form=from_form)
    n = 1 if n is None else n
    if not 1 <= n <= 8:
        raise _bad(f"n must be between 1 and 8, got {n}.", "n")
    seed = _typed(values, "seed", int, from_form=from_form)
    seed = -1 if seed is None else seed
    if seed < -1:
        raise _bad(f"seed must be a non-negative integer, or -1 for a random seed; got {seed}.", "seed")
    response_format = values.get("response_format", "b64_json")
    if response_format not in ("b64_json", "url"):
        raise _bad(f"response_format must be 'b64_json' or 'url', got {response_format!r}.", "response_format")
    return _Options(model, prompt, guidance, size, n, seed, response_format)


def generations(emu: Emulator, request: RecordedRequest, fault: Fault | None) -> Response:
    """``POST /v1/images/generations``: text to image."""
    if request.content_type != "application/json":
        raise RouteError(415, "Send this request as JSON with 'Content-Type: application/json'.",
                         "unsupported_media_type")
    if not isinstance(request.json, dict):
        raise RouteError(400, "The body must be a JSON object.", "invalid_json")
    _check_unknown(set(request.json), _FIELDS)
    options = _options(request.json, from_form=False)
    return _answer(emu, options, options.size or _DEFAULT_SIZE, None, None)


def edits(emu: Emulator, request: RecordedRequest, fault: Fault | None) -> Response:
    """``POST /v1/images/edits``: image to image; the reference picture comes in the multipart field ``image``."""
    if request.content_type != "multipart/form-data":
        raise RouteError(415, "Send this request as multipart/form-data with the picture in the field 'image'.",
                         "unsupported_media_type")
    if "reference_image" in request.files or "reference_image" in request.form:
        raise RouteError(422, "The reference picture must be sent in the multipart field 'image', "
                              "not 'reference_image'.", "invalid_field_name", param="image")
    _check_unknown(set(request.form) | set(request.files), _EDIT_FIELDS)
    upload = request.files.get("image")
    if upload is None:
        if "image" in request.form:
            raise _bad("image must be sent as a file part (with a filename), not as a text field.", "image")
        raise _bad("image is required: send the reference picture in the multipart field 'image'.", "image",
                   "missing_required_parameter")
    options = _options(dict(request.form), from_form=True)
    strength = _typed(request.form, "strength", float, from_form=True)
    strength = _DEFAULT_EDIT_STRENGTH if strength is None else strength
    if not 0.0 <= strength <= 1.0:
        raise _bad(f"strength must be between 0 and 1, got {strength}.", "strength")
    try:
        with Image.open(io.BytesIO(upload[1])) as opened:
            reference = opened.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError):
        raise _bad("image is not a picture this service can read (send PNG, JPEG or WebP).", "image",
                   "invalid_image") from None
    size = options.size or _clamped(reference.size)
    return _answer(emu, options, size, reference, strength)


def _clamped(size: tuple[int, int]) -> tuple[int, int]:
    """The reference's size brought within the supported range, keeping its shape where possible."""
    width, height = size
    scale = min(1.0, _MAX_SIDE / max(width, height))
    scale = max(scale, _MIN_SIDE / max(1, min(width, height)))
    return (min(_MAX_SIDE, max(_MIN_SIDE, round(width * scale))),
            min(_MAX_SIDE, max(_MIN_SIDE, round(height * scale))))


def _answer(
    emu: Emulator,
    options: _Options,
    size: tuple[int, int],
    reference: Image.Image | None,
    strength: float | None,
) -> Response:
    with emu._sync_slot(OPENAI):
        emu._sleep(emu.sync_latency)
        serial = emu._next_serial()
        created = int(emu._now())
        width, height = size
        data: list[dict[str, str]] = []
        for index in range(options.n):
            seed = options.seed + index if options.seed >= 0 else emu._effective_seed(None, serial * 16 + index,
                                                                                      "images")
            card = {"model": options.model, "size": f"{width}x{height}", "seed": seed, "cfg": options.guidance_scale,
                    "strength": strength}
            picture = render_card(options.prompt, width, height, seed=seed, params=card, reference=reference,
                                  strength=strength if strength is not None else 0.5)
            png = encode(picture, "png")
            if options.response_format == "url":
                token = emu._store_file(png, "png", served=True)
                data.append({"url": f"{emu.url}/files/{token}.png"})
            else:
                emu._note_served(png)
                data.append({"b64_json": base64.b64encode(png).decode("ascii")})
    return json_response(200, {"created": created, "data": data})
