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
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import catalog, fields
from ..account import format_usd, task_cost_usd
from ..catalog import QINGBO_USD_PER_PICTURE, picture_extension, usd
from ..config import QINGBO, WAVESPEED
from ..engine import RunCancelled
from ..errors import ImageDecodeError, InvalidTaskIdError, ValidationError, ZImageError
from ..logs import mask_url, printable
from ..orders import (
    ControlNet,
    Edit,
    Inpaint,
    MaskedReference,
    PictureOrder,
    QingboTasks,
    Reference,
    TextToImage,
    check_loras,
    check_seeds,
    random_seed,
)
from ..parallel import JobOutcome
from ..results import GenerationResult
from ..summary import TURBO_NOTE, V1_FORMAT_NOTE, V3_CFG_NOTE, order_notes
from ..validation import check_server_task_id
from .runtime import (
    PROG,
    Interrupted,
    NotCollected,
    Runtime,
    SavedElsewhere,
    UsageError,
    one_line,
    to_stderr,
    to_stdout,
)

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["generate_pictures", "submit_tasks", "collect_tasks", "list_tasks", "task_json", "resume_tasks",
           "read_task_ids",
           "save_pictures", "save_paid_pictures", "prepare_out", "picture_extension", "picture_tag", "read_reference",
           "read_picture_bytes",
           "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = float(catalog.DEFAULT_TIMEOUT)  # seconds to wait when --timeout is not given: the nodes' default

# -- pictures on disk -----------------------------------------------------------------------------------------------

_write_lock = threading.Lock()


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
                # A name of this writer's own: two runs writing into one folder never mix their bytes.
                tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
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


def read_picture(path: str | os.PathLike[str], what: str = "reference") -> Image.Image:
    """Open a picture file given on the command line or in a batch row (``what`` names it in errors).

    Only a regular file of at most :data:`~zimage_api.images.MAX_PICTURE_FILE_BYTES` is read (never a pipe or a
    device such as ``/dev/zero``), before anything is sent.
    """
    data = read_picture_bytes(path, what)
    from ..images import open_image

    file = Path(path)
    try:
        return open_image(data, source=f"the {what} file {file}")
    except ImageDecodeError:
        raise UsageError(f"The {what} {file} is not a picture that can be read ({len(data):,} bytes); give a "
                         f"PNG, JPEG or WebP file.", field=what) from None


def read_picture_bytes(path: str | os.PathLike[str], what: str = "reference") -> bytes:
    """The bytes of a picture file named on the command line or in a batch row, read with a bound (see
    :func:`~zimage_api.images.read_picture_file`); its errors are usage errors."""
    from ..images import read_picture_file

    try:
        return read_picture_file(path, what=what)
    except ValidationError as err:
        raise UsageError(str(err), field=what) from None


def read_reference(path: str | os.PathLike[str], what: str = "reference") -> Reference:
    """Open a reference (or control) picture as the engine takes it: encoded for upload, at most 1024 px on the long
    side."""
    return Reference.from_image(read_picture(path, what))


def read_masked(reference: str | os.PathLike[str], mask: str | os.PathLike[str]) -> MaskedReference:
    """A picture and its mask file (white = repaint, black = keep), encoded as the inpaint model takes them."""
    return MaskedReference.from_images(read_picture(reference), read_picture(mask, "mask"))


def _seed_or_random(seed: int | None) -> int:
    """The first seed of an order: the one given, or one drawn now (it is in every picture's file name)."""
    return seed if seed is not None and seed != -1 else random_seed()


def _outcome_errors(outcomes: Sequence[JobOutcome[Any]]) -> list[BaseException]:
    """The units' errors in order; Ctrl-C in a worker is raised here, as it would have been in the main thread."""
    errors = [o.error for o in outcomes if o.error is not None]
    for error in errors:
        if isinstance(error, (KeyboardInterrupt, Interrupted)):
            raise KeyboardInterrupt
    return [_server_id_error(error) for error in errors]


def _server_id_error(error: BaseException) -> BaseException:
    """A task id refused while a unit ran came from the server (the ids typed by the user are checked before):
    a failed job (exit 1), not bad usage."""
    if not isinstance(error, ValidationError) or error.field != "task_id":
        return error
    wrapped = InvalidTaskIdError(f"{error.message} The server gave it for a paid request; check the provider's "
                                 "dashboard for its picture.")
    wrapped.__cause__ = error
    return wrapped


def _raise_last(errors: Sequence[BaseException]) -> None:
    """Print every error but the last on stderr, and raise the last (printed by ``run()``)."""
    for error in errors[:-1]:
        to_stderr(f"error: {one_line(error)}")
    if errors:
        raise errors[-1]


# -- WaveSpeed ------------------------------------------------------------------------------------------------------


def generate_pictures(rt: Runtime, *, prompt: str, out: Path, api: str = fields.API.default,
                      reference: str | None = None,
                      model: str = fields.MODEL.default, negative: str = "", cfg: float | None = None,
                      strength: float | None = None, width: int | None = None, height: int | None = None,
                      seed: int | None = None, count: int = 1, response_format: str | None = None,
                      output_format: str | None = None, timeout: float | None = None,
                      loras: Sequence[tuple[str, float]] | None = None, mask: str | None = None,
                      control: str | None = None, mode: str | None = None) -> list[Path]:
    """Generate (or edit, with ``reference``; inpaint, with ``mask`` too; ControlNet, with ``control``) at
    WaveSpeed through the engine: one paid request per picture, picture *i* with ``seed + i``, as the nodes do. The
    same inputs again are served from receipts. Write the pictures, print and return their paths; a failed picture
    does not stop the others, its error is raised at the end.
    """
    if (width is None) != (height is None):
        raise UsageError("Give both --width and --height, or neither.", field="size")
    if mode is not None and control is None:
        raise UsageError("--mode goes with --control FILE.", field="mode")
    special = mask is not None or control is not None
    if special and api == "v1/images":
        raise UsageError("--mask and --control run on WaveSpeed v3; leave out --api v1/images.", field="api")
    if loras and api == "v1/images":
        raise UsageError("--lora runs on WaveSpeed v3: /v1/images has no LoRA field; leave out --api v1/images.",
                         field="lora")
    api = api or ("v3" if special or loras else fields.API.default)
    model = model or (fields.MODEL.choices[1] if special else fields.MODEL.default)
    if mask is not None and strength is not None:
        raise UsageError("--strength does not apply to inpainting (--mask): the mask says what is kept.",
                         field="strength")
    lora_values = check_loras(list(loras or ()))
    if api == "v3" and cfg is not None:
        raise UsageError("--cfg is not part of WaveSpeed's v3 API; use --api v1/images to set it.", field="cfg")
    if api != "v3" and output_format is not None:
        raise UsageError("--output-format applies to --api v3 only; v1/images answers PNG.", field="output_format")
    common: dict[str, Any] = dict(
        prompt=prompt, negative_prompt=negative, model=model, api=api, count=count,
        response_format=response_format or fields.RESPONSE_FORMAT.default,
        output_format=output_format or fields.OUTPUT_FORMAT.default,
        timeout=DEFAULT_TIMEOUT if timeout is None else timeout, loras=lora_values)
    order: PictureOrder
    ref = read_reference(reference) if reference and mask is None else None
    if mask is not None and reference:
        order = Inpaint(pictures=(read_masked(reference, mask),), width=width or 0, height=height or 0,
                        seed=_checked_seed(seed, count), **common)
    elif control is not None:
        order = ControlNet(references=(read_reference(control, "control"),), mode=mode or fields.MODE.default,
                           strength=fields.CONTROL_STRENGTH.default if strength is None else strength,
                           width=width or 0, height=height or 0,
                           seed=_checked_seed(seed, count), **common)
    elif ref is not None:
        order = Edit(references=(ref,), strength=fields.STRENGTH.default if strength is None else strength,
                     guidance_scale=fields.EDIT_GUIDANCE.default if cfg is None else cfg, width=width or 0,
                     height=height or 0,
                     seed=_checked_seed(seed, count), **common)
    else:
        order = TextToImage(guidance_scale=fields.GUIDANCE.default if cfg is None else cfg,
                            width=width or fields.WIDTH.default, height=height or fields.HEIGHT.default,
                            seed=_checked_seed(seed, count), **common)
    prepare_out(out)
    for note in order_notes(order):
        # Only what the user gave and was dropped: the flags for v3's CFG and v1's format are refused above.
        if note not in (V3_CFG_NOTE, V1_FORMAT_NOTE) and (note != TURBO_NOTE or cfg is not None or negative.strip()):
            to_stderr(f"note: {note}")
    earlier = _bought_earlier(rt, order)
    engine = rt.engine()
    try:
        outcomes = engine.pictures(order)
    except RunCancelled as cancelled:  # Ctrl-C: what finished is still written, then the run stops
        outcomes = cancelled.outcomes
    stopped = rt.stop.is_set()
    errors = _outcome_errors([o for o in outcomes if not (stopped and isinstance(o.error, Interrupted))])
    tag = picture_tag("wavespeed", order.kind in ("edit", "inpaint"))
    paths: list[Path] = []
    for outcome in outcomes:
        result = outcome.value
        if result is None:
            continue
        ident = result.task_ids[0] if result.task_ids else result.prompt_sha256
        _write(rt, out, tag, ident, result.seeds[0] if result.seeds else None, result, paths, errors)
    _report_paid(paid_line(order, outcomes, earlier), errors, stopped)
    _raise_last(errors)
    return paths


def _bought_earlier(rt: Runtime, order: PictureOrder) -> set[int]:
    """The units of ``order`` whose prediction was bought in an earlier run (a v3 wait that timed out, or a Ctrl-C)
    and has no picture receipt yet: collecting them now charges nothing."""
    rt.store.check_writable()  # no record, no payment: a store in trouble is said before anything else
    if order.api != "v3":
        return set()
    engine = rt.engine()
    earlier: set[int] = set()
    for unit in engine.plan(order):
        task_id, _spent = rt.store.task_receipt(unit.key)
        receipt = rt.store.receipt(unit.key) if task_id is not None else None
        if receipt is not None and receipt.result is None:
            earlier.add(unit.index)
    return earlier


def _from_receipt(result: GenerationResult) -> bool:
    """Whether the engine served ``result`` from its local receipt (no request sent)."""
    from ..engine import RECEIPT_NOTE

    return any(note.startswith(RECEIPT_NOTE) for note in result.notes)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _report_paid(line: str | None, errors: Sequence[BaseException], stopped: bool) -> None:
    """Say what the command paid; after Ctrl-C, also every error met, then stop."""
    if line:
        to_stderr(line)
    if stopped:
        for error in errors:
            to_stderr(f"error: {one_line(error)}")
        raise Interrupted("Stopped by Ctrl-C.")


def paid_line(order: PictureOrder, outcomes: Sequence[JobOutcome[GenerationResult]],
              earlier: Collection[int] = ()) -> str | None:
    """What a picture command paid: "paid $X for 1 picture", "served from the local receipt, nothing charged",
    "paid about $Y for 2 pictures; 1 served from local receipts, nothing charged". None when nothing came.

    The price is the catalog's (``order.price``); "about" when it is not published.
    """
    bought = served = before = 0
    for index, outcome in enumerate(outcomes):
        if outcome.value is None:
            continue
        if _from_receipt(outcome.value):
            served += 1
        elif index in earlier:
            before += 1
        else:
            bought += 1
    published = order.api == "v3" and order.v3_model.usd is not None
    parts: list[str] = []
    if bought:
        parts.append(f"paid {'' if published else 'about '}{usd(order.price * bought)} for {_count(bought, 'picture')}")
    if served and not parts and not before:
        parts.append("served from the local receipt, nothing charged" if served == 1 else
                     f"{served} pictures served from local receipts, nothing charged")
    elif served:
        parts.append(f"{served} served from local receipts, nothing charged")
    if before:
        parts.append(f"{_count(before, 'picture')} collected from a prediction paid in an earlier run, nothing "
                     "charged now")
    return "; ".join(parts) or None


def _write(rt: Runtime, out: Path, tag: str, ident: str, seed: int | None, result: GenerationResult,
           paths: list[Path], errors: list[BaseException]) -> None:
    """Write a result's pictures and print their paths; pictures kept elsewhere become an error at the end."""
    saved, elsewhere = save_paid_pictures(rt, out, tag, ident, seed, result.images, result.paths)
    for path in saved:
        to_stdout(printable(str(path), 4096))
    paths.extend(saved)
    if rt.stop.is_set():
        rt.saved_after_stop += len(saved)
    if elsewhere:
        errors.append(SavedElsewhere(elsewhere))


def _checked_seed(seed: int | None, count: int) -> int:
    """The order's first seed; a bad one is refused before a random one would be drawn."""
    if seed is not None and seed != -1:
        check_seeds(seed, count)
    return _seed_or_random(seed)


# -- tasks ----------------------------------------------------------------------------------------------------------


def _collect_all(rt: Runtime, jobs: list[tuple[str, str, dict[str, Any]]], out: Path, timeout: float | None,
                 *, tag: str | None = None) -> list[Path]:
    """Collect the tasks side by side through the engine; keep going after a failure, print each error, and raise
    the last one. Every task counts as in flight until it is collected, so Ctrl-C names each one still waiting."""
    paths: list[Path] = []
    errors: list[BaseException] = []
    for task_id, provider, _extra in jobs:
        rt.track(task_id, provider)
    try:
        for provider in dict.fromkeys(provider for _tid, provider, _extra in jobs):
            mine = [(task_id, extra) for task_id, p, extra in jobs if p == provider]
            outcomes = rt.engine().collect([task_id for task_id, _extra in mine],
                                           provider="qingbo" if provider == "qingbo" else "wavespeed",
                                           timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
                                           extras=[extra for _tid, extra in mine])
            errors.extend(_outcome_errors(outcomes))
            for (task_id, extra), outcome in zip(mine, outcomes, strict=True):
                result = outcome.value
                if result is None:
                    continue
                seed = extra.get("seed", result.seeds[0] if result.seeds else None)
                _write(rt, out, tag or provider, task_id, seed, result, paths, errors)
    finally:
        if paths:
            to_stderr(COLLECT_PAID_LINE)
    _raise_last(errors)
    return paths


def submit_tasks(rt: Runtime, *, prompt: str, aspect_ratio: str = fields.ASPECT_RATIO.default,
                 resolution: str = fields.RESOLUTION.default,
                 prompt_extend: bool = False, seed: int | None = None, count: int = 1) -> list[str]:
    """Create ``count`` Qingbo tasks through the engine (seeds ``seed``, ``seed+1``...; none: Qingbo picks), print
    and return their ids. The same inputs again return the same tasks without paying: change the seed to re-roll."""
    from ..engine import submit_error

    order = QingboTasks(prompt=prompt, aspect_ratio=aspect_ratio, resolution=resolution,
                        prompt_extend=prompt_extend, seed=None if seed is None or seed == -1 else seed, count=count)
    try:
        outcomes = rt.engine().submit(order)
    except RunCancelled as cancelled:  # Ctrl-C: the tasks accepted are still printed, then the run stops
        outcomes = cancelled.outcomes
    stopped = rt.stop.is_set()
    errors = _outcome_errors([o for o in outcomes if not (stopped and isinstance(o.error, Interrupted))])
    tasks = [o.value for o in outcomes if o.value is not None]
    ids = []
    for task in tasks:
        rt.untrack(task.task_id)  # accepted: collecting it is `poll`'s work, not this command's
        try:
            ids.append(check_server_task_id(task.task_id, provider="Qingbo"))
        except InvalidTaskIdError as err:
            errors.append(_mark_invalid(rt, task.task_id, err))
    for task_id in ids:
        to_stdout(task_id)
    earlier = sum(1 for task in tasks if task.earlier)
    _report_paid(submit_paid_line(len(tasks) - earlier, earlier), errors, stopped)
    if errors:
        raise submit_error(errors[0], ids, order.count)
    return ids


def submit_paid_line(bought: int, earlier: int) -> str | None:
    """What ``submit`` paid: "paid $X for 1 task (refunded if it fails)", "accepted earlier, nothing charged",
    or both."""
    parts: list[str] = []
    if bought:
        parts.append(f"paid {usd(QINGBO_USD_PER_PICTURE * bought)} for {_count(bought, 'task')} "
                     f"({'' if bought == 1 else 'each '}refunded if it fails)")
    if earlier and not parts:
        parts.append("accepted earlier, nothing charged" if earlier == 1 else
                     f"{earlier} tasks accepted earlier, nothing charged")
    elif earlier:
        parts.append(f"{earlier} accepted earlier, nothing charged")
    return "; ".join(parts) or None


# A final status of the ledger for an id no server could have meant (kept with the message in ``error``).
INVALID_ID_STATUS = "failed"


def _mark_invalid(rt: Runtime, task_id: str, err: InvalidTaskIdError) -> InvalidTaskIdError:
    """Record a task id no server could have meant as final in the ledger (so it is no longer listed as unfinished,
    and nothing is ever requested with it); the error to report, saying so."""
    rt.ledger.record_status(task_id, INVALID_ID_STATUS, error=err.message, invalid_id=True)
    marked = InvalidTaskIdError(f"{err.message} It is marked {INVALID_ID_STATUS} in the ledger and no longer listed "
                                "as unfinished; check the provider's dashboard for its picture.", task_id=err.task_id,
                                provider=err.provider)
    marked.__cause__ = err
    return marked


COLLECT_PAID_LINE = "nothing charged now (paid at submit)"


def read_task_ids(values: Sequence[str]) -> list[str]:
    """The task ids given on the command line, where ``-`` stands for every id read from stdin."""
    from ..validation import split_task_ids

    ids: list[str] = []
    for value in values:
        ids.extend(split_task_ids(sys.stdin.read()) if value == "-" else [value])
    if not ids:
        raise UsageError("No task id given (stdin was empty).", field="task_id")
    return ids


def collect_tasks(rt: Runtime, task_ids: Sequence[str], *, provider: str = "qingbo", out: Path,
                  timeout: float | None = None) -> list[Path]:
    """Wait for existing tasks (never re-submitting), write their pictures, print and return the paths."""
    from ..validation import check_task_id

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
        return str((rt.clients.qingbo() if provider == "qingbo" else rt.clients.v3()).transport.base_url)
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
    if ordered["base_url"]:
        ordered["base_url"] = mask_url(str(ordered["base_url"]))
    ordered["cost_usd"] = task_cost_usd(entry)
    ordered.update((k, v) for k, v in entry.items() if k not in ordered)
    clean = {k: v for k, v in ordered.items() if not any(word in k.lower() for word in _SECRET_WORDS)}
    return json.dumps(clean, ensure_ascii=False, separators=(",", ":"), default=str)


def _cost_text(entry: dict[str, Any]) -> str:
    """A task's cost for the COST column: ``$0.011``, or ``-`` while a Qingbo task has not said it."""
    cost = task_cost_usd(entry)
    return "-" if cost is None else format_usd(cost)


def list_tasks(rt: Runtime, *, limit: int = 20, as_json: bool = False) -> None:
    """Print the ledger's unfinished tasks, then the most recent finished ones (with their server when it is
    another); with ``as_json``, every task as one JSON object per line, oldest first."""
    if as_json:
        # Oldest first by submission: tasks submitted side by side may reach the store in the other order.
        entries = sorted(rt.ledger.entries().values(), key=lambda e: float(e.get("submitted_at") or e.get("time") or 0))
        for entry in entries:
            to_stdout(task_json(entry))
        return
    now = time.time()  # the ledger stamps real time
    elsewhere = False

    def table(rows: list[dict[str, Any]]) -> None:
        nonlocal elsewhere
        to_stdout(f"  {'TASK ID':<40} {'PROVIDER':<10} {'STATUS':<11} {'COST':<8} AGE")
        for entry in rows:
            age = _age(now - float(entry.get("submitted_at") or entry.get("time") or now))
            server = _other_server(rt, entry)
            elsewhere = elsewhere or server is not None
            to_stdout(f"  {printable(entry['task_id'], 60):<40} {printable(entry.get('provider', '?'), 10):<10} "
                      f"{printable(entry.get('status', '?'), 11):<11} {_cost_text(entry):<8} {age}"
                      + (f"  issued by {printable(mask_url(server))}" if server else ""))

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
    to_stdout(f"Ledger: {rt.ledger.where}")


def _recorded_seed(entry: dict[str, Any]) -> dict[str, Any]:
    """``{"seed": N}`` when the ledger recorded the fixed seed the task was submitted with, else ``{}``."""
    seed = (entry.get("params") or {}).get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0:
        return {"seed": seed}
    return {}


def resume_tasks(rt: Runtime, *, out: Path, timeout: float | None = None) -> list[Path]:
    """Collect every unfinished task of the ledger; raise the last error after trying them all.

    Tasks issued by another server than the one configured now (another gateway, an emulator) are skipped with a
    note: that server alone can answer for them.
    """
    jobs: list[tuple[str, str, dict[str, Any]]] = []
    skipped: dict[tuple[str, str], list[str]] = {}
    invalid: list[InvalidTaskIdError] = []
    for entry in rt.ledger.unfinished():
        provider = "qingbo" if entry.get("provider") == "qingbo" else "wavespeed"
        try:
            check_server_task_id(entry["task_id"], provider="Qingbo" if provider == "qingbo" else "WaveSpeed")
        except InvalidTaskIdError as err:
            invalid.append(err)
            to_stderr(f"error: {one_line(_mark_invalid(rt, entry['task_id'], err))}")
            continue
        server = _other_server(rt, entry)
        if server is not None:
            skipped.setdefault((provider, server), []).append(str(entry["task_id"]))
        else:
            jobs.append((str(entry["task_id"]), provider, _recorded_seed(entry)))
    for (provider, server), ids in skipped.items():
        env = QINGBO.base_url_env if provider == "qingbo" else WAVESPEED.base_url_env
        shown = printable(mask_url(server))
        configured = printable(mask_url(str(_configured_server(rt, provider))))
        to_stderr(f"note: skipped {len(ids)} unfinished {provider} task{'s' if len(ids) > 1 else ''} issued by "
                  f"{shown}, not the server configured now ({configured}"
                  f"): {', '.join(printable(i, 60) for i in ids)}; set {env}={shown} to collect "
                  f"{'them' if len(ids) > 1 else 'it'}.")
    left = sum(len(ids) for ids in skipped.values())
    not_collected = NotCollected(
        f"{left} unfinished task{'s were' if left > 1 else ' was'} not collected, because another server issued "
        f"{'them' if left > 1 else 'it'} (see the note above).")
    unusable = NotCollected(
        f"{len(invalid)} unfinished task{'s' if len(invalid) > 1 else ''} had an id that cannot be collected (see "
        "above).")
    if not jobs:
        if skipped:
            raise not_collected
        if invalid:
            raise unusable
        to_stderr("No unfinished tasks in the ledger; nothing to collect.")
        return []
    prepare_out(out)
    paths = _collect_all(rt, jobs, out, timeout)
    if skipped:
        raise not_collected
    if invalid:
        raise unusable
    return paths
