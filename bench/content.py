"""Photo-like test pictures for the benchmark.

A flat or smoothly graded picture compresses far better than a photograph, which makes decoding look cheaper than it
is. These pictures start from the emulator's card and add texture at three scales plus sensor grain, so that a
2048x2048 JPEG at quality 90 is about 0.8 MB and a PNG about 7 MB, in the range of real generated pictures.
The same size and seed always give the same pixels.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from zimage_api.emulator import render_card

__all__ = ["photo", "encoded"]

_PROMPT = "Editorial-style product photo of a ceramic mug on a linen table, soft morning light"


def photo(size: int, *, seed: int = 7) -> Image.Image:
    """A deterministic RGB picture of ``size`` x ``size`` with photo-like detail."""
    card = render_card(_PROMPT, size, size, seed=seed, params={"model": "bench", "size": f"{size}x{size}"})
    pixels = np.asarray(card, dtype=np.float32).copy()
    rng = np.random.default_rng(seed)
    for cells, amplitude in ((max(size // 64, 2), 18.0), (max(size // 16, 2), 10.0), (max(size // 4, 2), 6.0)):
        noise = rng.standard_normal((cells, cells, 3)).astype(np.float32)
        small = Image.fromarray(np.clip(noise * 40.0 + 128.0, 0, 255).astype(np.uint8), "RGB")
        layer = np.asarray(small.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
        pixels += (layer - 128.0) * (amplitude / 40.0)
    pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * 3.0
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def encoded(picture: Image.Image, fmt: str) -> bytes:
    """``picture`` as PNG (zlib level 6, the usual default of image services) or JPEG (quality 90)."""
    buffer = io.BytesIO()
    if fmt == "png":
        picture.save(buffer, format="PNG", compress_level=6)
    elif fmt == "jpeg":
        picture.save(buffer, format="JPEG", quality=90)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return buffer.getvalue()
