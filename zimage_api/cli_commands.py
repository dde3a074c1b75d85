"""The single commands: ``generate``, ``edit``, ``submit``, ``poll`` and ``tasks``, and the pictures they write.

Pictures go to ``--out`` with predictable names, ``<tag>_<prompt-hash|task-id>_<seed|random>_<i>.<ext>``, and each
command prints one line per picture (its path) or per task id on stdout, as soon as it exists.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .cli_runtime import PROG, Runtime, UsageError, one_line, to_stderr, to_stdout
from .errors import ZImageError
from .ledger import FINISHED
from .results import GenerationResult

__all__ = ["generate_pictures", "submit_tasks", "collect_tasks", "list_tasks", "resume_tasks", "read_task_ids",
           "save_pictures", "picture_extension", "picture_tag", "read_reference", "v3_size_for_reference",
           "request_images"]

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
    from .validation import check_count

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
    result = request_images(rt.images(read_timeout=timeout), prompt, upload, strength=strength,
                            negative_prompt=negative, seed=seed, n=count, model=model, guidance_scale=cfg,
                            response_format=response_format, width=width, height=height)
    paths = save_pictures(out, tag, result.prompt_sha256, _seed_at(seed, 0), result.images)
    for path in paths:
        to_stdout(str(path))
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
    if upload:
        options["image_url"] = client.upload(*upload)
    predictions: list[Any] = []
    submit_error: ZImageError | None = None
    for index in range(count):
        try:
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
    """Collect each task in turn; keep going after a failure, print each error, and raise the last one."""
    paths: list[Path] = []
    last_error: ZImageError | None = None
    for task_id, provider, extra in jobs:
        try:
            result = rt.collect(task_id, provider, timeout, **extra)
        except ZImageError as err:
            if last_error is not None:
                to_stderr(f"error: {one_line(last_error)}")
            last_error = err
            continue
        seed = extra.get("seed", result.seeds[0] if result.seeds else None)
        for path in save_pictures(out, tag or provider, task_id, seed, result.images):
            to_stdout(str(path))
            paths.append(path)
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
    ids = []
    for index in range(count):
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
    return _collect_all(rt, [(task_id, provider, {}) for task_id in ids], out, timeout)


def _age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def list_tasks(rt: Runtime, *, limit: int = 20) -> None:
    """Print the ledger's unfinished tasks, then the most recent ones."""
    now = time.time()  # the ledger stamps real time
    entries = rt.ledger.entries()

    def table(rows: list[dict[str, Any]]) -> None:
        to_stdout(f"  {'TASK ID':<40} {'PROVIDER':<10} {'STATUS':<11} AGE")
        for entry in rows:
            age = _age(now - float(entry.get("submitted_at") or entry.get("time") or now))
            to_stdout(f"  {entry['task_id']:<40} {str(entry.get('provider', '?')):<10} "
                      f"{str(entry.get('status', '?')):<11} {age}")

    unfinished = [e for e in entries.values() if e.get("status") not in FINISHED]
    if unfinished:
        to_stdout(f"Unfinished tasks ({len(unfinished)}; collect them with `{PROG} tasks resume`):")
        table(unfinished)
    else:
        to_stdout("No unfinished tasks.")
    recent = rt.ledger.recent(limit)
    if recent:
        to_stdout(f"Recent tasks (newest first, up to {limit}):")
        table(recent)
    to_stdout(f"Ledger: {rt.ledger.path}")


def resume_tasks(rt: Runtime, *, out: Path, timeout: float | None = None) -> list[Path]:
    """Collect every unfinished task of the ledger; raise the last error after trying them all."""
    jobs: list[tuple[str, str, dict[str, Any]]] = [
        (str(e["task_id"]), "qingbo" if e.get("provider") == "qingbo" else "wavespeed", {})
        for e in rt.ledger.unfinished()]
    if not jobs:
        to_stderr("No unfinished tasks in the ledger; nothing to collect.")
        return []
    return _collect_all(rt, jobs, out, timeout)
