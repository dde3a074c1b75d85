"""Command line: ``python -m zimage_api.emulator [--port N] [--queue-seconds S] [--process-seconds S] [--latency S]``.

Serves the emulator on 127.0.0.1 until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Sequence

from .qingbo_tasks import PROGRESS_STYLES
from .server import DEMO_KEY, Emulator

__all__ = ["main"]

_LOOPBACK = ("127.0.0.1", "localhost")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zimage_api.emulator",
        description="Serve a local emulator of the WaveSpeed and Qingbo image APIs on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=8765, help="TCP port (0 picks a free one; default 8765)")
    parser.add_argument("--host", default="127.0.0.1", help="only 127.0.0.1 is served (the default)")
    parser.add_argument("--queue-seconds", type=float, default=0.5, help="seconds a task waits in the queue")
    parser.add_argument("--process-seconds", type=float, default=2.0, help="seconds a task takes to process")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before answering a synchronous request")
    parser.add_argument("--progress", choices=PROGRESS_STYLES, default="int",
                        help="how Qingbo's progress field reads: int (45), float (45.3), percent (\"45%%\"), stepped "
                             "(0, 50, 100), zero (0 until the end), empty (\"\" until the end) or absent")
    parser.add_argument("--serve-seconds", type=float, default=None, help=argparse.SUPPRESS)
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until Ctrl-C; returns the process exit status."""
    args = _parser().parse_args(argv)
    if args.host not in _LOOPBACK:
        print(f"error: the emulator only serves on 127.0.0.1, not {args.host}", file=sys.stderr)
        return 2
    try:
        emulator = Emulator(args.port, queue_seconds=args.queue_seconds, process_seconds=args.process_seconds,
                            sync_latency=args.latency, progress_style=args.progress).start()
    except (OSError, ValueError) as err:
        print(f"error: cannot start the emulator: {err}", file=sys.stderr)
        return 1
    print(f"Z-Image emulator on {emulator.url} (key: {_key_note()})", flush=True)
    done = threading.Event()
    try:
        # The wait is bounded by --serve-seconds, or ends with Ctrl-C.
        done.wait(args.serve_seconds)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
