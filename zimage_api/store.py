"""The task store: every paid task id, its history, its local pictures, receipts and Idempotency-Keys, in SQLite.

One file, ``zimage.sqlite3`` in the data folder, opened in WAL mode with a busy timeout, so ComfyUI and the command
line can write at once from two processes. Every write is one short transaction, committed (and synced) before it
returns, so a task id survives a crash or a killed process. Lookups by task id and by request fingerprint are
indexed.

Where the data folder is (first match wins):

1. ``$ZIMAGE_DATA_DIR``;
2. the folder set with :func:`set_default_dir` (inside ComfyUI: ``<ComfyUI>/user/comfyui-zimage``);
3. when the pack is installed in ``<ComfyUI>/custom_nodes/``, ComfyUI's ``user/comfyui-zimage``, so the command
   line outside ComfyUI sees the same store as the nodes;
4. the per-user data folder: ``%LOCALAPPDATA%\\comfyui-zimage`` on Windows, ``~/Library/Application Support/
   comfyui-zimage`` on macOS, ``$XDG_DATA_HOME/comfyui-zimage`` (``~/.local/share/comfyui-zimage``) elsewhere.

The first open of a folder that holds the files of version 0.1.0 (``ledger.jsonl``, ``receipts/``) imports them
once, in the same transaction that creates the schema, and leaves them untouched.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .logs import logger
from .polling import FINAL_STATES, TaskState

if TYPE_CHECKING:
    import sqlite3  # imported on first use: the pack's import stays cheap

__all__ = [
    "Store", "StoreError", "Receipt", "STORE_NAME", "SCHEMA_VERSION", "DATA_DIR_ENV", "default_dir",
    "set_default_dir", "FINAL_STATUSES", "UNFINISHED_STATUSES", "NO_PICTURE_STATUSES", "SQL_TASK_BY_ID",
    "SQL_RECEIPT_BY_FINGERPRINT",
]

DATA_DIR_ENV = "ZIMAGE_DATA_DIR"
STORE_NAME = "zimage.sqlite3"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 15_000  # a 100,000-task import holds the write lock for a few seconds

# The pack's own words beside the provider states: ``submitted`` (id issued, nothing polled yet), ``created``,
# ``timeout``/``interrupted`` (our wait stopped, the task goes on), ``not_found`` (its server forgot it).
FINAL_STATUSES = frozenset({state.value for state in FINAL_STATES} | {"not_found"})
UNFINISHED_STATUSES = frozenset({state.value for state in TaskState if not state.is_final}
                                | {"submitted", "created", "timeout", "interrupted"})
NO_PICTURE_STATUSES = FINAL_STATUSES - {TaskState.COMPLETED.value}  # a task in these can never give a picture

_COLUMNS = ("provider", "base_url", "model", "prompt_sha256", "status", "submitted_at", "batch_row")
_configured_dir: Path | None = None

_TABLES = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, provider TEXT, base_url TEXT, model TEXT, prompt_sha256 TEXT, params_json TEXT,
    status TEXT, submitted_at REAL, updated_at REAL NOT NULL, batch_row TEXT, extra_json TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS events (
    task_id TEXT NOT NULL, at REAL NOT NULL, status TEXT, detail_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pictures (
    task_id TEXT NOT NULL, idx INTEGER NOT NULL, path TEXT NOT NULL, sha256 TEXT, PRIMARY KEY (task_id, idx)
);
CREATE TABLE IF NOT EXISTS receipts (
    fingerprint TEXT PRIMARY KEY, task_id TEXT, result_json TEXT, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    fingerprint TEXT NOT NULL, key TEXT NOT NULL, spent INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
    PRIMARY KEY (fingerprint, key)
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Made after the import: filling indexed tables row by row is several times slower.
_INDEXES = """
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks(status);
CREATE INDEX IF NOT EXISTS tasks_by_age ON tasks(coalesce(submitted_at, updated_at));
CREATE INDEX IF NOT EXISTS tasks_by_batch_row ON tasks(batch_row) WHERE batch_row IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_by_task ON events(task_id);
"""


_TASK_SELECT = ("SELECT task_id, provider, base_url, model, prompt_sha256, params_json, status, submitted_at, "
                "updated_at, batch_row, extra_json, (SELECT json_group_array(path) FROM (SELECT path FROM pictures p "
                "WHERE p.task_id = tasks.task_id ORDER BY idx)) FROM tasks")
SQL_TASK_BY_ID = _TASK_SELECT + " WHERE task_id = ?"
SQL_DURATIONS = ("SELECT json_extract(extra_json, '$.took') FROM tasks WHERE status = 'completed' AND provider = ? "
                 "AND model = ? AND base_url = ? AND json_extract(extra_json, '$.took') IS NOT NULL "
                 "ORDER BY rowid DESC LIMIT ?")
SQL_RECEIPT_BY_FINGERPRINT = "SELECT task_id, result_json, created_at FROM receipts WHERE fingerprint = ?"


class StoreError(OSError):
    """The store could not be read or written (a locked, damaged or newer file). An ``OSError``, like a full disk."""


def set_default_dir(path: str | os.PathLike[str] | None) -> None:
    """Use ``path`` when ``$ZIMAGE_DATA_DIR`` is not set (the nodes point it at ComfyUI's user folder)."""
    global _configured_dir
    _configured_dir = Path(path) if path else None


def default_dir() -> Path:
    """The data folder in force now (see the module docstring)."""
    override = os.environ.get(DATA_DIR_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    if _configured_dir is not None:
        return _configured_dir
    pack = Path(__file__).resolve().parent.parent
    if pack.parent.name == "custom_nodes" and (pack.parent.parent / "user").is_dir():
        return pack.parent.parent / "user" / "comfyui-zimage"
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "comfyui-zimage"


@dataclass(frozen=True)
class Receipt:
    """What was bought under one request fingerprint: a task id, a kept result, or both."""

    fingerprint: str
    task_id: str | None
    result: dict[str, Any] | None
    created_at: float


_ready: set[tuple[int, str]] = set()  # (pid, path) whose schema this process has checked
_ready_guard = threading.Lock()


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


class Store:
    """The store in one data folder. Cheap to create; safe to share between threads and processes."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_dir()
        self.path = self.directory / STORE_NAME

    @classmethod
    def default(cls) -> "Store":
        return cls(default_dir())

    # -- opening ---------------------------------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether the store file, or 0.1.0 files to import into it, are there (reading creates nothing)."""
        return self.path.exists() or (self.directory / "ledger.jsonl").exists() or \
            (self.directory / "receipts").is_dir()

    def _connect(self) -> sqlite3.Connection:
        """A new connection (one per operation: safe in any thread and across fork, and it holds no file open)."""
        import sqlite3

        key = str(self.path)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except sqlite3.Error as err:
            raise StoreError(f"the task store {self.path} cannot be opened ({err})") from err
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous = FULL")  # a committed task id is on disk, as the old ledger's fsync
            if (os.getpid(), key) not in _ready:
                # One thread sets the store up; the others wait here rather than meet its write lock.
                with _ready_guard:
                    if (os.getpid(), key) not in _ready:
                        self._migrate(conn)
                        try:  # kept in the file; set after the import, which is faster with the rollback journal
                            conn.execute("PRAGMA journal_mode = WAL")
                        except sqlite3.OperationalError as err:  # another process holds a lock: the next open sets it
                            logger.debug("task store %s stays in its journal mode for now (%s)", self.path, err)
                        _ready.add((os.getpid(), key))
        except BaseException as err:
            conn.close()
            if isinstance(err, sqlite3.Error):
                raise StoreError(f"the task store {self.path} cannot be opened ({err})") from err
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise StoreError(f"the task store {self.path} was written by a newer version of comfyui-zimage "
                             f"(schema {version}, this one knows {SCHEMA_VERSION}); update the pack")
        conn.execute("PRAGMA cache_size = -65536")  # 64 MiB for this connection: a large import stays in memory
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] == 0:  # another process may have won the race
                for statement in filter(str.strip, _TABLES.split(";")):
                    conn.execute(statement)
                from .store_import import import_legacy  # here: the import needs this module's helpers

                notes = import_legacy(conn, self.directory)
                for statement in filter(str.strip, _INDEXES.split(";")):
                    conn.execute(statement)
                for name, value in notes.items():
                    conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, _dumps(value)))
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction, committed before the block's caller goes on."""
        import sqlite3

        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            raise StoreError(f"the task store {self.path} cannot be written ({err})") from err
        finally:
            conn.close()

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query; an absent store reads as empty, an unreadable one as empty with a warning."""
        import sqlite3

        if not self.exists():
            return []
        try:
            conn = self._connect()
            try:
                return conn.execute(sql, args).fetchall()
            finally:
                conn.close()
        except (sqlite3.Error, OSError) as err:
            logger.warning("task store %s cannot be read (%s)", self.path, err)
            return []

    # -- tasks -----------------------------------------------------------------------------------------------------

    def record(self, task_id: str, fields: Mapping[str, Any]) -> None:
        """Fold one event into ``task_id`` (later fields win) and append it to the task's history.

        ``time`` (default: now) stamps the event; ``paths`` replaces the task's local pictures; ``event`` is kept in
        the history only. Returns once the transaction is committed.
        """
        fields = dict(fields)
        at = float(fields.pop("time", None) or time.time())
        paths = fields.pop("paths", None)
        with self._write() as conn:
            row = conn.execute("SELECT extra_json FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
            extra = json.loads(row[0]) if row else {}
            sets: dict[str, Any] = {"updated_at": at}
            for name, value in fields.items():
                if name == "event":
                    continue
                if name == "params":
                    sets["params_json"] = None if value is None else _dumps(value)
                elif name in _COLUMNS:
                    sets[name] = value
                else:
                    extra[name] = value
            sets["extra_json"] = _dumps(extra)
            if row is None:
                names = ["task_id", *sets]
                conn.execute(f"INSERT INTO tasks ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                             [task_id, *sets.values()])
            else:
                conn.execute(f"UPDATE tasks SET {', '.join(f'{n} = ?' for n in sets)} WHERE task_id = ?",
                             [*sets.values(), task_id])
            if paths is not None:
                _replace_pictures(conn, task_id, [str(p) for p in paths], None)
            conn.execute("INSERT INTO events VALUES (?, ?, ?, ?)",
                         (task_id, at, fields.get("status"), _dumps({**fields, **({"paths": paths} if paths
                                                                                  is not None else {})})))

    def keep_pictures(self, task_id: str, paths: Sequence[str], sha256s: Sequence[str | None]) -> None:
        """Note the local copies of a task's pictures (the files are already written)."""
        with self._write() as conn:
            _replace_pictures(conn, task_id, [str(p) for p in paths], list(sha256s))

    def task(self, task_id: str) -> dict[str, Any] | None:
        """One task as a flat dict (``task_id``, ``time``, the columns, every other recorded field, ``paths``)."""
        rows = self._read(SQL_TASK_BY_ID, (task_id,))
        return _entry(rows[0]) if rows else None

    def tasks(self) -> list[dict[str, Any]]:
        """Every task, oldest first: by submission time (tasks submitted side by side reach the store in any order),
        then in the order they were first recorded."""
        return [_entry(row) for row in self._read(
            _TASK_SELECT + " ORDER BY coalesce(submitted_at, updated_at), rowid")]

    def unfinished(self) -> list[dict[str, Any]]:
        """Tasks whose last status is not final, oldest first: paid work that can still be collected."""
        marks = ", ".join("?" * len(FINAL_STATUSES))
        return [_entry(row) for row in self._read(
            _TASK_SELECT + f" WHERE status IS NULL OR status NOT IN ({marks}) ORDER BY rowid",
            sorted(FINAL_STATUSES))]

    def recent(self, limit: int = 20, *, finished_only: bool = False) -> list[dict[str, Any]]:
        """The last ``limit`` tasks by submission time, newest first (only final ones with ``finished_only``)."""
        where = ""
        args: list[Any] = []
        if finished_only:
            where = f" WHERE status IN ({', '.join('?' * len(FINAL_STATUSES))})"
            args = sorted(FINAL_STATUSES)
        return [_entry(row) for row in self._read(
            _TASK_SELECT + where + " ORDER BY coalesce(submitted_at, updated_at) DESC, rowid DESC LIMIT ?",
            [*args, int(limit)])]

    def tasks_of_batch(self, prefix: str) -> list[dict[str, Any]]:
        """Tasks whose ``batch_row`` tag starts with ``prefix`` (one batch's rows), by the tag's index."""
        return [_entry(row) for row in self._read(
            _TASK_SELECT + " WHERE batch_row >= ? AND batch_row < ? ORDER BY rowid", (prefix, prefix + "\U0010ffff"))]

    def events(self, task_id: str) -> list[dict[str, Any]]:
        """The history of one task, oldest first: each event's ``at``, ``status`` and recorded fields."""
        rows = self._read("SELECT at, status, detail_json FROM events WHERE task_id = ? ORDER BY rowid", (task_id,))
        history = []
        for at, status, detail in rows:
            fields = json.loads(detail)
            fields.pop("task_id", None)  # an imported event keeps its 0.1.0 line whole
            fields.pop("time", None)
            history.append({"at": at, "status": status, **fields})
        return history

    def pictures(self, task_id: str) -> list[tuple[str, str | None]]:
        """The ``(path, sha256)`` of a task's local pictures, in order."""
        rows = self._read("SELECT path, sha256 FROM pictures WHERE task_id = ? ORDER BY idx", (task_id,))
        return [(str(path), sha) for path, sha in rows]

    # -- receipts and Idempotency-Keys -----------------------------------------------------------------------------

    def receipt(self, fingerprint: str) -> Receipt | None:
        """What was bought under ``fingerprint``, or None."""
        rows = self._read(SQL_RECEIPT_BY_FINGERPRINT, (fingerprint,))
        if not rows:
            return None
        task_id, result, created = rows[0]
        try:
            parsed = json.loads(result) if result else None
        except ValueError:
            logger.warning("receipt %s is damaged and was ignored", fingerprint)
            parsed = None
        return Receipt(fingerprint, task_id, parsed if isinstance(parsed, dict) else None, float(created))

    def save_result(self, fingerprint: str, result: Mapping[str, Any]) -> None:
        """Keep a bought result (JSON-able, pictures as paths) under ``fingerprint``."""
        with self._write() as conn:
            conn.execute("INSERT INTO receipts (fingerprint, result_json, created_at) VALUES (?, ?, ?) "
                         "ON CONFLICT (fingerprint) DO UPDATE SET result_json = excluded.result_json",
                         (fingerprint, _dumps(dict(result)), time.time()))

    def save_task(self, fingerprint: str, task_id: str) -> None:
        """Remember that ``fingerprint`` was submitted as ``task_id``."""
        with self._write() as conn:
            conn.execute("INSERT INTO receipts (fingerprint, task_id, created_at) VALUES (?, ?, ?) "
                         "ON CONFLICT (fingerprint) DO UPDATE SET task_id = excluded.task_id",
                         (fingerprint, task_id, time.time()))

    def note_idempotency_key(self, fingerprint: str, key: str) -> None:
        """Record ``key`` as the one in force for ``fingerprint``; the keys it replaces are marked spent."""
        with self._write() as conn:
            conn.execute("INSERT OR IGNORE INTO idempotency VALUES (?, ?, 0, ?)", (fingerprint, key, time.time()))
            conn.execute("UPDATE idempotency SET spent = 1 WHERE fingerprint = ? AND key != ? AND spent = 0",
                         (fingerprint, key))

    def idempotency_keys(self, fingerprint: str) -> list[tuple[str, bool]]:
        """Every ``(key, spent)`` issued for ``fingerprint``, oldest first."""
        rows = self._read("SELECT key, spent FROM idempotency WHERE fingerprint = ? ORDER BY rowid", (fingerprint,))
        return [(str(key), bool(spent)) for key, spent in rows]

    # -- the store itself ------------------------------------------------------------------------------------------

    def imports(self) -> dict[str, Any]:
        """What the one-time import of 0.1.0 files brought in (empty when there was nothing to import)."""
        rows = self._read("SELECT name, value FROM meta WHERE name LIKE 'imported:%'")
        return {str(name).split(":", 1)[1]: json.loads(value) for name, value in rows}

    def durations(self, provider: str, model: str, base_url: str, limit: int = 5) -> list[float]:
        """How long the last ``limit`` completed tasks of this model at this server took (their ``took``, seconds),
        newest first: what the polling loop expects of the next one when its progress says nothing."""
        rows = self._read(SQL_DURATIONS, (provider, model, base_url, int(limit)))
        return [float(row[0]) for row in rows if isinstance(row[0], (int, float)) and row[0] > 0]

    def query_plan(self, sql: str, args: Sequence[Any] = ()) -> list[str]:
        """SQLite's ``EXPLAIN QUERY PLAN`` lines for ``sql`` (for tests and the benchmark)."""
        return [str(row[-1]) for row in self._read("EXPLAIN QUERY PLAN " + sql, args)]


def _entry(row: Sequence[Any]) -> dict[str, Any]:
    task_id, provider, base_url, model, prompt, params, status, submitted, updated, batch_row, extra, paths = row
    entry: dict[str, Any] = {"task_id": task_id, "time": updated}
    for name, value in (("provider", provider), ("base_url", base_url), ("model", model),
                        ("prompt_sha256", prompt), ("status", status), ("submitted_at", submitted),
                        ("batch_row", batch_row)):
        if value is not None:
            entry[name] = value
    if params is not None:
        entry["params"] = json.loads(params)
    entry.update(json.loads(extra))
    pictures = json.loads(paths) if paths else []
    if pictures:
        entry["paths"] = pictures
    return entry


def _replace_pictures(conn: sqlite3.Connection, task_id: str, paths: list[str],
                      sha256s: list[str | None] | None) -> None:
    known = dict(conn.execute("SELECT path, sha256 FROM pictures WHERE task_id = ?", (task_id,)).fetchall())
    conn.execute("DELETE FROM pictures WHERE task_id = ?", (task_id,))
    conn.executemany("INSERT INTO pictures VALUES (?, ?, ?, ?)", [
        (task_id, index, path, sha256s[index] if sha256s else known.get(path)) for index, path in enumerate(paths)])
