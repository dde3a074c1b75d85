"""Copying one machine's task store into the shared PostgreSQL store (``zimage store copy``).

Every row goes in with ``INSERT … ON CONFLICT DO NOTHING`` on its natural key, one transaction per batch, so a copy
stopped half-way is finished by running it again, and nothing is ever copied twice:

* tasks with every column, and the history and pictures (paths) of each task the shared store did not hold yet (a
  task it holds already keeps its own history);
* receipts, with the bytes of their pictures read from the files their result names, so that every machine serves
  them (a file that cannot be read is reported, and its receipt is copied without the bytes: it is then served only
  on the machine that has the file);
* Idempotency-Keys with their spent mark, the claims left uncertain (a live claim belongs to the run holding it and
  is not copied), the spend rows, each day's total raised by the rows that were new and not released, and the notes
  of the one-time import of 0.1.0 files.

The source is read in pages by the order it was written in, so the shared store lists the copied tasks, their
events and their Idempotency-Keys in the same order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ImageDecodeError
from .base import StoreError, read_picture
from .postgres import PostgresStore, driver_reason
from .sqlite import Store

__all__ = ["CopyReport", "copy_store", "BATCH_ROWS", "BATCH_RECEIPTS"]

BATCH_ROWS = 500  # rows per transaction (tasks come with their events and pictures)
BATCH_RECEIPTS = 20  # receipts per transaction: their pictures' bytes go with them

_TASK_COLUMNS = ("task_id", "provider", "base_url", "model", "prompt_sha256", "params_json", "status", "submitted_at",
                 "updated_at", "batch_row", "extra_json")
_TASK_TYPES = ("text", "text", "text", "text", "text", "text", "text", "float8", "float8", "text", "text")
_CLAIM_COLUMNS = ("fingerprint", "owner", "state", "claimed_at", "lease_until", "sending_at", "detail_json")
_SPEND_COLUMNS = ("fingerprint", "provider", "model", "usd", "state", "at", "task_id", "day")


@dataclass
class CopyReport:
    """What one copy brought into the shared store (rows that were there already are not counted as copied)."""

    tasks: int = 0
    events: int = 0
    pictures: int = 0  # the copied tasks' local pictures (paths)
    receipts: int = 0
    receipt_pictures: int = 0  # pictures whose bytes went into the shared store with their receipts
    idempotency_keys: int = 0
    uncertain_claims: int = 0
    spend_rows: int = 0
    notes: int = 0  # the notes of a 0.1.0 import
    tasks_there: int = 0  # tasks the shared store held already
    receipts_there: int = 0
    unreadable: list[str] = field(default_factory=list)  # one sentence per receipt copied without its pictures

    def summary(self) -> str:
        """One line: ``copied 12 tasks (40 events), 5 receipts (7 pictures), ...; already there: 0 tasks, ...``."""
        parts = [f"{_count(self.tasks, 'task')} ({_count(self.events, 'event')})",
                 f"{_count(self.receipts, 'receipt')} ({_count(self.receipt_pictures, 'picture')})",
                 _count(self.idempotency_keys, "Idempotency-Key"), _count(self.spend_rows, "spend row")]
        if self.uncertain_claims:
            parts.append(_count(self.uncertain_claims, "uncertain request"))
        return (f"copied {', '.join(parts)}; already there: {_count(self.tasks_there, 'task')}, "
                f"{_count(self.receipts_there, 'receipt')}")


def copy_store(source: Store, target: PostgresStore) -> CopyReport:
    """Copy everything of ``source`` (a machine's SQLite store) that ``target`` does not hold yet into ``target``.

    Safe to run again, and to run after an interruption: a row already in ``target`` is left as it is. Raises
    :class:`StoreError` when either store cannot be used; what was copied before stays copied.
    """
    report = CopyReport()
    try:
        target._read("SELECT 1")
    except StoreError as err:
        raise StoreError(f"The shared task store at {target.address} cannot be used ({_reason(err, target.url)}), so "
                         "nothing was copied; check that the PostgreSQL server is running and that the URL names "
                         "it.") from err
    try:
        _copy_tasks(source, target, report)
        _copy_receipts(source, target, report)
        _copy_idempotency(source, target, report)
        _copy_claims(source, target, report)
        _copy_spend(source, target, report)
        _copy_notes(source, target, report)
    except StoreError as err:
        raise StoreError(f"The copy into {target.address} stopped ({_reason(err, target.url)}) after it "
                         f"{report.summary()}; run it again to copy the rest (nothing is copied twice).") from err
    return report


# -- each kind of row ------------------------------------------------------------------------------------------------


def _copy_tasks(source: Store, target: PostgresStore, report: CopyReport) -> None:
    columns = ", ".join(_TASK_COLUMNS)
    for rows in _pages(source, f"SELECT {source.ROWID}, {columns} FROM tasks WHERE {source.ROWID} > ? "
                               f"ORDER BY {source.ROWID} LIMIT ?"):
        values = [_task_row(row) for row in rows]
        with target._write() as conn:
            new = [row[0] for row in _unnest(conn, "tasks", _TASK_COLUMNS, _TASK_TYPES, values, "task_id",
                                             returning="task_id")]
            report.tasks += len(new)
            report.tasks_there += len(values) - len(new)
            if not new:
                continue
            marks = ", ".join("?" * len(new))
            events = source._read(f"SELECT task_id, at, status, detail_json FROM events WHERE task_id IN ({marks}) "
                                  f"ORDER BY {source.ROWID}", new)
            _unnest(conn, "events", ("task_id", "at", "status", "detail_json"), ("text", "float8", "text", "text"),
                    [(str(t), _real(at) or 0.0, _text(status), _text(detail) or "{}")
                     for t, at, status, detail in events])
            report.events += len(events)
            pictures = source._read(f"SELECT task_id, idx, path, sha256 FROM pictures WHERE task_id IN ({marks})", new)
            report.pictures += len(_unnest(
                conn, "pictures", ("task_id", "idx", "path", "sha256"), ("text", "int", "text", "text"),
                [(str(t), int(idx), str(path), _text(sha)) for t, idx, path, sha in pictures], "task_id, idx",
                returning="idx"))


def _copy_receipts(source: Store, target: PostgresStore, report: CopyReport) -> None:
    for rows in _pages(source, "SELECT fingerprint, fingerprint, task_id, result_json, urls_json, created_at "
                               "FROM receipts WHERE fingerprint > ? ORDER BY fingerprint LIMIT ?",
                       size=BATCH_RECEIPTS, start=""):
        keys = [str(row[0]) for row in rows]
        there = {str(row[0]) for row in target._read("SELECT fingerprint FROM receipts WHERE fingerprint = ANY(?)",
                                                      (keys,))}
        fresh = [row for row in rows if str(row[0]) not in there]
        report.receipts_there += len(rows) - len(fresh)
        if not fresh:
            continue
        # Read before the transaction: the shared store's lock is held only while writing.
        pictures = {str(row[0]): _receipt_pictures(str(row[0]), row[2], report) for row in fresh}
        with target._write() as conn:
            new = {str(row[0]) for row in _unnest(
                conn, "receipts", ("fingerprint", "task_id", "result_json", "urls_json", "created_at"),
                ("text", "text", "text", "text", "float8"),
                [(str(key), _text(task), _text(result), _text(urls), _real(created) or 0.0)
                 for key, task, result, urls, created in fresh], "fingerprint", returning="fingerprint")}
            report.receipts += len(new)
            report.receipts_there += len(fresh) - len(new)
            data = [(key, index, picture) for key in sorted(new) for index, picture in enumerate(pictures[key])]
            if data:
                conn.executemany("INSERT INTO receipt_pictures (fingerprint, idx, data) VALUES (?, ?, ?) "
                                 "ON CONFLICT (fingerprint, idx) DO NOTHING", data)
            report.receipt_pictures += len(data)


def _copy_idempotency(source: Store, target: PostgresStore, report: CopyReport) -> None:
    for rows in _pages(source, f"SELECT {source.ROWID}, fingerprint, key, spent, created_at FROM idempotency "
                               f"WHERE {source.ROWID} > ? ORDER BY {source.ROWID} LIMIT ?"):
        with target._write() as conn:
            report.idempotency_keys += len(_unnest(
                conn, "idempotency", ("fingerprint", "key", "spent", "created_at"), ("text", "text", "int", "float8"),
                [(str(key), str(value), int(bool(spent)), _real(created) or 0.0)
                 for key, value, spent, created in rows], "fingerprint, key", returning="key"))


def _copy_claims(source: Store, target: PostgresStore, report: CopyReport) -> None:
    columns = ", ".join(_CLAIM_COLUMNS)
    for rows in _pages(source, f"SELECT fingerprint, {columns} FROM claims WHERE state = 'uncertain' AND "
                               "fingerprint > ? ORDER BY fingerprint LIMIT ?", start=""):
        with target._write() as conn:
            report.uncertain_claims += len(_unnest(
                conn, "claims", _CLAIM_COLUMNS, ("text", "text", "text", "float8", "float8", "float8", "text"),
                [(str(key), str(owner), str(state), _real(claimed) or 0.0, _real(until) or 0.0, _real(sending),
                  _text(detail) or "{}") for key, owner, state, claimed, until, sending, detail in rows],
                "fingerprint", returning="fingerprint"))


def _copy_spend(source: Store, target: PostgresStore, report: CopyReport) -> None:
    columns = ", ".join(_SPEND_COLUMNS)
    for rows in _pages(source, f"SELECT fingerprint, {columns} FROM spend WHERE fingerprint > ? ORDER BY fingerprint "
                               "LIMIT ?", start=""):
        with target._write() as conn:
            new = _unnest(conn, "spend", _SPEND_COLUMNS,
                          ("text", "text", "text", "float8", "text", "float8", "text", "float8"),
                          [(str(key), str(provider), _text(model), _real(usd) or 0.0, str(state), _real(at) or 0.0,
                            _text(task), _real(day) or 0.0)
                           for key, provider, model, usd, state, at, task, day in rows],
                          "fingerprint", returning="usd, state, day")
            days: dict[float, float] = {}
            for usd, state, day in new:
                if state != "released":
                    days[float(day)] = days.get(float(day), 0.0) + float(usd)
            for day, usd in sorted(days.items()):
                conn.execute("INSERT INTO spend_days (day, usd) VALUES (?, ?) ON CONFLICT (day) DO UPDATE SET "
                             "usd = spend_days.usd + excluded.usd", (day, usd))
            report.spend_rows += len(new)


def _copy_notes(source: Store, target: PostgresStore, report: CopyReport) -> None:
    rows = source._read("SELECT name, value FROM meta WHERE name LIKE 'imported:%' ORDER BY name")
    if rows:
        with target._write() as conn:
            report.notes += len(_unnest(conn, "meta", ("name", "value"), ("text", "text"),
                                        [(str(name), str(value)) for name, value in rows], "name",
                                        returning="name"))


# -- reading and writing -----------------------------------------------------------------------------------------------


def _pages(source: Store, sql: str, *, size: int = BATCH_ROWS, start: Any = 0) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of ``sql`` page by page; its first column is the key it pages on (``key > ? ... LIMIT ?``), the
    others are the rows given."""
    after = start
    while True:
        rows = source._read(sql, (after, size))
        if not rows:
            return
        yield [tuple(row[1:]) for row in rows]
        if len(rows) < size:
            return
        after = rows[-1][0]


def _unnest(conn: Any, table: str, columns: Sequence[str], types: Sequence[str], rows: Sequence[Sequence[Any]],
            key: str = "", *, returning: str = "") -> list[tuple[Any, ...]]:
    """Insert ``rows`` in one statement (one array per column, so the SQL is the same for any number of rows); with
    ``key``, rows whose key is there already are skipped. The ``returning`` values of the rows inserted."""
    if not rows:
        return []
    arrays = ", ".join(f"?::{kind}[]" for kind in types)
    sql = f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest({arrays})"
    if key:
        sql += f" ON CONFLICT ({key}) DO NOTHING"
    if returning:
        sql += f" RETURNING {returning}"
    cursor = conn.execute(sql, [list(column) for column in zip(*rows, strict=True)])
    return [tuple(row) for row in cursor.fetchall()] if returning else []


def _receipt_pictures(key: str, result: Any, report: CopyReport) -> list[bytes]:
    """The bytes of a receipt's pictures, read from the files its result names; none (and a sentence in the
    report) when one of them cannot be read: a receipt serves all its pictures or none."""
    try:
        record = json.loads(result) if result else None
    except ValueError:
        record = None
    paths = record.get("paths") if isinstance(record, dict) else None
    if not isinstance(paths, list):
        return []
    pictures = []
    for path in paths:
        try:
            pictures.append(read_picture(Path(str(path))))
        except (OSError, ImageDecodeError) as err:
            why = "not a picture" if isinstance(err, ImageDecodeError) else (err.strerror or type(err).__name__)
            report.unreadable.append(f"The receipt {key[:16]} was copied without its pictures: {path} cannot be read "
                                     f"({why}), so only this machine serves it.")
            return []
    return pictures


def _task_row(row: Sequence[Any]) -> tuple[Any, ...]:
    task_id, provider, base_url, model, prompt, params, status, submitted, updated, batch_row, extra = row
    return (str(task_id), _text(provider), _text(base_url), _text(model), _text(prompt), _text(params), _text(status),
            _real(submitted), _real(updated) or 0.0, _text(batch_row), _text(extra) or "{}")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _real(value: Any) -> float | None:
    """A time or an amount as PostgreSQL's double precision takes it (SQLite keeps whatever it was given)."""
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _reason(err: BaseException, url: str) -> str:
    """The underlying error in a few words: the driver's or the file's, else the store's own message (never the
    URL's password)."""
    cause = err.__cause__ if isinstance(err.__cause__, Exception) else err
    return driver_reason(cause, url)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
