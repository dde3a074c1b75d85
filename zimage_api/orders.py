"""What the artist asks for, checked once: the request values that every entry point hands to the engine.

A node, a CLI command and a batch row turn their own inputs into one of these values; the engine plans it into paid
units. Equal values give equal requests, whichever entry point built them. Every check runs here, before anything is
sent or uploaded.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

from .catalog import APIS, MODELS, RESPONSE_FORMATS, SEED_MAX, V3_OUTPUT_FORMATS
from .errors import ValidationError
from .sizes import check_size_for, size_from_reference, size_limits
from .validation import (
    ASPECT_RATIOS,
    QINGBO_PROMPT_LIMIT,
    RESOLUTIONS,
    check_choice,
    check_count,
    check_number,
    check_prompt,
    check_seed_range,
)

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["Reference", "TextToImage", "Edit", "QingboTasks", "PictureOrder", "MAX_PICTURES", "random_seed"]

MAX_PICTURES = 64  # paid pictures per order: a guard against paying for a huge batch by mistake
REFERENCE_MAX_SIDE = 1024  # the seed guide: resize references to 1024 on the long side before upload


def random_seed() -> int:
    """A seed for an order that gave none: drawn here, so that every picture still has a seed to reproduce it."""
    return secrets.randbelow(SEED_MAX + 1)


@dataclass(frozen=True)
class Reference:
    """One reference picture, encoded for upload once (at most 1024 pixels on the long side, PNG).

    ``size`` is the picture's own size before that resize: an edit's output size follows it.
    """

    upload: tuple[bytes, str, str]  # (data, filename, content_type)
    size: tuple[int, int]

    @property
    def digest(self) -> str:
        """The upload's sha256 prefix: a receipt matches only the same reference."""
        return hashlib.sha256(self.upload[0]).hexdigest()[:32]

    @classmethod
    def from_image(cls, image: Image.Image) -> Reference:
        """The reference of a PIL picture (turned upright by its EXIF orientation first)."""
        from PIL import ImageOps

        from .images import prepare_upload

        upright = ImageOps.exif_transpose(image) or image
        return cls(prepare_upload(upright, max_side=REFERENCE_MAX_SIDE), upright.size)


@dataclass(frozen=True)
class TextToImage:
    """Text to image at WaveSpeed: ``count`` pictures, picture *i* with ``seed + i``, one paid request each."""

    prompt: str
    negative_prompt: str = ""
    model: str = "Z-Image-Base"
    api: str = "v1/images"
    guidance_scale: float = 7.5
    width: int = 1024
    height: int = 1024
    seed: int = 0
    count: int = 1
    response_format: str = "b64_json"
    output_format: str = "png"
    timeout: float = 120.0

    kind = "generate"

    def __post_init__(self) -> None:
        check_prompt(self.prompt)
        if not isinstance(self.negative_prompt, str):
            raise ValidationError("The negative_prompt must be text.", field="negative_prompt")
        check_choice(self.model, "model", MODELS)
        check_choice(self.api, "api", APIS)
        object.__setattr__(self, "guidance_scale", check_number(self.guidance_scale, "guidance_scale", 0.0, 20.0))
        check_choice(self.response_format, "response_format", RESPONSE_FORMATS)
        check_choice(self.output_format, "output_format", V3_OUTPUT_FORMATS)
        object.__setattr__(self, "count", check_count(self.count))
        object.__setattr__(self, "timeout", check_number(self.timeout, "timeout", 0.001, 86400.0))
        check_seeds(self.seed, self.pictures_per_reference)
        if self.kind == "generate":
            w, h = check_size_for(self.width, self.height, self.api)
            object.__setattr__(self, "width", w)
            object.__setattr__(self, "height", h)

    @property
    def pictures_per_reference(self) -> int:
        return self.count

    @property
    def units(self) -> int:
        """The paid pictures this order asks for."""
        return self.count

    @property
    def sent_guidance(self) -> float | None:
        """The CFG actually sent: the v3 api has no such parameter."""
        return None if self.api == "v3" else self.guidance_scale

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


@dataclass(frozen=True)
class Edit(TextToImage):
    """Image to image at WaveSpeed: every reference gets ``count`` pictures, picture *i* with ``seed + i``.

    ``width``/``height`` of 0 take the reference's size (one side 0: that side follows its aspect ratio), fitted to
    the api's limits and rounded to a multiple of 16.
    """

    references: tuple[Reference, ...] = field(default=())
    strength: float = 0.5
    guidance_scale: float = 6.5
    width: int = 0
    height: int = 0

    kind = "edit"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.references:
            raise ValidationError("An edit needs a reference picture.", field="image")
        object.__setattr__(self, "references", tuple(self.references))
        object.__setattr__(self, "strength", check_number(self.strength, "strength", 0.0, 1.0))
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValidationError(f"The {name} must be 0 (the reference's size) or a size in pixels, not "
                                      f"{value!r}.", field=name)
        ref_w, ref_h = self.references[0].size
        w, h = size_from_reference(self.width, self.height, ref_w, ref_h, size_limits(self.api))
        w, h = check_size_for(w, h, self.api)
        object.__setattr__(self, "width", w)
        object.__setattr__(self, "height", h)
        if self.units > MAX_PICTURES:
            raise ValidationError(
                f"{len(self.references)} reference pictures x count {self.count} would make {self.units} paid "
                f"requests; the limit per run is {MAX_PICTURES}. Split the batch or lower the count.", field="count")

    @property
    def units(self) -> int:
        return len(self.references) * self.count


PictureOrder = Union[TextToImage, Edit]


@dataclass(frozen=True)
class QingboTasks:
    """z-image-turbo tasks at Qingbo: ``count`` tasks, task *i* with ``seed + i`` (no seed: Qingbo picks)."""

    prompt: str
    aspect_ratio: str = "1:1"
    resolution: str = "1K"
    prompt_extend: bool = False
    seed: int | None = None
    count: int = 1
    callback_url: str | None = None
    callback_events: tuple[str, ...] | None = None

    kind = "qingbo-submit"

    def __post_init__(self) -> None:
        check_prompt(self.prompt, limit=QINGBO_PROMPT_LIMIT, provider="Qingbo")
        check_choice(self.aspect_ratio, "aspect_ratio", ASPECT_RATIOS)
        check_choice(self.resolution, "resolution", RESOLUTIONS)
        object.__setattr__(self, "prompt_extend", bool(self.prompt_extend))
        object.__setattr__(self, "count", check_count(self.count))
        if self.seed is not None:
            check_seeds(self.seed, self.count)
        object.__setattr__(self, "callback_url", (self.callback_url or "").strip() or None)
        events = tuple(e for e in (self.callback_events or ()) if e)
        object.__setattr__(self, "callback_events", events or None)

    @property
    def units(self) -> int:
        return self.count

    def seed_of(self, index: int) -> int | None:
        return None if self.seed is None else self.seed + index

    def options(self) -> dict[str, object]:
        """The submit's options beside the prompt and seed, as :meth:`QingboClient.submit` takes them."""
        return {"aspect_ratio": self.aspect_ratio, "resolution": self.resolution,
                "prompt_extend": self.prompt_extend, "callback_url": self.callback_url,
                "callback_events": list(self.callback_events) if self.callback_events else None}


def check_seeds(seed: object, count: int, *, field: str = "seed") -> int:
    """A first seed whose ``count`` pictures (``seed`` .. ``seed + count - 1``) all stay within 0-SEED_MAX."""
    first = check_seed_range(seed, field=field)
    last = first + count - 1
    if last > SEED_MAX:
        raise ValidationError(f"The {field} {first} with count {count} would use seeds up to {last}, past the "
                              f"largest seed {SEED_MAX}; use a {field} of at most {SEED_MAX - count + 1}.",
                              field=field)
    return first


def split_events(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """Callback events from comma-separated text (or a list), blanks dropped."""
    parts = text.split(",") if isinstance(text, str) else list(text or ())
    return tuple(part.strip() for part in parts if part and part.strip())
