"""/v1/images/generations and /v1/images/edits against the emulator: pictures, requests and errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from zimage_api.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ImageDecodeError,
    RateLimitError,
    ServerError,
    ValidationError,
)
from zimage_api.images import bytes_to_tensor
from zimage_api.providers.openai_images import ImagesClient

MUG = "Editorial-style product photo of a ceramic mug on a linen table, soft morning light."


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize("response_format", ["b64_json", "url"])
def test_generate_both_output_styles(emu, clock, response_format: str) -> None:
    client = ImagesClient(sleep=clock.sleep)
    result = client.generate(MUG, negative_prompt="no text", guidance_scale=7.5, width=320, height=256, seed=42,
                             response_format=response_format)
    assert len(result.images) == 1
    assert result.images[0] == emu.served_images[-1]
    image, mask = bytes_to_tensor(result.images)
    assert image.shape == (1, 256, 320, 3) and str(image.dtype) == "torch.float32" and mask is None
    assert np.allclose(image[0].numpy(), pixels(emu.served_images[-1]) / 255.0, atol=1e-6)
    posts = emu.requests_to("POST /v1/images/generations")
    assert len(posts) == 1
    sent = posts[0]
    assert sent.headers["content-type"].startswith("application/json")
    assert sent.json == {"model": "Z-Image-Base", "prompt": MUG, "negative_prompt": "no text",
                         "guidance_scale": 7.5, "size": "320x256", "n": 1, "seed": 42,
                         "response_format": response_format}
    assert sent.headers["user-agent"].startswith("comfyui-zimage/")
    if response_format == "url":
        assert result.urls and len(emu.requests_to("GET /files/*")) == 1
        # the picture host gets no key when it is not the API host; here it is the same host, so it may
        assert result.urls[0].startswith(emu.url)
    assert result.info()["size"] == "320x256" and result.info()["seeds"] == [42]


def test_same_request_same_pixels(emu, clock) -> None:
    client = ImagesClient(sleep=clock.sleep)
    first = client.generate(MUG, width=256, height=256, seed=7).images[0]
    second = client.generate(MUG, width=256, height=256, seed=7).images[0]
    third = client.generate(MUG, width=256, height=256, seed=8).images[0]
    assert first == second and first != third


def test_n_pictures_in_one_call(emu, clock) -> None:
    result = ImagesClient(sleep=clock.sleep).generate(MUG, width=256, height=256, n=3, seed=1)
    assert len(result.images) == 3
    assert result.images == emu.served_images[-3:]


def test_edit_sends_multipart_image_field(emu, clock) -> None:
    reference = Image.new("RGB", (300, 200), (200, 40, 40))
    buffer = io.BytesIO()
    reference.save(buffer, "PNG")
    result = ImagesClient(sleep=clock.sleep).edit((buffer.getvalue(), "reference.png", "image/png"), MUG,
                                                  strength=0.35, width=384, height=256, seed=3)
    sent = emu.requests_to("POST /v1/images/edits")[0]
    assert sent.headers["content-type"].startswith("multipart/form-data")
    assert set(sent.files) == {"image"}
    filename, data, content_type = sent.files["image"]
    assert (filename, data, content_type) == ("reference.png", buffer.getvalue(), "image/png")
    assert sent.form["strength"] == "0.35" and sent.form["size"] == "384x256" and sent.form["prompt"] == MUG
    assert sent.form["guidance_scale"] == "6.5" and sent.form["model"] == "Z-Image-Base"
    assert pixels(result.images[0]).shape == (256, 384, 3)
    assert result.images[0] == emu.served_images[-1]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"width": 2050}, "width"),
        ({"guidance_scale": 25.0}, "guidance_scale"),
        ({"guidance_scale": float("nan")}, "guidance_scale"),
        ({"model": "SDXL"}, "model"),
        ({"n": 0}, "n"),
        ({"response_format": "png"}, "response_format"),
    ],
)
def test_bad_input_sends_nothing(emu, clock, kwargs: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        ImagesClient(sleep=clock.sleep).generate(MUG, **kwargs)
    assert info.value.field == field
    assert emu.requests == []


def test_edit_strength_checked_before_sending(emu, clock) -> None:
    with pytest.raises(ValidationError, match="strength"):
        ImagesClient(sleep=clock.sleep).edit((b"x", "r.png", "image/png"), MUG, strength=1.5)
    assert emu.requests == []


def test_missing_key_fails_before_any_request(emu, clock, monkeypatch) -> None:
    monkeypatch.delenv("WAVESPEED_API_KEY")
    with pytest.raises(ConfigError, match="WAVESPEED_API_KEY"):
        ImagesClient(sleep=clock.sleep).generate(MUG)
    assert emu.requests == []


def test_wrong_key_is_an_auth_error_without_the_key(emu, clock, monkeypatch) -> None:
    monkeypatch.setenv("WAVESPEED_API_KEY", "wrong-key-1234567890")
    with pytest.raises(AuthenticationError) as info:
        ImagesClient(sleep=clock.sleep).generate(MUG, width=256, height=256)
    message = str(info.value)
    assert "WaveSpeed rejected the API key (HTTP 401" in message and "WAVESPEED_API_KEY" in message
    assert "wrong-key-1234567890" not in message and "wrong-key-1234567890" not in repr(info.value.body)
    assert len(emu.requests) == 1  # an auth failure is never retried


@pytest.mark.parametrize(
    ("fault", "params", "error", "text"),
    [
        ("status", {"status": 400, "body": {"error": {"message": "unsupported size", "code": "invalid_size",
                                                      "param": "size"}}},
         BadRequestError, "WaveSpeed rejected the parameter 'size' (HTTP 400: unsupported size)."),
        ("status", {"status": 422, "body": {"error": {"message": "field required", "type": "validation_error",
                                                      "param": "image"}}},
         BadRequestError, "WaveSpeed rejected the parameter 'image' (HTTP 422: field required)."),
        ("status", {"status": 500, "body": {"error": {"message": "internal"}}},
         ServerError, "WaveSpeed had a server error (HTTP 500: internal); try again in a minute."),
    ],
)
def test_error_statuses_map_to_typed_errors(emu, clock, fault, params, error, text) -> None:
    emu.inject("POST /v1/images/generations", fault, **params)
    with pytest.raises(error) as info:
        ImagesClient(sleep=clock.sleep).generate(MUG, width=256, height=256)
    assert str(info.value) == text
    assert info.value.status == params["status"]
    assert len(emu.requests_to("POST /v1/images/generations")) == 1  # a 500 after a paid submit is not repeated


def test_rate_limit_retries_then_gives_up_with_a_typed_error(emu, clock) -> None:
    emu.inject("POST /v1/images/generations", "rate_limit", times=6, retry_after="2")
    with pytest.raises(RateLimitError, match=r"rate-limiting this key \(HTTP 429.*Retry after 2 s"):
        ImagesClient(sleep=clock.sleep).generate(MUG, width=256, height=256)
    assert len(emu.requests_to("POST /v1/images/generations")) == 6
    assert clock.sleeps == [2.0] * 5


def test_invalid_base64_is_a_clear_error(emu, clock) -> None:
    emu.inject("POST /v1/images/generations", "invalid_base64")
    with pytest.raises(ImageDecodeError) as info:
        ImagesClient(sleep=clock.sleep).generate(MUG, width=256, height=256)
    assert "invalid base64" in str(info.value) and len(str(info.value)) < 300
