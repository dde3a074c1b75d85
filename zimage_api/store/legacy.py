"""The one-time import of a 0.1.0 data folder (``ledger.jsonl`` and ``receipts/``) into the task store.

It runs inside the transaction that creates the store's schema, so it happens once even when two processes open a
new store at the same moment. The old files are only read; they stay where they are, untouched.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from ..logs import logger
from .schema import TASK_COLUMNS, dumps

__all__ = ["import_legacy"]


def _fold_sql() -> str:
    """One upsert per 0.1.0 line, parsed by SQLite: the line's fields fold into its task (later fields win)."""
    columns = ", ".join(TASK_COLUMNS)
    extracted = ", ".join(f"json_extract(j, '$.{name}')" for name in TASK_COLUMNS)
    not_extra = ", ".join(f"'$.{name}'" for name in ("task_id", "time", "params", "event", *TASK_COLUMNS))
    folded = ", ".join(f"{name} = coalesce(excluded.{name}, {name})" for name in TASK_COLUMNS)
    return f"""
        INSERT INTO tasks (task_id, {columns}, params_json, updated_at, extra_json)
        SELECT CAST(json_extract(j, '$.task_id') AS TEXT), {extracted},
               CASE WHEN json_type(j, '$.params') IN ('object', 'array') THEN json_extract(j, '$.params')
                    WHEN json_type(j, '$.params') IN ('text', 'integer', 'real') THEN json_quote(json_extract(
                        j, '$.params')) END,
               coalesce(json_extract(j, '$.time'), 0), json_remove(j, {not_extra})
        FROM (SELECT ?1 AS j) WHERE CASE WHEN json_valid(j) THEN json_type(j, '$.task_id') IS NOT NULL END
        ON CONFLICT (task_id) DO UPDATE SET {folded}, params_json = coalesce(excluded.params_json, params_json),
            updated_at = excluded.updated_at, extra_json = json_patch(extra_json, excluded.extra_json)"""


_EVENT_SQL = """
    INSERT INTO events SELECT CAST(json_extract(j, '$.task_id') AS TEXT), coalesce(json_extract(j, '$.time'), 0),
                              json_extract(j, '$.status'), j
    FROM (SELECT ?1 AS j) WHERE CASE WHEN json_valid(j) THEN json_type(j, '$.task_id') IS NOT NULL END"""


def _warn_damaged(path: Path, lines: list[tuple[str]], numbers: list[int]) -> None:
    """Name the damaged lines (rare: a crash mid-write cuts the last one)."""
    for (line,), number in zip(lines, numbers, strict=True):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or "task_id" not in record:
            logger.warning("ledger %s line %d is damaged and was skipped", path, number)


def _import_ledger(conn: sqlite3.Connection, path: Path) -> dict[str, Any]:
    # SQLite parses the lines: several times faster than json.loads and a fold in Python.
    text = path.read_text(encoding="utf-8", errors="replace").split("\n")
    numbers = [n for n, line in enumerate(text, 1) if line and not line.isspace()]
    lines = [(text[n - 1],) for n in numbers]
    del text
    before = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.executemany(_fold_sql(), lines)
    conn.executemany(_EVENT_SQL, lines)
    events = conn.execute("SELECT count(*) FROM events").fetchone()[0] - before
    # The paths of each task's folded record are its pictures (a later list replaces an earlier one).
    conn.execute("INSERT OR IGNORE INTO pictures SELECT task_id, key, value, NULL FROM tasks, "
                 "json_each(tasks.extra_json, '$.paths') WHERE json_type(tasks.extra_json, '$.paths') = 'array'")
    conn.execute("UPDATE tasks SET extra_json = json_remove(extra_json, '$.paths') "
                 "WHERE json_type(extra_json, '$.paths') IS NOT NULL")
    if events < len(lines):
        _warn_damaged(path, lines, numbers)
    tasks = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
    return {"tasks": tasks, "events": events, "damaged_lines": len(lines) - events, "bytes": path.stat().st_size}


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
                results.append((key, dumps(record), created))
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
