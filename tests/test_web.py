"""The pack's frontend extension (web/js/zimage.js): valid JavaScript, no price of its own, every string translated."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import pytest

from tests.comfy_stubs import PACK_DIR, load_pack
from zimage_api.pricing import PRICED_NODES

SCRIPT = PACK_DIR / "web" / "js" / "zimage.js"
SOURCE = SCRIPT.read_text(encoding="utf-8")
LOCALES = PACK_DIR / "locales"


def strings(lang: str) -> dict[str, Any]:
    return json.loads((LOCALES / lang / "main.json").read_text(encoding="utf-8"))["zimage"]


def leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_script_is_valid_javascript() -> None:
    done = subprocess.run(["node", "--check", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_script_is_served_from_the_pack_web_directory() -> None:
    pack = load_pack()
    assert (PACK_DIR / pack.WEB_DIRECTORY / "js" / "zimage.js").resolve() == SCRIPT.resolve()
    # ComfyUI serves it at /extensions/<pack>/js/zimage.js: the frontend's modules are three folders up.
    assert 'from "../../../scripts/app.js"' in SOURCE and 'from "../../../scripts/api.js"' in SOURCE


def test_the_script_badges_exactly_the_paid_nodes() -> None:
    declared = re.search(r"const PAID_NODES = new Set\(\[(.*?)\]\)", SOURCE)
    assert declared is not None
    assert re.findall(r'"(\w+)"', declared.group(1)) == list(PRICED_NODES)
    assert set(PRICED_NODES) <= set(load_pack().NODE_CLASS_MAPPINGS)


def test_the_script_holds_no_price() -> None:
    code = re.sub(r"//.*", "", SOURCE)
    assert not re.search(r"\b0\.0\d+", code), "prices come from POST /zimage/price only"
    assert "/zimage/price" in code and "/zimage/spend" in code and "/zimage/tasks" in code
    assert "/zimage/collect" in code


def test_the_script_registers_the_sidebar_tab_and_the_badge() -> None:
    assert "app.registerExtension(" in SOURCE and 'id: "zimage"' in SOURCE
    assert "registerSidebarTab" in SOURCE and "node.badges.push(" in SOURCE


def test_every_string_the_script_uses_is_in_english_and_chinese() -> None:
    used = set(re.findall(r'\bt\("zimage\.([\w.]+)"', SOURCE))
    used |= {f"sidebar.{key}" for key in re.findall(r'\bs\("(\w+)"', SOURCE)}
    assert used, "the script reads its strings from the locale files"
    english, chinese = leaves(strings("en")), leaves(strings("zh"))
    assert used <= set(english), sorted(used - set(english))
    assert set(english) == set(chinese)
    for key, text in chinese.items():
        placeholders = set(re.findall(r"\{\w+\}", english[key]))
        assert set(re.findall(r"\{\w+\}", text)) == placeholders, key
        if key != "sidebar.title":
            assert re.search(r"[\u4e00-\u9fff]", text), f"zh {key} is not translated"


def test_the_locale_strings_are_plain_for_the_frontend_i18n() -> None:
    # The frontend compiles main.json with vue-i18n: "|" makes plurals and "@" links, so neither may appear.
    for lang in ("en", "zh"):
        for key, text in leaves(strings(lang)).items():
            assert "|" not in text and "@" not in text, f"{lang} {key}"


def test_the_script_sends_every_widget_that_changes_a_price() -> None:
    declared = re.search(r"const PRICE_WIDGETS = \[(.*?)\]", SOURCE)
    assert declared is not None
    sent = set(re.findall(r'"(\w+)"', declared.group(1)))
    nodes = load_pack().NODE_CLASS_MAPPINGS
    inputs = {name for node in PRICED_NODES for part in ("required", "optional")
              for name in nodes[node].INPUT_TYPES().get(part, {})}
    assert sent <= inputs
    read = set(re.findall(r'widgets(?:\.get\(|\[)"(\w+)"', (PACK_DIR / "zimage_api" / "pricing.py").read_text()))
    read |= set(re.findall(r'for name in \(([^)]*)\) if name in widgets', (PACK_DIR / "zimage_api" / "pricing.py")
                           .read_text())[0].replace('"', "").replace(",", " ").split())
    assert read and read <= sent, sorted(read - sent)
