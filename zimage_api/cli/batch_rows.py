"""The rows of a batch file: reading JSON lines or CSV, validating and normalising each row, its key and its cost.

Every row is validated with the clients' own validators before anything is sent; an invalid row carries a sentence
saying what is wrong instead of stopping the reading, so every bad row is reported at once.

A row's key is a hash of its normalised parameters (the reference by content), with ``#2``, ``#3``... for repeated
identical rows, so the key does not move when other rows are added, removed or reordered.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..catalog import (
    DEFAULT_TIMEOUT,
    QINGBO_QUOTA_PER_PICTURE,
    QINGBO_USD_PER_PICTURE,
    ROUTES,
    WAVESPEED_PROMPT_LIMIT,
    WAVESPEED_USD_PER_PICTURE,
    Route,
    provider_and_api,
    route_named,
    route_of,
    usd,
)
from ..errors import ValidationError, ZImageError
from ..fields import (
    BATCH_COLUMNS,
    CONTROL_STRENGTH,
    EDIT_GUIDANCE,
    GUIDANCE,
    HEIGHT,
    MODE,
    MODEL,
    OUTPUT_FORMAT,
    RESPONSE_FORMAT,
    STRENGTH,
    WIDTH,
    column_named,
    columns_for,
)
from ..orders import (
    ControlNet,
    Edit,
    Inpaint,
    Lora,
    PictureOrder,
    QingboTasks,
    TextToImage,
    check_loras,
    parse_lora,
    random_seed,
)
from .commands import read_masked, read_picture, read_picture_bytes, read_reference
from .runtime import UsageError, one_line, to_stdout

__all__ = ["Job", "load_jobs", "normalise_row", "params_digest", "estimate_cost", "print_dry_run", "PROVIDERS",
           "FIELDS", "PASSTHROUGH", "QINGBO_USD_PER_IMAGE", "WAVESPEED_USD_PER_IMAGE_ESTIMATE"]

# What Qingbo bills per picture (its quota per picture at its quota per USD). prompt_extend costs extra, by an amount
# Qingbo does not publish, so no figure is invented for it.
QINGBO_USD_PER_IMAGE = QINGBO_USD_PER_PICTURE
WAVESPEED_USD_PER_IMAGE_ESTIMATE = WAVESPEED_USD_PER_PICTURE

PROVIDERS = ROUTES  # a row's provider names a route: a provider with its api
FIELDS = tuple(f.column for f in BATCH_COLUMNS if f.column)  # the columns, from the field table
PASSTHROUGH = ("id", "name", "note", "notes", "comment")  # kept in the manifest, not part of the row's key


def _takes(route: Route) -> str:
    """What a row of ``route`` takes, for the message that refuses a column."""
    names = columns_for(route)
    return "it takes " + ", ".join(names[:-1]) + " and " + names[-1]


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
    fingerprint: str | None = None  # the engine's fingerprint of the row's picture (None: a random seed, drawn later)

    @property
    def where(self) -> str:
        """How error lines name the row: ``row 3``, with its line in the file when that is another number."""
        return f"row {self.row}" + (f" (line {self.line})" if self.line != self.row else "")

    @property
    def seed(self) -> int | None:
        """The row's fixed seed, or ``None`` for a random one."""
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
            except json.JSONDecodeError as err:
                value, error = {}, f"Not valid JSON ({err.msg} at column {err.colno})."
            if not isinstance(value, dict):
                value, error = {}, f"Expected a JSON object, found {type(value).__name__}."
            rows.append((len(rows) + 1, line_no, value, error))
        return rows
    dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
    if dialect == "excel":
        _check_delimiter(path, text)
    source = _CountedLines(text)
    reader = csv.DictReader(source, dialect=dialect, strict=True)
    try:
        fieldnames = reader.fieldnames
    except csv.Error as err:
        raise _quote_error(path, source, err) from None
    headers = [(h or "").strip().lower() for h in fieldnames or []]
    unknown = [h for h in headers if h and column_named(h) is None and h not in PASSTHROUGH]
    if unknown:
        raise UsageError(f"The batch file {path} has unknown column(s) {', '.join(map(repr, unknown))}; the "
                         f"columns are {', '.join(FIELDS)} (plus {', '.join(PASSTHROUGH)}, kept as notes).",
                         field="file")
    if "prompt" not in headers:
        raise UsageError(f"The batch file {path} has no 'prompt' column (its header is {', '.join(headers)}).",
                         field="file")
    reader.fieldnames = headers
    while True:
        source.mark()
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise _quote_error(path, source, err) from None
        cells = [*record.values(), *(record.get(None) or [])]
        if any(isinstance(cell, str) and ("\n" in cell or "\r" in cell) for cell in cells):
            raise _quote_error(path, source, None)
        values = {k: v.strip() for k, v in record.items() if k and isinstance(v, str) and v.strip()}
        extra: Any = record.get(None)  # DictReader's restkey: the values past the header's columns
        if isinstance(extra, list) and extra:
            rows.append((len(rows) + 1, reader.line_num, {}, _unquoted_comma(headers, record, extra)))
        elif values:
            rows.append((len(rows) + 1, reader.line_num, values, None))
    return rows


class _CountedLines:
    """The lines of a CSV text for :mod:`csv`, counting how many were read, so that an error names its lines."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines(keepends=True)
        self.read = 0
        self.start = 1

    def __iter__(self) -> _CountedLines:
        return self

    def __next__(self) -> str:
        if self.read >= len(self.lines):
            raise StopIteration
        self.read += 1
        return self.lines[self.read - 1]

    def mark(self) -> None:
        """The next record starts at the next line that is not blank."""
        start = self.read
        while start < len(self.lines) and not self.lines[start].strip():
            start += 1
        self.start = start + 1


def _quote_error(path: Path, source: _CountedLines, err: csv.Error | None) -> UsageError:
    """A value that runs over several lines: a double quote left open (it swallows the rows after it)."""
    if err is not None and "quote" not in str(err) and "expected" not in str(err) and "end of data" not in str(err):
        return UsageError(f"The batch file {path} cannot be read as CSV at line {source.read} ({err}).",
                          field="file")
    end = "the end of the file" if err is not None and "end of data" in str(err) else f"line {source.read}"
    return UsageError(
        f"The batch file {path} has a double quote on line {source.start} that is not closed on that line, so the "
        f"rows run together up to {end}; close the quote, or write a quote inside a value as two (\"\"). Nothing "
        "was sent.", field="file")


def _check_delimiter(path: Path, text: str) -> None:
    """A CSV saved with ';' or tabs (Excel in many countries) reads as one column: say so instead."""
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines or "," in lines[0]:
        return
    for mark, name, extra in ((";", "';'", ""), ("\t", "tabs", ", or give it the .tsv extension")):
        if mark in lines[0] and all(mark in line for line in lines):
            raise UsageError(f"{path} looks separated by {name}: save it as comma-separated (in Excel: CSV "
                             f"UTF-8){extra}.", field="file")


def _unquoted_comma(headers: list[str], record: dict[Any, Any], extra: list[str]) -> str:
    """The sentence for a CSV row with more values than columns: most often a prompt with an unquoted comma."""
    cells = [str(record.get(h) or "") for h in headers] + [str(value) for value in extra]
    at = headers.index("prompt")
    example = ",".join(cells[at : at + len(extra) + 1]).strip()
    return (f"The row has {len(cells)} values for {len(headers)} columns; put a prompt that contains a comma in "
            f"double quotes, e.g. \"{example}\".")


_COLUMN_WORDS = re.compile(r"\b([Tt]he) guidance_scale\b")


def _route_of_api(api: Any) -> str:
    return route_of("wavespeed", api)


def in_column_terms(message: str) -> str:
    """A library message in a batch file's words: the cfg column, the wavespeed-images provider."""
    message = re.sub(r"\bthe (v1/images|v3) api\b", lambda m: f"provider {_route_of_api(m[1])}", message)
    return _COLUMN_WORDS.sub(lambda m: f"{m[1]} {GUIDANCE.column}", message)


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
    """(provider, normalised params, passthrough notes), validated by the order the row makes: the checks every
    entry point runs (:mod:`zimage_api.orders`), before anything is sent."""
    from ..validation import check_prompt, check_text_length

    fields: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    for name, value in raw.items():
        text = str(name).strip().lower()
        column = column_named(text)
        if text in PASSTHROUGH:
            extras[text] = value
        elif column is None or column.column is None:
            raise ValidationError(f"Unknown field {name!r}; the fields are {', '.join(FIELDS)}.", field=str(name))
        elif value is not None and value != "":
            fields[column.column] = value
    implied = next((f.implies for f in BATCH_COLUMNS if f.implies and f.column in fields), default_provider)
    route = route_named(fields.get("provider") or implied)
    if route is None:
        raise ValidationError(f"The provider {fields.get('provider')!r} is not one of {', '.join(PROVIDERS)}.",
                              field="provider")
    provider: Route = route
    misplaced = [f.column for f in BATCH_COLUMNS if f.column in fields and not f.takes(provider)]
    if misplaced:
        raise ValidationError(f"{provider} does not take {', '.join(map(str, misplaced))}; {_takes(provider)}.",
                              field=str(misplaced[0]))
    prompt = fields.get("prompt", "")
    seed = _seed(fields.get("seed"))
    if provider == "qingbo":
        if str(fields.get("model", "z-image-turbo")).lower() != "z-image-turbo":
            raise ValidationError(f"Qingbo runs z-image-turbo only, not {fields['model']!r}.", field="model")
        tasks = QingboTasks(prompt=prompt, aspect_ratio=str(fields.get("aspect_ratio", QingboTasks.aspect_ratio)),
                            resolution=str(fields.get("resolution", QingboTasks.resolution)),
                            prompt_extend=_bool(fields.get("prompt_extend", False), "prompt_extend"), seed=seed)
        params: dict[str, Any] = {"provider": provider, "prompt": tasks.prompt, "aspect_ratio": tasks.aspect_ratio,
                                  "resolution": tasks.resolution, "prompt_extend": tasks.prompt_extend, "seed": seed}
        return provider, params, extras

    width, height = _size(fields)
    special = "mask" in fields or "control" in fields
    reference = None
    params = {"provider": provider, "model": str(fields.get("model", MODEL.choices[1] if special else MODEL.default)),
              "prompt": prompt, "negative_prompt": str(fields.get("negative_prompt", "")), "seed": seed}
    # The order's length checks, before a reference is read.
    check_prompt(prompt, limit=WAVESPEED_PROMPT_LIMIT, provider="WaveSpeed", documented=False)
    check_text_length(params["negative_prompt"], limit=WAVESPEED_PROMPT_LIMIT, provider="WaveSpeed",
                      field="negative_prompt", documented=False)
    if "loras" in fields:
        params["loras"] = [lora.as_json() for lora in _loras(fields["loras"])]
    if "control" in fields:
        if "reference" in fields or "mask" in fields:
            raise ValidationError("A control row takes no reference or mask: the control picture is the source.",
                                  field="control")
        params.update(_file_param(fields["control"], base_dir, "control"))
        params["mode"] = MODE.check(str(fields.get("mode", MODE.default)))
        params["strength"] = CONTROL_STRENGTH.check(_float(fields.get("strength", CONTROL_STRENGTH.default),
                                                           "strength"))
    elif "mode" in fields:
        raise ValidationError("The mode goes with a control picture (the control column).", field="mode")
    if "mask" in fields and "reference" not in fields:
        raise ValidationError("The mask needs a reference picture to inpaint.", field="mask")
    api = provider_and_api(provider)[1] or "v3"
    if "reference" in fields:
        reference = Path(str(fields["reference"])).expanduser()
        reference = reference if reference.is_absolute() else base_dir / reference
        ref = read_reference(reference)
        params["reference"] = str(reference.resolve())
        params["reference_sha256"] = hashlib.sha256(read_picture_bytes(reference)).hexdigest()[:16]
        if "mask" in fields:
            if "strength" in fields:
                raise ValidationError("The strength does not apply to inpainting: the mask says what is kept.",
                                      field="strength")
            params.update(_file_param(fields["mask"], base_dir, "mask"))
        else:
            params["strength"] = STRENGTH.check(_float(fields.get("strength", STRENGTH.default), "strength"))
        if width is None:
            # The output size an edit gets from its reference, as every entry point fits it.
            width, height = Edit(references=(ref,), prompt=prompt or "-", api=api).size
    elif "strength" in fields and "control" not in fields:
        raise ValidationError("The strength needs a reference picture.", field="strength")
    if reference is None and width is None and "control" not in fields:
        width, height = WIDTH.default, HEIGHT.default
    params.update(width=width, height=height)
    params["response_format"] = str(fields.get("response_format") or response_format or RESPONSE_FORMAT.default)
    if api == "v1/images":
        default_cfg = EDIT_GUIDANCE.default if reference else GUIDANCE.default
        params["cfg"] = _float(fields.get("cfg", default_cfg), "cfg")
    else:
        params["output_format"] = str(fields.get("output_format") or output_format or OUTPUT_FORMAT.default)
    order = row_order(Job(row=0, line=0, provider=provider, params=params))  # every check the order makes
    if width is None and isinstance(order, TextToImage):
        params.update(width=order.width, height=order.height)  # a control row: the control picture's size
    return provider, params, extras


def _file_param(value: Any, base_dir: Path, name: str) -> dict[str, Any]:
    """A picture file named in a row (relative to the batch file's folder): its resolved path and content hash."""
    path = Path(str(value)).expanduser()
    path = path if path.is_absolute() else base_dir / path
    read_picture(path, name)  # readable, and a picture
    digest = hashlib.sha256(read_picture_bytes(path, name)).hexdigest()[:16]
    return {name: str(path.resolve()), f"{name}_sha256": digest}


def _loras(value: Any) -> tuple[Lora, ...]:
    """LoRAs from a row: a list (of ``{"path", "scale"}`` or ``"PATH:SCALE"``), or text ``PATH:SCALE;PATH:SCALE``."""

    items = value if isinstance(value, list) else [part for part in str(value).split(";") if part.strip()]
    return check_loras([parse_lora(item.strip()) if isinstance(item, str) else item for item in items])


def params_digest(params: dict[str, Any]) -> str:
    """A stable 16-hex hash of JSON-able parameters."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def load_jobs(path: Path, *, fmt: str = "auto", default_provider: str = ROUTES[0],
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
            job.error = in_column_terms(one_line(err))
            continue
        # Pictures count by content (their hashes), not by path; response_format only changes the transport.
        digest = params_digest({k: v for k, v in job.params.items()
                                if k not in ("reference", "mask", "control", "response_format")})
        seen[digest] += 1
        job.key = digest if seen[digest] == 1 else f"{digest}#{seen[digest]}"
    return jobs


# -- cost -----------------------------------------------------------------------------------------------------------


def estimate_cost(job: Job) -> float:
    """The row's price in USD: about what Qingbo bills (without prompt_extend's unpublished extra), or the price of
    the WaveSpeed model the row goes to (published, or estimated where WaveSpeed publishes none)."""
    if job.provider == "qingbo":
        return QINGBO_USD_PER_IMAGE
    order = row_order(job)
    return order.price if isinstance(order, TextToImage) else WAVESPEED_USD_PER_IMAGE_ESTIMATE


def _endpoint(job: Job) -> tuple[str, str]:
    """Where a WaveSpeed row goes and its price per picture, as the estimate prints them."""
    order = row_order(job)
    assert isinstance(order, TextToImage)
    return order.endpoint_name, order.price_text


def _rows(jobs: list[Job]) -> str:
    shown = ", ".join(job.where for job in jobs[:10])
    return shown + (f" and {len(jobs) - 10} more" if len(jobs) > 10 else "")


def print_dry_run(jobs: list[Job], done: list[Job], todo: list[tuple[Job, str | None]], path: Path, *,
                  recollect: set[str] | None = None, uncertain: list[Job] | None = None,
                  missing: list[Job] | None = None) -> None:
    """Print what a run would do (rows done, to collect, to run, skipped) and what the new rows would cost.

    ``recollect`` are the keys of done rows whose pictures went missing and are collected again from their task;
    ``uncertain`` and ``missing`` rows are skipped (see :mod:`.batch_manifest`).
    """
    recollect = recollect or set()
    uncertain, missing = uncertain or [], missing or []
    again = [job for job, _task_id in todo if job.key in recollect]
    collect = [job for job, task_id in todo if task_id and job.key not in recollect]
    fresh = [job for job, task_id in todo if not task_id and job.key not in recollect]
    summary = (f"batch {path}: {len(jobs)} row{'s' if len(jobs) != 1 else ''}: {len(done)} done earlier (skipped), "
               f"{len(collect)} submitted earlier (to collect, already paid), ")
    if again:
        summary += (f"{len(again)} done earlier with missing pictures (to collect again from their tasks or kept "
                    "copies, free), ")
    if uncertain:
        summary += f"{len(uncertain)} uncertain (skipped), "
    if missing:
        summary += f"{len(missing)} with missing pictures (skipped), "
    to_stdout(summary + f"{len(fresh)} to run")
    total = 0.0
    for provider in PROVIDERS:
        rows = [job for job in fresh if job.provider == provider]
        if not rows:
            continue
        cost = sum(estimate_cost(job) for job in rows)
        total += cost
        count = f"{len(rows)} picture{'s' if len(rows) > 1 else ''}"
        if provider == "qingbo":
            extended = sum(1 for job in rows if job.params.get("prompt_extend"))
            note = (f"; {extended} with prompt_extend, which adds an extra cost that Qingbo does not publish"
                    if extended else "")
            each = usd(QINGBO_USD_PER_IMAGE, exact=True)
            to_stdout(f"  {provider:<17} {count:<13} ~{usd(cost, 4)} (about {each} each, "
                      f"{QINGBO_QUOTA_PER_PICTURE:,} quota{note})")
        else:
            to_stdout(f"  {provider:<17} {count:<13} ~{usd(cost, 4)}")
            groups: dict[tuple[str, str], list[Job]] = {}
            for job in rows:
                groups.setdefault(_endpoint(job), []).append(job)
            for (endpoint, each), group in groups.items():
                to_stdout(f"    {endpoint}: {len(group)} x {each} = ~{usd(sum(estimate_cost(j) for j in group), 4)}")
    if uncertain:
        to_stdout(f"  uncertain: {_rows(uncertain)}: the submit may have been charged without an answer; not sent "
                  "again (check the provider's dashboard; --retry-uncertain sends them anyway)")
    if missing:
        to_stdout(f"  missing pictures: {_rows(missing)}: done earlier with v1/images, which keeps no copy; not "
                  "sent again (--retry-missing pays for them again)")
    to_stdout(f"estimated cost: about {usd(total, 4)} (each model's published price per picture, estimated where none "
              "is published; nothing was sent)")


def row_order(job: Job, *, timeout: float = DEFAULT_TIMEOUT) -> PictureOrder | QingboTasks:
    """The engine's order for one row: one picture (or task), as a node or a single command would send it.

    A WaveSpeed row without a seed gets one drawn now (it is in the picture's file name); Qingbo picks its own.
    """
    p = job.params
    if job.provider == "qingbo":
        return QingboTasks(prompt=p["prompt"], aspect_ratio=p["aspect_ratio"], resolution=p["resolution"],
                           prompt_extend=p["prompt_extend"], seed=p["seed"])
    api = provider_and_api(job.provider)[1]  # type: ignore[arg-type]
    seed = random_seed() if p["seed"] is None else p["seed"]
    common: dict[str, Any] = dict(prompt=p["prompt"], negative_prompt=p["negative_prompt"], model=p["model"],
                                  api=api, seed=seed, width=p["width"], height=p["height"],
                                  response_format=p.get("response_format") or RESPONSE_FORMAT.default,
                                  output_format=p.get("output_format") or OUTPUT_FORMAT.default, timeout=timeout)
    if api == "v1/images":
        common["guidance_scale"] = p["cfg"]
    if p.get("loras"):
        common["loras"] = check_loras(p["loras"])
    if p.get("control"):
        common.update(width=p["width"] or 0, height=p["height"] or 0)
        return ControlNet(references=(read_reference(p["control"], "control"),), mode=p["mode"], strength=p["strength"],
                          **common)
    if p.get("mask"):
        return Inpaint(pictures=(read_masked(p["reference"], p["mask"]),), **common)
    if p.get("reference"):
        return Edit(references=(read_reference(p["reference"]),), strength=p["strength"], **common)
    return TextToImage(**common)
