"""The store's tables, as SQL, and how values are written into them: shared by the store and the import of
0.1.0 files."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["TASK_COLUMNS", "TABLES", "TABLES_2", "TABLES_3", "TABLES_4", "INDEXES", "PG_TABLES", "PG_INDEXES", "dumps"]

TASK_COLUMNS = ("provider", "base_url", "model", "prompt_sha256", "status", "submitted_at", "batch_row")

TABLES = """
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
# Schema 2: claims, and the URLs of a paid result whose download failed (fetched again without paying).
TABLES_2 = """
CREATE TABLE IF NOT EXISTS claims (
    fingerprint TEXT PRIMARY KEY, owner TEXT NOT NULL, state TEXT NOT NULL, claimed_at REAL NOT NULL,
    lease_until REAL NOT NULL, sending_at REAL, detail_json TEXT NOT NULL DEFAULT '{}'
);
ALTER TABLE receipts ADD COLUMN urls_json TEXT;
"""
# Schema 3: what each paid unit costs, reserved before it is sent, and each day's running total (what the daily
# budget is held against: one row, however many units the day paid for).
TABLES_3 = """
CREATE TABLE IF NOT EXISTS spend (
    fingerprint TEXT PRIMARY KEY, provider TEXT NOT NULL, model TEXT, usd REAL NOT NULL, state TEXT NOT NULL,
    at REAL NOT NULL, task_id TEXT, day REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS spend_by_time ON spend(at, state, provider, usd);
CREATE INDEX IF NOT EXISTS spend_by_task ON spend(task_id) WHERE task_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS spend_days (day REAL PRIMARY KEY, usd REAL NOT NULL);
"""
# Schema 4: the provider's limit across processes: one row per paid request in flight, with its holder's lease.
TABLES_4 = """
CREATE TABLE IF NOT EXISTS slots (
    provider TEXT NOT NULL, slot INTEGER NOT NULL, owner TEXT NOT NULL, lease_until REAL NOT NULL,
    PRIMARY KEY (provider, slot)
);
"""
# Made after the import: filling indexed tables row by row is several times slower.
INDEXES = """
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks(status);
CREATE INDEX IF NOT EXISTS tasks_by_age ON tasks(coalesce(submitted_at, updated_at));
CREATE INDEX IF NOT EXISTS tasks_by_batch_row ON tasks(batch_row) WHERE batch_row IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_by_task ON events(task_id);
"""

# The same tables in PostgreSQL, at the current schema in one go: ``seq`` orders rows as they were written (SQLite's
# rowid), times are double precision, and receipts keep their pictures' bytes.
PG_TABLES = """
CREATE TABLE IF NOT EXISTS tasks (
    seq BIGSERIAL UNIQUE, task_id TEXT PRIMARY KEY, provider TEXT, base_url TEXT, model TEXT, prompt_sha256 TEXT,
    params_json TEXT, status TEXT, submitted_at DOUBLE PRECISION, updated_at DOUBLE PRECISION NOT NULL,
    batch_row TEXT, extra_json TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS events (
    seq BIGSERIAL PRIMARY KEY, task_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, status TEXT,
    detail_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pictures (
    task_id TEXT NOT NULL, idx INTEGER NOT NULL, path TEXT NOT NULL, sha256 TEXT, PRIMARY KEY (task_id, idx)
);
CREATE TABLE IF NOT EXISTS receipts (
    fingerprint TEXT PRIMARY KEY, task_id TEXT, result_json TEXT, created_at DOUBLE PRECISION NOT NULL, urls_json TEXT
);
CREATE TABLE IF NOT EXISTS receipt_pictures (
    fingerprint TEXT NOT NULL, idx INTEGER NOT NULL, data BYTEA NOT NULL, PRIMARY KEY (fingerprint, idx)
);
CREATE TABLE IF NOT EXISTS idempotency (
    seq BIGSERIAL UNIQUE, fingerprint TEXT NOT NULL, key TEXT NOT NULL, spent INTEGER NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (fingerprint, key)
);
CREATE TABLE IF NOT EXISTS claims (
    fingerprint TEXT PRIMARY KEY, owner TEXT NOT NULL, state TEXT NOT NULL, claimed_at DOUBLE PRECISION NOT NULL,
    lease_until DOUBLE PRECISION NOT NULL, sending_at DOUBLE PRECISION, detail_json TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS spend (
    fingerprint TEXT PRIMARY KEY, provider TEXT NOT NULL, model TEXT, usd DOUBLE PRECISION NOT NULL,
    state TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, task_id TEXT, day DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS spend_days (day DOUBLE PRECISION PRIMARY KEY, usd DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS slots (
    provider TEXT NOT NULL, slot INTEGER NOT NULL, owner TEXT NOT NULL, lease_until DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (provider, slot)
);
"""
PG_INDEXES = """
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks(status);
CREATE INDEX IF NOT EXISTS tasks_by_age ON tasks((coalesce(submitted_at, updated_at)));
CREATE INDEX IF NOT EXISTS tasks_by_batch_row ON tasks(batch_row) WHERE batch_row IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_by_task ON events(task_id);
CREATE INDEX IF NOT EXISTS spend_by_time ON spend(at, state, provider, usd);
CREATE INDEX IF NOT EXISTS spend_by_task ON spend(task_id) WHERE task_id IS NOT NULL;
"""


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def dumps(value: Any) -> str:
    return _ENCODER.encode(value)
