"""Claims: runs with equal inputs pay once, side by side in threads, in processes, a node beside the command line,
and a run killed between its paid request and the answer is recovered by the next one without paying twice."""

from __future__ import annotations

import io
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import numpy as np
import pytest
import requests
from PIL import Image

from tests.comfy_stubs import call_node
from tests.conftest import lines as _lines
from tests.conftest import serving
from tests.conftest import wait_for as _wait_for
from zimage_api.cli import run
from zimage_api.clients import Clients
from zimage_api.emulator import DEMO_KEY, Emulator
from zimage_api.engine import Engine
from zimage_api.orders import QingboTasks, TextToImage
from zimage_api.store import LEASE_ENV, Store, StoreError, open_store

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a lighthouse on a cliff at dusk"
V1_POST = "POST /v1/images/generations"
V3_POST = "POST /api/v3/wavespeed-ai/*"  # the paid submits (the history is POST /api/v3/predictions, free)
QINGBO_POST = "POST /v1/tasks"

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="runs the command line in child processes"),
              pytest.mark.usefixtures("store_backend")]


# -- the store's claim, one call at a time ----------------------------------------------------------------------------


@pytest.fixture
def store(isolated_env: Path) -> Store:
    return open_store(isolated_env)


def test_a_free_fingerprint_is_claimed_and_a_live_claim_is_held(store: Store) -> None:
    first = store.claim("k", "A", lease=30, now=1000.0)
    assert first.kind == "claimed" and first.previous is None and first.receipt is None
    claim = store.claim_of("k")
    assert claim is not None and (claim.owner, claim.state, claim.claimed_at, claim.lease_until) == \
        ("A", "claimed", 1000.0, 1030.0)
    held = store.claim("k", "B", lease=30, now=1029.0)
    assert held.kind == "held" and held.previous is not None and held.previous.owner == "A"
    assert store.claim_of("k").owner == "A"  # type: ignore[union-attr]
    again = store.claim("k", "A", lease=30, now=1029.0)  # its own claim: renewed, still its own
    assert again.kind == "claimed" and store.claim_of("k").lease_until == 1059.0  # type: ignore[union-attr]


def test_an_expired_claim_is_taken_over_and_previous_is_set_only_after_sending(store: Store) -> None:
    store.claim("deciding", "A", lease=10, now=1000.0)
    taken = store.claim("deciding", "B", lease=10, now=1010.0)  # lease_until <= now: expired
    assert taken.kind == "claimed" and taken.previous is None  # A had sent nothing: B simply pays
    assert store.claim_of("deciding").owner == "B"  # type: ignore[union-attr]

    store.claim("sent", "A", lease=10, now=1000.0)
    store.mark_sending("sent", "A", detail={"what": "the image request"}, now=1001.0)
    sending = store.claim_of("sent")
    assert sending is not None and sending.state == "sending" and sending.sending_at == 1001.0
    assert store.claim("sent", "B", lease=10, now=1005.0).kind == "held"
    taken = store.claim("sent", "B", lease=10, now=sending.lease_until)
    assert taken.kind == "claimed" and taken.previous is not None
    assert (taken.previous.owner, taken.previous.state, taken.previous.sending_at) == ("A", "sending", 1001.0)
    assert taken.previous.detail == {"what": "the image request"}
    now = store.claim_of("sent")
    assert now is not None and (now.owner, now.state, now.sending_at, now.detail) == ("B", "claimed", None, {})


def test_a_receipt_is_served_instead_of_a_claim(store: Store) -> None:
    store.save_result("kept", {"paths": []})
    assert store.claim("kept", "A", now=1000.0).kind == "receipt"
    assert store.claim_of("kept") is None  # serving a receipt takes no claim

    store.save_task("task", "t-1")
    outcome = store.claim("task", "A", now=1000.0)
    assert outcome.kind == "receipt" and outcome.receipt is not None and outcome.receipt.task_id == "t-1"

    store.save_task("failed", "t-2")
    store.record_status("t-2", "failed")
    assert store.claim("failed", "A", now=1000.0).kind == "claimed"  # a failed task gives no picture: pay again


def test_an_uncertain_claim_stays_uncertain_unless_retried(store: Store) -> None:
    store.claim("k", "A", lease=10, now=1000.0)
    store.mark_sending("k", "A", now=1001.0)
    store.mark_uncertain("k", "A", {"what": "the image request"})
    for owner, now in (("B", 1002.0), ("C", 99999.0), ("A", 1002.0)):
        outcome = store.claim("k", owner, lease=10, now=now)
        assert outcome.kind == "uncertain" or owner == "A"
    assert [c.fingerprint for c in store.uncertain_claims()] == ["k"]
    assert store.renew(["k"], "A", lease=60) == 0  # an uncertain claim is nobody's to renew


def test_retrying_an_uncertain_claim_pays_without_recovering(store: Store) -> None:
    """``retry_uncertain`` is the artist's choice to pay again: nothing is left to recover, so ``previous`` (which
    makes the engine recover instead of paying) is set only when the claim taken over was ``sending``."""
    store.claim("k", "A", lease=10, now=1000.0)
    store.mark_sending("k", "A", now=1001.0)
    store.mark_uncertain("k", "A", {"what": "the image request"})
    outcome = store.claim("k", "B", lease=10, now=1002.0, retry_uncertain=True)
    assert outcome.kind == "claimed"
    assert outcome.previous is None, f"previous is {outcome.previous}"


def test_renew_extends_only_the_owners_live_claims(store: Store) -> None:
    store.claim("a", "A", lease=1, now=0.0)  # long expired by the wall clock
    store.claim("b", "A", lease=1, now=0.0)
    store.claim("c", "X", lease=1, now=0.0)
    assert store.renew(["a", "b", "c", "absent"], "A", lease=600) == 2
    assert store.renew([], "A") == 0
    assert store.claim_of("a").lease_until > time.time() + 500  # type: ignore[union-attr]
    assert store.claim("a", "B").kind == "held"  # renewed: alive again
    assert store.claim("c", "B").kind == "claimed"  # X's was not renewed by A


def test_release_drops_only_the_owners_claim_and_expire_keeps_its_state(store: Store) -> None:
    store.claim("k", "A", lease=30, now=1000.0)
    store.release("k", "B")
    assert store.claim_of("k") is not None
    store.release("k", "A")
    assert store.claim_of("k") is None

    store.claim("k", "A", lease=30, now=1000.0)
    store.mark_sending("k", "A", now=1001.0)
    store.expire("k", "B")
    assert store.claim_of("k").lease_until > 1001.0  # type: ignore[union-attr]
    store.expire("k", "A")
    claim = store.claim_of("k")
    assert claim is not None and claim.state == "sending" and claim.lease_until == 0
    taken = store.claim("k", "B", lease=30, now=1002.0)
    assert taken.kind == "claimed" and taken.previous is not None and taken.previous.state == "sending"


def test_mark_sending_on_a_lost_claim_raises_and_sends_nothing(store: Store) -> None:
    store.claim("k", "A", lease=10, now=1000.0)
    store.claim("k", "B", lease=10, now=1010.0)  # A was paused past its lease
    with pytest.raises(StoreError, match="taken over by another run") as caught:
        store.mark_sending("k", "A", now=1011.0)
    assert "nothing was sent" in str(caught.value)
    assert store.claim_of("k").state == "claimed"  # type: ignore[union-attr]  # B's claim untouched
    store.release("k", "B")
    with pytest.raises(StoreError):
        store.mark_sending("k", "B", now=1012.0)  # released: no claim to send under


# -- threads ----------------------------------------------------------------------------------------------------------


def _engine(clock: Any) -> Engine:
    return Engine(Clients(store=open_store()), clock=clock, sleep=clock.sleep)


def _in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    results: list[Any] = [None] * count
    start = threading.Barrier(count)

    def one(index: int) -> None:
        start.wait()
        try:
            results[index] = work(index)
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            results[index] = err

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


@pytest.mark.parametrize("api", ["v1/images", "v3"])
def test_engines_in_threads_with_one_order_pay_once(emu: Emulator, clock: Any, api: str) -> None:
    emu.sync_latency = 0.3  # the v1/images answer takes a while: the others find the claim held
    order = TextToImage(prompt=PROMPT, api=api, width=256, height=256, seed=11)
    results = _in_threads(4, lambda _i: _engine(clock).pictures(order))
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    pictures = {outcome.value.images[0] for outcomes in results for outcome in outcomes}
    assert len(emu.requests_to(V1_POST if api == "v1/images" else V3_POST)) == 1
    assert len(pictures) == 1


def test_one_engine_shared_by_threads_pays_once(emu: Emulator, clock: Any) -> None:
    """A node's engine running the same order from two threads (one owner) must not pay twice either."""
    emu.sync_latency = 0.3
    engine = _engine(clock)
    order = TextToImage(prompt=PROMPT, width=256, height=256, seed=12)
    results = _in_threads(3, lambda _i: engine.pictures(order))
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    assert len(emu.requests_to(V1_POST)) == 1


def test_qingbo_submits_in_threads_pay_once(emu: Emulator, clock: Any) -> None:
    emu.inject(QINGBO_POST, "delay", seconds=0.3)
    order = QingboTasks(prompt=PROMPT, seed=7)
    results = _in_threads(3, lambda _i: _engine(clock).submit(order))
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    assert {outcomes[0].value.task_id for outcomes in results} == set(emu.tasks)
    assert len(emu.requests_to(QINGBO_POST)) == 1 and emu.task_count("qingbo") == 1


# -- processes: the command line in child processes against one emulator in real time --------------------------------


@pytest.fixture
def live(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """An emulator on the wall clock (child processes poll it in real time), the environment pointed at it."""
    yield from serving(Emulator(queue_seconds=0.0, process_seconds=0.2, picture_scale=0.25,
                                wavespeed_keys={DEMO_KEY}, qingbo_keys={DEMO_KEY}), monkeypatch)


def _spawn(*argv: str, cwd: Path, **env: str) -> subprocess.Popen[str]:
    if os.environ.get("ZIMAGE_STORE_URL"):  # machines of a farm: one shared store, a data folder each
        env = {"ZIMAGE_DATA_DIR": str(cwd / f"machine-{next(_MACHINES)}"), **env}
    return subprocess.Popen([sys.executable, "-m", "zimage_api", *argv], cwd=cwd,
                            env=dict(os.environ, PYTHONPATH=str(ROOT), **env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


_MACHINES = itertools.count(1)


def _finish(process: subprocess.Popen[str], seconds: float = 30) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=seconds)
    finally:
        process.kill()
    return process.returncode, out, err




def _here(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The command line in this process, in real time (as a second run of the same command)."""
    code = run(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


GENERATE = ("generate", PROMPT, "--width", "256", "--height", "256", "--seed", "21")


@pytest.mark.parametrize("api, paid", [("v1/images", V1_POST), ("v3", V3_POST)])
def test_two_processes_with_equal_inputs_pay_once(live: Emulator, tmp_path: Path, api: str, paid: str) -> None:
    live.inject(paid, "delay", seconds=1.5, times=2)  # the first request is still under way when the other claims
    runs = [_spawn(*GENERATE, "--api", api, "--out", str(tmp_path / f"out{i}"), cwd=tmp_path) for i in range(2)]
    done = [_finish(process) for process in runs]
    for code, _out, err in done:
        assert code == 0, err
    assert len(live.requests_to(paid)) == 1
    pictures = [Path(_lines(out)[0]).read_bytes() for _code, out, _err in done]
    assert pictures[0] == pictures[1]
    assert pictures[0] in live.served_images or any(pictures[0] == t.outputs[0] for t in live.tasks.values())


def test_two_processes_submitting_equal_qingbo_tasks_pay_once(live: Emulator, tmp_path: Path) -> None:
    live.inject(QINGBO_POST, "delay", seconds=1.5, times=2)
    runs = [_spawn("submit", PROMPT, "--seed", "4", cwd=tmp_path) for _ in range(2)]
    done = [_finish(process) for process in runs]
    for code, _out, err in done:
        assert code == 0, err
    assert len(live.requests_to(QINGBO_POST)) == 1 and live.task_count("qingbo") == 1
    assert [_lines(out) for _code, out, _err in done] == [list(live.tasks)] * 2


def _decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255.0


def test_a_node_beside_a_command_line_run_waits_and_gets_its_picture(nodes: ModuleType, live: Emulator,
                                                                     tmp_path: Path) -> None:
    live.inject(V1_POST, "delay", seconds=1.0, times=2)
    process = _spawn(*GENERATE, "--api", "v1/images", "--out", str(tmp_path / "out"), cwd=tmp_path)
    try:
        _wait_for(lambda: len(live.requests_to(V1_POST)) == 1, "the command line's request")
        image, _info = cast(Any, call_node(nodes.ZImageGenerate().generate(
            prompt=PROMPT, negative_prompt="", model="Z-Image-Base", api="v1/images", guidance_scale=7.5,
            width=256, height=256, seed=21, count=1, unique_id="9")))
    finally:
        code, out, err = _finish(process)
    assert code == 0, err
    assert len(live.requests_to(V1_POST)) == 1  # the node paid nothing of its own
    text = nodes._Node.context.hooks.all_text()
    assert "waiting for another run with the same inputs" in text
    picture = Path(_lines(out)[0]).read_bytes()
    np.testing.assert_allclose(image[0].numpy(), _decoded(picture), atol=1e-6)


def _beside_a_slow_run(live: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                       seconds: float) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
    """A child run whose paid request takes ``seconds``, and the same command run here while it is under way: the
    child's and this run's (exit code, stdout, stderr)."""
    live.inject(V1_POST, "delay", seconds=seconds, times=2)
    process = _spawn(*GENERATE, "--out", str(tmp_path / "first"), cwd=tmp_path)
    try:
        _wait_for(lambda: len(live.requests_to(V1_POST)) == 1, "the first run's request")
        here = _here(capsys, *GENERATE, "--out", str(tmp_path / "second"))
    finally:
        first = _finish(process)
    return first, here


def test_a_command_line_run_beside_a_slow_one_waits_and_pays_nothing(live: Emulator, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    first, (code, out, err) = _beside_a_slow_run(live, tmp_path, capsys, 1.5)
    assert first[0] == 0 and code == 0, (first[2], err)
    assert len(live.requests_to(V1_POST)) == 1
    assert Path(_lines(out)[0]).read_bytes() == Path(_lines(first[1])[0]).read_bytes()


def test_a_waiter_whose_timeout_ends_first_says_so_and_sends_nothing(live: Emulator, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    live.inject(V1_POST, "delay", seconds=4.0, times=2)
    process = _spawn(*GENERATE, "--out", str(tmp_path / "first"), cwd=tmp_path)
    try:
        _wait_for(lambda: len(live.requests_to(V1_POST)) == 1, "the first run's request")
        code, out, err = _here(capsys, *GENERATE, "--timeout", "1", "--out", str(tmp_path / "second"))
    finally:
        process.send_signal(signal.SIGKILL)
        _finish(process)
    assert code == 1 and out == ""
    assert "Another run with the same inputs has been paying for this picture since" in err
    assert "had not finished within the timeout (1 s)" in err and "Nothing was sent twice" in err
    assert len(live.requests_to(V1_POST)) == 1


# -- a run killed between its paid request and the answer --------------------------------------------------------------


def _killed_while_sending(live: Emulator, tmp_path: Path, paid: str, *argv: str) -> None:
    """Run ``argv`` in a child process, SIGKILL it once the emulator has its paid request, and wait until the
    emulator has processed that request (its answer goes nowhere)."""
    live.inject(paid, "delay", seconds=1.0)
    tasks = len(live.tasks)
    process = _spawn(*argv, cwd=tmp_path)
    try:
        _wait_for(lambda: len(live.requests_to(paid)) == 1, "the paid request")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        _finish(process)
    if paid != V1_POST:
        _wait_for(lambda: len(live.tasks) == tasks + 1, "the emulator to process the request")
    else:
        _wait_for(lambda: len(live.served_images) == 1, "the emulator to draw the picture")


def _generate_killed_while_sending(live: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   api: str) -> tuple[str, ...]:
    """A generate on ``api`` killed while its paid request is being answered, with a 1 s lease; its command line."""
    monkeypatch.setenv(LEASE_ENV, "1")
    argv = (*GENERATE, "--api", api, "--out", str(tmp_path / "out"))
    _killed_while_sending(live, tmp_path, V3_POST if api == "v3" else V1_POST, *argv)
    return argv


def test_v3_run_killed_while_sending_is_adopted_from_the_history(live: Emulator, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    argv = _generate_killed_while_sending(live, tmp_path, monkeypatch, "v3")
    [task_id] = list(live.tasks)

    code, out, err = _here(capsys, *argv)
    assert code == 0, err
    assert len(live.requests_to(V3_POST)) == 1  # adopted, not paid again
    assert len(live.requests_to("POST /api/v3/predictions")) == 1  # one look at the history
    assert Path(_lines(out)[0]).read_bytes() == live.tasks[task_id].outputs[0]
    assert open_store().task(task_id) is not None


def test_v3_run_killed_while_sending_with_two_orphans_is_uncertain(live: Emulator, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    argv = _generate_killed_while_sending(live, tmp_path, monkeypatch, "v3")
    # Another prediction of the same model at the same time, made elsewhere (not in this store).
    answer = requests.post(f"{live.url}/api/v3/wavespeed-ai/z-image/base", timeout=10,
                           json={"prompt": "a different picture", "size": "256*256"},
                           headers={"Authorization": f"Bearer {DEMO_KEY}"})
    assert answer.status_code == 200, answer.text
    assert len(live.tasks) == 2

    code, out, err = _here(capsys, *argv)
    assert code == 1 and out == ""
    assert "WaveSpeed's history shows 2 predictions of this model from that time" in err
    assert "Nothing was sent now" in err
    assert len(live.requests_to(V3_POST)) == 2  # the killed run's and the other one: nothing more
    code, _out, err = _here(capsys, *argv)  # the claim stays uncertain
    assert code == 1 and "may have been charged" in err, (_out, err)
    assert len(live.requests_to(V3_POST)) == 2


def test_qingbo_submit_killed_while_sending_is_sent_again_under_the_same_key(live: Emulator, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch,
                                                                             capsys: pytest.CaptureFixture[str]
                                                                             ) -> None:
    monkeypatch.setenv(LEASE_ENV, "1")
    argv = ("submit", PROMPT, "--seed", "9")
    _killed_while_sending(live, tmp_path, QINGBO_POST, *argv)
    [task_id] = list(live.tasks)

    code, out, err = _here(capsys, *argv)
    assert code == 0, err
    assert _lines(out) == [task_id]
    first, second = live.requests_to(QINGBO_POST)
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert live.task_count("qingbo") == 1


def test_v1_run_killed_while_sending_is_uncertain_and_sends_nothing(live: Emulator, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    argv = _generate_killed_while_sending(live, tmp_path, monkeypatch, "v1/images")

    for rerun in (1, 2):  # the second run finds the claim uncertain, as every later one
        code, out, err = _here(capsys, *argv)
        assert code == 1 and out == "", f"rerun {rerun} exited {code}, {len(live.requests_to(V1_POST))} requests"
        assert "An earlier run with the same inputs sent the image request at" in err
        assert "it may have been charged, and that API keeps no history to check. Nothing was sent now." in err
        assert len(live.requests_to(V1_POST)) == 1


def test_v1_uncertain_picture_is_paid_again_when_asked(live: Emulator, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The uncertain message offers --retry-uncertain: the command that printed it must take it, and pay."""
    argv = _generate_killed_while_sending(live, tmp_path, monkeypatch, "v1/images")
    code, _out, err = _here(capsys, *argv)
    assert code == 1 and "--retry-uncertain" in err

    code, out, err = _here(capsys, *argv, "--retry-uncertain")
    assert code == 0, err
    assert len(live.requests_to(V1_POST)) == 2 and len(_lines(out)) == 1


def test_engine_retrying_an_uncertain_v1_picture_pays(live: Emulator, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch, clock: Any) -> None:
    _generate_killed_while_sending(live, tmp_path, monkeypatch, "v1/images")
    order = TextToImage(prompt=PROMPT, width=256, height=256, seed=21)
    with pytest.raises(Exception, match="may have been charged"):
        outcomes = _engine(clock).pictures(order)
        raise outcomes[0].error or AssertionError("paid without being asked")
    engine = Engine(Clients(store=open_store()), clock=clock, sleep=clock.sleep, retry_uncertain=True)
    [outcome] = engine.pictures(order)
    assert outcome.error is None, outcome.error
    assert len(live.requests_to(V1_POST)) == 2


def test_a_holder_slower_than_its_lease_keeps_its_claim(live: Emulator, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The lease is renewed while the request is under way: a run alive past one lease is waited for, not taken
    over (which would make the second run recover a request still in flight)."""
    monkeypatch.setenv(LEASE_ENV, "1")
    first, (code, out, err) = _beside_a_slow_run(live, tmp_path, capsys, 2.5)
    assert first[0] == 0, first[2]
    assert code == 0, err
    assert len(live.requests_to(V1_POST)) == 1
    assert Path(_lines(out)[0]).read_bytes() == Path(_lines(first[1])[0]).read_bytes()


def test_v3_claim_left_sending_with_nothing_in_the_history_is_paid(emu: Emulator, clock: Any) -> None:
    """A run that died before its prediction reached WaveSpeed: the history has none, so the next run pays."""
    order = TextToImage(prompt=PROMPT, api="v3", width=256, height=256, seed=8)
    engine = _engine(clock)
    [unit] = engine.plan(order)
    store = open_store()
    store.claim(unit.key, "gone:1:dead", lease=1, now=time.time() - 60)
    store.mark_sending(unit.key, "gone:1:dead", detail={"what": "the prediction request"}, now=time.time() - 60)
    store.expire(unit.key, "gone:1:dead")
    [outcome] = engine.pictures(order)
    assert outcome.error is None, outcome.error
    assert len(emu.requests_to("POST /api/v3/predictions")) == 1  # looked in the history first
    [task_id] = list(emu.tasks)
    assert len(emu.requests_to(V3_POST)) == 1 and outcome.value.images[0] == emu.tasks[task_id].outputs[0]
    assert store.claim_of(unit.key) is None and store.receipt(unit.key) is not None


def test_v3_claim_left_sending_with_an_unreadable_history_is_uncertain(emu: Emulator, clock: Any) -> None:
    order = TextToImage(prompt=PROMPT, api="v3", width=256, height=256, seed=8)
    [unit] = _engine(clock).plan(order)
    store = open_store()
    store.claim(unit.key, "gone:1:dead", lease=1, now=time.time() - 60)
    store.mark_sending(unit.key, "gone:1:dead", detail={"what": "the prediction request"}, now=time.time() - 60)
    store.expire(unit.key, "gone:1:dead")
    emu.inject("POST /api/v3/predictions", "status", status=403, times=5)
    for run_number in (1, 2):  # the claim stays uncertain: the second run does not pay either
        [outcome] = _engine(clock).pictures(order)
        assert outcome.error is not None, f"run {run_number} paid"
        text = str(outcome.error)
        assert "its prediction history could not be read" in text and "Nothing was sent now" in text, text
        assert emu.requests_to(V3_POST) == []


def test_a_receipt_of_urls_only_does_not_spin_the_claim_loop(emu: Emulator, clock: Any) -> None:
    """A receipt that holds only the URLs of a paid result (``save_urls``) is a receipt to the claim; a unit that
    cannot serve it must still end (download it, or pay), not ask the store again and again."""
    order = TextToImage(prompt=PROMPT, width=256, height=256, seed=13)
    engine = _engine(clock)
    [unit] = engine.plan(order)
    open_store().save_urls(unit.key, {"urls": [f"{emu.url}/files/gone.png"]})
    done: list[Any] = []

    def work() -> None:
        try:
            done.append(engine.pictures(order))
        except Exception as err:  # noqa: BLE001 - a cancelled run: the loop was stopped from here
            if not engine.token.cancelled():
                done.append(err)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(2)
    engine.token.cancel()  # ends the loop if it is still asking
    worker.join(5)
    assert done, "the unit was still deciding after 2 s"
