"""Receipts: paid results kept on disk under the fingerprint of the request that bought them.

ComfyUI's own cache forgets a result as soon as another workflow runs, and a restart forgets everything, so
queueing the same inputs again would pay again. A receipt makes the same request free: its pictures come back from
disk. A different seed is a different request, which is how an artist asks for a new picture.

Receipts are rows of the task store (:mod:`zimage_api.store`), looked up by fingerprint; pictures bought without a
task are copied to ``<data dir>/receipts``. Set ``ZIMAGE_REUSE_RESULTS=0`` to always send the request.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from .ledger import Ledger
from .logs import logger
from .results import GenerationResult
from .store import NO_PICTURE_STATUSES, Store, default_dir

__all__ = ["Receipts", "fingerprint", "REUSE_ENV"]

REUSE_ENV = "ZIMAGE_REUSE_RESULTS"


def fingerprint(kind: str, **params: Any) -> str:
    """A stable id of a request: its kind and every parameter that changes the picture (never the key)."""
    canonical = json.dumps({"kind": kind, **params}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


class Receipts:
    """Results and task ids by request fingerprint, in the task store. Safe to share between threads.

    ``directory`` is where pictures bought without a task are copied (default: ``<data dir>/receipts``). The
    receipts themselves go to the store of ``ledger`` when given, else to the store of the data folder that holds
    ``directory`` (its parent when it is named ``receipts``, else ``directory`` itself).
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None, *, ledger: Ledger | None = None) -> None:
        if directory is not None:
            self.directory = Path(directory)
        else:
            self.directory = (ledger.directory if ledger is not None else default_dir()) / "receipts"
        self.ledger = ledger
        if ledger is not None:
            self.store = ledger.store
        else:
            self.store = Store(self.directory.parent if self.directory.name == "receipts" else self.directory)

    @staticmethod
    def enabled() -> bool:
        return os.environ.get(REUSE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")

    def load(self, key: str) -> GenerationResult | None:
        """The result bought under ``key``, pictures read back from disk; None when there is none (or a file is
        gone)."""
        if not self.enabled():
            return None
        receipt = self.store.receipt(key)
        if receipt is None or receipt.result is None:
            return None
        record = receipt.result
        try:
            images = [Path(p).read_bytes() for p in record["paths"]]
        except FileNotFoundError:
            return None
        except (OSError, KeyError, TypeError) as err:
            logger.warning("receipt %s is unreadable (%s); the request will be sent", key, type(err).__name__)
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
            paths = list(result.paths) if len(result.paths) == len(result.images) else []
            if not paths:
                self.directory.mkdir(parents=True, exist_ok=True)
                for index, data in enumerate(result.images):
                    ext = "png" if data[:4] == b"\x89PNG" else "jpg" if data[:3] == b"\xff\xd8\xff" else "bin"
                    path = self.directory / f"{key}_{index}.{ext}"
                    path.write_bytes(data)
                    paths.append(str(path))
            record = {k: v for k, v in asdict(result).items() if k not in ("images", "notes")}
            record["paths"] = paths
            record["saved_at"] = _now_text()
            self.store.save_result(key, record)
        except OSError as err:  # a full disk must not fail a run that already succeeded
            logger.warning("could not keep a receipt: %s", err)

    def task_receipt(self, key: str) -> tuple[str | None, str | None]:
        """``(usable, spent)`` for the task submitted earlier under ``key``.

        ``usable`` is its id while it can still give a picture; ``spent`` is its id when the store says it failed,
        was cancelled, expired or is unknown to its server, so the caller submits a new one (under a new
        idempotency key). Both are None when nothing was submitted under ``key``, or reuse is switched off.
        """
        if not self.enabled():
            return None, None
        receipt = self.store.receipt(key)
        if receipt is None or not receipt.task_id:
            return None, None
        task_id = receipt.task_id
        entry = self.ledger.get(task_id) if self.ledger is not None else self.store.task(task_id)
        if str((entry or {}).get("status", "submitted")) in NO_PICTURE_STATUSES:
            return None, task_id
        return task_id, None

    def idempotency_key(self, key: str) -> str:
        """The ``Idempotency-Key`` for submitting ``key`` now: the same on every retry and re-run until the task it
        bought is spent, so a submit whose answer was lost is never paid twice."""
        if not self.enabled():
            return f"zimage-{uuid.uuid4().hex}"  # reuse switched off: every run is a new request
        _usable, spent = self.task_receipt(key)
        idempotency = f"zimage-{key}-{spent or 'first'}"
        try:
            self.store.note_idempotency_key(key, idempotency)
        except OSError as err:  # the key is derived, not stored: a note that cannot be written changes nothing
            logger.warning("could not note an idempotency key: %s", err)
        return idempotency

    def save_task(self, key: str, task_id: str) -> None:
        """Remember that ``key`` was submitted as ``task_id``."""
        if not self.enabled():
            return
        try:
            self.store.save_task(key, task_id)
        except OSError as err:
            logger.warning("could not keep a receipt: %s", err)


def _now_text() -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime())
