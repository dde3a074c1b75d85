"""The emulator over real HTTP on 127.0.0.1: routes, strictness, lifecycles, faults and bookkeeping."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
from collections.abc import Callable, Iterator
from http.client import HTTPConnection
from typing import Any

import pytest
import requests
from PIL import Image

from zimage_api.emulator import DEMO_KEY, Emulator, RecordedRequest, encode, render_card
from zimage_api.emulator.__main__ import main as emulator_main

KEY = "sk-test-emulator-key"
OTHER_KEY = "sk-test-other-key"
T0 = 1_700_000_000.0
TIMEOUT = 5.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_emu(clock: FakeClock) -> Iterator[Callable[..., Emulator]]:
    made: list[Emulator] = []

    def make(**options: Any) -> Emulator:
        options.setdefault("clock", clock)
        options.setdefault("wavespeed_keys", {KEY})
        options.setdefault("qingbo_keys", {KEY, OTHER_KEY})
        options.setdefault("queue_seconds", 1.0)
        options.setdefault("process_seconds", 4.0)
        options.setdefault("picture_scale", 0.0625)
        emulator = Emulator(**options).start()
        made.append(emulator)
        return emulator

    yield make
    for emulator in made:
        emulator.stop()


@pytest.fixture
def emu(make_emu: Callable[..., Emulator]) -> Emulator:
    return make_emu()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {KEY}"
    yield session
    session.close()


def generate(http: requests.Session, emu: Emulator, **fields: Any) -> requests.Response:
    body = {"model": "Z-Image-Base", "prompt": "a ceramic mug", "size": "256x256", "seed": 7, **fields}
    return http.post(f"{emu.url}/v1/images/generations", json=body, timeout=TIMEOUT)


def submit_task(http: requests.Session, emu: Emulator, headers: dict[str, str] | None = None,
                **fields: Any) -> requests.Response:
    body = {"model": "z-image-turbo", "prompt": "seaside cafe at sunset", **fields}
    return http.post(f"{emu.url}/v1/tasks", json=body, headers=headers or {}, timeout=TIMEOUT)


def submit_v3(http: requests.Session, emu: Emulator, variant: str = "base", **fields: Any) -> requests.Response:
    body = {"prompt": "a lighthouse at dawn", "size": "256*256", "seed": 3, **fields}
    return http.post(f"{emu.url}/api/v3/wavespeed-ai/z-image/{variant}", json=body, timeout=TIMEOUT)


def png_bytes(colour: tuple[int, int, int], size: tuple[int, int] = (320, 240)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def edit_form(**fields: str) -> dict[str, str]:
    return {"model": "Z-Image-Base", "prompt": "make it warmer", "size": "256x256", "seed": "5", **fields}


def picture(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


# ---------------------------------------------------------------------------------------------- OpenAI-style routes
def test_generations_answer_b64_png_pictures(emu: Emulator, http: requests.Session) -> None:
    response = generate(http, emu, n=2, size="320x256")
    assert response.status_code == 200
    body = response.json()
    assert isinstance(body["created"], int) and body["created"] == int(T0)
    assert len(body["data"]) == 2
    pictures = [base64.b64decode(item["b64_json"]) for item in body["data"]]
    assert all(p.startswith(PNG_MAGIC) for p in pictures)
    assert picture(pictures[0]).size == (320, 256)
    assert pictures[0] != pictures[1]  # each item gets its own seed
    assert emu.served_images == pictures


def test_generations_url_format_serves_the_file(emu: Emulator, http: requests.Session) -> None:
    response = generate(http, emu, response_format="url")
    url = response.json()["data"][0]["url"]
    assert re.fullmatch(re.escape(emu.url) + r"/files/[0-9a-f]{32}\.png", url)
    file = requests.get(url, timeout=TIMEOUT)  # no key needed
    assert file.status_code == 200
    assert file.headers["Content-Type"] == "image/png"
    assert int(file.headers["Content-Length"]) == len(file.content)
    assert file.content == emu.served_images[0]


def test_same_request_gives_identical_pictures(emu: Emulator, http: requests.Session) -> None:
    first = generate(http, emu).json()["data"][0]["b64_json"]
    second = generate(http, emu).json()["data"][0]["b64_json"]
    other_seed = generate(http, emu, seed=8).json()["data"][0]["b64_json"]
    assert first == second
    assert first != other_seed


def test_render_card_is_deterministic_and_shows_the_reference() -> None:
    params = {"model": "Z-Image-Base", "size": "300x200", "seed": 1, "cfg": 7.5}
    one = encode(render_card("a red barn", 300, 200, seed=1, params=params), "png")
    two = encode(render_card("a red barn", 300, 200, seed=1, params=params), "png")
    assert one == two
    assert encode(render_card("a red barn", 300, 200, seed=2, params=params), "jpeg").startswith(JPEG_MAGIC)
    red = Image.new("RGB", (50, 50), (255, 0, 0))
    blended = render_card("x", 200, 200, seed=1, params={}, reference=red, strength=0.9)
    r, g, b = blended.getpixel((100, 20))
    assert r > 200 and g < 80 and b < 80


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"size": "1024*1024"}, "size"),
        ({"size": "128x128"}, "size"),
        ({"size": "4096x1024"}, "size"),
        ({"size": "big"}, "size"),
        ({"model": "dall-e-3"}, "model"),
        ({"prompt": ""}, "prompt"),
        ({"n": 9}, "n"),
        ({"seed": -5}, "seed"),
        ({"guidance_scale": 25}, "guidance_scale"),
        ({"response_format": "png"}, "response_format"),
        ({"steps": 30}, "steps"),
    ],
)
def test_generations_reject_bad_fields(emu: Emulator, http: requests.Session, fields: dict[str, Any],
                                       param: str) -> None:
    response = generate(http, emu, **fields)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and error["code"]
    assert emu.served_images == []


def test_generations_need_json(emu: Emulator, http: requests.Session) -> None:
    response = http.post(f"{emu.url}/v1/images/generations", data={"model": "Z-Image-Base", "prompt": "x"},
                         timeout=TIMEOUT)
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_edits_blend_the_reference(emu: Emulator, http: requests.Session) -> None:
    response = http.post(f"{emu.url}/v1/images/edits", data=edit_form(strength="0.9"),
                         files={"image": ("ref.png", png_bytes((0, 0, 255)), "image/png")}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    out = picture(base64.b64decode(response.json()["data"][0]["b64_json"]))
    assert out.size == (256, 256)
    r, g, b = out.getpixel((128, 30))
    assert b > 200 and r < 80 and g < 80


def test_edits_default_size_follows_the_reference(emu: Emulator, http: requests.Session) -> None:
    form = edit_form()
    del form["size"]
    response = http.post(f"{emu.url}/v1/images/edits", data=form,
                         files={"image": ("ref.png", png_bytes((9, 9, 9), (2400, 300)), "image/png")},
                         timeout=TIMEOUT)
    assert picture(base64.b64decode(response.json()["data"][0]["b64_json"])).size == (2048, 256)


def test_edits_reject_reference_image_field_with_422(emu: Emulator, http: requests.Session) -> None:
    response = http.post(f"{emu.url}/v1/images/edits", data=edit_form(),
                         files={"reference_image": ("ref.png", png_bytes((1, 2, 3)), "image/png")}, timeout=TIMEOUT)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["param"] == "image" and "'image'" in error["message"]


@pytest.mark.parametrize(
    ("send", "status"),
    [
        ({"json": {"model": "Z-Image-Base", "prompt": "x"}}, 415),
        ({"data": edit_form()}, 415),  # url-encoded, not multipart
        ({"files": {k: (None, v) for k, v in edit_form().items()}}, 400),  # multipart without a picture
        ({"data": edit_form(strength="1.5"), "files": {"image": ("r.png", png_bytes((1, 1, 1)), "image/png")}}, 400),
        ({"data": edit_form(), "files": {"image": ("r.png", b"not a picture", "image/png")}}, 400),
        ({"data": edit_form(mask="x"), "files": {"image": ("r.png", png_bytes((1, 1, 1)), "image/png")}}, 400),
    ],
)
def test_edits_strictness(emu: Emulator, http: requests.Session, send: dict[str, Any], status: int) -> None:
    response = http.post(f"{emu.url}/v1/images/edits", timeout=TIMEOUT, **send)
    assert response.status_code == status
    assert response.json()["error"]["message"]


# ---------------------------------------------------------------------------------------------- authentication
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/images/generations", {"model": "Z-Image-Base", "prompt": "x"}),
        ("POST", "/api/v3/wavespeed-ai/z-image/turbo", {"prompt": "x"}),
        ("GET", "/api/v3/predictions/abc/result", None),
        ("POST", "/v1/tasks", {"model": "z-image-turbo", "prompt": "x"}),
        ("GET", "/v1/tasks/task-wave1", None),
    ],
)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key", f"Basic {KEY}", "Bearer "])
def test_wrong_or_missing_key_gets_401(emu: Emulator, method: str, path: str, body: Any,
                                       authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = requests.request(method, emu.url + path, json=body, headers=headers, timeout=TIMEOUT)
    assert response.status_code == 401
    payload = response.json()
    message = payload["message"] if path.startswith("/api/v3") else payload["error"]["message"]
    assert "key" in message.lower()
    assert KEY not in response.text and "wrong-key" not in response.text
    assert emu.task_count() == 0


def test_keys_are_per_provider_and_default_to_the_demo_key(make_emu: Callable[..., Emulator],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WAVESPEED_API_KEY", "QINGBO_API_KEY", "WAVE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    demo = make_emu(wavespeed_keys=None, qingbo_keys=None)
    ok = requests.post(f"{demo.url}/v1/tasks", json={"model": "z-image-turbo", "prompt": "x"},
                       headers={"Authorization": f"Bearer {DEMO_KEY}"}, timeout=TIMEOUT)
    assert ok.status_code == 200
    monkeypatch.setenv("WAVE_API_KEY", "from-env")
    envd = make_emu(wavespeed_keys={"ws-only"}, qingbo_keys=None)
    headers = {"Authorization": "Bearer ws-only"}
    assert requests.post(f"{envd.url}/v1/tasks", json={"model": "z-image-turbo", "prompt": "x"}, headers=headers,
                         timeout=TIMEOUT).status_code == 401
    assert requests.post(f"{envd.url}/v1/tasks", json={"model": "z-image-turbo", "prompt": "x"},
                         headers={"Authorization": "Bearer from-env"}, timeout=TIMEOUT).status_code == 200


# ---------------------------------------------------------------------------------------------- WaveSpeed v3
def test_v3_prediction_lifecycle(emu: Emulator, http: requests.Session, clock: FakeClock) -> None:
    response = submit_v3(http, emu, variant="turbo")
    assert response.status_code == 200
    envelope = response.json()
    assert envelope["code"] == 200 and envelope["message"] == "success"
    data = envelope["data"]
    assert re.fullmatch(r"[0-9a-f]{32}", data["id"])
    assert data["model"] == "wavespeed-ai/z-image/turbo"
    assert data["status"] == "created" and data["outputs"] == [] and data["error"] == ""
    assert data["created_at"] == "2023-11-14T22:13:20.000Z"
    assert data["urls"]["get"] == f"{emu.url}/api/v3/predictions/{data['id']}/result"

    def poll() -> dict[str, Any]:
        return http.get(data["urls"]["get"], timeout=TIMEOUT).json()["data"]

    clock.advance(2.0)
    assert poll()["status"] == "processing"
    clock.advance(4.0)
    done = poll()
    assert done["status"] == "completed"
    assert done["timings"]["inference"] == 4000 and done["has_nsfw_contents"] == [False]
    (url,) = done["outputs"]
    assert url.endswith(".jpeg")
    file = http.get(url, timeout=TIMEOUT)
    assert file.headers["Content-Type"] == "image/jpeg" and file.content.startswith(JPEG_MAGIC)
    assert picture(file.content).size == (64, 64)  # 256*256 scaled down to the 64-pixel minimum
    assert emu.tasks[data["id"]].outputs == [file.content]
    assert emu.tasks[data["id"]].completed_at == T0 + 5.0  # 1 s queued + 4 s processing


def test_v3_sync_mode_with_base64_png(emu: Emulator, http: requests.Session) -> None:
    response = submit_v3(http, emu, enable_sync_mode=True, enable_base64_output=True, output_format="png")
    data = response.json()["data"]
    assert data["status"] == "completed"
    (output,) = data["outputs"]
    prefix, encoded = output.split(",", 1)
    assert prefix == "data:image/png;base64"
    assert base64.b64decode(encoded) == emu.served_images[0]


def test_v3_upload_then_image_to_image(emu: Emulator, http: requests.Session, clock: FakeClock) -> None:
    upload = http.post(f"{emu.url}/api/v3/media/upload/binary",
                       files={"file": ("ref.png", png_bytes((0, 200, 0)), "image/png")}, timeout=TIMEOUT)
    assert upload.status_code == 200
    info = upload.json()["data"]
    assert info["type"] == "image" and info["filename"] == "ref.png" and info["size"] == len(png_bytes((0, 200, 0)))
    assert info["download_url"].startswith(f"{emu.url}/files/") and info["download_url"].endswith(".png")
    # v3's strength is the denoise: 0.05 keeps nearly all of the reference.
    response = submit_v3(http, emu, image=info["download_url"], strength=0.05, enable_sync_mode=True,
                         size="512*512", output_format="png")
    assert response.status_code == 200, response.text
    out = picture(emu.served_images[-1])
    assert out.size == (64, 64)
    r, g, b = out.getpixel((32, 5))
    assert g > 150 and r < 80 and b < 80


@pytest.mark.parametrize(
    "fields",
    [
        {"size": "1024x1024"},
        {"size": "2048*2048"},
        {"size": "128*128"},
        {"seed": "7"},
        {"strength": 1.5},
        {"output_format": "webp"},
        {"enable_sync_mode": "yes"},
        {"image": "https://example.com/cat.png"},
        {"negative_prompt": 3},
        {"num_inference_steps": 8},
        {"prompt": "   "},
    ],
)
def test_v3_rejects_bad_fields(emu: Emulator, http: requests.Session, fields: dict[str, Any]) -> None:
    response = submit_v3(http, emu, **fields)
    assert response.status_code == 400
    payload = response.json()
    assert payload["code"] == 400 and payload["message"]
    assert emu.task_count() == 0


def test_v3_unknown_prediction_is_404(emu: Emulator, http: requests.Session) -> None:
    response = http.get(f"{emu.url}/api/v3/predictions/nope/result", timeout=TIMEOUT)
    assert response.status_code == 404 and response.json()["code"] == 404


# ---------------------------------------------------------------------------------------------- Qingbo tasks
def test_qingbo_submit_shape_and_pricing(emu: Emulator, http: requests.Session) -> None:
    body = submit_task(http, emu).json()
    assert re.fullmatch(r"task-wave\d{10}[0-9a-f]{10}", body["task_id"])
    assert body["task_id"].startswith(f"task-wave{int(T0)}")
    assert body == {"task_id": body["task_id"], "model": "z-image-turbo", "action": "generate", "status": "queued",
                    "created_at": int(T0 * 1000), "progress": 0, "pre_consumed_cost": 5313}
    assert submit_task(http, emu, prompt_extend=True).json()["pre_consumed_cost"] == 6313
    assert emu.quota_charged == 5313 + 6313


@pytest.mark.parametrize(("style", "queued", "half", "done"), [("int", 0, 50, 100), ("percent", "", "50%", "100%")])
@pytest.mark.parametrize("unit", ["ms", "s"])
def test_qingbo_lifecycle(make_emu: Callable[..., Emulator], http: requests.Session, clock: FakeClock,
                          style: str, queued: Any, half: Any, done: Any, unit: str) -> None:
    emu = make_emu(progress_style=style, created_at_unit=unit, url_ttl=3600.0)
    task_id = submit_task(http, emu, aspect_ratio="16:9").json()["task_id"]
    scale = 1000 if unit == "ms" else 1

    def poll() -> dict[str, Any]:
        return http.get(f"{emu.url}/v1/tasks/{task_id}", timeout=TIMEOUT).json()

    first = poll()
    assert first["status"] == "queued" and first["progress"] == queued
    assert first["created_at"] == int(T0) * scale
    assert first["billing_status"] == "pre_consumed" and "completed_at" not in first and "result" not in first
    assert first["urls"] == {"get": f"{emu.url}/v1/tasks/{task_id}", "cancel": f"{emu.url}/v1/tasks/{task_id}/cancel"}
    clock.advance(3.0)  # 1 s queued, then 2 of 4 s processing
    middle = poll()
    assert middle["status"] == "processing" and middle["progress"] == half
    clock.advance(3.0)
    final = poll()
    assert final["status"] == "completed" and final["progress"] == done
    assert final["completed_at"] == int(T0 + 5.0) * scale
    assert final["cost"] == 5313 and final["billing_status"] == "settled"
    (image,) = final["result"]["images"]
    assert image["expires_at"] == int(T0 + 5.0 + 3600.0)
    (url,) = image["url"]
    assert url.endswith(".jpg")
    file = http.get(url, timeout=TIMEOUT)
    assert file.headers["Content-Type"] == "image/jpeg"
    assert picture(file.content).size == (114, 64)  # 1024x576 scaled until the short side is 64
    assert emu.tasks[task_id].status == "completed"


@pytest.mark.parametrize(
    ("ratio", "resolution", "size"),
    [("1:1", "1K", (256, 256)), ("16:9", "1k", (256, 144)), ("9:16", "1K", (144, 256)), ("4:3", "2K", (512, 384)),
     ("2:3", "2k", (341, 512))],
)
def test_qingbo_output_sizes(make_emu: Callable[..., Emulator], http: requests.Session, clock: FakeClock,
                             ratio: str, resolution: str, size: tuple[int, int]) -> None:
    emu = make_emu(picture_scale=0.25, queue_seconds=0.0, process_seconds=0.0)
    task_id = submit_task(http, emu, aspect_ratio=ratio, resolution=resolution).json()["task_id"]
    clock.advance(0.1)
    assert picture(emu.tasks[task_id].outputs[0]).size == size


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"negative_prompt": "blurry"}, "negative_prompt"),
        ({"image_urls": ["https://example.com/a.png"]}, "image_urls"),
        ({"prompt": "x" * 801}, "801"),
        ({"n": 2}, "n"),
        ({"model": "z-image-base"}, "model"),
        ({"action": "edit"}, "action"),
        ({"aspect_ratio": "21:9"}, "aspect_ratio"),
        ({"resolution": "4K"}, "resolution"),
        ({"seed": 1.5}, "seed"),
        ({"prompt_extend": "yes"}, "prompt_extend"),
        ({"callback_events": "done"}, "callback_events"),
    ],
)
def test_qingbo_rejects_bad_fields(emu: Emulator, http: requests.Session, fields: dict[str, Any],
                                   needle: str) -> None:
    response = submit_task(http, emu, **fields)
    assert response.status_code == 400
    error = response.json()["error"]
    assert needle in error["message"]
    assert error["code"] in ("invalid_parameter", "model_not_found")
    if needle == "801":
        assert "800" in error["message"]
    assert emu.task_count() == 0


def test_qingbo_accepts_every_documented_field(emu: Emulator, http: requests.Session) -> None:
    response = submit_task(http, emu, action="generate", n=1, seed=-1, aspect_ratio="3:2", resolution="2K",
                           prompt_extend=False, callback_url="https://example.com/hook",
                           callback_events=["task.completed"], prompt="y" * 800)
    assert response.status_code == 200


def test_qingbo_idempotency_key_returns_the_same_task(emu: Emulator, http: requests.Session) -> None:
    first = submit_task(http, emu, headers={"Idempotency-Key": "abc-1"})
    second = submit_task(http, emu, headers={"Idempotency-Key": "abc-1"})
    assert first.status_code == second.status_code == 200
    assert first.json()["task_id"] == second.json()["task_id"]
    assert emu.task_count("qingbo") == 1 and emu.quota_charged == 5313
    other_key = submit_task(http, emu, headers={"Idempotency-Key": "abc-1", "Authorization": f"Bearer {OTHER_KEY}"})
    assert other_key.json()["task_id"] != first.json()["task_id"]
    assert emu.requests_to("POST /v1/tasks")[1].headers["idempotency-key"] == "abc-1"


def test_qingbo_prefer_wait(make_emu: Callable[..., Emulator], http: requests.Session) -> None:
    instant = make_emu(queue_seconds=0.0, process_seconds=0.0)
    done = submit_task(http, instant, headers={"Prefer": "wait=5"}).json()
    assert done["status"] == "completed" and done["result"]["images"][0]["url"]
    slow = make_emu()
    pending = submit_task(http, slow, headers={"Prefer": "wait=60"})  # the fake clock stands still: no long hold
    assert pending.json()["status"] == "queued" and pending.elapsed.total_seconds() < 2.0


def test_qingbo_prefer_wait_follows_a_moving_clock(make_emu: Callable[..., Emulator], http: requests.Session,
                                                   clock: FakeClock) -> None:
    emu = make_emu(queue_seconds=0.0, process_seconds=1.0)
    stop = threading.Event()

    def tick() -> None:
        for _ in range(500):
            if stop.wait(0.005):
                return
            clock.advance(0.05)

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        done = submit_task(http, emu, headers={"Prefer": "respond-async, wait=5"}).json()
    finally:
        stop.set()
        ticker.join(TIMEOUT)
    assert done["status"] == "completed" and done["cost"] == 5313 and done["pre_consumed_cost"] == 5313


def test_qingbo_cancel_only_while_queued(emu: Emulator, http: requests.Session, clock: FakeClock) -> None:
    queued = submit_task(http, emu).json()["task_id"]
    answer = http.post(f"{emu.url}/v1/tasks/{queued}/cancel", timeout=TIMEOUT)
    assert answer.status_code == 200
    assert answer.json() == {"task_id": queued, "status": "cancelled", "refunded": True, "refunded_quota": 5313}
    view = http.get(f"{emu.url}/v1/tasks/{queued}", timeout=TIMEOUT).json()
    assert view["status"] == "cancelled" and view["cost"] == 0 and view["billing_status"] == "refunded"
    assert view["completed_at"] == int(T0 * 1000)
    again = http.post(f"{emu.url}/v1/tasks/{queued}/cancel", timeout=TIMEOUT)
    assert again.status_code == 409 and again.json()["error"]["code"] == "task_not_cancellable"

    running = submit_task(http, emu).json()["task_id"]
    clock.advance(2.0)
    refused = http.post(f"{emu.url}/v1/tasks/{running}/cancel", timeout=TIMEOUT)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "task_not_cancellable" and "processing" in refused.text
    clock.advance(10.0)
    assert http.post(f"{emu.url}/v1/tasks/{running}/cancel", timeout=TIMEOUT).status_code == 409
    missing = http.post(f"{emu.url}/v1/tasks/task-wave0/cancel", timeout=TIMEOUT)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "task_not_found"
    assert emu.quota_charged == 5313


def test_qingbo_unknown_task_is_404(emu: Emulator, http: requests.Session) -> None:
    response = http.get(f"{emu.url}/v1/tasks/task-wave123", timeout=TIMEOUT)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "task_not_found"


def test_max_concurrent_holds_tasks_in_the_queue(make_emu: Callable[..., Emulator], http: requests.Session,
                                                 clock: FakeClock) -> None:
    emu = make_emu(max_concurrent=2, queue_seconds=0.0, process_seconds=4.0)
    ids = [submit_task(http, emu).json()["task_id"] for _ in range(3)]
    clock.advance(1.0)
    assert [emu.tasks[i].status for i in ids] == ["processing", "processing", "queued"]
    clock.advance(3.5)  # the first two finished at +4 s; the third took a slot then
    assert [emu.tasks[i].status for i in ids] == ["completed", "completed", "processing"]
    third = http.get(f"{emu.url}/v1/tasks/{ids[2]}", timeout=TIMEOUT).json()
    assert third["progress"] == 12  # 0.5 s of 4 s
    clock.advance(4.0)
    assert emu.tasks[ids[2]].completed_at == T0 + 8.0
    assert emu.peak_concurrency == 2


def test_peak_concurrency_counts_overlapping_tasks(emu: Emulator, http: requests.Session,
                                                   clock: FakeClock) -> None:
    for _ in range(3):
        submit_task(http, emu)
    clock.advance(1.5)
    assert emu.peak_concurrency == 3


def test_sync_requests_beyond_max_concurrent_get_429(make_emu: Callable[..., Emulator]) -> None:
    emu = make_emu(max_concurrent=1, sync_latency=0.15)
    results: list[requests.Response] = []
    barrier = threading.Barrier(2)

    def call() -> None:
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {KEY}"
            barrier.wait(TIMEOUT)
            results.append(generate(session, emu))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 429]
    limited = next(r for r in results if r.status_code == 429)
    assert limited.headers["Retry-After"] == "1"
    assert emu.peak_concurrency == 1


def test_peak_concurrency_counts_sync_requests_in_flight(make_emu: Callable[..., Emulator]) -> None:
    emu = make_emu(sync_latency=0.15)
    barrier = threading.Barrier(3)

    def call() -> None:
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {KEY}"
            barrier.wait(TIMEOUT)
            generate(session, emu)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert emu.peak_concurrency == 3


# ---------------------------------------------------------------------------------------------- files
def test_result_files_expire_on_the_clock(make_emu: Callable[..., Emulator], http: requests.Session,
                                          clock: FakeClock) -> None:
    emu = make_emu(url_ttl=60.0)
    url = generate(http, emu, response_format="url").json()["data"][0]["url"]
    clock.advance(59.0)
    assert requests.get(url, timeout=TIMEOUT).status_code == 200
    clock.advance(1.0)
    expired = requests.get(url, timeout=TIMEOUT)
    assert expired.status_code == 404
    assert expired.json() == {"error": {"message": "This result URL has expired", "code": "expired"}}
    assert requests.get(f"{emu.url}/files/0123abcd.png", timeout=TIMEOUT).json()["error"]["code"] == "not_found"


# ---------------------------------------------------------------------------------------------- faults
def test_fault_status_with_custom_body_and_headers(emu: Emulator, http: requests.Session) -> None:
    emu.inject("POST /v1/tasks", "status", status=402, body={"error": {"message": "broke", "code": "no_money"}},
               headers={"X-Request-Id": "req-1"})
    response = submit_task(http, emu)
    assert response.status_code == 402 and response.json()["error"]["code"] == "no_money"
    assert response.headers["X-Request-Id"] == "req-1"
    assert emu.task_count() == 0
    assert submit_task(http, emu).status_code == 200  # consumed once


@pytest.mark.parametrize(
    ("pattern", "call", "shape"),
    [
        ("POST /v1/images/*", lambda http, emu: generate(http, emu), "openai"),
        ("POST /api/v3/wavespeed-ai/*", lambda http, emu: submit_v3(http, emu), "v3"),
        ("POST /v1/tasks", lambda http, emu: submit_task(http, emu), "qingbo"),
    ],
)
def test_fault_rate_limit_and_overloaded_use_the_route_shape(emu: Emulator, http: requests.Session, pattern: str,
                                                             call: Callable[..., requests.Response],
                                                             shape: str) -> None:
    emu.inject(pattern, "rate_limit", retry_after=3)
    emu.inject(pattern, "overloaded")
    limited, overloaded, fine = call(http, emu), call(http, emu), call(http, emu)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
    assert overloaded.status_code == 503 and "Retry-After" not in overloaded.headers
    assert fine.status_code == 200
    for response in (limited, overloaded):
        payload = response.json()
        if shape == "v3":
            assert payload["code"] == response.status_code and payload["message"]
        else:
            assert payload["error"]["message"] and payload["error"]["code"]
    assert [r.fault for r in emu.requests] == ["rate_limit", "overloaded", None]


def test_fault_quota_reports_reset_at(emu: Emulator, http: requests.Session) -> None:
    emu.inject("POST /v1/tasks", "quota", reset_in=30)
    response = submit_task(http, emu)
    assert response.status_code == 429
    payload = response.json()
    assert payload["error"]["code"] == "quota_window_exceeded"
    assert payload["error"]["reset_at"] == payload["reset_at"] == int(T0) + 30


def test_fault_reset_before_does_nothing(emu: Emulator, http: requests.Session) -> None:
    emu.inject("POST /v1/tasks", "reset_before")
    with pytest.raises(requests.ConnectionError):
        submit_task(http, emu)
    assert emu.task_count() == 0
    (record,) = emu.requests
    assert record.status == 0 and record.fault == "reset_before"
    assert submit_task(http, emu).status_code == 200  # the session recovers with a new connection


def test_fault_reset_after_processes_the_request(emu: Emulator, http: requests.Session) -> None:
    emu.inject("POST /v1/tasks", "reset_after")
    with pytest.raises(requests.ConnectionError) as caught:
        submit_task(http, emu, headers={"Idempotency-Key": "k1"})
    assert "reset" in repr(caught.value).lower()
    assert emu.task_count() == 1 and emu.requests[0].status == 0
    retry = submit_task(http, emu, headers={"Idempotency-Key": "k1"})
    assert retry.json()["task_id"] == next(iter(emu.tasks))
    assert emu.task_count() == 1


def test_fault_delay_causes_a_read_timeout(emu: Emulator, http: requests.Session) -> None:
    emu.inject("GET /v1/tasks/*", "delay", seconds=0.3)
    with pytest.raises(requests.Timeout):
        http.get(f"{emu.url}/v1/tasks/task-wave1", timeout=0.05)
    assert emu.requests[0].fault == "delay"


def test_fault_malformed_json_and_html_502(emu: Emulator, http: requests.Session) -> None:
    emu.inject("POST /v1/images/generations", "malformed_json")
    emu.inject("POST /v1/images/generations", "html_502")
    cut = generate(http, emu)
    assert cut.status_code == 200 and cut.headers["Content-Type"] == "application/json"
    with pytest.raises(ValueError):
        json.loads(cut.text)
    proxy = generate(http, emu)
    assert proxy.status_code == 502 and proxy.headers["Content-Type"].startswith("text/html")
    assert "502 Bad Gateway" in proxy.text


def test_fault_invalid_base64(emu: Emulator, http: requests.Session) -> None:
    emu.inject("POST /v1/images/generations", "invalid_base64")
    emu.inject("POST /api/v3/wavespeed-ai/*", "invalid_base64")
    item = generate(http, emu).json()["data"][0]["b64_json"]
    with pytest.raises(ValueError):
        base64.b64decode(item, validate=True)
    output = submit_v3(http, emu, enable_sync_mode=True, enable_base64_output=True).json()["data"]["outputs"][0]
    assert output.startswith("data:image/jpeg;base64,")
    with pytest.raises(ValueError):
        base64.b64decode(output.split(",", 1)[1], validate=True)
    assert len(emu.served_images) == 2


def test_fault_truncated_and_expired_files(emu: Emulator, http: requests.Session) -> None:
    url = generate(http, emu, response_format="url").json()["data"][0]["url"]
    emu.inject("GET /files/*", "truncated")
    emu.inject("GET /files/*", "expired")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url, timeout=TIMEOUT)
    expired = requests.get(url, timeout=TIMEOUT)
    assert expired.status_code == 404 and expired.json()["error"]["code"] == "expired"
    assert requests.get(url, timeout=TIMEOUT).content == emu.served_images[0]


def test_fault_task_failed(emu: Emulator, http: requests.Session, clock: FakeClock) -> None:
    emu.inject("POST /v1/tasks", "task_failed", code="upstream_bad_request", message="prompt rejected")
    emu.inject("POST /api/v3/wavespeed-ai/*", "task_failed")
    task_id = submit_task(http, emu).json()["task_id"]
    prediction = submit_v3(http, emu).json()["data"]["id"]
    clock.advance(2.0)
    assert http.get(f"{emu.url}/v1/tasks/{task_id}", timeout=TIMEOUT).json()["status"] == "processing"
    clock.advance(10.0)
    view = http.get(f"{emu.url}/v1/tasks/{task_id}", timeout=TIMEOUT).json()
    assert view["status"] == "failed" and view["cost"] == 0 and view["billing_status"] == "refunded"
    assert view["error"] == {"message": "prompt rejected", "code": "upstream_bad_request"}
    assert "result" not in view
    data = http.get(f"{emu.url}/api/v3/predictions/{prediction}/result", timeout=TIMEOUT).json()["data"]
    assert data["status"] == "failed" and data["error"] and data["outputs"] == []
    assert emu.served_images == [] and emu.quota_charged == 0


def test_fault_stuck_task_never_finishes(emu: Emulator, http: requests.Session, clock: FakeClock) -> None:
    emu.inject("POST /v1/tasks", "stuck")
    task_id = submit_task(http, emu).json()["task_id"]
    clock.advance(10_000.0)
    view = http.get(f"{emu.url}/v1/tasks/{task_id}", timeout=TIMEOUT).json()
    assert view["status"] == "processing" and 0 < view["progress"] < 100
    assert emu.tasks[task_id].completed_at is None


def test_faults_are_fifo_per_pattern_and_counted(emu: Emulator, http: requests.Session) -> None:
    emu.inject("POST /v1/tasks", "rate_limit", times=2)
    emu.inject("GET /v1/tasks/*", "overloaded")
    emu.inject("POST /v1/tasks", "overloaded")
    statuses = [submit_task(http, emu).status_code for _ in range(4)]
    assert statuses == [429, 429, 503, 200]
    emu.clear_faults()
    assert http.get(f"{emu.url}/v1/tasks/task-wave1", timeout=TIMEOUT).status_code == 404
    with pytest.raises(ValueError):
        emu.inject("*", "meteor_strike")
    with pytest.raises(TypeError):
        emu.inject("*", "delay")


# ---------------------------------------------------------------------------------------------- HTTP and bookkeeping
def test_request_log_records_what_was_sent(emu: Emulator, http: requests.Session) -> None:
    generate(http, emu)
    http.post(f"{emu.url}/v1/images/edits", data=edit_form(), files={"image": ("ref.png", png_bytes((1, 2, 3)),
                                                                               "image/png")}, timeout=TIMEOUT)
    http.get(f"{emu.url}/v1/tasks/task-wave9?verbose=1", timeout=TIMEOUT)
    first, second, third = emu.requests
    assert isinstance(first, RecordedRequest)
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert first.json["prompt"] == "a ceramic mug" and first.status == 200 and first.time == T0
    assert second.form["prompt"] == "make it warmer"
    assert second.files["image"][0] == "ref.png" and second.files["image"][2] == "image/png"
    assert second.files["image"][1] == png_bytes((1, 2, 3))
    assert third.query == {"verbose": "1"} and third.status == 404
    assert [r.path for r in emu.requests_to("GET /v1/tasks/*")] == ["/v1/tasks/task-wave9"]
    assert KEY not in repr(first)


def test_keep_alive_and_connection_close(emu: Emulator) -> None:
    connection = HTTPConnection("127.0.0.1", emu.port, timeout=TIMEOUT)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    body = json.dumps({"model": "z-image-turbo", "prompt": "x"})
    for _ in range(3):  # one connection, several requests
        connection.request("POST", "/v1/tasks", body=body, headers=headers)
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read())["status"] == "queued"
        assert response.getheader("Connection") is None
    connection.request("GET", "/v1/tasks/none", headers={**headers, "Connection": "close"})
    response = connection.getresponse()
    assert response.status == 404 and response.getheader("Connection") == "close"
    response.read()
    connection.close()
    assert emu.task_count() == 3


def test_unknown_routes_and_methods(emu: Emulator, http: requests.Session) -> None:
    assert http.get(f"{emu.url}/v1/images/generations", timeout=TIMEOUT).status_code == 405
    assert http.get(f"{emu.url}/v2/whatever", timeout=TIMEOUT).status_code == 404
    assert http.post(f"{emu.url}/v1/tasks/", json={}, timeout=TIMEOUT).status_code == 404


def test_stop_and_start_keep_port_and_state(emu: Emulator, http: requests.Session, clock: FakeClock) -> None:
    task_id = submit_task(http, emu).json()["task_id"]
    port = emu.port
    emu.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{emu.url}/v1/tasks/{task_id}", timeout=TIMEOUT)
    emu.stop()  # stopping twice is harmless
    emu.start()
    assert emu.port == port
    clock.advance(10.0)
    assert http.get(f"{emu.url}/v1/tasks/{task_id}", timeout=TIMEOUT).json()["status"] == "completed"
    assert len(emu.requests) == 2


def test_stop_interrupts_a_waiting_request(make_emu: Callable[..., Emulator]) -> None:
    emu = make_emu(sync_latency=30.0)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            with requests.Session() as session:
                session.headers["Authorization"] = f"Bearer {KEY}"
                generate(session, emu)
        except requests.RequestException as err:
            errors.append(err)

    thread = threading.Thread(target=call)
    thread.start()
    for _ in range(200):
        if emu.requests:
            break
        threading.Event().wait(0.005)
    emu.stop()
    thread.join(TIMEOUT)
    assert not thread.is_alive()


def test_reset_forgets_everything(emu: Emulator, http: requests.Session) -> None:
    submit_task(http, emu)
    generate(http, emu)
    emu.inject("*", "overloaded")
    emu.reset()
    assert emu.requests == [] and emu.tasks == {} and emu.served_images == [] and emu.task_count() == 0
    assert submit_task(http, emu).status_code == 200


def test_cli_prints_the_address(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WAVESPEED_API_KEY", "QINGBO_API_KEY", "WAVE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert emulator_main(["--port", "0", "--serve-seconds", "0"]) == 0
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(rf"Z-Image emulator on http://127\.0\.0\.1:\d+ \(key: {DEMO_KEY}\)", line)
    assert emulator_main(["--host", "0.0.0.0", "--serve-seconds", "0"]) == 2


MISSING = object()


@pytest.mark.parametrize(("style", "readings"), [
    ("int", (0, 25, 75, 100)),
    ("float", (0.0, 25.0, 75.0, 100.0)),
    ("percent", ("", "25%", "75%", "100%")),
    ("stepped", (0, 0, 50, 100)),
    ("zero", (0, 0, 0, 100)),
    ("empty", ("", "", "", "100%")),
    ("absent", (MISSING, MISSING, MISSING, MISSING)),
])
def test_qingbo_progress_reads_in_every_shape_servers_use(make_emu: Callable[..., Emulator], http: requests.Session,
                                                          clock: FakeClock, style: str, readings: tuple) -> None:
    emu = make_emu(progress_style=style)
    answer = submit_task(http, emu).json()
    assert answer.get("progress", MISSING) == readings[0]
    task_id = answer["task_id"]
    seen = []
    for step in (0.0, 2.0, 2.0, 2.0):  # queued; 1 s of 4 s processing; 3 of 4 s; done
        clock.advance(step)
        seen.append(http.get(f"{emu.url}/v1/tasks/{task_id}", timeout=TIMEOUT).json().get("progress", MISSING))
    assert tuple(seen) == readings
    with pytest.raises(ValueError, match="progress_style must be one of int, float, percent"):
        make_emu(progress_style="fraction")
