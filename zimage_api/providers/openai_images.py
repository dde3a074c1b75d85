"""Z-Image at WaveSpeed through the OpenAI-images style API: ``/v1/images/generations`` and ``/v1/images/edits``.

Both calls are synchronous: the answer carries the pictures (``b64_json``) or short-lived URLs, which are
downloaded at once. Each picture is checked to be one before it counts, and no more are kept (or downloaded) than
``n`` asked for. A submit is paid work, so it is retried only when the server certainly did nothing.
"""

from __future__ import annotations

import time
from typing import Any

from ..catalog import MODELS, RESPONSE_FORMATS
from ..config import WAVESPEED
from ..errors import InvalidResponseError
from ..http.deadline import Deadline
from ..http.transport import Transport
from ..images import check_picture, decode_base64
from ..logs import log_call, logger, prompt_hash
from ..results import GenerationResult
from ..validation import IMAGES_SIZE, check_choice, check_count, check_number, check_prompt, check_seed, check_size

__all__ = ["ImagesClient", "MODELS", "RESPONSE_FORMATS"]

Upload = tuple[bytes, str, str]  # (data, filename, content_type)


def _call(options: dict[str, Any]) -> dict[str, Any]:
    unknown = set(options) - {"deadline", "on_retry", "cancel_check"}
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    return options


class ImagesClient:
    """Client of the OpenAI-images style endpoints. Keyword arguments other than ``transport`` go to
    :class:`~zimage_api.http.transport.Transport` (``api_key``, ``base_url``, ``timeout``, ``retry``, ``sleep``...)."""

    protocol = "images"

    def __init__(self, *, transport: Transport | None = None, **transport_options: Any) -> None:
        self.transport = transport or Transport(WAVESPEED, **transport_options)

    def generate(
        self,
        prompt: str,
        *,
        negative_prompt: str = "",
        guidance_scale: float = 7.5,
        width: int = 1024,
        height: int = 1024,
        seed: int | None = None,
        n: int = 1,
        model: str = "Z-Image-Base",
        response_format: str = "b64_json",
        **call: Any,
    ) -> GenerationResult:
        """Text to image. Returns the pictures as encoded bytes (PNG or JPEG, as served).

        ``call`` holds ``deadline``, ``on_retry`` and ``cancel_check``, for the transport (see
        :meth:`Transport.request`).
        """
        body = self.build_body(prompt, negative_prompt, guidance_scale, width, height, seed, n, model, response_format)
        started = time.monotonic()
        answer = self.transport.request_json("POST", "/v1/images/generations", json=body,
                                             what="the image generation request", **_call(call))
        return self._result(answer, body, started, "generate", call.get("deadline"))

    def edit(
        self,
        image: Upload,
        prompt: str,
        *,
        strength: float = 0.5,
        negative_prompt: str = "",
        guidance_scale: float = 6.5,
        width: int | None = None,
        height: int | None = None,
        seed: int | None = None,
        n: int = 1,
        model: str = "Z-Image-Base",
        response_format: str = "b64_json",
        **call: Any,
    ) -> GenerationResult:
        """Image to image: ``image`` is ``(bytes, filename, content_type)``, sent as the multipart field ``image``.

        ``width``/``height`` default to the provider's choice (the reference's size). ``call``: as for
        :meth:`generate`.
        """
        strength = check_number(strength, "strength", 0.0, 1.0)
        if (width is None) != (height is None):
            raise ValueError("give both width and height, or neither")
        body = self.build_body(prompt, negative_prompt, guidance_scale, width, height, seed, n, model, response_format)
        body["strength"] = strength
        data = {key: str(value) for key, value in body.items()}
        data_bytes, filename, content_type = image

        def files() -> dict[str, tuple[str, bytes, str]]:
            # requests wants (filename, data, content_type); ``image`` is (data, filename, content_type).
            return {"image": (filename, data_bytes, content_type)}

        started = time.monotonic()
        answer = self.transport.request_json("POST", "/v1/images/edits", data=data, files=files,
                                             what="the image edit request", **_call(call))
        return self._result(answer, body, started, "edit", call.get("deadline"))

    # -- internals ------------------------------------------------------------------------------------------------

    @staticmethod
    def build_body(prompt: str, negative_prompt: str, guidance_scale: float, width: int | None, height: int | None,
                seed: int | None, n: int, model: str, response_format: str) -> dict[str, Any]:
        """The validated JSON body (raises :class:`ValidationError` before anything is sent)."""
        body: dict[str, Any] = {
            "model": check_choice(model, "model", MODELS),
            "prompt": check_prompt(prompt),
        }
        if negative_prompt and negative_prompt.strip():
            body["negative_prompt"] = negative_prompt
        body["guidance_scale"] = check_number(guidance_scale, "guidance_scale", 0.0, 20.0)
        if width is not None and height is not None:
            w, h = check_size(width, height, IMAGES_SIZE)
            body["size"] = f"{w}x{h}"
        body["n"] = check_count(n, field="n")
        fixed = check_seed(seed)
        if fixed is not None:
            body["seed"] = fixed
        body["response_format"] = check_choice(response_format, "response_format", RESPONSE_FORMATS)
        return body

    def _result(self, answer: Any, body: dict[str, Any], started: float, call: str,
                deadline: Deadline | None = None) -> GenerationResult:
        items = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(items, list) or not items:
            raise InvalidResponseError(
                "WaveSpeed answered without any picture (no 'data' list); nothing was decoded.",
                provider=WAVESPEED.name, status=200, body=answer)
        asked = body["n"]
        if len(items) > asked:
            # Never more than was asked for: the extras are neither decoded nor downloaded.
            logger.warning("WaveSpeed answered %d pictures for the %d asked; keeping the first %d", len(items),
                           asked, asked)
            items = items[:asked]
        images: list[bytes] = []
        urls: list[tuple[int, str]] = []
        for index, item in enumerate(items, 1):
            if isinstance(item, dict) and isinstance(item.get("b64_json"), str):
                data = decode_base64(item["b64_json"])
                check_picture(data, source=f"WaveSpeed's answer (picture {index} of {len(items)})")
                images.append(data)
            elif isinstance(item, dict) and isinstance(item.get("url"), str):
                urls.append((index, item["url"]))
            else:
                raise InvalidResponseError(
                    "WaveSpeed answered a picture entry with neither 'b64_json' nor 'url'.",
                    provider=WAVESPEED.name, status=200, body=answer)
        if urls:
            fetched = self.transport.download_all([url for _index, url in urls], deadline=deadline)
            for (index, _url), data in zip(urls, fetched, strict=True):
                check_picture(data, source=f"WaveSpeed's result URL (picture {index} of {len(items)})")
                images.append(data)
        elapsed = time.monotonic() - started
        size = body.get("size")
        log_call(f"images.{call}", model=body["model"], guidance_scale=body["guidance_scale"], size=size,
                 prompt=body["prompt"], status=200, duration=elapsed, n=len(images))
        dims = tuple(int(v) for v in size.split("x")) if size else None
        return GenerationResult(
            provider=WAVESPEED.name, protocol=self.protocol, model=body["model"], images=images,
            prompt_sha256=prompt_hash(body["prompt"]), urls=[url for _, url in urls],
            seeds=[body.get("seed")] * len(images),
            size=dims,  # type: ignore[arg-type]
            elapsed=elapsed,
        )
