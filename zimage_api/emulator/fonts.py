"""Fonts for the emulator's cards, so that every prompt is legible on them.

Pillow's own font draws Latin text. Chinese, Japanese and Korean prompts need a font with those glyphs: the first
one found of ``$ZIMAGE_EMULATOR_FONT`` and the usual system fonts (Noto Sans CJK, WenQuanYi, Droid Sans Fallback,
PingFang, Microsoft YaHei...). Without one, what no font can draw is spelled as code points (``U+6D77``), never as
boxes, and the emulator says once which package to install.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

from PIL import ImageFont

from ..logs import logger

__all__ = ["FONT_ENV", "CJK_FONT_FILES", "FONT_HINT", "Font", "latin_font", "cjk_font", "font_for", "covers"]

Font = ImageFont.ImageFont | ImageFont.FreeTypeFont

FONT_ENV = "ZIMAGE_EMULATOR_FONT"
"""A font file for the glyphs Pillow's own font lacks; when set, it is the only one tried."""

CJK_FONT_FILES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",  # Debian, Ubuntu: fonts-noto-cjk
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",  # Fedora: google-noto-sans-cjk-fonts
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",  # Arch: noto-fonts-cjk
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",  # Debian, Ubuntu: fonts-wqy-microhei
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",  # Debian, Ubuntu: fonts-wqy-zenhei
    "/usr/share/fonts/wenquanyi/wqy-microhei/wqy-microhei.ttc",  # Fedora, Arch: wqy-microhei
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",  # Debian, Ubuntu: fonts-droid-fallback
    "/System/Library/Fonts/PingFang.ttc",  # macOS
    "/System/Library/Fonts/Hiragino Sans GB.ttc",  # macOS
    "/Library/Fonts/Arial Unicode.ttf",  # macOS with Office
    "C:/Windows/Fonts/msyh.ttc",  # Windows: Microsoft YaHei
    "C:/Windows/Fonts/YuGothM.ttc",  # Windows: Yu Gothic
    "C:/Windows/Fonts/malgun.ttf",  # Windows: Malgun Gothic
)
"""Where the usual fonts with Chinese, Japanese and Korean glyphs live, the most complete first."""

FONT_HINT = (f"install a font with Chinese, Japanese and Korean glyphs (Debian and Ubuntu: `apt-get install "
             f"fonts-noto-cjk`, or the smaller fonts-wqy-microhei), or set {FONT_ENV} to such a font file")

_MISSING = "\U0010ffff"  # a code point no font draws: its mask is the font's "missing glyph" box


@functools.lru_cache(maxsize=32)
def latin_font(size: int) -> Font:
    """Pillow's own font at ``size`` pixels (the fixed bitmap font on Pillow < 10.1 or without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def cjk_font(size: int) -> ImageFont.FreeTypeFont | None:
    """The first font found with Chinese, Japanese and Korean glyphs at ``size`` pixels, or None."""
    chosen = os.environ.get(FONT_ENV, "").strip()
    path = _find((chosen,) if chosen else CJK_FONT_FILES)
    return None if path is None else _load(path, size)


@functools.lru_cache(maxsize=8)
def _find(files: Sequence[str]) -> str | None:
    """The first of ``files`` that loads as a font; says once why there is none."""
    for path in files:
        if os.path.isfile(path):
            try:
                ImageFont.truetype(path, 12)
            except (OSError, ValueError, ImportError):  # not a font, or Pillow without FreeType
                continue
            return path
    if len(files) == 1:
        logger.warning("The emulator cannot load the font %s=%s; text it lacks is written as code points (U+...).",
                       FONT_ENV, files[0])
    else:
        logger.warning("The emulator found no font with Chinese, Japanese or Korean glyphs, so it writes them as "
                       "code points (U+...); %s.", FONT_HINT)
    return None


@functools.lru_cache(maxsize=32)
def _load(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


@functools.lru_cache(maxsize=8192)
def covers(font: Font, char: str) -> bool:
    """Whether ``font`` has a glyph for ``char`` (spaces always count as drawn)."""
    if char.isspace():
        return True
    if not isinstance(font, ImageFont.FreeTypeFont):
        return ord(char) < 256  # the bitmap font knows Latin-1 only
    return _shape(font, char) != _shape(font, _MISSING)


def _shape(font: ImageFont.FreeTypeFont, char: str) -> tuple[tuple[int, int], bytes]:
    mask = font.getmask(char)
    return mask.size, bytes(mask)


def font_for(text: str, size: int) -> tuple[Font, str]:
    """The font to draw ``text`` with at ``size`` pixels, and the text as it will be drawn.

    Pillow's font when it has every glyph; otherwise a CJK font when one is installed; characters the chosen font
    still lacks are spelled as code points (``U+6D77``), so two different prompts never look the same.
    """
    latin = latin_font(size)
    if all(covers(latin, char) for char in text):
        return latin, text
    font: Font = cjk_font(size) or latin
    return font, "".join(char if covers(font, char) else f" U+{ord(char):04X} " for char in text)
