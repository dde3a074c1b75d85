"""WaveSpeed's v3 prediction API against the emulator: submit, poll, upload, sync and base64 modes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.runs import run_edit, run_task
from zimage_api.errors import TaskFailedError, TaskTimeoutError, ValidationError
from zimage_api.images import bytes_to_tensor
from zimage_api.ledger import Ledger
from zimage_api.polling import TaskState
from zimage_api.providers.wavespeed_v3 import WaveSpeedClient

PROMPT = "Editorial-style product photo of a ceramic mug on a linen table, soft morning light."


def client(clock) -> WaveSpeedClient:
    return WaveSpeedClient(sleep=clock.sleep, now=clock)


@pytest.mark.parametrize("base64_output", [False, True])
def test_generate_both_output_styles(emu, clock, base64_output: bool) -> None:
    result = run_task(client(clock), PROMPT, model="Z-Image-Turbo", width=512, height=384, seed=9,
                                    base64_output=base64_output, sleep=clock.sleep, clock=clock)
    sent = emu.requests_to("POST /api/v3/wavespeed-ai/z-image/turbo")[0]
    assert sent.json == {"prompt": PROMPT, "size": "512*384", "seed": 9, "output_format": "png",
                         "enable_sync_mode": False, "enable_base64_output": base64_output}
    assert "guidance_scale" not in sent.json  # v3 documents no CFG parameter
    assert result.images == [emu.served_images[-1]]
    image, _ = bytes_to_tensor(result.images)
    expected = np.asarray(Image.open(io.BytesIO(emu.served_images[-1])).convert("RGB")) / 255.0
    assert np.allclose(image[0].numpy(), expected, atol=1e-6)
    assert result.model == "Z-Image-Turbo" and result.task_ids[0] in emu.tasks
    assert bool(result.urls) is not base64_output
    assert Ledger.default().get(result.task_ids[0])["status"] == "completed"


def test_sync_mode_needs_no_polling(emu, clock) -> None:
    result = run_task(client(clock), PROMPT, width=256, height=256, sync=True, sleep=clock.sleep, clock=clock)
    assert emu.requests_to("GET /api/v3/predictions/*") == []
    assert result.images == [emu.served_images[-1]]


def test_edit_uploads_the_reference_first(emu, clock) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), (10, 120, 200)).save(buffer, "PNG")
    result = run_edit(client(clock), (buffer.getvalue(), "reference.png", "image/png"), PROMPT, strength=0.45,
                                width=256, height=256, sleep=clock.sleep, clock=clock)
    paths = [r.path for r in emu.requests if r.method == "POST"]
    assert paths == ["/api/v3/media/upload/binary", "/api/v3/wavespeed-ai/z-image/base"]
    upload = emu.requests_to("POST /api/v3/media/upload/binary")[0]
    assert upload.files["file"][1] == buffer.getvalue()
    sent = emu.requests_to("POST /api/v3/wavespeed-ai/z-image/base")[0]
    assert sent.json["image"].startswith(emu.url + "/files/") and sent.json["strength"] == 0.45
    assert result.images == [emu.served_images[-1]]


def test_failed_prediction_is_typed(emu, clock) -> None:
    emu.inject("POST /api/v3/wavespeed-ai/z-image/base", "task_failed", code="task_failed",
               message="NSFW content detected")
    with pytest.raises(TaskFailedError, match=r"WaveSpeed prediction \w+ failed: NSFW content detected"):
        run_task(client(clock), PROMPT, width=256, height=256, sleep=clock.sleep, clock=clock)


def test_stuck_prediction_times_out_with_a_resume_hint(emu, clock) -> None:
    emu.inject("POST /api/v3/wavespeed-ai/z-image/base", "stuck")
    with pytest.raises(TaskTimeoutError) as info:
        run_task(client(clock), PROMPT, width=256, height=256, timeout=20, sleep=clock.sleep, clock=clock)
    pid = info.value.task_id
    assert f"collect it later by its id, {pid}, without paying again" in str(info.value)
    assert Ledger.default().get(pid)["status"] == "timeout"
    assert len(emu.requests_to("POST /api/v3/wavespeed-ai/*")) == 1


def test_collect_recovers_by_id(emu, clock) -> None:
    wave = client(clock)
    prediction = wave.submit(PROMPT, width=256, height=256)
    assert prediction.state is TaskState.QUEUED
    result = wave.collect(prediction.id, sleep=clock.sleep, clock=clock)
    assert result.images == [emu.served_images[-1]] and len(emu.requests_to("POST /api/v3/wavespeed-ai/*")) == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"width": 2048}, "width"), ({"height": 128}, "height"), ({"model": "Flux"}, "model"),
     ({"output_format": "webp"}, "output_format")],
)
def test_bad_input_sends_nothing(emu, clock, kwargs: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        client(clock).submit(PROMPT, **kwargs)
    assert info.value.field == field and emu.requests == []


def test_unknown_prediction_is_named(emu, clock) -> None:
    from zimage_api.errors import NotFoundError

    with pytest.raises(NotFoundError, match="WaveSpeed has no prediction 0123abcd"):
        client(clock).get("0123abcd")
