"""The task store: every paid task id, its history, its local pictures, receipts and Idempotency-Keys, in SQLite.

One file, ``zimage.sqlite3`` in the data folder, opened in WAL mode with a busy timeout, so ComfyUI and the command
line can write at once from two processes. Every write is one short transaction, committed (and synced) before it
returns, so a task id survives a crash or a killed process. Lookups by task id and by request fingerprint are
indexed.

Where the data folder is (first match wins):

1. ``$ZIMAGE_DATA_DIR``;
2. the folder the caller names (the nodes name ComfyUI's ``<ComfyUI>/user/comfyui-zimage``);
3. when the pack is installed in ``<ComfyUI>/custom_nodes/``, ComfyUI's ``user/comfyui-zimage``, so the command
   line outside ComfyUI sees the same store as the nodes;
4. the per-user data folder: ``%LOCALAPPDATA%\\comfyui-zimage`` on Windows, ``~/Library/Application Support/
   comfyui-zimage`` on macOS, ``$XDG_DATA_HOME/comfyui-zimage`` (``~/.local/share/comfyui-zimage``) elsewhere.

The store decides who pays. Before a paid request, its fingerprint is *claimed* (:meth:`Store.claim`): one
transaction that finds the receipt if there is one, else takes the claim, else says who holds it. A claim has an
owner and a lease its holder renews while it works; a claim whose holder died is taken over once its lease expires,
and the state it was left in (``sending``: the paid request may have gone out) tells the next owner how to recover.
Nothing is paid unless the claim, and then the task id, can be written: a store that cannot record raises
:class:`StoreError` before any request.

The first open of a folder that holds the files of version 0.1.0 (``ledger.jsonl``, ``receipts/``) imports them
once, in the same transaction that creates the schema, and leaves them untouched.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..catalog import picture_extension
from ..errors import ImageDecodeError
from ..logs import logger
from .base import (
    DATA_DIR_ENV,
    FINAL_STATUSES,
    LEASE_ENV,
    NO_PICTURE_STATUSES,
    REUSE_ENV,
    UNFINISHED_STATUSES,
    Claim,
    ClaimOutcome,
    LeaseKeeper,
    Price,
    Receipt,
    Slot,
    StoreError,
    claim_lease,
    default_dir,
    new_owner,
    read_picture,
    reuse_enabled,
    write_file,
)
from .schema import INDEXES, TABLES, TABLES_2, TABLES_3, TABLES_4, TASK_COLUMNS, dumps

if TYPE_CHECKING:
    import sqlite3  # imported on first use: the pack's import stays cheap

    from ..results import GenerationResult

__all__ = [
    "Store", "Slot", "StoreError", "Receipt", "Claim", "ClaimOutcome", "Price", "LeaseKeeper", "STORE_NAME",
    "SCHEMA_VERSION", "DATA_DIR_ENV", "LEASE_ENV", "REUSE_ENV", "default_dir", "claim_lease", "new_owner",
    "FINAL_STATUSES",
    "UNFINISHED_STATUSES", "NO_PICTURE_STATUSES", "SQL_TASK_BY_ID", "SQL_RECEIPT_BY_FINGERPRINT", "SQL_CLAIM",
]

STORE_NAME = "zimage.sqlite3"
SCHEMA_VERSION = 4
BUSY_TIMEOUT_MS = 15_000  # a 100,000-task import holds the write lock for a few seconds

_TASK_SELECT = ("SELECT task_id, provider, base_url, model, prompt_sha256, params_json, status, submitted_at, "
                "updated_at, batch_row, extra_json, (SELECT json_group_array(path) FROM (SELECT path FROM pictures p "
                "WHERE p.task_id = tasks.task_id ORDER BY idx)) FROM tasks")
SQL_TASK_BY_ID = _TASK_SELECT + " WHERE task_id = ?"
SQL_DURATIONS = ("SELECT json_extract(extra_json, '$.took') FROM tasks WHERE status = 'completed' AND provider = ? "
                 "AND model = ? AND base_url = ? AND json_extract(extra_json, '$.took') IS NOT NULL "
                 "ORDER BY rowid DESC LIMIT ?")
SQL_RECEIPT_BY_FINGERPRINT = "SELECT task_id, result_json, created_at, urls_json FROM receipts WHERE fingerprint = ?"
SQL_CLAIM = ("SELECT fingerprint, owner, state, claimed_at, lease_until, sending_at, detail_json FROM claims "
             "WHERE fingerprint = ?")
SQL_META = "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value"


_READY_GUARD = threading.Lock()


class Store:
    """The store in one data folder: tasks, receipts, claims. Safe to share between threads and processes.

    Open it once at the entry point and hand it to the engine and the clients. Creating it touches no file; the
    first write creates the folder and the schema, the first read of an absent store reads as empty.
    """

    # The SQL that differs between the backends (the PostgreSQL store overrides these).
    SQL_TASKS = _TASK_SELECT
    SQL_DURATIONS = SQL_DURATIONS
    ROWID = "rowid"  # the column that orders rows as they were written
    WAIT_SECONDS = 0.25  # how often a run waiting on another run looks again (SQLite cannot wake it)

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_dir()
        self.path = self.directory / STORE_NAME
        self.results_dir = self.directory / "results"
        self.receipts_dir = self.directory / "receipts"
        self._ready = False  # this object has checked (and if needed migrated) the schema
        self._damaged_kept: Path | None = None
        self._local = threading.local()  # each thread's write connection, reused: opening one costs more than a claim

    @classmethod
    def default(cls) -> "Store":
        """The store this machine is set to use (the shared PostgreSQL one when a store URL is set)."""
        from . import open_store

        return open_store(default_dir())

    @property
    def store(self) -> "Store":
        """The store itself (scripts written for 0.2 reached it as ``Ledger(...).store``)."""
        return self

    def __repr__(self) -> str:
        return f"Store({str(self.directory)!r})"

    @property
    def where(self) -> str:
        """Where the store is, as messages name it: the SQLite file, or the PostgreSQL server (no password)."""
        return str(self.path)

    def close(self) -> None:
        """Close this thread's connections (the next use opens new ones)."""
        self._drop_reader()

    # -- opening ---------------------------------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether the store file, or 0.1.0 files to import into it, are there (reading creates nothing)."""
        return self.path.exists() or (self.directory / "ledger.jsonl").exists() or \
            (self.directory / "receipts").is_dir()

    def _unusable(self, what: str, reason: object) -> StoreError:
        return StoreError(
            f"The task store {self.path} {what} ({reason}), so nothing was sent: a paid request is made only once "
            f"its record can be kept. Fix the folder's permissions or free some disk space, or set {DATA_DIR_ENV} "
            "to a folder you can write.")

    def _connect(self, *, write: bool = True) -> sqlite3.Connection:
        """A new connection (one per operation: safe in any thread and across fork, and it holds no file open).

        ``write=False`` opens an intact store for reading even where the folder cannot be written.
        """
        import sqlite3

        if self.path.is_dir():
            raise StoreError(f"The task store {self.path} is a folder, not a store file, so nothing was sent. "
                             f"Move it away, or set {DATA_DIR_ENV} to another folder.")
        if write:
            blocker = next((p for p in (self.directory, *self.directory.parents) if p.exists()), None)
            if blocker is not None and not blocker.is_dir():
                raise self._unusable("cannot be created", f"{blocker} is a file, not a folder")
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise self._unusable("cannot be created", err.strerror or type(err).__name__) from err
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except sqlite3.Error as err:
            if not write:
                return self._connect_read_only(err)
            raise self._unusable("cannot be opened", err) from err
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous = FULL")  # a committed task id is on disk, as the old ledger's fsync
            if not self._ready:
                self._set_up(conn, write=write)
        except BaseException as err:
            conn.close()
            if isinstance(err, sqlite3.DatabaseError) and _damaged(err):
                if write:
                    self._keep_damaged(err)
                    return self._connect(write=True)
                raise StoreError(f"The task store {self.path} is damaged ({err}). The next paid run moves it aside "
                                 "(it is kept) and starts a new store.") from err
            if isinstance(err, sqlite3.Error):
                if not write and _read_only(err):
                    return self._connect_read_only(err)
                raise self._unusable("cannot be written" if write else "cannot be read", err) from err
            raise
        return conn

    def _connect_read_only(self, cause: BaseException) -> sqlite3.Connection:
        """An intact store in a folder this process cannot write: opened as an immutable file."""
        import sqlite3

        try:
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro&immutable=1", uri=True,
                                   isolation_level=None)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as err:
            raise StoreError(f"The task store {self.path} cannot be read ({err}).") from cause
        if version > SCHEMA_VERSION:
            conn.close()
            raise self._newer(version)
        return conn

    def _newer(self, version: int) -> StoreError:
        return StoreError(f"The task store {self.path} was written by a newer version of comfyui-zimage "
                          f"(schema {version}, this one knows {SCHEMA_VERSION}), so nothing was sent; update the "
                          "pack.")

    def _set_up(self, conn: sqlite3.Connection, *, write: bool) -> None:
        import sqlite3

        # One thread sets the store up; the others wait here rather than meet its write lock.
        with _READY_GUARD:
            if self._ready:
                return
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise self._newer(version)
            if version < SCHEMA_VERSION:
                if not write:
                    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # damaged? say so on reading
                    return  # an older store reads as it is; the first write migrates it
                self._migrate(conn)
            if write:
                try:  # kept in the file; set after the import, which is faster with the rollback journal
                    conn.execute("PRAGMA journal_mode = WAL")
                except sqlite3.OperationalError as err:  # another process holds a lock: the next open sets it
                    logger.debug("task store %s stays in its journal mode for now (%s)", self.path, err)
                self._ready = True

    def _keep_damaged(self, err: BaseException) -> None:
        """Move a damaged store aside (kept beside, named in the log) so that a new one starts."""
        self._local.conn = None
        self._local.reader = None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        kept = self.path.with_name(f"{STORE_NAME}.damaged-{stamp}")
        if self._damaged_kept is not None and not self.path.exists():
            return
        try:
            os.replace(self.path, kept)
            for suffix in ("-wal", "-shm"):
                side = Path(str(self.path) + suffix)
                if side.exists():
                    os.replace(side, Path(str(kept) + suffix))
        except OSError as move:
            raise StoreError(f"The task store {self.path} is damaged ({err}) and could not be moved aside "
                             f"({move.strerror}), so nothing was sent; move it away by hand.") from err
        self._damaged_kept = kept
        logger.warning("The task store %s was damaged (%s). It was kept as %s and a new store was started; "
                       "the tasks recorded in it are not listed any more.", self.path, err, kept)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA cache_size = -65536")  # 64 MiB for this connection: a large import stays in memory
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have won the race
            if version == 0:
                for statement in filter(str.strip, TABLES.split(";")):
                    conn.execute(statement)
                from .legacy import import_legacy

                notes = import_legacy(conn, self.directory)
                for statement in filter(str.strip, INDEXES.split(";")):
                    conn.execute(statement)
                for name, value in notes.items():
                    conn.execute(SQL_META, (name, dumps(value)))
            if version < 2:
                for statement in filter(str.strip, TABLES_2.split(";")):
                    conn.execute(statement)
            if version < 3:
                for statement in filter(str.strip, TABLES_3.split(";")):
                    conn.execute(statement)
            if version < 4:
                for statement in filter(str.strip, TABLES_4.split(";")):
                    conn.execute(statement)
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _writer(self) -> sqlite3.Connection:
        """This thread's write connection to the store (made on first use, and again after a fork or an error)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = self._connect()
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _drop_writer(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None and self._local.pid == os.getpid():
            conn.close()

    @contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One short write transaction, committed before the block's caller goes on.

        ``durable`` (task ids, receipts) syncs the commit to disk; a claim's bookkeeping survives a killed process
        without it (WAL), and the next durable commit syncs it too.
        """
        import sqlite3

        conn = self._writer()
        try:
            conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            self._drop_writer()
            if isinstance(err, sqlite3.DatabaseError) and _damaged(err):
                raise StoreError(f"The task store {self.path} is damaged ({err}), so nothing was sent; the next "
                                 "run moves it aside (it is kept) and starts a new store.") from err
            raise self._unusable("cannot be written", err) from err

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query; an absent store reads as empty. An unreadable one raises :class:`StoreError`: a listing
        of a store that could not be read must never look empty.

        A thread reads through the connection it already holds (opening one costs more than an indexed lookup).
        """
        import sqlite3

        held = self._held_connection()
        if held is not None and self.path.exists():
            try:
                return held.execute(sql, args).fetchall()
            except sqlite3.Error:
                self._drop_reader()  # opened again below, with the checks of a first read
        if not self.exists():
            blocker = next((p for p in (self.directory, *self.directory.parents) if p.exists()), None)
            if blocker is not None and not blocker.is_dir():
                raise StoreError(f"The task store {self.path} cannot be read: {blocker} is a file, not a folder. "
                                 f"Set {DATA_DIR_ENV} to the folder that holds zimage.sqlite3.")
            return []  # nothing was ever recorded here
        if not self.path.exists():  # only 0.1.0 files: import them now, or read them as empty where we cannot
            try:
                conn = self._connect()
            except StoreError as err:
                logger.warning("%s", err)
                return []
            keep = False
        else:
            conn = self._connect(write=False)
            if not self._ready and conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                conn.close()
                try:  # an older schema is brought up to date first, where the folder can be written
                    self._writer()
                except StoreError as err:
                    logger.debug("task store %s read as it is: %s", self.path, err)
                conn = self._connect(write=False)
            keep = self._ready
        try:
            rows = conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError as err:
            conn.close()
            if "no such table" in str(err) or "no such column" in str(err):
                return []  # an older schema without what is asked for: nothing of it was recorded
            raise StoreError(f"The task store {self.path} cannot be read ({err}).") from err
        except sqlite3.Error as err:
            conn.close()
            raise StoreError(f"The task store {self.path} cannot be read ({err}).") from err
        if keep:
            self._local.reader, self._local.reader_pid = conn, os.getpid()
        else:
            conn.close()
        return rows

    def _held_connection(self) -> sqlite3.Connection | None:
        """This thread's open connection to a store already set up (its writer, else its reader), if any."""
        pid = os.getpid()
        writer: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if writer is not None and self._local.pid == pid:
            return writer
        reader: sqlite3.Connection | None = getattr(self._local, "reader", None)
        if reader is not None and self._local.reader_pid == pid:
            return reader
        return None

    def _drop_reader(self) -> None:
        reader = getattr(self._local, "reader", None)
        self._local.reader = None
        if reader is not None and self._local.reader_pid == os.getpid():
            reader.close()
        self._drop_writer()

    def check_writable(self) -> None:
        """Raise :class:`StoreError` unless a record can be written now (done before a run pays anything)."""
        with self._write(durable=False) as conn:
            conn.execute(SQL_META, ("written_at", dumps(round(time.time(), 3))))

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
                    sets["params_json"] = None if value is None else dumps(value)
                elif name in TASK_COLUMNS:
                    sets[name] = value
                else:
                    extra[name] = value
            sets["extra_json"] = dumps(extra)
            if row is None:
                names = ["task_id", *sets]
                conn.execute(f"INSERT INTO tasks ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                             [task_id, *sets.values()])
            else:
                conn.execute(f"UPDATE tasks SET {', '.join(f'{n} = ?' for n in sets)} WHERE task_id = ?",
                             [*sets.values(), task_id])
            if paths is not None:
                _replace_pictures(conn, task_id, [str(p) for p in paths], None)
            conn.execute("INSERT INTO events (task_id, at, status, detail_json) VALUES (?, ?, ?, ?)",
                         (task_id, at, fields.get("status"), dumps({**fields, **({"paths": paths} if paths
                                                                                  is not None else {})})))

    def keep_pictures(self, task_id: str, paths: Sequence[str], sha256s: Sequence[str | None]) -> None:
        """Note the local copies of a task's pictures (the files are already written)."""
        with self._write() as conn:
            _replace_pictures(conn, task_id, [str(p) for p in paths], list(sha256s))

    def task(self, task_id: str) -> dict[str, Any] | None:
        """One task as a flat dict (``task_id``, ``time``, the columns, every other recorded field, ``paths``)."""
        rows = self._read(self.SQL_TASKS + " WHERE task_id = ?", (task_id,))
        return _entry(rows[0]) if rows else None

    def tasks(self) -> list[dict[str, Any]]:
        """Every task, oldest first: by submission time (tasks submitted side by side reach the store in any order),
        then in the order they were first recorded."""
        return [_entry(row) for row in self._read(
            self.SQL_TASKS + f" ORDER BY coalesce(submitted_at, updated_at), {self.ROWID}")]

    def unfinished(self) -> list[dict[str, Any]]:
        """Tasks whose last status is not final, oldest first: paid work that can still be collected."""
        marks = ", ".join("?" * len(FINAL_STATUSES))
        return [_entry(row) for row in self._read(
            self.SQL_TASKS + f" WHERE status IS NULL OR status NOT IN ({marks}) ORDER BY {self.ROWID}",
            sorted(FINAL_STATUSES))]

    def recent(self, limit: int = 20, *, finished_only: bool = False) -> list[dict[str, Any]]:
        """The last ``limit`` tasks by submission time, newest first (only final ones with ``finished_only``)."""
        where = ""
        args: list[Any] = []
        if finished_only:
            where = f" WHERE status IN ({', '.join('?' * len(FINAL_STATUSES))})"
            args = sorted(FINAL_STATUSES)
        return [_entry(row) for row in self._read(
            self.SQL_TASKS + where + f" ORDER BY coalesce(submitted_at, updated_at) DESC, {self.ROWID} DESC LIMIT ?",
            [*args, int(limit)])]

    def tasks_of_batch(self, prefix: str) -> list[dict[str, Any]]:
        """Tasks whose ``batch_row`` tag starts with ``prefix`` (one batch's rows), by the tag's index."""
        return [_entry(row) for row in self._read(
            self.SQL_TASKS + f" WHERE batch_row >= ? AND batch_row < ? ORDER BY {self.ROWID}",
            (prefix, prefix + "\U0010ffff"))]

    def events(self, task_id: str) -> list[dict[str, Any]]:
        """The history of one task, oldest first: each event's ``at``, ``status`` and recorded fields."""
        rows = self._read(f"SELECT at, status, detail_json FROM events WHERE task_id = ? ORDER BY {self.ROWID}",
                          (task_id,))
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
        if not rows and not self._ready:  # a store of the previous schema that this process cannot migrate
            rows = self._read("SELECT task_id, result_json, created_at, NULL FROM receipts WHERE fingerprint = ?",
                              (fingerprint,))
        return _receipt(fingerprint, rows[0]) if rows else None

    def save_result(self, fingerprint: str, result: Mapping[str, Any]) -> None:
        """Keep a bought result (JSON-able, pictures as paths) under ``fingerprint``; its URLs to fetch are done."""
        with self._write() as conn:
            conn.execute("INSERT INTO receipts (fingerprint, result_json, created_at) VALUES (?, ?, ?) "
                         "ON CONFLICT (fingerprint) DO UPDATE SET result_json = excluded.result_json, urls_json = NULL",
                         (fingerprint, dumps(dict(result)), time.time()))

    def save_urls(self, fingerprint: str, urls: Mapping[str, Any]) -> None:
        """Keep the URLs of a paid result whose download failed (with what the result needs beside its pictures):
        the next run with the same inputs downloads them again instead of paying."""
        with self._write() as conn:
            conn.execute("INSERT INTO receipts (fingerprint, urls_json, created_at) VALUES (?, ?, ?) "
                         "ON CONFLICT (fingerprint) DO UPDATE SET urls_json = excluded.urls_json",
                         (fingerprint, dumps(dict(urls)), time.time()))

    def drop_result(self, fingerprint: str) -> None:
        """Forget a kept result that turned out unusable (its files gone or not pictures); a task id stays."""
        with self._write() as conn:
            conn.execute("UPDATE receipts SET result_json = NULL, urls_json = NULL WHERE fingerprint = ?",
                         (fingerprint,))
            conn.execute("DELETE FROM receipts WHERE fingerprint = ? AND task_id IS NULL", (fingerprint,))

    def save_task(self, fingerprint: str, task_id: str) -> None:
        """Remember that ``fingerprint`` was submitted as ``task_id``."""
        with self._write() as conn:
            conn.execute("INSERT INTO receipts (fingerprint, task_id, created_at) VALUES (?, ?, ?) "
                         "ON CONFLICT (fingerprint) DO UPDATE SET task_id = excluded.task_id",
                         (fingerprint, task_id, time.time()))

    def note_idempotency_key(self, fingerprint: str, key: str) -> None:
        """Record ``key`` as the one in force for ``fingerprint``; the keys it replaces are marked spent."""
        with self._write(durable=False) as conn:
            conn.execute("INSERT INTO idempotency (fingerprint, key, spent, created_at) VALUES (?, ?, 0, ?) "
                         "ON CONFLICT DO NOTHING", (fingerprint, key, time.time()))
            conn.execute("UPDATE idempotency SET spent = 1 WHERE fingerprint = ? AND key != ? AND spent = 0",
                         (fingerprint, key))

    def idempotency_keys(self, fingerprint: str) -> list[tuple[str, bool]]:
        """Every ``(key, spent)`` issued for ``fingerprint``, oldest first."""
        rows = self._read(f"SELECT key, spent FROM idempotency WHERE fingerprint = ? ORDER BY {self.ROWID}",
                          (fingerprint,))
        return [(str(key), bool(spent)) for key, spent in rows]

    # -- the ledger's words ------------------------------------------------------------------------------------------

    def append(self, task_id: str, **fields: Any) -> None:
        """Record one event for ``task_id``; returns after it is committed to disk."""
        self.record(task_id, {"time": round(time.time(), 3), **fields})

    def record_submitted(self, task_id: str, *, provider: str, model: str, prompt_sha256: str,
                         params: dict[str, Any], status: str = "submitted", base_url: str | None = None,
                         **fields: Any) -> None:
        """Note a task the moment its id is known. ``params`` must not contain the key (it never does here).

        ``base_url`` is the server that issued the id (ids of an emulator or a gateway mean nothing elsewhere).
        """
        self.append(task_id, event="submitted", provider=provider, model=model, prompt_sha256=prompt_sha256,
                    params=params, submitted_at=round(time.time(), 3), status=status, base_url=base_url, **fields)

    def record_status(self, task_id: str, status: str, **fields: Any) -> None:
        """Note a new status (``completed`` with ``urls``/``paths``, ``failed`` with ``error``, ``timeout``...)."""
        self.append(task_id, event="status", status=status, **fields)

    def save_pictures(self, task_id: str, images: Iterable[bytes]) -> list[str]:
        """Keep a local copy of a task's pictures in ``results/``, note them in the store, and return their paths."""
        self.results_dir.mkdir(parents=True, exist_ok=True)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in task_id)[:120]
        paths: list[str] = []
        digests: list[str | None] = []
        for index, data in enumerate(images):
            path = self.results_dir / f"{safe}_{index}.{picture_extension(data)}"
            write_file(path, data)
            paths.append(str(path))
            digests.append(hashlib.sha256(data).hexdigest())
        self.keep_pictures(task_id, paths, digests)
        return paths

    def entries(self) -> dict[str, dict[str, Any]]:
        """Every task by id, in the order first recorded (a listing: it reads the whole store)."""
        return {entry["task_id"]: entry for entry in self.tasks()}

    def get(self, task_id: str) -> dict[str, Any] | None:
        """One task's folded fields, or None (an indexed lookup)."""
        return self.task(task_id)

    def batch_tasks(self, prefix: str) -> list[dict[str, Any]]:
        """Tasks tagged with a ``batch_row`` that starts with ``prefix`` (one batch's rows)."""
        return self.tasks_of_batch(prefix)

    def local_pictures(self, task_id: str) -> list[bytes] | None:
        """The saved pictures of a completed task, or None when there are none (or a file went missing)."""
        entry = self.get(task_id)
        if not entry or entry.get("status") != "completed" or not entry.get("paths"):
            return None
        try:
            return [Path(p).read_bytes() for p in entry["paths"]]
        except OSError:
            return None

    # -- receipts: what the same inputs get without paying ---------------------------------------------------------

    def load_result(self, key: str) -> GenerationResult | None:
        """The result bought under ``key``, pictures read back from disk and checked; None when there is none.

        A kept result whose files are gone or are not pictures is dropped, so the caller buys it again.
        """
        from ..results import GenerationResult

        if not reuse_enabled():
            return None
        receipt = self.receipt(key)
        if receipt is None or receipt.result is None:
            return None
        record = receipt.result
        try:
            images = self._receipt_images(key, record)
        except (OSError, KeyError, TypeError, ValueError, ImageDecodeError) as err:
            logger.warning("receipt %s is unusable (%s); it was dropped and the request will be sent", key,
                           type(err).__name__)
            self.drop_result(key)
            return None
        known = {f.name for f in fields(GenerationResult)}
        values = {k: v for k, v in record.items() if k in known and k != "images"}
        if isinstance(values.get("size"), list):
            values["size"] = tuple(values["size"])
        saved_at = record.get("saved_at", "")
        values["notes"] = [*values.get("notes", []),
                           f"served from the local receipt of {saved_at} (no request sent, nothing charged); "
                           "change the seed for a new picture"]
        return GenerationResult(images=images, **values)

    def _receipt_images(self, key: str, record: dict[str, Any]) -> list[bytes]:
        """A receipt's pictures, checked (raises when one is gone or is not a picture)."""
        return [read_picture(Path(p)) for p in record["paths"]]

    def receipt_picture(self, key: str, index: int) -> bytes | None:
        """One picture of the receipt ``key`` kept in the store itself, or None: this store keeps them as files in
        the data folder (the shared PostgreSQL store keeps their bytes, for the machines that did not pay)."""
        return None

    def _keep_pictures_of(self, key: str, result: GenerationResult) -> list[str]:
        """Where a receipt's pictures are kept: files in ``receipts/`` (a task's copies on disk are not copied
        again). Raises :class:`StoreError` when they cannot be written."""
        paths = list(result.paths) if len(result.paths) == len(result.images) else []
        if not paths:
            try:
                self.receipts_dir.mkdir(parents=True, exist_ok=True)
                for index, data in enumerate(result.images):
                    path = self.receipts_dir / f"{key}_{index}.{picture_extension(data)}"
                    write_file(path, data)
                    paths.append(str(path))
            except OSError as err:
                raise self._unusable("cannot keep a picture", err.strerror or err) from err
        return paths

    def keep_result(self, key: str, result: GenerationResult, *, owner: str | None = None) -> None:
        """Keep ``result`` under ``key`` (and release ``owner``'s claim on it, in the same transaction). Pictures
        already on disk (a task's copies) are not copied again.

        Raises :class:`StoreError` when it cannot be kept: the caller says the picture was paid and where it is.
        """
        if not reuse_enabled():
            if owner is not None:
                self.release(key, owner)
            return
        record = {k: v for k, v in asdict(result).items() if k not in ("images", "notes")}
        record["paths"] = self._keep_pictures_of(key, result)
        record["saved_at"] = time.strftime("%Y-%m-%d %H:%M", time.localtime())
        if owner is not None:
            self.finish(key, owner, result=record)
        else:
            self.save_result(key, record)

    def task_receipt(self, key: str) -> tuple[str | None, str | None]:
        """``(usable, spent)`` for the task submitted earlier under ``key``.

        ``usable`` is its id while it can still give a picture; ``spent`` is its id when the store says it failed,
        was cancelled, expired or is unknown to its server, so the caller submits a new one (under a new
        idempotency key). Both are None when nothing was submitted under ``key``, or reuse is switched off.
        """
        if not reuse_enabled():
            return None, None
        receipt = self.receipt(key)
        if receipt is None or not receipt.task_id:
            return None, None
        return _usable_task(self, receipt.task_id)

    def idempotency_key(self, key: str) -> str:
        """The ``Idempotency-Key`` for submitting ``key`` now: the same on every retry and re-run until the task it
        bought is spent, so a submit whose answer was lost is never paid twice. Noted in the store before use."""
        if not reuse_enabled():
            return f"zimage-{uuid.uuid4().hex}"  # reuse switched off: every run is a new request
        _usable, spent = self.task_receipt(key)
        idempotency = f"zimage-{key}-{spent or 'first'}"
        self.note_idempotency_key(key, idempotency)
        return idempotency

    # -- claims: the store decides who pays ------------------------------------------------------------------------

    def claim(self, key: str, owner: str, *, lease: float | None = None, now: float | None = None,
              retry_uncertain: bool = False, price: Price | None = None, budget: float | None = None,
              day_start: float | None = None) -> ClaimOutcome:
        """Decide, in one transaction, what a run that would pay for ``key`` does (see :class:`ClaimOutcome`).

        ``price`` is reserved in the same transaction, and with a ``budget`` (USD since ``day_start``) a claim that
        would pass it is refused (``over_budget``): runs side by side, in any process, cannot overshoot it together.

        Raises :class:`StoreError` when the claim cannot be written: then nothing may be paid.
        """
        # Not synced to disk on its own: a killed process leaves it in the WAL, and the paid request's task id,
        # recorded durably right after, syncs it with it.
        at = time.time() if now is None else now
        until = at + (claim_lease() if lease is None else lease)
        reuse = reuse_enabled()
        with self._write(durable=False) as conn:
            if reuse:
                row = conn.execute(SQL_RECEIPT_BY_FINGERPRINT, (key,)).fetchone()
                if row is not None:
                    receipt = _receipt(key, row)
                    if receipt.result is not None or receipt.urls is not None:
                        return ClaimOutcome("receipt", receipt=receipt)
                    if receipt.task_id and _task_usable(conn, receipt.task_id):
                        return ClaimOutcome("receipt", receipt=receipt)
            held = conn.execute(SQL_CLAIM, (key,)).fetchone()
            previous = _claim(held) if held is not None else None
            if previous is not None and previous.owner != owner:
                if previous.state == "uncertain" and not retry_uncertain:
                    return ClaimOutcome("uncertain", previous=previous)
                if previous.state != "uncertain" and not previous.expired(at):
                    return ClaimOutcome("held", previous=previous)
            day = day_start if day_start is not None else 0.0
            if price is not None and budget is not None:
                spent = _spent(conn, day, key)
                if spent + price.usd > budget + 1e-9:
                    return ClaimOutcome("over_budget", spent=spent)
            if price is not None:
                _unreserve(conn, key)
                conn.execute("INSERT INTO spend (fingerprint, provider, model, usd, state, at, task_id, day) "
                             "VALUES (?, ?, ?, ?, 'reserved', ?, NULL, ?)",
                             (key, price.provider, price.model, float(price.usd), at, day))
                _add_to_day(conn, day, float(price.usd))
            if previous is None:
                conn.execute("INSERT INTO claims (fingerprint, owner, state, claimed_at, lease_until, sending_at, "
                             "detail_json) VALUES (?, ?, 'claimed', ?, ?, NULL, '{}')", (key, owner, at, until))
                return ClaimOutcome("claimed")
            if previous.owner == owner:
                conn.execute("UPDATE claims SET lease_until = ? WHERE fingerprint = ?", (until, key))
                return ClaimOutcome("claimed")
            conn.execute("UPDATE claims SET owner = ?, state = 'claimed', claimed_at = ?, lease_until = ?, "
                         "sending_at = NULL, detail_json = '{}' WHERE fingerprint = ?", (owner, at, until, key))
            # Only a request that may have gone out needs recovering; one the caller sends again on purpose
            # (an uncertain one) does not.
            return ClaimOutcome("claimed", previous=previous if previous.state == "sending" else None)

    def claim_of(self, key: str) -> Claim | None:
        """The claim on ``key`` now, or None."""
        rows = self._read(SQL_CLAIM, (key,))
        return _claim(rows[0]) if rows else None

    def mark_sending(self, key: str, owner: str, *, detail: Mapping[str, Any] | None = None,
                     now: float | None = None) -> None:
        """Note that the paid request for ``key`` goes out now. Raises :class:`StoreError` when the note cannot be
        written or the claim is no longer the caller's: then the request must not be sent."""
        at = time.time() if now is None else now
        with self._write(durable=False) as conn:
            changed = conn.execute(
                "UPDATE claims SET state = 'sending', sending_at = ?, lease_until = CASE WHEN lease_until > ? THEN "
                "lease_until ELSE ? END, detail_json = ? WHERE fingerprint = ? AND owner = ?",
                (at, at + claim_lease(), at + claim_lease(), dumps(dict(detail or {})), key, owner)).rowcount
        if not changed:
            raise StoreError(f"The claim on this picture in {self.where} was taken over by another run (this run "
                             "was paused past its lease), so nothing was sent; queue it again to get that run's "
                             "picture.")

    def renew(self, keys: Sequence[str], owner: str, *, lease: float | None = None) -> int:
        """Extend the caller's live claims on ``keys``; the number still held."""
        if not keys:
            return 0
        until = time.time() + (claim_lease() if lease is None else lease)
        marks = ", ".join("?" * len(keys))
        with self._write(durable=False) as conn:
            slots = [key.split(":", 1)[1] for key in keys if key.startswith("slot:")]
            for provider in slots:
                conn.execute("UPDATE slots SET lease_until = ? WHERE provider = ? AND owner = ?",
                             (until, provider, owner))
            return len(slots) + int(conn.execute(
                f"UPDATE claims SET lease_until = ? WHERE owner = ? AND state != 'uncertain' AND fingerprint IN "
                f"({marks})", (until, owner, *keys)).rowcount)

    def release(self, key: str, owner: str) -> None:
        """Give up the caller's claim on ``key`` (its outcome is recorded, or nothing was paid)."""
        with self._write(durable=False) as conn:
            if conn.execute("DELETE FROM claims WHERE fingerprint = ? AND owner = ?", (key, owner)).rowcount:
                self._changed(conn, key)
                row = conn.execute("SELECT usd, day FROM spend WHERE fingerprint = ? AND state = 'reserved'",
                                   (key,)).fetchone()
                if row is not None:
                    conn.execute("UPDATE spend SET state = 'released', usd = 0 WHERE fingerprint = ?", (key,))
                    _add_to_day(conn, float(row[1]), -float(row[0]))

    def finish(self, key: str, owner: str, *, task_id: str | None = None, result: Mapping[str, Any] | None = None,
               urls: Mapping[str, Any] | None = None, prompt_head: str | None = None) -> None:
        """Record what the caller's paid request bought under ``key`` (a task id, a kept result, or the URLs of a
        result whose download failed) and release the claim, in one durable transaction."""
        with self._write() as conn:
            if urls is not None:
                conn.execute("INSERT INTO receipts (fingerprint, urls_json, created_at) VALUES (?, ?, ?) "
                             "ON CONFLICT (fingerprint) DO UPDATE SET urls_json = excluded.urls_json",
                             (key, dumps(dict(urls)), time.time()))
            if task_id is not None:
                conn.execute("INSERT INTO receipts (fingerprint, task_id, created_at) VALUES (?, ?, ?) "
                             "ON CONFLICT (fingerprint) DO UPDATE SET task_id = excluded.task_id",
                             (key, task_id, time.time()))
            if result is not None:
                conn.execute("INSERT INTO receipts (fingerprint, result_json, created_at) VALUES (?, ?, ?) "
                             "ON CONFLICT (fingerprint) DO UPDATE SET result_json = excluded.result_json, "
                             "urls_json = NULL", (key, dumps(dict(result)), time.time()))
            conn.execute("UPDATE spend SET state = 'spent', task_id = coalesce(?, task_id) WHERE fingerprint = ? AND "
                         "state = 'reserved'", (task_id, key))
            if task_id is not None and prompt_head:
                row = conn.execute("SELECT extra_json FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
                if row is not None:
                    conn.execute("UPDATE tasks SET extra_json = ? WHERE task_id = ?",
                                 (dumps({**json.loads(row[0]), "prompt_head": prompt_head}), task_id))
            conn.execute("DELETE FROM claims WHERE fingerprint = ? AND owner = ?", (key, owner))
            self._changed(conn, key)

    def record_cost(self, task_id: str, usd: float) -> None:
        """Record what a task actually cost once its provider says (0 when it failed or was refunded)."""
        with self._write() as conn:
            for fingerprint, old, state, day in conn.execute(
                    "SELECT fingerprint, usd, state, day FROM spend WHERE task_id = ?", (task_id,)).fetchall():
                counted = 0.0 if state == "released" else float(old)
                conn.execute("UPDATE spend SET usd = ?, state = ? WHERE fingerprint = ?",
                             (float(usd), "spent" if usd > 0 else "released", fingerprint))
                _add_to_day(conn, float(day), float(usd) - counted)

    def spend(self, since: float, until: float | None = None) -> dict[str, float]:
        """USD per provider of the paid units reserved or recorded in ``[since, until)`` (unix seconds): a reserved
        unit at its reserved price, a released one at 0. Receipts served cost nothing and are not in it."""
        rows = self._read("SELECT provider, sum(usd) FROM spend WHERE at >= ? AND at < ? AND state != 'released' "
                          "GROUP BY provider", (since, until if until is not None else math.inf))
        totals = {"wavespeed": 0.0, "qingbo": 0.0}
        totals.update({str(provider): round(float(usd or 0.0), 6) for provider, usd in rows})
        return totals

    def spend_rows(self, since: float, limit: int = 50) -> list[dict[str, Any]]:
        """The most recent paid units since ``since``, newest first, with their local pictures where known."""
        rows = self._read(
            "SELECT s.fingerprint, s.provider, s.model, s.usd, s.state, s.at, s.task_id, r.result_json FROM spend s "
            "LEFT JOIN receipts r ON r.fingerprint = s.fingerprint WHERE s.at >= ? ORDER BY s.at DESC LIMIT ?",
            (since, int(limit)))
        listed = []
        for fingerprint, provider, model, usd, state, at, task_id, result in rows:
            kept = _json_object(result, fingerprint) or {}
            paths = [str(p) for p in kept.get("paths") or []]
            if not paths and task_id:
                paths = [path for path, _sha in self.pictures(str(task_id))]
            listed.append({"fingerprint": fingerprint, "provider": provider, "model": model, "usd": float(usd),
                           "state": state, "at": float(at), "task_id": task_id, "paths": paths})
        return listed

    def expire(self, key: str, owner: str) -> None:
        """End the caller's claim on ``key`` at once but keep its state: a request that may have been charged is
        recovered by the next run (from the provider's history or its Idempotency-Key) instead of being re-sent."""
        with self._write(durable=False) as conn:
            conn.execute("UPDATE claims SET lease_until = 0 WHERE fingerprint = ? AND owner = ?", (key, owner))
            self._changed(conn, key)

    def mark_uncertain(self, key: str, owner: str, detail: Mapping[str, Any]) -> None:
        """Note that the request for ``key`` may have been charged and nothing can tell: the same inputs are not
        sent again unless the caller asks (``retry_uncertain``)."""
        with self._write() as conn:
            conn.execute("UPDATE claims SET state = 'uncertain', lease_until = 0, detail_json = ? "
                         "WHERE fingerprint = ? AND owner = ?", (dumps(dict(detail)), key, owner))
            self._changed(conn, key)

    def uncertain_claims(self) -> list[Claim]:
        """Requests that may have been charged without a known outcome, oldest first."""
        return [_claim(row) for row in self._read(
            "SELECT fingerprint, owner, state, claimed_at, lease_until, sending_at, detail_json FROM claims "
            "WHERE state = 'uncertain' ORDER BY claimed_at")]

    # -- the provider's limit: paid requests in flight, counted across processes ------------------------------------

    def take_slot(self, provider: str, owner: str, limit: int, *, lease: float | None = None,
                  now: float | None = None) -> Slot:
        """Take one of ``provider``'s ``limit`` slots for ``owner`` if one is free (a slot whose holder stopped
        renewing it is free once its lease ends). ``taken`` says whether it was; ``in_flight`` is how many are
        held now, counting this one."""
        at = time.time() if now is None else now
        until = at + (claim_lease() if lease is None else lease)
        with self._write(durable=False) as conn:
            conn.execute("DELETE FROM slots WHERE provider = ? AND lease_until < ?", (provider, at))
            rows = conn.execute("SELECT slot, owner, lease_until FROM slots WHERE provider = ?",
                                (provider,)).fetchall()
            held = {int(row[0]): str(row[1]) for row in rows}
            if owner in held.values():
                return Slot(True, len(held))
            free = next((n for n in range(limit) if n not in held), None)
            if free is None:
                return Slot(False, len(held), min(float(row[2]) for row in rows))
            conn.execute("INSERT INTO slots (provider, slot, owner, lease_until) VALUES (?, ?, ?, ?)",
                         (provider, free, owner, until))
            return Slot(True, len(held) + 1)

    def free_slot(self, provider: str, owner: str) -> None:
        """Give back ``owner``'s slot of ``provider``."""
        with self._write(durable=False) as conn:
            conn.execute("DELETE FROM slots WHERE provider = ? AND owner = ?", (provider, owner))
            self._changed(conn, f"slot:{provider}")

    def slots_in_flight(self, provider: str, *, now: float | None = None) -> int:
        """How many of ``provider``'s slots are held now, in every process of this store."""
        at = time.time() if now is None else now
        rows = self._read("SELECT count(*) FROM slots WHERE provider = ? AND lease_until >= ?", (provider, at))
        return int(rows[0][0]) if rows else 0

    def wait(self, seconds: float, cancelled: threading.Event | None = None) -> None:
        """Wait up to ``seconds`` for another run to release a claim or a slot (or ``cancelled`` to be set).

        SQLite has no way to wake a waiter, so this waits a short while and the caller looks again.
        """
        if cancelled is not None:
            cancelled.wait(min(seconds, self.WAIT_SECONDS))
        else:
            time.sleep(min(seconds, self.WAIT_SECONDS))

    def _changed(self, conn: Any, what: str) -> None:
        """Tell the runs waiting on this store that ``what`` (a claim's fingerprint, ``slot:<provider>``) changed, when
        the transaction commits. SQLite cannot: its waiters look again on their own."""

    # -- the store itself ------------------------------------------------------------------------------------------

    def imports(self) -> dict[str, Any]:
        """What the one-time import of 0.1.0 files brought in (empty when there was nothing to import)."""
        rows = self._read("SELECT name, value FROM meta WHERE name LIKE 'imported:%'")
        return {str(name).split(":", 1)[1]: json.loads(value) for name, value in rows}

    def durations(self, provider: str, model: str, base_url: str, limit: int = 5) -> list[float]:
        """How long the last ``limit`` completed tasks of this model at this server took (their ``took``, seconds),
        newest first: what the polling loop expects of the next one when its progress says nothing."""
        rows = self._read(self.SQL_DURATIONS, (provider, model, base_url, int(limit)))
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
    conn.executemany("INSERT INTO pictures (task_id, idx, path, sha256) VALUES (?, ?, ?, ?)", [
        (task_id, index, path, sha256s[index] if sha256s else known.get(path)) for index, path in enumerate(paths)])


def _receipt(key: str, row: Sequence[Any]) -> Receipt:
    task_id, result, created, urls = row
    return Receipt(key, task_id, _json_object(result, key), float(created), _json_object(urls, key))


def _json_object(text: str | None, key: str) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        logger.warning("receipt %s is damaged and was ignored", key)
        return None
    return value if isinstance(value, dict) else None


def _claim(row: Sequence[Any]) -> Claim:
    key, owner, state, claimed_at, lease_until, sending_at, detail = row
    parsed = _json_object(detail, key) or {}
    return Claim(key, owner, state, float(claimed_at), float(lease_until),
                 None if sending_at is None else float(sending_at), parsed)


def _spent(conn: sqlite3.Connection, day: float, key: str) -> float:
    """What the day's paid units cost or have reserved, beside ``key``'s own reservation (one row: the day's
    running total)."""
    total = conn.execute("SELECT usd FROM spend_days WHERE day = ?", (day,)).fetchone()
    own = conn.execute("SELECT usd FROM spend WHERE fingerprint = ? AND day = ? AND state != 'released'",
                       (key, day)).fetchone()
    return max(float(total[0]) if total else 0.0, 0.0) - (float(own[0]) if own else 0.0)


def _add_to_day(conn: sqlite3.Connection, day: float, usd: float) -> None:
    conn.execute("INSERT INTO spend_days (day, usd) VALUES (?, ?) ON CONFLICT (day) DO UPDATE SET "
                 "usd = spend_days.usd + excluded.usd", (day, usd))


def _unreserve(conn: sqlite3.Connection, key: str) -> None:
    """Take ``key``'s earlier reservation off its day's total (a unit claimed again reserves anew)."""
    row = conn.execute("SELECT usd, day, state FROM spend WHERE fingerprint = ?", (key,)).fetchone()
    if row is not None:
        if row[2] != "released":
            _add_to_day(conn, float(row[1]), -float(row[0]))
        conn.execute("DELETE FROM spend WHERE fingerprint = ?", (key,))


def _task_usable(conn: sqlite3.Connection, task_id: str) -> bool:
    row = conn.execute("SELECT status FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
    return str((row[0] if row else None) or "submitted") not in NO_PICTURE_STATUSES


def _usable_task(store: Store, task_id: str) -> tuple[str | None, str | None]:
    entry = store.task(task_id)
    if str((entry or {}).get("status") or "submitted") in NO_PICTURE_STATUSES:
        return None, task_id
    return task_id, None


def _damaged(err: BaseException) -> bool:
    text = str(err).lower()
    return "not a database" in text or "malformed" in text or "file is encrypted" in text


def _read_only(err: BaseException) -> bool:
    text = str(err).lower()
    return "readonly" in text or "read-only" in text or "unable to open" in text or "disk i/o" in text
