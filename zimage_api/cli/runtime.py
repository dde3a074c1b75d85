"""What one command-line run shares: the injected sleep and clock, the clients, the tasks in flight, exit codes.

Every other CLI module imports this one and nothing imports them back, so the CLI has no import cycle.
"""

from __future__ import annotations

import errno
import itertools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, TextIO

from ..account import Funds
from ..cancel import CancelToken
from ..clients import Clients
from ..errors import CancelledError, ValidationError, ZImageError
from ..logs import mask_url, printable
from ..store.sqlite import Store

if TYPE_CHECKING:
    from ..engine import Engine

__all__ = ["Runtime", "UsageError", "Interrupted", "OutputClosed", "SavedElsewhere", "NotCollected", "PROG", "EXIT_OK",
           "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED", "one_line", "to_stdout", "to_stderr",
           "tolerate_unencodable_output"]

# The command as the user typed it: the console script `zimage` once installed, else the module.
_SCRIPT = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
PROG = "zimage" if _SCRIPT in ("zimage", "zimage.exe") else "python -m zimage_api"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(ValidationError):
    """Bad command-line usage found by the CLI itself (a missing file, options that do not fit together)."""


Interrupted = CancelledError  # the run was stopped (Ctrl-C): the library's one cancellation error


class OutputClosed(Exception):
    """stdout was closed by its reader (``tasks | head -1``): the run stops quietly, never mid-request."""


class SavedElsewhere(ZImageError):
    """Paid pictures could not be written to ``--out``; they were saved in the ledger's folder instead."""


class NotCollected(ZImageError):
    """``tasks resume`` left tasks uncollected: another server than the configured one issued them (exit 1)."""


def one_line(err: BaseException) -> str:
    """The error's message on one line, safe for a terminal: no escape sequence or control character (a provider's
    text may hold them), no credentials of a URL, at most 2,000 characters; never empty (the class name stands in
    for a blank message)."""
    return " ".join(printable(mask_url(str(err)), 2000).split()) or type(err).__name__


def tolerate_unencodable_output() -> None:
    """Let stdout/stderr escape what their encoding cannot show (cp1252 and a Chinese path) instead of raising."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # a detached or closed stream: nothing to adjust
                pass


def _write(stream: TextIO, line: str) -> None:
    try:
        print(line, file=stream, flush=True)
    except UnicodeEncodeError:  # a stream that could not be reconfigured
        encoding = getattr(stream, "encoding", None) or "ascii"
        print(line.encode(encoding, "backslashreplace").decode(encoding, "replace"), file=stream, flush=True)


def _pipe_closed(err: OSError) -> bool:
    # Windows reports a pipe closed by its reader as EINVAL rather than EPIPE.
    return isinstance(err, BrokenPipeError) or err.errno == errno.EPIPE or (
        sys.platform == "win32" and err.errno == errno.EINVAL)


def to_stdout(line: str) -> None:
    """Print a result line (a picture's path, a task id) at once, so a pipe sees it while the run goes on.

    Raises :class:`OutputClosed` when the reader closed the pipe.
    """
    try:
        _write(sys.stdout, line)
    except OSError as err:
        if _pipe_closed(err):
            raise OutputClosed() from err
        raise


def to_stderr(line: str) -> None:
    """Print a message or an error line on stderr at once (a closed stderr is ignored: there is nowhere else)."""
    try:
        _write(sys.stderr, line)
    except OSError:
        pass


IMAGE_REQUEST = "the image request"  # the engine's name of a /v1/images request: its answer is the picture itself


def _requests(what: list[str]) -> tuple[str, bool]:
    """ "the image request", "the 2 image requests", "the image request and the prediction request"; and whether
    it is one."""
    if len(what) > 1 and len(set(what)) == 1:
        return what[0].replace("the ", f"the {len(what)} ", 1) + "s", False
    return " and ".join(what), len(what) == 1


def stopping_line(paying: list[str]) -> str | None:
    """What the first Ctrl-C says while paid requests are being sent (None when none is)."""
    if not paying:
        return None
    names, one = _requests(paying)
    it, its, verb = ("it", "its", "is") if one else ("them", "their", "are")
    if all(what == IMAGE_REQUEST for what in paying):
        return (f"Stopping: {names} already sent {verb} finishing so that {its} picture{'' if one else 's'} "
                f"{'is' if one else 'are'} kept ({'it is' if one else 'they are'} paid). Press Ctrl-C again to "
                f"abandon {it}; {its} cost is then lost.")
    return (f"Stopping: {names} already sent {verb} finishing so that {its} id{'' if one else 's'} "
            f"{'reaches' if one else 'reach'} the ledger ({'it is' if one else 'they are'} paid). Press Ctrl-C again "
            f"to abandon {it}; {it} may then be charged with no id to collect.")


def abandoned_text(paying: list[str]) -> str:
    """What the exit line says of the paid requests a second Ctrl-C abandoned."""
    names, one = _requests(paying)
    if all(what == IMAGE_REQUEST for what in paying):
        lost = "its picture is" if one else "their pictures are"
        return (f"{names} {'was' if one else 'were'} abandoned before {'its' if one else 'their'} answer came: "
                f"{'it is' if one else 'they are'} probably charged and {lost} lost (the same command does not send "
                f"{'it' if one else 'them'} again by itself: check the dashboard, then --retry-uncertain pays again)")
    return (f"{names} {'was' if one else 'were'} abandoned before {'its' if one else 'their'} answer came: "
            f"{'it' if one else 'each'} may have been charged, with no id to collect; check the provider's dashboard "
            "before sending again")


def resume_hint(task_id: str, provider: str) -> str:
    """How a command-line user collects a task later."""
    where = " --provider wavespeed" if provider != "qingbo" else ""
    return f"run `{PROG} poll{where} {task_id}` to collect it"


class Runtime:
    """What one CLI run shares: injected sleep/clock, the ledger, client factories and the tasks in flight.

    ``sleep``/``clock`` default to the real ones; tests pass a fake clock (unix-like seconds) and its ``sleep``.
    ``api_keys``/``base_urls`` (by config section, ``"wavespeed"``/``"qingbo"``) override the user's configuration;
    the demo uses them to point at its embedded emulator without touching the environment. ``session`` (a
    ``requests.Session``) is shared by every client when given.
    """

    def __init__(self, *, sleep: Callable[[float], None] | None = None, clock: Callable[[], float] | None = None,
                 ledger: Store | None = None, api_keys: dict[str, str] | None = None,
                 base_urls: dict[str, str] | None = None, session: Any = None) -> None:
        self._injected_sleep = sleep
        self.session = session
        self.clock = clock or time.monotonic
        self.now = clock or time.time
        self.retry_uncertain = False  # ``--retry-uncertain``: pay again for a request that may have been charged
        self.funds = Funds.new()  # the balance readings and quoted prices of this run
        self.store = ledger or Store.default()  # opened once here, handed to the engine and the clients
        self.ledger = self.store
        self.api_keys = dict(api_keys or {})
        self.base_urls = dict(base_urls or {})
        self.token = CancelToken()
        self.stop = self.token.event  # set at Ctrl-C
        self._lock = threading.Lock()
        self.clients = Clients(store=self.store, sleep=self.sleep, now=self.now, session=session,
                               api_keys=api_keys, base_urls=base_urls)
        self._in_flight: dict[str, str] = {}
        self._paying: dict[int, str] = {}
        self._paying_serial = itertools.count()
        self.saved_after_stop = 0  # pictures written after the first Ctrl-C (their requests were let finish)
        self.abandoned = False  # a second Ctrl-C gave up the paid requests still in flight
        self.abandon = threading.Event()  # set by that second Ctrl-C: the engine stops waiting for them

    def sleep(self, seconds: float) -> None:
        """Sleep (the waits look at :attr:`token` between their slices; a real sleep ends early at Ctrl-C)."""
        if self._injected_sleep is not None:
            self._injected_sleep(seconds)
        else:
            self.stop.wait(max(seconds, 0.0))

    def wait_options(self, timeout: float | None) -> dict[str, Any]:
        """The keyword arguments of a client's waiting loop: this run's sleep and clock, and the deadline if set."""
        options: dict[str, Any] = {"sleep": self.sleep, "clock": self.clock}
        if timeout is not None:
            options["timeout"] = timeout
        return options

    def images(self, read_timeout: float | None = None) -> Any:
        """The OpenAI-images style client (one per run and read timeout, shared by threads)."""
        return self.clients.images(read_timeout)

    def v3(self) -> Any:
        """The WaveSpeed v3 client (one per run), recording predictions in the run's ledger."""
        return self.clients.v3()

    def qingbo(self) -> Any:
        """The Qingbo client (one per run), recording tasks in the run's ledger."""
        return self.clients.qingbo()

    def engine(self, on_progress: Callable[[], None] | None = None, *,
               paying: Callable[[str], AbstractContextManager[object]] | None = None,
               on_task_id: Callable[[str, str], None] | None = None) -> Engine:
        """The library's engine for one command: this run's clients, sleep, clock, Ctrl-C and paid-request marks
        (``paying`` and ``on_task_id`` replace this run's own)."""
        from ..engine import Engine

        # Ctrl-C starts no new unit, and every wait ends, but a paid request already in flight finishes, so that its
        # id reaches the ledger: the engine does not abandon its requests in flight.
        return Engine(self.clients, token=self.token, abandon=self.abandon, clock=self.clock, sleep=self.sleep,
                      paying=paying or self.paying, on_task_id=on_task_id or self.track, on_collected=self.untrack,
                      on_tick=on_progress, on_retry=self._show_retry, resume_hint=resume_hint,
                      retry_uncertain=self.retry_uncertain, funds=self.funds)

    @staticmethod
    def _show_retry(_index: int, notice: Any) -> None:
        """A retry wait, on stderr at once: "Qingbo busy (HTTP 503), retrying in 4 s (attempt 2 of 6)"."""
        if notice is not None:
            to_stderr(f"{PROG}: {printable(mask_url(str(notice)), 500)}")

    def close(self) -> None:
        """Close every client's connections."""
        self.clients.close()

    @contextmanager
    def tracking(self, task_id: str, provider: str) -> Iterator[None]:
        """Remember ``task_id`` as in flight until the block ends normally or with a job error."""
        self.track(task_id, provider)
        try:
            yield
        except (KeyboardInterrupt, Interrupted):
            raise  # still in flight: named in the Ctrl-C line
        except BaseException:
            self.untrack(task_id)
            raise
        self.untrack(task_id)

    def track(self, task_id: str, provider: str) -> None:
        """Remember ``task_id`` as in flight (named in the Ctrl-C message)."""
        with self._lock:
            self._in_flight[task_id] = provider

    def untrack(self, task_id: str) -> None:
        """Forget ``task_id``: it finished or failed."""
        with self._lock:
            self._in_flight.pop(task_id, None)

    def in_flight(self) -> dict[str, str]:
        """The tasks in flight now, task id to provider."""
        with self._lock:
            return dict(self._in_flight)

    @contextmanager
    def paying(self, what: str) -> Iterator[None]:
        """Mark a paid request (``what``: "the prediction request", "the submit of row 3") as being sent.

        Cut by Ctrl-C, it stays marked, so the exit line can say that it may have been charged without an id.
        """
        token = next(self._paying_serial)
        with self._lock:
            self._paying[token] = what
        cut = False
        try:
            yield
        except KeyboardInterrupt:
            cut = True
            raise
        finally:
            if not cut:
                with self._lock:
                    self._paying.pop(token, None)

    @contextmanager
    def gentle_interrupts(self) -> Iterator[None]:
        """Within the block, the first Ctrl-C only stops the run: no new paid request starts, every wait ends, and a
        paid request already sent finishes (its picture or id is kept); it says so on stderr. A second Ctrl-C
        abandons what is still in flight (the engine stops waiting for it) and the run ends as interrupted; a third
        raises :class:`KeyboardInterrupt` wherever the run is.

        Only in the main thread, and only when Ctrl-C has Python's default handler (an embedding program's own
        handler is left alone).
        """
        if (threading.current_thread() is not threading.main_thread()
                or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
            yield
            return

        def first_stops(_signum: int, _frame: Any) -> None:
            if self.abandon.is_set():  # a third press: out at once, whatever the run is doing
                raise KeyboardInterrupt
            if self.stop.is_set():
                # The second press: the engine stops waiting for the requests in flight (within its grace) and
                # the run ends as interrupted. Not raised here: a KeyboardInterrupt inside a lock's wait can leave
                # the lock released twice.
                self.abandoned = True
                self.abandon.set()
                return
            self.token.cancel()
            line = stopping_line(self.paying_now())
            if line:
                try:
                    to_stderr(line)
                except RuntimeError:  # the signal came while stderr was being written: the exit line still tells
                    pass

        signal.signal(signal.SIGINT, first_stops)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def paying_now(self) -> list[str]:
        """The paid requests being sent now (or cut short by Ctrl-C), in the order they started."""
        with self._lock:
            return [self._paying[token] for token in sorted(self._paying)]
