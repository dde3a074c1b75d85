"""The command line: ``python -m zimage_api generate|edit|submit|poll|batch|tasks|emulator|demo``.

Every command writes pictures to ``--out`` with predictable names and prints one line per picture (its path) on
stdout; messages go to stderr. Exit codes: 0 success, 1 a failed job, 2 bad usage (including every local
validation or configuration error), 130 Ctrl-C. ``run(argv, sleep=..., clock=...)`` is the entry point tests use:
it injects the sleep and the clock into every client and waiting loop, so no test sleeps for real.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .config import QINGBO, WAVESPEED, Provider
from .errors import ConfigError, ValidationError, ZImageError
from .ledger import FINISHED, Ledger
from .logs import logger, prompt_hash
from .results import GenerationResult

__all__ = ["main", "run", "Runtime", "save_pictures", "generate_pictures", "submit_tasks", "collect_tasks",
           "UsageError", "Interrupted", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED"]

PROG = "python -m zimage_api"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
QINGBO_USD_PER_IMAGE = 0.010625        # 5,313 quota at 500,000 quota per USD
QINGBO_USD_PROMPT_EXTEND = 0.002       # 1,000 quota
WAVESPEED_USD_PER_IMAGE_ESTIMATE = 0.01


class UsageError(ValidationError):
    """Bad command-line usage found by the CLI itself (a missing file, options that do not fit together)."""


class Interrupted(Exception):
    """Raised inside a worker's sleep once the run was stopped (Ctrl-C); the task stays in the ledger."""


# -- the run's side effects -----------------------------------------------------------------------------------------


class Runtime:
    """What one CLI run shares: injected sleep/clock, the ledger, client factories and the tasks in flight.

    ``sleep``/``clock`` default to the real ones; tests pass a fake clock (unix-like seconds) and its ``sleep``.
    ``api_keys``/``base_urls`` (by config section, ``"wavespeed"``/``"qingbo"``) override the user's configuration;
    the demo uses them to point at its embedded emulator without touching the environment. ``session`` (a
    ``requests.Session``) is shared by every client when given.
    """

    def __init__(self, *, sleep: Callable[[float], None] | None = None, clock: Callable[[], float] | None = None,
                 ledger: Ledger | None = None, api_keys: dict[str, str] | None = None,
                 base_urls: dict[str, str] | None = None, session: Any = None) -> None:
        self._injected_sleep = sleep
        self.session = session
        self.clock = clock or time.monotonic
        self.now = clock or time.time
        self.ledger = ledger or Ledger.default()
        self.api_keys = dict(api_keys or {})
        self.base_urls = dict(base_urls or {})
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, float | None], Any] = {}
        self._in_flight: dict[str, str] = {}

    def sleep(self, seconds: float) -> None:
        """Sleep, or raise :class:`Interrupted` once :attr:`stop` is set (so workers unwind at Ctrl-C)."""
        if self.stop.is_set():
            raise Interrupted()
        if self._injected_sleep is not None:
            self._injected_sleep(seconds)
        elif self.stop.wait(max(seconds, 0.0)):
            raise Interrupted()

    def wait_options(self, timeout: float | None) -> dict[str, Any]:
        options: dict[str, Any] = {"sleep": self.sleep, "clock": self.clock}
        if timeout is not None:
            options["timeout"] = timeout
        return options

    def _transport_options(self, provider: Provider) -> dict[str, Any]:
        options: dict[str, Any] = {"sleep": self.sleep, "now": self.now}
        if self.session is not None:
            options["session"] = self.session
        if self.api_keys.get(provider.section):
            options["api_key"] = self.api_keys[provider.section]
        if self.base_urls.get(provider.section):
            options["base_url"] = self.base_urls[provider.section]
        return options

    def _client(self, kind: str, read_timeout: float | None, make: Callable[[], Any]) -> Any:
        with self._lock:
            client = self._clients.get((kind, read_timeout))
            if client is None:
                client = self._clients[(kind, read_timeout)] = make()
            return client

    def images(self, read_timeout: float | None = None) -> Any:
        """The OpenAI-images style client (one per run and read timeout, shared by threads)."""
        from .openai_images import ImagesClient

        options = self._transport_options(WAVESPEED)
        if read_timeout is not None:
            options["timeout"] = (10.0, float(read_timeout))
        return self._client("images", read_timeout, lambda: ImagesClient(**options))

    def v3(self) -> Any:
        from .wavespeed_v3 import WaveSpeedClient

        return self._client("v3", None, lambda: WaveSpeedClient(ledger=self.ledger,
                                                                **self._transport_options(WAVESPEED)))

    def qingbo(self) -> Any:
        from .qingbo import QingboClient

        return self._client("qingbo", None, lambda: QingboClient(ledger=self.ledger,
                                                                 **self._transport_options(QINGBO)))

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.transport.close()
            self._clients.clear()

    @contextmanager
    def tracking(self, task_id: str, provider: str) -> Iterator[None]:
        """Remember ``task_id`` as in flight until the block ends normally or with a job error."""
        with self._lock:
            self._in_flight[task_id] = provider
        try:
            yield
        except (KeyboardInterrupt, Interrupted):
            raise  # still in flight: named in the Ctrl-C line
        except BaseException:
            self.untrack(task_id)
            raise
        self.untrack(task_id)

    def track(self, task_id: str, provider: str) -> None:
        with self._lock:
            self._in_flight[task_id] = provider

    def untrack(self, task_id: str) -> None:
        with self._lock:
            self._in_flight.pop(task_id, None)

    def in_flight(self) -> dict[str, str]:
        with self._lock:
            return dict(self._in_flight)


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


def _seed_at(seed: int | None, index: int) -> int | None:
    return None if seed is None or seed == -1 else seed + index


def _print(line: str) -> None:
    print(line, file=sys.stdout, flush=True)


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- single commands ------------------------------------------------------------------------------------------------


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
    tag = "wavespeed-edit" if upload else "wavespeed"
    if api == "v3":
        if cfg is not None:
            raise UsageError("--cfg is not part of WaveSpeed's v3 API; use --api v1/images to set it.", field="cfg")
        return _generate_v3(rt, prompt=prompt, out=out, upload=upload, tag=tag, model=model, negative=negative,
                            strength=strength, width=width, height=height, seed=seed, count=count,
                            response_format=response_format, output_format=output_format, timeout=timeout)
    if output_format is not None:
        raise UsageError("--output-format applies to --api v3 only; v1/images answers PNG.", field="output_format")
    client = rt.images(read_timeout=timeout)
    options: dict[str, Any] = {"negative_prompt": negative, "seed": seed, "n": count, "model": model}
    if cfg is not None:
        options["guidance_scale"] = cfg
    if response_format is not None:
        options["response_format"] = response_format
    if width is not None:
        options.update(width=width, height=height)
    if upload:
        if strength is not None:
            options["strength"] = strength
        result = client.edit(upload, prompt, **options)
    else:
        result = client.generate(prompt, **options)
    paths = save_pictures(out, tag, result.prompt_sha256, _seed_at(seed, 0), result.images)
    for path in paths:
        _print(str(path))
    return paths


def _generate_v3(rt: Runtime, *, prompt: str, out: Path, upload: tuple[bytes, str, str] | None, tag: str, model: str,
                 negative: str, strength: float | None, width: int | None, height: int | None, seed: int | None,
                 count: int, response_format: str | None, output_format: str | None,
                 timeout: float | None) -> list[Path]:
    from .images import open_image

    client = rt.v3()
    options: dict[str, Any] = {"model": model, "negative_prompt": negative,
                               "output_format": output_format or "png",
                               "base64_output": response_format == "b64_json"}
    if upload:
        if width is None:
            ref_w, ref_h = open_image(upload[0]).size
            width, height = (min(max(side, 256), 1536) for side in (ref_w, ref_h))
        options["strength"] = 0.6 if strength is None else strength
    options.update(width=width or 1024, height=height or 1024)
    # The client's own checks, before the reference upload (the first request).
    client.build_body(prompt, model, negative, options["width"], options["height"], seed,
                 "reference" if upload else None, options.get("strength"), options["output_format"], False,
                 options["base64_output"])
    if upload:
        options["image_url"] = client.upload(*upload)
    predictions = []
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


def _collect_all(rt: Runtime, jobs: list[tuple[str, str, dict[str, Any]]], out: Path, timeout: float | None,
                 *, tag: str | None = None) -> list[Path]:
    """Collect each task in turn; keep going after a failure, print each error, and raise the last one."""
    paths: list[Path] = []
    last_error: ZImageError | None = None
    for task_id, provider, extra in jobs:
        client = rt.qingbo() if provider == "qingbo" else rt.v3()
        try:
            with rt.tracking(task_id, provider):
                result: GenerationResult = client.collect(task_id, **extra, **rt.wait_options(timeout))
        except ZImageError as err:
            if last_error is not None:
                _warn(f"error: {_one_line(last_error)}")
            last_error = err
            continue
        seed = extra.get("seed", result.seeds[0] if result.seeds else None)
        for path in save_pictures(out, tag or provider, task_id, seed, result.images):
            _print(str(path))
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
        _print(task.task_id)
        ids.append(task.task_id)
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
        _print(f"  {'TASK ID':<40} {'PROVIDER':<10} {'STATUS':<11} AGE")
        for entry in rows:
            age = _age(now - float(entry.get("submitted_at") or entry.get("time") or now))
            _print(f"  {entry['task_id']:<40} {str(entry.get('provider', '?')):<10} "
                   f"{str(entry.get('status', '?')):<11} {age}")

    unfinished = [e for e in entries.values() if e.get("status") not in FINISHED]
    if unfinished:
        _print(f"Unfinished tasks ({len(unfinished)}; collect them with `{PROG} tasks resume`):")
        table(unfinished)
    else:
        _print("No unfinished tasks.")
    recent = rt.ledger.recent(limit)
    if recent:
        _print(f"Recent tasks (newest first, up to {limit}):")
        table(recent)
    _print(f"Ledger: {rt.ledger.path}")


def resume_tasks(rt: Runtime, *, out: Path, timeout: float | None = None) -> list[Path]:
    """Collect every unfinished task of the ledger; raise the last error after trying them all."""
    jobs = [(str(e["task_id"]), "qingbo" if e.get("provider") == "qingbo" else "wavespeed", {})
            for e in rt.ledger.unfinished()]
    if not jobs:
        _warn("No unfinished tasks in the ledger; nothing to collect.")
        return []
    return _collect_all(rt, jobs, out, timeout)


# -- the parser -----------------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``error: ...``) that points at ``--help``; exits 2 as argparse does."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"error: {message} (see `{self.prog} --help`)\n")


_FORMATTER = argparse.RawDescriptionHelpFormatter


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: a whole number, or -1 for random") from None


def _common_parents() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser, argparse.ArgumentParser]:
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="log each call (INFO) and show tracebacks on errors")
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("--out", metavar="DIR", type=Path, default=Path("."),
                     help="folder for the pictures, created if missing (default: the current folder)")
    wait = argparse.ArgumentParser(add_help=False)
    wait.add_argument("--timeout", metavar="SECONDS", type=float, default=None,
                      help="how long to wait for a result: the polling deadline for v3 predictions and Qingbo "
                           "tasks (default 120; the task stays collectable afterwards), or the HTTP read timeout "
                           "of a v1/images request (default 60)")
    return verbose, out, wait


def _add_wavespeed_options(parser: argparse.ArgumentParser, *, edit: bool) -> None:
    parser.add_argument("--api", choices=("v1/images", "v3"), default="v1/images",
                        help="WaveSpeed protocol: the OpenAI-style v1/images (synchronous) or the native v3 "
                             "predictions (submit + poll, recorded in the ledger) (default: v1/images)")
    parser.add_argument("--model", choices=("Z-Image-Base", "Z-Image-Turbo"), default="Z-Image-Base",
                        help="the model (default: Z-Image-Base; Turbo ignores CFG and negative prompt)")
    parser.add_argument("--negative", metavar="TEXT", default="", help="negative prompt: what to avoid")
    parser.add_argument("--cfg", metavar="SCALE", type=float, default=None,
                        help="guidance scale 0-20, v1/images only (default: %s)" % (
                            "6.5; 6-7 is dependable with a reference" if edit else "7.5; 7-8 is dependable"))
    if edit:
        parser.add_argument("--strength", metavar="S", type=float, default=None,
                            help="how much of the reference survives, 0-1: 0.25-0.35 a light touch, 0.45-0.6 "
                                 "solid, 0.7+ near copy (default: 0.5 on v1/images, 0.6 on v3)")
    parser.add_argument("--width", metavar="PX", type=int, default=None,
                        help="picture width: 256-2048 on v1/images (area up to 2048x2048), 256-1536 on v3 "
                             "(default: %s)" % ("the reference's size" if edit else "1024"))
    parser.add_argument("--height", metavar="PX", type=int, default=None, help="picture height (see --width)")
    parser.add_argument("--seed", metavar="N", type=_seed, default=None,
                        help="fixed seed for a reproducible picture; -1 or omitted = random. With --count on v3, "
                             "the pictures use N, N+1, ...")
    parser.add_argument("--count", metavar="N", type=int, default=1,
                        help="how many pictures, 1-8 (v1/images: n in one request; v3: N predictions) (default: 1)")
    parser.add_argument("--response-format", choices=("b64_json", "url"), default=None,
                        help="how pictures travel: inline base64 or a URL downloaded at once (default: b64_json "
                             "on v1/images, url on v3)")
    parser.add_argument("--output-format", choices=("png", "jpeg"), default=None,
                        help="picture format, v3 only (default: png)")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every option documented, with examples in each epilog)."""
    from .cli_batch import add_batch_parser

    verbose, out, wait = _common_parents()
    parser = _Parser(
        prog=PROG, formatter_class=_FORMATTER, parents=[verbose],
        description="Z-Image at WaveSpeed and Qingbo from the command line: pictures go to --out, one path per "
                    "line on stdout; every paid task id is in the ledger first, so nothing paid is lost.",
        epilog=f"""examples:
  {PROG} demo --out demo-pictures          # a tour against a local emulator; no key needed
  {PROG} generate "a ceramic mug on linen" --seed 42 --out pictures
  {PROG} submit "a lighthouse at dusk" --aspect-ratio 16:9 | xargs {PROG} poll --out pictures
  {PROG} batch jobs.csv --concurrency 4 --out run1

keys: WAVESPEED_API_KEY and QINGBO_API_KEY (or WAVE_API_KEY), or zimage.ini (see ZIMAGE_CONFIG).
exit codes: 0 success, 1 a job failed, 2 bad usage or configuration, 130 interrupted (Ctrl-C).""")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    gen = sub.add_parser("generate", parents=[verbose, out, wait], formatter_class=_FORMATTER,
                         help="text to image at WaveSpeed (v1/images or v3)",
                         description="Generate pictures from a prompt at WaveSpeed and write them to --out as "
                                     "wavespeed_<prompt-hash|prediction-id>_<seed>_<i>.png|jpg.",
                         epilog=f"""examples:
  {PROG} generate "a red fox in snow, film photo" --seed 42 --out pictures
  {PROG} generate "a red fox in snow" --negative "blurry" --cfg 7.5 --width 1024 --height 768 --count 2
  {PROG} generate "a red fox in snow" --api v3 --model Z-Image-Turbo --output-format jpeg""")
    gen.add_argument("prompt", metavar="PROMPT", help="what to draw")
    _add_wavespeed_options(gen, edit=False)

    edit = sub.add_parser("edit", parents=[verbose, out, wait], formatter_class=_FORMATTER,
                          help="image to image at WaveSpeed, from a reference picture",
                          description="Edit a reference picture at WaveSpeed. The reference is downscaled to at "
                                      "most 1024 px on its long side before upload. Pictures are written as "
                                      "wavespeed-edit_<prompt-hash|prediction-id>_<seed>_<i>.png|jpg.",
                          epilog=f"""examples:
  {PROG} edit photo.jpg "the same street in winter, snow falling" --strength 0.5 --out pictures
  {PROG} edit sketch.png "a watercolor painting" --strength 0.3 --cfg 6.5 --seed 7
  {PROG} edit photo.jpg "as a pencil drawing" --api v3 --strength 0.6""")
    edit.add_argument("reference", metavar="REFERENCE_PATH", help="the reference picture (PNG, JPEG, WebP...)")
    edit.add_argument("prompt", metavar="PROMPT", help="what to make of it")
    _add_wavespeed_options(edit, edit=True)

    submit = sub.add_parser("submit", parents=[verbose], formatter_class=_FORMATTER,
                            help="create Qingbo z-image-turbo tasks and print their ids",
                            description="Create Qingbo tasks (z-image-turbo, about $0.0106 per picture) and print "
                                        "one task id per line, without waiting. Collect them with `poll`.",
                            epilog=f"""examples:
  {PROG} submit "a lighthouse at dusk, oil painting" --aspect-ratio 16:9 --resolution 2K
  {PROG} submit "a lighthouse" --count 3 --seed 100 > ids.txt && {PROG} poll - --out pictures < ids.txt""")
    submit.add_argument("prompt", metavar="PROMPT", help="what to draw (at most 800 characters)")
    submit.add_argument("--aspect-ratio", default="1:1", choices=("1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3"),
                        help="picture shape (default: 1:1)")
    submit.add_argument("--resolution", default="1K", type=str.upper, choices=("1K", "2K"),
                        help="1K = 1024 px or 2K = 2048 px on the long side (default: 1K)")
    submit.add_argument("--prompt-extend", action="store_true",
                        help="let Qingbo expand the prompt (costs about $0.002 more per task)")
    submit.add_argument("--seed", metavar="N", type=_seed, default=None,
                        help="fixed seed (sent only when set); with --count the tasks use N, N+1, ...")
    submit.add_argument("--count", metavar="N", type=int, default=1, help="how many tasks, 1-8 (default: 1)")

    poll = sub.add_parser("poll", parents=[verbose, out, wait], formatter_class=_FORMATTER,
                          help="collect tasks by id (never re-submits)",
                          description="Wait for existing tasks and download their pictures as "
                                      "<provider>_<task-id>_<seed>_<i>.png|jpg. Nothing is re-submitted; a task "
                                      "already collected is served from the ledger's local copy.",
                          epilog=f"""examples:
  {PROG} poll task-wave1780000000a1b2c3 --out pictures
  {PROG} poll --provider wavespeed 9f2c4e6a8b0d --timeout 300
  {PROG} submit "a fox" --count 2 | {PROG} poll -""")
    poll.add_argument("task_ids", metavar="TASK_ID", nargs="+", help="task ids; - reads them from stdin")
    poll.add_argument("--provider", choices=("qingbo", "wavespeed"), default="qingbo",
                      help="qingbo task ids, or wavespeed v3 prediction ids (default: qingbo)")

    add_batch_parser(sub, parents=[verbose, out, wait])

    tasks = sub.add_parser("tasks", parents=[verbose], formatter_class=_FORMATTER,
                           help="list the ledger's unfinished and recent tasks; `tasks resume` collects them",
                           description="The ledger records every paid task id before any waiting. `tasks` lists "
                                       "the unfinished and recent ones (id, provider, status, age); `tasks "
                                       "resume` collects every unfinished task and prints the pictures' paths.",
                           epilog=f"""examples:
  {PROG} tasks
  {PROG} tasks list --limit 50
  {PROG} tasks resume --out recovered""")
    tasks_sub = tasks.add_subparsers(dest="tasks_action", metavar="ACTION", parser_class=_Parser,
                                     help="list (the default) or resume")
    listing = tasks_sub.add_parser("list", parents=[verbose], help="list tasks (the default)",
                                   description="List the ledger's unfinished and recent tasks.")
    for target in (tasks, listing):
        target.add_argument("--limit", metavar="N", type=int, default=20,
                            help="how many recent tasks to list (default: 20)")
    tasks_sub.add_parser("resume", parents=[verbose, out, wait], help="collect every unfinished task",
                         description="Collect every unfinished task in the ledger (never re-submitting) and "
                                     "write the pictures to --out.")

    sub.add_parser("emulator", add_help=False, help="serve the local emulator of both providers (see "
                                                      "`emulator --help`)")

    demo = sub.add_parser("demo", parents=[verbose], formatter_class=_FORMATTER,
                          help="a short tour against an embedded emulator (no key, nothing charged)",
                          description="Start an emulator in this process, then generate (v1/images), edit that "
                                      "picture, generate with v3 and run a Qingbo task, writing the pictures to "
                                      "--out. It uses its own ledger in DIR/.ledger and never your keys.",
                          epilog=f"example:\n  {PROG} demo --out demo-pictures")
    demo.add_argument("--out", metavar="DIR", type=Path, default=Path("zimage-demo"),
                      help="folder for the demo pictures (default: zimage-demo)")
    return parser


# -- entry points ---------------------------------------------------------------------------------------------------


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _read_ids(values: Sequence[str]) -> list[str]:
    from .validation import split_task_ids

    ids: list[str] = []
    for value in values:
        ids.extend(split_task_ids(sys.stdin.read()) if value == "-" else [value])
    if not ids:
        raise UsageError("No task id given (stdin was empty).", field="task_id")
    return ids


def _dispatch(args: argparse.Namespace, rt: Runtime, extra: list[str]) -> int:
    command = args.command
    if command == "generate" or command == "edit":
        generate_pictures(rt, prompt=args.prompt, out=args.out, api=args.api,
                          reference=getattr(args, "reference", None), model=args.model, negative=args.negative,
                          cfg=args.cfg, strength=getattr(args, "strength", None), width=args.width,
                          height=args.height, seed=args.seed, count=args.count,
                          response_format=args.response_format, output_format=args.output_format,
                          timeout=args.timeout)
    elif command == "submit":
        submit_tasks(rt, prompt=args.prompt, aspect_ratio=args.aspect_ratio, resolution=args.resolution,
                     prompt_extend=args.prompt_extend, seed=args.seed, count=args.count)
    elif command == "poll":
        collect_tasks(rt, _read_ids(args.task_ids), provider=args.provider, out=args.out, timeout=args.timeout)
    elif command == "batch":
        from .cli_batch import run_batch

        return run_batch(rt, args)
    elif command == "tasks":
        if getattr(args, "tasks_action", None) == "resume":
            resume_tasks(rt, out=args.out, timeout=args.timeout)
        else:
            list_tasks(rt, limit=args.limit)
    elif command == "demo":
        from .demo import run_demo

        run_demo(args.out)
    return EXIT_OK


def run(argv: Sequence[str] | None = None, *, sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] | None = None, runtime: Runtime | None = None) -> int:
    """Run the CLI in-process and return its exit code. ``sleep``/``clock`` are injected into every wait."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else EXIT_USAGE
    if args.command == "emulator":
        from .emulator.__main__ import main as emulator_main

        try:
            return int(emulator_main(extra) or 0)
        except SystemExit as exit_:  # its own argparse: --help, or a usage error
            return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
        except KeyboardInterrupt:
            return EXIT_OK
    if extra:
        _warn(f"error: unrecognized arguments: {' '.join(extra)} (see `{PROG} {args.command or ''} --help`)")
        return EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    verbose = bool(getattr(args, "verbose", False))
    level = logger.level
    handler = _verbose_logging() if verbose else None
    rt = runtime
    try:
        rt = rt or Runtime(sleep=sleep, clock=clock)
        return _dispatch(args, rt, extra)
    except KeyboardInterrupt:
        return _interrupted(rt)
    except (ValidationError, ConfigError) as err:
        return _report(err, EXIT_USAGE, verbose)
    except ZImageError as err:
        return _report(err, EXIT_FAILED, verbose)
    except OSError as err:
        return _report(err, EXIT_FAILED, verbose)
    except Exception as err:  # a bug: still one line, unless --verbose
        _warn(f"error: unexpected {type(err).__name__}: {_one_line(err)} (run with --verbose for the traceback)")
        if verbose:
            traceback.print_exc(file=sys.stderr)
        return EXIT_FAILED
    finally:
        if rt is not None and runtime is None:
            rt.close()
        if handler is not None:
            logger.removeHandler(handler)
            logger.setLevel(level)


def _report(err: BaseException, code: int, verbose: bool) -> int:
    if verbose:
        traceback.print_exc(file=sys.stderr)
    _warn(f"error: {_one_line(err)}")
    return code


def _interrupted(rt: Runtime | None) -> int:
    tasks = rt.in_flight() if rt is not None else {}
    if tasks:
        names = ", ".join(f"{task_id} ({provider})" for task_id, provider in tasks.items())
        _warn(f"error: interrupted; still running at the provider and kept in the ledger: {names}. Collect them "
              f"with `{PROG} tasks resume` (a batch: run the same command again).")
    else:
        _warn("error: interrupted; no task was in flight.")
    return EXIT_INTERRUPTED


def _verbose_logging() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    """The console entry point: ``python -m zimage_api ...``; returns the exit code."""
    return run(argv)


def prompt_digest(prompt: str) -> str:
    """The 12-hex prompt hash used in file names and the manifest (same as the library's log line)."""
    return prompt_hash(prompt)


def params_digest(params: dict[str, Any]) -> str:
    """A stable 16-hex hash of JSON-able parameters."""
    import json

    text = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
