"""Command line: ``python -m zimage_api.emulator [--port N] [--queue-seconds S] [--process-seconds S] [--latency S]
[--progress SHAPE] [--balance USD] [--verbose]``.

Serves the emulator on 127.0.0.1 until Ctrl-C; ``--verbose`` logs one line per request on stderr. Exit codes: 0
after Ctrl-C, 2 when it cannot start (a busy port, a bad option).
"""

from __future__ import annotations

import argparse
import errno
import logging
import math
import os
import sys
import threading
from collections.abc import Sequence

from .handler import request_log
from .qingbo_tasks import PROGRESS_STYLES
from .server import DEMO_KEY, Emulator

__all__ = ["main"]

_LOOPBACK = ("127.0.0.1", "localhost")


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error that points at ``--help``; exits 2 as argparse does."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m zimage_api.emulator",
        description="Serve a local emulator of the WaveSpeed and Qingbo image APIs on 127.0.0.1.",
    )
    parser.add_argument("--port", type=_port, default=8765, help="TCP port (0 picks a free one; default 8765)")
    parser.add_argument("--host", default="127.0.0.1", help="only 127.0.0.1 is served (the default)")
    parser.add_argument("--queue-seconds", type=_seconds, default=0.5, metavar="S",
                        help="seconds a task waits in the queue, 0 or more (default 0.5)")
    parser.add_argument("--process-seconds", type=_seconds, default=2.0, metavar="S",
                        help="seconds a task takes to process, 0 or more (default 2)")
    parser.add_argument("--latency", type=_seconds, default=0.0, metavar="S",
                        help="seconds before answering a synchronous request, 0 or more (default 0)")
    parser.add_argument("--balance", type=_usd, default=10.0, metavar="USD",
                        help="the WaveSpeed balance /api/v3/balance reports, 0 or more; each completed v3 "
                             "prediction is charged its catalog price (default 10)")
    parser.add_argument("--progress", choices=PROGRESS_STYLES, default="int",
                        help="how Qingbo's progress field reads: int (45), float (45.3), percent (\"45%%\"), stepped "
                             "(0, 50, 100), zero (0 until the end), empty (\"\" until the end) or absent")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log one line per request on stderr: method, path, status, milliseconds and the "
                             "injected fault, if any (never a key)")
    parser.add_argument("--serve-seconds", type=float, default=None, help=argparse.SUPPRESS)
    return parser


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port: a whole number from 0 to 65535 (0 picks a "
                                         "free one)")
    return port


def _amount(text: str, what: str) -> float:
    """A finite number, 0 or more, or the usage error naming ``what`` it should be."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}, 0 or more")
    return value


def _seconds(text: str) -> float:
    return _amount(text, "a number of seconds")


def _usd(text: str) -> float:
    return _amount(text, "an amount of USD")


def _key_note() -> str:
    wavespeed = bool(os.environ.get("WAVESPEED_API_KEY", "").strip())
    qingbo = bool(os.environ.get("QINGBO_API_KEY", "").strip() or os.environ.get("WAVE_API_KEY", "").strip())
    if wavespeed and qingbo:
        return "from environment"
    if wavespeed:
        return f"WaveSpeed from environment, Qingbo {DEMO_KEY}"
    if qingbo:
        return f"Qingbo from environment, WaveSpeed {DEMO_KEY}"
    return DEMO_KEY


def _log_requests() -> logging.Handler:
    """Send the request lines to stderr: ``12:00:01 POST /v1/tasks 200 3 ms``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    request_log.addHandler(handler)
    request_log.setLevel(logging.INFO)
    request_log.propagate = False  # each line once, whatever the caller set up for the zimage_api logger
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until Ctrl-C; returns the process exit status."""
    args = _parser().parse_args(argv)
    if args.host not in _LOOPBACK:
        print(f"error: the emulator only serves on 127.0.0.1, not {args.host}", file=sys.stderr)
        return 2
    try:
        emulator = Emulator(args.port, queue_seconds=args.queue_seconds, process_seconds=args.process_seconds,
                            sync_latency=args.latency, progress_style=args.progress,
                            balance=args.balance).start()
    except ValueError as err:
        print(f"error: cannot start the emulator: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            print(f"error: the port {args.port} is already in use on 127.0.0.1 (another emulator, or another "
                  f"server); choose another with --port, or --port 0 for a free one.", file=sys.stderr)
        else:
            print(f"error: cannot listen on 127.0.0.1:{args.port} ({err.strerror or err}); choose another port "
                  f"with --port, or --port 0 for a free one.", file=sys.stderr)
        return 2
    handler = _log_requests() if args.verbose else None
    print(f"Z-Image emulator on {emulator.url} (key: {_key_note()})", flush=True)
    done = threading.Event()
    try:
        # The wait is bounded by --serve-seconds, or ends with Ctrl-C.
        done.wait(args.serve_seconds)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
        if handler is not None:
            request_log.removeHandler(handler)
            request_log.setLevel(logging.NOTSET)
            request_log.propagate = True
    return 0


if __name__ == "__main__":
    sys.exit(main())
