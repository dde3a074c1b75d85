"""The task ledger: every paid task id, recorded the moment the provider issues it.

A thin view of the task store (:mod:`zimage_api.store`, ``zimage.sqlite3`` in the data folder): each call is one
committed transaction, so a task id survives a crash or a killed ComfyUI. Events of a task fold by id (later fields
win). When a task finishes, its result URLs and the local copies of its pictures are recorded, so a paid picture can
be collected again even after the provider's short-lived URL has expired. :mod:`zimage_api.store` says where the
data folder is.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .logs import logger
from .store import (
    DATA_DIR_ENV,
    FINAL_STATUSES,
    UNFINISHED_STATUSES,
    Store,
    default_dir,
    set_default_dir,
)

__all__ = ["Ledger", "default_dir", "set_default_dir", "DATA_DIR_ENV", "UNFINISHED", "FINISHED"]

UNFINISHED = UNFINISHED_STATUSES
FINISHED = FINAL_STATUSES


class Ledger:
    """Paid tasks by id, in the store of one data folder. Safe to share between threads and processes."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_dir()
        self.store = Store(self.directory)
        self.path = self.store.path
        self.results_dir = self.directory / "results"

    @classmethod
    def default(cls) -> "Ledger":
        return cls(default_dir())

    # -- writing --------------------------------------------------------------------------------------------------

    def append(self, task_id: str, **fields: Any) -> None:
        """Record one event for ``task_id``; returns after it is committed to disk."""
        self.store.record(task_id, {"time": round(time.time(), 3), **fields})

    def record_submitted(self, task_id: str, *, provider: str, model: str, prompt_sha256: str,
                         params: dict[str, Any], status: str = "submitted", base_url: str | None = None) -> None:
        """Note a task the moment its id is known. ``params`` must not contain the key (it never does here).

        ``base_url`` is the server that issued the id (ids of an emulator or a gateway mean nothing elsewhere).
        """
        self.append(task_id, event="submitted", provider=provider, model=model, prompt_sha256=prompt_sha256,
                    params=params, submitted_at=round(time.time(), 3), status=status, base_url=base_url)

    def record_status(self, task_id: str, status: str, **fields: Any) -> None:
        """Note a new status (``completed`` with ``urls``/``paths``, ``failed`` with ``error``, ``timeout``...)."""
        self.append(task_id, event="status", status=status, **fields)

    def save_pictures(self, task_id: str, images: Iterable[bytes]) -> list[str]:
        """Keep a local copy of a task's pictures in ``results/``, note them in the store, and return their paths."""
        self.results_dir.mkdir(parents=True, exist_ok=True)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in task_id)
        paths: list[str] = []
        digests: list[str | None] = []
        for index, data in enumerate(images):
            ext = "png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "jpg" if data[:3] == b"\xff\xd8\xff" else "bin"
            path = self.results_dir / f"{safe}_{index}.{ext}"
            tmp = path.with_suffix(path.suffix + ".part")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            paths.append(str(path))
            digests.append(hashlib.sha256(data).hexdigest())
        try:
            self.store.keep_pictures(task_id, paths, digests)
        except OSError as err:  # the files are there; the status update that follows names them again
            logger.warning("could not note the pictures of %s in the task store (%s)", task_id, err)
        return paths

    # -- reading --------------------------------------------------------------------------------------------------

    def entries(self) -> dict[str, dict[str, Any]]:
        """Every task by id, in the order first recorded (a listing: it reads the whole store)."""
        return {entry["task_id"]: entry for entry in self.store.tasks()}

    def get(self, task_id: str) -> dict[str, Any] | None:
        """One task's folded fields, or None (an indexed lookup)."""
        return self.store.task(task_id)

    def unfinished(self) -> list[dict[str, Any]]:
        """Tasks whose last known status is not final, oldest first: paid work that can still be collected."""
        return self.store.unfinished()

    def recent(self, limit: int = 20, *, finished_only: bool = False) -> list[dict[str, Any]]:
        """The last ``limit`` tasks, newest first (only tasks in a final state with ``finished_only``)."""
        return self.store.recent(limit, finished_only=finished_only)

    def batch_tasks(self, prefix: str) -> list[dict[str, Any]]:
        """Tasks tagged with a ``batch_row`` that starts with ``prefix`` (one batch's rows)."""
        return self.store.tasks_of_batch(prefix)

    def durations(self, provider: str, model: str, base_url: str, limit: int = 5) -> list[float]:
        """The ``took`` seconds of the last completed tasks of this model at this server, newest first."""
        return self.store.durations(provider, model, base_url, limit)

    def local_pictures(self, task_id: str) -> list[bytes] | None:
        """The saved pictures of a completed task, or None when there are none (or a file went missing)."""
        entry = self.get(task_id)
        if not entry or entry.get("status") != "completed" or not entry.get("paths"):
            return None
        try:
            return [Path(p).read_bytes() for p in entry["paths"]]
        except OSError:
            return None
