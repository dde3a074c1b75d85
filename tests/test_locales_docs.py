"""The pack inside the ComfyUI frontend: translations, per-node help pages and workflow thumbnails.

The frontend reads ``locales/<lang>/nodeDefs.json`` keyed by node class, then ``inputs.<name>`` and
``outputs.<index>`` (app/custom_node_manager.py and the frontend's own locales), the help page of a node from
``<WEB_DIRECTORY>/docs/<Class>/<locale>.md`` with ``<Class>.md`` as the fallback, and a template's thumbnail from
``workflows/<name>.jpg`` next to its ``.json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.comfy_stubs import PACK_DIR, load_pack

LOCALES = PACK_DIR / "locales"
WORKFLOWS = PACK_DIR / "workflows"
HAN = re.compile(r"[\u4e00-\u9fff]")


PACK = load_pack()
NODES: dict[str, type] = dict(PACK.NODE_CLASS_MAPPINGS)
DOCS = (PACK_DIR / PACK.WEB_DIRECTORY / "docs").resolve()


def visible_inputs(cls: type) -> list[str]:
    """The inputs an artist sees (required, then optional); hidden inputs have no label or tooltip."""
    declared = cls.INPUT_TYPES()
    return [*declared.get("required", {}), *declared.get("optional", {})]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def locale_dirs() -> list[Path]:
    return sorted(p for p in LOCALES.iterdir() if p.is_dir())


def nodedefs_files() -> list[Path]:
    return [d / "nodeDefs.json" for d in locale_dirs() if (d / "nodeDefs.json").exists()]


def doc_pages() -> list[Path]:
    return [page for name in NODES for page in (DOCS / f"{name}.md", DOCS / name / "zh.md")]


def test_there_is_a_chinese_locale_with_both_files() -> None:
    assert (LOCALES / "zh" / "main.json").is_file()
    assert (LOCALES / "zh" / "nodeDefs.json").is_file()


@pytest.mark.parametrize("path", sorted(LOCALES.rglob("*")), ids=lambda p: str(p.relative_to(PACK_DIR)))
def test_locale_files_are_valid_utf8_json_objects(path: Path) -> None:
    if path.is_dir():
        return
    # ComfyUI loads only *.json here (a stray file is ignored, so it is almost certainly a mistake).
    assert path.suffix == ".json", f"{path.name}: only JSON files belong in locales/"
    assert isinstance(read_json(path), dict)


@pytest.mark.parametrize("path", nodedefs_files(), ids=lambda p: p.parent.name)
def test_nodedefs_cover_every_node_input_and_output(path: Path) -> None:
    defs = read_json(path)
    assert set(defs) == set(NODES), "one entry per node class in NODE_CLASS_MAPPINGS, and no other"
    for name, cls in NODES.items():
        entry = defs[name]
        where = f"{path.parent.name}/{name}"
        assert set(entry) <= {"display_name", "description", "inputs", "outputs"}, where
        for key in ("display_name", "description"):
            assert isinstance(entry.get(key), str) and entry[key].strip(), f"{where}: no {key}"

        inputs = visible_inputs(cls)
        assert list(entry["inputs"]) == inputs, f"{where}: inputs must match INPUT_TYPES (required + optional)"
        for input_name in inputs:
            # The frontend looks inputs up by normalizeI18nKey(name), which turns "." into "_".
            assert "." not in input_name
            labels = entry["inputs"][input_name]
            assert set(labels) == {"name", "tooltip"}, f"{where}.{input_name}"
            assert all(isinstance(v, str) and v.strip() for v in labels.values()), f"{where}.{input_name}"

        # Outputs are keyed by their index as a string, not by name.
        expected = [str(i) for i in range(len(cls.RETURN_TYPES))]
        assert list(entry["outputs"]) == expected, f"{where}: outputs keyed {expected}"
        for index in expected:
            labels = entry["outputs"][index]
            assert set(labels) == {"name", "tooltip"}, f"{where} output {index}"
            assert all(isinstance(v, str) and v.strip() for v in labels.values()), f"{where} output {index}"


def test_chinese_nodedefs_are_chinese() -> None:
    defs = read_json(LOCALES / "zh" / "nodeDefs.json")
    for name, entry in defs.items():
        assert HAN.search(entry["display_name"]) and HAN.search(entry["description"]), name
        for input_name, labels in entry["inputs"].items():
            assert HAN.search(labels["tooltip"]), f"{name}.{input_name} tooltip is not translated"
        for index, labels in entry["outputs"].items():
            assert HAN.search(labels["tooltip"]), f"{name} output {index} tooltip is not translated"


# The price each node's help names: Qingbo's, the base model's, or the node's own model's.
PRICES = {"QingboTaskSubmit": "0.0106", "QingboTaskPoll": "0.0106", "ZImageInpaint": "0.02",
          "ZImageControlNet": "0.012"}


def test_chinese_descriptions_carry_the_price() -> None:
    defs = read_json(LOCALES / "zh" / "nodeDefs.json")
    for name, entry in defs.items():
        assert f"约 {PRICES.get(name, '0.01')} 美元" in entry["description"], name


def test_main_json_translates_every_category_segment() -> None:
    main = read_json(LOCALES / "zh" / "main.json")
    segments = {part for cls in NODES.values() for part in cls.CATEGORY.split("/")}
    assert segments <= set(main["nodeCategories"])
    assert "nodeDefs" not in main, "nodeDefs belong in nodeDefs.json (ComfyUI nests that file under this key)"


# -- help pages -------------------------------------------------------------------------------------------------------


def test_docs_live_inside_the_web_directory() -> None:
    assert PACK.WEB_DIRECTORY == "./web"
    assert DOCS == (PACK_DIR / "web" / "docs").resolve() and DOCS.is_dir()


def test_every_node_has_an_english_and_a_chinese_page_and_nothing_else() -> None:
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages == {p.relative_to(DOCS).as_posix() for p in doc_pages()}


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: p.relative_to(DOCS).as_posix())
def test_page_names_every_input_and_output(page: Path) -> None:
    name = page.stem if page.parent == DOCS else page.parent.name
    cls = NODES[name]
    text = page.read_text(encoding="utf-8")
    for identifier in [*visible_inputs(cls), *cls.RETURN_NAMES]:
        assert f"`{identifier}`" in text, f"{page.name} of {name} does not name `{identifier}`"


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: p.relative_to(DOCS).as_posix())
def test_page_gives_ranges_cost_caching_and_recovery(page: Path) -> None:
    name = page.stem if page.parent == DOCS else page.parent.name
    text = page.read_text(encoding="utf-8")
    # The seed guide's ranges on the pages of the nodes it covers; the others give their own.
    ranges = {"ZImageLoRA": ("0–4",), "ZImageInpaint": ("1024",), "ZImageControlNet": ("0–1",)}.get(
        name, ("7–8", "6–7", "0.25–0.35", "0.45–0.6", "0.7"))
    for tested in ranges:
        assert tested in text, f"{page}: tested range {tested} missing"
    assert PRICES.get(name, "0.01") in text
    if name.startswith("Qingbo"):
        assert "500,000" in text and "prompt_extend" in text
    for recovery in ("zimage.sqlite3", "python -m zimage_api tasks", "tasks resume", "`fixed`", "`randomize`"):
        assert recovery in text, f"{page}: {recovery} missing"
    key = "QINGBO_API_KEY" if name.startswith("Qingbo") else "WAVESPEED_API_KEY"
    assert key in text and "zimage.ini" in text


@pytest.mark.parametrize("name", sorted(NODES))
def test_chinese_page_is_chinese_and_not_hard_wrapped(name: str) -> None:
    text = (DOCS / name / "zh.md").read_text(encoding="utf-8")
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    assert len(HAN.findall(prose)) > 300, "the Chinese page should be written in Chinese"
    # Inside a paragraph, a line break between two Chinese characters renders as a stray space in the help panel.
    lines = prose.splitlines()
    for before, after in zip(lines, lines[1:], strict=False):
        starts_block = re.match(r"\s*(- |\d+\. |#)", after)
        if before.strip() and not before.lstrip().startswith("#") and not starts_block:
            assert not (re.search(r"[\u4e00-\u9fff，。、；：]$", before.rstrip()) and HAN.match(after.strip())), \
                f"hard-wrapped Chinese line: {before[-20:]!r} / {after[:20]!r}"


# -- workflow thumbnails ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("workflow", sorted(WORKFLOWS.glob("*.json")), ids=lambda p: p.stem)
def test_each_template_has_a_small_jpeg_thumbnail(workflow: Path) -> None:
    thumbnail = workflow.with_suffix(".jpg")
    assert thumbnail.is_file(), f"the template browser shows {thumbnail.name} for {workflow.name}"
    assert thumbnail.stat().st_size < 80_000
    with Image.open(thumbnail) as image:
        assert image.format == "JPEG" and image.mode == "RGB"
        assert 256 <= image.width <= 768 and image.height >= 256


def test_every_thumbnail_belongs_to_a_template() -> None:
    assert {p.stem for p in WORKFLOWS.glob("*.jpg")} == {p.stem for p in WORKFLOWS.glob("*.json")}
