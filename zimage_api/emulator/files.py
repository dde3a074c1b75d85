"""Result and upload files served under ``/files/<token>.<ext>`` until they expire."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .wire import RecordedRequest, Response, RouteError

if TYPE_CHECKING:
    from .faults import Fault
    from .server import Emulator

__all__ = ["StoredFile", "FileStore", "serve_file", "content_type_for", "FILE_ROUTE"]

FILE_ROUTE = r"/files/([A-Za-z0-9_-]+)\.([A-Za-z0-9]+)"
_CONTENT_TYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "jpg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "bmp": "image/bmp",
}


def content_type_for(ext: str) -> str:
    """The media type of a file extension (``application/octet-stream`` when unknown)."""
    return _CONTENT_TYPES.get(ext.lower(), "application/octet-stream")


@dataclass(frozen=True)
class StoredFile:
    """A downloadable file; ``expires_at`` is unix seconds on the emulator's clock."""

    token: str
    ext: str
    data: bytes = field(repr=False)
    content_type: str
    expires_at: float


class FileStore:
    """Files by token.  Not thread-safe: the emulator calls it under its lock."""

    def __init__(self) -> None:
        self._files: dict[str, StoredFile] = {}

    def put(self, data: bytes, ext: str, expires_at: float, content_type: str | None = None) -> StoredFile:
        """Store ``data`` under a fresh unguessable token."""
        token = secrets.token_hex(16)
        stored = StoredFile(token, ext.lower(), data, content_type or content_type_for(ext), expires_at)
        self._files[token] = stored
        return stored

    def get(self, token: str) -> StoredFile | None:
        """The file stored under ``token``, expired or not."""
        return self._files.get(token)

    def from_url(self, url: str, base_url: str) -> StoredFile | None:
        """The file a URL of this emulator names, or ``None`` when the URL is not one of its files."""
        base = urlsplit(base_url)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return None
        if parts.scheme not in ("http", "https") or port != base.port:
            return None
        if parts.hostname not in ("127.0.0.1", "localhost"):
            return None
        name = parts.path.rsplit("/", 1)[-1]
        if not parts.path.startswith("/files/") or "." not in name:
            return None
        token, ext = name.split(".", 1)
        stored = self._files.get(token)
        return stored if stored is not None and stored.ext == ext.lower() else None

    def clear(self) -> None:
        """Forget every file."""
        self._files.clear()

    def __len__(self) -> int:
        return len(self._files)


def serve_file(emu: Emulator, request: RecordedRequest, fault: Fault | None, token: str, ext: str) -> Response:
    """``GET /files/{token}.{ext}``: the bytes, or 404 when unknown or expired."""
    stored = emu._file(token)
    if stored is None or stored.ext != ext.lower():
        raise RouteError(404, f"No file named {token}.{ext} on this server.", "not_found")
    if emu._now() >= stored.expires_at:
        raise RouteError(404, "This result URL has expired", "expired")
    return Response(200, stored.data, stored.content_type, {"Cache-Control": "private, max-age=3600"})

