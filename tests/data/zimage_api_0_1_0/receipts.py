"""Receipts: paid results kept on disk under the fingerprint of the request that bought them.

ComfyUI's own cache forgets a result as soon as another workflow runs, and a restart forgets everything, so
queueing the same inputs again would pay again. A receipt makes the same request free: its pictures come back from
disk. A different seed is a different request, which is how an artist asks for a new picture.

Receipts live in ``<data dir>/receipts`` (see :mod:`zimage_api.ledger` for the data dir). Set
``ZIMAGE_REUSE_RESULTS=0`` to always send the request.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from .ledger import Ledger, default_dir
from .logs import logger
from .results import GenerationResult

__all__ = ["Receipts", "fingerprint", "REUSE_ENV"]

REUSE_ENV = "ZIMAGE_REUSE_RESULTS"


def fingerprint(kind: str, **params: Any) -> str:
    """A stable id of a request: its kind and every parameter that changes the picture (never the key)."""
    canonical = json.dumps({"kind": kind, **params}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


class Receipts:
    """Results by request fingerprint, on disk. Safe to share between threads (each receipt is one file)."""

    def __init__(self, directory: str | os.PathLike[str] | None = None, *, ledger: Ledger | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_dir() / "receipts"
        self.ledger = ledger

    @staticmethod
    def enabled() -> bool:
        return os.environ.get(REUSE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")

    def load(self, key: str) -> GenerationResult | None:
        """The result bought under ``key``, read back from disk; None when there is none (or a file is gone)."""
        if not self.enabled():
            return None
        path = self.directory / f"{key}.json"
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            images = [Path(p).read_bytes() for p in record["paths"]]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as err:
            logger.warning("receipt %s is unreadable (%s); the request will be sent", path.name, type(err).__name__)
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

    def save(self, key: str, result: GenerationResult) -> None:
        """Keep ``result`` under ``key``. Pictures already on disk (a task's ledger copies) are not copied again."""
        if not self.enabled():
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            paths = list(result.paths) if len(result.paths) == len(result.images) else []
            if not paths:
                for index, data in enumerate(result.images):
                    ext = "png" if data[:4] == b"\x89PNG" else "jpg" if data[:3] == b"\xff\xd8\xff" else "bin"
                    path = self.directory / f"{key}_{index}.{ext}"
                    path.write_bytes(data)
                    paths.append(str(path))
            record = {k: v for k, v in asdict(result).items() if k not in ("images", "notes")}
            record["paths"] = paths
            record["saved_at"] = _now_text()
            tmp = self.directory / f"{key}.json.part"
            tmp.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, self.directory / f"{key}.json")
        except OSError as err:  # a full disk must not fail a run that already succeeded
            logger.warning("could not keep a receipt: %s", err)


    def task_receipt(self, key: str) -> tuple[str | None, str | None]:
        """``(usable, spent)`` for the task submitted earlier under ``key``.

        ``usable`` is its id while it can still give a picture; ``spent`` is its id when the ledger says it failed,
        was cancelled, expired or is unknown to its server, so the caller submits a new one (under a new idempotency key). Both are None when
        nothing was submitted under ``key``, or reuse is switched off.
        """
        if not self.enabled():
            return None, None
        try:
            task_id = str(json.loads((self.directory / f"{key}.task.json").read_text(encoding="utf-8"))["task_id"])
        except (OSError, ValueError, KeyError, TypeError):
            return None, None
        entry = self.ledger.get(task_id) if self.ledger is not None else None
        if str((entry or {}).get("status", "submitted")) in ("failed", "cancelled", "expired", "not_found"):
            return None, task_id
        return task_id, None

    def idempotency_key(self, key: str) -> str:
        """The ``Idempotency-Key`` for submitting ``key`` now: the same on every retry and re-run until the task it
        bought is spent, so a submit whose answer was lost is never paid twice."""
        if not self.enabled():
            return f"zimage-{uuid.uuid4().hex}"  # reuse switched off: every run is a new request
        _usable, spent = self.task_receipt(key)
        return f"zimage-{key}-{spent or 'first'}"

    def save_task(self, key: str, task_id: str) -> None:
        """Remember that ``key`` was submitted as ``task_id``."""
        if not self.enabled():
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self.directory / f"{key}.task.json.part"
            tmp.write_text(json.dumps({"task_id": task_id, "saved_at": _now_text()}), encoding="utf-8")
            os.replace(tmp, self.directory / f"{key}.task.json")
        except OSError as err:
            logger.warning("could not keep a receipt: %s", err)


def _now_text() -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime())
