"""``python -m zimage_api batch FILE``: running the rows of a batch file on a bounded pool, resumably.

The rows are read and checked first (:mod:`.batch_rows`); a bad row, or a missing key, stops the run before anything
is sent. Rows then run on ``--concurrency`` daemon threads; each row's events go to the manifest
(:mod:`.batch_manifest`) the moment they happen, so re-running the same command resumes: done rows are skipped and
submitted tasks are collected, never paid twice. A one-line progress bar runs on stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import queue
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .batch_manifest import MANIFEST_NAME, Manifest, plan_rows
from .batch_rows import WAVESPEED_USD_PER_IMAGE_ESTIMATE, Job, estimate_cost, load_jobs, print_dry_run
from .cli_commands import picture_tag, read_reference, request_images, save_pictures
from .cli_runtime import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    Interrupted,
    Runtime,
    UsageError,
    one_line,
    to_stderr,
    to_stdout,
)
from .errors import ResultExpiredError, TaskFailedError, TaskTimeoutError, ValidationError, ZImageError

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
    status: str  # done | failed | timeout | interrupted
    paths: list[Path] = field(default_factory=list)
    cost: float | None = None
    error: str | None = None


class _Batch:
    """Runs one row at a time on any worker thread, records its events in the manifest and prints its outcome."""

    def __init__(self, rt: Runtime, args: argparse.Namespace, manifest: Manifest, bar: ProgressBar) -> None:
        self.rt, self.args, self.manifest, self.bar = rt, args, manifest, bar
        self.out: Path = args.out
        self.print_lock = threading.Lock()

    def run_job(self, job: Job, task_id: str | None) -> _Outcome:
        """Run the row (submit, or collect ``task_id``), turning a job's error into a recorded outcome."""
        try:
            if job.provider == "wavespeed-images" and task_id is None:
                return self._images(job)
            return self._task(job, task_id)
        except Interrupted:
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
            self.manifest.write(job, "submitted" if pending else "failed", task_id=pending, error=str(err))
            text = str(err) if isinstance(err, ZImageError) else f"could not write the pictures: {err}"
            return _Outcome(job, "failed", error=text)

    def _images(self, job: Job) -> _Outcome:
        p = job.params
        upload = read_reference(p["reference"]) if p.get("reference") else None
        result = request_images(self.rt.images(read_timeout=self.args.timeout), p["prompt"], upload,
                                strength=p.get("strength"), negative_prompt=p["negative_prompt"],
                                guidance_scale=p["cfg"], seed=p["seed"], model=p["model"],
                                response_format=p["response_format"], width=p["width"], height=p["height"])
        tag = picture_tag("wavespeed", bool(upload))
        paths = save_pictures(self.out, tag, result.prompt_sha256, p["seed"], result.images)
        cost = round(WAVESPEED_USD_PER_IMAGE_ESTIMATE * len(result.images), 6)
        self.manifest.write(job, "done", paths=paths, cost_usd=cost, estimated=True)
        return _Outcome(job, "done", paths, cost)

    def _task(self, job: Job, task_id: str | None) -> _Outcome:
        rt, p = self.rt, job.params
        qingbo = job.provider == "qingbo"
        provider = "qingbo" if qingbo else "wavespeed"
        client = rt.task_client(provider)
        extra: dict[str, Any] = {}
        if task_id is None:
            if qingbo:
                attempt = self.manifest.failed_tasks[job.key]
                idempotency = "zimage-batch-" + hashlib.sha256(
                    f"{self.manifest.ledger_tag(job)}#{attempt}".encode()).hexdigest()[:32]
                first: Any = client.submit(p["prompt"], aspect_ratio=p["aspect_ratio"], resolution=p["resolution"],
                                           prompt_extend=p["prompt_extend"], seed=p["seed"],
                                           idempotency_key=idempotency)
                task_id = first.task_id
            else:
                options: dict[str, Any] = {}
                if p.get("reference"):
                    options.update(image_url=client.upload(*read_reference(p["reference"])), strength=p["strength"])
                first = client.submit(p["prompt"], model=p["model"], negative_prompt=p["negative_prompt"],
                                      width=p["width"], height=p["height"], seed=p["seed"],
                                      output_format=p["output_format"],
                                      base64_output=p["response_format"] == "b64_json", **options)
                task_id = first.id
            rt.track(task_id, provider)
            rt.ledger.append(task_id, batch_row=self.manifest.ledger_tag(job))
            self.manifest.write(job, "submitted", task_id=task_id)
            extra["first"] = first
        if not qingbo:
            extra.update(seed=p["seed"], size=(p["width"], p["height"]))
        result = rt.collect(task_id, provider, self.args.timeout,
                            on_progress=lambda f, _t: self.bar.progress(job.key, f), **extra)
        paths = save_pictures(self.out, picture_tag(provider, bool(p.get("reference"))), task_id, p["seed"],
                              result.images)
        cost, estimated = (result.cost_usd, False) if result.cost_usd is not None else (estimate_cost(job), True)
        self.manifest.write(job, "done", task_id=task_id, paths=paths, cost_usd=cost, estimated=estimated)
        return _Outcome(job, "done", paths, cost)

    def emit(self, outcome: _Outcome) -> None:
        """Print the row's pictures (stdout) or its error (stderr) and move the progress bar."""
        with self.print_lock:
            self.bar.clear()
            for path in outcome.paths:
                to_stdout(str(path))
            if outcome.error:
                to_stderr(f"error: {outcome.job.where}: {' '.join(outcome.error.split())}")
            self.bar.finish(outcome.job.key, outcome.status == "done")


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


def run_batch(rt: Runtime, args: argparse.Namespace) -> int:
    """The ``batch`` command; returns the exit code (Ctrl-C propagates as KeyboardInterrupt)."""
    if not 1 <= args.concurrency <= 64:
        raise UsageError(f"The concurrency {args.concurrency} is outside 1-64.", field="concurrency")
    path = Path(args.file)
    jobs = load_jobs(path, fmt=args.format, default_provider=args.provider, response_format=args.response_format,
                     output_format=args.output_format)
    if not jobs:
        raise UsageError(f"The batch file {path} has no rows.", field="file")
    bad = [job for job in jobs if job.error]
    for job in bad:
        to_stderr(f"error: {job.where}: {job.error}")
    manifest = Manifest(args.out / MANIFEST_NAME)
    valid = [job for job in jobs if not job.error]
    done, todo = plan_rows(valid, manifest, rt.ledger)
    missing = _missing_keys(rt, {job.provider for job, _task_id in todo})
    if args.dry_run:
        print_dry_run(valid, done, todo, path)
        if bad:
            to_stderr(f"error: {len(bad)} of {len(jobs)} rows are invalid.")
        for message in missing:
            to_stderr(f"error: {message}")
        return EXIT_USAGE if bad or missing else EXIT_OK
    if bad:
        to_stderr(f"error: {len(bad)} of {len(jobs)} rows are invalid; nothing was sent. Fix them (check with "
                  f"`{PROG} batch {path} --dry-run`).")
        return EXIT_USAGE
    if missing:
        for message in missing:
            to_stderr(f"error: {message}")
        return EXIT_USAGE
    bar = ProgressBar(len(todo), enabled=not args.no_progress)
    batch = _Batch(rt, args, manifest, bar)
    outcomes = _run_pool(rt, batch, todo, args.concurrency)
    bar.close()
    counts = Counter(o.status for o in outcomes)
    cost = sum(o.cost or 0.0 for o in outcomes)
    running = f", {counts['timeout']} still running (run again to collect)" if counts["timeout"] else ""
    to_stderr(f"batch: {counts['done'] + len(done)} of {len(jobs)} done ({len(done)} earlier), {counts['failed']} "
              f"failed{running}; cost ${cost:.4f} (WaveSpeed part estimated); manifest {manifest.path}")
    return EXIT_OK if counts["done"] == len(todo) else EXIT_FAILED


def _run_pool(rt: Runtime, batch: _Batch, todo: list[tuple[Job, str | None]], concurrency: int) -> list[_Outcome]:
    """Run the rows on ``concurrency`` daemon threads; Ctrl-C stops the workers and re-raises."""
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
            except KeyboardInterrupt as err:
                results.put(err)
                return
            except BaseException as err:  # a bug must not hang the pool
                results.put(_Outcome(job, "failed", error=f"unexpected {type(err).__name__}: {err}"))

    threads = [threading.Thread(target=worker, name=f"zimage-batch-{n}", daemon=True)
               for n in range(min(concurrency, len(todo)))]
    for thread in threads:
        thread.start()
    outcomes: list[_Outcome] = []
    try:
        while len(outcomes) < len(todo):
            try:
                item = results.get(timeout=0.2)
            except queue.Empty:
                if not any(t.is_alive() for t in threads) and results.empty():
                    break
                continue
            if isinstance(item, BaseException):
                raise KeyboardInterrupt from item
            if item.status == "interrupted":
                raise KeyboardInterrupt
            outcomes.append(item)
            batch.emit(item)
    except KeyboardInterrupt:
        rt.stop.set()
        for thread in threads:
            thread.join(timeout=2.0)
        batch.bar.clear()
        raise
    for thread in threads:
        thread.join()
    return outcomes
