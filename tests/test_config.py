"""Keys and base URLs: read at call time, environment over config file, clear errors before any request."""

from __future__ import annotations

from pathlib import Path

import pytest

from zimage_api.config import QINGBO, WAVESPEED, config_path, normalize_base_url, resolve_api_key, resolve_base_url
from zimage_api.errors import ConfigError


def test_missing_key_names_the_variable_and_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_api_key(WAVESPEED)
    message = str(info.value)
    assert "WAVESPEED_API_KEY" in message and str(tmp_path / "zimage.ini") in message and "[wavespeed]" in message
    with pytest.raises(ConfigError, match="QINGBO_API_KEY or WAVE_API_KEY"):
        resolve_api_key(QINGBO)


def test_environment_wins_and_rotation_needs_no_restart(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "zimage.ini").write_text("[wavespeed]\napi_key = from-file-key-123\n", encoding="utf-8")
    assert resolve_api_key(WAVESPEED) == "from-file-key-123"
    monkeypatch.setenv("WAVESPEED_API_KEY", "from-env-key-1")
    assert resolve_api_key(WAVESPEED) == "from-env-key-1"
    monkeypatch.setenv("WAVESPEED_API_KEY", "from-env-key-2")
    assert resolve_api_key(WAVESPEED) == "from-env-key-2"


def test_config_file_edits_are_picked_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    path = tmp_path / "zimage.ini"
    # A byte-order mark and quotes, as Notepad writes them.
    path.write_text("\ufeff[qingbo]\napi_key = \"first-key-abc\"\n", encoding="utf-8")
    assert resolve_api_key(QINGBO) == "first-key-abc"
    path.write_text("[qingbo]\napi_key = second-key-abc\n", encoding="utf-8")
    os.utime(path, (1, 2))  # make sure the change is visible even within the file system's time resolution
    assert resolve_api_key(QINGBO) == "second-key-abc"


def test_wave_api_key_is_qingbos_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAVE_API_KEY", "wave-key-1234")
    assert resolve_api_key(QINGBO) == "wave-key-1234"
    monkeypatch.setenv("QINGBO_API_KEY", "qingbo-key-1234")
    assert resolve_api_key(QINGBO) == "qingbo-key-1234"


def test_broken_config_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "zimage.ini").write_text("api_key = no section\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="could not be read"):
        resolve_api_key(WAVESPEED)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://www.qingbo.dev", "https://www.qingbo.dev"),
        ("https://www.qingbo.dev/", "https://www.qingbo.dev"),
        ("https://www.qingbo.dev/v1", "https://www.qingbo.dev"),
        ("https://www.qingbo.dev/v1/", "https://www.qingbo.dev"),
        ("http://127.0.0.1:8765/proxy/v1", "http://127.0.0.1:8765/proxy"),
    ],
)
def test_base_url_forms(raw: str, expected: str) -> None:
    assert normalize_base_url(raw) == expected


def test_base_url_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert resolve_base_url(WAVESPEED) == "https://api.wavespeed.ai"
    assert resolve_base_url(QINGBO) == "https://www.qingbo.dev"
    (tmp_path / "zimage.ini").write_text("[qingbo]\nbase_url = https://api.qingbo.ai/v1\n", encoding="utf-8")
    assert resolve_base_url(QINGBO) == "https://api.qingbo.ai"
    monkeypatch.setenv("QINGBO_BASE_URL", "http://127.0.0.1:9/v1/")
    assert resolve_base_url(QINGBO) == "http://127.0.0.1:9"
    with pytest.raises(ConfigError, match="must start with http"):
        normalize_base_url("ftp://x")


def test_config_path_override(tmp_path: Path) -> None:
    assert config_path() == tmp_path / "zimage.ini"
