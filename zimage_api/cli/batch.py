"""``python -m zimage_api batch FILE``: running the rows of a batch file on a bounded pool, resumably.

The rows are read and checked first (:mod:`.batch_rows`); a bad row, a missing key or an unusable ``--out`` stops
the run before anything is sent. Rows then run on ``--concurrency`` daemon threads; each row's events go to the
manifest (:mod:`.batch_manifest`) the moment they happen, ``submitting`` before every paid request, so re-running the
same command resumes: done rows are skipped, submitted tasks are collected, never paid twice, and a submit that may
have been charged without an answer is not sent again unless asked. A one-line progress bar runs on stderr.

The first Ctrl-C starts no new row and lets every request in flight return, so each paid id reaches the ledger and
the manifest; a second Ctrl-C exits at once. A stdout closed by its reader stops the run the same way, quietly.
"""

from __future__ import annotations

import argparse
import queue
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..catalog import WAVESPEED_USD_PER_PICTURE
from ..engine import RunCancelled
from ..errors import (
    APIConnectionError,
    ResultExpiredError,
    TaskFailedError,
    TaskTimeoutError,
    ValidationError,
    ZImageError,
)
from ..logs import mask_url, printable
from ..orders import QingboTasks, TextToImage
from ..parallel import JobOutcome
from .batch_manifest import MANIFEST_NAME, Manifest, Plan, plan_rows
from .batch_rows import Job, estimate_cost, load_jobs, print_dry_run, row_order
from .commands import DEFAULT_TIMEOUT, picture_tag, prepare_out, save_paid_pictures
from .runtime import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    Interrupted,
    OutputClosed,
    Runtime,
    UsageError,
    one_line,
    to_stderr,
    to_stdout,
)

__all__ = ["run_batch", "ProgressBar"]


class ProgressBar:
    """A one-line text bar on stderr: redrawn in place on a terminal, a plain line per finished row otherwise."""

    def __init__(self, total: int, *, enabled: bool = True, stream: Any = None, width: int = 24) -> None:
        self.stream = stream or sys.stderr
        self.total, self.width, self.enabled = total, width, enabled and total > 0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = self.failed = 0
        self.running: dict[str, float] = {}
        self._lock = threading.Lock()
        self._drawn = 0.0

    def progress(self, key: str, fraction: float) -> None:
        """A running row reached ``fraction`` (0-1); redrawn at most every 0.1 s on a terminal."""
        with self._lock:
            self.running[key] = fraction
            if self.tty and time.monotonic() - self._drawn > 0.1:
                self._draw()

    def finish(self, key: str, ok: bool) -> None:
        """A row ended, done (``ok``) or failed."""
        with self._lock:
            self.running.pop(key, None)
            self.done += ok
            self.failed += not ok
            self._draw()

    def clear(self) -> None:
        """Erase the bar on a terminal, so that a line can be printed in its place."""
        if self.enabled and self.tty:
            self.stream.write("\r\033[K")

    def close(self) -> None:
        """End the bar's line on a terminal."""
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self) -> None:
        if not self.enabled:
            return
        filled = self.done + self.failed + sum(self.running.values())
        cells = round(self.width * filled / self.total)
        text = (f"batch [{'#' * cells}{'-' * (self.width - cells)}] {self.done + self.failed}/{self.total}  "
                f"done {self.done}  failed {self.failed}  running {len(self.running)}")
        self.stream.write(("\r" + text + "\033[K") if self.tty else text + "\n")
        self.stream.flush()
        self._drawn = time.monotonic()


@dataclass
class _Outcome:
    job: Job
    status: str  # done | failed | uncertain | timeout | interrupted
    paths: list[Path] = field(default_factory=list)
    cost: float | None = None
    error: str | None = None


class _Batch:
    """Runs one row at a time on any worker thread, records its events in the manifest and prints its outcome."""

    def __init__(self, rt: Runtime, args: argparse.Namespace, manifest: Manifest, bar: ProgressBar,
                 recollect: set[str] | None = None) -> None:
        self.rt, self.args, self.manifest, self.bar = rt, args, manifest, bar
        self.out: Path = args.out
        self.recollect = recollect or set()  # keys of done rows collected again because their pictures are gone
        self.print_lock = threading.Lock()
        self.quiet = False  # stdout was closed by its reader: results are no longer printed
        self._running = 0
        self._running_lock = threading.Lock()
        self._submitting_keys: set[str] = set()  # rows whose "submitting" line this run wrote

    @property
    def running(self) -> int:
        """How many rows are being run right now."""
        with self._running_lock:
            return self._running

    def run_job(self, job: Job, task_id: str | None) -> _Outcome:
        """Run the row (submit, or collect ``task_id``), turning a job's error into a recorded outcome."""
        with self._running_lock:
            self._running += 1
        try:
            return self._run_job(job, task_id)
        finally:
            with self._running_lock:
                self._running -= 1

    def _run_job(self, job: Job, task_id: str | None) -> _Outcome:
        try:
            if job.provider == "wavespeed-images" and task_id is None:
                return self._images(job)
            return self._task(job, task_id)
        except Interrupted:
            with self._running_lock:
                wrote_submitting = job.key in self._submitting_keys
            if wrote_submitting and self.manifest.status(job.key) == "submitting":
                # Stopped while waiting to retry this run's submit, which is retried only when the server did
                # nothing (or under an Idempotency-Key, which returns the same task): nothing is left uncertain.
                self.manifest.write(job, "interrupted")
            return _Outcome(job, "interrupted")
        except TaskTimeoutError as err:
            self.manifest.write(job, "timeout", task_id=err.task_id, error=str(err))
            return _Outcome(job, "timeout", error=str(err))
        except (TaskFailedError, ResultExpiredError, ValidationError) as err:
            failed_id = getattr(err, "task_id", None) or self.manifest.pending_task(job.key)
            self.manifest.write(job, "failed", task_id=failed_id, error=str(err))
            return _Outcome(job, "failed", error=str(err))
        except (ZImageError, OSError) as err:
            # The task (if any) still exists and may finish, and a paid task's pictures are kept beside the ledger
            # even when writing them to --out failed: keep it pending so a re-run collects it, never re-pays.
            pending = self.manifest.pending_task(job.key)
            text = str(err) if isinstance(err, ZImageError) else f"could not write the pictures: {err}"
            if pending:
                status = "submitted"
            elif isinstance(err, APIConnectionError) and err.may_have_processed:
                # No answer to a submit that reached the server: it may have been charged. A re-run must not pay
                # again without being asked (--retry-uncertain).
                status = "uncertain"
                text += " The row is marked uncertain: a re-run skips it unless given --retry-uncertain."
            else:
                status = "failed"
            self.manifest.write(job, status, task_id=pending, error=str(err))
            return _Outcome(job, "uncertain" if status == "uncertain" else "failed", error=text)

    def _submitting(self, job: Job) -> str:
        """Note in the manifest that the row's paid request is about to go out; returns its name for Ctrl-C."""
        if self.rt.stop.is_set():
            # The run was stopped after this row was picked: never start a new payment.
            raise Interrupted("Stopped by Ctrl-C.")
        self.manifest.write(job, "submitting")
        with self._running_lock:
            self._submitting_keys.add(job.key)
        return f"the submit of {job.where} ({job.provider})"

    def _engine(self, job: Job) -> Any:
        """The engine for one row: its paid request is named after the row, and an issued id is in the manifest
        (and the ledger, tagged with the row) before its answer is interpreted."""
        rt = self.rt

        def issued(task_id: str, provider: str) -> None:
            rt.track(task_id, provider)
            if self.manifest.pending_task(job.key) != task_id:
                rt.ledger.append(task_id, batch_row=self.manifest.ledger_tag(job))
                self.manifest.write(job, "submitted", task_id=task_id)

        # The manifest says "submitting" only once the row's paid request is about to go out.
        return rt.engine(paying=lambda _what: rt.paying(self._submitting(job)), on_task_id=issued)

    @property
    def _timeout(self) -> float:
        return DEFAULT_TIMEOUT if self.args.timeout is None else float(self.args.timeout)

    @staticmethod
    def _value(run: Callable[[], list[JobOutcome[Any]]]) -> Any:
        """The row's one unit: its value, or its error raised."""
        try:
            outcomes = run()
        except RunCancelled:
            raise Interrupted("Stopped by Ctrl-C.") from None
        error = outcomes[0].error
        if isinstance(error, KeyboardInterrupt):
            raise KeyboardInterrupt  # Ctrl-C inside the row's wait: handled as if it reached this thread
        if error is not None:
            raise error
        return outcomes[0].value

    def _images(self, job: Job) -> _Outcome:
        order = row_order(job, timeout=self._timeout)
        result = self._value(lambda: self._engine(job).pictures(order))
        tag = picture_tag("wavespeed", bool(job.params.get("reference")))
        ident = result.task_ids[0] if result.task_ids else result.prompt_sha256
        paths, elsewhere = save_paid_pictures(self.rt, self.out, tag, ident, job.params["seed"], result.images,
                                              result.paths)
        cost = round((order.price if isinstance(order, TextToImage) else WAVESPEED_USD_PER_PICTURE)
                     * len(result.images), 6)
        self.manifest.write(job, "done", paths=paths, cost_usd=cost, estimated=True)
        # A picture served from its kept copy was paid in an earlier run: it adds nothing to this run's cost.
        return _Outcome(job, "done", paths, None if job.key in self.recollect else cost, error=elsewhere)

    def _task(self, job: Job, task_id: str | None) -> _Outcome:
        rt, p = self.rt, job.params
        qingbo = job.provider == "qingbo"
        provider = "qingbo" if qingbo else "wavespeed"
        timeout = self._timeout
        order = row_order(job, timeout=timeout)
        if task_id is None and not qingbo:
            result = self._value(lambda: self._engine(job).pictures(order))
            task_id = result.task_ids[0] if result.task_ids else None
        else:
            if task_id is None:
                task_id = self._value(lambda: self._engine(job).submit(order)).task_id
            extra = {} if isinstance(order, QingboTasks) else {"seed": p["seed"], "size": order.size}
            engine = self._engine(job)
            result = self._value(lambda: engine.collect([task_id], provider=provider, timeout=timeout,
                                                        extras=[extra]))
        paths, elsewhere = save_paid_pictures(rt, self.out, picture_tag(provider, bool(p.get("reference"))),
                                              task_id or result.prompt_sha256, p["seed"], result.images, result.paths)
        cost, estimated = (result.cost_usd, False) if result.cost_usd is not None else (estimate_cost(job), True)
        self.manifest.write(job, "done", task_id=task_id, paths=paths, cost_usd=cost, estimated=estimated)
        # A row collected again was paid for in an earlier run: it adds nothing to this run's cost.
        return _Outcome(job, "done", paths, None if job.key in self.recollect else cost, error=elsewhere)

    def emit(self, outcome: _Outcome) -> None:
        """Print the row's pictures (stdout) or its error (stderr) and move the progress bar.

        Raises :class:`OutputClosed` when stdout's reader has gone; nothing more is printed there after that.
        """
        with self.print_lock:
            self.bar.clear()
            try:
                if not self.quiet:
                    for path in outcome.paths:
                        to_stdout(str(path))
            finally:
                if outcome.error:
                    shown = " ".join(printable(mask_url(outcome.error), 2000).split())
                    to_stderr(f"error: {outcome.job.where}: {shown}")
                self.bar.finish(outcome.job.key, outcome.status == "done")

    def announce_stop(self) -> None:
        """Say, at the first Ctrl-C, that the rows in flight are being finished and how to exit at once."""
        running = self.running
        with self.print_lock:
            self.bar.clear()
            if running:
                to_stderr(f"interrupted: finishing the requests in flight ({running} row{'s' if running > 1 else ''})"
                          " so that every paid task id reaches the ledger and the manifest; no new row starts. "
                          "Press Ctrl-C again to exit at once (a submit cut short may be charged with no id).")


def _missing_keys(rt: Runtime, providers: set[str]) -> list[str]:
    """The configuration errors (a missing key...) that would fail every row of a provider; checked up front."""
    messages: list[str] = []
    clients = []
    if providers & {"wavespeed-images", "wavespeed-v3"}:
        clients.append(rt.v3())
    if "qingbo" in providers:
        clients.append(rt.qingbo())
    for client in clients:
        try:
            client.transport.api_key()
            client.transport.base_url  # noqa: B018  (a malformed base URL is a ConfigError too)
        except ZImageError as err:
            messages.append(one_line(err))
    return messages


def _announce_skipped(plan: Plan) -> None:
    """One line for the uncertain rows and one for the done rows whose pictures are gone; neither is sent again."""
    def rows(jobs: list[Job]) -> str:
        return ", ".join(job.where for job in jobs[:10]) + (f" and {len(jobs) - 10} more" if len(jobs) > 10 else "")

    if plan.uncertain:
        count = len(plan.uncertain)
        to_stderr(f"batch: {count} uncertain row{'s' if count > 1 else ''} skipped ({rows(plan.uncertain)}): an "
                  "earlier submit may have been charged without an answer. Check the provider's dashboard; "
                  "--retry-uncertain sends them again.")
    if plan.missing:
        count = len(plan.missing)
        to_stderr(f"batch: {count} done row{'s' if count > 1 else ''} with missing pictures skipped "
                  f"({rows(plan.missing)}): made with v1/images, which keeps no copy, so they are not sent again; "
                  "--retry-missing pays for them again.")


def _invalid(bad: int, rows: int) -> str:
    """ "1 of 2 rows is invalid", "2 of 2 rows are invalid"."""
    if bad == rows:
        return "the only row is invalid" if rows == 1 else f"all {rows} rows are invalid"
    return f"{bad} of {rows} rows {'is' if bad == 1 else 'are'} invalid"


def _fingerprint(rt: Runtime, jobs: list[Job]) -> None:
    """Give each row the engine's fingerprint of its picture, by which the store knows what it bought (a row with a
    random seed has none until it runs)."""
    engine = rt.engine()
    for job in jobs:
        if job.provider != "qingbo" and job.seed is None:
            continue
        try:
            job.fingerprint = engine.plan(row_order(job))[0].key
        except ZImageError:
            job.fingerprint = None  # said when the row runs


def run_batch(rt: Runtime, args: argparse.Namespace) -> int:
    """The ``batch`` command; returns the exit code (Ctrl-C propagates as KeyboardInterrupt)."""
    if not 1 <= args.concurrency <= 64:
        raise UsageError(f"--concurrency {args.concurrency} is outside 1-64.", field="concurrency")
    path = Path(args.file)
    jobs = load_jobs(path, fmt=args.format, default_provider=args.provider, response_format=args.response_format,
                     output_format=args.output_format)
    if not jobs:
        raise UsageError(f"The batch file {path} has no rows.", field="file")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} is a file, not a folder; nothing was sent.", field="out")
    bad = [job for job in jobs if job.error]
    for job in bad:
        to_stderr(f"error: {job.where}: {job.error}")
    manifest = Manifest(args.out / MANIFEST_NAME)
    valid = [job for job in jobs if not job.error]
    _fingerprint(rt, valid)
    plan = plan_rows(valid, manifest, rt.store, retry_uncertain=args.retry_uncertain,
                     retry_missing=args.retry_missing)
    todo = plan.todo
    missing = _missing_keys(rt, {job.provider for job, _task_id in todo})
    if args.dry_run:
        if valid:  # a plan of no valid row would only say "0 to run, $0"
            print_dry_run(valid, plan.done, todo, path, recollect=plan.recollect, uncertain=plan.uncertain,
                          missing=plan.missing)
        if bad:
            to_stderr(f"error: {_invalid(len(bad), len(jobs))}; nothing was sent. Fix "
                      f"{'it' if len(bad) == 1 else 'them'}, then run the same command again.")
        for message in missing:
            to_stderr(f"error: {message}")
        return EXIT_USAGE if bad or missing else EXIT_OK
    if bad:
        to_stderr(f"error: {_invalid(len(bad), len(jobs))}; nothing was sent. Fix {'it' if len(bad) == 1 else 'them'} "
                  f"(check with `{PROG} batch {path} --dry-run`).")
        return EXIT_USAGE
    if missing:
        for message in missing:
            to_stderr(f"error: {message}")
        return EXIT_USAGE
    prepare_out(args.out)
    # The rows done earlier print their pictures too, so that every run lists the batch's whole output.
    for job in plan.done:
        for picture in manifest.present_paths(manifest.state.get(job.key) or {}):
            to_stdout(str(picture))
    _announce_skipped(plan)
    bar = ProgressBar(len(todo), enabled=not args.no_progress)
    batch = _Batch(rt, args, manifest, bar, plan.recollect)
    outcomes = _run_pool(rt, batch, todo, args.concurrency)
    bar.close()
    counts = Counter(o.status for o in outcomes)
    cost = sum(o.cost or 0.0 for o in outcomes)
    again = sum(1 for o in outcomes if o.status == "done" and o.job.key in plan.recollect)
    earlier = f"{len(plan.done)} earlier" + (f", {again} collected again from their tasks" if again else "")
    notes = f", {counts['timeout']} still running (run again to collect)" if counts["timeout"] else ""
    if counts["interrupted"]:
        notes += f", {counts['interrupted']} stopped before the end (run again to resume)"
    uncertain = counts["uncertain"] + len(plan.uncertain)
    if uncertain:
        notes += (f", {uncertain} uncertain (may have been charged; not sent again: check the dashboard, then "
                  "--retry-uncertain sends them)")
    if plan.missing:
        notes += f", {len(plan.missing)} with missing pictures (not sent again; --retry-missing pays again)"
    to_stderr(f"batch: {counts['done'] + len(plan.done)} of {len(jobs)} done ({earlier}), {counts['failed']} "
              f"failed{notes}; cost ${cost:.4f} (WaveSpeed part estimated); manifest {manifest.path}")
    if batch.quiet:
        raise OutputClosed()
    complete = (counts["done"] == len(todo) and not uncertain and not plan.missing
                and not any(o.error for o in outcomes))
    return EXIT_OK if complete else EXIT_FAILED


@contextmanager
def _counted_interrupts() -> Iterator[list[int] | None]:
    """Count Ctrl-C presses instead of raising them while the pool runs (in the main thread, with Python's default
    handler): a KeyboardInterrupt raised inside ``queue.get`` can leave its lock released twice, which ends the run
    with a RuntimeError instead of the interrupt. The pool's loop looks at the count at least every 0.2 s."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield None
        return
    presses: list[int] = []
    signal.signal(signal.SIGINT, lambda _signum, _frame: presses.append(1))
    try:
        yield presses
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _run_pool(rt: Runtime, batch: _Batch, todo: list[tuple[Job, str | None]], concurrency: int) -> list[_Outcome]:
    with _counted_interrupts() as presses:
        return _pool(rt, batch, todo, concurrency, presses)


def _pool(rt: Runtime, batch: _Batch, todo: list[tuple[Job, str | None]], concurrency: int,
          presses: list[int] | None) -> list[_Outcome]:
    """Run the rows on ``concurrency`` daemon threads and print each outcome as it comes.

    The first Ctrl-C (or a closed stdout) starts no new row and waits for every row in flight: a request under way
    returns, so its task id reaches the ledger and the manifest, and a wait stops at its next sleep. Then Ctrl-C
    re-raises KeyboardInterrupt. A second Ctrl-C re-raises it at once, leaving the ``submitting`` lines as traces.
    """
    work: queue.Queue[tuple[Job, str | None]] = queue.Queue()
    for row in todo:
        work.put(row)
    results: queue.Queue[_Outcome | BaseException] = queue.Queue()

    def worker() -> None:
        while not rt.stop.is_set():
            try:
                job, task_id = work.get_nowait()
            except queue.Empty:
                return
            try:
                results.put(batch.run_job(job, task_id))
            except KeyboardInterrupt as err:  # only an injected sleep raises it here (tests)
                results.put(err)
                return
            except BaseException as err:  # a bug must not hang the pool
                results.put(_Outcome(job, "failed", error=f"unexpected {type(err).__name__}: {err}"))

    threads = [threading.Thread(target=worker, name=f"zimage-batch-{n}", daemon=True)
               for n in range(min(concurrency, len(todo)))]
    outcomes: list[_Outcome] = []
    interrupted = False
    handled = 0
    try:
        for thread in threads:
            thread.start()
        while True:
            try:
                if presses is not None and len(presses) > handled:
                    new, handled = len(presses) - handled, len(presses)
                    if new > 1 and not interrupted:  # two presses before the loop looked: the second one too
                        interrupted = True
                        rt.stop.set()
                    raise KeyboardInterrupt
                if results.empty() and not any(thread.is_alive() for thread in threads):
                    break
                try:
                    item = results.get(timeout=0.2)
                except queue.Empty:
                    continue
                if isinstance(item, BaseException):
                    raise KeyboardInterrupt from item
                outcomes.append(item)
                if item.status != "interrupted":  # an interrupted row stays as it was: the next run resumes it
                    batch.emit(item)
            except KeyboardInterrupt:
                if interrupted:
                    raise  # the second Ctrl-C: exit now
                interrupted = True
                rt.stop.set()
                batch.announce_stop()
            except OutputClosed:
                batch.quiet = True
                rt.stop.set()
    except KeyboardInterrupt:  # the second Ctrl-C
        rt.stop.set()
        batch.bar.clear()
        raise
    except BaseException:
        # A bug here must not kill a paid request mid-way: the rows in flight finish first (Ctrl-C cuts the wait).
        rt.stop.set()
        batch.bar.clear()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
        raise
    if interrupted:
        batch.bar.clear()
        raise KeyboardInterrupt
    return outcomes
