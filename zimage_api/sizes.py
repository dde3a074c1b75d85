"""Picture sizes: each api's limits, and an edit's output size fitted from its reference."""

from __future__ import annotations

import math

from .catalog import APIS
from .errors import ValidationError
from .validation import IMAGES_SIZE, V3_SIZE, SizeLimits, check_choice, check_size

__all__ = ["size_limits", "check_size_for", "fit_size", "size_from_reference"]


def size_limits(api: str) -> SizeLimits:
    """The size limits of an ``api`` choice ("v1/images" or "v3")."""
    return V3_SIZE if check_choice(api, "api", APIS) == "v3" else IMAGES_SIZE


def check_size_for(width: object, height: object, api: str) -> tuple[int, int]:
    """Width and height within the ``api``'s limits; the v3 message points to the api that allows more."""
    try:
        return check_size(width, height, size_limits(api))
    except ValidationError as err:
        hint = "; choose the v1/images api for sizes up to 2048." if api == "v3" else "."
        raise ValidationError(err.message.removesuffix(".") + hint, field=err.field) from None


def _round_to(value: float, multiple: int) -> int:
    return int(math.floor(value / multiple + 0.5)) * multiple


def fit_size(width: int, height: int, limits: SizeLimits, *, multiple: int = 16) -> tuple[int, int]:
    """The closest size to ``width`` x ``height`` that ``limits`` accept, in multiples of ``multiple``.

    The aspect ratio is kept (scaled down to the side and area caps, up to the minimum side) unless the picture is
    so elongated that no size of that ratio fits; then each side is clamped.
    """
    if width <= 0 or height <= 0:
        raise ValueError("width and height must be positive")
    scale = min(1.0, limits.max_side / max(width, height), math.sqrt(limits.max_area / (width * height)))
    scale = max(scale, limits.min_side / min(width, height))
    low = math.ceil(limits.min_side / multiple) * multiple
    high = math.floor(limits.max_side / multiple) * multiple
    w = min(max(_round_to(width * scale, multiple), low), high)
    h = min(max(_round_to(height * scale, multiple), low), high)
    while w * h > limits.max_area:  # rounding up may cross the area cap by a row of blocks
        if w >= h:
            w -= multiple
        else:
            h -= multiple
    return w, h


def size_from_reference(width: int, height: int, ref_width: int, ref_height: int, limits: SizeLimits,
                        *, multiple: int = 16) -> tuple[int, int]:
    """The output size of an edit: 0 means "from the reference".

    Both 0: the reference's size fitted to ``limits``. One 0: that side follows the reference's aspect ratio.
    Neither: returned as given (the caller validates it against the limits).
    """
    if width > 0 and height > 0:
        return width, height
    if width <= 0 and height <= 0:
        return fit_size(ref_width, ref_height, limits, multiple=multiple)
    if width > 0:
        return width, max(_round_to(width * ref_height / ref_width, multiple), multiple)
    return max(_round_to(height * ref_width / ref_height, multiple), multiple), height
