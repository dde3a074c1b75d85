"""The emulator: a local HTTP server that speaks the WaveSpeed (OpenAI-style and v3) and Qingbo image APIs.

It serves on 127.0.0.1 only, over HTTP/1.1 with keep-alive.  All state (tasks, files, the request log) lives behind
one lock and survives ``stop()``/``start()``.  Task lifecycles, timestamps and expiry follow the injectable
``clock``, so tests move time forward instead of sleeping.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import logging
import math
import os
import selectors
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable
from http.server import ThreadingHTTPServer
from typing import Any

from .backend import Backend
from .faults import Fault, FaultQueue
from .files import FileStore
from .handler import EmulatorRequestHandler
from .qingbo_tasks import PROGRESS_STYLES
from .routes import respond
from .tasks import CANCELLED, FAILED, EmulatedTask, assign_slots, peak_overlap
from .wire import RecordedRequest, Response, parse_body

__all__ = ["Emulator", "DEMO_KEY"]

logger = logging.getLogger("zimage_api.emulator")

DEMO_KEY = "zimage-emulator-demo"
"""The key the emulator accepts when no key is configured.  It is public and grants nothing anywhere else."""

_HOST = "127.0.0.1"
_STOP_JOIN_SECONDS = 1.0


def _duration_range(name: str, value: float | tuple[float, float]) -> tuple[float, float]:
    low, high = (value, value) if isinstance(value, (int, float)) else tuple(value)
    if not (0 <= float(low) <= float(high)):
        raise ValueError(f"{name} must be >= 0 or a (lo, hi) pair with 0 <= lo <= hi, got {value!r}")
    return float(low), float(high)


def _keys(given: Iterable[str] | None, env_names: tuple[str, ...]) -> frozenset[str]:
    if given is not None:
        keys = frozenset(k.strip() for k in given if isinstance(k, str) and k.strip())
        if not keys:
            raise ValueError("at least one non-empty API key is needed")
        return keys
    for name in env_names:
        value = os.environ.get(name, "").strip()
        if value:
            return frozenset({value})
    return frozenset({DEMO_KEY})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, port: int, emulator: Emulator) -> None:
        self.emulator = emulator
        super().__init__((_HOST, port), EmulatorRequestHandler)
        self.timeout = 0  # handle_request() only runs once the selector saw a pending connection

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name, which can be slow; the name is known.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = _HOST, self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)


ACCOUNT_PATHS = frozenset({"/api/v3/balance", "/api/v3/account/balance", "/api/v3/model/pricing",
                           "/api/v3/predictions"})


class Emulator(Backend):
    """A local stand-in for the paid image services; see the package docstring for the routes.

    Args:
        port: TCP port on 127.0.0.1; 0 picks a free one, which is then kept across ``stop()``/``start()``.
        clock: unix seconds; drives task lifecycles, timestamps, result-URL expiry and ``reset_at``.
        wavespeed_keys: keys accepted on WaveSpeed routes; default ``$WAVESPEED_API_KEY``, else ``DEMO_KEY``.
        qingbo_keys: keys accepted on Qingbo routes; default ``$QINGBO_API_KEY`` or ``$WAVE_API_KEY``, else
            ``DEMO_KEY``.
        queue_seconds: time a task waits before processing; a float or a ``(lo, hi)`` range drawn per task
            (deterministically).
        process_seconds: processing time of a task; same form.
        sync_latency: real seconds waited before answering a synchronous generation (images routes, v3 sync
            mode, Qingbo ``Prefer: wait``).
        max_concurrent: tasks processing at once (later ones stay queued) and synchronous requests in flight
            (later ones get 429 with ``Retry-After: 1``); ``None`` for no limit.
        progress_style: how Qingbo's ``progress`` reads: ``"int"`` (45), ``"float"`` (45.3), ``"percent"``
            (``"45%"``, ``""`` while queued), ``"stepped"`` (0, 50, 100), ``"zero"`` (0 until the end), ``"empty"``
            (``""`` until the end) or ``"absent"`` (no field).
        created_at_unit: Qingbo ``created_at``/``completed_at`` in ``"ms"`` or ``"s"``.
        url_ttl: seconds result files stay downloadable.
        picture_scale: factor on v3 and Qingbo picture sizes (the short side stays at least 64 pixels).
        balance: the WaveSpeed account balance in USD that ``/api/v3/balance`` reports; each completed v3
            prediction is charged its model's catalog price (see :attr:`balance`, which tests may also set).
    """

    def __init__(
        self,
        port: int = 0,
        *,
        clock: Callable[[], float] | None = None,
        wavespeed_keys: Iterable[str] | None = None,
        qingbo_keys: Iterable[str] | None = None,
        queue_seconds: float | tuple[float, float] = 0.5,
        process_seconds: float | tuple[float, float] = 2.0,
        sync_latency: float = 0.0,
        max_concurrent: int | None = None,
        progress_style: str = "int",
        created_at_unit: str = "ms",
        url_ttl: float = 86400.0,
        picture_scale: float = 1.0,
        balance: float = 10.0,
    ) -> None:
        if progress_style not in PROGRESS_STYLES:
            raise ValueError(f"progress_style must be one of {', '.join(PROGRESS_STYLES)}; got {progress_style!r}")
        if created_at_unit not in ("ms", "s"):
            raise ValueError(f"created_at_unit must be 'ms' or 's', got {created_at_unit!r}")
        if max_concurrent is not None and (not isinstance(max_concurrent, int) or max_concurrent < 1):
            raise ValueError(f"max_concurrent must be None or a positive int, got {max_concurrent!r}")
        if sync_latency < 0 or url_ttl <= 0 or picture_scale <= 0:
            raise ValueError("sync_latency must be >= 0, url_ttl and picture_scale > 0")
        if not math.isfinite(balance):
            raise ValueError(f"balance must be a finite number of USD, got {balance!r}")
        self._port = int(port)
        self._clock: Callable[[], float] = clock or time.time
        self._wavespeed_keys = _keys(wavespeed_keys, ("WAVESPEED_API_KEY",))
        self._qingbo_keys = _keys(qingbo_keys, ("QINGBO_API_KEY", "WAVE_API_KEY"))
        self.queue_seconds = _duration_range("queue_seconds", queue_seconds)
        self.process_seconds = _duration_range("process_seconds", process_seconds)
        self.sync_latency = float(sync_latency)
        self.max_concurrent = max_concurrent
        self.progress_style = progress_style
        self.created_at_unit = created_at_unit
        self.url_ttl = float(url_ttl)
        self.picture_scale = float(picture_scale)

        self._lock = threading.RLock()
        self._tasks: dict[str, EmulatedTask] = {}
        self._files = FileStore()
        self._faults = FaultQueue()
        self._log: list[RecordedRequest] = []
        self._log_epoch = 0
        self._idempotency: dict[tuple[str, str], str] = {}
        self._served: list[bytes] = []
        self._serial = 0
        self._in_flight = 0
        self._peak_sync = 0
        self._balance = float(balance)
        self._charged: set[str] = set()

        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._connections: dict[socket.socket, threading.Thread] = {}

    # ----------------------------------------------------------------- lifecycle
    @property
    def port(self) -> int:
        """The TCP port (0 until the first ``start()`` when a free port was asked for)."""
        return self._port

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:8765`` (no trailing slash)."""
        return f"http://{_HOST}:{self._port}"

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._server is not None

    def start(self) -> Emulator:
        """Serve in a daemon thread; the port is kept across ``stop()``/``start()``.  Returns ``self``."""
        with self._lock:
            if self._server is not None:
                return self
            server = _Server(self._port, self)
            self._port = server.server_address[1]
            self._stopping.clear()
            self._wake = socket.socketpair()
            self._server = server
            self._thread = threading.Thread(
                target=self._serve, args=(server, self._wake[0]), name=f"zimage-emulator:{self._port}", daemon=True
            )
            self._thread.start()
        logger.debug("emulator serving on %s", self.url)
        return self

    def stop(self) -> None:
        """Close the listening socket and every connection; tasks, files and the log are kept."""
        with self._lock:
            server, thread, wake = self._server, self._thread, self._wake
            self._server = self._thread = self._wake = None
            if server is None or thread is None or wake is None:
                return
            self._stopping.set()
        with contextlib.suppress(OSError):
            wake[1].send(b"\0")
        thread.join(timeout=_STOP_JOIN_SECONDS)
        server.server_close()
        with self._lock:
            connections = list(self._connections.items())
        for sock, _ in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = _monotonic() + _STOP_JOIN_SECONDS
        for _, handler_thread in connections:
            if handler_thread is not threading.current_thread():
                handler_thread.join(timeout=max(0.0, deadline - _monotonic()))
        for end in wake:
            end.close()
        logger.debug("emulator on %s stopped", self.url)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _serve(self, server: _Server, wake: socket.socket) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(server.socket, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while not self._stopping.is_set():
                events = selector.select(timeout=1.0)
                if any(key.fileobj is wake for key, _ in events):
                    return
                if events:
                    server.handle_request()

    # ----------------------------------------------------------------- public state
    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in arrival order (a snapshot)."""
        with self._lock:
            return list(self._log)

    @property
    def service_requests(self) -> list[RecordedRequest]:
        """The requests that asked for pictures (or their tasks, uploads and files): every request but those of
        WaveSpeed's account routes (balance, prices, history), which a client asks around them."""
        return [r for r in self.requests if r.path not in ACCOUNT_PATHS]

    def requests_to(self, pattern: str) -> list[RecordedRequest]:
        """Recorded requests whose ``"METHOD /path"`` matches the fnmatch ``pattern``, e.g. ``"GET /v1/tasks/*"``."""
        return [r for r in self.requests if fnmatch.fnmatchcase(f"{r.method} {r.path}", pattern)]

    def inject(self, pattern: str, fault: str, *, times: int = 1, **params: Any) -> None:
        """Queue ``fault`` for the next ``times`` requests matching ``pattern`` (see ``faults`` for the kinds)."""
        with self._lock:
            self._faults.add(pattern, fault, times, params)

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    @property
    def tasks(self) -> dict[str, EmulatedTask]:
        """Qingbo tasks and v3 predictions by id (a snapshot of the mapping; the tasks are live)."""
        with self._lock:
            return dict(self._tasks)

    def task_count(self, provider: str | None = None) -> int:
        """How many tasks were created, for ``"qingbo"``, ``"wavespeed"`` or both."""
        with self._lock:
            return sum(1 for t in self._tasks.values() if provider is None or t.provider == provider)

    @property
    def served_images(self) -> list[bytes]:
        """Every encoded picture produced, in order."""
        with self._lock:
            return list(self._served)

    @property
    def peak_concurrency(self) -> int:
        """The most tasks processing at once, or sync image requests in flight at once, whichever is larger."""
        with self._lock:
            assign_slots(self._tasks.values(), self._now(), self.max_concurrent)
            return max(self._peak_sync, peak_overlap(self._tasks.values()))

    @property
    def quota_charged(self) -> int:
        """Qingbo quota billed so far: pre-consumed for live tasks, settled for completed ones, none if refunded."""
        with self._lock:
            qingbo = [t for t in self._tasks.values() if t.provider == "qingbo"]
        return sum(t.quota for t in qingbo if self._task_phase(t)[0] not in (FAILED, CANCELLED))

    def reset(self) -> None:
        """Forget tasks, files, the request log and faults (the balance stays as it is)."""
        with self._lock:
            self._settle()
            self._tasks.clear()
            self._files.clear()
            self._faults.clear()
            self._log.clear()
            self._log_epoch += 1
            self._idempotency.clear()
            self._served.clear()
            self._serial = 0
            self._peak_sync = 0
            self._charged.clear()

    # ----------------------------------------------------------------- request handling (called by the handler)
    def _register_connection(self, sock: socket.socket) -> bool:
        with self._lock:
            if self._stopping.is_set():
                return False
            self._connections[sock] = threading.current_thread()
            return True

    def _unregister_connection(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.pop(sock, None)

    def _arrive(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> tuple[tuple[int, int], RecordedRequest, Fault | None]:
        data, form, files = parse_body(headers.get("content-type", ""), body)
        with self._lock:
            fault = self._faults.take(method, path)
            record = RecordedRequest(method, path, query, headers, body, data, form, files, 0,
                                     fault.kind if fault else None, self._now())
            self._log.append(record)
            return (self._log_epoch, len(self._log) - 1), record, fault

    def _finish(self, token: tuple[int, int], status: int) -> None:
        epoch, index = token
        with self._lock:
            if epoch == self._log_epoch and index < len(self._log):
                record = dataclasses.replace(self._log[index], status=status)
                self._log[index] = record
                logger.debug("%s %s -> %s", record.method, record.path, status or "connection reset")

    def _respond(self, request: RecordedRequest, fault: Fault | None) -> Response:
        return respond(self, request, fault)


def _monotonic() -> float:
    return time.monotonic()
