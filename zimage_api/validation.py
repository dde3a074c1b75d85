"""Checks that run before any request is sent, so bad input never costs money.

Each function raises :class:`~zimage_api.errors.ValidationError` naming the field and the allowed range, and
returns the normalised value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .catalog import (
    ASPECT_RATIOS,
    COUNT_MAX,
    QINGBO_PROMPT_LIMIT,
    RANDOM_SEED,
    RESOLUTIONS,
    SEED_MAX,
    TIMEOUT_MAX,
    TIMEOUT_MIN,
)
from .errors import InvalidTaskIdError, ValidationError

__all__ = [
    "SizeLimits", "IMAGES_SIZE", "V3_SIZE", "QINGBO_PROMPT_LIMIT", "ASPECT_RATIOS", "RESOLUTIONS",
    "check_prompt", "check_size", "check_number", "check_choice", "check_task_id", "check_seed", "check_count",
    "check_seed_range", "check_timeout", "check_lora_path", "check_text_length", "check_server_task_id",
    "TASK_ID_MAX",
]

_HF_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
_LORA_URL = re.compile(r"https://[A-Za-z0-9.-]+(?::\d{1,5})?/\S*\.safetensors(?:\?\S*)?", re.IGNORECASE)
TASK_ID_MAX = 128  # characters of a task or prediction id; real ids have a few dozen
_TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


@dataclass(frozen=True)
class SizeLimits:
    """Per-side bounds and the largest total area a protocol accepts."""

    protocol: str
    min_side: int
    max_side: int
    max_area: int


IMAGES_SIZE = SizeLimits("the /v1/images API", 256, 2048, 2048 * 2048)
V3_SIZE = SizeLimits("WaveSpeed v3", 256, 1536, 1536 * 1536)


def check_prompt(prompt: object, *, limit: int | None = None, provider: str = "", field: str = "prompt",
                 documented: bool = True) -> str:
    """A non-empty string, at most ``limit`` characters when a limit is given.

    ``documented`` says whether ``provider`` itself documents the limit (Qingbo's 800) or the pack sets it (WaveSpeed
    documents none: see :data:`~zimage_api.catalog.WAVESPEED_PROMPT_LIMIT`); the message says which.
    """
    if not isinstance(prompt, str):
        raise ValidationError(f"The {field} must be text, not {type(prompt).__name__}.", field=field)
    if not prompt.strip():
        raise ValidationError(f"The {field} is empty; describe the picture you want.", field=field)
    return check_text_length(prompt, limit=limit, provider=provider, field=field, documented=documented)


def check_text_length(text: str, *, limit: int | None, provider: str = "", field: str = "prompt",
                      documented: bool = True) -> str:
    """``text`` when it has at most ``limit`` characters (no limit: any length), else a :class:`ValidationError`
    with both counts."""
    if limit is None or len(text) <= limit:
        return text
    over = len(text) - limit
    if not documented:
        raise ValidationError(
            f"The {field} has {len(text):,} characters; the limit for {provider} is {limit:,} (it documents none, and "
            f"a longer text, likely pasted by mistake, would be sent and billed). Shorten it by {over:,}.",
            field=field)
    who = f"{provider} rejects" if provider else "The limit is"
    raise ValidationError(f"The {field} has {len(text)} characters; {who} more than {limit}. Shorten it by {over}.",
                          field=field)


def _as_int(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and (not math.isfinite(value) or not value.is_integer())):
        raise ValidationError(f"The {field} must be a whole number of pixels, not {value!r}.", field=field)
    return int(value)


def check_size(width: object, height: object, limits: SizeLimits) -> tuple[int, int]:
    """Width and height within the protocol's per-side range and area cap."""
    w, h = _as_int(width, "width"), _as_int(height, "height")
    bad = [(field, value) for field, value in (("width", w), ("height", h))
           if not limits.min_side <= value <= limits.max_side]
    if bad:
        named = " and the ".join(f"{field} {value}" for field, value in bad)
        raise ValidationError(
            f"The {named} {'is' if len(bad) == 1 else 'are'} outside {limits.min_side}-{limits.max_side} pixels, "
            f"the range of {limits.protocol}.", field=bad[0][0] if len(bad) == 1 else "size")
    if w * h > limits.max_area:
        side = int(math.isqrt(limits.max_area))
        raise ValidationError(
            f"The size {w}x{h} is {w * h:,} pixels; {limits.protocol} allows at most {side}x{side} "
            f"({limits.max_area:,}).", field="size")
    return w, h


def check_number(value: object, field: str, low: float, high: float) -> float:
    """A finite number within ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"The {field} must be a number, not {value!r}.", field=field)
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise ValidationError(f"The {field} {value!r} is outside {low:g}-{high:g}.", field=field)
    return number


def check_choice(value: object, field: str, choices: Iterable[str], *, case_insensitive: bool = False) -> str:
    """One of ``choices`` (returned in its canonical spelling)."""
    options = list(choices)
    for option in options:
        if value == option or (case_insensitive and isinstance(value, str) and value.lower() == option.lower()):
            return option
    raise ValidationError(f"The {field} {value!r} is not one of {', '.join(options)}.", field=field)


def check_seed(seed: object, *, field: str = "seed") -> int | None:
    """None (random), or an integer 0..SEED_MAX (2147483647). -1 also means random, as the providers use it."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValidationError(f"The {field} must be a whole number, not {seed!r}.", field=field)
    if seed == RANDOM_SEED:
        return None
    if not 0 <= seed <= SEED_MAX:
        raise ValidationError(f"The {field} {seed} is outside 0-{SEED_MAX} (or {RANDOM_SEED} for random).",
                              field=field)
    return seed


def check_count(count: object, *, field: str = "count", high: int = COUNT_MAX) -> int:
    """How many pictures or tasks: 1..high."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= high:
        raise ValidationError(f"The {field} {count!r} is outside 1-{high}.", field=field)
    return count


def check_task_id(task_id: object, *, provider: str = "the provider") -> str:
    """A provider task or prediction id: 1-128 characters of letters, digits and ``_ . : -``, no path tricks."""
    if not isinstance(task_id, str):
        raise ValidationError(f"The task id must be text, not {type(task_id).__name__}.", field="task_id")
    stripped = task_id.strip()
    if not stripped:
        raise ValidationError("The task id is empty; paste the id that Qingbo Task Submit returned.", field="task_id")
    if len(stripped) > 128:
        raise ValidationError(f"The task id has {len(stripped)} characters; ids have at most 128.", field="task_id")
    if ".." in stripped or not _TASK_ID.match(stripped):
        shown = stripped.encode("unicode_escape").decode("ascii")[:40]
        raise ValidationError(
            f"The task id '{shown}' is not a valid {provider} task id (letters, digits, '-', '_', '.', ':' only).",
            field="task_id")
    return stripped


def check_server_task_id(task_id: object, *, provider: str = "the provider") -> str:
    """A task id that a server (or the ledger, which keeps what servers said) gave: returned as it is when it can be
    one, else :class:`~zimage_api.errors.InvalidTaskIdError` saying why (a ``/``, a control character, blanks, more
    than :data:`TASK_ID_MAX` characters), quoting at most 40 printable characters of it."""
    text = task_id if isinstance(task_id, str) else str(task_id)
    shown = "".join(ch if ch.isprintable() else "?" for ch in text[:40]) + ("..." if len(text) > 40 else "")
    if not isinstance(task_id, str):
        reason = f"it is {type(task_id).__name__}, not text"
    elif not text:
        reason = "it is empty"
    elif len(text) > TASK_ID_MAX:
        reason = f"it has {len(text):,} characters; ids have at most {TASK_ID_MAX}"
    elif any(not ch.isprintable() for ch in text):
        reason = "it contains a control character"
    elif any(ch.isspace() for ch in text):
        reason = "it contains blanks"
    elif "/" in text or "\\" in text or ".." in text:
        reason = "it contains a path separator"
    elif not _TASK_ID.match(text):
        reason = "only letters, digits, '-', '_', '.' and ':' are allowed"
    else:
        return text
    raise InvalidTaskIdError(f"{provider} gave the task id '{shown}', which cannot be collected ({reason}).",
                             task_id=shown, provider=provider)


def split_task_ids(text: str) -> list[str]:
    """Task ids from pasted text: one per line, or separated by commas/spaces; duplicates removed, order kept."""
    ids: list[str] = []
    for token in re.split(r"[\s,;]+", text or ""):
        if token and token not in ids:
            ids.append(token)
    return ids


def check_seed_range(seed: object, *, field: str = "seed") -> int:
    """A fixed seed: a whole number 0..SEED_MAX (the caller has already read -1 as random)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ValidationError(f"The {field} {seed!r} is outside 0-{SEED_MAX} (or {RANDOM_SEED} for random).",
                              field=field)
    return seed


def check_timeout(timeout: object, *, field: str = "timeout") -> int:
    """A timeout widget value: TIMEOUT_MIN..TIMEOUT_MAX (10..900) seconds."""
    return int(check_number(timeout, field, TIMEOUT_MIN, TIMEOUT_MAX))


def check_lora_path(path: object, *, field: str = "path") -> str:
    """A LoRA's path: a Hugging Face repo id (``owner/name``) or an https URL of a ``.safetensors`` file."""
    if not isinstance(path, str):
        raise ValidationError(f"The LoRA {field} must be text, not {type(path).__name__}.", field=field)
    text = path.strip()
    if not text:
        raise ValidationError(f"The LoRA {field} is empty; give a Hugging Face repo id such as owner/name, or an "
                              "https URL of a .safetensors file.", field=field)
    if _HF_REPO.fullmatch(text) and ".." not in text:
        return text
    if _LORA_URL.fullmatch(text):
        return text
    shown = text.encode("unicode_escape").decode("ascii")[:60]
    raise ValidationError(f"The LoRA {field} {shown!r} is neither a Hugging Face repo id (owner/name) nor an https "
                          "URL of a .safetensors file.", field=field)
