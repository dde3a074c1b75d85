"""The HTTP/1.1 connection handler: reads whole requests, writes whole answers, and plays connection faults.

Every answer carries ``Content-Length`` so clients can keep the connection alive; the body of a request is always
read in full before answering, so the next request on the connection starts at the right byte.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from ..logs import redact
from .faults import STREAM_SECONDS, trickle
from .wire import Response, error_response, error_shape_for

if TYPE_CHECKING:
    from .server import Emulator

__all__ = ["EmulatorRequestHandler", "MAX_BODY_BYTES"]

logger = logging.getLogger("zimage_api.emulator")
request_log = logging.getLogger("zimage_api.emulator.requests")
"""One INFO line per request: method, path, status, milliseconds and the injected fault (``--verbose`` shows it)."""

MAX_BODY_BYTES = 64 * 1024 * 1024
_MAX_CHUNKS = 100_000


class EmulatorRequestHandler(BaseHTTPRequestHandler):
    """Serves one connection for the emulator found at ``self.server.emulator``."""

    protocol_version = "HTTP/1.1"
    server_version = "ZImageEmulator/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 60.0  # an idle keep-alive connection is dropped after this many seconds

    server: Any

    @property
    def emulator(self) -> Emulator:
        """The emulator this connection belongs to."""
        return self.server.emulator

    def handle(self) -> None:
        """Serve requests until the connection closes, unless the emulator is stopping."""
        if not self.emulator._register_connection(self.connection):
            self.close_connection = True
            return
        try:
            super().handle()
        finally:
            self.emulator._unregister_connection(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it so
        logger.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:  # noqa: N802 - names required by BaseHTTPRequestHandler
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch()

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch()

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch()

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch()

    def _dispatch(self) -> None:
        emulator = self.emulator
        target = urlsplit(self.path)
        path = target.path or "/"
        body = self._read_body(path)
        if body is None:
            return
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        query = dict(parse_qsl(target.query, keep_blank_values=True))
        started = time.perf_counter()
        token, record, fault = emulator._arrive(self.command, path, query, headers, body)
        kind = fault.kind if fault is not None else None
        if kind == "reset_before":
            emulator._finish(token, 0)
            self._log(path, "reset", started, kind)
            self._reset_connection()
            return
        if fault is not None and kind == "delay":
            emulator._sleep(float(fault.params["seconds"]))
        response = emulator._respond(record, fault)
        if kind == "trickle" and fault is not None:
            response = trickle(response, float(fault.params["bytes_per_second"]), emulator._sleep)
        if kind == "reset_after":
            emulator._finish(token, 0)
            self._log(path, "reset", started, kind)
            self._reset_connection()
            return
        emulator._finish(token, response.status)
        self._log(path, response.status, started, kind)  # before the answer: the line is there once it arrives
        self._write(response, truncated=kind == "truncated")

    def _log(self, path: str, status: int | str, started: float, fault: str | None) -> None:
        if request_log.isEnabledFor(logging.INFO):
            # The path only: keys travel in headers, which are never logged.
            request_log.info("%s %s %s %.0f ms%s", self.command, redact(path), status,
                             (time.perf_counter() - started) * 1000.0, f" (fault: {fault})" if fault else "")

    def _read_body(self, path: str) -> bytes | None:
        """The whole request body, or ``None`` after answering an unreadable one."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(path)
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return b""
        try:
            length = int(length_text)
            if length < 0:
                raise ValueError(length_text)
        except ValueError:
            self._refuse(path, 400, "The Content-Length header is not a valid length.", "invalid_request")
            return None
        if length > MAX_BODY_BYTES:
            self._refuse(path, 413, f"The body is larger than {MAX_BODY_BYTES} bytes.", "payload_too_large")
            return None
        data = self.rfile.read(length)
        if len(data) < length:  # the client went away mid-body
            self.close_connection = True
            return None
        return data

    def _read_chunked(self, path: str) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        for _ in range(_MAX_CHUNKS):
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self._refuse(path, 400, "The chunked body is malformed.", "invalid_request")
                return None
            if size == 0:
                for _ in range(100):  # trailers, up to the blank line
                    if self.rfile.readline(8192) in (b"\r\n", b"\n", b""):
                        break
                return b"".join(parts)
            total += size
            if total > MAX_BODY_BYTES:
                self._refuse(path, 413, f"The body is larger than {MAX_BODY_BYTES} bytes.", "payload_too_large")
                return None
            chunk = self.rfile.read(size)
            self.rfile.readline(16)
            if len(chunk) < size:
                self.close_connection = True
                return None
            parts.append(chunk)
        self._refuse(path, 413, "The chunked body has too many chunks.", "payload_too_large")
        return None

    def _refuse(self, path: str, status: int, message: str, code: str) -> None:
        """Answer an unreadable request and close, since the rest of the stream cannot be trusted."""
        self.close_connection = True
        self._write(error_response(error_shape_for(path), status, message, code))

    def _write(self, response: Response, *, truncated: bool = False) -> None:
        body = response.body
        try:
            phrase = HTTPStatus(response.status).phrase
        except ValueError:
            phrase = "Unknown"
        lines = [
            f"HTTP/1.1 {response.status} {phrase}",
            f"Server: {self.server_version}",
            f"Date: {self.date_time_string()}",
            f"Content-Type: {response.content_type}",
        ]
        if response.stream is None:
            lines.append(f"Content-Length: {len(body)}")
        elif response.length is not None:
            lines.append(f"Content-Length: {response.length}")
        else:
            self.close_connection = True  # the answer ends when the connection does
        for name, value in response.headers.items():
            if name.lower() in ("content-length", "content-type", "date", "server", "transfer-encoding"):
                continue
            if name.lower() == "connection" and value.lower() == "close":
                self.close_connection = True
                continue
            lines.append(f"{name}: {value}")
        if truncated:
            body = body[: len(body) // 2]
            self.close_connection = True
        if self.close_connection:
            lines.append("Connection: close")
        if self.command == "HEAD" or response.status in (204, 304):
            body = b""
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        if response.stream is not None and self.command != "HEAD":
            self._write_stream(head, response.stream, response.length)
            return
        try:
            self.wfile.write(head + body)
        except OSError:  # the client is gone; nothing more to say on this connection
            self.close_connection = True

    def _write_stream(self, head: bytes, stream: Any, length: int | None) -> None:
        """Write a streamed answer until it ends, the client goes away, the emulator stops, or
        :data:`STREAM_SECONDS` pass; an answer cut short closes the connection."""
        ends = time.monotonic() + STREAM_SECONDS
        sent = 0
        try:
            self.wfile.write(head)
            for chunk in stream:
                if time.monotonic() > ends or self.emulator._stopping.is_set():
                    break
                self.wfile.write(chunk)
                self.wfile.flush()
                sent += len(chunk)
        except OSError:  # the client is gone
            pass
        if length is None or sent < length:
            self.close_connection = True

    def _reset_connection(self) -> None:
        """Abort the connection with a TCP RST instead of an orderly close."""
        self.close_connection = True
        sock = self.connection
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            # Close the descriptor now: the buffered reader still references the socket object, which would
            # otherwise delay the close (and a later shutdown() would send a FIN instead of the RST).
            socket.socket(fileno=sock.detach()).close()
