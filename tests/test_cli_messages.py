"""What a newcomer meets on the command line, exactly: each message as it reads, with its exit code.

One table: 2 for bad usage or configuration, 1 for a failed job, the command line's own flag names, every offending
value named. Then the smaller things around them: dry runs, reruns, the task list, the emulator's request log.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import lines
from zimage_api.cli import build_parser, run
from zimage_api.emulator import DEMO_KEY

ROOT = Path(__file__).resolve().parent.parent
Result = tuple[int, str, str]



@pytest.fixture
def busy_port() -> int:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        yield holder.getsockname()[1]


def _files(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder", encoding="utf-8")
    (tmp_path / "bad.png").write_bytes(bytes(range(127)))
    (tmp_path / "refs.csv").write_text("prompt,reference\na fox,bad.png\n", encoding="utf-8")
    (tmp_path / "comma.csv").write_text("prompt,seed\na fox, in snow,42\n", encoding="utf-8")
    (tmp_path / "allbad.csv").write_text("prompt,seed\na fox,abc\na kite,xyz\n", encoding="utf-8")
    (tmp_path / "half.csv").write_text("prompt,seed\na fox,1\na kite,xyz\n", encoding="utf-8")


# (argv, exit code, the exact stderr lines); {tmp}, {config} and {port} are filled in by the test.
MESSAGES = [
    pytest.param(["demo", "--out", "afile"], 2, ["error: --out afile is a file, not a folder; nothing was sent."],
                 id="demo-out-is-a-file"),
    pytest.param(["generate", "x", "--cfg", "30"], 2, ["error: --cfg 30.0 is outside 0-20."], id="cfg-flag"),
    pytest.param(["generate", "x", "--width", "5000", "--height", "5000"], 2,
                 ["error: --width 5000 and --height 5000 are outside 256-2048 pixels, the range of the /v1/images "
                  "API."], id="both-sides-named"),
    pytest.param(["generate", "x", "--api", "v3", "--width", "2048", "--height", "1024"], 2,
                 ["error: --width 2048 is outside 256-1536 pixels, the range of WaveSpeed v3; choose --api "
                  "v1/images for sizes up to 2048."], id="v3-size-points-at-the-flag"),
    pytest.param(["edit", "bad.png", "x"], 2,
                 ["error: The reference bad.png is not a picture that can be read (127 bytes); give a PNG, JPEG or "
                  "WebP file."], id="edit-reference-not-a-picture"),
    pytest.param(["batch", "refs.csv", "--out", "run"], 2,
                 ["error: row 1 (line 2): The reference bad.png is not a picture that can be read (127 bytes); "
                  "give a PNG, JPEG or WebP file.",
                  "error: the only row is invalid; nothing was sent. Fix it (check with `python -m zimage_api batch "
                  "refs.csv --dry-run`)."], id="batch-reference-not-a-picture"),
    pytest.param(["generate", "x", "--width", "256", "--height", "256"], 1,
                 ["error: WaveSpeed rejected the API key (HTTP 401); check WAVESPEED_API_KEY or api_key under "
                  "[wavespeed] in {config}."], id="wrong-key"),
    pytest.param(["emulator", "--port", "{port}", "--serve-seconds", "0.1"], 2,
                 ["error: the port {port} is already in use on 127.0.0.1 (another emulator, or another server); "
                  "choose another with --port, or --port 0 for a free one."], id="emulator-busy-port"),
    pytest.param(["emulator", "--port", "0", "--queue-seconds", "-1"], 2,
                 ["error: argument --queue-seconds: '-1' is not a number of seconds, 0 or more (see `python -m "
                  "zimage_api.emulator --help`)"], id="emulator-negative-seconds"),
    pytest.param(["batch", "comma.csv", "--out", "run"], 2,
                 ['error: row 1 (line 2): The row has 3 values for 2 columns; put a prompt that contains a comma in '
                  'double quotes, e.g. "a fox, in snow".',
                  "error: the only row is invalid; nothing was sent. Fix it (check with `python -m zimage_api batch "
                  "comma.csv --dry-run`)."], id="csv-unquoted-comma"),
    pytest.param(["batch", "allbad.csv", "--dry-run", "--out", "run"], 2,
                 ["error: row 1 (line 2): The seed must be a whole number, not 'abc'.",
                  "error: row 2 (line 3): The seed must be a whole number, not 'xyz'.",
                  "error: all 2 rows are invalid; nothing was sent. Fix them, then run the same command again."],
                 id="dry-run-of-invalid-rows-only"),
    pytest.param(["batch", "half.csv", "--out", "run"], 2,
                 ["error: row 2 (line 3): The seed must be a whole number, not 'xyz'.",
                  "error: 1 of 2 rows is invalid; nothing was sent. Fix it (check with `python -m zimage_api batch "
                  "half.csv --dry-run`)."], id="one-row-is-invalid"),
    pytest.param(["batch", "half.csv", "--concurrency", "0"], 2, ["error: --concurrency 0 is outside 1-64."],
                 id="concurrency-flag"),
]


@pytest.mark.parametrize("argv, code, expected", MESSAGES)
def test_each_message_reads_as_one_sentence_with_its_exit_code(cli, emu, tmp_path, monkeypatch, busy_port, argv,
                                                              code, expected):
    _files(tmp_path)
    monkeypatch.setenv("WAVESPEED_API_KEY", "sk-wrong-key-0123456789")  # only the wrong-key case gets that far
    fill = {"tmp": str(tmp_path), "config": os.environ["ZIMAGE_CONFIG"], "port": str(busy_port)}
    got_code, out, err = cli(*[arg.format(**fill) for arg in argv])
    assert (got_code, lines(err)) == (code, [line.format(**fill) for line in expected])
    assert out == ""
    assert "sk-wrong-key-0123456789" not in err
    if code == 2:
        assert emu.requests == [], "bad usage is refused before anything is sent"


def test_a_dry_run_with_a_valid_row_still_prints_its_plan(cli, emu, tmp_path):
    _files(tmp_path)
    code, out, err = cli("batch", "half.csv", "--dry-run", "--out", "run")
    assert code == 2 and lines(out)[0].startswith("batch half.csv: 1 row: 0 done earlier")
    assert lines(err)[-1] == "error: 1 of 2 rows is invalid; nothing was sent. Fix it, then run the same command again."


def _bare_python(tmp_path: Path) -> Path:
    """A Python with none of the requirements: a venv without pip and without the system's packages."""
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    return venv / ("Scripts" if os.name == "nt" else "bin") / "python"


def test_the_launcher_names_the_missing_packages_and_the_pip_command(tmp_path):
    python = _bare_python(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(ZIMAGE_DATA_DIR=str(tmp_path / "data"), ZIMAGE_CONFIG=str(tmp_path / "none.ini"))
    for argv in (["generate", "a fox"], ["emulator", "--port", "0"], ["demo", "--out", "pictures"]):
        done = subprocess.run([str(python), str(ROOT / "zimage_cli.py"), *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert done.stderr == (f"error: The Python packages numpy, pillow and requests are not installed in this "
                               f"Python ({python}); install them with `{python} -m pip install numpy pillow "
                               f"requests`.\n"), argv
    helped = subprocess.run([str(python), str(ROOT / "zimage_cli.py"), "--help"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "demo" in helped.stdout  # --help needs none of them


# -- the smaller things ---------------------------------------------------------------------------------------------


def test_a_second_demo_into_the_same_folder_keeps_four_pictures(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert run(["demo", "--out", "pictures"]) == 0
        out, err = capsys.readouterr()
    pictures = sorted(p.name for p in (tmp_path / "pictures").iterdir() if p.suffix in (".png", ".jpg"))
    assert len(pictures) == 4 and sorted(Path(line).name for line in lines(out)[:4]) == pictures
    assert lines(out)[-1].startswith("Demo done: 4 placeholder pictures in ")
    assert "removed the 4 pictures of the previous demo run" in err
    assert "placeholder pictures marked \"emulator\"" in err


def test_tasks_lists_an_unfinished_task_once(cli, emu):
    code, out, _ = cli("submit", "a boat")
    [task] = lines(out)
    code, out, _ = cli("tasks")
    assert code == 0 and sum(task in line for line in lines(out)) == 1
    assert "Recent tasks" not in out  # the only task is unfinished: it is listed there, and nowhere else


def test_the_timeout_of_poll_and_resume_is_about_polling_only():
    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    tasks_actions = next(a for a in subcommands["tasks"]._actions if a.dest == "tasks_action").choices
    for command in (subcommands["poll"], tasks_actions["resume"]):
        [timeout] = [a for a in command._actions if "--timeout" in a.option_strings]
        assert "polling deadline" in timeout.help and "v1/images" not in timeout.help
    [generate_timeout] = [a for a in subcommands["generate"]._actions if "--timeout" in a.option_strings]
    assert "v1/images" in generate_timeout.help


def test_the_emulator_logs_one_line_per_request_with_verbose_and_never_a_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    env["PYTHONPATH"] = str(ROOT)
    server = subprocess.Popen([sys.executable, "-m", "zimage_api", "emulator", "--port", "0", "--verbose",
                               "--serve-seconds", "30"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[3]
        assert url.startswith("http://127.0.0.1:")
        with requests.Session() as http:
            http.trust_env = False
            ok = http.post(f"{url}/v1/images/generations", headers={"Authorization": f"Bearer {DEMO_KEY}"},
                           json={"model": "Z-Image-Base", "prompt": "a fox", "size": "256x256"}, timeout=10)
            wrong = http.get(f"{url}/v1/tasks/task-x", headers={"Authorization": "Bearer sk-secret-987654321"},
                             timeout=10)
        assert (ok.status_code, wrong.status_code) == (200, 401)
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    logged = lines(err)
    assert len(logged) == 2, err
    assert logged[0].split()[1:4] == ["POST", "/v1/images/generations", "200"] and logged[0].endswith(" ms")
    assert logged[1].split()[1:4] == ["GET", "/v1/tasks/task-x", "401"]
    assert "sk-secret" not in err and DEMO_KEY not in err


def test_the_request_log_names_the_injected_fault(emu, caplog):
    emu.inject("POST /v1/images/generations", "rate_limit", retry_after=3)
    with caplog.at_level(logging.INFO, logger="zimage_api.emulator.requests"):
        requests.post(f"{emu.url}/v1/images/generations", headers={"Authorization": f"Bearer {DEMO_KEY}"},
                      json={"model": "Z-Image-Base", "prompt": "a fox", "size": "256x256"}, timeout=10)
        emu.inject("POST /v1/images/generations", "reset_before")
        with pytest.raises(requests.ConnectionError):
            requests.post(f"{emu.url}/v1/images/generations", headers={"Authorization": f"Bearer {DEMO_KEY}"},
                          json={"model": "Z-Image-Base", "prompt": "a fox", "size": "256x256"}, timeout=10)
    logged = [r.getMessage() for r in caplog.records if r.name == "zimage_api.emulator.requests"]
    assert len(logged) == 2
    assert logged[0].startswith("POST /v1/images/generations 429 ") and logged[0].endswith(" ms (fault: rate_limit)")
    assert logged[1].startswith("POST /v1/images/generations reset ") and logged[1].endswith("(fault: reset_before)")
