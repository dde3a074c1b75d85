"""What a new user meets first: --version, --help texts, the config file's place, usage errors, ids never issued,
file names of recovered tasks, and documentation that names what exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from zimage_api import config
from zimage_api._version import __version__
from zimage_api.catalog import DEFAULT_TIMEOUT
from zimage_api.errors import ConfigError
from zimage_api.fields import COUNT
from zimage_api.ledger import Ledger
from zimage_api.limits import DEFAULT_LIMITS
from zimage_api.parallel import MAX_WORKERS

ROOT = Path(__file__).resolve().parent.parent
Result = tuple[int, str, str]


def test_version_prints_the_program_and_its_version(cli):
    code, out, err = cli("--version")
    assert (code, out.strip(), err) == (0, f"zimage {__version__}", "")


def test_an_impossible_emulator_port_is_one_usage_line(cli):
    code, out, err = cli("emulator", "--port", "80000")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [err.strip()] and "Traceback" not in err
    assert "'80000' is not a TCP port" in err and "0 to 65535" in err


def test_help_says_count_is_separate_requests_and_timeout_defaults_to_the_nodes(cli):
    code, out, _ = cli("generate", "--help")
    text = " ".join(out.split())
    assert code == 0
    assert "N separate paid requests, picture i with seed + i" in text and "n in one request" not in text
    assert f"default {DEFAULT_TIMEOUT}, as on the nodes" in text and "default 60" not in text


def test_batch_help_names_every_column(cli):
    _code, out, _ = cli("batch", "--help")
    text = " ".join(out.split())
    for column in ("loras", "mask", "control", "mode"):
        assert f" {column}," in text or f" {column}." in text


def test_the_count_tooltip_states_the_provider_limit():
    assert DEFAULT_LIMITS["wavespeed"] == 2 and MAX_WORKERS == 4
    assert "2 WaveSpeed requests in flight" in COUNT.help and "4 at a time" not in COUNT.help


def test_polling_an_id_never_issued_records_nothing(cli, emu, tmp_path):
    code, _out, err = cli("poll", "task-madeup0001", "--out", str(tmp_path / "pics"))
    assert code == 1 and "task-madeup0001" in err
    assert Ledger().get("task-madeup0001") is None
    code, out, _ = cli("tasks", "--json")
    assert code == 0 and "task-madeup0001" not in out


def test_tasks_resume_names_files_with_the_recorded_seed(cli, emu, tmp_path):
    code, _out, err = cli("generate", "slow", "--api", "v3", "--width", "256", "--height", "256", "--seed", "42",
                          "--timeout", "1")
    assert code == 1 and "still running" in err
    code, out, err = cli("tasks", "resume", "--out", str(tmp_path / "recovered"))
    assert code == 0, err
    [path] = out.split()
    assert Path(path).name.endswith("_42_0.png") and "_random_" not in path


# -- where the config file is ---------------------------------------------------------------------------------------


@pytest.fixture
def no_override(monkeypatch, tmp_path):
    monkeypatch.delenv("ZIMAGE_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("APPDATA", str(tmp_path / "xdg"))


def test_a_pip_installed_library_reads_the_user_config_folder(no_override, tmp_path, monkeypatch):
    site = tmp_path / "lib" / "python3.12" / "site-packages"
    site.mkdir(parents=True)
    path = config.config_path(site)
    assert path == config.user_config_dir() / "zimage.ini"
    assert path.parent.name == "comfyui-zimage" and "site-packages" not in str(path)
    if config.sys.platform not in ("win32", "darwin"):
        assert path == tmp_path / "xdg" / "comfyui-zimage" / "zimage.ini"
    # A zimage.ini already there (an older install) stays in use.
    (site / "zimage.ini").write_text("[wavespeed]\napi_key = k\n")
    assert config.config_path(site) == site / "zimage.ini"


def test_a_pack_in_custom_nodes_or_a_checkout_keeps_its_own_file(no_override, tmp_path):
    pack = tmp_path / "ComfyUI" / "custom_nodes" / "comfyui-zimage"
    pack.mkdir(parents=True)
    assert config.config_path(pack) == pack / "zimage.ini"
    assert config.config_path() == config.PACK_DIR / "zimage.ini"


def test_zimage_config_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("ZIMAGE_CONFIG", str(tmp_path / "mine.ini"))
    assert config.config_path(tmp_path / "site-packages") == tmp_path / "mine.ini"


def test_the_missing_key_message_names_the_file_in_use(tmp_path):
    with pytest.raises(ConfigError) as err:
        config.resolve_api_key(config.WAVESPEED)
    assert str(config.config_path()) in str(err.value) and "WAVESPEED_API_KEY" in str(err.value)


# -- the documentation ----------------------------------------------------------------------------------------------


def test_node_help_pages_name_the_store_not_the_old_ledger_file():
    pages = sorted((ROOT / "web" / "docs").rglob("*.md"))
    assert len(pages) >= 14
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "ledger.jsonl" not in text, page
        if "comfyui-zimage/" in text:
            assert "zimage.sqlite3" in text, page


def test_the_readme_leads_with_the_two_fresh_machine_commands_and_links_its_reference_pages():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first = re.search(r"```[a-z]*\n(.*?)```", readme, re.S)
    assert first is not None
    commands = [line for line in first.group(1).splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 2
    assert "python -m zimage_api demo" in commands[0] and "python -m pytest -q" in commands[1]
    assert len(readme.splitlines()) <= 250
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), link
