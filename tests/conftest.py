"""Shared fixtures: a fake clock, an isolated environment, an emulator on 127.0.0.1, the pack loaded as in ComfyUI,
a fresh schema on a PostgreSQL server."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from tests.comfy_stubs import RecordingHooks, load_pack, pack_nodes, patch_nodes
from zimage_api.store.postgres import with_schema as with_search_path

if TYPE_CHECKING:
    from zimage_api.emulator import Emulator


KEY_VARS = ("WAVESPEED_API_KEY", "QINGBO_API_KEY", "WAVE_API_KEY", "WAVESPEED_BASE_URL", "QINGBO_BASE_URL",
            "ZIMAGE_CONFIG", "ZIMAGE_DATA_DIR", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy",
            "ALL_PROXY", "all_proxy", "ZIMAGE_STORE_URL")


class FakeClock:
    """Unix-like time that moves only when something sleeps or the test advances it. Thread-safe."""

    def __init__(self, start: float = 1_780_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += max(seconds, 0.0)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No real key, config file, proxy or data folder leaks into a test; each test gets its own data folder."""
    for name in KEY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("ZIMAGE_CONFIG", str(tmp_path / "zimage.ini"))
    data = tmp_path / "data"
    monkeypatch.setenv("ZIMAGE_DATA_DIR", str(data))
    return data


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def emu(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Iterator["Emulator"]:
    """An emulator driven by the fake clock, with the library pointed at it through the environment."""
    from zimage_api.emulator import DEMO_KEY, Emulator

    yield from serving(Emulator(clock=clock, queue_seconds=0.5, process_seconds=2.0, picture_scale=0.25,
                                wavespeed_keys={DEMO_KEY}, qingbo_keys={DEMO_KEY}), monkeypatch)


def lines(text: str) -> list[str]:
    """The non-blank lines of a command's output."""
    return [line for line in text.splitlines() if line.strip()]


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    """Wait (real time, bounded) until ``condition()`` holds; fail naming ``what`` when it does not in time."""
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def serving(emulator: "Emulator", monkeypatch: pytest.MonkeyPatch) -> Iterator["Emulator"]:
    """Start ``emulator``, point the library's keys and base URLs at it for the test, and stop it afterwards."""
    from zimage_api.emulator import DEMO_KEY

    emulator.start()
    monkeypatch.setenv("WAVESPEED_API_KEY", DEMO_KEY)
    monkeypatch.setenv("QINGBO_API_KEY", DEMO_KEY)
    monkeypatch.setenv("WAVESPEED_BASE_URL", emulator.url)
    monkeypatch.setenv("QINGBO_BASE_URL", emulator.url + "/v1")
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="module")
def pack() -> ModuleType:
    """The pack, imported the way ComfyUI imports it (once per process)."""
    return load_pack()


@pytest.fixture
def nodes(pack: ModuleType, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The pack's nodes module with :class:`RecordingHooks` as ``nodes._Node.context.hooks`` and the fake clock."""
    return patch_nodes(monkeypatch, RecordingHooks(pack_nodes().ComfyHooks), clock)


@pytest.fixture
def cli(clock: FakeClock, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[int, str, str]]:
    """Run the command line in-process with the fake clock, in tmp_path; returns (exit code, stdout, stderr)."""
    from zimage_api.cli import run

    monkeypatch.chdir(tmp_path)  # the default --out is the current folder

    def invoke(*argv: str, sleep: Callable[[float], None] | None = None) -> tuple[int, str, str]:
        code = run(list(argv), sleep=sleep or clock.sleep, clock=clock)
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


class PgAdmin:
    """The test's PostgreSQL schema, seen from a connection of its own (autocommit, ``search_path`` on the schema)."""

    def __init__(self, connection: Any, schema: str, url: str) -> None:
        self.connection = connection
        self.schema = schema
        self.url = url

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        """Run ``sql`` in the schema; the rows it returns (none for a statement without a result)."""
        cursor = self.connection.execute(sql, params or None)
        return cursor.fetchall() if cursor.description else []

    def connections(self) -> int:
        """How many other sessions are open on the test database (the code under test's, when tests run one by one)."""
        return int(self.query("SELECT count(*) FROM pg_stat_activity"
                              " WHERE datname = current_database() AND pid <> pg_backend_pid()")[0][0])


def missing(reason: str, required: bool) -> NoReturn:
    """Skip the test for ``reason``, or fail it when the test run requires it (CI)."""
    if required:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def pg_admin() -> Iterator[PgAdmin]:
    """A fresh schema ``zt_<hex>`` on the server of ZIMAGE_TEST_POSTGRES_URL, dropped with all it holds afterwards.

    Skipped without that server or without psycopg, except under ZIMAGE_REQUIRE_POSTGRES=1 (CI), where the test fails.
    """
    required = os.environ.get("ZIMAGE_REQUIRE_POSTGRES") == "1"
    base = os.environ.get("ZIMAGE_TEST_POSTGRES_URL", "")
    if not base:
        missing("PostgreSQL tests need ZIMAGE_TEST_POSTGRES_URL (bash .ci/postgres.sh --print starts a throwaway "
                "server; .ci/run does it)", required)
    try:
        import psycopg
        from psycopg import sql
    except ImportError:
        missing('PostgreSQL tests need psycopg: pip install "psycopg[binary]"', required)
    schema = "zt_" + secrets.token_hex(6)
    url = with_search_path(base, schema)
    with psycopg.connect(base, autocommit=True, connect_timeout=10) as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        connection.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        try:
            yield PgAdmin(connection, schema, url)
        finally:
            # A session the test left inside a transaction would hold the drop forever: end those, then say so.
            connection.execute("SET lock_timeout = '5s'")
            drop = sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema))
            try:
                connection.execute(drop)
            except psycopg.errors.LockNotAvailable:
                connection.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                   " WHERE datname = current_database() AND pid <> pg_backend_pid()")
                connection.execute("SET lock_timeout = 0")
                connection.execute(drop)
                pytest.fail(f"a session left a transaction open in schema {schema}; it was ended to drop the schema")


@pytest.fixture
def pg_url(pg_admin: PgAdmin) -> str:
    """A PostgreSQL URL whose sessions work in a fresh schema of their own (see ``pg_admin``)."""
    return pg_admin.url


@pytest.fixture(params=["sqlite", "postgres"])
def store_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Runs a test once per store backend: SQLite in the data folder, then PostgreSQL (``ZIMAGE_STORE_URL`` set to
    a fresh schema, so every store the test and its child processes open is that one)."""
    if request.param == "postgres":
        monkeypatch.setenv("ZIMAGE_STORE_URL", request.getfixturevalue("pg_url"))
    yield request.param
    if request.param == "postgres":
        from zimage_api.store.postgres import PostgresStore

        PostgresStore.close_all()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line for the PostgreSQL tests skipped on a machine without a server, saying why and how to run them."""
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = getattr(report, "longrepr", None)
        reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else ""
        if reason.startswith("Skipped: "):
            reason = reason[len("Skipped: "):]
        if reason.startswith("PostgreSQL tests need"):
            reasons[reason] = reasons.get(reason, 0) + 1
    for reason, count in reasons.items():
        terminalreporter.write_line(f"{count} PostgreSQL store tests skipped: {reason}")
