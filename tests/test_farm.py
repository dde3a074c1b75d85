"""A farm: two machines (command lines in child processes, each with a data folder of its own) share one task store
in PostgreSQL. A picture paid on one is served on the other for nothing, equal orders pay once, the provider's limit
and the day's budget hold across both, a machine killed mid-request is taken over without paying twice, and a store
that cannot be used stops a run before anything is sent."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from PIL import Image

from tests.conftest import PgAdmin, serving
from tests.conftest import lines as _lines
from tests.conftest import wait_for as _wait_for
from zimage_api.catalog import QINGBO_USD_PER_PICTURE, WAVESPEED_USD_PER_PICTURE
from zimage_api.emulator import DEMO_KEY, Emulator
from zimage_api.store import LEASE_ENV, STORE_URL_ENV

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a windmill on a polder at dawn"
V1_POST = "POST /v1/images/generations"
V3_POST = "POST /api/v3/wavespeed-ai/*"  # the paid submits (the history is POST /api/v3/predictions, free)
QINGBO_POST = "POST /v1/tasks"
PAID = {"v1/images": V1_POST, "v3": V3_POST, "qingbo": QINGBO_POST}
GENERATE = ("generate", "--width", "256", "--height", "256")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="runs the command line in child processes")


@pytest.fixture
def live(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """An emulator on the wall clock (child processes poll it in real time), the environment pointed at it."""
    yield from serving(Emulator(queue_seconds=0.0, process_seconds=0.2, picture_scale=0.25,
                                wavespeed_keys={DEMO_KEY}, qingbo_keys={DEMO_KEY}), monkeypatch)


@pytest.fixture
def farm(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every child process's store is the test's PostgreSQL schema."""
    monkeypatch.setenv(STORE_URL_ENV, pg_url)
    return pg_url


def _machine(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    return folder


def _spawn(machine: Path, *argv: str, python: str | None = None, **env: str) -> subprocess.Popen[str]:
    """The command line ``argv`` on ``machine``: its own data folder and working folder, the shared store of the
    environment. ``python`` runs that code instead of ``-m zimage_api`` (with ``argv`` as ``sys.argv[1:]``)."""
    command = ["-c", python, *argv] if python is not None else ["-m", "zimage_api", *argv]
    return subprocess.Popen([sys.executable, *command], cwd=machine,
                            env=dict(os.environ, PYTHONPATH=str(ROOT), ZIMAGE_DATA_DIR=str(machine / "data"), **env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen[str], seconds: float = 60) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=seconds)
    finally:
        process.kill()
    return process.returncode, out, err


def _both(runs: list[subprocess.Popen[str]]) -> list[tuple[int, str, str]]:
    return [_finish(process) for process in runs]




def _pictures(out: str, machine: Path) -> list[bytes]:
    """The pictures a generate run on ``machine`` printed the paths of, each checked to be a 64+ pixel picture."""
    pictures = [(machine / line).read_bytes() for line in _lines(out)]
    for data in pictures:
        with Image.open(io.BytesIO(data)) as image:
            assert min(image.size) >= 64, image.size
    return pictures


# -- 1. a picture paid on one machine is served on the other -----------------------------------------------------------


@pytest.mark.parametrize("api", ["v1/images", "v3"])
def test_a_picture_paid_on_one_machine_is_served_on_the_other_without_a_request(
        farm: str, live: Emulator, tmp_path: Path, api: str) -> None:
    one, two = _machine(tmp_path, "one"), _machine(tmp_path, "two")
    argv = (*GENERATE, PROMPT, "--api", api, "--seed", "31", "--out", "pictures")
    code, out, err = _finish(_spawn(one, *argv))
    assert code == 0, err
    [paid] = _pictures(out, one)
    assert len(live.requests_to(PAID[api])) == 1
    shutil.rmtree(one)  # the first machine's files are gone: the second has only the shared store
    before = len(live.requests)

    code, out, err = _finish(_spawn(two, *argv))
    assert code == 0, err
    assert live.requests[before:] == []  # no paid request, no download, no balance or price look-up
    [served] = _pictures(out, two)
    assert served == paid


# -- 2. equal orders started at once pay once --------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["v1/images", "v3", "qingbo"])
def test_equal_orders_started_at_once_on_two_machines_pay_once(farm: str, live: Emulator, tmp_path: Path,
                                                               api: str) -> None:
    live.inject(PAID[api], "delay", seconds=1.5, times=2)  # the first is still under way when the other claims
    if api == "qingbo":
        argv: tuple[str, ...] = ("submit", PROMPT, "--seed", "32")
    else:
        argv = (*GENERATE, PROMPT, "--api", api, "--seed", "32", "--out", "pictures")
    machines = [_machine(tmp_path, name) for name in ("one", "two")]
    done = _both([_spawn(machine, *argv) for machine in machines])
    for code, _out, err in done:
        assert code == 0, err
    assert len(live.requests_to(PAID[api])) == 1
    if api == "qingbo":
        assert live.task_count("qingbo") == 1
        assert [_lines(out) for _code, out, _err in done] == [list(live.tasks)] * 2
    else:
        first, second = (_pictures(out, machine) for (_code, out, _err), machine in zip(done, machines, strict=True))
        assert first == second and len(first) == 1


# -- 3. the provider's limit holds across machines ---------------------------------------------------------------------


def _three_pictures_on_each_machine(live: Emulator, tmp_path: Path) -> list[tuple[int, str, str, Path]]:
    """Two machines, each generating 3 different v1/images pictures at once (3 requests), against an emulator that
    takes a second per answer and refuses a third synchronous request in flight with 429."""
    live.max_concurrent = 2
    live.sync_latency = 1.0
    machines = [_machine(tmp_path, name) for name in ("one", "two")]
    runs = [_spawn(machine, *GENERATE, f"{PROMPT}, seen from {machine.name}", "--seed", "40", "--count", "3",
                   "--out", "pictures", ZIMAGE_WAVESPEED_CONCURRENCY="2") for machine in machines]
    return [(*_finish(process), machine) for process, machine in zip(runs, machines, strict=True)]


def test_the_provider_limit_holds_across_two_machines(farm: str, live: Emulator, tmp_path: Path,
                                                      pg_admin: PgAdmin) -> None:
    done = _three_pictures_on_each_machine(live, tmp_path)
    for code, _out, err, _where in done:
        assert code == 0, err
    posts = live.requests_to(V1_POST)
    assert [r.status for r in posts] == [200] * 6  # none refused: no 429, no retry
    assert live.peak_concurrency <= 2
    pictures = [picture for _code, out, _err, machine in done for picture in _pictures(out, machine)]
    assert len(pictures) == 6 and len(set(pictures)) == 6
    assert pg_admin.query("SELECT provider, owner FROM slots") == []  # every slot was given back


@pytest.mark.usefixtures("pg_url")  # the contrast of the test above, run with it
def test_without_a_shared_store_two_machines_exceed_the_provider_limit(live: Emulator, tmp_path: Path) -> None:
    """The same two runs, each machine with the store in its own data folder: each keeps to 2, together they send
    more than 2 at once, and the emulator refuses some with 429 (what the shared store prevents)."""
    _three_pictures_on_each_machine(live, tmp_path)
    assert 429 in [r.status for r in live.requests_to(V1_POST)]


# -- 4. the day's budget holds across machines -------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["qingbo", "v1/images"])
def test_the_daily_budget_holds_across_two_machines(farm: str, live: Emulator, tmp_path: Path, api: str) -> None:
    """Each machine orders 2 different pictures at once; the day's budget has room for 2 of the 4."""
    live.inject(PAID[api], "delay", seconds=0.5, times=4)  # the paid requests overlap
    price = QINGBO_USD_PER_PICTURE if api == "qingbo" else WAVESPEED_USD_PER_PICTURE
    machines = [_machine(tmp_path, name) for name in ("one", "two")]
    runs = []
    for machine in machines:
        prompt = f"{PROMPT}, seen from {machine.name}"
        argv = ("submit", prompt) if api == "qingbo" else (*GENERATE, prompt, "--out", "pictures")
        runs.append(_spawn(machine, *argv, "--seed", "50", "--count", "2",
                           ZIMAGE_DAILY_BUDGET_USD=f"{price * 2.5:.6f}"))
    done = _both(runs)
    assert len(live.requests_to(PAID[api])) == 2
    if api == "qingbo":
        printed = [task_id for _code, out, _err in done for task_id in _lines(out)]
        assert live.task_count("qingbo") == 2 and sorted(printed) == sorted(live.tasks)
    else:
        pictures = [picture for (_code, out, _err), machine in zip(done, machines, strict=True)
                    for picture in _pictures(out, machine)]
        assert len(pictures) == 2 and len(set(pictures)) == 2, [(code, out, err[-300:]) for code, out, err in done]
    refused = [(code, err) for code, out, err in done if len(_lines(out)) < 2]
    assert refused, done
    for code, err in refused:
        assert code == 1 and "budget" in err, err


# -- 5. a machine killed while it holds a claim and a slot -------------------------------------------------------------


def test_a_machine_killed_holding_a_claim_and_a_slot_is_taken_over_without_paying_twice(
        farm: str, live: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_admin: PgAdmin) -> None:
    """The second machine starts while the first is inside its submit, with Qingbo's only slot and the claim; the
    first is killed then. The second takes both over once their leases end, and sends the submit again under the
    same Idempotency-Key, which lands on the task the first one created."""
    monkeypatch.setenv(LEASE_ENV, "2")
    monkeypatch.setenv("ZIMAGE_QINGBO_CONCURRENCY", "1")
    live.inject(QINGBO_POST, "delay", seconds=3.0)  # the first machine's submit, answered after it is gone
    argv = ("submit", PROMPT, "--seed", "60")
    killed = _spawn(_machine(tmp_path, "one"), *argv)
    try:
        _wait_for(lambda: len(live.requests_to(QINGBO_POST)) == 1, "the first machine's submit")
        started = pg_admin.query("SELECT value FROM meta WHERE name = 'written_at'")
        other = _spawn(_machine(tmp_path, "two"), *argv)
        # A run checks that it can write its record first: then it asks for the slot the first machine holds.
        _wait_for(lambda: pg_admin.query("SELECT value FROM meta WHERE name = 'written_at'") != started,
                  "the second machine's run")
        held = pg_admin.query("SELECT count(*) FROM slots WHERE provider = 'qingbo'")
        sending = pg_admin.query("SELECT state FROM claims")
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
    finally:
        _finish(killed)
    assert held == [(1,)] and sending == [("sending",)]  # it died holding Qingbo's only slot and the claim

    code, out, err = _finish(other, seconds=30)
    assert code == 0, err
    [task_id] = list(live.tasks)
    assert _lines(out) == [task_id]
    first, second = live.requests_to(QINGBO_POST)
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert live.task_count("qingbo") == 1
    assert pg_admin.query("SELECT count(*) FROM slots") == [(0,)]  # the dead machine's slot did not stay taken
    assert pg_admin.query("SELECT count(*) FROM claims") == [(0,)]


# -- 6. a store that cannot be used ------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_store_stops_the_run_before_anything_is_sent(pg_url: str, live: Emulator,
                                                                    tmp_path: Path) -> None:
    port = _closed_port()
    parts = urlsplit(pg_url)
    password = parts.password or ""
    assert password, "the test URL carries a password"
    url = urlunsplit(parts._replace(netloc=f"{parts.username}:{password}@127.0.0.1:{port}"))
    code, out, err = _finish(_spawn(_machine(tmp_path, "one"), *GENERATE, PROMPT, "--seed", "70", "--out", "pictures",
                                    ZIMAGE_STORE_URL=url), seconds=30)
    assert code == 2 and out == "", err
    assert f"127.0.0.1:{port}" in err and "nothing was sent" in err
    assert password not in err
    assert live.requests == []


def test_a_store_url_without_its_driver_says_how_to_install_it(farm: str, live: Emulator, tmp_path: Path) -> None:
    no_driver = ("import sys; sys.modules['psycopg'] = None; from zimage_api.cli import main; "
                 "sys.exit(main(sys.argv[1:]))")
    code, out, err = _finish(_spawn(_machine(tmp_path, "one"), *GENERATE, PROMPT, "--seed", "71", "--out",
                                    "pictures", python=no_driver), seconds=30)
    assert code == 2 and out == "", err
    assert 'pip install "psycopg[binary]"' in err
    assert (urlsplit(farm).password or "") not in err
    assert live.requests == []


@pytest.mark.parametrize("password", ["pass%zzword", "pass word"])
def test_a_store_url_whose_password_cannot_be_read_never_shows_it(pg_url: str, live: Emulator, tmp_path: Path,
                                                                 password: str) -> None:
    """A password with a bare ``%`` or a space (not percent-encoded) makes the URL unreadable to libpq, whose error
    quotes the offending part: the message must still not show it."""
    parts = urlsplit(pg_url)
    url = urlunsplit(parts._replace(netloc=f"{parts.username}:{password}@127.0.0.1:{_closed_port()}"))
    code, out, err = _finish(_spawn(_machine(tmp_path, "one"), *GENERATE, PROMPT, "--seed", "72", "--out", "pictures",
                                    ZIMAGE_STORE_URL=url), seconds=30)
    assert code == 2 and out == "", err
    assert live.requests == []
    assert password not in err and password.split()[0] not in err, err
