"""The store's contract: what a store holds and answers, whatever keeps it (the values, the errors, the claims'
leases, where the data folder is). :mod:`.sqlite` is the store of one data folder."""

from __future__ import annotations

import math
import os
import socket
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..logs import logger
from ..polling import FINAL_STATES, TaskState

if TYPE_CHECKING:
    from .sqlite import Store

__all__ = [
    "StoreError", "Receipt", "Claim", "ClaimOutcome", "Price", "Slot", "LeaseKeeper", "DATA_DIR_ENV", "LEASE_ENV",
    "REUSE_ENV", "DEFAULT_LEASE_SECONDS", "FINAL_STATUSES", "UNFINISHED_STATUSES", "NO_PICTURE_STATUSES",
    "default_dir", "claim_lease", "new_owner", "reuse_enabled", "write_file", "read_picture",
]

DATA_DIR_ENV = "ZIMAGE_DATA_DIR"
LEASE_ENV = "ZIMAGE_CLAIM_LEASE_SECONDS"
REUSE_ENV = "ZIMAGE_REUSE_RESULTS"
DEFAULT_LEASE_SECONDS = 30.0  # how long a claim of a process that died keeps others waiting

# The pack's own words beside the provider states: ``submitted`` (id issued, nothing polled yet), ``created``,
# ``timeout``/``interrupted`` (our wait stopped, the task goes on), ``not_found`` (its server forgot it),
# ``invalid_id`` (its server answered an id that cannot be asked about).
FINAL_STATUSES = frozenset({state.value for state in FINAL_STATES} | {"not_found", "invalid_id"})
UNFINISHED_STATUSES = frozenset({state.value for state in TaskState if not state.is_final}
                                | {"submitted", "created", "timeout", "interrupted"})
NO_PICTURE_STATUSES = FINAL_STATUSES - {TaskState.COMPLETED.value}  # a task in these can never give a picture


class StoreError(OSError):
    """The store could not be read or written (a locked, damaged or newer file, a folder that cannot be written).

    An ``OSError``, like a full disk. Raised before anything is paid: no record, no payment.
    """


def default_dir() -> Path:
    """The data folder when the caller names none: ``$ZIMAGE_DATA_DIR``, ComfyUI's user folder when the pack is
    installed in ``custom_nodes``, else the per-user data folder (see the module docstring)."""
    override = os.environ.get(DATA_DIR_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    pack = Path(__file__).resolve().parents[2]  # the pack folder: <pack>/zimage_api/store/base.py
    if pack.parent.name == "custom_nodes" and (pack.parent.parent / "user").is_dir():
        return pack.parent.parent / "user" / "comfyui-zimage"
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "comfyui-zimage"


def claim_lease() -> float:
    """Seconds a claim lasts without renewal: ``$ZIMAGE_CLAIM_LEASE_SECONDS`` (1-3600), else 30."""
    try:
        value = float(os.environ.get(LEASE_ENV, "") or DEFAULT_LEASE_SECONDS)
    except ValueError:
        return DEFAULT_LEASE_SECONDS
    return min(max(value, 1.0), 3600.0) if math.isfinite(value) else DEFAULT_LEASE_SECONDS


def new_owner() -> str:
    """A claim owner unique to this run: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def reuse_enabled() -> bool:
    """Whether receipts are used (``ZIMAGE_REUSE_RESULTS=0`` sends every request)."""
    return os.environ.get(REUSE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


@dataclass(frozen=True)
class Receipt:
    """What was bought under one request fingerprint: a task id, a kept result, the URLs of a paid result whose
    download failed, or several of these."""

    fingerprint: str
    task_id: str | None
    result: dict[str, Any] | None
    created_at: float
    urls: dict[str, Any] | None = None


@dataclass(frozen=True)
class Claim:
    """Who is paying for one fingerprint: ``state`` is ``claimed`` (deciding), ``sending`` (the paid request may
    have gone out since ``sending_at``) or ``uncertain`` (it may have been charged, with no way to tell)."""

    fingerprint: str
    owner: str
    state: str
    claimed_at: float
    lease_until: float
    sending_at: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def expired(self, now: float) -> bool:
        return self.lease_until <= now


@dataclass(frozen=True)
class ClaimOutcome:
    """What :meth:`Store.claim` found.

    * ``receipt``: something was bought under this fingerprint already (``receipt``); serve it, pay nothing.
    * ``claimed``: the caller owns the claim and may pay. ``previous`` is the expired claim it took over, if any:
      when that one was ``sending``, the paid request may have gone out and must be recovered, not re-sent.
    * ``held``: another run holds a live claim (``previous``); wait for its outcome.
    * ``uncertain``: an earlier run may have been charged and nothing can tell (``previous``).
    * ``over_budget``: paying would pass the day's budget: ``spent`` is what the day has cost so far.
    """

    kind: Literal["receipt", "claimed", "held", "uncertain", "over_budget"]
    receipt: Receipt | None = None
    previous: Claim | None = None
    spent: float | None = None


@dataclass(frozen=True)
class Slot:
    """The answer to taking one of a provider's slots: whether it was ``taken``, how many are ``in_flight``, and
    when a slot whose holder died would be free at the latest (``free_at``)."""

    taken: bool
    in_flight: int
    free_at: float | None = None  # when the first held slot's lease ends, if nothing renews it (unix time)


@dataclass(frozen=True)
class Price:
    """What a unit about to be paid costs, reserved against the day's budget with its claim."""

    provider: str
    model: str
    usd: float


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary name unique to this writer, so two writers never mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_picture(path: Path) -> bytes:
    """A kept picture's bytes, checked to be a picture (a receipt of anything else is dropped)."""
    from ..images import check_picture

    data = path.read_bytes()
    check_picture(data, source=f"the receipt {path.name}")
    return data


class LeaseKeeper:
    """Renews the claims of one run, from a daemon thread, until each is dropped.

    A claim lasts ``lease`` seconds without renewal; it is renewed every third of that, so only a holder that died
    (or froze) loses it, and then another run takes over within one lease.
    """

    def __init__(self, store: Store, lease: float | None = None) -> None:
        self.store = store
        self.lease = claim_lease() if lease is None else lease
        self._held: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, key: str, owner: str) -> None:
        with self._lock:
            self._held.add((key, owner))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="zimage-lease", daemon=True)
                self._thread.start()

    def drop(self, key: str, owner: str) -> None:
        with self._lock:
            self._held.discard((key, owner))
            if not self._held:
                self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.lease / 3)
            with self._lock:
                self._wake.clear()
                held = sorted(self._held)
                if not held:
                    self._thread = None
                    return
            try:
                for key, owner in held:
                    self.store.renew([key], owner, lease=self.lease)
            except OSError as err:  # the store went away: the claims lapse, and the next run recovers them
                logger.warning("could not renew the claims of this run: %s", err)
