"""The command line's grammar: every command, option and help text, with examples in each ``--help``."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..catalog import (
    CONTROL_MODES,
    QINGBO_QUOTA_PER_PICTURE,
    QINGBO_USD_PER_PICTURE,
    WAVESPEED_PROMPT_LIMIT,
    WAVESPEED_USD_PER_PICTURE,
)
from ..validation import QINGBO_PROMPT_LIMIT
from .batch_rows import PROVIDERS
from .runtime import EXIT_USAGE, PROG

__all__ = ["build_parser", "in_flag_terms", "FLAGS"]

FLAGS = {
    "guidance_scale": "--cfg", "negative_prompt": "--negative", "width": "--width", "height": "--height",
    "strength": "--strength", "seed": "--seed", "count": "--count", "model": "--model", "api": "--api",
    "response_format": "--response-format", "output_format": "--output-format", "timeout": "--timeout",
    "aspect_ratio": "--aspect-ratio", "resolution": "--resolution",
}
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


def parse_lora(text: str) -> tuple[str, float]:
    """``PATH:SCALE`` (or just ``PATH``, scale 1); the path may be an https URL, so the scale is after the last ':'."""
    path, sep, tail = text.rpartition(":")
    if sep:
        try:
            return path, float(tail)
        except ValueError:
            pass
    return text, 1.0


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
_PRICES = (f"prices: Qingbo about ${QINGBO_USD_PER_PICTURE:g} per picture ({QINGBO_QUOTA_PER_PICTURE:,} quota); "
           "prompt_extend adds an extra cost that Qingbo does not\npublish (not in the estimate). WaveSpeed Z-Image "
           f"about ${WAVESPEED_USD_PER_PICTURE:g} (an estimate).")


def _common_parents() -> tuple[_Parser, _Parser, _Parser]:
    verbose = _Parser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="log each call (INFO) and show tracebacks on errors")
    out = _Parser(add_help=False)
    out.add_argument("--out", metavar="DIR", type=Path, default=Path("."),
                     help="folder for the pictures, created if missing (default: the current folder)")
    wait = _Parser(add_help=False)
    wait.add_argument("--timeout", metavar="SECONDS", type=_timeout, default=None,
                      help="how long to wait for a result: the polling deadline for v3 predictions and Qingbo "
                           "tasks (default 120; the task stays collectable afterwards), or the HTTP read timeout "
                           "of a v1/images request (default 60)")
    return verbose, out, wait


def _collect_wait() -> _Parser:
    """``--timeout`` of the commands that only collect tasks (``poll``, ``tasks resume``): no v1/images request."""
    wait = _Parser(add_help=False)
    wait.add_argument("--timeout", metavar="SECONDS", type=_timeout, default=None,
                      help="how long to wait for each task's result, the polling deadline (default 120); a task "
                           "still running then stays in the ledger, collectable later")
    return wait


def _add_retry_uncertain(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--retry-uncertain", action="store_true",
                        help="send again a request that an earlier run sent without getting its answer (it may "
                             "have been charged: check the provider's dashboard first, this can pay twice)")


def _add_wavespeed_options(parser: argparse.ArgumentParser, *, edit: bool) -> None:
    _add_retry_uncertain(parser)
    parser.add_argument("--api", choices=("v1/images", "v3"), default=None,
                        help="WaveSpeed protocol: the OpenAI-style v1/images (synchronous) or the native v3 "
                             "predictions (submit + poll, recorded in the ledger) (default: v1/images; v3 with "
                             "--lora, --mask or --control)")
    parser.add_argument("--model", choices=("Z-Image-Base", "Z-Image-Turbo"), default=None,
                        help="the model (default: Z-Image-Base; Z-Image-Turbo with --mask or --control; Turbo "
                             "ignores CFG and negative prompt)")
    parser.add_argument("--lora", metavar="PATH:SCALE", type=parse_lora, action="append", default=None,
                        help="a LoRA (v3): a Hugging Face repo id owner/name or an https .safetensors URL, with its "
                             "scale 0-4 after a colon (default 1); repeat for up to 3. Runs the -lora model")
    parser.add_argument("--negative", metavar="TEXT", default="", help="negative prompt: what to avoid")
    parser.add_argument("--cfg", metavar="SCALE", type=float, default=None,
                        help="guidance scale 0-20, v1/images only (default: %s)" % (
                            "6.5; 6-7 is dependable with a reference" if edit else "7.5; 7-8 is dependable"))
    if edit:
        parser.add_argument("--strength", metavar="S", type=float, default=None,
                            help="how closely to follow the reference, 0-1, the same on both apis: 0.25-0.35 a "
                                 "light touch, 0.45-0.6 solid, 0.7+ near copy (default: 0.5). v3 is sent the "
                                 "denoise 1 - S")
        parser.add_argument("--mask", metavar="FILE", default=None,
                            help="inpaint (v3, Z-Image-Turbo): a black and white picture, white where the "
                                 "reference is repainted; scaled to the reference if its size differs")
    else:
        parser.add_argument("--control", metavar="FILE", default=None,
                            help="ControlNet (v3, Z-Image-Turbo): the control picture the result follows")
        parser.add_argument("--mode", choices=CONTROL_MODES, default=None,
                            help="with --control: the map WaveSpeed makes of it, or none when FILE already is a "
                                 "control map (default: depth)")
        parser.add_argument("--strength", metavar="S", type=float, default=None,
                            help="with --control: how strictly the control is followed, 0-1 (default: 1)")
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


def _add_batch_command(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = _command(
        sub, "batch", parents, summary="run many jobs from a JSON-lines or CSV file (resumable)",
        description="Run one job per row of FILE (JSON lines or CSV with a header). Fields: prompt, "
                    "negative_prompt, width and height (or size 1024x768), seed, provider (wavespeed-images "
                    "(default), wavespeed-v3, qingbo), reference (a picture path, relative to FILE's folder: makes "
                    "the row an edit), cfg, strength, aspect_ratio, resolution, prompt_extend, model, "
                    "response_format, output_format; id/name/notes are kept in the manifest. Every row is checked "
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
    parser.add_argument("--provider", choices=PROVIDERS, default="wavespeed-images",
                        help="the provider of rows that name none (default: wavespeed-images)")
    parser.add_argument("--response-format", choices=("b64_json", "url"), default=None,
                        help="default response_format of wavespeed-images rows (default: b64_json)")
    parser.add_argument("--output-format", choices=("png", "jpeg"), default=None,
                        help="default output_format of wavespeed-v3 rows (default: png)")
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
            "keys: WAVESPEED_API_KEY and QINGBO_API_KEY (or WAVE_API_KEY), or zimage.ini (see ZIMAGE_CONFIG).\n"
            "exit codes: 0 success, 1 a job failed, 2 bad usage or configuration, 130 interrupted (Ctrl-C)."))
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
                      description=f"Create Qingbo tasks (z-image-turbo, about ${QINGBO_USD_PER_PICTURE:g} per "
                                  "picture) and print one task id per line, without waiting. Collect them with `poll`.",
                      examples=['submit "a lighthouse at dusk, oil painting" --aspect-ratio 16:9 --resolution 2K',
                                f'submit "a lighthouse" --count 3 --seed 100 > ids.txt && {PROG} poll - --out '
                                'pictures < ids.txt'])
    submit.add_argument("prompt", metavar="PROMPT", help=f"what to draw (at most {QINGBO_PROMPT_LIMIT} characters)")
    _add_retry_uncertain(submit)
    submit.add_argument("--aspect-ratio", default="1:1", choices=("1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3"),
                        help="picture shape (default: 1:1)")
    submit.add_argument("--resolution", default="1K", type=str.upper, choices=("1K", "2K"),
                        help="1K = 1024 px or 2K = 2048 px on the long side (default: 1K)")
    submit.add_argument("--prompt-extend", action="store_true",
                        help="let Qingbo expand the prompt (adds an extra cost that Qingbo does not publish)")
    submit.add_argument("--seed", metavar="N", type=_seed, default=None,
                        help="fixed seed (sent only when set); with --count the tasks use N, N+1, ...")
    submit.add_argument("--count", metavar="N", type=int, default=1, help="how many tasks, 1-8 (default: 1)")

    collect_wait = _collect_wait()
    poll = _command(sub, "poll", [verbose, out, collect_wait], summary="collect tasks by id (never re-submits)",
                    description="Wait for existing tasks and download their pictures as "
                                "<provider>_<task-id>_<seed>_<i>.png|jpg. Nothing is re-submitted; a task already "
                                "collected is served from the ledger's local copy.",
                    examples=["poll task-wave17800000a1b2 --out pictures",
                              "poll --provider wavespeed 9f2c4e6a8b0d --timeout 300",
                              f'submit "a fox" --count 2 | {PROG} poll -'])
    poll.add_argument("task_ids", metavar="TASK_ID", nargs="+", help="task ids; - reads them from stdin")
    poll.add_argument("--provider", choices=("qingbo", "wavespeed"), default="qingbo",
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
