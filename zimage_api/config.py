"""Where keys and base URLs come from.

Keys are read at every request, so a key rotated in the config file (or in this process's environment, for a
script) is used by the next request without a restart; a running ComfyUI only sees the environment it was started
with. The environment wins over the config file. The config file is an ini file outside any workflow: the path in
``ZIMAGE_CONFIG``; else ``zimage.ini`` in the pack folder (git-ignored; ``zimage.ini.example`` is the template) when
the pack sits in ComfyUI's ``custom_nodes``, is run from a checkout, or that file exists; else, for a library installed
with pip (inside ``site-packages``), ``zimage.ini`` in the per-user config folder: ``%APPDATA%\\comfyui-zimage`` on
Windows, ``~/Library/Application Support/comfyui-zimage`` on macOS, ``$XDG_CONFIG_HOME/comfyui-zimage``
(``~/.config/comfyui-zimage``) elsewhere::

    [wavespeed]
    api_key = ...
    base_url = https://api.wavespeed.ai

    [qingbo]
    api_key = ...
    base_url = https://www.qingbo.dev
"""

from __future__ import annotations

import configparser
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

__all__ = ["Provider", "WAVESPEED", "QINGBO", "config_path", "user_config_dir", "read_setting", "resolve_api_key",
           "resolve_base_url", "normalize_base_url"]

PACK_DIR = Path(__file__).resolve().parent.parent
CONFIG_ENV = "ZIMAGE_CONFIG"


@dataclass(frozen=True)
class Provider:
    """One remote service: its display name, config section, key variables and default base URL."""

    name: str
    section: str
    key_envs: tuple[str, ...]
    base_url_env: str
    default_base_url: str


WAVESPEED = Provider("WaveSpeed", "wavespeed", ("WAVESPEED_API_KEY",), "WAVESPEED_BASE_URL", "https://api.wavespeed.ai")
QINGBO = Provider("Qingbo", "qingbo", ("QINGBO_API_KEY", "WAVE_API_KEY"), "QINGBO_BASE_URL", "https://www.qingbo.dev")


def user_config_dir() -> Path:
    """The per-user config folder of the pack: ``%APPDATA%\\comfyui-zimage``, ``~/Library/Application
    Support/comfyui-zimage`` or ``$XDG_CONFIG_HOME/comfyui-zimage`` (``~/.config/comfyui-zimage``)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "comfyui-zimage"


def _installed_with_pip(pack: Path) -> bool:
    return any(part in ("site-packages", "dist-packages") for part in pack.parts)


def config_path(pack: Path | None = None) -> Path:
    """The config file in use: ``$ZIMAGE_CONFIG`` if set; else ``zimage.ini`` in the pack folder, unless the library
    was installed with pip and no such file exists there; then ``zimage.ini`` in :func:`user_config_dir`."""
    override = os.environ.get(CONFIG_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    pack = PACK_DIR if pack is None else pack
    in_pack = pack / "zimage.ini"
    if in_pack.exists() or not _installed_with_pip(pack):
        return in_pack
    return user_config_dir() / "zimage.ini"


_parsed: dict[tuple[str, float], configparser.ConfigParser] = {}


def _read_config(section: str, option: str) -> str:
    path = config_path()
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return ""
    # Keyed by modification time: a key edited in the file is picked up by the next request, without a restart.
    parser = _parsed.get((str(path), mtime))
    if parser is None:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            # utf-8-sig: Notepad on Windows writes a byte-order mark.
            parser.read(path, encoding="utf-8-sig")
        except (configparser.Error, OSError, UnicodeDecodeError) as err:
            raise ConfigError(
                f"The config file {path} could not be read ({type(err).__name__}); fix or delete it."
            ) from None
        _parsed.clear()
        _parsed[(str(path), mtime)] = parser
    return parser.get(section, option, fallback="").strip().strip('"').strip("'")


def read_setting(section: str, option: str) -> str:
    """One setting of ``zimage.ini`` (``""`` when the file, the section or the option is absent)."""
    return _read_config(section, option)


def resolve_api_key(provider: Provider, explicit: str | None = None) -> str:
    """Return the key for ``provider``: ``explicit``, else the environment, else the config file.

    Raises :class:`ConfigError` naming the variable and the file when there is none.
    """
    if explicit:
        return _clean_key(provider, explicit.strip(), "given")
    for env in provider.key_envs:
        value = os.environ.get(env, "").strip()
        if value:
            return _clean_key(provider, value, f"in {env}")
    value = _read_config(provider.section, "api_key")
    if value:
        return _clean_key(provider, value, f"under [{provider.section}] in {config_path()}")
    names = " or ".join(provider.key_envs)
    raise ConfigError(
        f"No {provider.name} API key: set the environment variable {names}, or put api_key under "
        f"[{provider.section}] in {config_path()}, then run again."
    )


def _is_control(ch: str) -> bool:
    code = ord(ch)
    return code < 0x20 or 0x7F <= code < 0xA0


def _clean_key(provider: Provider, key: str, where: str) -> str:
    """The key unchanged, or :class:`ConfigError` when it holds a control character (never quoting the key).

    A line break pasted inside a key would otherwise reach the Authorization header, where the HTTP library's own
    error quotes the whole header.
    """
    bad = [ch for ch in key if _is_control(ch)]
    if not bad:
        return key
    hint = " (a line break?)" if any(ch in "\r\n" for ch in bad) else ""
    raise ConfigError(f"The {provider.name} API key {where} contains a control character{hint}; paste it again "
                      "without it.")


def normalize_base_url(url: str) -> str:
    """Strip a trailing ``/`` and ``/v1`` so that paths can always be appended with their version."""
    url = url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"The base URL {url!r} must start with http:// or https://.")
    return url


def resolve_base_url(provider: Provider, explicit: str | None = None) -> str:
    """Return the base URL without a trailing ``/v1``: ``explicit``, env, config file, then the default."""
    value = explicit or os.environ.get(provider.base_url_env, "").strip() or _read_config(provider.section, "base_url")
    return normalize_base_url(value or provider.default_base_url)
