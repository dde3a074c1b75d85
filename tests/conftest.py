"""Shared fixtures: a fake clock, an isolated environment, an emulator on 127.0.0.1, the pack loaded as in ComfyUI."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

from tests.comfy_stubs import RecordingHooks, load_pack, pack_nodes, patch_nodes

if TYPE_CHECKING:
    from zimage_api.emulator import Emulator


KEY_VARS = ("WAVESPEED_API_KEY", "QINGBO_API_KEY", "WAVE_API_KEY", "WAVESPEED_BASE_URL", "QINGBO_BASE_URL",
            "ZIMAGE_CONFIG", "ZIMAGE_DATA_DIR", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy",
            "ALL_PROXY", "all_proxy")


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
