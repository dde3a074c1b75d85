"""What the command line says about money, exactly: what each paying command paid or served for nothing, and what
Ctrl-C does to a picture already being paid for."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import lines
from tests.conftest import wait_for as _wait_for
from zimage_api.emulator import Emulator

ROOT = Path(__file__).resolve().parent.parent
Result = tuple[int, str, str]
SMALL = ("--width", "256", "--height", "256")



def posts(emu: Emulator, pattern: str = "POST *") -> int:
    """Requests for pictures (the account routes' balance and price requests left out)."""
    return len([r for r in emu.requests_to(pattern) if r in emu.service_requests])


# -- what each command paid -----------------------------------------------------------------------------------------


def test_generate_says_what_it_paid_then_that_the_receipt_served_it_for_nothing(cli, emu, tmp_path):
    argv = ("generate", "a red fox", "--seed", "10", "--count", "2", *SMALL, "--out", str(tmp_path / "o"))
    code, out, err = cli(*argv)
    assert (code, lines(err)) == (0, ["paid about $0.02 for 2 pictures"])
    assert len(lines(out)) == 2
    code, out, err = cli(*argv)
    assert (code, lines(err)) == (0, ["2 pictures served from local receipts, nothing charged"])
    code, out, err = cli("generate", "a red fox", "--seed", "10", "--count", "3", *SMALL, "--out", str(tmp_path / "o"))
    assert (code, lines(err)) == (0, ["paid about $0.01 for 1 picture; 2 served from local receipts, nothing charged"])
    assert posts(emu, "POST /v1/images/generations") == 3
    code, out, err = cli("generate", "a red fox", "--seed", "12", *SMALL, "--out", str(tmp_path / "o"))
    assert (code, lines(err)) == (0, ["served from the local receipt, nothing charged"])
    assert posts(emu, "POST /v1/images/generations") == 3


def test_a_published_v3_price_comes_from_the_catalog(cli, emu, tmp_path):
    from zimage_api.catalog import V3_MODELS

    assert V3_MODELS["wavespeed-ai/z-image/base-lora"].usd == 0.012
    code, out, err = cli("generate", "a kite", "--api", "v3", "--lora", "owner/film-grain:0.8", "--seed", "3",
                         *SMALL, "--out", str(tmp_path))
    assert (code, lines(err)) == (0, ["paid $0.012 for 1 picture"]), err
    code, out, err = cli("generate", "a kite", "--api", "v3", "--lora", "owner/film-grain:0.8", "--seed", "3",
                         "--count", "2", *SMALL, "--out", str(tmp_path))
    assert (code, lines(err)) == (0, ["paid $0.012 for 1 picture; 1 served from local receipts, nothing charged"])


def test_a_v3_prediction_bought_in_an_earlier_run_is_collected_without_charging(cli, emu, tmp_path):
    argv = ("generate", "slow", "--api", "v3", "--seed", "4", *SMALL, "--out", str(tmp_path))
    code, _, err = cli(*argv, "--timeout", "1")
    assert code == 1 and "still running" in err and "paid" not in err
    code, out, err = cli(*argv)
    assert (code, lines(err)) == (0, ["1 picture collected from a prediction paid in an earlier run, nothing charged "
                                      "now"])
    assert posts(emu, "POST /api/v3/wavespeed-ai/*") == 1


def test_turbo_names_the_inputs_it_drops_as_the_node_does(cli, emu, tmp_path):
    code, _, err = cli("generate", "a fox", "--model", "Z-Image-Turbo", "--negative", "blurry", "--seed", "1",
                       *SMALL, "--out", str(tmp_path))
    assert (code, lines(err)) == (0, [
        "note: Z-Image-Turbo is distilled to 8 steps: CFG (guidance_scale) and the negative prompt have no effect.",
        "paid about $0.01 for 1 picture"])
    code, _, err = cli("generate", "a fox", "--model", "Z-Image-Turbo", "--api", "v3", "--negative", "blurry",
                       "--seed", "1", *SMALL, "--out", str(tmp_path))
    assert (code, lines(err)) == (0, [
        "note: Z-Image-Turbo is distilled to 8 steps: CFG (guidance_scale) and the negative prompt have no effect.",
        "note: wavespeed-ai/z-image/turbo takes no negative prompt: the negative prompt was not sent.",
        "paid about $0.01 for 1 picture"])
    [submit] = emu.requests_to("POST /api/v3/wavespeed-ai/*")
    assert "negative_prompt" not in submit.json


def test_submit_says_the_qingbo_price_and_poll_charges_nothing_now(cli, emu, tmp_path):
    code, out, err = cli("submit", "a paper boat", "--seed", "5")
    [task_id] = lines(out)
    assert (code, lines(err)) == (0, ["paid $0.0106 for 1 task (refunded if it fails)"])
    code, out, err = cli("submit", "a paper boat", "--seed", "5", "--count", "2")
    assert (code, lines(err)) == (0, ["paid $0.0106 for 1 task (refunded if it fails); 1 accepted earlier, nothing "
                                      "charged"])
    assert lines(out)[0] == task_id
    code, out, err = cli("submit", "a paper boat", "--seed", "5")
    assert (code, lines(out), lines(err)) == (0, [task_id], ["accepted earlier, nothing charged"])
    code, out, err = cli("poll", task_id, "--out", str(tmp_path))
    assert (code, lines(err)) == (0, ["nothing charged now (paid at submit)"])
    assert len(lines(out)) == 1 and posts(emu, "POST /v1/tasks") == 2
    code, out, err = cli("submit", "a paper boat", "--seed", "20", "--count", "2")
    assert (code, lines(err)) == (0, ["paid $0.0213 for 2 tasks (each refunded if it fails)"])


# -- Ctrl-C while a /v1/images request is being paid for --------------------------------------------------------------


def _generate(out_dir: Path, *argv: str) -> subprocess.Popen:
    argv = argv or ("a kite at dusk", "--seed", "7")
    return subprocess.Popen([sys.executable, "-m", "zimage_api", "generate", *argv, *SMALL, "--out", str(out_dir)],
                            cwd=out_dir.parent, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _ctrl_c_once_sent(process: subprocess.Popen, emu, what: str) -> tuple[str, str]:
    """Ctrl-C once the paid request reached the emulator; the process's stdout and stderr when it has ended."""
    try:
        _wait_for(lambda: posts(emu) == 1, what)
        process.send_signal(signal.SIGINT)
        return process.communicate(timeout=30)
    finally:
        process.kill()


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT to a child process")
def test_first_ctrl_c_lets_the_image_request_finish_and_keeps_its_picture(cli, emu, tmp_path):
    out_dir = tmp_path / "out"
    emu.inject("POST /v1/images/generations", "delay", seconds=1.5)  # still being made at Ctrl-C
    process = _generate(out_dir)
    out, err = _ctrl_c_once_sent(process, emu, "the image request")
    assert process.returncode == 130
    assert lines(err) == [
        "Stopping: the image request already sent is finishing so that its picture is kept (it is paid). Press "
        "Ctrl-C again to abandon it; its cost is then lost.",
        "paid about $0.01 for 1 picture",
        "error: interrupted; the picture of the request let finish is saved (listed above); the same command again "
        "serves it from the local receipt at no cost."]
    [path] = lines(out)
    assert Path(path).read_bytes() == emu.served_images[-1]

    code, out, err = cli("generate", "a kite at dusk", "--seed", "7", *SMALL, "--out", str(out_dir))
    assert (code, lines(out), lines(err)) == (0, [path], ["served from the local receipt, nothing charged"])
    assert posts(emu) == 1  # nothing sent again


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT to a child process")
def test_second_ctrl_c_abandons_the_image_request_and_says_what_that_costs(emu, tmp_path):
    out_dir = tmp_path / "out"
    emu.inject("POST /v1/images/generations", "delay", seconds=3.0)
    process = _generate(out_dir)
    try:
        _wait_for(lambda: posts(emu) == 1, "the image request")
        process.send_signal(signal.SIGINT)
        assert process.stderr is not None
        assert process.stderr.readline().startswith("Stopping: the image request already sent is finishing")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert (process.returncode, out) == (130, "")
    assert lines(err) == [
        "error: interrupted; the image request was abandoned before its answer came: it is probably charged and its "
        "picture is lost (the same command does not send it again by itself: check the dashboard, then "
        "--retry-uncertain pays again)."]
    assert not out_dir.exists() or not any(out_dir.glob("*.png"))


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT to a child process")
def test_first_ctrl_c_lets_a_v3_submit_finish_and_the_same_command_collects_it_for_nothing(cli, emu, tmp_path):
    out_dir = tmp_path / "out"
    emu.inject("POST /api/v3/wavespeed-ai/*", "delay", seconds=1.5)
    process = _generate(out_dir, "a lighthouse", "--api", "v3", "--seed", "9")
    out, err = _ctrl_c_once_sent(process, emu, "the prediction request")
    [task_id] = list(emu.tasks)
    assert (process.returncode, out) == (130, "")
    assert lines(err) == [
        "Stopping: the prediction request already sent is finishing so that its id reaches the ledger (it is paid). "
        "Press Ctrl-C again to abandon it; it may then be charged with no id to collect.",
        f"error: interrupted; not collected yet, still running at the provider and kept in the ledger: {task_id} "
        "(wavespeed). Collect them with `python -m zimage_api tasks resume` (a batch: run the same command again)."]

    code, out, err = cli("generate", "a lighthouse", "--api", "v3", "--seed", "9", *SMALL, "--out", str(out_dir))
    assert (code, lines(err)) == (0, ["1 picture collected from a prediction paid in an earlier run, nothing charged "
                                      "now"])
    assert Path(lines(out)[0]).read_bytes() == emu.tasks[task_id].outputs[0]
    assert posts(emu, "POST /api/v3/wavespeed-ai/*") == 1


@pytest.mark.parametrize("paying, first, abandoned", [
    (["the image request", "the image request"],
     "Stopping: the 2 image requests already sent are finishing so that their pictures are kept (they are paid). "
     "Press Ctrl-C again to abandon them; their cost is then lost.",
     "the 2 image requests were abandoned before their answer came: they are probably charged and their pictures are "
     "lost (the same command does not send them again by itself: check the dashboard, then --retry-uncertain pays "
     "again)"),
    (["the task request"],
     "Stopping: the task request already sent is finishing so that its id reaches the ledger (it is paid). Press "
     "Ctrl-C again to abandon it; it may then be charged with no id to collect.",
     "the task request was abandoned before its answer came: it may have been charged, with no id to collect; check "
     "the provider's dashboard before sending again"),
    ([], None, None),
])
def test_what_each_ctrl_c_says_of_the_requests_being_paid(paying, first, abandoned):
    from zimage_api.cli.runtime import abandoned_text, stopping_line

    assert stopping_line(paying) == first
    if paying:
        assert abandoned_text(paying) == abandoned
