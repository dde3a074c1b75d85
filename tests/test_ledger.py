"""The task ledger: every paid task id on disk at once, folded by id, robust to a damaged last line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from zimage_api.ledger import Ledger, default_dir
from zimage_api.store import open_store


@pytest.mark.usefixtures("store_backend")
def test_submitted_then_finished_folds_by_id(tmp_path: Path) -> None:
    ledger = open_store(tmp_path)
    ledger.record_submitted("t-1", provider="qingbo", model="z-image-turbo", prompt_sha256="abc",
                            params={"aspect_ratio": "1:1"})
    ledger.record_submitted("t-2", provider="wavespeed", model="Z-Image-Base", prompt_sha256="def", params={})
    paths = ledger.save_pictures("t-1", [b"\xff\xd8\xff\xe0jpeg"])
    ledger.record_status("t-1", "completed", urls=["http://x/1.jpg"], paths=paths)
    entries = ledger.entries()
    assert entries["t-1"]["status"] == "completed" and entries["t-1"]["params"] == {"aspect_ratio": "1:1"}
    assert entries["t-1"]["paths"] == [str(tmp_path / "results" / "t-1_0.jpg")]
    assert [e["task_id"] for e in ledger.unfinished()] == ["t-2"]
    assert ledger.local_pictures("t-1") == [b"\xff\xd8\xff\xe0jpeg"]
    assert ledger.local_pictures("t-2") is None
    history = ledger.store.events("t-1")  # every event is kept, in order
    assert [e["status"] for e in history] == ["submitted", "completed"] and history[1]["urls"] == ["http://x/1.jpg"]
    assert len(ledger.store.events("t-2")) == 1 and not (tmp_path / "ledger.jsonl").exists()


def test_damaged_last_line_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # a 0.1.0 ledger whose last write was cut short by a crash, imported on the first open
    (tmp_path / "ledger.jsonl").write_text(json.dumps({"task_id": "t-1", "status": "submitted", "time": 1.0})
                                           + '\n{"task_id": "t-2", "status": "subm', encoding="utf-8")
    ledger = Ledger(tmp_path)
    with caplog.at_level(logging.WARNING, logger="zimage_api"):
        entries = ledger.entries()
    assert list(entries) == ["t-1"]
    assert "line 2 is damaged and was skipped" in caplog.text
    ledger.record_status("t-1", "completed")  # recording after a damaged line still works
    assert ledger.get("t-1")["status"] == "completed"


def test_missing_ledger_is_empty(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "nowhere")
    assert ledger.entries() == {} and ledger.unfinished() == [] and ledger.recent() == []


def test_where_it_lives(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_dir() == tmp_path / "data"  # $ZIMAGE_DATA_DIR (set by the test fixture)
    monkeypatch.delenv("ZIMAGE_DATA_DIR")
    import zimage_api.store.base as store_module

    comfy = tmp_path / "ComfyUI"
    (comfy / "user").mkdir(parents=True)
    fake_pack_file = comfy / "custom_nodes" / "comfyui-zimage" / "zimage_api" / "store" / "base.py"
    with monkeypatch.context() as patched:
        patched.setattr(store_module, "__file__", str(fake_pack_file))
        assert default_dir() == comfy / "user" / "comfyui-zimage"  # the CLI finds the nodes' ledger
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr("sys.platform", "linux")
    assert default_dir() == tmp_path / "xdg" / "comfyui-zimage"


@pytest.mark.usefixtures("store_backend")
def test_recent_is_newest_first(tmp_path: Path) -> None:
    ledger = open_store(tmp_path)
    for n in range(5):
        ledger.append(f"t-{n}", event="submitted", submitted_at=1000 + n, status="submitted")
    assert [e["task_id"] for e in ledger.recent(3)] == ["t-4", "t-3", "t-2"]


@pytest.mark.usefixtures("store_backend")
def test_killed_mid_poll_then_recovered_from_the_ledger(emu, clock, isolated_env: Path) -> None:
    """A process killed with SIGKILL while waiting loses nothing: the id is on disk and the result is collected."""
    import io
    import os
    import signal
    import subprocess
    import sys
    import time

    import numpy as np
    from PIL import Image

    from zimage_api.providers.qingbo_tasks import QingboClient

    script = (
        "from tests.runs import run_task\n"
        "from zimage_api.providers.qingbo_tasks import QingboClient\n"
        "run_task(QingboClient(), 'a lighthouse at dawn', aspect_ratio='16:9', timeout=600)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    ledger = Ledger.default()
    try:
        deadline = time.monotonic() + 20
        while (not ledger.unfinished() or not emu.requests_to("GET /v1/tasks/*")) and time.monotonic() < deadline \
                and child.poll() is None:
            time.sleep(0.05)
        # the fake clock stands still, so the child is now polling a task that never finishes
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    unfinished = ledger.unfinished()
    assert len(unfinished) == 1 and unfinished[0]["provider"] == "qingbo"
    task_id = unfinished[0]["task_id"]
    assert len(emu.requests_to("GET /v1/tasks/*")) >= 1  # it was killed mid-poll

    clock.advance(10)  # the task finishes at the provider in the meantime
    result = QingboClient(sleep=clock.sleep, now=clock).collect(task_id, sleep=clock.sleep, clock=clock)
    assert len(emu.requests_to("POST /v1/tasks")) == 1  # collected, never re-submitted
    expected = np.asarray(Image.open(io.BytesIO(emu.tasks[task_id].outputs[0])).convert("RGB"))
    got = np.asarray(Image.open(io.BytesIO(result.images[0])).convert("RGB"))
    assert np.array_equal(got, expected) and got.shape[1] / got.shape[0] == pytest.approx(16 / 9, rel=0.02)
    assert ledger.unfinished() == [] and ledger.get(task_id)["status"] == "completed"


@pytest.mark.usefixtures("store_backend")
def test_the_ledger_knows_which_server_issued_an_id(emu, clock) -> None:
    from zimage_api.errors import NotFoundError
    from zimage_api.providers.qingbo_tasks import QingboClient

    task = QingboClient(sleep=clock.sleep, now=clock).submit("a lighthouse")
    ledger = Ledger.default()
    assert ledger.get(task.task_id)["base_url"] == emu.url
    from zimage_api.emulator import DEMO_KEY, Emulator

    with Emulator(clock=clock, qingbo_keys={DEMO_KEY}) as other:  # another server: its 404 says nothing
        with pytest.raises(NotFoundError):
            QingboClient(base_url=other.url, sleep=clock.sleep).collect(task.task_id, sleep=clock.sleep,
                                                                        clock=clock)
    assert [e["task_id"] for e in ledger.unfinished()] == [task.task_id]
    emu.reset()  # the issuing server forgot it: it can never be collected, so it is no longer listed
    with pytest.raises(NotFoundError):
        QingboClient(sleep=clock.sleep).collect(task.task_id, sleep=clock.sleep, clock=clock)
    assert ledger.unfinished() == [] and ledger.get(task.task_id)["status"] == "not_found"
