"""The reproducibility log line, and the redaction safety net: the key never reaches a log record."""

from __future__ import annotations

import logging

import pytest

from tests.runs import run_task
from zimage_api.logs import log_call, logger, prompt_hash, redact


def test_log_call_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="zimage_api"):
        log_call("images.generate", model="Z-Image-Base", guidance_scale=7.5, size="1024x1024",
                 prompt="a mug", status=200, duration=1.234, task_id="t-1")
    line = caplog.records[-1].getMessage()
    assert line == (f"protocol=images.generate model=Z-Image-Base guidance_scale=7.5 size=1024x1024 "
                    f"prompt_sha256={prompt_hash('a mug')} task_id=t-1 status=200 duration=1.23s")
    assert len(prompt_hash("a mug")) == 12 and "a mug" not in line


def test_filter_masks_configured_keys_and_bearer_tokens(monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("WAVESPEED_API_KEY", "ws-secret-0123456789")
    with caplog.at_level(logging.DEBUG, logger="zimage_api"):
        logger.warning("headers were %s", {"Authorization": "Bearer ws-secret-0123456789"})
        logger.info("provider said: invalid key ws-secret-0123456789")
        logger.info("other token Bearer abcdefghij.klmnopqrstuvwxyz")
    text = caplog.text
    assert "ws-secret-0123456789" not in text and "klmnopqrstuvwxyz" not in text
    assert text.count("***") == 3


def test_redact_leaves_ordinary_text_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QINGBO_API_KEY", "abc")  # too short to be a real key: never masks ordinary words
    assert redact("a cabbage and abc") == "a cabbage and abc"
    assert redact("token xyz-123-secret", ("xyz-123-secret",)) == "token ***"


def test_one_reproducibility_line_per_call_for_every_protocol(emu, clock, caplog: pytest.LogCaptureFixture) -> None:
    from zimage_api.providers.openai_images import ImagesClient
    from zimage_api.providers.qingbo_tasks import QingboClient
    from zimage_api.providers.wavespeed_v3 import WaveSpeedClient

    with caplog.at_level(logging.INFO, logger="zimage_api"):
        ImagesClient(sleep=clock.sleep).generate("a mug", guidance_scale=7.5, width=256, height=256, seed=1)
        run_task(WaveSpeedClient(sleep=clock.sleep), "a mug", width=256, height=256, sleep=clock.sleep, clock=clock)
        run_task(QingboClient(sleep=clock.sleep), "a mug", sleep=clock.sleep, clock=clock, cancel_check=lambda: False)
    lines = [r.getMessage() for r in caplog.records if r.name == "zimage_api" and "protocol=" in r.getMessage()]
    digest = prompt_hash("a mug")
    assert [line.split()[0] for line in lines] == ["protocol=images.generate", "protocol=v3.submit",
                                                   "protocol=v3.collect", "protocol=qingbo.submit",
                                                   "protocol=qingbo.collect"]
    assert "guidance_scale=7.5 size=256x256 prompt_sha256=" + digest in lines[0]
    assert "size=256*256" in lines[1] and digest in lines[1] and "task_id=" in lines[1]
    assert all("status=" in line and "duration=" in line for line in lines)
