"""What the two task-based clients (WaveSpeed v3 and Qingbo) share: one shape (submit, get, collect, try_cancel),
a transport, a ledger of their task ids, and the collect of a task's pictures by id.

A client says only what differs: how to wait for its task, where its pictures are, and how its result reads. The
engine drives them through their adapters in :mod:`zimage_api.providers`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

from ..config import Provider
from ..errors import NotFoundError, ResultExpiredError, TaskCancelledError, TaskFailedError, TaskTimeoutError
from ..http.deadline import Deadline
from ..http.transport import RetryCallback, Transport
from ..logs import logger, prompt_hash
from ..polling import (
    DEFAULT_TIMEOUT,
    CancelCheck,
    PollSchedule,
    ProgressCallback,
    TaskSnapshot,
    TaskState,
    wait_for_task,
)
from ..results import GenerationResult
from ..store.sqlite import Store
from ..validation import check_task_id

__all__ = ["TaskClient", "LOCAL_COPY_NOTE"]

LOCAL_COPY_NOTE = "served from the local copy; no request was sent"
DEFAULT_SCHEDULE = PollSchedule()
EARLY_SHARE = 0.03  # the polling loop starts looking this share of the shortest earlier duration before it
LEAD_SHARE = 0.25  # and at most this share before it, however widely the earlier durations spread


class TaskClient:
    """Base of a client whose paid work has an id.

    ``store`` is where the ids are recorded (default: the data folder's store, opened once here; ``False``
    records nothing). Other keyword arguments go to :class:`~zimage_api.http.transport.Transport` (``api_key``,
    ``base_url``, ``timeout``, ``retry``, ``sleep``, ``now``...).
    """

    provider: ClassVar[Provider]

    def __init__(self, *, transport: Transport | None = None, store: Store | bool | None = None,
                 ledger: Store | bool | None = None, **transport_options: Any) -> None:
        self.transport = transport or Transport(self.provider, **transport_options)
        chosen = store if store is not None else ledger  # ``ledger=``: its name in 0.2
        self.store: Store | None = None if chosen is False else (
            chosen if isinstance(chosen, Store) else Store.default())

    @property
    def ledger(self) -> Store | None:
        """The store the ids are recorded in (its name in 0.2)."""
        return self.store

    # -- what each client says ------------------------------------------------------------------------------------

    def get(self, task_id: str, *, cancel_check: CancelCheck | None = None, deadline: Deadline | None = None,
            on_retry: RetryCallback | None = None) -> Any:
        """The task's status now (one status request)."""
        raise NotImplementedError

    def _snapshot(self, task: Any) -> TaskSnapshot[Any]:
        """The task as the polling loop sees it (its state, progress, and age where the provider tells it)."""
        raise NotImplementedError

    def _cancel_on_stop(self, last: TaskSnapshot[Any] | None, task_id: str) -> bool:
        """What Cancel does at the provider while the task waits: True when the provider cancelled it."""
        return False

    def _error_of(self, task: Any) -> object:
        """What the store records as the error of a task that ended without a picture."""
        return None

    def _final_error(self, tid: str, task: Any) -> TaskFailedError:
        """Why a task that ended without a picture (failed, cancelled...) has none."""
        raise NotImplementedError

    def try_cancel(self, task: Any, task_id: str) -> bool:
        """Best-effort remote cancel of a queued task; False where the provider cannot cancel."""
        return False

    def _outputs(self, task: Any, deadline: Deadline | None = None) -> tuple[list[bytes], list[str]]:
        """The pictures of a completed task (downloaded at once, within ``deadline``) and their URLs."""
        raise NotImplementedError

    def _expired_message(self, task_id: str) -> str:
        raise NotImplementedError

    def _completed(self, task_id: str, task: Any, started: float) -> dict[str, Any]:
        """Log the collect; return the fields the ledger records beside the URLs and paths (``took``: the seconds the
        provider says the task took, which the next wait of this model expects)."""
        return {}

    @staticmethod
    def _age(entry: dict[str, Any]) -> float | None:
        """Seconds since the task was submitted, by the store's record (None when unknown): the polling schedule
        counts from there."""
        submitted = entry.get("submitted_at")
        return max(time.time() - float(submitted), 0.0) if isinstance(submitted, (int, float)) else None

    def expected(self, entry: dict[str, Any] | None) -> tuple[float, float] | None:
        """When the task should end, judged by the last tasks of its model at this server: the seconds until the
        earliest of them would have ended, and how much later the latest did. None without history."""
        ledger = self.ledger
        model = (entry or {}).get("model")
        if ledger is None or not model:
            return None
        try:
            took = ledger.durations(self.provider.section, str(model), self.transport.base_url)
        except OSError:
            return None
        if not took:
            return None
        # A few samples do not show the fastest such a task can be: start looking a little before the fastest.
        shortest, spread = min(took), max(took) - min(took)
        lead = max(min(spread / 2, shortest * LEAD_SHARE), shortest * EARLY_SHARE)
        age = self._age(entry or {}) or 0.0
        return max(shortest - lead - age, 0.0), spread + 2 * lead

    def _result(self, task_id: str, entry: dict[str, Any], task: Any | None, images: list[bytes], urls: list[str],
                paths: list[str], elapsed: float, *, seed: int | None, size: tuple[int, int] | None,
                notes: list[str] | None = None) -> GenerationResult:
        raise NotImplementedError

    # -- waiting -----------------------------------------------------------------------------------------------------

    def wait(self, task_id: str, *, timeout: float = DEFAULT_TIMEOUT, sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic, cancel_check: CancelCheck | None = None,
             on_progress: ProgressCallback | None = None, schedule: PollSchedule = DEFAULT_SCHEDULE,
             first: Any = None, deadline: Deadline | None = None, on_retry: RetryCallback | None = None,
             resume_hint: str | None = None, expected: float | None = None, expected_spread: float = 0.0,
             submitted_ago: float | None = None) -> Any:
        """Poll until the task is final; return it completed, or raise a typed task error.

        ``deadline`` (default: ``timeout`` from now, on ``clock``) is the one deadline of the wait, down to each
        status request's retries. On Cancel the provider's own rule applies (Qingbo cancels a queued task, and
        refunds it) before :class:`TaskCancelledError`. ``resume_hint`` ends a timeout's message: how the caller
        collects it later. ``expected``, ``expected_spread`` and ``submitted_ago`` shape the schedule (see
        :func:`~zimage_api.polling.wait_for_task`).
        """
        tid = check_task_id(task_id, provider=self.provider.name)
        deadline = deadline or Deadline.after(timeout, clock)
        snapshot = wait_for_task(
            lambda: self._snapshot(self.get(tid, cancel_check=cancel_check, deadline=deadline, on_retry=on_retry)),
            task_id=tid, provider=self.provider.name, deadline=deadline, sleep=sleep, cancel_check=cancel_check,
            on_progress=on_progress, schedule=schedule, where=self.transport.base_url, expected=expected,
            expected_spread=expected_spread, submitted_ago=submitted_ago,
            on_cancel=lambda last: self._cancel_on_stop(last, tid),
            first=self._snapshot(first) if first is not None else None,
            resume_hint=resume_hint or f"collect it later by its id, {tid}, without paying again",
        )
        task = snapshot.task
        if task.state is TaskState.COMPLETED:
            return task
        self._note(tid, task.state.value, error=self._error_of(task))
        raise self._final_error(tid, task)

    # -- collecting -----------------------------------------------------------------------------------------------

    def collect(self, task_id: str, *, first: Any = None, started: float | None = None, seed: int | None = None,
                size: tuple[int, int] | None = None, **wait_options: Any) -> GenerationResult:
        """Wait for an existing task and download its pictures at once: recovers a paid result by id, never
        re-submits. A task already collected is served from the ledger's local copies without any request.
        """
        tid = check_task_id(task_id, provider=self.provider.name)
        started = time.monotonic() if started is None else started
        ledger = self.ledger
        entry = ledger.get(tid) if ledger is not None else None
        saved = ledger.local_pictures(tid) if ledger is not None else None
        if saved is not None and entry is not None:
            return self._result(tid, entry, None, saved, list(entry.get("urls") or []),
                                list(entry.get("paths") or []), 0.0, seed=seed, size=size, notes=[LOCAL_COPY_NOTE])
        if "deadline" not in wait_options and "timeout" in wait_options:
            # One deadline for the wait and the download of its pictures.
            clock = wait_options.get("clock", time.monotonic)
            wait_options["deadline"] = Deadline.after(wait_options["timeout"], clock)
        if first is not None and first.state is TaskState.COMPLETED:
            task = first
        else:
            if "expected" not in wait_options:
                expected = self.expected(entry)
                if expected is not None:
                    wait_options["expected"], wait_options["expected_spread"] = expected
            if "submitted_ago" not in wait_options and entry is not None:
                wait_options["submitted_ago"] = self._age(entry)
            try:
                task = self.wait(tid, first=first, **wait_options)
            except TaskTimeoutError:
                self._note(tid, "timeout")
                raise
            except TaskCancelledError as err:
                if not err.remote_cancelled:
                    self._note(tid, "interrupted")
                raise
            except NotFoundError:
                if entry is not None and self._issued_here(tid):
                    # The server that issued this id no longer knows it: it can never be collected. An id the
                    # store never held was never issued to us: nothing is recorded for it.
                    self._note(tid, "not_found")
                raise
        try:
            images, urls = self._outputs(task, deadline=wait_options.get("deadline"))
        except ResultExpiredError as err:
            self._note(tid, "expired")
            raise ResultExpiredError(self._expired_message(tid), provider=self.provider.name, status=err.status,
                                     code=err.code) from err
        paths = self._save_pictures(tid, images)
        fields = self._completed(tid, task, started)
        self._note(tid, "completed", urls=urls, paths=paths, **fields)
        return self._result(tid, entry or {}, task, images, urls, paths, time.monotonic() - started, seed=seed,
                            size=size)

    def _check_store(self) -> None:
        """Raise :class:`~zimage_api.store.sqlite.StoreError` unless the id about to be paid for can be recorded."""
        if self.store is not None:
            self.store.check_writable()

    # -- the ledger -----------------------------------------------------------------------------------------------

    def _record_submitted(self, task_id: str, *, model: str, prompt: str, status: str,
                          params: dict[str, Any]) -> None:
        """Put a just-issued id in the ledger. A ledger that cannot be written never costs the paid task: the id
        is logged instead, and the run goes on."""
        ledger = self.ledger
        if ledger is None:
            return
        try:
            ledger.record_submitted(task_id, provider=self.provider.section, model=model,
                                    prompt_sha256=prompt_hash(prompt), params=params, status=status or "submitted",
                                    base_url=self.transport.base_url)
        except OSError as err:
            logger.warning("could not write %s task %s to the ledger %s (%s); keep this id to collect it later",
                           self.provider.name, task_id, ledger.where, err)

    def _save_pictures(self, task_id: str, images: list[bytes]) -> list[str]:
        """Keep local copies of a task's pictures; an unwritable folder is a warning, the pictures are still
        returned."""
        ledger = self.ledger
        if ledger is None:
            return []
        try:
            return ledger.save_pictures(task_id, images)
        except OSError as err:
            logger.warning("could not keep the pictures of %s task %s in %s (%s)", self.provider.name, task_id,
                           ledger.results_dir, err)
            return []

    def _issued_here(self, task_id: str) -> bool:
        """Whether the ledger says this server issued ``task_id`` (True when the ledger does not know)."""
        ledger = self.ledger
        entry = ledger.get(task_id) if ledger is not None else None
        issuer = (entry or {}).get("base_url")
        return not issuer or issuer == self.transport.base_url

    def _note(self, task_id: str, status: str, **fields: Any) -> None:
        """Record a task's new status; a ledger that cannot be written is a warning, never a failed run."""
        ledger = self.ledger
        if ledger is None:
            return
        try:
            ledger.record_status(task_id, status, **{k: v for k, v in fields.items() if v is not None})
        except OSError as err:
            logger.warning("could not update the ledger for %s: %s", task_id, err)
