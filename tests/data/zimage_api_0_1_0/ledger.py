"""The task ledger: every paid task id, written to disk the moment the provider issues it.

One JSON object per line, appended with flush + fsync, so a task id survives a crash or a killed ComfyUI. Each
line is an event for one task; reading folds the events by task id (later fields win). When a task finishes, its
result URLs and the local copies of its pictures are recorded, so a paid picture can be collected again even after
the provider's short-lived URL has expired.

Where it lives (first match wins):

1. ``$ZIMAGE_DATA_DIR`` (the ledger is ``ledger.jsonl`` in it, pictures in ``results/``);
2. the folder set with :func:`set_default_dir` (inside ComfyUI: ``<ComfyUI>/user/comfyui-zimage``);
3. when the pack is installed in ``<ComfyUI>/custom_nodes/``, ComfyUI's ``user/comfyui-zimage``, so the command
   line outside ComfyUI sees the same ledger as the nodes;
4. the per-user data folder: ``%LOCALAPPDATA%\\comfyui-zimage`` on Windows, ``~/Library/Application Support/
   comfyui-zimage`` on macOS, ``$XDG_DATA_HOME/comfyui-zimage`` (``~/.local/share/comfyui-zimage``) elsewhere.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .logs import logger

__all__ = ["Ledger", "default_dir", "set_default_dir", "DATA_DIR_ENV", "UNFINISHED", "FINISHED"]

DATA_DIR_ENV = "ZIMAGE_DATA_DIR"
UNFINISHED = frozenset({"submitted", "queued", "processing", "created", "timeout", "interrupted"})
FINISHED = frozenset({"completed", "failed", "cancelled", "expired", "not_found"})
_configured_dir: Path | None = None
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


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


def _lock_for(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(str(path), threading.Lock())


class Ledger:
    """An append-only JSON-lines record of tasks, safe to share between threads of one process."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_dir()
        self.path = self.directory / "ledger.jsonl"
        self.results_dir = self.directory / "results"
        self._lock = _lock_for(self.path)

    @classmethod
    def default(cls) -> "Ledger":
        return cls(default_dir())

    # -- writing --------------------------------------------------------------------------------------------------

    def append(self, task_id: str, **fields: Any) -> None:
        """Append one event for ``task_id``; returns after the line is on disk (flush + fsync)."""
        record = {"task_id": task_id, "time": round(time.time(), 3), **fields}
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str) + "\n"
        data = line.encode("utf-8")
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a+b") as handle:
                handle.seek(0, os.SEEK_END)
                if handle.tell() > 0:
                    handle.seek(-1, os.SEEK_END)
                    if handle.read(1) != b"\n":
                        # A line cut short by a crash must not swallow this record.
                        data = b"\n" + data
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())

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
        """Keep a local copy of a task's pictures in ``results/`` and return their paths."""
        self.results_dir.mkdir(parents=True, exist_ok=True)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in task_id)
        paths = []
        for index, data in enumerate(images):
            ext = "png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "jpg" if data[:3] == b"\xff\xd8\xff" else "bin"
            path = self.results_dir / f"{safe}_{index}.{ext}"
            tmp = path.with_suffix(path.suffix + ".part")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            paths.append(str(path))
        return paths

    # -- reading --------------------------------------------------------------------------------------------------

    def entries(self) -> dict[str, dict[str, Any]]:
        """Every task by id, its events folded in order. A corrupt line is skipped with a warning."""
        tasks: dict[str, dict[str, Any]] = {}
        try:
            handle = open(self.path, encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return tasks
        except OSError as err:
            logger.warning("ledger %s cannot be read (%s)", self.path, err)
            return tasks
        with handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    task_id = record["task_id"]
                except (ValueError, KeyError, TypeError):
                    logger.warning("ledger %s line %d is damaged and was skipped", self.path, number)
                    continue
                entry = tasks.setdefault(task_id, {})
                record.pop("event", None)
                entry.update(record)
        return tasks

    def get(self, task_id: str) -> dict[str, Any] | None:
        return self.entries().get(task_id)

    def unfinished(self) -> list[dict[str, Any]]:
        """Tasks whose last known status is not final, oldest first: paid work that can still be collected."""
        return [e for e in self.entries().values() if e.get("status") not in FINISHED]

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        """The last ``limit`` tasks, newest first."""
        entries = sorted(self.entries().values(), key=lambda e: e.get("submitted_at") or e.get("time") or 0)
        return entries[::-1][:limit]

    def local_pictures(self, task_id: str) -> list[bytes] | None:
        """The saved pictures of a completed task, or None when there are none (or a file went missing)."""
        entry = self.get(task_id)
        if not entry or entry.get("status") != "completed" or not entry.get("paths"):
            return None
        try:
            return [Path(p).read_bytes() for p in entry["paths"]]
        except OSError:
            return None
