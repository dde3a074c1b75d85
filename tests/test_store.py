"""The task store: two writers at once, a SIGKILL mid-write, the upgrade of a real 0.1.0 folder, indexed lookups."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.data.zimage_api_0_1_0 import ledger as old_ledger
from tests.data.zimage_api_0_1_0 import receipts as old_receipts
from zimage_api.engine import fingerprint
from zimage_api.ledger import Ledger
from zimage_api.results import GenerationResult
from zimage_api.store import open_store
from zimage_api.store.sqlite import (
    FINAL_STATUSES,
    NO_PICTURE_STATUSES,
    SCHEMA_VERSION,
    SQL_RECEIPT_BY_FINGERPRINT,
    SQL_TASK_BY_ID,
    UNFINISHED_STATUSES,
    Store,
)

ROOT = Path(__file__).resolve().parents[1]
def _jpeg() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 120, 40)).save(buffer, "JPEG")
    return buffer.getvalue()


JPEG = _jpeg()  # a paid picture (a receipt is served only when its file is one)

WRITER = """
import sys, time
from pathlib import Path
from zimage_api.ledger import Ledger
folder, name, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
while not (folder / "go").exists():
    time.sleep(0.005)
from zimage_api.store import open_store
ledger = open_store(folder)
for n in range(count):
    task_id = f"{name}-{n}"
    ledger.record_submitted(task_id, provider="qingbo", model="z-image-turbo", prompt_sha256="p",
                            params={"n": n}, base_url="http://127.0.0.1:1")
    if n % 5 == 0:
        ledger.record_status(task_id, "completed", urls=[f"http://127.0.0.1:1/{n}.jpg"])
    print(task_id, flush=True)  # only after the write returned
"""


def _python(script: str, *args: str, **options: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", script, *args], env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **options)


def test_status_words_come_from_the_task_states() -> None:
    assert FINAL_STATUSES == {"completed", "failed", "cancelled", "expired", "not_found", "invalid_id"}
    assert UNFINISHED_STATUSES == {"submitted", "queued", "processing", "created", "timeout", "interrupted"}
    assert NO_PICTURE_STATUSES == FINAL_STATUSES - {"completed"} and not FINAL_STATUSES & UNFINISHED_STATUSES


@pytest.mark.usefixtures("store_backend")
def test_two_processes_writing_at_once_lose_no_id(tmp_path: Path) -> None:
    count = 520
    writers = [_python(WRITER, str(tmp_path), name, str(count)) for name in ("comfyui", "cli")]
    (tmp_path / "go").touch()  # both open a new store and write at the same moment
    outputs = [w.communicate(timeout=120) for w in writers]
    for writer, (_out, err) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, err
    printed = {line for out, _err in outputs for line in out.split()}
    entries = open_store(tmp_path).entries()
    assert len(printed) == 2 * count and set(entries) == printed
    assert entries["cli-5"]["status"] == "completed" and entries["comfyui-6"]["params"] == {"n": 6}
    assert sum(e["status"] == "completed" for e in entries.values()) == 2 * len(range(0, count, 5))


def test_a_sigkill_mid_write_loop_keeps_every_task_recorded_before_it(tmp_path: Path) -> None:
    (tmp_path / "go").touch()
    child = _python(WRITER, str(tmp_path), "killed", "100000")
    assert child.stdout is not None
    seen: list[str] = []
    try:
        while len(seen) < 150:
            line = child.stdout.readline()
            assert line, child.stderr.read() if child.stderr else ""
            seen.append(line.strip())
    finally:
        child.send_signal(signal.SIGKILL)  # wherever it is: inside a transaction, between two, in an fsync
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    seen += [line.strip() for line in child.stdout.read().split()]  # ids printed just before the kill
    ledger = Ledger(tmp_path)
    for task_id in seen:
        entry = ledger.get(task_id)
        assert entry is not None and entry["provider"] == "qingbo" and entry["base_url"] == "http://127.0.0.1:1"
    with sqlite3.connect(ledger.path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    ledger.record_status(seen[-1], "failed")  # the store is still writable
    assert ledger.get(seen[-1])["status"] == "failed"


def _files(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _set(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if v is not None}


def _make_0_1_0_folder(folder: Path, unfinished_id: str, base_url: str) -> dict[str, Any]:
    """A data folder written by the 0.1.0 code itself: three tasks, a picture receipt and two task receipts."""
    ledger = old_ledger.Ledger(folder)
    ledger.record_submitted("task-done", provider="qingbo", model="z-image-turbo", prompt_sha256="aa",
                            params={"aspect_ratio": "1:1"}, base_url=base_url)
    paths = ledger.save_pictures("task-done", [JPEG])
    ledger.record_status("task-done", "completed", urls=[f"{base_url}/files/1.jpg"], paths=paths, cost_quota=85)
    ledger.record_submitted(unfinished_id, provider="qingbo", model="z-image-turbo", prompt_sha256="bb",
                            params={"aspect_ratio": "16:9"}, base_url=base_url)
    ledger.record_status(unfinished_id, "timeout")  # the wait stopped; the task goes on at the provider
    ledger.record_submitted("task-failed", provider="wavespeed", model="Z-Image-Base", prompt_sha256="cc",
                            params={}, base_url=base_url)
    ledger.record_status("task-failed", "failed", error="content policy")
    receipts = old_receipts.Receipts(folder / "receipts", ledger=ledger)
    picture_key = fingerprint("generate", prompt="a mug", seed=42)
    receipts.save(picture_key, GenerationResult(provider="WaveSpeed", protocol="images", model="Z-Image-Base",
                                                images=[JPEG], prompt_sha256="dd", seeds=[42], size=(256, 256)))
    waiting_key, failed_key = fingerprint("qingbo-submit", seed=1), fingerprint("qingbo-submit", seed=2)
    receipts.save_task(waiting_key, unfinished_id)
    receipts.save_task(failed_key, "task-failed")
    return {"entries": ledger.entries(), "picture_key": picture_key, "waiting_key": waiting_key,
            "failed_key": failed_key, "keys": {k: receipts.idempotency_key(k) for k in (waiting_key, failed_key)}}


def test_upgrade_from_0_1_0_loses_nothing(emu, clock, isolated_env: Path, monkeypatch) -> None:
    from zimage_api.providers.qingbo_tasks import QingboClient

    issued = QingboClient(ledger=False, sleep=clock.sleep).submit("a lighthouse at dawn")  # paid under 0.1.0
    old = _make_0_1_0_folder(isolated_env, issued.task_id, emu.url)
    before = _files(isolated_env)
    assert "ledger.jsonl" in before and not (isolated_env / "zimage.sqlite3").exists()

    ledger = Ledger.default()
    receipts = ledger
    assert {k: _set(v) for k, v in ledger.entries().items()} == {k: _set(v) for k, v in old["entries"].items()}
    notes = ledger.store.imports()
    assert notes["ledger.jsonl"]["tasks"] == 3 and notes["ledger.jsonl"]["events"] == 6
    assert (notes["receipts"]["results"], notes["receipts"]["tasks"]) == (1, 2)

    loaded = receipts.load_result(old["picture_key"])  # the same inputs find their receipt: nothing is sent
    assert loaded is not None and loaded.images == [JPEG] and loaded.size == (256, 256) and loaded.seeds == [42]
    assert receipts.task_receipt(old["waiting_key"]) == (issued.task_id, None)
    assert receipts.task_receipt(old["failed_key"]) == (None, "task-failed")
    assert {k: receipts.idempotency_key(k) for k in old["keys"]} == old["keys"]  # a lost answer stays unpaid
    assert ledger.local_pictures("task-done") == [JPEG] and ledger.local_pictures("task-failed") is None
    assert [e["task_id"] for e in ledger.unfinished()] == [issued.task_id]
    assert ledger.get("task-failed")["error"] == "content policy"
    assert [e["status"] for e in ledger.store.events("task-done")] == ["submitted", "completed"]

    clock.advance(10)  # the task paid under 0.1.0 is still collectable by its id
    result = QingboClient(sleep=clock.sleep, now=clock).collect(issued.task_id, sleep=clock.sleep, clock=clock)
    assert result.images == [emu.tasks[issued.task_id].outputs[0]] and len(emu.requests_to("POST /v1/tasks")) == 1
    assert ledger.unfinished() == [] and ledger.get(issued.task_id)["status"] == "completed"

    after = _files(isolated_env)
    assert {name: after[name] for name in before} == before  # the old files are untouched
    again = Ledger.default()
    assert again.store.imports() == notes and len(again.entries()) == 3
    assert [e["status"] for e in again.store.events("task-done")] == ["submitted", "completed"]  # not twice


def test_a_new_folder_imports_nothing_and_reading_creates_nothing(tmp_path: Path) -> None:
    assert Ledger(tmp_path / "new").get("x") is None and not (tmp_path / "new").exists()
    ledger = Ledger(tmp_path / "new")
    ledger.record_submitted("t-1", provider="qingbo", model="m", prompt_sha256="a", params={})
    assert ledger.store.imports() == {} and [e["task_id"] for e in ledger.unfinished()] == ["t-1"]


def test_lookups_by_task_id_and_by_fingerprint_use_an_index(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.record("t-1", {"status": "submitted"})
    store.save_task("f-1", "t-1")
    for sql in (SQL_TASK_BY_ID, SQL_RECEIPT_BY_FINGERPRINT):
        plan = store.query_plan(sql, ("x",))
        searches = [line for line in plan if line.startswith(("SEARCH", "SCAN"))]
        tables = [line for line in searches if "subquery" not in line]
        assert tables and all(line.startswith("SEARCH") and "USING INDEX" in line for line in tables), plan
    plan = " ".join(store.query_plan("SELECT at FROM events WHERE task_id = ?", ("x",)))
    assert "USING INDEX events_by_task" in plan


def test_a_store_from_a_newer_version_is_refused_with_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    Store(tmp_path).record("t-1", {"status": "submitted"})
    with sqlite3.connect(tmp_path / "zimage.sqlite3") as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(OSError, match="newer version of comfyui-zimage"):
        Store(tmp_path).record("t-2", {"status": "submitted"})


@pytest.mark.usefixtures("store_backend")
def test_idempotency_keys_are_kept_and_the_replaced_ones_marked_spent(tmp_path: Path) -> None:
    receipts = open_store(tmp_path)
    key = fingerprint("qingbo-submit", seed=3)
    first = receipts.idempotency_key(key)
    receipts.save_task(key, "t-1")
    receipts.record_status("t-1", "failed")
    second = receipts.idempotency_key(key)
    assert first == f"zimage-{key}-first" and second == f"zimage-{key}-t-1"
    assert receipts.store.idempotency_keys(key) == [(first, True), (second, False)]


def test_writes_are_short_and_readers_are_never_blocked(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.record("t-1", {"status": "submitted"})
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    try:
        started = time.monotonic()
        assert store.task("t-1") is not None  # WAL: a reader does not wait for the writer
        assert time.monotonic() - started < 1.0
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_store_of_the_previous_schema_keeps_every_id_and_receipt(tmp_path: Path) -> None:
    """A store written by 0.2 (schema 1, no claims) is migrated in place on the first write; nothing is lost."""
    from zimage_api.store.sqlite import INDEXES, TABLES

    with sqlite3.connect(tmp_path / "zimage.sqlite3") as db:
        db.executescript(TABLES + INDEXES)
        db.execute("INSERT INTO tasks (task_id, provider, status, updated_at) VALUES ('t-1', 'qingbo', 'queued', 1)")
        db.execute("INSERT INTO receipts (fingerprint, task_id, created_at) VALUES ('f-1', 't-1', 1)")
        db.execute("PRAGMA user_version = 1")
    store = Store(tmp_path)
    assert store.task_receipt("f-1") == ("t-1", None)  # the first use migrates it, where the folder can be written
    assert store.claim("f-2", "me").kind == "claimed"
    with sqlite3.connect(tmp_path / "zimage.sqlite3") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    again = Store(tmp_path)
    assert again.task("t-1")["status"] == "queued" and again.task_receipt("f-1") == ("t-1", None)
    assert again.claim("f-1", "other").kind == "receipt"
