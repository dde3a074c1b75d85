"""Receipts: the same request queued again is served from disk, so forgetting ComfyUI's cache never pays twice."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
import torch

from tests.comfy_stubs import MUG, call_node
from zimage_api.engine import fingerprint
from zimage_api.results import GenerationResult
from zimage_api.store.sqlite import Store


def generate(nodes, **overrides: Any):
    args = dict(prompt=MUG, negative_prompt="no text", model="Z-Image-Base", api="v1/images", guidance_scale=7.5,
                width=256, height=256, seed=42, count=2)
    args.update(overrides)
    return call_node(nodes.ZImageGenerate().generate(**args))


@pytest.mark.usefixtures("store_backend")
def test_same_inputs_again_send_nothing_and_return_the_same_pixels(emu, nodes) -> None:
    first, _ = generate(nodes)
    assert len(emu.requests_to("POST /v1/images/generations")) == 2
    again, info = generate(nodes)
    assert len(emu.requests_to("POST /v1/images/generations")) == 2
    assert torch.equal(first, again)
    assert "served from the local receipt" in info and "nothing charged" in info
    assert "2 of them from local receipts: no request sent, nothing charged" in nodes._Node.context.hooks.texts[-1][0]


@pytest.mark.usefixtures("store_backend")
def test_a_new_seed_or_a_larger_count_pays_only_for_the_new_pictures(emu, nodes) -> None:
    generate(nodes)
    generate(nodes, count=3)  # seeds 42, 43 are receipts; 44 is new
    assert len(emu.requests_to("POST /v1/images/generations")) == 3
    generate(nodes, seed=7, count=1)
    sent = [r.json["seed"] for r in emu.requests_to("POST /v1/images/generations")]
    assert sorted(sent[:2]) == [42, 43] and sent[2:] == [44, 7]


@pytest.mark.usefixtures("store_backend")
def test_reuse_can_be_switched_off(emu, nodes, monkeypatch) -> None:
    generate(nodes, count=1)
    monkeypatch.setenv("ZIMAGE_REUSE_RESULTS", "0")
    generate(nodes, count=1)
    assert len(emu.requests_to("POST /v1/images/generations")) == 2


@pytest.mark.usefixtures("store_backend")
def test_edit_receipt_matches_only_the_same_reference(emu, nodes) -> None:
    red = torch.zeros(1, 256, 256, 3)
    red[..., 0] = 0.8
    blue = red.flip(-1)
    args = dict(prompt=MUG, negative_prompt="", model="Z-Image-Base", api="v1/images", strength=0.35,
                guidance_scale=6.5, seed=1, count=1)
    call_node(nodes.ZImageEdit().edit(red, **args))
    call_node(nodes.ZImageEdit().edit(red, **args))
    assert len(emu.requests_to("POST /v1/images/edits")) == 1
    call_node(nodes.ZImageEdit().edit(blue, **args))
    assert len(emu.requests_to("POST /v1/images/edits")) == 2


@pytest.mark.usefixtures("store_backend")
def test_submit_again_returns_the_same_task_until_it_fails(emu, nodes, clock) -> None:
    submit = nodes.QingboTaskSubmit()
    args = dict(prompt="a lighthouse at dawn", aspect_ratio="16:9", resolution="1K", prompt_extend=False, seed=5,
                count=2)
    (first,) = call_node(submit.submit(**args))
    (again,) = call_node(submit.submit(**args))
    assert first == again and len(first.splitlines()) == 2
    last_line = nodes._Node.context.hooks.texts[-1][0]
    assert "(2 submitted earlier with the same inputs: no new task, nothing charged)" in last_line
    assert len(emu.requests_to("POST /v1/tasks")) == 2
    # a task that failed is no receipt: the next run submits a new one
    from zimage_api.ledger import Ledger

    Ledger.default().record_status(first.splitlines()[0], "failed")
    (third,) = call_node(submit.submit(**args))
    assert third.splitlines()[1] == first.splitlines()[1] and third.splitlines()[0] != first.splitlines()[0]
    assert len(emu.requests_to("POST /v1/tasks")) == 3


def test_receipt_round_trip_and_damage(tmp_path) -> None:
    receipts = Store(tmp_path)
    key = fingerprint("generate", prompt="x", seed=1)
    assert key == fingerprint("generate", seed=1, prompt="x") and key != fingerprint("generate", prompt="x", seed=2)
    png = _png()
    result = GenerationResult(provider="WaveSpeed", protocol="images", model="Z-Image-Base", images=[png],
                              prompt_sha256="abc", seeds=[1], size=(256, 256))
    receipts.keep_result(key, result)
    loaded = receipts.load_result(key)
    assert loaded is not None and loaded.images == [png] and loaded.size == (256, 256)
    picture = tmp_path / "receipts" / f"{key}_0.png"
    picture.unlink()  # a picture deleted by hand: the request is sent again
    assert receipts.load_result(key) is None
    receipts.keep_result(key, result)
    with sqlite3.connect(receipts.path) as db:  # a damaged receipt is ignored, not an error
        db.execute("UPDATE receipts SET result_json = '{broken' WHERE fingerprint = ?", (key,))
    assert receipts.load_result(key) is None
    receipts.keep_result(key, result)
    picture.write_bytes(b"<!doctype html><html><body>gone</body></html>")  # a kept file that is not a picture
    assert receipts.load_result(key) is None and receipts.receipt(key) is None  # dropped: the next run buys it


def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 20, 30)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.usefixtures("store_backend")
def test_v3_re_queued_after_cancel_collects_the_same_prediction(emu, nodes, clock, monkeypatch) -> None:
    from tests.comfy_stubs import FakeInterrupt

    started = clock()
    # Cancel while it renders.
    monkeypatch.setattr(nodes._Node.context.hooks, "interrupted", lambda: clock() - started > 0.5)
    with pytest.raises(FakeInterrupt):
        generate(nodes, api="v3", count=1)
    assert len(emu.requests_to("POST /api/v3/wavespeed-ai/*")) == 1
    monkeypatch.setattr(nodes._Node.context.hooks, "interrupted", lambda: False)
    image, info = generate(nodes, api="v3", count=1)  # the same inputs: collect, do not pay again
    assert len(emu.requests_to("POST /api/v3/wavespeed-ai/*")) == 1
    prediction = next(iter(emu.tasks))
    assert prediction in info and image.shape[0] == 1


@pytest.mark.usefixtures("store_backend")
def test_a_submit_whose_answer_was_lost_is_not_paid_twice_on_re_queue(emu, nodes) -> None:
    emu.inject("POST /v1/tasks", "reset_after", times=6)  # every try is processed, no answer ever arrives
    submit = nodes.QingboTaskSubmit()
    args = dict(prompt="a lighthouse at dawn", aspect_ratio="16:9", resolution="1K", prompt_extend=False, seed=5,
                count=1)
    with pytest.raises(Exception, match="may have reached Qingbo"):
        call_node(submit.submit(**args))
    (task_id,) = call_node(submit.submit(**args))  # queued again with the same inputs
    assert emu.task_count("qingbo") == 1 and list(emu.tasks) == [task_id]
    keys = {r.headers["idempotency-key"] for r in emu.requests_to("POST /v1/tasks")}
    assert len(keys) == 1


@pytest.mark.usefixtures("store_backend")
def test_receipts_belong_to_the_server_that_answered(emu, nodes, clock, monkeypatch) -> None:
    from zimage_api.emulator import DEMO_KEY, Emulator

    generate(nodes, count=1)
    with Emulator(clock=clock, wavespeed_keys={DEMO_KEY}) as other:
        monkeypatch.setenv("WAVESPEED_BASE_URL", other.url)
        generate(nodes, count=1)
        assert len(other.requests_to("POST /v1/images/generations")) == 1


@pytest.mark.usefixtures("store_backend")
def test_cancel_of_a_poll_with_more_ids_than_workers_cancels_every_queued_task(nodes, monkeypatch) -> None:
    import threading
    import time

    from tests.comfy_stubs import FakeInterrupt
    from zimage_api.emulator import DEMO_KEY, Emulator

    with Emulator(queue_seconds=600.0, qingbo_keys={DEMO_KEY}) as emulator:
        monkeypatch.setenv("QINGBO_API_KEY", DEMO_KEY)
        monkeypatch.setenv("QINGBO_BASE_URL", emulator.url)
        monkeypatch.setattr(nodes._Node.context, "clock", time.monotonic)
        monkeypatch.setattr(nodes._Node.context, "sleep", time.sleep)
        (ids,) = call_node(nodes.QingboTaskSubmit().submit(prompt="a lighthouse", aspect_ratio="1:1",
                                                           resolution="1K", prompt_extend=False, seed=0, count=6))
        timer = threading.Timer(0.3, lambda: setattr(nodes._Node.context.hooks, "flag", True))
        started = time.monotonic()
        timer.start()
        try:
            with pytest.raises(FakeInterrupt):
                call_node(nodes.QingboTaskPoll().poll(ids, timeout=300))
        finally:
            timer.cancel()
        assert time.monotonic() - started < 1.5
        assert [emulator.tasks[t].status for t in ids.splitlines()] == ["cancelled"] * 6
