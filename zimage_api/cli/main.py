"""The command line: ``python -m zimage_api generate|edit|submit|poll|batch|tasks|spend|store|emulator|demo``.

Every command writes pictures to ``--out`` with predictable names and prints one line per picture (its path) on
stdout; messages go to stderr. Exit codes: 0 success, 1 a failed job, 2 bad usage (including every local
validation or configuration error), 130 Ctrl-C. ``run(argv, sleep=..., clock=...)`` is the entry point tests use:
it injects the sleep and the clock into every client and waiting loop, so no test sleeps for real.

This module parses the command line, dispatches to the command and turns its errors into one line and an exit
code. The grammar is in :mod:`.parser`, the single commands in :mod:`.commands`, ``batch`` in
:mod:`.batch`, and what a run shares in :mod:`.runtime`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import CancelledError, ConfigError, ValidationError, ZImageError
from ..logs import logger, printable
from ..packages import missing_package_message
from ..store.sqlite import StoreError
from .batch import run_batch
from .commands import (
    collect_tasks,
    generate_pictures,
    list_tasks,
    read_task_ids,
    resume_tasks,
    save_pictures,
    submit_tasks,
)
from .parser import build_parser, in_flag_terms
from .runtime import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    Interrupted,
    OutputClosed,
    Runtime,
    UsageError,
    abandoned_text,
    one_line,
    to_stderr,
    tolerate_unencodable_output,
)

__all__ = ["main", "run", "build_parser", "Runtime", "save_pictures", "generate_pictures", "submit_tasks",
           "collect_tasks", "UsageError", "Interrupted", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED"]


def _dispatch(args: argparse.Namespace, rt: Runtime) -> int:
    command = args.command
    if command == "generate" or command == "edit":
        generate_pictures(rt, prompt=args.prompt, out=args.out, api=args.api,
                          reference=getattr(args, "reference", None), model=args.model, negative=args.negative,
                          cfg=args.cfg, strength=getattr(args, "strength", None), width=args.width,
                          height=args.height, seed=args.seed, count=args.count,
                          response_format=args.response_format, output_format=args.output_format,
                          timeout=args.timeout, loras=args.lora, mask=getattr(args, "mask", None),
                          control=getattr(args, "control", None), mode=getattr(args, "mode", None))
    elif command == "submit":
        submit_tasks(rt, prompt=args.prompt, aspect_ratio=args.aspect_ratio, resolution=args.resolution,
                     prompt_extend=args.prompt_extend, seed=args.seed, count=args.count)
    elif command == "poll":
        collect_tasks(rt, read_task_ids(args.task_ids), provider=args.provider, out=args.out, timeout=args.timeout)
    elif command == "batch":
        return run_batch(rt, args)
    elif command == "tasks":
        if getattr(args, "tasks_action", None) == "resume":
            resume_tasks(rt, out=args.out, timeout=args.timeout)
        else:
            list_tasks(rt, limit=args.limit, as_json=args.json)
    elif command == "spend":
        from .spend import show_spend

        store: Any = rt.store  # the store of record answers ``spend``
        show_spend(store, since=args.since, as_json=args.json, now=rt.now())
    elif command == "demo":
        from .demo import run_demo

        run_demo(args.out)
    return EXIT_OK


def run(argv: Sequence[str] | None = None, *, sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] | None = None, runtime: Runtime | None = None) -> int:
    """Run the CLI in-process and return its exit code. ``sleep``/``clock`` are injected into every wait."""
    tolerate_unencodable_output()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else EXIT_USAGE
    if args.command == "emulator":
        try:
            from ..emulator.__main__ import main as emulator_main

            return int(emulator_main(extra) or 0)
        except SystemExit as exit_:  # its own argparse: --help, or a usage error
            return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
        except KeyboardInterrupt:
            return EXIT_OK
        except ModuleNotFoundError as err:
            if _missing_package(err):
                return EXIT_USAGE
            raise
    if extra:
        to_stderr(f"error: unrecognized arguments: {' '.join(extra)} (see `{PROG} {args.command or ''} --help`)")
        return EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    verbose = bool(getattr(args, "verbose", False))
    level = logger.level
    handler = _verbose_logging() if verbose else None
    rt = runtime
    try:
        if args.command == "store":  # copies between stores: no run, no store of record to open
            from .store_copy import run_store

            return run_store(args)
        rt = rt or Runtime(sleep=sleep, clock=clock)
        rt.retry_uncertain = bool(getattr(args, "retry_uncertain", False))
        if args.command in _GENTLE:
            with rt.gentle_interrupts():
                return _dispatch(args, rt)
        return _dispatch(args, rt)
    except (KeyboardInterrupt, CancelledError):
        return _interrupted(rt)
    except OutputClosed:
        _discard_stdout()
        return EXIT_OK  # the reader has what it wanted (`tasks | head -1`), as common command-line tools do
    except UsageError as err:  # already in the command line's words
        return _report(err, EXIT_USAGE, verbose)
    except ValidationError as err:
        return _report(err, EXIT_USAGE, verbose, in_flag_terms(one_line(err)))
    except ConfigError as err:
        return _report(err, EXIT_USAGE, verbose)
    except StoreError as err:  # nothing was sent: the store must be fixed first
        return _report(err, EXIT_USAGE, verbose)
    except ZImageError as err:
        return _report(err, EXIT_FAILED, verbose)
    except OSError as err:
        return _report(err, EXIT_FAILED, verbose)
    except Exception as err:  # a bug (or a missing package): still one line, unless --verbose
        if _missing_package(err):
            return EXIT_USAGE
        to_stderr(f"error: unexpected {type(err).__name__}: {one_line(err)} (run with --verbose for the traceback)")
        if verbose:
            traceback.print_exc(file=sys.stderr)
        return EXIT_FAILED
    finally:
        if rt is not None and runtime is None:
            rt.close()
        if handler is not None:
            logger.removeHandler(handler)
            logger.setLevel(level)


# The commands whose first Ctrl-C lets the paid requests in flight finish (``batch`` has its own two-step stop).
# ``poll`` and ``tasks resume`` send no paid request; their Ctrl-C stops at once and leaves the tasks running.
_GENTLE = ("generate", "edit", "submit")


def _missing_package(err: BaseException) -> bool:
    """Print the install command when ``err`` is a missing third-party package; False for anything else."""
    missing = missing_package_message(err) if isinstance(err, ModuleNotFoundError) else None
    if missing is not None:
        to_stderr(f"error: {missing}")
    return missing is not None


def _report(err: BaseException, code: int, verbose: bool, message: str | None = None) -> int:
    if verbose:
        traceback.print_exc(file=sys.stderr)
    to_stderr(f"error: {printable(message, 2000) if message else one_line(err)}")
    return code


def _interrupted(rt: Runtime | None) -> int:
    tasks = rt.in_flight() if rt is not None else {}
    cut = rt.paying_now() if rt is not None else []
    parts = []
    if tasks:
        names = ", ".join(f"{printable(task_id, 60)} ({provider})" for task_id, provider in tasks.items())
        parts.append(f"not collected yet, still running at the provider and kept in the ledger: {names}. Collect "
                     f"them with `{PROG} tasks resume` (a batch: run the same command again)")
    if rt is not None and rt.saved_after_stop:
        n = rt.saved_after_stop
        parts.append("the picture of the request let finish is saved (listed above); the same command again serves "
                     "it from the local receipt at no cost" if n == 1 else
                     f"the {n} pictures of the requests let finish are saved (listed above); the same command again "
                     "serves them from the local receipts at no cost")
    if cut and rt is not None and rt.abandoned:
        parts.append(abandoned_text(cut))
    elif cut:
        one = len(cut) == 1
        parts.append(f"{' and '.join(cut)} {'was' if one else 'were'} cut short while being sent: "
                     f"{'it' if one else 'each'} may have been processed and charged, with no id to collect; check "
                     "the provider's dashboard before sending again (a batch lists such rows as uncertain and skips "
                     "them; --retry-uncertain sends them anyway)")
    to_stderr("error: interrupted; " + ("; ".join(parts) if parts else "no task was in flight") + ".")
    return EXIT_INTERRUPTED


def _discard_stdout() -> None:
    """Point the process's stdout at the null device, so the final flush at exit does not fail on the closed pipe."""
    stdout = sys.stdout
    if stdout is not sys.__stdout__ or stdout is None:
        return  # an in-process caller's stream (tests): nothing is flushed at exit
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _verbose_logging() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    """The console entry point: ``python -m zimage_api ...``; returns the exit code."""
    return run(argv)
