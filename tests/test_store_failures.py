"""No record, no payment: a task store that cannot be written stops a paid run before anything is sent, through the
command line and through a node; a damaged store is kept aside and a new one started; an unreadable store never
reads as empty."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.comfy_stubs import call_node
from zimage_api.emulator import Emulator
from zimage_api.store.sqlite import STORE_NAME, Store, StoreError

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a lighthouse on a cliff at dusk"
GARBAGE = bytes(range(256)) * 16  # 4 KiB that are not an SQLite file

Result = tuple[int, str, str]


def _newer(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(folder / STORE_NAME)
    conn.execute("CREATE TABLE tasks (task_id TEXT PRIMARY KEY)")
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()


def _unusable(case: str, tmp_path: Path) -> tuple[Path, str]:
    """Make the data folder unusable as ``case`` says; the folder to point ZIMAGE_DATA_DIR at, and the words the
    error must hold."""
    if case == "the folder is a file":
        (tmp_path / "a-file").write_text("not a folder")
        return tmp_path / "a-file", "cannot be created"
    if case == "the folder is /etc/passwd":
        return Path("/etc/passwd"), "cannot be created"
    if case == "the folder is under a file":
        (tmp_path / "a-file").write_text("not a folder")
        return tmp_path / "a-file" / "data", "cannot be created"
    if case == "the folder cannot be created":
        return Path("/proc/zimage-data/data"), "cannot be created"  # even root cannot make folders in /proc
    if case == "the folder cannot be written":
        return Path("/proc/self"), "cannot be"  # a folder that exists, where even root cannot create a file
    if case == "the store is a folder":
        (tmp_path / "data" / STORE_NAME).mkdir(parents=True)
        return tmp_path / "data", "is a folder"
    if case == "the store is newer":
        _newer(tmp_path / "data")
        return tmp_path / "data", "newer version"
    raise AssertionError(case)


CASES = ["the folder is a file", "the folder is /etc/passwd", "the folder is under a file",
         "the folder cannot be created", "the folder cannot be written", "the store is a folder",
         "the store is newer"]
COMMANDS = {
    "generate": ("generate", PROMPT, "--width", "256", "--height", "256", "--seed", "3"),
    "generate v3": ("generate", PROMPT, "--api", "v3", "--width", "256", "--height", "256", "--seed", "3"),
    "submit": ("submit", PROMPT, "--seed", "3"),
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", CASES)
def test_a_store_that_cannot_record_stops_the_command_line_before_anything_is_sent(
        cli: Callable[..., Result], emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str,
        command: str) -> None:
    folder, words = _unusable(case, tmp_path)
    monkeypatch.setenv("ZIMAGE_DATA_DIR", str(folder))
    code, out, err = cli(*COMMANDS[command], "--out", str(tmp_path / "out")) if command != "submit" else \
        cli(*COMMANDS[command])
    assert emu.requests == []
    assert out == "" and len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(folder / STORE_NAME) in err and words in err, err
    assert code == 2, err


@pytest.mark.parametrize("case", CASES)
def test_a_store_that_cannot_record_stops_a_node_before_anything_is_sent(
        nodes: ModuleType, emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    folder, words = _unusable(case, tmp_path)
    monkeypatch.setenv("ZIMAGE_DATA_DIR", str(folder))
    with pytest.raises(OSError) as caught:
        call_node(nodes.ZImageGenerate().generate(
            prompt=PROMPT, negative_prompt="", model="Z-Image-Base", api="v1/images", guidance_scale=7.5,
            width=256, height=256, seed=3, count=1, unique_id="5"))
    assert emu.requests == []
    text = str(caught.value)
    assert str(folder / STORE_NAME) in text and words in text and "nothing was sent" in text, text


def test_the_store_calls_itself_unusable_before_anything_is_claimed(tmp_path: Path) -> None:
    for case in CASES:
        place = tmp_path / case.replace(" ", "-").replace("/", "_")
        place.mkdir()
        folder, words = _unusable(case, place)
        with pytest.raises(StoreError, match=words):
            Store(folder).claim("k", "A")


# -- a damaged store ------------------------------------------------------------------------------------------------


def test_a_damaged_store_is_kept_aside_and_the_run_is_recorded_in_a_new_one(
        cli: Callable[..., Result], emu: Emulator, tmp_path: Path, isolated_env: Path) -> None:
    isolated_env.mkdir(parents=True)
    (isolated_env / STORE_NAME).write_bytes(GARBAGE)
    code, out, err = cli("generate", PROMPT, "--api", "v3", "--width", "256", "--height", "256", "--seed", "3",
                         "--out", str(tmp_path / "out"))
    assert code == 0, err
    [task_id] = list(emu.tasks)
    [kept] = list(isolated_env.glob(f"{STORE_NAME}.damaged-*"))
    assert kept.read_bytes() == GARBAGE
    entry = Store().task(task_id)
    assert entry is not None and entry["status"] == "completed"
    assert len(emu.requests_to("POST /api/v3/wavespeed-ai/*")) == 1


def test_a_damaged_store_is_kept_aside_by_a_node_too(nodes: ModuleType, emu: Emulator,
                                                     isolated_env: Path) -> None:
    isolated_env.mkdir(parents=True)
    (isolated_env / STORE_NAME).write_bytes(GARBAGE)
    call_node(nodes.ZImageGenerate().generate(
        prompt=PROMPT, negative_prompt="", model="Z-Image-Base", api="v1/images", guidance_scale=7.5,
        width=256, height=256, seed=3, count=1, unique_id="5"))
    assert len(emu.requests_to("POST /v1/images/generations")) == 1
    [kept] = list(isolated_env.glob(f"{STORE_NAME}.damaged-*"))
    assert kept.read_bytes() == GARBAGE
    assert Store().tasks() == [] and len(list((isolated_env / "receipts").iterdir())) == 1


# -- reading a store that cannot be read -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["damaged", "newer", "a folder"])
def test_tasks_on_an_unreadable_store_says_so_instead_of_listing_nothing(
        cli: Callable[..., Result], isolated_env: Path, case: str) -> None:
    isolated_env.mkdir(parents=True)
    store_file = isolated_env / STORE_NAME
    if case == "damaged":
        store_file.write_bytes(GARBAGE)
    elif case == "newer":
        _newer(isolated_env)
    else:
        store_file.mkdir()
    code, out, err = cli("tasks")
    assert "No unfinished tasks" not in out and out == ""
    assert code != 0 and str(store_file) in err and "Traceback" not in err, err
    if case == "damaged":
        assert store_file.read_bytes() == GARBAGE  # reading moves nothing


def test_an_unreadable_store_raises_instead_of_reading_as_empty(isolated_env: Path) -> None:
    isolated_env.mkdir(parents=True)
    (isolated_env / STORE_NAME).write_bytes(GARBAGE)
    store = Store()
    for read in (store.tasks, store.unfinished, lambda: store.task("t"), lambda: store.receipt("k"),
                 lambda: store.claim_of("k")):
        with pytest.raises(StoreError, match="damaged"):
            read()


# -- a folder this user cannot write (another user than root, who ignores permission bits) ---------------------------


def _nobody() -> list[str] | None:
    setpriv = shutil.which("setpriv")
    if sys.platform == "win32" or setpriv is None or os.geteuid() != 0:
        return None
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def read_only_folder(isolated_env: Path) -> Iterator[Path]:
    """A data folder with an intact store holding one task, readable but not writable by user 65534."""
    if _nobody() is None:
        pytest.skip("needs root and setpriv to run a child process as another user")
    top = Path(tempfile.mkdtemp(prefix="zimage-ro-"))
    try:
        top.chmod(0o755)
        folder = top / "data"
        store = Store(folder)
        store.record_submitted("task-kept-1", provider="qingbo", model="z-image-turbo", prompt_sha256="0" * 64,
                               params={}, base_url="http://127.0.0.1:9")
        for path in folder.iterdir():
            path.chmod(0o444)
        folder.chmod(0o555)
        yield folder
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _as_nobody(folder: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    prefix = _nobody()
    assert prefix is not None
    env = dict(os.environ, PYTHONPATH=str(ROOT), ZIMAGE_DATA_DIR=str(folder), HOME=str(folder.parent),
               ZIMAGE_CONFIG=str(folder.parent / "zimage.ini"))
    return subprocess.run([*prefix, sys.executable, "-m", "zimage_api", *argv], cwd=folder.parent, env=env,
                          capture_output=True, text=True, timeout=60)


def test_an_intact_store_in_a_read_only_folder_is_listed(read_only_folder: Path) -> None:
    done = _as_nobody(read_only_folder, "tasks")
    assert done.returncode == 0, done.stderr
    assert "task-kept-1" in done.stdout


def test_a_read_only_folder_stops_a_paid_run_before_anything_is_sent(read_only_folder: Path, emu: Emulator) -> None:
    done = _as_nobody(read_only_folder, "submit", PROMPT, "--seed", "3")
    assert emu.requests == []
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert str(read_only_folder / STORE_NAME) in done.stderr and "nothing was sent" in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
