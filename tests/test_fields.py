"""The field table: every node widget, command option and batch column comes from it; the declarations saved
workflows rely on are unchanged but for the seed; a seed means the same on every node; prices are written once."""

from __future__ import annotations

import argparse
import copy
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from tests.comfy_stubs import PACK_DIR, call_node
from zimage_api import catalog, fields
from zimage_api.catalog import ROUTES, SEED_MAX, provider_and_api, route_named, route_of, usd
from zimage_api.cli.batch_rows import FIELDS, load_jobs
from zimage_api.cli.parser import build_parser
from zimage_api.emulator import Emulator
from zimage_api.fields import BATCH_COLUMNS, BATCH_FLAGS, COMMAND_FLAGS, NODE_INPUTS, column_named, node_inputs

BEFORE = json.loads((Path(__file__).parent / "data" / "input_types_0_2.json").read_text(encoding="utf-8"))
PROMPT = "a lighthouse on a cliff at dusk"


def as_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


# -- the node widgets ------------------------------------------------------------------------------------------------


def test_every_node_widget_comes_from_the_table_and_every_table_row_is_a_widget(pack: ModuleType) -> None:
    assert set(NODE_INPUTS) == set(pack.NODE_CLASS_MAPPINGS)
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        assert set(spec) == {*NODE_INPUTS[name], "hidden"}, name
        for section, table in NODE_INPUTS[name].items():
            assert list(spec[section]) == [f.name for f in table], (name, section)
            for f in table:
                assert spec[section][f.name] == f.widget(), (name, f.name)
        assert {k: v for k, v in spec.items() if k != "hidden"} == node_inputs(name)


def with_the_seed_change(before: dict[str, Any]) -> dict[str, Any]:
    """The declarations of before the seed change, with that change applied: every seed goes down to -1 (random),
    its tooltip says so, and Qingbo Task Submit gets seed_zero_means_random at the end."""
    after = copy.deepcopy(before)
    for name, spec in after.items():
        seed = spec["required"].get("seed")
        if seed is None:
            continue
        seed[1]["min"] = -1
        if name == "QingboTaskSubmit":
            seed[1]["tooltip"] = ("-1 = random (no seed is sent); 0 too while seed_zero_means_random is on. "
                                  "Otherwise task i of the count uses seed + i.")
            spec["optional"]["seed_zero_means_random"] = as_json(fields.SEED_ZERO_MEANS_RANDOM.widget())
        else:
            seed[1]["tooltip"] += " -1 = random."
    return after


def with_the_count_tooltip(before: dict[str, Any]) -> dict[str, Any]:
    """Generate's count tooltip names the provider's limit of requests in flight (2 at WaveSpeed), not 4."""
    after = copy.deepcopy(before)
    after["ZImageGenerate"]["required"]["count"][1]["tooltip"] = fields.COUNT.help
    return after


def test_the_declarations_are_those_saved_workflows_know_but_for_the_seed(pack: ModuleType) -> None:
    now = {name: as_json(cls.INPUT_TYPES()) for name, cls in pack.NODE_CLASS_MAPPINGS.items()}
    expected = with_the_count_tooltip(with_the_seed_change(BEFORE))
    assert now == expected
    for name in now:  # the order of the widgets, which saved workflows hold their values by
        for section in ("required", "optional"):
            assert list(now[name].get(section, {})) == list(expected[name].get(section, {})), (name, section)
    added = now["QingboTaskSubmit"]["optional"]
    assert list(added)[-1] == "seed_zero_means_random" and added["seed_zero_means_random"][1]["default"] is True


def test_every_seed_widget_takes_minus_one_and_keeps_its_default(pack: ModuleType) -> None:
    seeds = {name: cls.INPUT_TYPES()["required"]["seed"] for name, cls in pack.NODE_CLASS_MAPPINGS.items()
             if "seed" in cls.INPUT_TYPES()["required"]}
    assert set(seeds) == {"ZImageGenerate", "ZImageEdit", "ZImageInpaint", "ZImageControlNet", "QingboTaskSubmit"}
    for name, (kind, options) in seeds.items():
        assert kind == "INT" and options["default"] == 0 and options["control_after_generate"], name
        assert (options["min"], options["max"]) == (-1, SEED_MAX), name


# -- the command line ------------------------------------------------------------------------------------------------

COMMON_OPTIONS = {"-h", "--help", "-v", "--verbose", "--out", "--timeout", "--retry-uncertain"}


@pytest.mark.parametrize("command", sorted(COMMAND_FLAGS))
def test_every_option_comes_from_the_table_and_every_row_is_an_option(command: str) -> None:
    parser = subcommand(build_parser(), command)
    options = {s: a for a in parser._actions for s in a.option_strings if s not in COMMON_OPTIONS}
    table = {f.flag: f for f in COMMAND_FLAGS[command]}
    assert set(options) == set(table)
    for flag, f in table.items():
        action = options[flag]
        if f.kind == "COMBO":
            assert tuple(action.choices or ()) == f.choices, flag
        assert action.default in (None, f.default, False), flag
        if f.default is not None and f.kind != "BOOLEAN":
            assert str(f.default_text()) in (action.help or "") or "default" not in f.flag_help, flag


def test_submit_options_default_to_the_table_and_generate_draws_its_defaults_from_it() -> None:
    parser = build_parser()
    submit = parser.parse_args(["submit", "x"])
    assert (submit.aspect_ratio, submit.resolution, submit.count) == (
        fields.ASPECT_RATIO.default, fields.RESOLUTION.default, fields.COUNT.default)
    generate = parser.parse_args(["generate", "x"])
    assert generate.count == fields.COUNT.default and generate.negative == fields.NEGATIVE.default
    batch = subcommand(parser, "batch")
    flags = {s: a for a in batch._actions for s in a.option_strings}
    for f in BATCH_FLAGS:
        assert tuple(flags[f.flag].choices or ()) == f.choices  # type: ignore[index]
    assert flags["--provider"].default == ROUTES[0]


# -- the batch columns -----------------------------------------------------------------------------------------------


def test_every_batch_column_comes_from_the_table() -> None:
    assert FIELDS == tuple(f.column for f in BATCH_COLUMNS)
    for f in BATCH_COLUMNS:
        assert column_named(f.column or "") is f
        assert column_named((f.column or "").upper()) is f
        for alias in f.aliases:
            assert column_named(alias) is f
    assert column_named("colour") is None


def write_rows(tmp_path: Path, rows: list[dict[str, Any]]) -> Path:
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


VALUES = {"negative_prompt": "no text", "width": 512, "height": 512, "size": "512x512", "seed": 3, "cfg": 7,
          "aspect_ratio": "16:9", "resolution": "2K", "prompt_extend": True, "response_format": "url",
          "output_format": "jpeg", "loras": "owner/name:0.5", "mode": "canny"}


@pytest.mark.parametrize("route", ROUTES)
def test_a_column_is_refused_exactly_where_the_table_says_its_route_takes_none(tmp_path: Path, route: str) -> None:
    columns = [f for f in BATCH_COLUMNS if f.column in VALUES]
    rows = [{"prompt": PROMPT, "provider": route, f.column: VALUES[f.column]} for f in columns]  # type: ignore[index]
    jobs = load_jobs(write_rows(tmp_path, rows))
    for f, job in zip(columns, jobs, strict=True):
        refused = job.error is not None and f"{route} does not take {f.column}" in job.error
        assert refused == (not f.takes(route)), (f.column, job.error)  # type: ignore[arg-type]


def test_batch_provider_words_map_to_one_provider_and_api() -> None:
    assert [provider_and_api(r) for r in ROUTES] == [("wavespeed", "v1/images"), ("wavespeed", "v3"),
                                                     ("qingbo", None)]
    for route in ROUTES:
        assert route_of(*provider_and_api(route)) == route
        assert route_named(route.upper()) == route
    assert {word: route_named(word) for word in catalog.ROUTE_ALIASES} == catalog.ROUTE_ALIASES
    assert route_named("dall-e") is None
    assert catalog.APIS == ("v1/images", "v3") and catalog.PROVIDERS == ("wavespeed", "qingbo")


# -- seeds -----------------------------------------------------------------------------------------------------------


def qingbo_submit(nodes: ModuleType, **inputs: Any) -> None:
    args = dict(prompt=PROMPT, aspect_ratio="1:1", resolution="1K", prompt_extend=False, count=1, unique_id="3")
    call_node(nodes.QingboTaskSubmit().submit(**{**args, **inputs}))


@pytest.mark.parametrize(("inputs", "sent"), [
    pytest.param({"seed": 0}, None, id="a workflow saved before: 0 stays random"),
    pytest.param({"seed": 0, "callback_url": "", "callback_events": ""}, None, id="an API prompt saved before"),
    pytest.param({"seed": 0, "seed_zero_means_random": True}, None, id="0 random, as chosen"),
    pytest.param({"seed": 0, "seed_zero_means_random": False}, 0, id="0 is a seed once the artist says so"),
    pytest.param({"seed": -1}, None, id="-1 random"),
    pytest.param({"seed": -1, "seed_zero_means_random": False}, None, id="-1 random either way"),
    pytest.param({"seed": 12, "seed_zero_means_random": False}, 12, id="a fixed seed"),
    pytest.param({"seed": 12}, 12, id="a fixed seed in an old workflow"),
])
def test_qingbo_task_submit_reads_its_seed(nodes: ModuleType, emu: Emulator, inputs: dict[str, Any],
                                           sent: int | None) -> None:
    qingbo_submit(nodes, **inputs)
    (request,) = emu.requests_to("POST /v1/tasks")
    assert request.json.get("seed") == sent


def painted(width: int = 320, height: int = 240) -> torch.Tensor:
    mask = torch.zeros(1, height, width)
    mask[:, 30:150, 40:200] = 1.0
    return mask


def reference(width: int = 320, height: int = 240) -> torch.Tensor:
    ys = torch.linspace(0, 1, height).view(1, height, 1, 1).expand(1, height, width, 1)
    xs = torch.linspace(0, 1, width).view(1, 1, width, 1).expand(1, height, width, 1)
    return torch.cat([xs, ys, xs * ys], dim=-1).contiguous()


WAVESPEED_NODES = {
    "ZImageGenerate": lambda seed: dict(prompt=PROMPT, negative_prompt="", model="Z-Image-Turbo", api="v3",
                                        guidance_scale=7.5, width=256, height=256, seed=seed, count=2),
    "ZImageEdit": lambda seed: dict(image=reference(), prompt=PROMPT, negative_prompt="", model="Z-Image-Turbo",
                                    api="v3", strength=0.5, guidance_scale=6.5, seed=seed, count=2),
    "ZImageInpaint": lambda seed: dict(image=reference(), mask=painted(), prompt=PROMPT, seed=seed, count=2),
    "ZImageControlNet": lambda seed: dict(control_image=reference(), mode="depth", strength=1.0, prompt=PROMPT,
                                          width=0, height=0, seed=seed, count=2),
}


def v3_seeds(emu: Emulator, after: int = 0) -> list[int]:
    return sorted(r.json.get("seed") for r in emu.requests_to("POST /api/v3/wavespeed-ai/*")[after:])


@pytest.mark.parametrize("name", sorted(WAVESPEED_NODES))
def test_a_wavespeed_node_sends_seed_zero_and_draws_one_for_minus_one(nodes: ModuleType, emu: Emulator,
                                                                      name: str) -> None:
    cls = nodes.NODE_CLASS_MAPPINGS[name]
    call_node(getattr(cls(), cls.FUNCTION)(**WAVESPEED_NODES[name](0), unique_id="5"))
    assert v3_seeds(emu) == [0, 1]
    _image, info = call_node(getattr(cls(), cls.FUNCTION)(**WAVESPEED_NODES[name](-1), unique_id="5"))
    first, second = v3_seeds(emu, after=2)
    assert 0 <= first and second == first + 1 <= SEED_MAX
    assert json.loads(info)["seeds"] == [first, second]  # the drawn seed is written down, to reproduce the picture


def test_generate_over_v1_images_draws_a_seed_for_minus_one(nodes: ModuleType, emu: Emulator) -> None:
    call_node(nodes.ZImageGenerate().generate(prompt=PROMPT, negative_prompt="", model="Z-Image-Base",
                                              api="v1/images", guidance_scale=7.5, width=256, height=256, seed=-1,
                                              count=1, unique_id="5"))
    (request,) = emu.requests_to("POST /v1/images/generations")
    assert isinstance(request.json["seed"], int) and 0 <= request.json["seed"] <= SEED_MAX


def test_a_seed_below_minus_one_is_refused_before_anything_is_sent(nodes: ModuleType, emu: Emulator) -> None:
    with pytest.raises(Exception, match=r"The seed -2 is outside 0-2147483647 \(or -1 for random\)"):
        call_node(nodes.ZImageGenerate().generate(**WAVESPEED_NODES["ZImageGenerate"](-2), unique_id="5"))
    with pytest.raises(Exception, match="The seed -2 is outside"):
        qingbo_submit(nodes, seed=-2)
    assert emu.requests == []


# -- prices ----------------------------------------------------------------------------------------------------------


def test_one_function_writes_every_price() -> None:
    assert [usd(0.01), usd(0.012), usd(0.005), usd(0.02), usd(catalog.QINGBO_USD_PER_PICTURE)] == [
        "$0.01", "$0.012", "$0.005", "$0.02", "$0.0106"]
    assert usd(catalog.QINGBO_USD_PER_PICTURE, exact=True) == "$0.010626"
    assert usd(0.04, 4) == "$0.0400" and usd(0.031878, 4) == "$0.0319"


def price_words() -> set[str]:
    prices = {catalog.WAVESPEED_USD_PER_PICTURE, catalog.QINGBO_USD_PER_PICTURE}
    prices |= {m.usd for m in catalog.V3_MODELS.values() if m.usd is not None}
    words = {f"{p:g}" for p in prices} | {usd(p).lstrip("$") for p in prices}
    words |= {str(catalog.QINGBO_QUOTA_PER_PICTURE), f"{catalog.QINGBO_QUOTA_PER_PICTURE:,}",
              str(catalog.QUOTA_PER_USD), f"{catalog.QUOTA_PER_USD:,}"}
    return words


def test_no_price_is_typed_out_in_the_nodes_or_the_command_line() -> None:
    words = price_words()
    assert {"0.01", "0.010626", "0.0106", "0.012", "0.005", "0.02", "5313", "500,000"} <= words
    files = [PACK_DIR / "nodes.py", *sorted((PACK_DIR / "zimage_api" / "cli").glob("*.py"))]
    pattern = re.compile(r"(?<![\w.])(" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
                         + r")(?![\w])")
    found = [f"{path.name}:{n}: {line.strip()}" for path in files
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert found == []


def test_no_limit_or_default_of_the_table_is_typed_out_in_the_node_widgets() -> None:
    source = (PACK_DIR / "nodes.py").read_text(encoding="utf-8")
    for literal in ('"min":', '"max":', '"default":', "SEED_MAX", "COUNT_MAX", "900", "2048", "1536"):
        assert literal not in source, literal
