"""The library's logger, the reproducibility log line, and the redaction safety net.

Every module logs through ``logging.getLogger("zimage_api")``. A filter on that logger masks anything that looks
like a bearer token and every key currently configured, so a stray ``%s`` of a header or a provider message that
echoes the key can never put it in a log file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from typing import Any

from .config import QINGBO, WAVESPEED, _read_config

__all__ = ["logger", "prompt_hash", "redact", "RedactingFilter", "log_call", "mask_url", "printable"]

logger = logging.getLogger("zimage_api")

_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")
MASK = "***"


def _known_keys() -> list[str]:
    keys: list[str] = []
    for provider in (WAVESPEED, QINGBO):
        keys.extend(os.environ.get(env, "").strip() for env in provider.key_envs)
        try:
            keys.append(_read_config(provider.section, "api_key"))
        except Exception:  # a broken config file must not break logging
            pass
    # Very short values would mask ordinary words; real keys are long.
    return [key for key in keys if len(key) >= 8]


_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/?#@\s]*)@")
# ANSI/VT escape sequences (CSI, OSC, and two-character escapes), then every other C0/C1 control and DEL.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]|\x9b[0-?]*[ -/]*[@-~]")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def mask_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``: the form to show or store a base URL in.

    Works on a bare URL and on text that contains URLs (a message naming a server).
    """
    return _URL_CREDENTIALS.sub(lambda m: m.group(1) + MASK + "@", str(url))


def printable(text: object, limit: int = 200) -> str:
    """``text`` safe to print on a terminal: escape sequences removed, each run of other control characters (line
    breaks, tabs, NUL, DEL, C1) turned into one space, and at most ``limit`` characters
    (an ellipsis marks the cut). For ids, provider messages and anything else a server chose."""
    cleaned = _CONTROLS.sub(" ", _ESCAPES.sub("", str(text)))
    if len(cleaned) > limit:
        cleaned = cleaned[: max(limit - 1, 0)] + "\u2026"
    return cleaned


def redact(text: str, extra_secrets: tuple[str, ...] = ()) -> str:
    """Return ``text`` with bearer tokens, URL credentials, configured keys and ``extra_secrets`` replaced by
    ``***``."""
    text = mask_url(_BEARER.sub(lambda m: m.group(1) + MASK, text))
    for secret in (*_known_keys(), *extra_secrets):
        if secret and len(secret) >= 8 and secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites each record's message with :func:`redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is left for logging's own error handling
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


if not any(isinstance(f, RedactingFilter) for f in logger.filters):
    logger.addFilter(RedactingFilter())


def prompt_hash(prompt: str) -> str:
    """The first 12 hex digits of the prompt's sha256: enough to match a picture to its prompt, nothing more."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]


def log_call(protocol: str, *, model: str, status: int | str, duration: float, prompt: str | None = None,
             guidance_scale: float | None = None, size: str | None = None, task_id: str | None = None,
             **extra: Any) -> None:
    """Write the one INFO line per call that lets a picture be reproduced (never the key, never the prompt)."""
    parts = [f"protocol={protocol}", f"model={model}"]
    if guidance_scale is not None:
        parts.append(f"guidance_scale={guidance_scale:g}")
    if size:
        parts.append(f"size={size}")
    if prompt is not None:
        parts.append(f"prompt_sha256={prompt_hash(prompt)}")
    if task_id:
        parts.append(f"task_id={task_id}")
    parts.extend(f"{key}={value}" for key, value in extra.items() if value is not None)
    parts.append(f"status={status}")
    parts.append(f"duration={duration:.2f}s")
    logger.info("%s", " ".join(parts))
