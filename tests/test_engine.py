"""The engine behind every entry point: the same inputs through a node, a CLI command and a batch row send the same
requests, and a second run from any of them sends nothing. Nodes run side by side under one per-provider limit."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.comfy_stubs import call_node
from zimage_api.cli import run
from zimage_api.emulator import DEMO_KEY, Emulator
from zimage_api.emulator.server import ACCOUNT_PATHS
from zimage_api.limits import ProviderLimits

PROMPT = "a lighthouse on a cliff at dusk"
NEGATIVE = "no text"


def _paid(emu: Emulator, since: int = 0) -> list[Any]:
    """The requests that make pictures or tasks (uploads and status reads are free), from request ``since`` on."""
    return [r for r in emu.requests[since:] if r.method == "POST" and "/media/" not in r.path
            and r.path not in ACCOUNT_PATHS]


def _signature(emu: Emulator, since: int = 0) -> list[tuple[Any, ...]]:
    """What a paid request said, in seed order: path, JSON body (an uploaded URL replaced by the upload's bytes'
    hash), form fields, uploaded files' hashes and the Idempotency-Key."""
    upload_hashes = [hashlib.sha256(r.files["file"][1]).hexdigest() for r in emu.requests[since:]
                     if "/media/" in r.path]
    rows = []
    for r in _paid(emu, since):
        body = dict(r.json or {})
        for name in ("image", "mask_image"):
            if name in body:
                body[name] = sorted(set(upload_hashes))  # what was uploaded (a batch row uploads its own copy)
        files = {name: hashlib.sha256(data).hexdigest() for name, (_n, data, _t) in r.files.items()}
        seed = body.get("seed", r.form.get("seed"))
        rows.append((str(seed), r.path, json.dumps(body, sort_keys=True), json.dumps(r.form, sort_keys=True),
                     json.dumps(files, sort_keys=True), r.headers.get("idempotency-key")))
    return sorted(rows)


def _reference(tmp_path: Path) -> Path:
    path = tmp_path / "reference.png"
    Image.new("RGB", (320, 240), (30, 120, 200)).save(path)
    return path


def _mask(tmp_path: Path) -> Path:
    path = tmp_path / "mask.png"
    mask = Image.new("L", (320, 240), 0)
    mask.paste(255, (40, 30, 200, 150))
    mask.save(path)
    return path


def _mask_tensor(path: Path) -> Any:
    import numpy as np
    import torch

    return torch.from_numpy(np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0)[None]


def _image_tensor(path: Path) -> Any:
    from zimage_api.images import bytes_to_tensor

    image, _mask = bytes_to_tensor([path.read_bytes()])
    return image


# One row per kind: the node's inputs, the CLI's arguments and the batch rows (one per picture) for the same order.
CASES: dict[str, dict[str, Any]] = {
    "generate v1/images": {
        "node": ("ZImageGenerate", dict(prompt=PROMPT, negative_prompt=NEGATIVE, model="Z-Image-Base",
                                        api="v1/images", guidance_scale=7.5, width=256, height=256, seed=7, count=2)),
        "cli": ["generate", PROMPT, "--negative", NEGATIVE, "--cfg", "7.5", "--width", "256", "--height", "256",
                "--seed", "7", "--count", "2"],
        "rows": [{"prompt": PROMPT, "negative_prompt": NEGATIVE, "cfg": 7.5, "size": "256x256", "seed": s}
                 for s in (7, 8)],
    },
    "generate v3": {
        "node": ("ZImageGenerate", dict(prompt=PROMPT, negative_prompt=NEGATIVE, model="Z-Image-Base", api="v3",
                                        guidance_scale=7.5, width=256, height=256, seed=7, count=2)),
        "cli": ["generate", PROMPT, "--api", "v3", "--negative", NEGATIVE, "--width", "256", "--height", "256",
                "--seed", "7", "--count", "2"],
        "rows": [{"prompt": PROMPT, "provider": "wavespeed-v3", "negative_prompt": NEGATIVE, "size": "256x256",
                  "seed": s} for s in (7, 8)],
    },
    "edit v1/images": {
        "node": ("ZImageEdit", dict(prompt=PROMPT, negative_prompt=NEGATIVE, model="Z-Image-Base",
                                    api="v1/images", strength=0.4, guidance_scale=6.5, seed=3, count=2)),
        "cli": ["edit", "{reference}", PROMPT, "--negative", NEGATIVE, "--strength", "0.4", "--seed", "3",
                "--count", "2"],
        "rows": [{"prompt": PROMPT, "reference": "{reference}", "negative_prompt": NEGATIVE, "strength": 0.4,
                  "seed": s} for s in (3, 4)],
    },
    "edit v3": {
        "node": ("ZImageEdit", dict(prompt=PROMPT, negative_prompt=NEGATIVE, model="Z-Image-Turbo", api="v3",
                                    strength=0.4, guidance_scale=6.5, seed=3, count=2)),
        "cli": ["edit", "{reference}", PROMPT, "--api", "v3", "--model", "Z-Image-Turbo", "--negative", NEGATIVE,
                "--strength", "0.4", "--seed", "3", "--count", "2"],
        "rows": [{"prompt": PROMPT, "provider": "wavespeed-v3", "model": "Z-Image-Turbo", "reference": "{reference}",
                  "negative_prompt": NEGATIVE, "strength": 0.4, "seed": s} for s in (3, 4)],
    },
    "generate v3 turbo-lora": {
        "node": ("ZImageGenerate", dict(prompt=PROMPT, negative_prompt=NEGATIVE, model="Z-Image-Turbo", api="v3",
                                        guidance_scale=7.5, width=256, height=256, seed=7, count=2,
                                        loras=[{"path": "owner/film-grain", "scale": 0.8},
                                               {"path": "owner/ink", "scale": 1.0}])),
        "cli": ["generate", PROMPT, "--model", "Z-Image-Turbo", "--negative", NEGATIVE, "--width", "256",
                "--height", "256", "--seed", "7", "--count", "2", "--lora", "owner/film-grain:0.8", "--lora",
                "owner/ink"],
        "rows": [{"prompt": PROMPT, "model": "Z-Image-Turbo", "negative_prompt": NEGATIVE, "size": "256x256",
                  "loras": "owner/film-grain:0.8;owner/ink", "seed": s} for s in (7, 8)],
    },
    "edit v3 base-lora": {
        "node": ("ZImageEdit", dict(prompt=PROMPT, negative_prompt=NEGATIVE, model="Z-Image-Base", api="v3",
                                    strength=0.4, guidance_scale=6.5, seed=3, count=2,
                                    loras=[{"path": "https://example.test/ink.safetensors", "scale": 2.0}])),
        "cli": ["edit", "{reference}", PROMPT, "--negative", NEGATIVE, "--strength", "0.4", "--seed", "3",
                "--count", "2", "--lora", "https://example.test/ink.safetensors:2"],
        "rows": [{"prompt": PROMPT, "reference": "{reference}", "negative_prompt": NEGATIVE, "strength": 0.4,
                  "loras": [{"path": "https://example.test/ink.safetensors", "scale": 2}], "seed": s}
                 for s in (3, 4)],
    },
    "inpaint": {
        "node": ("ZImageInpaint", dict(prompt=PROMPT, seed=3, count=2)),
        "cli": ["edit", "{reference}", PROMPT, "--mask", "{mask}", "--seed", "3", "--count", "2"],
        "rows": [{"prompt": PROMPT, "reference": "{reference}", "mask": "{mask}", "seed": s} for s in (3, 4)],
    },
    "controlnet": {
        "node": ("ZImageControlNet", dict(prompt=PROMPT, mode="canny", strength=0.8, width=0, height=0, seed=3,
                                          count=2)),
        "cli": ["generate", PROMPT, "--control", "{reference}", "--mode", "canny", "--strength", "0.8", "--seed",
                "3", "--count", "2"],
        "rows": [{"prompt": PROMPT, "control": "{reference}", "mode": "canny", "strength": 0.8, "seed": s}
                 for s in (3, 4)],
    },
    "qingbo submit": {
        "node": ("QingboTaskSubmit", dict(prompt=PROMPT, aspect_ratio="16:9", resolution="1K",
                                          prompt_extend=False, seed=11, count=2)),
        "cli": ["submit", PROMPT, "--aspect-ratio", "16:9", "--seed", "11", "--count", "2"],
        "rows": None,  # a batch row collects its task too; its submit is compared below through count 1
    },
}


def _fill(value: Any, reference: Path) -> Any:
    if isinstance(value, str):
        return value.replace("{reference}", str(reference)).replace("{mask}", str(reference.parent / "mask.png"))
    if isinstance(value, list):
        return [_fill(v, reference) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, reference) for k, v in value.items()}
    return value


@pytest.fixture
def entry_points(nodes, clock, capsys, tmp_path, monkeypatch) -> dict[str, Callable[[dict[str, Any]], None]]:
    """Run one case through each entry point, each in the data folder in force."""
    reference = _reference(tmp_path)
    mask = _mask(tmp_path)

    def node(case: dict[str, Any]) -> None:
        name, inputs = case["node"]
        if name == "ZImageEdit":
            inputs = dict(inputs, image=_image_tensor(reference))
        elif name == "ZImageInpaint":
            inputs = dict(inputs, image=_image_tensor(reference), mask=_mask_tensor(mask))
        elif name == "ZImageControlNet":
            inputs = dict(inputs, control_image=_image_tensor(reference))
        cls = nodes.NODE_CLASS_MAPPINGS[name]
        call_node(getattr(cls(), cls.FUNCTION)(**inputs, unique_id="1"))

    def cli(case: dict[str, Any]) -> None:
        argv = _fill(case["cli"], reference)
        if argv[0] != "submit":
            argv = [*argv, "--out", str(tmp_path / "cli-out")]
        code = run(argv, sleep=clock.sleep, clock=clock)
        assert code == 0, capsys.readouterr().err

    def batch(case: dict[str, Any]) -> None:
        jobs = tmp_path / "jobs.jsonl"
        jobs.write_text("".join(json.dumps(row) + "\n" for row in _fill(case["rows"], reference)), encoding="utf-8")
        code = run(["batch", str(jobs), "--out", str(tmp_path / "batch-out"), "--no-progress"], sleep=clock.sleep,
                   clock=clock)
        assert code == 0, capsys.readouterr().err

    return {"node": node, "cli": cli, "batch": batch}


@pytest.mark.parametrize("kind", list(CASES))
def test_the_same_inputs_send_the_same_requests_from_every_entry_point(kind, entry_points, emu, tmp_path,
                                                                      monkeypatch) -> None:
    case = CASES[kind]
    names = [name for name in ("node", "cli", "batch") if name != "batch" or case["rows"] is not None]
    signatures = {}
    for name in names:
        monkeypatch.setenv("ZIMAGE_DATA_DIR", str(tmp_path / f"data-{name}"))
        since = len(emu.requests)
        entry_points[name](case)
        signatures[name] = _signature(emu, since)
        assert len(signatures[name]) == 2, (name, signatures[name])  # one paid request per picture
    first = signatures[names[0]]
    for name in names[1:]:
        assert signatures[name] == first, f"{name} sent other requests than {names[0]}"
    # A second run from any entry point, in a data folder where another one paid, sends nothing paid.
    for payer in names:
        for again in names:
            monkeypatch.setenv("ZIMAGE_DATA_DIR", str(tmp_path / f"data-{payer}"))
            since = len(emu.requests)
            entry_points[again](case)
            assert _paid(emu, since) == [], f"{again} paid again after {payer}"


def test_a_qingbo_batch_row_submits_what_the_node_submits(entry_points, nodes, emu, clock, tmp_path,
                                                        monkeypatch) -> None:
    node_case = {"node": ("QingboTaskSubmit", dict(prompt=PROMPT, aspect_ratio="4:3", resolution="2K",
                                                   prompt_extend=True, seed=21, count=1))}
    row_case = {"rows": [{"prompt": PROMPT, "provider": "qingbo", "aspect_ratio": "4:3", "resolution": "2K",
                          "prompt_extend": True, "seed": 21}]}
    monkeypatch.setenv("ZIMAGE_DATA_DIR", str(tmp_path / "data-node"))
    entry_points["node"](node_case)
    node_sig = _signature(emu)
    monkeypatch.setenv("ZIMAGE_DATA_DIR", str(tmp_path / "data-batch"))
    since = len(emu.requests)
    entry_points["batch"](row_case)
    assert _signature(emu, since) == node_sig and len(node_sig) == 1
    monkeypatch.setenv("ZIMAGE_DATA_DIR", str(tmp_path / "data-node"))
    since = len(emu.requests)
    entry_points["batch"](row_case)  # the node's task is collected, not bought again
    assert _paid(emu, since) == []


# -- side by side ---------------------------------------------------------------------------------------------------


def _real_emulator(**options: Any) -> Emulator:
    emulator = Emulator(picture_scale=0.25, wavespeed_keys={DEMO_KEY}, qingbo_keys={DEMO_KEY}, **options)
    emulator.start()
    return emulator


async def _execute_like_comfyui(calls: list[Callable[[], Any]]) -> list[Any]:
    """Await every node's coroutine as ComfyUI's executor does: each as its own task, side by side."""
    tasks = [asyncio.ensure_future(call()) for call in calls]
    return await asyncio.gather(*tasks)


def test_independent_nodes_run_side_by_side(pack, monkeypatch) -> None:
    from tests.comfy_stubs import pack_nodes

    nodes = pack_nodes()
    emulator = _real_emulator(sync_latency=0.6)
    try:
        monkeypatch.setenv("WAVESPEED_API_KEY", DEMO_KEY)
        monkeypatch.setenv("WAVESPEED_BASE_URL", emulator.url)
        monkeypatch.setenv("ZIMAGE_WAVESPEED_CONCURRENCY", "3")
        node = nodes.ZImageGenerate()
        calls = [lambda s=seed: node.generate(prompt=PROMPT, negative_prompt="", model="Z-Image-Base",
                                              api="v1/images", guidance_scale=7.5, width=256, height=256, seed=s,
                                              count=1, unique_id=str(s)) for seed in (1, 2, 3)]
        outputs = asyncio.run(_execute_like_comfyui(calls))
        assert [tuple(image.shape) for image, _info in outputs] == [(1, 256, 256, 3)] * 3
        assert emulator.peak_concurrency == 3  # all three requests were open at once
    finally:
        emulator.stop()


def test_one_limit_per_provider_holds_across_nodes(pack, monkeypatch) -> None:
    from tests.comfy_stubs import pack_nodes

    nodes = pack_nodes()
    emulator = _real_emulator(sync_latency=0.2, max_concurrent=2)
    try:
        monkeypatch.setenv("WAVESPEED_API_KEY", DEMO_KEY)
        monkeypatch.setenv("WAVESPEED_BASE_URL", emulator.url)
        monkeypatch.delenv("ZIMAGE_WAVESPEED_CONCURRENCY", raising=False)  # the default: 2, WaveSpeed's own
        node = nodes.ZImageGenerate()
        calls = [lambda s=seed: node.generate(prompt=PROMPT, negative_prompt="", model="Z-Image-Base",
                                              api="v1/images", guidance_scale=7.5, width=256, height=256, seed=s,
                                              count=2, unique_id=str(s)) for seed in (10, 20, 30)]
        outputs = asyncio.run(_execute_like_comfyui(calls))
        assert [tuple(image.shape) for image, _info in outputs] == [(2, 256, 256, 3)] * 3
        assert emulator.peak_concurrency <= 2
        assert all(r.status == 200 for r in emulator.requests_to("POST /v1/images/generations"))  # no 429
        assert len(emulator.requests_to("POST /v1/images/generations")) == 6
    finally:
        emulator.stop()


def test_a_unit_waiting_for_a_slot_says_so_and_cancel_ends_the_wait() -> None:
    limits = ProviderLimits({"wavespeed": 1})
    told: list[tuple[int, int]] = []
    cancel = threading.Event()
    with limits.slot("wavespeed"):
        waiter = threading.Thread(target=lambda: pytest.raises(InterruptedError, lambda: limits.slot(
            "wavespeed", cancelled=cancel.is_set, on_wait=lambda n, k: told.append((n, k)),
            poll_seconds=0.01).__enter__()))
        waiter.start()
        deadline = time.monotonic() + 5
        while not told and time.monotonic() < deadline:
            time.sleep(0.01)
        cancel.set()
        waiter.join(5)
    assert told == [(1, 1)] and not waiter.is_alive()
    assert limits.in_flight("wavespeed") == 0


def test_nodes_are_coroutines_where_comfyui_awaits_them_and_plain_functions_where_it_does_not(
        tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.comfy_stubs import PACK_DIR, PACK_MODULE

    def kind(execution_module: str) -> str:
        code = (f"import sys, types\n{execution_module}\n"
                "import importlib.util, inspect\n"
                f"spec = importlib.util.spec_from_file_location({PACK_MODULE!r}, "
                f"{str(PACK_DIR / '__init__.py')!r}, submodule_search_locations=[{str(PACK_DIR)!r}])\n"
                "m = importlib.util.module_from_spec(spec); sys.modules[spec.name] = m; spec.loader.exec_module(m)\n"
                "cls = m.NODE_CLASS_MAPPINGS['ZImageGenerate']\n"
                "print('async' if inspect.iscoroutinefunction(getattr(cls, cls.FUNCTION)) else 'sync')\n")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert kind("") == "async"  # outside ComfyUI
    assert kind("sys.modules['execution'] = types.SimpleNamespace(_async_map_node_over_list=object())") == "async"
    assert kind("sys.modules['execution'] = types.SimpleNamespace()") == "sync"  # an executor that cannot await
