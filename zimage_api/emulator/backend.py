"""The operations the routes perform on the emulator's state: tasks, files, seeds, sizes and sync slots.

``Emulator`` inherits them; every method takes the emulator's single lock around shared state.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import random
import threading
import time
from collections.abc import Callable, Iterator

from PIL import Image

from ..catalog import V3_MODELS
from .files import FileStore, StoredFile
from .pictures import encode, keep_unmasked, render_card
from .tasks import CANCELLED, COMPLETED, FAILED, QUEUED, EmulatedTask, assign_slots, phase_of
from .wire import OPENAI, RecordedRequest, RouteError

__all__ = ["Backend"]

_POLL_SECONDS = 0.01
_FROZEN_CLOCK_SECONDS = 0.05


class Backend:
    """State operations shared by the route modules (attributes are set by ``Emulator.__init__``)."""

    _lock: threading.RLock
    _clock: Callable[[], float]
    _stopping: threading.Event
    _tasks: dict[str, EmulatedTask]
    _files: FileStore
    _idempotency: dict[tuple[str, str], str]
    _served: list[bytes]
    _serial: int
    _in_flight: int
    _peak_sync: int
    _balance: float
    _charged: set[str]
    queue_seconds: tuple[float, float]
    process_seconds: tuple[float, float]
    max_concurrent: int | None
    url_ttl: float
    picture_scale: float

    @property
    def url(self) -> str:  # provided by Emulator
        raise NotImplementedError

    def _sleep(self, seconds: float) -> None:
        """Real sleep that ``stop()`` cuts short."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def _now(self) -> float:
        return float(self._clock())

    def _next_serial(self) -> int:
        with self._lock:
            self._serial += 1
            return self._serial

    def _durations(self, material: str) -> tuple[float, float]:
        rng = random.Random(material)
        return rng.uniform(*self.queue_seconds), rng.uniform(*self.process_seconds)

    @staticmethod
    def _effective_seed(seed: int | None, serial: int, salt: str) -> int:
        if seed is not None and seed >= 0:
            return seed
        return int.from_bytes(hashlib.sha256(f"{salt}:{serial}".encode()).digest()[:4], "big") & 0x7FFFFFFF

    def _scaled(self, width: int, height: int) -> tuple[int, int]:
        scale = self.picture_scale
        if scale == 1.0:
            return width, height
        scale = max(scale, 64.0 / min(width, height))
        return max(1, round(width * scale)), max(1, round(height * scale))

    def _api_key(self, request: RecordedRequest) -> str:
        return request.headers.get("authorization", "").strip().partition(" ")[2].strip()

    def _key_scope(self, request: RecordedRequest) -> str:
        """Who made a request, without keeping the key: a hash of it."""
        return hashlib.sha256(self._api_key(request).encode("utf-8", "replace")).hexdigest()

    @property
    def balance(self) -> float:
        """The account balance in USD: what it was set to, less the price of each v3 prediction completed since.

        Setting it (``emu.balance = 0.5``) sets the balance now; predictions that complete later are charged from it.
        """
        with self._lock:
            self._settle()
            return self._balance

    @balance.setter
    def balance(self, value: float) -> None:
        with self._lock:
            self._settle()
            self._balance = float(value)

    def _settle(self) -> None:
        """Charge every v3 prediction that has completed and was not charged yet (its model's catalog price)."""
        with self._lock:
            now = self._now()
            assign_slots(self._tasks.values(), now, self.max_concurrent)
            for task in self._tasks.values():
                spec = V3_MODELS.get(task.model) if task.provider == "wavespeed" else None
                if spec is None or task.id in self._charged or phase_of(task, now)[0] != COMPLETED:
                    continue
                self._charged.add(task.id)
                self._balance = round(self._balance - spec.price, 6)

    def _submit(
        self,
        factory: Callable[[float], EmulatedTask],
        *,
        idempotency: tuple[str, str] | None = None,
        started: bool = False,
    ) -> tuple[EmulatedTask, bool]:
        """Create a task (or return the one an idempotency key already made): ``(task, created)``."""
        with self._lock:
            if idempotency is not None and idempotency in self._idempotency:
                return self._tasks[self._idempotency[idempotency]], False
            now = self._now()
            task = factory(now)
            task._owner = self
            if started:
                task.started_at = now
            self._tasks[task.id] = task
            if idempotency is not None:
                self._idempotency[idempotency] = task.id
            return task, True

    def _get_task(self, task_id: str, provider: str) -> EmulatedTask | None:
        with self._lock:
            task = self._tasks.get(task_id)
        return task if task is not None and task.provider == provider else None

    def _task_phase(self, task: EmulatedTask) -> tuple[str, float]:
        with self._lock:
            now = self._now()
            assign_slots(self._tasks.values(), now, self.max_concurrent)
            return phase_of(task, now)

    def _cancel(self, task: EmulatedTask) -> tuple[bool, str]:
        with self._lock:
            status = self._task_phase(task)[0]
            if status != QUEUED:
                return False, status
            task.cancelled_at = self._now()
            task.started_at = None
            return True, CANCELLED

    def _wait_final(self, task: EmulatedTask, seconds: float) -> bool:
        """Poll (in real time) until the task is final or ``seconds`` pass; True when it is final.

        A clock that stands still for ``_FROZEN_CLOCK_SECONDS`` of real time cannot finish the task, so the wait
        ends early then: a test with a fake clock is not held for the whole ``Prefer: wait``.
        """
        final = (COMPLETED, FAILED, CANCELLED)
        started = time.monotonic()
        deadline = started + max(0.0, seconds)
        last_clock, last_move = self._now(), started
        for _ in range(int(seconds / _POLL_SECONDS) + 2):
            if self._task_phase(task)[0] in final:
                return True
            now_real, now_clock = time.monotonic(), self._now()
            if now_clock != last_clock:
                last_clock, last_move = now_clock, now_real
            elif now_real - last_move >= _FROZEN_CLOCK_SECONDS:
                break
            remaining = deadline - now_real
            if remaining <= 0 or self._stopping.wait(min(_POLL_SECONDS, remaining)):
                break
        return self._task_phase(task)[0] in final

    def _materialize(self, task: EmulatedTask) -> list[bytes]:
        """Render and store a completed task's pictures once; later calls return the same bytes."""
        with task._render_lock:
            if task._outputs:
                return task._outputs
            reference = Image.open(io.BytesIO(task.reference)) if task.reference else None
            card = render_card(task.prompt, task.width, task.height, seed=task.seed, params=task.card,
                               reference=reference, strength=task.strength)
            if task.mask is not None and reference is not None:
                card = keep_unmasked(card, reference, Image.open(io.BytesIO(task.mask)))
            data = encode(card, task.output_format)
            with self._lock:
                stored = self._files.put(data, task.file_ext, task.ends_at + self.url_ttl)
                task.file_tokens = [stored.token]
                task._outputs = [data]
                self._served.append(data)
            return task._outputs

    def _store_file(self, data: bytes, ext: str, content_type: str | None = None, *, served: bool = False) -> str:
        """Store a file that expires ``url_ttl`` from now; returns its token."""
        with self._lock:
            stored = self._files.put(data, ext, self._now() + self.url_ttl, content_type)
            if served:
                self._served.append(data)
            return stored.token

    def _note_served(self, data: bytes) -> None:
        with self._lock:
            self._served.append(data)

    def _file(self, token: str) -> StoredFile | None:
        with self._lock:
            return self._files.get(token)

    def _file_from_url(self, url: str) -> StoredFile | None:
        with self._lock:
            return self._files.from_url(url, self.url)

    @contextlib.contextmanager
    def _sync_slot(self, shape: str) -> Iterator[None]:
        """Count a synchronous generation in flight; beyond ``max_concurrent`` answer 429 with Retry-After: 1."""
        with self._lock:
            if self.max_concurrent is not None and self._in_flight >= self.max_concurrent:
                code = "rate_limit_exceeded" if shape == OPENAI else "concurrency_limit_exceeded"
                raise RouteError(429, f"Too many requests at once (the limit is {self.max_concurrent}); "
                                      "retry in a second.", code, headers={"Retry-After": "1"})
            self._in_flight += 1
            self._peak_sync = max(self._peak_sync, self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
