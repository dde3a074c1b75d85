"""Receipts: the same request queued again is served from disk, so forgetting ComfyUI's cache never pays twice."""

from __future__ import annotations

from typing import Any

import torch

from tests.comfy_stubs import MUG
from zimage_api.receipts import Receipts, fingerprint
from zimage_api.results import GenerationResult


def generate(nodes, **overrides: Any):
    args = dict(prompt=MUG, negative_prompt="no text", model="Z-Image-Base", api="v1/images", guidance_scale=7.5,
                width=256, height=256, seed=42, count=2)
    args.update(overrides)
    return nodes.ZImageGenerate().generate(**args)


def test_same_inputs_again_send_nothing_and_return_the_same_pixels(emu, nodes) -> None:
    first, _ = generate(nodes)
    assert len(emu.requests_to("POST /v1/images/generations")) == 2
    again, info = generate(nodes)
    assert len(emu.requests_to("POST /v1/images/generations")) == 2
    assert torch.equal(first, again)
    assert "served from the local receipt" in info and "nothing charged" in info
    assert "2 of them from local receipts: no request sent, nothing charged" in nodes.hooks.texts[-1][0]


def test_a_new_seed_or_a_larger_count_pays_only_for_the_new_pictures(emu, nodes) -> None:
    generate(nodes)
    generate(nodes, count=3)  # seeds 42, 43 are receipts; 44 is new
    assert len(emu.requests_to("POST /v1/images/generations")) == 3
    generate(nodes, seed=7, count=1)
    sent = [r.json["seed"] for r in emu.requests_to("POST /v1/images/generations")]
    assert sorted(sent[:2]) == [42, 43] and sent[2:] == [44, 7]


def test_reuse_can_be_switched_off(emu, nodes, monkeypatch) -> None:
    generate(nodes, count=1)
    monkeypatch.setenv("ZIMAGE_REUSE_RESULTS", "0")
    generate(nodes, count=1)
    assert len(emu.requests_to("POST /v1/images/generations")) == 2


def test_edit_receipt_matches_only_the_same_reference(emu, nodes) -> None:
    red = torch.zeros(1, 256, 256, 3)
    red[..., 0] = 0.8
    blue = red.flip(-1)
    args = dict(prompt=MUG, negative_prompt="", model="Z-Image-Base", api="v1/images", strength=0.35,
                guidance_scale=6.5, seed=1, count=1)
    nodes.ZImageEdit().edit(red, **args)
    nodes.ZImageEdit().edit(red, **args)
    assert len(emu.requests_to("POST /v1/images/edits")) == 1
    nodes.ZImageEdit().edit(blue, **args)
    assert len(emu.requests_to("POST /v1/images/edits")) == 2


def test_submit_again_returns_the_same_task_until_it_fails(emu, nodes, clock) -> None:
    submit = nodes.QingboTaskSubmit()
    args = dict(prompt="a lighthouse at dawn", aspect_ratio="16:9", resolution="1K", prompt_extend=False, seed=5,
                count=2)
    (first,) = submit.submit(**args)
    (again,) = submit.submit(**args)
    assert first == again and len(first.splitlines()) == 2
    assert "(2 submitted earlier with the same inputs: no new task, nothing charged)" in nodes.hooks.texts[-1][0]
    assert len(emu.requests_to("POST /v1/tasks")) == 2
    # a task that failed is no receipt: the next run submits a new one
    from zimage_api.ledger import Ledger

    Ledger.default().record_status(first.splitlines()[0], "failed")
    (third,) = submit.submit(**args)
    assert third.splitlines()[1] == first.splitlines()[1] and third.splitlines()[0] != first.splitlines()[0]
    assert len(emu.requests_to("POST /v1/tasks")) == 3


def test_receipt_round_trip_and_damage(tmp_path) -> None:
    receipts = Receipts(tmp_path)
    key = fingerprint("generate", prompt="x", seed=1)
    assert key == fingerprint("generate", seed=1, prompt="x") and key != fingerprint("generate", prompt="x", seed=2)
    result = GenerationResult(provider="WaveSpeed", protocol="images", model="Z-Image-Base", images=[b"\x89PNG..."],
                              prompt_sha256="abc", seeds=[1], size=(256, 256))
    receipts.save(key, result)
    loaded = receipts.load(key)
    assert loaded is not None and loaded.images == [b"\x89PNG..."] and loaded.size == (256, 256)
    (tmp_path / f"{key}.json").write_text("{broken", encoding="utf-8")
    assert receipts.load(key) is None
