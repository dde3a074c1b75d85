"""Running several pictures or tasks of one request side by side, and summarising them.

A node run asks for a count of pictures (or polls several task ids). Each becomes a job on a small bounded thread
pool; the caller's thread stays free to report progress and notice Cancel. Nothing here knows about ComfyUI: the
caller passes an ``on_tick`` callable that runs in its own thread between short waits.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .errors import TaskFailedError, TaskTimeoutError, ValidationError, ZImageError
from .results import QUOTA_PER_USD, GenerationResult
from .validation import IMAGES_SIZE, V3_SIZE, SizeLimits, check_choice, check_number, check_size

__all__ = [
    "MAX_WORKERS", "SEED_MAX", "APIS", "JobOutcome", "BatchProgress", "run_jobs", "first_error", "Once",
    "fit_size", "size_from_reference", "check_seed_range", "check_timeout", "size_limits", "check_size_for",
    "model_notes", "format_cost", "pre_consumed_text", "cost_text", "split_events", "info_json", "ResultCache",
    "submit_error", "poll_error",
]

MAX_WORKERS = 4
SEED_MAX = 2147483647
APIS = ("v1/images", "v3")
TURBO_NOTE = "Z-Image-Turbo is distilled to 8 steps: CFG (guidance_scale) and the negative prompt have no effect."
V3_CFG_NOTE = "WaveSpeed v3 has no guidance_scale parameter: CFG was not sent."
V1_FORMAT_NOTE = "output_format applies to the v3 api only; /v1/images returns PNG."
T = TypeVar("T")


@dataclass
class JobOutcome(Generic[T]):
    """What one job ended with: a value, an error, or neither when it never finished (cancelled)."""

    value: T | None = None
    error: BaseException | None = None
    finished: bool = False


@dataclass
class _Unit:
    state: str = "waiting"
    fraction: float = 0.0


class BatchProgress:
    """Thread-safe progress of the units (pictures or tasks) of one run.

    Worker threads call :meth:`update`; the caller's thread reads :meth:`total` and :meth:`summary` and uses
    :attr:`version` to redraw only when something changed.
    """

    def __init__(self, units: int) -> None:
        self._units = [_Unit() for _ in range(max(units, 1))]
        self._lock = threading.Lock()
        self.version = 0
        self.changed = threading.Event()  # set on every update, so a waiting reader can redraw at once

    def __len__(self) -> int:
        return len(self._units)

    def update(self, index: int, fraction: float | None = None, state: str | None = None) -> None:
        """Record a unit's progress (0..1) and/or state word ("queued", "processing 45%", "done"...)."""
        with self._lock:
            unit = self._units[index]
            if fraction is not None and math.isfinite(fraction):
                unit.fraction = min(max(fraction, 0.0), 1.0)
            if state:
                unit.state = state
            self.version += 1
        self.changed.set()

    def callback(self, index: int) -> Callable[[float, str], None]:
        """A progress callback for the library's waits: ``(fraction, "processing 45%, 3.1s")``."""

        def report(fraction: float, text: str) -> None:
            self.update(index, fraction, text.split(",")[0].strip() or None)

        return report

    def total(self) -> float:
        """The units' progress summed, 0..len(self)."""
        with self._lock:
            return sum(unit.fraction for unit in self._units)

    def summary(self) -> str:
        """The states counted, e.g. "2 done, 1 processing 45%, 1 queued" (or the single state for one unit)."""
        with self._lock:
            states = [unit.state for unit in self._units]
        if len(states) == 1:
            return states[0]
        counts: dict[str, int] = {}
        for state in states:
            counts[state] = counts.get(state, 0) + 1
        return ", ".join(f"{n} {state}" for state, n in counts.items())


def run_jobs(
    jobs: Sequence[Callable[[], T]],
    *,
    cancel: threading.Event,
    on_tick: Callable[[], None] | None = None,
    wake: threading.Event | None = None,
    workers: int = MAX_WORKERS,
    tick_seconds: float = 0.1,
    grace_seconds: float = 1.0,
) -> list[JobOutcome[T]]:
    """Run ``jobs`` on at most ``workers`` threads and return their outcomes in order.

    ``on_tick`` runs in the calling thread whenever ``wake`` is set (e.g. by :class:`BatchProgress`) or a job ends,
    and at least every ``tick_seconds`` (real time), until all jobs end; it may set ``cancel``. Once ``cancel`` is
    set, jobs not yet started never start, running ones get ``grace_seconds`` to notice it (their waits check the
    same event), and the rest are abandoned: their outcomes stay unfinished. A failing job does not stop the others,
    so paid work already in flight is still collected.
    """
    outcomes: list[JobOutcome[T]] = [JobOutcome() for _ in jobs]
    if not jobs:
        return outcomes
    wake = wake if wake is not None else threading.Event()
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs))), thread_name_prefix="zimage")
    futures: list[Future[T]] = []
    try:
        futures = [pool.submit(job) for job in jobs]
        for future in futures:
            future.add_done_callback(lambda _f: wake.set())
        while not cancel.is_set() and not all(f.done() for f in futures):
            wake.wait(tick_seconds)
            wake.clear()
            if on_tick is not None:
                on_tick()
        if cancel.is_set():
            for future in futures:
                future.cancel()
            wait([f for f in futures if not f.cancelled()], timeout=grace_seconds)
    finally:
        # Never block on abandoned work: a synchronous request cannot be interrupted, its thread ends by itself.
        pool.shutdown(wait=False, cancel_futures=True)
    for outcome, future in zip(outcomes, futures):
        if future.done() and not future.cancelled():
            outcome.finished = True
            error = future.exception()
            if error is None:
                outcome.value = future.result()
            else:
                outcome.error = error
    return outcomes


def first_error(outcomes: Sequence[JobOutcome[Any]]) -> BaseException | None:
    """The first job's error, in job order (not in time order), or None."""
    return next((o.error for o in outcomes if o.error is not None), None)


class Once:
    """Compute a value per key at most once, even when several threads ask for it together (e.g. one upload per
    reference picture shared by its count of edits)."""

    def __init__(self, make: Callable[[int], Any]) -> None:
        self._make = make
        self._values: dict[int, Any] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: int) -> Any:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._values:
                self._values[key] = self._make(key)
            return self._values[key]


def check_seed_range(seed: object) -> int:
    """A seed widget value: a whole number 0..2147483647."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ValidationError(f"The seed {seed!r} is outside 0-{SEED_MAX}.", field="seed")
    return seed


def check_timeout(timeout: object) -> int:
    """A timeout widget value: 10..900 seconds."""
    return int(check_number(timeout, "timeout", 10, 900))


def size_limits(api: str) -> SizeLimits:
    """The size limits of an ``api`` choice ("v1/images" or "v3")."""
    return V3_SIZE if check_choice(api, "api", APIS) == "v3" else IMAGES_SIZE


def check_size_for(width: object, height: object, api: str) -> tuple[int, int]:
    """Width and height within the ``api``'s limits; the v3 message points to the api that allows more."""
    try:
        return check_size(width, height, size_limits(api))
    except ValidationError as err:
        hint = " Choose the v1/images api for sizes up to 2048." if api == "v3" else ""
        raise ValidationError(err.message + hint, field=err.field) from None


def model_notes(model: str, api: str, output_format: str) -> list[str]:
    """What the artist should know about these settings: parameters that have no effect or were not sent."""
    notes = [TURBO_NOTE] if model == "Z-Image-Turbo" else []
    if api == "v3":
        notes.append(V3_CFG_NOTE)
    elif output_format != "png":
        notes.append(V1_FORMAT_NOTE)
    return notes


def _round_to(value: float, multiple: int) -> int:
    return int(math.floor(value / multiple + 0.5)) * multiple


def fit_size(width: int, height: int, limits: SizeLimits, *, multiple: int = 16) -> tuple[int, int]:
    """The closest size to ``width`` x ``height`` that ``limits`` accept, in multiples of ``multiple``.

    The aspect ratio is kept (scaled down to the side and area caps, up to the minimum side) unless the picture is
    so elongated that no size of that ratio fits; then each side is clamped.
    """
    if width <= 0 or height <= 0:
        raise ValueError("width and height must be positive")
    scale = min(1.0, limits.max_side / max(width, height), math.sqrt(limits.max_area / (width * height)))
    scale = max(scale, limits.min_side / min(width, height))
    low = math.ceil(limits.min_side / multiple) * multiple
    high = math.floor(limits.max_side / multiple) * multiple
    w = min(max(_round_to(width * scale, multiple), low), high)
    h = min(max(_round_to(height * scale, multiple), low), high)
    while w * h > limits.max_area:  # rounding up may cross the area cap by a row of blocks
        if w >= h:
            w -= multiple
        else:
            h -= multiple
    return w, h


def size_from_reference(width: int, height: int, ref_width: int, ref_height: int, limits: SizeLimits,
                        *, multiple: int = 16) -> tuple[int, int]:
    """The output size of an edit: 0 means "from the reference".

    Both 0: the reference's size fitted to ``limits``. One 0: that side follows the reference's aspect ratio.
    Neither: returned as given (the caller validates it against the limits).
    """
    if width > 0 and height > 0:
        return width, height
    if width <= 0 and height <= 0:
        return fit_size(ref_width, ref_height, limits, multiple=multiple)
    if width > 0:
        return width, max(_round_to(width * ref_height / ref_width, multiple), multiple)
    return max(_round_to(height * ref_width / ref_height, multiple), multiple), height


def format_cost(quota: float | None) -> str:
    """Qingbo quota as text with dollars: "10626 quota ($0.021252)"."""
    if quota is None:
        return "cost unknown"
    return f"{quota:g} quota (${quota / QUOTA_PER_USD:.6f})"


def pre_consumed_text(tasks: Sequence[Any]) -> str | None:
    """The quota Qingbo reserved for accepted tasks (objects with ``pre_consumed_cost``), as text."""
    quotas = [t.pre_consumed_cost for t in tasks if t is not None and t.pre_consumed_cost is not None]
    return f"pre-consumed {format_cost(sum(quotas))}" if quotas else None


def cost_text(results: Sequence[GenerationResult]) -> str | None:
    """The billed quota of finished results, as text; None when no result carries a cost."""
    quotas = [r.cost_quota for r in results if r.cost_quota is not None]
    return format_cost(sum(quotas)) if quotas else None


def split_events(text: str) -> list[str]:
    """Comma-separated callback events to a list, blanks dropped."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def info_json(parts: Sequence[GenerationResult], *, notes: Iterable[str] = (), **extra: Any) -> str:
    """One JSON summary of several results: :meth:`GenerationResult.info` of their merge, ``extra`` and ``notes``.

    It holds what the results hold (no key, no picture data), plus the caller's explicit extras.
    """
    data: dict[str, Any] = GenerationResult.merge(list(parts)).info() if parts else {}
    data.update({key: value for key, value in extra.items() if value is not None})
    all_notes = list(data.get("notes") or [])
    all_notes.extend(note for note in notes if note and note not in all_notes)
    if all_notes:
        data["notes"] = all_notes
    return json.dumps(data, indent=2, ensure_ascii=False)


@dataclass
class ResultCache:
    """A small in-process LRU of finished results by task id (polling a finished task again costs nothing)."""

    maxsize: int = 64
    _items: OrderedDict[str, GenerationResult] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, task_id: str) -> GenerationResult | None:
        with self._lock:
            result = self._items.get(task_id)
            if result is not None:
                self._items.move_to_end(task_id)
            return result

    def put(self, task_id: str, result: GenerationResult) -> None:
        with self._lock:
            self._items[task_id] = result
            self._items.move_to_end(task_id)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def submit_error(error: BaseException, accepted: Sequence[str], count: int) -> BaseException:
    """The error to raise when some submits failed: if tasks were accepted (and paid), it names them."""
    if not accepted:
        return error
    wrapped = ZImageError(f"{error} Qingbo accepted {len(accepted)} of the {count} tasks before that: "
                          f"{', '.join(accepted)}; paste them into Qingbo Task Poll to collect their pictures.")
    wrapped.__cause__ = error
    return wrapped


def poll_error(outcomes: Sequence[JobOutcome[GenerationResult]], polled: Sequence[str], ids: Sequence[str],
               timeout: int) -> BaseException | None:
    """One clear error for the polled tasks that did not deliver (None if all did).

    Several timeouts become one message naming every id; a failed task's message names the tasks that did complete,
    which stay collectable at no cost.
    """
    errors = [o.error for o in outcomes if o.error is not None]
    if not errors:
        return None
    timeouts = [e for e in errors if isinstance(e, TaskTimeoutError)]
    if len(timeouts) > 1 and len(timeouts) == len(errors):
        names = ", ".join(e.task_id for e in timeouts)
        return TaskTimeoutError(
            f"Qingbo tasks {names} were still running after {timeout} s. They were not re-submitted, so nothing was "
            "charged twice: paste these ids into Qingbo Task Poll (or queue the prompt again) to collect the "
            "pictures.", task_id=timeouts[0].task_id, provider="Qingbo")
    first = errors[0]
    delivered = [tid for tid, o in zip(polled, outcomes) if o.value is not None]
    delivered += [tid for tid in ids if tid not in polled]
    if isinstance(first, TaskFailedError) and delivered:
        wrapped = TaskFailedError(
            f"{first.message} The other task(s) {', '.join(delivered)} completed and are kept: poll them without "
            f"{first.task_id} to get their pictures at no cost.", task_id=first.task_id, provider=first.provider,
            code=first.code, retryable=first.retryable)
        wrapped.__cause__ = first
        return wrapped
    return first
