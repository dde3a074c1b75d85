"""The one-time import of a 0.1.0 data folder (``ledger.jsonl`` and ``receipts/``) into the task store.

It runs inside the transaction that creates the store's schema, so it happens once even when two processes open a
new store at the same moment. The old files are only read; they stay where they are, untouched.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .logs import logger
from .store import _COLUMNS, _dumps

__all__ = ["import_legacy", "read_ledger"]

_NOT_EXTRA = frozenset({*_COLUMNS, "task_id", "time", "params", "paths", "event"})


def read_ledger(path: Path) -> tuple[dict[str, dict[str, Any]], list[tuple[str, float, Any, str]], int]:
    """Fold a 0.1.0 ledger by task id as 0.1.0 did (later fields win), with its events and the damaged line count."""
    tasks: dict[str, dict[str, Any]] = {}
    events: list[tuple[str, float, Any, str]] = []
    damaged = 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                task_id = str(record["task_id"])
            except (ValueError, KeyError, TypeError):
                damaged += 1
                logger.warning("ledger %s line %d is damaged and was skipped", path, number)
                continue
            record.pop("task_id")
            at = float(record.pop("time", 0) or 0)
            events.append((task_id, at, record.get("status"), _dumps(record)))
            entry = tasks.setdefault(task_id, {})
            entry.update(record)
            entry["time"] = at
    return tasks, events, damaged


def _task_rows(tasks: dict[str, dict[str, Any]]) -> Iterator[tuple[Any, ...]]:
    for task_id, entry in tasks.items():
        params = entry.get("params")
        yield (task_id, *(entry.get(name) for name in _COLUMNS[:4]), None if params is None else _dumps(params),
               entry.get("status"), entry.get("submitted_at"), float(entry.get("time") or 0.0),
               entry.get("batch_row"), _dumps({k: v for k, v in entry.items() if k not in _NOT_EXTRA}))


def _picture_rows(tasks: dict[str, dict[str, Any]]) -> Iterator[tuple[Any, ...]]:
    for task_id, entry in tasks.items():
        paths = entry.get("paths")
        if isinstance(paths, list):
            for index, path in enumerate(paths):
                yield task_id, index, str(path), None


def _import_ledger(conn: sqlite3.Connection, path: Path) -> dict[str, Any]:
    tasks, events, damaged = read_ledger(path)
    conn.executemany("INSERT INTO tasks (task_id, provider, base_url, model, prompt_sha256, params_json, status, "
                     "submitted_at, updated_at, batch_row, extra_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                     "ON CONFLICT (task_id) DO NOTHING", _task_rows(tasks))
    conn.executemany("INSERT OR IGNORE INTO pictures VALUES (?, ?, ?, ?)", _picture_rows(tasks))
    conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", events)
    return {"tasks": len(tasks), "events": len(events), "damaged_lines": damaged, "bytes": path.stat().st_size}


def _import_receipts(conn: sqlite3.Connection, folder: Path) -> dict[str, Any]:
    results: list[tuple[str, str, float]] = []
    task_ids: list[tuple[str, str, float]] = []
    damaged = 0
    for path in sorted(folder.glob("*.json")):
        task_file = path.name.endswith(".task.json")
        key = path.name[:-len(".task.json")] if task_file else path.stem
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(record, dict):
                raise TypeError("not an object")
            created = path.stat().st_mtime
            if task_file:
                task_ids.append((key, str(record["task_id"]), created))
            else:
                results.append((key, _dumps(record), created))
        except (OSError, ValueError, KeyError, TypeError) as err:
            damaged += 1
            logger.warning("receipt %s is unreadable (%s) and was not imported", path.name, type(err).__name__)
    conn.executemany("INSERT INTO receipts (fingerprint, result_json, created_at) VALUES (?, ?, ?) "
                     "ON CONFLICT (fingerprint) DO UPDATE SET result_json = excluded.result_json", results)
    conn.executemany("INSERT INTO receipts (fingerprint, task_id, created_at) VALUES (?, ?, ?) "
                     "ON CONFLICT (fingerprint) DO UPDATE SET task_id = excluded.task_id", task_ids)
    return {"results": len(results), "tasks": len(task_ids), "damaged_files": damaged}


def import_legacy(conn: sqlite3.Connection, directory: Path) -> dict[str, Any]:
    """Import ``directory``'s 0.1.0 files through ``conn`` (inside the caller's transaction); the notes to keep."""
    notes: dict[str, Any] = {}
    started = time.perf_counter()
    ledger = directory / "ledger.jsonl"
    if ledger.is_file():
        notes["imported:ledger.jsonl"] = _import_ledger(conn, ledger)
    receipts = directory / "receipts"
    if receipts.is_dir():
        notes["imported:receipts"] = _import_receipts(conn, receipts)
    for value in notes.values():
        value["at"] = round(time.time(), 3)
    if notes:
        logger.info("imported the 0.1.0 files of %s into the task store in %.1f s (the old files were kept): %s",
                    directory, time.perf_counter() - started, notes)
    return notes
