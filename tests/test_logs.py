"""The reproducibility log line, and the redaction safety net: the key never reaches a log record."""

from __future__ import annotations

import logging

import pytest

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
        logger.info("other token Bearer abcdefghijklmnopqrstuvwxyz")
    text = caplog.text
    assert "ws-secret-0123456789" not in text and "abcdefghijklmnopqrstuvwxyz" not in text
    assert text.count("***") == 3


def test_redact_leaves_ordinary_text_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QINGBO_API_KEY", "abc")  # too short to be a real key: never masks ordinary words
    assert redact("a cabbage and abc") == "a cabbage and abc"
    assert redact("token xyz-123-secret", ("xyz-123-secret",)) == "token ***"
