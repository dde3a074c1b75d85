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


_CHUNK = 5000  # lines decoded in one call: most of the import's time is JSON decoding


def _decode(path: Path, block: list[str], first_number: int) -> tuple[list[str], list[Any]]:
    """The non-empty lines of ``block`` and their values; a damaged line gets None (and a warning)."""
    lines = [line for line in block if line and not line.isspace()]
    try:
        values = json.loads("[" + ",".join(lines) + "]")
        if len(values) == len(lines) and all(type(v) is dict and "task_id" in v for v in values):
            return lines, values
    except ValueError:
        pass
    lines, values = [], []
    for number, line in enumerate(block, first_number):
        if not line or line.isspace():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        if not isinstance(value, dict) or "task_id" not in value:
            logger.warning("ledger %s line %d is damaged and was skipped", path, number)
            value = None
        lines.append(line)
        values.append(value)
    return lines, values


def read_ledger(path: Path) -> tuple[dict[str, dict[str, Any]], list[tuple[str, Any, Any, str]], int]:
    """Fold a 0.1.0 ledger by task id as 0.1.0 did (later fields win), with its events and the damaged line count."""
    tasks: dict[str, dict[str, Any]] = {}
    events: list[tuple[str, Any, Any, str]] = []
    damaged = 0
    text = path.read_text(encoding="utf-8", errors="replace").split("\n")
    entry_of, add_event = tasks.setdefault, events.append
    for start in range(0, len(text), _CHUNK):
        lines, values = _decode(path, text[start:start + _CHUNK], start + 1)
        for line, record in zip(lines, values):
            if record is None:
                damaged += 1
                continue
            task_id = record["task_id"]
            if type(task_id) is not str:
                task_id = str(task_id)
            add_event((task_id, record.get("time") or 0, record.get("status"), line))  # the line itself, kept
            entry_of(task_id, {}).update(record)
    return tasks, events, damaged


def _task_rows(tasks: dict[str, dict[str, Any]]) -> Iterator[tuple[Any, ...]]:
    not_extra = _NOT_EXTRA
    for task_id, entry in tasks.items():
        get = entry.get
        params = get("params")
        yield (task_id, get("provider"), get("base_url"), get("model"), get("prompt_sha256"),
               None if params is None else _dumps(params), get("status"), get("submitted_at"),
               float(get("time") or 0), get("batch_row"),
               _dumps({k: v for k, v in entry.items() if k not in not_extra}))


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
