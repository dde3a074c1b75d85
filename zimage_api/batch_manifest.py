"""A batch's ``manifest.jsonl`` and the resume plan it gives: which rows are done, which to collect, which to run.

``manifest.jsonl`` in ``--out`` gets one line per row event (appended, flushed and fsynced): ``submitted`` the moment
a task id exists, then ``done``, ``failed`` or ``timeout``. The latest line of a row wins. Re-running the same
command skips rows that are ``done`` and collects rows whose task was submitted but not finished (from the ledger,
by task id) instead of paying for them again.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .batch_rows import Job
from .ledger import Ledger
from .logs import logger, prompt_hash

__all__ = ["Manifest", "plan_rows", "MANIFEST_NAME", "PENDING"]

MANIFEST_NAME = "manifest.jsonl"
PENDING = ("submitted", "timeout")  # a row in these states has a task that may still deliver: collect, never re-pay


class Manifest:
    """``manifest.jsonl``: one JSON line per row event; the latest line of a row (by key) is its state."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Ledger entries of this batch carry ``batch_row = <manifest path>#<row key>``: a lost line is found there.
        self.ledger_prefix = f"{path.resolve()}#"
        self._lock = threading.Lock()
        self.state: dict[str, dict[str, Any]] = {}
        self.failed_tasks: Counter[str] = Counter()
        try:
            handle = open(path, encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return
        with handle:
            for number, line in enumerate(handle, 1):
                try:
                    record = json.loads(line)
                    key = record["key"]
                except (ValueError, KeyError, TypeError):
                    if line.strip():
                        logger.warning("manifest %s line %d is damaged and was skipped", path, number)
                    continue
                self.state[key] = record
                if record.get("status") == "failed" and record.get("task_id"):
                    self.failed_tasks[key] += 1

    def ledger_tag(self, job: Job) -> str:
        """The ``batch_row`` tag of the row's task in the ledger."""
        return self.ledger_prefix + job.key

    def pending_task(self, key: str) -> str | None:
        """The task id of a row that was submitted and may still deliver, else ``None``."""
        record = self.state.get(key) or {}
        return record.get("task_id") if record.get("status") in PENDING else None

    def write(self, job: Job, status: str, *, task_id: str | None = None, paths: list[Path] | None = None,
              cost_usd: float | None = None, estimated: bool = False, error: str | None = None) -> None:
        """Append the row's new state (flushed and fsynced before it counts)."""
        record: dict[str, Any] = {
            "row": job.row, "key": job.key, "status": status, "provider": job.provider, "params": job.params,
            "prompt_sha256": prompt_hash(job.params["prompt"]), "seed": job.seed, "task_id": task_id,
            "cost_usd": cost_usd, "cost_estimated": estimated, "paths": [str(p) for p in paths or []],
            "error": error, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if job.extras:
            record["notes"] = job.extras
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            self.state[job.key] = record


def plan_rows(jobs: list[Job], manifest: Manifest, ledger: Ledger) -> tuple[list[Job], list[tuple[Job, str | None]]]:
    """(rows already done, rows to run with the task id to collect or None to submit)."""
    ledger_tasks: dict[str, str] = {}
    prefix = manifest.ledger_prefix
    for entry in ledger.entries().values():
        tag = entry.get("batch_row")
        if isinstance(tag, str) and tag.startswith(prefix) and entry.get("status") not in ("failed", "cancelled",
                                                                                          "expired"):
            ledger_tasks[tag[len(prefix):]] = str(entry["task_id"])
    done: list[Job] = []
    todo: list[tuple[Job, str | None]] = []
    for job in jobs:
        record = manifest.state.get(job.key) or {}
        pending = manifest.pending_task(job.key)
        if record.get("status") == "done":
            done.append(job)
        elif pending:
            todo.append((job, str(pending)))
        elif record.get("task_id"):
            todo.append((job, None))  # its task failed (or its result expired): a new task
        else:
            # No task known to the manifest: the line may have been lost after the ledger got the id.
            todo.append((job, ledger_tasks.get(job.key)))
    return done, todo
