"""The single commands: ``generate``, ``edit``, ``submit``, ``poll`` and ``tasks``, and the pictures they write.

Pictures go to ``--out`` with predictable names, ``<tag>_<prompt-hash|task-id>_<seed|random>_<i>.<ext>``, and each
command prints one line per picture (its path) or per task id on stdout, as soon as it exists.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .cli_runtime import PROG, Runtime, SavedElsewhere, UsageError, one_line, to_stderr, to_stdout
from .config import QINGBO, WAVESPEED
from .errors import ZImageError
from .results import GenerationResult

__all__ = ["generate_pictures", "submit_tasks", "collect_tasks", "list_tasks", "task_json", "resume_tasks",
           "read_task_ids",
           "save_pictures", "save_paid_pictures", "prepare_out", "picture_extension", "picture_tag", "read_reference",
           "v3_size_for_reference", "request_images"]

# -- pictures on disk -----------------------------------------------------------------------------------------------

_write_lock = threading.Lock()


def picture_extension(data: bytes) -> str:
    """The file extension matching the encoded bytes (the provider's bytes are saved as they are)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "bin"


def picture_tag(provider: str, edit: bool) -> str:
    """The first part of a picture's file name: ``wavespeed``, ``wavespeed-edit``, ``qingbo``..."""
    return provider + ("-edit" if edit else "")


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:96] or "x"


def save_pictures(out: Path, tag: str, ident: str, seed: int | None, images: Sequence[bytes]) -> list[Path]:
    """Write ``images`` as ``<tag>_<ident>_<seed|random>_<i>.<ext>`` in ``out`` and return the paths.

    A file that already holds the same bytes is reused; a different picture never overwrites it, it gets a
    ``-1``, ``-2``... suffix instead. Each file appears whole (written aside, then renamed).
    """
    out.mkdir(parents=True, exist_ok=True)
    seed_text = "random" if seed is None else str(seed)
    paths: list[Path] = []
    for index, data in enumerate(images):
        stem = f"{_safe(tag)}_{_safe(ident)}_{seed_text}_{index}"
        ext = picture_extension(data)
        with _write_lock:
            path = out / f"{stem}.{ext}"
            suffix = 0
            while path.exists() and path.read_bytes() != data:
                suffix += 1
                path = out / f"{stem}-{suffix}.{ext}"
            if not path.exists():
                tmp = path.with_name(path.name + ".part")
                tmp.write_bytes(data)
                os.replace(tmp, path)
        paths.append(path)
    return paths


def prepare_out(out: Path) -> Path:
    """Create ``out`` and check that a file can be written in it, before anything is paid for.

    Raises :class:`UsageError` (exit 2) naming the folder and the reason.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".zimage-write-check-"):
            pass
    except FileExistsError:
        raise UsageError(f"--out {out} is a file, not a folder; nothing was sent.", field="out") from None
    except OSError as err:
        raise UsageError(f"Cannot write pictures to --out {out} ({err.strerror or err}); nothing was sent.",
                         field="out") from None
    return out


def save_paid_pictures(rt: Runtime, out: Path, tag: str, ident: str, seed: int | None, images: Sequence[bytes],
                       kept: Sequence[str] = ()) -> tuple[list[Path], str | None]:
    """Write paid pictures to ``out``; when that fails, keep them in the ledger's ``results`` folder instead.

    ``kept`` are copies the task clients already keep there. Returns the paths and, when they are not in ``out``,
    a sentence saying why and where they are. Raises :class:`OSError` only when neither folder can be written.
    """
    try:
        return save_pictures(out, tag, ident, seed, images), None
    except OSError as err:
        reason = err.strerror or str(err)
    if kept and all(Path(path).is_file() for path in kept):
        paths = [Path(path) for path in kept]
    else:
        try:
            paths = save_pictures(rt.ledger.results_dir, tag, ident, seed, images)
        except OSError as err:
            raise OSError(f"Could not write the paid pictures to {out} ({reason}) nor to "
                          f"{rt.ledger.results_dir} ({err.strerror or err}).") from err
    return paths, (f"Could not write the pictures to {out} ({reason}); they were paid for, so they are saved in "
                   f"{paths[0].parent} instead.")


def read_reference(path: str | os.PathLike[str]) -> tuple[bytes, str, str]:
    """Open a reference picture and encode it for upload, downscaled to at most 1024 px on the long side."""
    from .images import open_image, prepare_upload

    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as err:
        raise UsageError(f"Cannot read the reference picture {file}: {err.strerror or err}.",
                         field="reference") from None
    picture = open_image(data, source=f"the reference file {file}")
    return prepare_upload(picture, max_side=1024)


def v3_size_for_reference(data: bytes) -> tuple[int, int]:
    """The v3 picture size when none is given for an edit: the reference's own, each side clamped to 256-1536."""
    from .images import open_image

    ref_w, ref_h = open_image(data).size
    return min(max(ref_w, 256), 1536), min(max(ref_h, 256), 1536)


def _seed_at(seed: int | None, index: int) -> int | None:
    return None if seed is None or seed == -1 else seed + index


def _check_seed_range(seed: int | None, count: int) -> None:
    """The seeds ``seed``..``seed+count-1`` must all be valid, checked before the first one is paid for."""
    from .validation import check_seed

    check_seed(seed)
    last = _seed_at(seed, count - 1)
    if last is not None and last >= 2 ** 63:
        raise UsageError(f"--seed {seed} with --count {count} would use seeds up to {last}, past the largest seed "
                         f"{2 ** 63 - 1}; use a seed of at most {2 ** 63 - count}. Nothing was sent.", field="seed")


# -- WaveSpeed ------------------------------------------------------------------------------------------------------


def request_images(client: Any, prompt: str, upload: tuple[bytes, str, str] | None, *, strength: float | None,
                   **options: Any) -> GenerationResult:
    """One v1/images request: an edit of ``upload`` when given, else a generation.

    Options that are ``None`` (and ``strength`` without a reference) are left out, so the client's defaults apply.
    """
    given = {name: value for name, value in options.items() if value is not None}
    if upload:
        if strength is not None:
            given["strength"] = strength
        return client.edit(upload, prompt, **given)
    return client.generate(prompt, **given)


def generate_pictures(rt: Runtime, *, prompt: str, out: Path, api: str = "v1/images", reference: str | None = None,
                      model: str = "Z-Image-Base", negative: str = "", cfg: float | None = None,
                      strength: float | None = None, width: int | None = None, height: int | None = None,
                      seed: int | None = None, count: int = 1, response_format: str | None = None,
                      output_format: str | None = None, timeout: float | None = None) -> list[Path]:
    """Generate (or edit, with ``reference``) at WaveSpeed, write the pictures, print and return their paths.

    A failed picture does not stop the others; its error is raised once they are collected.
    """
    from .validation import check_count, check_number

    count = check_count(count, field="count")
    if (width is None) != (height is None):
        raise UsageError("Give both --width and --height, or neither.", field="size")
    upload = read_reference(reference) if reference else None
    tag = picture_tag("wavespeed", bool(upload))
    if api == "v3":
        if cfg is not None:
            raise UsageError("--cfg is not part of WaveSpeed's v3 API; use --api v1/images to set it.", field="cfg")
        return _generate_v3(rt, prompt=prompt, out=out, upload=upload, tag=tag, model=model, negative=negative,
                            strength=strength, width=width, height=height, seed=seed, count=count,
                            response_format=response_format, output_format=output_format, timeout=timeout)
    if output_format is not None:
        raise UsageError("--output-format applies to --api v3 only; v1/images answers PNG.", field="output_format")
    client = rt.images(read_timeout=timeout)
    # The client's own checks first, so that a bad option is reported before --out is created.
    client.build_body(prompt, negative, (6.5 if upload else 7.5) if cfg is None else cfg, width, height, seed,
                      count, model, response_format or "b64_json")
    if upload and strength is not None:
        check_number(strength, "strength", 0.0, 1.0)
    prepare_out(out)
    with rt.paying("the image request"):
        result = request_images(client, prompt, upload, strength=strength, negative_prompt=negative, seed=seed,
                                n=count, model=model, guidance_scale=cfg, response_format=response_format,
                                width=width, height=height)
    paths, elsewhere = save_paid_pictures(rt, out, tag, result.prompt_sha256, _seed_at(seed, 0), result.images)
    for path in paths:
        to_stdout(str(path))
    if elsewhere:
        raise SavedElsewhere(elsewhere)
    return paths


def _generate_v3(rt: Runtime, *, prompt: str, out: Path, upload: tuple[bytes, str, str] | None, tag: str, model: str,
                 negative: str, strength: float | None, width: int | None, height: int | None, seed: int | None,
                 count: int, response_format: str | None, output_format: str | None,
                 timeout: float | None) -> list[Path]:
    client = rt.v3()
    options: dict[str, Any] = {"model": model, "negative_prompt": negative,
                               "output_format": output_format or "png",
                               "base64_output": response_format == "b64_json"}
    if upload:
        if width is None:
            width, height = v3_size_for_reference(upload[0])
        options["strength"] = 0.6 if strength is None else strength
    options.update(width=width or 1024, height=height or 1024)
    # The client's own checks, before the reference upload (the first request).
    client.build_body(prompt, model, negative, options["width"], options["height"], seed,
                      "reference" if upload else None, options.get("strength"), options["output_format"], False,
                      options["base64_output"])
    _check_seed_range(seed, count)
    prepare_out(out)
    if upload:
        options["image_url"] = client.upload(*upload)
    predictions: list[Any] = []
    submit_error: ZImageError | None = None
    for index in range(count):
        try:
            with rt.paying("the prediction request"):
                prediction = client.submit(prompt, seed=_seed_at(seed, index), **options)
        except ZImageError as err:
            if not predictions:
                raise
            submit_error = err  # the predictions already paid for are still collected
            break
        rt.track(prediction.id, "wavespeed")
        predictions.append(prediction)
    paths = _collect_all(rt, [(p.id, "wavespeed", {"first": p, "seed": _seed_at(seed, i),
                                                   "size": (options["width"], options["height"])})
                              for i, p in enumerate(predictions)], out, timeout, tag=tag)
    if submit_error is not None:
        raise submit_error
    return paths


# -- tasks ----------------------------------------------------------------------------------------------------------


def _collect_all(rt: Runtime, jobs: list[tuple[str, str, dict[str, Any]]], out: Path, timeout: float | None,
                 *, tag: str | None = None) -> list[Path]:
    """Collect each task in turn; keep going after a failure, print each error, and raise the last one.

    Every task counts as in flight until it is collected, so Ctrl-C names each one still waiting.
    """
    paths: list[Path] = []
    last_error: ZImageError | None = None
    for task_id, provider, _extra in jobs:
        rt.track(task_id, provider)
    for task_id, provider, extra in jobs:
        try:
            result = rt.collect(task_id, provider, timeout, **extra)
        except ZImageError as err:
            if last_error is not None:
                to_stderr(f"error: {one_line(last_error)}")
            last_error = err
            continue
        seed = extra.get("seed", result.seeds[0] if result.seeds else None)
        saved, elsewhere = save_paid_pictures(rt, out, tag or provider, task_id, seed, result.images, result.paths)
        for path in saved:
            to_stdout(str(path))
            paths.append(path)
        if elsewhere:
            if last_error is not None:
                to_stderr(f"error: {one_line(last_error)}")
            last_error = SavedElsewhere(elsewhere)
    if last_error is not None:
        raise last_error  # printed last by run(); the earlier ones are already on stderr
    return paths


def submit_tasks(rt: Runtime, *, prompt: str, aspect_ratio: str = "1:1", resolution: str = "1K",
                 prompt_extend: bool = False, seed: int | None = None, count: int = 1) -> list[str]:
    """Create ``count`` Qingbo tasks (seeds ``seed``, ``seed+1``...), print and return their ids."""
    from .qingbo import QingboClient
    from .validation import check_count

    count = check_count(count, field="count")
    QingboClient.build_body(prompt, aspect_ratio=aspect_ratio, resolution=resolution, prompt_extend=prompt_extend,
                            seed=seed)  # every task is validated before the first is paid for
    _check_seed_range(seed, count)
    ids = []
    for index in range(count):
        with rt.paying("the task request"):
            task = rt.qingbo().submit(prompt, aspect_ratio=aspect_ratio, resolution=resolution,
                                      prompt_extend=prompt_extend, seed=_seed_at(seed, index))
        to_stdout(task.task_id)
        ids.append(task.task_id)
    return ids


def read_task_ids(values: Sequence[str]) -> list[str]:
    """The task ids given on the command line, where ``-`` stands for every id read from stdin."""
    from .validation import split_task_ids

    ids: list[str] = []
    for value in values:
        ids.extend(split_task_ids(sys.stdin.read()) if value == "-" else [value])
    if not ids:
        raise UsageError("No task id given (stdin was empty).", field="task_id")
    return ids


def collect_tasks(rt: Runtime, task_ids: Sequence[str], *, provider: str = "qingbo", out: Path,
                  timeout: float | None = None) -> list[Path]:
    """Wait for existing tasks (never re-submitting), write their pictures, print and return the paths."""
    from .validation import check_task_id

    name = "Qingbo" if provider == "qingbo" else "WaveSpeed"
    ids = [check_task_id(task_id, provider=name) for task_id in task_ids]
    prepare_out(out)
    return _collect_all(rt, [(task_id, provider, {}) for task_id in ids], out, timeout)


def _age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _configured_server(rt: Runtime, provider: str) -> str | None:
    """The base URL configured now for a ledger ``provider`` (``qingbo``/``wavespeed``), None if unreadable."""
    try:
        return str(rt.task_client("qingbo" if provider == "qingbo" else "wavespeed").transport.base_url)
    except ZImageError:
        return None


def _other_server(rt: Runtime, entry: dict[str, Any]) -> str | None:
    """The server that issued the entry's id when it is not the one configured now, else None."""
    issuer = entry.get("base_url")
    if not issuer:
        return None  # recorded before the ledger kept the server: assume this one
    configured = _configured_server(rt, str(entry.get("provider")))
    return str(issuer) if configured is not None and issuer != configured else None


_JSON_FIRST = ("task_id", "provider", "status", "submitted_at", "base_url", "model")
_SECRET_WORDS = ("api_key", "apikey", "authorization", "secret", "password", "token")


def task_json(entry: dict[str, Any]) -> str:
    """One task as a JSON line: its id, provider, status, time and server first, then every other field.

    Fields named like a credential are left out (none is ever recorded; this keeps it so in any output).
    """
    ordered = {name: entry.get(name) for name in _JSON_FIRST}
    ordered.update((k, v) for k, v in entry.items() if k not in ordered)
    clean = {k: v for k, v in ordered.items() if not any(word in k.lower() for word in _SECRET_WORDS)}
    return json.dumps(clean, ensure_ascii=False, separators=(",", ":"), default=str)


def list_tasks(rt: Runtime, *, limit: int = 20, as_json: bool = False) -> None:
    """Print the ledger's unfinished tasks, then the most recent finished ones (with their server when it is
    another); with ``as_json``, every task as one JSON object per line, oldest first."""
    if as_json:
        for entry in rt.ledger.entries().values():
            to_stdout(task_json(entry))
        return
    now = time.time()  # the ledger stamps real time
    elsewhere = False

    def table(rows: list[dict[str, Any]]) -> None:
        nonlocal elsewhere
        to_stdout(f"  {'TASK ID':<40} {'PROVIDER':<10} {'STATUS':<11} AGE")
        for entry in rows:
            age = _age(now - float(entry.get("submitted_at") or entry.get("time") or now))
            server = _other_server(rt, entry)
            elsewhere = elsewhere or server is not None
            to_stdout(f"  {entry['task_id']:<40} {str(entry.get('provider', '?')):<10} "
                      f"{str(entry.get('status', '?')):<11} {age}" + (f"  issued by {server}" if server else ""))

    unfinished = rt.ledger.unfinished()
    if unfinished:
        to_stdout(f"Unfinished tasks ({len(unfinished)}; collect them with `{PROG} tasks resume`):")
        table(unfinished)
    else:
        to_stdout("No unfinished tasks.")
    recent = rt.ledger.recent(limit, finished_only=True)  # the unfinished ones are listed above
    if recent:
        to_stdout(f"Recent tasks (finished, newest first, up to {limit}):")
        table(recent)
    if elsewhere:
        to_stdout(f"Tasks 'issued by' another server than the one configured now are skipped by `{PROG} tasks "
                  f"resume`; point {WAVESPEED.base_url_env} or {QINGBO.base_url_env} at that server to collect them.")
    to_stdout(f"Ledger: {rt.ledger.path}")


def resume_tasks(rt: Runtime, *, out: Path, timeout: float | None = None) -> list[Path]:
    """Collect every unfinished task of the ledger; raise the last error after trying them all.

    Tasks issued by another server than the one configured now (another gateway, an emulator) are skipped with a
    note: that server alone can answer for them.
    """
    jobs: list[tuple[str, str, dict[str, Any]]] = []
    skipped: dict[tuple[str, str], list[str]] = {}
    for entry in rt.ledger.unfinished():
        provider = "qingbo" if entry.get("provider") == "qingbo" else "wavespeed"
        server = _other_server(rt, entry)
        if server is not None:
            skipped.setdefault((provider, server), []).append(str(entry["task_id"]))
        else:
            jobs.append((str(entry["task_id"]), provider, {}))
    for (provider, server), ids in skipped.items():
        env = QINGBO.base_url_env if provider == "qingbo" else WAVESPEED.base_url_env
        to_stderr(f"note: skipped {len(ids)} unfinished {provider} task{'s' if len(ids) > 1 else ''} issued by "
                  f"{server}, not the server configured now ({_configured_server(rt, provider)}): "
                  f"{', '.join(ids)}; set {env}={server} to collect {'them' if len(ids) > 1 else 'it'}.")
    if not jobs:
        to_stderr("No unfinished tasks from the configured servers; nothing to collect." if skipped else
                  "No unfinished tasks in the ledger; nothing to collect.")
        return []
    prepare_out(out)
    return _collect_all(rt, jobs, out, timeout)
