"""The task ledger: every paid task id on disk at once, folded by id, robust to a damaged last line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from zimage_api.ledger import Ledger, default_dir, set_default_dir


def test_submitted_then_finished_folds_by_id(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
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
    lines = (tmp_path / "ledger.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and all(json.loads(line)["task_id"] for line in lines)


def test_damaged_last_line_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ledger = Ledger(tmp_path)
    ledger.record_submitted("t-1", provider="qingbo", model="m", prompt_sha256="a", params={})
    with open(ledger.path, "a", encoding="utf-8") as handle:
        handle.write('{"task_id": "t-2", "status": "subm')  # a write cut short by a crash
    with caplog.at_level(logging.WARNING, logger="zimage_api"):
        entries = ledger.entries()
    assert list(entries) == ["t-1"]
    assert "line 2 is damaged and was skipped" in caplog.text
    ledger.record_status("t-1", "completed")  # appending after a damaged line still works
    assert ledger.get("t-1")["status"] == "completed"


def test_missing_ledger_is_empty(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "nowhere")
    assert ledger.entries() == {} and ledger.unfinished() == [] and ledger.recent() == []


def test_where_it_lives(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_dir() == tmp_path / "data"  # $ZIMAGE_DATA_DIR (set by the test fixture)
    monkeypatch.delenv("ZIMAGE_DATA_DIR")
    set_default_dir(tmp_path / "comfy-user")
    try:
        assert default_dir() == tmp_path / "comfy-user"
    finally:
        set_default_dir(None)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr("sys.platform", "linux")
    assert default_dir() == tmp_path / "xdg" / "comfyui-zimage"


def test_recent_is_newest_first(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    for n in range(5):
        ledger.append(f"t-{n}", event="submitted", submitted_at=1000 + n, status="submitted")
    assert [e["task_id"] for e in ledger.recent(3)] == ["t-4", "t-3", "t-2"]
