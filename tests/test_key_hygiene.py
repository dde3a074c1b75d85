"""The API key never appears in logs, errors, results, the ledger or the files the pack ships."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from tests.runs import run_task
from zimage_api.emulator import Emulator
from zimage_api.errors import ZImageError
from zimage_api.providers.openai_images import ImagesClient
from zimage_api.providers.qingbo_tasks import QingboClient
from zimage_api.providers.wavespeed_v3 import WaveSpeedClient

WS_KEY = "ws-live-7f3a9c2e4b1d8f6a0c5e"
QB_KEY = "qb-live-1b2c3d4e5f60718293a4"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def secret_emu(clock, monkeypatch):
    emulator = Emulator(clock=clock, queue_seconds=0.2, process_seconds=0.5, picture_scale=0.25,
                        wavespeed_keys={WS_KEY}, qingbo_keys={QB_KEY}).start()
    monkeypatch.setenv("WAVESPEED_API_KEY", WS_KEY)
    monkeypatch.setenv("QINGBO_API_KEY", QB_KEY)
    monkeypatch.setenv("WAVESPEED_BASE_URL", emulator.url)
    monkeypatch.setenv("QINGBO_BASE_URL", emulator.url)
    yield emulator
    emulator.stop()


def test_key_is_absent_everywhere_a_user_could_see_it(secret_emu, clock, caplog, isolated_env, monkeypatch) -> None:
    seen: list[str] = []
    with caplog.at_level(logging.DEBUG):  # every logger, urllib3's included
        images = ImagesClient(sleep=clock.sleep).generate("a mug", width=256, height=256, response_format="url")
        seen.append(json.dumps(images.info()))
        v3 = run_task(WaveSpeedClient(sleep=clock.sleep), "a mug", width=256, height=256, sleep=clock.sleep,
                                                         clock=clock)
        seen.append(json.dumps(v3.info()))
        qingbo = run_task(QingboClient(sleep=clock.sleep, now=clock), "a mug", sleep=clock.sleep, clock=clock)
        seen.append(json.dumps(qingbo.info()))
        secret_emu.inject("POST /v1/tasks", "status", status=401,
                          body={"error": {"message": f"invalid key {QB_KEY}", "code": "invalid_api_key"}})
        with pytest.raises(ZImageError) as info:
            QingboClient(sleep=clock.sleep).submit("a mug")
        seen.append(str(info.value))
        seen.append(repr(info.value.body))  # type: ignore[attr-defined]
        monkeypatch.setenv("WAVESPEED_API_KEY", WS_KEY[:-1] + "X")  # a wrong key is still a secret
        with pytest.raises(ZImageError) as info:
            ImagesClient(sleep=clock.sleep).generate("a mug", width=256, height=256)
        seen.append(str(info.value))
    seen.append(caplog.text)
    seen.extend(p.read_text(encoding="utf-8", errors="replace") for p in isolated_env.rglob("*.jsonl"))
    for path in isolated_env.rglob("zimage.sqlite3*"):
        try:  # the store's side files come and go with its connections
            seen.append(path.read_bytes().decode("utf-8", errors="replace"))
        except FileNotFoundError:
            pass
    blob = "\n".join(seen)
    assert "Bearer" in "".join(r.headers.get("authorization", "") for r in secret_emu.requests)  # it was sent
    for secret in (WS_KEY, QB_KEY, WS_KEY[:-1] + "X"):
        assert secret not in blob
    assert "invalid key ***" in blob  # the provider's echo was masked, not dropped


def test_shipped_files_hold_no_key_fields() -> None:
    shipped = [p for p in ROOT.rglob("*") if p.is_file() and p.suffix in {".json", ".md", ".toml", ".example", ".txt"}
               and ".git" not in p.parts and ".venv" not in p.parts]
    assert shipped
    for path in shipped:
        text = path.read_text(encoding="utf-8", errors="replace")
        for word in (WS_KEY, QB_KEY):
            assert word not in text, f"{path} contains {word!r}"
        assert not re.search(r"\bsk-[A-Za-z0-9]{20,}|Bearer [A-Za-z0-9]{24,}", text), f"{path} holds a key"
        if path.suffix == ".json":
            assert '"api_key"' not in text.lower(), f"{path} has an api_key field"
