"""A batch's ``manifest.jsonl`` and the resume plan it gives: which rows are done, which to collect, which to run.

``manifest.jsonl`` in ``--out`` gets one line per row event (appended, flushed and fsynced): ``submitting`` just
before a paid request is sent, ``submitted`` the moment a task id exists, then ``done``, ``failed``, ``timeout`` or
``uncertain`` (the submit may have been charged, but no answer came back). The latest line of a row wins.

Re-running the same command skips rows that are ``done`` (when their pictures are still there), collects rows whose
task was submitted but not finished (from the ledger, by task id) instead of paying for them again, and skips
uncertain rows (a ``submitting`` line with nothing after it is one: the run was killed mid-submit) unless asked to
send them again. A done row whose pictures were deleted is collected again from its task, which is free; a
v1/images row has no task, so it is reported as missing instead of being paid for again unless asked.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..logs import logger, prompt_hash
from ..store.sqlite import NO_PICTURE_STATUSES, Claim, Store
from .batch_rows import Job

__all__ = ["Manifest", "Plan", "plan_rows", "MANIFEST_NAME", "PENDING", "UNCERTAIN"]

MANIFEST_NAME = "manifest.jsonl"
PENDING = ("submitted", "timeout")  # a row in these states has a task that may still deliver: collect, never re-pay
UNCERTAIN = ("uncertain", "submitting")  # a submit that may have been charged without a known task id


class Manifest:
    """``manifest.jsonl``: one JSON line per row event; the latest line of a row (by key) is its state."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Ledger entries of this batch carry ``batch_row = <manifest path>#<row key>``: a lost line is found there.
        self.ledger_prefix = f"{path.resolve()}#"
        self._lock = threading.Lock()
        self.state: dict[str, dict[str, Any]] = {}
        try:
            handle = open(path, encoding="utf-8", errors="replace")
        except (FileNotFoundError, NotADirectoryError):
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

    def ledger_tag(self, job: Job) -> str:
        """The ``batch_row`` tag of the row's task in the ledger."""
        return self.ledger_prefix + job.key

    def pending_task(self, key: str) -> str | None:
        """The task id of a row that was submitted and may still deliver, else ``None``."""
        record = self.state.get(key) or {}
        return record.get("task_id") if record.get("status") in PENDING else None

    def status(self, key: str) -> str | None:
        """The row's latest status, or ``None`` when the manifest has no line for it."""
        return (self.state.get(key) or {}).get("status")

    def pictures_present(self, record: dict[str, Any]) -> bool:
        """Whether every picture of a done row is still on disk (in this folder, or where it was recorded)."""
        return len(self.present_paths(record)) == len(record.get("paths") or [])

    def present_paths(self, record: dict[str, Any]) -> list[Path]:
        """The pictures of a row that are on disk: in this folder first, else where they were recorded."""
        folder = self.path.parent
        present = []
        for text in record.get("paths") or []:
            path = Path(str(text))
            here = folder / path.name
            if here.is_file():
                present.append(here)
            elif path.is_file():
                present.append(path)
        return present

    def write(self, job: Job, status: str, *, task_id: str | None = None, paths: list[Path] | None = None,
              cost_usd: float | None = None, estimated: bool = False, error: str | None = None) -> None:
        """Append the row's new state (flushed and fsynced before it counts)."""
        record: dict[str, Any] = {
            "row": job.row, "key": job.key, "status": status, "provider": job.provider, "params": job.params,
            "prompt_sha256": prompt_hash(job.params["prompt"]), "seed": job.seed, "task_id": task_id,
            "cost_usd": cost_usd, "cost_estimated": estimated, "paths": [str(p) for p in paths or []],
            "error": error, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "fingerprint": job.fingerprint,
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


@dataclass
class Plan:
    """What a run does with each row.

    ``todo`` holds every row to run with the task id to collect, or ``None`` to submit (and pay). ``recollect`` are
    the keys of done rows in ``todo`` whose pictures went missing (collected again from their task, free). Rows in
    ``uncertain`` (a submit that may have been charged) and ``missing`` (done v1/images rows whose pictures are gone)
    are skipped unless the run asks to send them again.
    """

    done: list[Job] = field(default_factory=list)
    todo: list[tuple[Job, str | None]] = field(default_factory=list)
    recollect: set[str] = field(default_factory=set)
    uncertain: list[Job] = field(default_factory=list)
    missing: list[Job] = field(default_factory=list)


def plan_rows(jobs: list[Job], manifest: Manifest, store: Store, *, retry_uncertain: bool = False,
              retry_missing: bool = False) -> Plan:
    """Sort the rows into done, to run (collect or submit), uncertain and missing (see :class:`Plan`).

    The store decides: a row's fingerprint (``job.fingerprint``) finds the task it bought, its kept picture, or a
    claim left uncertain. The manifest is only read for the pictures already written to ``--out`` (the report) and,
    for a row with a random seed (which has no fingerprint before it runs), for what that row did.
    """
    tagged: dict[str, str] = {}
    prefix = manifest.ledger_prefix
    for entry in store.batch_tasks(prefix):  # an indexed lookup by the batch's tag, never the whole store
        tag = entry.get("batch_row")
        if isinstance(tag, str) and tag.startswith(prefix) and entry.get("status") not in NO_PICTURE_STATUSES:
            tagged[tag[len(prefix):]] = str(entry["task_id"])
    plan = Plan()
    for job in jobs:
        record = manifest.state.get(job.key) or {}
        done = record.get("status") == "done"
        if done and manifest.pictures_present(record):
            plan.done.append(job)
            continue
        if job.fingerprint is None:
            _plan_unkeyed(plan, job, record, manifest, tagged, retry_uncertain=retry_uncertain,
                          retry_missing=retry_missing)
            continue
        usable, _spent = store.task_receipt(job.fingerprint)
        claim = store.claim_of(job.fingerprint)
        receipt = store.receipt(job.fingerprint)
        kept = receipt is not None and (receipt.urls is not None or _files_there(receipt.result))
        if usable is not None:
            plan.todo.append((job, usable))  # bought earlier: collected, never paid again
            if done:
                plan.recollect.add(job.key)
        elif kept:
            plan.todo.append((job, None))  # its picture is kept: the engine serves it without a request
            plan.recollect.add(job.key)
        elif claim is not None and _uncertain(claim, job) and not retry_uncertain:
            plan.uncertain.append(job)
        elif done and job.provider == "wavespeed-images" and not retry_missing:
            plan.missing.append(job)  # no copy anywhere: another run would pay again
        else:
            plan.todo.append((job, None))
    return plan


def _files_there(result: dict[str, Any] | None) -> bool:
    """Whether a kept result's pictures are still on disk."""
    paths = (result or {}).get("paths")
    return isinstance(paths, list) and bool(paths) and all(Path(str(p)).is_file() for p in paths)


def _uncertain(claim: Claim, job: Job) -> bool:
    """Whether the row's claim says its paid request may have been charged with no way to tell: left uncertain, or
    left sending by a run that stopped, on ``/v1/images`` (v3 and Qingbo recover such a request by themselves)."""
    if claim.state == "uncertain":
        return True
    return claim.state == "sending" and claim.expired(time.time()) and job.provider == "wavespeed-images"


def _plan_unkeyed(plan: Plan, job: Job, record: dict[str, Any], manifest: Manifest, tagged: dict[str, str], *,
                  retry_uncertain: bool, retry_missing: bool) -> None:
    """A row with a random seed: what it did is known from the manifest and its task's tag in the store."""
    status = record.get("status")
    pending = manifest.pending_task(job.key)
    if status == "done":
        if record.get("task_id"):
            plan.todo.append((job, str(record["task_id"])))  # free: the kept copy, or a new download
            plan.recollect.add(job.key)
        elif retry_missing:
            plan.todo.append((job, None))
        else:
            plan.missing.append(job)
    elif pending:
        plan.todo.append((job, str(pending)))
    elif status in UNCERTAIN:
        if job.key in tagged:
            plan.todo.append((job, tagged[job.key]))  # the id reached the store after all
        elif retry_uncertain:
            plan.todo.append((job, None))
        else:
            plan.uncertain.append(job)
    elif record.get("task_id"):
        plan.todo.append((job, None))  # its task failed (or its result expired): a new task
    else:
        plan.todo.append((job, tagged.get(job.key)))
