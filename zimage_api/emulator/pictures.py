"""Deterministic placeholder pictures ("cards") served by the emulator.

A card is a soft two- or three-colour gradient with a few blurred shapes, chosen from a hash of the prompt and seed,
with the first words of the prompt and the key parameters written on a translucent panel (in a font that has the
prompt's glyphs, see :mod:`.fonts`), a small "emulator" mark in the top right corner, and a metadata note saying
that it is a placeholder.  The same inputs always
give the same pixels, so tests can compare bytes.  With a reference picture the card is blended over it, so an
image-to-image answer visibly comes from its input.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps
from PIL.PngImagePlugin import PngInfo

from .fonts import Font, covers, font_for, latin_font

__all__ = ["render_card", "encode", "card_caption", "keep_unmasked", "MARK", "NOTE", "SOFTWARE"]

MARK = "emulator"
"""The small word in the top right corner of every card of 160 px and more."""
SOFTWARE = "comfyui-zimage emulator"
NOTE = ("Placeholder picture drawn by the local comfyui-zimage emulator, not by a Z-Image model; nothing was "
        "charged for it.")
"""The note every card carries in its metadata, so that a saved card never passes for a paid result."""
_EXIF_DESCRIPTION, _EXIF_SOFTWARE = 0x010E, 0x0131

_PANEL_ALPHA = 0.55
_MAX_PROMPT_LINES = 3
_LUT_LEVELS = 1024


def _digest(prompt: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}\x00{prompt}".encode("utf-8", "surrogatepass")).digest()


def _palette(digest: bytes) -> list[tuple[float, float, float]]:
    """Two or three pleasant colours (RGB in 0..255) picked from the digest."""
    base_hue = digest[0] / 255.0
    count = 2 + digest[1] % 2
    spread = 0.08 + (digest[2] / 255.0) * 0.30
    colours = []
    for index in range(count):
        hue = (base_hue + index * spread) % 1.0
        saturation = 0.40 + (digest[3 + index] / 255.0) * 0.30
        value = 0.70 + (digest[6 + index] / 255.0) * 0.25
        red, green, blue = colorsys.hsv_to_rgb(hue, saturation, value)
        colours.append((red * 255.0, green * 255.0, blue * 255.0))
    return colours


def _gradient(width: int, height: int, digest: bytes) -> Image.Image:
    angle = (digest[10] / 255.0) * 2.0 * np.pi
    cos, sin = float(np.cos(angle)), float(np.sin(angle))
    span = max(abs(cos) + abs(sin), 1e-6)
    levels = _LUT_LEVELS - 1
    # The ramp is linear in x and y, so it is the sum of one row and one column already scaled to LUT indices;
    # the colours then come from a small lookup table instead of per-pixel arithmetic.
    row = (np.linspace(0.0, 1.0, width, dtype=np.float32) * cos - min(0.0, cos)) * (levels / span)
    col = (np.linspace(0.0, 1.0, height, dtype=np.float32) * sin - min(0.0, sin)) * (levels / span)
    index = (col[:, None] + row[None, :] + np.float32(0.5)).astype(np.uint16)
    np.minimum(index, levels, out=index)
    return Image.fromarray(_colour_table(digest)[index], "RGB")


def _colour_table(digest: bytes) -> np.ndarray:
    ramp = np.linspace(0.0, 1.0, _LUT_LEVELS, dtype=np.float64)
    ramp = ramp * ramp * (3.0 - 2.0 * ramp)  # smoothstep: softer ends
    colours = np.asarray(_palette(digest), dtype=np.float64)
    stops = len(colours) - 1
    scaled = ramp * stops
    index = np.minimum(scaled.astype(np.int64), stops - 1)
    frac = (scaled - index)[:, None]
    table = colours[index] * (1.0 - frac) + colours[index + 1] * frac
    return np.clip(np.rint(table), 0, 255).astype(np.uint8)


def _shapes(card: Image.Image, digest: bytes) -> Image.Image:
    """Blend a few soft, translucent blobs over the card (drawn small, blurred, then scaled up: cheap and smooth)."""
    width, height = card.size
    small_w, small_h = max(8, width // 8), max(8, height // 8)
    layer = Image.new("RGBA", (small_w, small_h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for index in range(3 + digest[11] % 3):
        b = digest[12 + index * 4 : 16 + index * 4]
        cx, cy = b[0] / 255.0 * small_w, b[1] / 255.0 * small_h
        radius = (0.12 + b[2] / 255.0 * 0.25) * min(small_w, small_h)
        light = b[3] % 2 == 0
        fill = (255, 255, 255, 70) if light else (20, 20, 40, 50)
        draw.ellipse((cx - radius, cy - radius * 0.8, cx + radius, cy + radius * 0.8), fill=fill)
    layer = layer.filter(ImageFilter.GaussianBlur(radius=max(1.0, min(small_w, small_h) / 24.0)))
    colour = layer.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    alpha = layer.getchannel("A").resize((width, height), Image.Resampling.BILINEAR)
    card.paste(colour, (0, 0), alpha)
    return card


def card_caption(params: Mapping[str, Any]) -> str:
    """The parameter line written on a card, e.g. ``Z-Image-Base · 1024x1024 · seed 42 · cfg 7.5``."""
    parts = []
    for key, value in params.items():
        if value is None or value == "":
            continue
        if isinstance(value, float):
            value = f"{value:g}"
        parts.append(str(value) if key in ("model", "size") else f"{key} {value}")
    return " · ".join(parts)


def _wrap(text: str, font: Font, max_width: float, max_lines: int) -> list[str]:
    """Greedy wrap by drawn width (CJK text has no spaces: it breaks between characters), at most ``max_lines``;
    a cut last line ends with "..."."""
    lines: list[str] = []
    line = ""
    for word in " ".join(text.split()).split(" "):
        candidate = f"{line} {word}" if line else word
        if font.getlength(candidate) <= max_width:
            line = candidate
            continue
        if line:
            lines.append(line)
            line = ""
        for char in word:
            if line and font.getlength(line + char) > max_width:
                lines.append(line)
                line = char
            else:
                line += char
        if len(lines) > max_lines:
            break
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and font.getlength(last.rstrip() + "...") > max_width:
            last = last[:-1]
        lines[-1] = last.rstrip() + "..."
    return lines


def _draw_panel(card: Image.Image, prompt: str, caption: str, *, alpha: float = _PANEL_ALPHA) -> None:
    width, height = card.size
    size = max(8, min(width, height * 2) // 30)
    prompt_font, prompt_text = font_for(prompt, size)
    caption_font = latin_font(size)
    if not covers(caption_font, "·"):
        caption = caption.replace("·", "|")
    bitmap = not isinstance(caption_font, ImageFont.FreeTypeFont)
    line_height = int(size * 1.35) if not bitmap else 12
    margin = max(4, width // 40)
    text_width = max(8.0, width - 4.0 * margin)
    prompt_lines = _wrap(prompt_text, prompt_font, text_width, _MAX_PROMPT_LINES) or [""]
    caption_lines = _wrap(caption, caption_font, text_width, _MAX_PROMPT_LINES)
    # The panel never hides more than half the picture: small cards keep fewer lines.
    room = max(1, (height // 2 - 2 * margin) // line_height)
    prompt_lines = prompt_lines[: max(1, room - len(caption_lines))]
    lines = [(line, prompt_font) for line in prompt_lines] + [(line, caption_font) for line in caption_lines]
    lines = lines[:room]
    panel_h = min(height, line_height * len(lines) + 2 * margin)
    top = height - panel_h - margin if height > panel_h + margin else 0
    box = (margin, top, width - margin, min(height, top + panel_h))
    if box[2] <= box[0] or box[3] <= box[1]:
        return
    region = card.crop(box)
    shade = Image.new("RGB", region.size, (18, 18, 28))
    card.paste(Image.blend(region, shade, alpha), box[:2])
    draw = ImageDraw.Draw(card)
    y = box[1] + margin
    for number, (line, font) in enumerate(lines):
        colour = (250, 250, 250) if number < len(prompt_lines) else (200, 215, 235)
        try:
            draw.text((box[0] + margin, y), line, fill=colour, font=font)
        except (UnicodeError, OSError):  # a glyph the font cannot draw must not break the answer
            draw.text((box[0] + margin, y), line.encode("ascii", "replace").decode("ascii"), fill=colour, font=font)
        y += line_height


def _draw_mark(card: Image.Image) -> None:
    """Write the small "emulator" mark in the top right corner, on a dark chip that keeps it readable."""
    width, height = card.size
    size = max(8, min(width, height) // 40)
    font = latin_font(size)
    draw = ImageDraw.Draw(card)
    left, top, right, bottom = draw.textbbox((0, 0), MARK, font=font)
    pad = max(2, size // 4)
    chip_w, chip_h = int(right - left) + 2 * pad, int(bottom - top) + 2 * pad
    x, y = width - chip_w - pad, pad
    if chip_w > width // 4 or chip_h > height // 8:
        # Only thumbnails (under 160 px, far below any size the providers serve) are too small for a mark that
        # stays in its corner; they still carry the metadata note.
        return
    region = card.crop((x, y, x + chip_w, y + chip_h))
    card.paste(Image.blend(region, Image.new("RGB", region.size, (18, 18, 28)), 0.65), (x, y))
    draw.text((x + pad - left, y + pad - top), MARK, fill=(255, 255, 255), font=font)


def render_card(
    prompt: str,
    width: int,
    height: int,
    *,
    seed: int,
    params: Mapping[str, Any],
    reference: Image.Image | None = None,
    strength: float = 0.5,
) -> Image.Image:
    """Draw a deterministic RGB card of ``width`` x ``height`` for ``prompt`` and ``seed``.

    ``params`` are written on the card in order (``model`` and ``size`` as bare values, the rest as ``key value``).
    With ``reference`` the card is blended over the reference picture, which weighs ``strength`` (0..1).
    """
    if width < 1 or height < 1:
        raise ValueError(f"a card needs a positive size, got {width}x{height}")
    digest = _digest(prompt, seed)
    card = _shapes(_gradient(width, height, digest), digest)
    if reference is not None:
        ref = ImageOps.fit(ImageOps.exif_transpose(reference).convert("RGB"), (width, height))
        card = Image.blend(card, ref, max(0.0, min(1.0, float(strength))))
    # Over a reference the panel is opaque, so the reference's own caption does not show through the new one.
    _draw_panel(card, prompt, card_caption(params), alpha=_PANEL_ALPHA if reference is None else 1.0)
    _draw_mark(card)
    return card


def keep_unmasked(card: Image.Image, reference: Image.Image, mask: Image.Image) -> Image.Image:
    """Inpainting: the new ``card`` where ``mask`` is white, the ``reference`` where it is black (both scaled to the
    card's size), marked like every card, wherever the mask is."""
    size = card.size
    ref = ImageOps.exif_transpose(reference).convert("RGB").resize(size, Image.Resampling.BILINEAR)
    alpha = mask.convert("L").resize(size, Image.Resampling.BILINEAR)
    result = Image.composite(card, ref, alpha)
    _draw_mark(result)
    return result


def encode(image: Image.Image, fmt: str) -> bytes:
    """Encode ``image`` as ``"png"`` or ``"jpeg"`` (quality 90); the bytes are deterministic.

    Either carries :data:`NOTE`: a PNG as its ``Description`` text chunk, a JPEG as its EXIF ImageDescription,
    with ``Software`` :data:`SOFTWARE` in both.
    """
    buffer = io.BytesIO()
    kind = fmt.lower()
    if kind == "png":
        info = PngInfo()
        info.add_text("Software", SOFTWARE)
        info.add_text("Description", NOTE)
        image.save(buffer, format="PNG", compress_level=3, pnginfo=info)
    elif kind in ("jpeg", "jpg"):
        exif = Image.Exif()
        exif[_EXIF_DESCRIPTION] = NOTE
        exif[_EXIF_SOFTWARE] = SOFTWARE
        image.convert("RGB").save(buffer, format="JPEG", quality=90, exif=exif.tobytes())
    else:
        raise ValueError(f"unsupported picture format {fmt!r}: use 'png' or 'jpeg'")
    return buffer.getvalue()
