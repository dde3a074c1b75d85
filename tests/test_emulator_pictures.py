"""The emulator's placeholder pictures over real HTTP: legible prompts in any script, the mark and the metadata note.

Every case runs twice: with the fonts this machine has (a CJK font when one is installed, see
``zimage_api.emulator.fonts.CJK_FONT_FILES``), and with none (``ZIMAGE_EMULATOR_FONT`` naming a missing file), where
what no font draws is spelled as code points. Either way two prompts of the same length must look different: boxes
(the "missing glyph" of a font) would make them identical.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import numpy as np
import pytest
import requests
from PIL import Image

from zimage_api.emulator import Emulator
from zimage_api.emulator.fonts import FONT_ENV, cjk_font, covers
from zimage_api.emulator.pictures import MARK, NOTE, SOFTWARE

KEY = "sk-test-pictures"
TIMEOUT = 5.0
# Two Chinese prompts of the same length (13 characters), as Qingbo users write them.
SEASIDE = "海边咖啡馆，日落，木质露台"
MOUNTAIN = "雪山小屋，清晨，松树和雾气"
JAPANESE = "東京の夜景、ネオン、雨の街"
KOREAN = "서울의 밤거리, 네온, 비 오는"


@pytest.fixture(params=["installed fonts", "no CJK font"])
def fonts(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "no CJK font":
        monkeypatch.setenv(FONT_ENV, "/nonexistent/zimage-test-font.ttf")
    else:
        monkeypatch.delenv(FONT_ENV, raising=False)
    return str(request.param)


@pytest.fixture
def emu() -> Iterator[Emulator]:
    emulator = Emulator(wavespeed_keys={KEY}, qingbo_keys={KEY}, picture_scale=1.0).start()
    try:
        yield emulator
    finally:
        emulator.stop()


def generate(emu: Emulator, prompt: str, *, size: str = "512x288") -> bytes:
    response = requests.post(f"{emu.url}/v1/images/generations", headers={"Authorization": f"Bearer {KEY}"},
                             json={"model": "Z-Image-Base", "prompt": prompt, "size": size, "seed": 7},
                             timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return base64.b64decode(response.json()["data"][0]["b64_json"])


def prompt_text(png: bytes) -> np.ndarray:
    """Where the prompt's letters are: its lines are drawn near-white (the parameter line is bluer, the background
    darkened under the panel), so this mask is the glyphs alone, whatever the gradient behind them."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    panel_rows = np.median(pixels.max(axis=2), axis=1) < 150  # the darkened panel (the gradient is lighter)
    assert panel_rows.sum() > 20, "the card has its caption panel"
    return np.all(pixels > 240, axis=2) & panel_rows[:, None]


def test_two_chinese_prompts_of_the_same_length_show_different_glyphs(emu: Emulator, fonts: str) -> None:
    seaside, mountain = prompt_text(generate(emu, SEASIDE)), prompt_text(generate(emu, MOUNTAIN))
    assert seaside.sum() > 200 and mountain.sum() > 200, "the prompt is written on the card"
    differing = np.logical_xor(seaside, mountain).sum()
    assert differing > 0.3 * min(seaside.sum(), mountain.sum()), f"{differing} pixels differ: boxes, not glyphs?"
    font = cjk_font(16)
    if fonts == "installed fonts" and font is not None:
        assert all(covers(font, char) for char in SEASIDE + MOUNTAIN + JAPANESE + KOREAN)
    if fonts == "no CJK font":
        assert font is None


def test_a_chinese_prompt_is_drawn_as_glyphs_or_spelled_as_code_points(emu: Emulator, fonts: str) -> None:
    """With a CJK font the caption is the glyphs; without one it is the code points, so never the same pixels as
    the prompt spelled out (with a font) and never the font's boxes."""
    drawn = prompt_text(generate(emu, SEASIDE))
    spelled = prompt_text(generate(emu, " ".join(f"U+{ord(char):04X}" for char in SEASIDE)))
    differing = np.logical_xor(drawn, spelled).sum()  # a few edge pixels differ with the gradient behind them
    if fonts == "no CJK font" or cjk_font(16) is None:
        assert differing < 0.05 * drawn.sum()
    else:
        assert differing > 0.3 * drawn.sum()


@pytest.mark.parametrize("prompt", [JAPANESE, KOREAN])
def test_japanese_and_korean_prompts_differ_from_each_other(emu: Emulator, fonts: str, prompt: str) -> None:
    drawn, seaside = prompt_text(generate(emu, prompt)), prompt_text(generate(emu, SEASIDE))
    assert np.logical_xor(drawn, seaside).sum() > 0.3 * seaside.sum()


def test_every_card_is_marked_in_its_corner_and_noted_in_its_metadata(emu: Emulator, fonts: str) -> None:
    png = generate(emu, SEASIDE, size="1024x576")
    image = Image.open(io.BytesIO(png))
    assert image.info["Description"] == NOTE and image.info["Software"] == SOFTWARE
    assert "emulator" in NOTE and "nothing was charged" in NOTE
    pixels = np.asarray(image.convert("RGB")).astype(int)
    corner = pixels[:40, -140:]
    # The gradient is light (value 0.70-0.95): only the mark's chip is dark, and only its letters are white.
    assert (corner.max(axis=2) < 100).sum() > 200 and (corner.min(axis=2) > 235).sum() > 20
    # ...and it stays in its corner: the rest of the top edge is the card's own gradient.
    assert (pixels[:40, :-140].max(axis=2) < 100).sum() == 0
    assert MARK == "emulator"


def test_a_jpeg_card_carries_the_note_in_its_exif(emu: Emulator, fonts: str) -> None:
    response = requests.post(f"{emu.url}/api/v3/wavespeed-ai/z-image/base", headers={"Authorization": f"Bearer {KEY}"},
                             json={"prompt": SEASIDE, "size": "512*512", "seed": 3, "output_format": "jpeg",
                                   "enable_sync_mode": True, "enable_base64_output": True}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    data = base64.b64decode(response.json()["data"]["outputs"][0].split(",", 1)[1])
    exif = Image.open(io.BytesIO(data)).getexif()
    assert exif[0x010E] == NOTE and exif[0x0131] == SOFTWARE
