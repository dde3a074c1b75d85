"""``python -m zimage_api batch FILE``: many jobs from a JSON-lines or CSV file, resumable.

Every row is validated first, with the clients' own validators; a bad row stops the run before anything is sent.
Rows then run on a bounded pool of ``--concurrency`` threads. ``manifest.jsonl`` in ``--out`` gets one line per
row event (appended, flushed and fsynced): ``submitted`` the moment a task id exists, then ``done``, ``failed`` or
``timeout``. The latest line of a row wins. Re-running the same command skips rows that are ``done`` and collects
rows whose task was submitted but not finished (from the ledger, by task id) instead of paying for them again.

A row's key is a hash of its normalised parameters (the reference by content), with ``#2``, ``#3``... for repeated
identical rows, so the key does not move when other rows are added, removed or reordered.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import queue
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .cli import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    QINGBO_USD_PER_IMAGE,
    QINGBO_USD_PROMPT_EXTEND,
    WAVESPEED_USD_PER_IMAGE_ESTIMATE,
    Interrupted,
    Runtime,
    UsageError,
    params_digest,
    read_reference,
    save_pictures,
)
from .errors import ResultExpiredError, TaskFailedError, TaskTimeoutError, ValidationError, ZImageError
from .logs import logger, prompt_hash

__all__ = ["add_batch_parser", "run_batch", "load_jobs", "Job", "Manifest", "PROVIDERS"]

PROVIDERS = ("wavespeed-images", "wavespeed-v3", "qingbo")
_PROVIDER_ALIASES = {"images": "wavespeed-images", "v1/images": "wavespeed-images", "wavespeed": "wavespeed-images",
                     "v3": "wavespeed-v3"}
FIELDS = ("prompt", "negative_prompt", "width", "height", "size", "seed", "provider", "reference", "cfg", "strength",
          "aspect_ratio", "resolution", "prompt_extend", "model", "response_format", "output_format")
_FIELD_ALIASES = {"negative": "negative_prompt", "guidance_scale": "cfg", "image": "reference"}
PASSTHROUGH = ("id", "name", "note", "notes", "comment")  # kept in the manifest, not part of the row's key
_NOT_FOR = {
    "qingbo": ("negative_prompt", "width", "height", "size", "reference", "cfg", "strength", "response_format",
               "output_format"),
    "wavespeed-images": ("aspect_ratio", "resolution", "prompt_extend", "output_format"),
    "wavespeed-v3": ("aspect_ratio", "resolution", "prompt_extend", "cfg"),
}
_TAKES = {
    "qingbo": "it takes prompt, aspect_ratio, resolution, prompt_extend and seed",
    "wavespeed-images": "it takes width and height (or size), cfg, model, response_format, and strength with a "
                        "reference",
    "wavespeed-v3": "it takes width and height (or size), model, output_format, response_format, and strength with "
                    "a reference (no cfg)",
}
_PENDING = ("submitted", "timeout")
MANIFEST_NAME = "manifest.jsonl"


@dataclass
class Job:
    """One row of the batch file, normalised."""

    row: int
    line: int
    provider: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    error: str | None = None

    @property
    def where(self) -> str:
        return f"row {self.row}" + (f" (line {self.line})" if self.line != self.row else "")

    @property
    def seed(self) -> int | None:
        return self.params.get("seed")


# -- reading and validating rows ------------------------------------------------------------------------------------


def _read_rows(path: Path, fmt: str) -> list[tuple[int, int, dict[str, Any], str | None]]:
    """(row, line, fields, error sentence or None) for every non-blank row."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise UsageError(f"Cannot read the batch file {path}: {err.strerror or err}.", field="file") from None
    except UnicodeDecodeError:
        raise UsageError(f"The batch file {path} is not UTF-8 text.", field="file") from None
    if fmt == "auto":
        suffix = path.suffix.lower()
        fmt = "csv" if suffix in (".csv", ".tsv") else "jsonl" if suffix in (".jsonl", ".ndjson", ".json") else (
            "jsonl" if text.lstrip().startswith("{") else "csv")
    rows: list[tuple[int, int, dict[str, Any], str | None]] = []
    if fmt == "jsonl":
        for line_no, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            error = None
            try:
                value = json.loads(line)
            except ValueError as err:
                value, error = {}, f"Not valid JSON ({err.msg} at column {err.colno})."
            if not isinstance(value, dict):
                value, error = {}, f"Expected a JSON object, found {type(value).__name__}."
            rows.append((len(rows) + 1, line_no, value, error))
        return rows
    dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
    reader = csv.DictReader(io.StringIO(text), dialect=dialect)
    headers = [(h or "").strip().lower() for h in reader.fieldnames or []]
    unknown = [h for h in headers if h and _FIELD_ALIASES.get(h, h) not in FIELDS and h not in PASSTHROUGH]
    if unknown:
        raise UsageError(f"The batch file {path} has unknown column(s) {', '.join(map(repr, unknown))}; the "
                         f"columns are {', '.join(FIELDS)} (plus {', '.join(PASSTHROUGH)}, kept as notes).",
                         field="file")
    if "prompt" not in headers:
        raise UsageError(f"The batch file {path} has no 'prompt' column (its header is {', '.join(headers)}).",
                         field="file")
    reader.fieldnames = headers
    for record in reader:
        values = {k: v.strip() for k, v in record.items() if k and isinstance(v, str) and v.strip()}
        if values:
            rows.append((len(rows) + 1, reader.line_num, values, None))
    return rows


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ValidationError(f"The {name} must be a whole number, not {value!r}.", field=name)
    if isinstance(value, int):
        return value
    try:
        number = float(value)
        if number.is_integer():
            return int(number)
    except (TypeError, ValueError):
        pass
    raise ValidationError(f"The {name} must be a whole number, not {value!r}.", field=name)


def _float(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise ValidationError(f"The {name} must be a number, not {value!r}.", field=name)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"The {name} must be a number, not {value!r}.", field=name) from None


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "on"):
        return True
    if text in ("0", "false", "no", "n", "off", ""):
        return False
    raise ValidationError(f"The {name} must be true or false, not {value!r}.", field=name)


def _seed(value: Any) -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "random")):
        return None
    seed = _int(value, "seed")
    return None if seed == -1 else seed


def _size(raw: dict[str, Any]) -> tuple[int | None, int | None]:
    width = _int(raw["width"], "width") if "width" in raw else None
    height = _int(raw["height"], "height") if "height" in raw else None
    if "size" in raw:
        text = str(raw["size"]).lower().replace("*", "x").replace("×", "x")
        parts = text.split("x")
        if len(parts) != 2:
            raise ValidationError(f"The size {raw['size']!r} must look like 1024x768.", field="size")
        w, h = _int(parts[0].strip(), "width"), _int(parts[1].strip(), "height")
        if (width, height) not in ((None, None), (w, h)):
            raise ValidationError(f"The size {raw['size']!r} contradicts width/height {width}x{height}.",
                                  field="size")
        width, height = w, h
    if (width is None) != (height is None):
        raise ValidationError("Give both width and height (or size), or neither.", field="size")
    return width, height


def normalise_row(raw: dict[str, Any], *, base_dir: Path, default_provider: str,
                  response_format: str | None, output_format: str | None) -> tuple[str, dict[str, Any],
                                                                                    dict[str, Any]]:
    """(provider, normalised params, passthrough notes), validated with the clients' own checks."""
    from .openai_images import ImagesClient
    from .qingbo import QingboClient
    from .validation import check_number
    from .wavespeed_v3 import WaveSpeedClient

    fields: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    for name, value in raw.items():
        canonical = _FIELD_ALIASES.get(str(name).strip().lower(), str(name).strip().lower())
        if canonical in PASSTHROUGH:
            extras[canonical] = value
        elif canonical not in FIELDS:
            raise ValidationError(f"Unknown field {name!r}; the fields are {', '.join(FIELDS)}.", field=str(name))
        elif value is not None and value != "":
            fields[canonical] = value
    provider = str(fields.get("provider") or default_provider).strip().lower()
    provider = _PROVIDER_ALIASES.get(provider, provider)
    if provider not in PROVIDERS:
        raise ValidationError(f"The provider {fields.get('provider')!r} is not one of {', '.join(PROVIDERS)}.",
                              field="provider")
    misplaced = [name for name in _NOT_FOR[provider] if name in fields]
    if misplaced:
        raise ValidationError(f"{provider} does not take {', '.join(misplaced)}; {_TAKES[provider]}.",
                              field=misplaced[0])
    prompt = fields.get("prompt", "")
    seed = _seed(fields.get("seed"))
    if provider == "qingbo":
        if str(fields.get("model", "z-image-turbo")).lower() != "z-image-turbo":
            raise ValidationError(f"Qingbo runs z-image-turbo only, not {fields['model']!r}.", field="model")
        body = QingboClient.build_body(prompt, aspect_ratio=str(fields.get("aspect_ratio", "1:1")),
                                       resolution=str(fields.get("resolution", "1K")),
                                       prompt_extend=_bool(fields.get("prompt_extend", False), "prompt_extend"),
                                       seed=seed)
        params = {"provider": provider, "prompt": body["prompt"], "aspect_ratio": body["aspect_ratio"],
                  "resolution": body["resolution"], "prompt_extend": bool(body.get("prompt_extend")), "seed": seed}
        return provider, params, extras

    width, height = _size(fields)
    reference = None
    params: dict[str, Any] = {"provider": provider, "model": str(fields.get("model", "Z-Image-Base")),
                              "prompt": prompt, "negative_prompt": str(fields.get("negative_prompt", "")),
                              "seed": seed}
    if "reference" in fields:
        reference = Path(str(fields["reference"])).expanduser()
        reference = reference if reference.is_absolute() else base_dir / reference
        data, _name, _type = read_reference(reference)
        params["reference"] = str(reference.resolve())
        params["reference_sha256"] = hashlib.sha256(reference.read_bytes()).hexdigest()[:16]
        strength = _float(fields.get("strength", 0.5 if provider == "wavespeed-images" else 0.6), "strength")
        params["strength"] = check_number(strength, "strength", 0.0, 1.0)
        if width is None and provider == "wavespeed-v3":
            from .images import open_image

            ref_w, ref_h = open_image(data).size
            width, height = (min(max(side, 256), 1536) for side in (ref_w, ref_h))
    elif "strength" in fields:
        raise ValidationError("The strength needs a reference picture.", field="strength")
    if reference is None and width is None:
        width, height = 1024, 1024
    params.update(width=width, height=height)
    if provider == "wavespeed-images":
        cfg = _float(fields.get("cfg", 6.5 if reference else 7.5), "cfg")
        fmt = str(fields.get("response_format") or response_format or "b64_json")
        ImagesClient.build_body(prompt, params["negative_prompt"], cfg, width, height, seed, 1, params["model"], fmt)
        params.update(cfg=cfg, response_format=fmt)
    else:
        fmt = str(fields.get("response_format") or "url")
        out_fmt = str(fields.get("output_format") or output_format or "png")
        from .validation import check_choice

        check_choice(fmt, "response_format", ("b64_json", "url"))
        WaveSpeedClient.build_body(prompt, params["model"], params["negative_prompt"], width or 1024, height or 1024,
                              seed, "reference" if reference else None, params.get("strength"), out_fmt, False,
                              fmt == "b64_json")
        params.update(response_format=fmt, output_format=out_fmt)
    return provider, params, extras


def load_jobs(path: Path, *, fmt: str = "auto", default_provider: str = "wavespeed-images",
              response_format: str | None = None, output_format: str | None = None) -> list[Job]:
    """Every row as a :class:`Job`; invalid rows carry ``error`` (a sentence) instead of raising."""
    jobs: list[Job] = []
    seen: Counter[str] = Counter()
    for row, line, raw, error in _read_rows(path, fmt):
        job = Job(row=row, line=line, error=error)
        jobs.append(job)
        if error:
            continue
        try:
            job.provider, job.params, job.extras = normalise_row(
                raw, base_dir=path.parent, default_provider=default_provider, response_format=response_format,
                output_format=output_format)
        except ZImageError as err:
            job.error = " ".join(str(err).split())
            continue
        # The reference counts by content (its hash), not by path; response_format only changes the transport.
        digest = params_digest({k: v for k, v in job.params.items() if k not in ("reference", "response_format")})
        seen[digest] += 1
        job.key = digest if seen[digest] == 1 else f"{digest}#{seen[digest]}"
    return jobs


# -- the manifest ---------------------------------------------------------------------------------------------------


class Manifest:
    """``manifest.jsonl``: one JSON line per row event; the latest line of a row (by key) is its state."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.state: dict[str, dict[str, Any]] = {}
        self.failed_tasks: Counter[str] = Counter()
        try:
            handle = open(path, encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return
        with handle:
            for number, line in enumerate(handle, 1):
                try:
                    record = json.loads(line)
                    key = record["key"]
                except (ValueError, KeyError, TypeError):
                    if line.strip():
                        logger.warning("manifest %s line %d is damaged and was skipped", path, number)
                    continue
                self.state[key] = record
                if record.get("status") == "failed" and record.get("task_id"):
                    self.failed_tasks[key] += 1

    def write(self, job: Job, status: str, *, task_id: str | None = None, paths: list[Path] | None = None,
              cost_usd: float | None = None, estimated: bool = False, error: str | None = None) -> None:
        record: dict[str, Any] = {
            "row": job.row, "key": job.key, "status": status, "provider": job.provider, "params": job.params,
            "prompt_sha256": prompt_hash(job.params["prompt"]), "seed": job.seed, "task_id": task_id,
            "cost_usd": cost_usd, "cost_estimated": estimated, "paths": [str(p) for p in paths or []],
            "error": error, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if job.extras:
            record["notes"] = job.extras
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            self.state[job.key] = record


# -- running --------------------------------------------------------------------------------------------------------


def _estimate(job: Job) -> float:
    if job.provider == "qingbo":
        return QINGBO_USD_PER_IMAGE + (QINGBO_USD_PROMPT_EXTEND if job.params.get("prompt_extend") else 0.0)
    return WAVESPEED_USD_PER_IMAGE_ESTIMATE


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
        with self._lock:
            self.running[key] = fraction
            if self.tty and time.monotonic() - self._drawn > 0.1:
                self._draw()

    def finish(self, key: str, ok: bool) -> None:
        with self._lock:
            self.running.pop(key, None)
            self.done += ok
            self.failed += not ok
            self._draw()

    def clear(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\r\033[K")

    def close(self) -> None:
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
    def __init__(self, rt: Runtime, args: argparse.Namespace, manifest: Manifest, bar: ProgressBar) -> None:
        self.rt, self.args, self.manifest, self.bar = rt, args, manifest, bar
        self.out: Path = args.out
        self.tag_prefix = f"{manifest.path.resolve()}#"
        self.print_lock = threading.Lock()

    def batch_tag(self, job: Job) -> str:
        return self.tag_prefix + job.key

    def run_job(self, job: Job, task_id: str | None) -> _Outcome:
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
            failed_id = getattr(err, "task_id", None) or self._task_of(job)
            self.manifest.write(job, "failed", task_id=failed_id, error=str(err))
            return _Outcome(job, "failed", error=str(err))
        except ZImageError as err:
            # The task (if any) still exists and may finish: keep it pending so a re-run collects it, not re-pays.
            pending = self._task_of(job)
            self.manifest.write(job, "submitted" if pending else "failed", task_id=pending, error=str(err))
            return _Outcome(job, "failed", error=str(err))
        except OSError as err:
            # A paid task's pictures are kept beside the ledger: a re-run collects them without a request.
            pending = self._task_of(job)
            self.manifest.write(job, "submitted" if pending else "failed", task_id=pending, error=str(err))
            return _Outcome(job, "failed", error=f"could not write the pictures: {err}")

    def _task_of(self, job: Job) -> str | None:
        record = self.manifest.state.get(job.key) or {}
        return record.get("task_id") if record.get("status") in _PENDING else None

    def _images(self, job: Job) -> _Outcome:
        p = job.params
        client = self.rt.images(read_timeout=self.args.timeout)
        options: dict[str, Any] = {"negative_prompt": p["negative_prompt"], "guidance_scale": p["cfg"],
                                   "seed": p["seed"], "model": p["model"], "response_format": p["response_format"]}
        if p["width"] is not None:
            options.update(width=p["width"], height=p["height"])
        if p.get("reference"):
            result = client.edit(read_reference(p["reference"]), p["prompt"], strength=p["strength"], **options)
        else:
            result = client.generate(p["prompt"], **options)
        tag = "wavespeed-edit" if p.get("reference") else "wavespeed"
        paths = save_pictures(self.out, tag, result.prompt_sha256, p["seed"], result.images)
        cost = round(WAVESPEED_USD_PER_IMAGE_ESTIMATE * len(result.images), 6)
        self.manifest.write(job, "done", paths=paths, cost_usd=cost, estimated=True)
        return _Outcome(job, "done", paths, cost)

    def _task(self, job: Job, task_id: str | None) -> _Outcome:
        rt, p = self.rt, job.params
        qingbo = job.provider == "qingbo"
        provider = "qingbo" if qingbo else "wavespeed"
        client = rt.qingbo() if qingbo else rt.v3()
        extra: dict[str, Any] = {}
        if task_id is None:
            if qingbo:
                attempt = self.manifest.failed_tasks[job.key]
                idempotency = "zimage-batch-" + hashlib.sha256(
                    f"{self.batch_tag(job)}#{attempt}".encode()).hexdigest()[:32]
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
            rt.ledger.append(task_id, batch_row=self.batch_tag(job))
            self.manifest.write(job, "submitted", task_id=task_id)
            extra["first"] = first
        if not qingbo:
            extra.update(seed=p["seed"], size=(p["width"], p["height"]))
        with rt.tracking(task_id, provider):
            result = client.collect(task_id, on_progress=lambda f, _t: self.bar.progress(job.key, f), **extra,
                                    **rt.wait_options(self.args.timeout))
        tag = provider + ("-edit" if p.get("reference") else "")
        paths = save_pictures(self.out, tag, task_id, p["seed"], result.images)
        cost, estimated = (result.cost_usd, False) if result.cost_usd is not None else (_estimate(job), True)
        self.manifest.write(job, "done", task_id=task_id, paths=paths, cost_usd=cost, estimated=estimated)
        return _Outcome(job, "done", paths, cost)

    def emit(self, outcome: _Outcome) -> None:
        with self.print_lock:
            self.bar.clear()
            for path in outcome.paths:
                print(path, file=sys.stdout, flush=True)
            if outcome.error:
                print(f"error: {outcome.job.where}: {' '.join(outcome.error.split())}", file=sys.stderr,
                      flush=True)
            self.bar.finish(outcome.job.key, outcome.status == "done")


def _plan(jobs: list[Job], manifest: Manifest, rt: Runtime) -> tuple[list[Job], list[tuple[Job, str | None]]]:
    """(rows already done, rows to run with the task id to collect or None to submit)."""
    ledger_tasks: dict[str, str] = {}
    prefix = f"{manifest.path.resolve()}#"
    for entry in rt.ledger.entries().values():
        tag = entry.get("batch_row")
        if isinstance(tag, str) and tag.startswith(prefix) and entry.get("status") not in ("failed", "cancelled",
                                                                                          "expired"):
            ledger_tasks[tag[len(prefix):]] = str(entry["task_id"])
    done: list[Job] = []
    todo: list[tuple[Job, str | None]] = []
    for job in jobs:
        record = manifest.state.get(job.key) or {}
        if record.get("status") == "done":
            done.append(job)
        elif record.get("status") in _PENDING and record.get("task_id"):
            todo.append((job, str(record["task_id"])))
        elif record.get("task_id"):
            todo.append((job, None))  # its task failed (or its result expired): a new task
        else:
            # No task known to the manifest: the line may have been lost after the ledger got the id.
            todo.append((job, ledger_tasks.get(job.key)))
    return done, todo


def _dry_run(jobs: list[Job], done: list[Job], todo: list[tuple[Job, str | None]], path: Path) -> None:
    collect = [job for job, task_id in todo if task_id]
    fresh = [job for job, task_id in todo if not task_id]
    print(f"batch {path}: {len(jobs)} rows: {len(done)} done earlier (skipped), {len(collect)} submitted earlier "
          f"(to collect, already paid), {len(fresh)} to run")
    total = 0.0
    for provider in PROVIDERS:
        rows = [job for job in fresh if job.provider == provider]
        if not rows:
            continue
        cost = sum(_estimate(job) for job in rows)
        total += cost
        count = f"{len(rows)} picture{'s' if len(rows) > 1 else ''}"
        if provider == "qingbo":
            print(f"  {provider:<17} {count:<13} ${cost:.4f}  (${QINGBO_USD_PER_IMAGE} each, "
                  f"+${QINGBO_USD_PROMPT_EXTEND} with prompt_extend)")
        else:
            print(f"  {provider:<17} {count:<13} ~${cost:.4f} (estimate: about "
                  f"${WAVESPEED_USD_PER_IMAGE_ESTIMATE:.2f} each)")
    print(f"estimated cost: ${total:.4f} (WaveSpeed prices are estimates; nothing was sent)")


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
            messages.append(" ".join(str(err).split()))
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
        print(f"error: {job.where}: {job.error}", file=sys.stderr, flush=True)
    manifest = Manifest(args.out / MANIFEST_NAME)
    valid = [job for job in jobs if not job.error]
    done, todo = _plan(valid, manifest, rt)
    missing = _missing_keys(rt, {job.provider for job, _task_id in todo})
    if args.dry_run:
        _dry_run(valid, done, todo, path)
        if bad:
            print(f"error: {len(bad)} of {len(jobs)} rows are invalid.", file=sys.stderr)
        for message in missing:
            print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE if bad or missing else EXIT_OK
    if bad:
        print(f"error: {len(bad)} of {len(jobs)} rows are invalid; nothing was sent. Fix them (check with "
              f"`{PROG} batch {path} --dry-run`).", file=sys.stderr)
        return EXIT_USAGE
    if missing:
        for message in missing:
            print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    bar = ProgressBar(len(todo), enabled=not args.no_progress)
    batch = _Batch(rt, args, manifest, bar)
    outcomes = _run_pool(rt, batch, todo, args.concurrency)
    bar.close()
    counts = Counter(o.status for o in outcomes)
    cost = sum(o.cost or 0.0 for o in outcomes)
    running = f", {counts['timeout']} still running (run again to collect)" if counts["timeout"] else ""
    print(f"batch: {counts['done'] + len(done)} of {len(jobs)} done ({len(done)} earlier), {counts['failed']} "
          f"failed{running}; cost ${cost:.4f} (WaveSpeed part estimated); manifest {manifest.path}",
          file=sys.stderr, flush=True)
    return EXIT_OK if counts["done"] == len(todo) else EXIT_FAILED


def _run_pool(rt: Runtime, batch: _Batch, todo: list[tuple[Job, str | None]], concurrency: int) -> list[_Outcome]:
    """Run the rows on ``concurrency`` daemon threads; Ctrl-C stops the workers and re-raises."""
    work: queue.Queue[tuple[Job, str | None]] = queue.Queue()
    for item in todo:
        work.put(item)
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


def add_batch_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register the ``batch`` command."""
    parser = sub.add_parser(
        "batch", parents=parents, formatter_class=argparse.RawDescriptionHelpFormatter,
        help="run many jobs from a JSON-lines or CSV file (resumable)",
        description="Run one job per row of FILE (JSON lines or CSV with a header). Fields: prompt, "
                    "negative_prompt, width and height (or size 1024x768), seed, provider (wavespeed-images "
                    "(default), wavespeed-v3, qingbo), reference (a picture path, relative to FILE's folder: makes "
                    "the row an edit), cfg, strength, aspect_ratio, resolution, prompt_extend, model, "
                    "response_format, output_format; id/name/notes are kept in the manifest. Every row is checked "
                    "before anything is sent. --out gets the pictures and manifest.jsonl (parameters, prompt "
                    "hash, seed, task id, cost, paths and status per row). Running the same command again "
                    "resumes: done rows are skipped, and submitted tasks are collected, never paid twice.",
        epilog=f"""examples:
  {PROG} batch jobs.jsonl --dry-run            # check every row and estimate the cost; sends nothing
  {PROG} batch jobs.csv --concurrency 4 --out run1
  {PROG} batch jobs.csv --concurrency 4 --out run1   # again: resumes where it stopped

jobs.jsonl:
  {{"prompt": "a red fox in snow", "seed": 42, "width": 1024, "height": 768}}
  {{"prompt": "a lighthouse", "provider": "qingbo", "aspect_ratio": "16:9"}}
  {{"prompt": "the same in winter", "reference": "street.jpg", "strength": 0.5}}

jobs.csv:
  prompt,provider,size,seed,cfg
  a red fox in snow,wavespeed-images,1024x768,42,7.5
  a lighthouse at dusk,wavespeed-v3,1024x1024,,

prices: Qingbo $0.010625 per picture (+$0.002 with prompt_extend); WaveSpeed Z-Image about $0.01 (an estimate).""")
    parser.add_argument("file", metavar="FILE", type=Path, help="the jobs: .jsonl/.ndjson or .csv/.tsv")
    parser.add_argument("--concurrency", metavar="N", type=int, default=2,
                        help="rows running at once, 1-64 (default: 2, the limit of a default WaveSpeed account)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate every row and print the estimated cost; send nothing")
    parser.add_argument("--provider", choices=PROVIDERS, default="wavespeed-images",
                        help="the provider of rows that name none (default: wavespeed-images)")
    parser.add_argument("--response-format", choices=("b64_json", "url"), default=None,
                        help="default response_format of wavespeed-images rows (default: b64_json)")
    parser.add_argument("--output-format", choices=("png", "jpeg"), default=None,
                        help="default output_format of wavespeed-v3 rows (default: png)")
    parser.add_argument("--format", choices=("auto", "jsonl", "csv"), default="auto",
                        help="the file's format (default: auto, from the extension or the first character)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser
