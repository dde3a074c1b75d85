"""The command line's grammar: every command, option and help text, with examples in each ``--help``."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._version import __version__
from ..catalog import (
    DEFAULT_TIMEOUT,
    PROVIDERS,
    QINGBO_PROMPT_LIMIT,
    QINGBO_QUOTA_PER_PICTURE,
    QINGBO_USD_PER_PICTURE,
    ROUTES,
    WAVESPEED_PROMPT_LIMIT,
    WAVESPEED_USD_PER_PICTURE,
    usd,
)
from ..config import config_path
from ..fields import BATCH_FLAGS, COMMAND_FLAGS, RESOLUTION, Field, add_flags
from ..orders import parse_lora
from .batch_rows import FIELDS as BATCH_FIELDS
from .runtime import EXIT_USAGE, PROG

__all__ = ["build_parser", "in_flag_terms", "FLAGS"]

FLAGS = {f.name: f.flag for fields in COMMAND_FLAGS.values() for f in fields
         if f.flag and f.kind not in ("IMAGE", "MASK", "ZIMAGE_LORAS", "BOOLEAN")}
FLAGS["timeout"] = "--timeout"
"""The library's field names (the nodes' input names) and the command line's flag for each."""

_FIELD_WORDS = re.compile(r"\b([Tt]he) (" + "|".join(sorted(FLAGS, key=len, reverse=True)) + r")\b")
_API_CHOICE = re.compile(r"\bthe (v1/images|v3) api\b")

_FORMATTER = argparse.RawDescriptionHelpFormatter


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``error: ...``) that points at ``--help``; exits 2 as argparse does."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"error: {message} (see `{self.prog} --help`)\n")


def in_flag_terms(message: str) -> str:
    """A library message in the command line's words: "the guidance_scale 30" becomes "--cfg 30", "the v1/images
    api" becomes "--api v1/images"."""
    message = _API_CHOICE.sub(lambda m: f"--api {m[1]}", message)
    return _FIELD_WORDS.sub(lambda m: FLAGS[m[2]], message)


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: a whole number, or -1 for random") from None


def _timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"invalid timeout {text!r}: a number of seconds greater than 0")
    return seconds


def _epilog(examples: Sequence[str], notes: str = "") -> str:
    """The ``--help`` epilog: each example as a full ``python -m zimage_api ...`` line, then ``notes``."""
    heading = "examples:" if len(examples) > 1 else "example:"
    text = "\n".join([heading, *(f"  {PROG} {example}" for example in examples)])
    return f"{text}\n\n{notes}" if notes else text


def _command(sub: Any, name: str, parents: list[argparse.ArgumentParser], *, summary: str, description: str,
             examples: Sequence[str], notes: str = "") -> argparse.ArgumentParser:
    """Register one command: ``summary`` in the command list, ``description`` and examples in its ``--help``."""
    return sub.add_parser(name, parents=parents, formatter_class=_FORMATTER, help=summary, description=description,
                          epilog=_epilog(examples, notes))


# The figures come from the catalog; the line breaks are the help text's own.
_QINGBO_PRICE = usd(QINGBO_USD_PER_PICTURE, exact=True)
_PRICES = (f"prices: Qingbo about {_QINGBO_PRICE} per picture ({QINGBO_QUOTA_PER_PICTURE:,} quota); "
           "prompt_extend adds an extra cost that Qingbo does not\npublish (not in the estimate). WaveSpeed Z-Image "
           f"about {usd(WAVESPEED_USD_PER_PICTURE)} (an estimate).")


def _common_parents() -> tuple[_Parser, _Parser, _Parser]:
    verbose = _Parser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="log each call (INFO) and show tracebacks on errors")
    out = _Parser(add_help=False)
    out.add_argument("--out", metavar="DIR", type=Path, default=Path("."),
                     help="folder for the pictures, created if missing (default: the current folder)")
    wait = _Parser(add_help=False)
    wait.add_argument("--timeout", metavar="SECONDS", type=_timeout, default=None,
                      help=f"seconds to wait for the pictures, retries included (default {DEFAULT_TIMEOUT}, as on "
                           "the nodes): the whole v1/images request, or upload, submit and polling of v3 predictions "
                           "and Qingbo tasks (a task still running then stays collectable)")
    return verbose, out, wait


def _collect_wait() -> _Parser:
    """``--timeout`` of the commands that only collect tasks (``poll``, ``tasks resume``): no v1/images request."""
    wait = _Parser(add_help=False)
    wait.add_argument("--timeout", metavar="SECONDS", type=_timeout, default=None,
                      help="how long to wait for each task's result, the polling deadline (default "
                           f"{DEFAULT_TIMEOUT}); a task still running then stays in the ledger, collectable later")
    return wait


def _add_retry_uncertain(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--retry-uncertain", action="store_true",
                        help="send again a request that an earlier run sent without getting its answer (it may "
                             "have been charged: check the provider's dashboard first, this can pay twice)")


def _add_wavespeed_options(parser: argparse.ArgumentParser, *, edit: bool) -> None:
    _add_retry_uncertain(parser)
    _add_fields(parser, COMMAND_FLAGS["edit" if edit else "generate"])


def _add_fields(parser: argparse.ArgumentParser, fields: Sequence[Field]) -> None:
    """The options of the field table (:mod:`zimage_api.fields`), with the command line's parsers."""
    add_flags(parser, fields, parsers={"seed": _seed, "loras": parse_lora, RESOLUTION.name: str.upper},
              use_defaults=("count", "negative_prompt"))


def _add_batch_command(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = _command(
        sub, "batch", parents, summary="run many jobs from a JSON-lines or CSV file (resumable)",
        description="Run one job per row of FILE (JSON lines or CSV with a header). Fields: "
                    f"{', '.join(BATCH_FIELDS)}. The provider is one of {', '.join(ROUTES)} (default "
                    f"{ROUTES[0]}); size is WIDTHxHEIGHT; reference, mask and control are picture paths, relative "
                    "to FILE's folder (a reference makes the row an edit); id/name/notes are kept in the manifest. "
                    "Every row is checked "
                    "before anything is sent. --out gets the pictures and manifest.jsonl (parameters, prompt "
                    "hash, seed, task id, cost, paths and status per row). Running the same command again "
                    "resumes: done rows are skipped, and submitted tasks are collected, never paid twice.",
        examples=["batch jobs.jsonl --dry-run            # check every row and estimate the cost; sends nothing",
                  "batch jobs.csv --concurrency 4 --out run1",
                  "batch jobs.csv --concurrency 4 --out run1   # again: resumes where it stopped"],
        notes=f"""jobs.jsonl:
  {{"prompt": "a red fox in snow", "seed": 42, "width": 1024, "height": 768}}
  {{"prompt": "a lighthouse", "provider": "qingbo", "aspect_ratio": "16:9"}}
  {{"prompt": "the same in winter", "reference": "street.jpg", "strength": 0.5}}

jobs.csv:
  prompt,provider,size,seed,cfg
  a red fox in snow,wavespeed-images,1024x768,42,7.5
  a lighthouse at dusk,wavespeed-v3,1024x1024,,

{_PRICES}

A row whose submit may have been charged without an answer (a dropped connection, a read timeout, a run killed
mid-submit) is recorded as uncertain and is not sent again. A done row whose pictures were deleted is collected
again from its task (free); a v1/images row has no task, so it is listed as missing and not sent again.""")
    parser.add_argument("file", metavar="FILE", type=Path, help="the jobs: .jsonl/.ndjson or .csv/.tsv")
    parser.add_argument("--concurrency", metavar="N", type=int, default=2,
                        help="rows running at once, 1-64 (default: 2, the limit of a default WaveSpeed account)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate every row and print the estimated cost; send nothing")
    add_flags(parser, BATCH_FLAGS, use_defaults=("provider",))
    parser.add_argument("--format", choices=("auto", "jsonl", "csv"), default="auto",
                        help="the file's format (default: auto, from the extension or the first character)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--retry-uncertain", action="store_true",
                        help="send again the rows whose submit may have been charged without an answer (check the "
                             "provider's dashboard first: this can pay twice)")
    parser.add_argument("--retry-missing", action="store_true",
                        help="send again (and pay for) the done v1/images rows whose pictures are gone from --out")


def _add_spend_command(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    spend = _command(sub, "spend", parents, summary="what today's (or a window's) pictures cost, by provider",
                     description="Print what the paid pictures cost by provider since local midnight (or over "
                                 "--since), and today's spend against the daily budget ([budget] daily_usd in "
                                 "zimage.ini, or ZIMAGE_DAILY_BUDGET_USD).",
                     examples=["spend", "spend --since 7d", "spend --since 12h --json"])
    spend.add_argument("--since", metavar="WHEN", default="today",
                       help="today (since local midnight, the default), Nd (the last N days) or Nh (the last N hours)")
    spend.add_argument("--json", action="store_true",
                       help="print one JSON object: since, window_start, by_provider, total_usd, today_usd, "
                            "budget_usd, left_usd")


def _add_store_command(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    store = _command(sub, "store", parents, summary="copy this machine's task store into the shared PostgreSQL one",
                     description="The task store of a farm can be one PostgreSQL database (ZIMAGE_STORE_URL). "
                                 "`store copy` copies this machine's store (its data folder's zimage.sqlite3) into "
                                 "it: tasks with their history, receipts with their pictures, Idempotency-Keys, "
                                 "uncertain requests and the spend. Running it again copies nothing twice.",
                     examples=["store copy --to postgresql://zimage@db.example:5432/zimage",
                               "store copy --from ~/old-data --to postgresql://zimage@db.example:5432/zimage"])
    actions = store.add_subparsers(dest="store_action", metavar="ACTION", parser_class=_Parser, required=True,
                                   help="copy")
    copy = _command(actions, "copy", parents, summary="copy this machine's store into the shared one",
                    description="Copy this machine's task store into the shared PostgreSQL store and print what was "
                                "copied; rows the shared store holds already are left as they are.",
                    examples=["store copy --to postgresql://zimage@db.example:5432/zimage",
                              "store copy                     # into the store set in ZIMAGE_STORE_URL"])
    copy.add_argument("--to", metavar="URL", default=None,
                      help="the shared store, postgresql://user:password@host:port/database (default: the store URL "
                           "set in ZIMAGE_STORE_URL or [store] url)")
    copy.add_argument("--from", dest="source", metavar="FOLDER", type=Path, default=None,
                      help="the data folder whose zimage.sqlite3 is copied (default: this machine's data folder)")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every option documented, with examples in each epilog)."""
    verbose, out, wait = _common_parents()
    parser = _Parser(
        prog=PROG, formatter_class=_FORMATTER, parents=[verbose],
        description="Z-Image at WaveSpeed and Qingbo from the command line: pictures go to --out, one path per "
                    "line on stdout; every paid task id is in the ledger first, so nothing paid is lost.",
        epilog=_epilog(
            ["demo --out demo-pictures          # a tour against a local emulator; no key needed",
             'generate "a ceramic mug on linen" --seed 42 --out pictures',
             f'submit "a lighthouse at dusk" --aspect-ratio 16:9 | xargs {PROG} poll --out pictures',
             "batch jobs.csv --concurrency 4 --out run1"],
            "keys: WAVESPEED_API_KEY and QINGBO_API_KEY (or WAVE_API_KEY), or api_key under [wavespeed] and "
            f"[qingbo] in {config_path()} (ZIMAGE_CONFIG names another file).\n"
            "exit codes: 0 success, 1 a job failed, 2 bad usage or configuration, 130 interrupted (Ctrl-C)."))
    parser.add_argument("--version", action="version", version=f"zimage {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    gen = _command(sub, "generate", [verbose, out, wait], summary="text to image at WaveSpeed (v1/images or v3)",
                   description="Generate pictures from a prompt at WaveSpeed and write them to --out as "
                               "wavespeed_<prompt-hash|prediction-id>_<seed>_<i>.png|jpg.",
                   examples=['generate "a red fox in snow, film photo" --seed 42 --out pictures',
                             'generate "a red fox in snow" --negative "blurry" --cfg 7.5 --width 1024 --height 768 '
                             '--count 2',
                             'generate "a red fox in snow" --api v3 --model Z-Image-Turbo --output-format jpeg',
                             'generate "a red fox in snow" --model Z-Image-Turbo --lora owner/film-grain:0.8',
                             'generate "a glass house at dusk" --control edges.png --mode none --strength 0.8'])
    gen.add_argument("prompt", metavar="PROMPT", help=f"what to draw (at most {WAVESPEED_PROMPT_LIMIT:,} characters)")
    _add_wavespeed_options(gen, edit=False)

    edit = _command(sub, "edit", [verbose, out, wait], summary="image to image at WaveSpeed, from a reference picture",
                    description="Edit a reference picture at WaveSpeed. The reference is downscaled to at most "
                                "1024 px on its long side before upload. Pictures are written as "
                                "wavespeed-edit_<prompt-hash|prediction-id>_<seed>_<i>.png|jpg.",
                    examples=['edit photo.jpg "the same street in winter, snow falling" --strength 0.5 --out pictures',
                              'edit sketch.png "a watercolor painting" --strength 0.3 --cfg 6.5 --seed 7',
                              'edit photo.jpg "as a pencil drawing" --api v3 --strength 0.6',
                              'edit photo.jpg "a potted plant on the table" --mask plant-mask.png'])
    edit.add_argument("reference", metavar="REFERENCE_PATH", help="the reference picture (PNG, JPEG, WebP...)")
    edit.add_argument("prompt", metavar="PROMPT",
                      help=f"what to make of it (at most {WAVESPEED_PROMPT_LIMIT:,} characters)")
    _add_wavespeed_options(edit, edit=True)

    submit = _command(sub, "submit", [verbose], summary="create Qingbo z-image-turbo tasks and print their ids",
                      description=f"Create Qingbo tasks (z-image-turbo, about {_QINGBO_PRICE} per "
                                  "picture) and print one task id per line, without waiting. Collect them with `poll`.",
                      examples=['submit "a lighthouse at dusk, oil painting" --aspect-ratio 16:9 --resolution 2K',
                                f'submit "a lighthouse" --count 3 --seed 100 > ids.txt && {PROG} poll - --out '
                                'pictures < ids.txt'])
    submit.add_argument("prompt", metavar="PROMPT", help=f"what to draw (at most {QINGBO_PROMPT_LIMIT} characters)")
    _add_retry_uncertain(submit)
    add_flags(submit, COMMAND_FLAGS["submit"], parsers={"seed": _seed, RESOLUTION.name: str.upper},
              use_defaults=("aspect_ratio", "resolution", "count"))

    collect_wait = _collect_wait()
    poll = _command(sub, "poll", [verbose, out, collect_wait], summary="collect tasks by id (never re-submits)",
                    description="Wait for existing tasks and download their pictures as "
                                "<provider>_<task-id>_<seed>_<i>.png|jpg. Nothing is re-submitted; a task already "
                                "collected is served from the ledger's local copy.",
                    examples=["poll task-wave17800000a1b2 --out pictures",
                              "poll --provider wavespeed 9f2c4e6a8b0d --timeout 300",
                              f'submit "a fox" --count 2 | {PROG} poll -'])
    poll.add_argument("task_ids", metavar="TASK_ID", nargs="+", help="task ids; - reads them from stdin")
    poll.add_argument("--provider", choices=PROVIDERS, default="qingbo",
                      help="qingbo task ids, or wavespeed v3 prediction ids (default: qingbo)")

    _add_batch_command(sub, [verbose, out, wait])

    tasks = _command(sub, "tasks", [verbose],
                     summary="list the ledger's unfinished and recent tasks; `tasks resume` collects them",
                     description="The ledger records every paid task id before any waiting. `tasks` lists the "
                                 "unfinished and recent ones (id, provider, status, age); `tasks resume` collects "
                                 "every unfinished task and prints the pictures' paths.",
                     examples=["tasks", "tasks list --limit 50", "tasks --json | grep completed",
                               "tasks resume --out recovered"])
    tasks_sub = tasks.add_subparsers(dest="tasks_action", metavar="ACTION", parser_class=_Parser,
                                     help="list (the default) or resume")
    listing = tasks_sub.add_parser("list", parents=[verbose], help="list tasks (the default)",
                                   description="List the ledger's unfinished and recent tasks.")
    # Only the first parser sets the default: a subparser's own default would overwrite `tasks --limit 1 list`.
    for target, default in ((tasks, 20), (listing, argparse.SUPPRESS)):
        target.add_argument("--limit", metavar="N", type=int, default=default,
                            help="how many recent tasks to list (default: 20)")
    for target, flag in ((tasks, False), (listing, argparse.SUPPRESS)):
        target.add_argument("--json", action="store_true", default=flag,
                            help="print every task as one JSON object per line (task_id, provider, status, "
                                 "submitted_at, base_url, model, ...), for grep and jq")
    tasks_sub.add_parser("resume", parents=[verbose, out, collect_wait], help="collect every unfinished task",
                         description="Collect every unfinished task in the ledger (never re-submitting) and "
                                     "write the pictures to --out.")

    _add_spend_command(sub, [verbose])
    _add_store_command(sub, [verbose])

    sub.add_parser("emulator", add_help=False, help="serve the local emulator of both providers (see "
                                                      "`emulator --help`)")

    demo = _command(sub, "demo", [verbose],
                    summary="a short tour against an embedded emulator (no key, nothing charged)",
                    description="Start an emulator in this process, then generate (v1/images), edit that picture, "
                                "generate with v3 and run a Qingbo task, writing the pictures to --out. It uses its "
                                "own ledger in DIR/.ledger and never your keys.",
                    examples=["demo --out demo-pictures"])
    demo.add_argument("--out", metavar="DIR", type=Path, default=Path("zimage-demo"),
                      help="folder for the demo pictures (default: zimage-demo)")
    return parser
