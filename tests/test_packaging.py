"""pyproject.toml and requirements.txt against what the Comfy Registry and ComfyUI's installers expect.

The rules come from docs.comfy.org/registry/specifications: ``[project]`` name (the node id), a semantic version,
description, a license table and a Repository URL; ``[tool.comfy]`` PublisherId, DisplayName and Icon; ``includes``
for folders the registry must ship. requirements.txt is installed into ComfyUI's own environment, so it must not
replace ComfyUI's torch or pin a compiled package to a build that may not exist for the user's Python.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import tomllib
from PIL import Image

PACK_DIR = Path(__file__).resolve().parent.parent
PYPROJECT = PACK_DIR / "pyproject.toml"
REQUIREMENTS = PACK_DIR / "requirements.txt"

# Registry node id: < 100 characters; letters, digits, "-", "_", "."; no two special characters in a row; starts
# with a letter.
NODE_ID = re.compile(r"^[A-Za-z](?:[A-Za-z0-9]|[-_.](?=[A-Za-z0-9]))*$")
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
TORCH = {"torch", "torchvision", "torchaudio"}
# Packages with compiled wheels that ComfyUI (or its users' platforms) pin to their own builds.
COMPILED = {"numpy", "pillow", "scipy", "opencv-python", "opencv-python-headless", "opencv-contrib-python",
            "scikit-image", "onnxruntime", "onnxruntime-gpu", "xformers", "safetensors", "tokenizers", "psutil",
            "kornia-rs", "av", "pydantic-core", "aiohttp", "yarl"} | TORCH
REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?P<extras>\[[^\]]*\])?\s*(?P<spec>[^;]*)"
                         r"(?:;(?P<marker>.*))?$")


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    with PYPROJECT.open("rb") as handle:
        return tomllib.load(handle)


def canonical(name: str) -> str:
    """PEP 503 name normalisation: case-insensitive, runs of "-", "_" and "." are one "-"."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirement(line: str) -> tuple[str, str, str]:
    """(canonical name, specifier without spaces, marker) of one requirement line."""
    match = REQUIREMENT.match(line.strip())
    assert match is not None, f"cannot read the requirement {line!r}"
    spec = re.sub(r"\s+", "", match["spec"])
    marker = re.sub(r"\s+", " ", match["marker"] or "").strip()
    return canonical(match["name"]), spec, marker


def requirement_lines() -> list[str]:
    lines = []
    for raw in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            assert not line.startswith("-"), f"pip options do not belong in requirements.txt: {line!r}"
            lines.append(line)
    return lines


# -- [project] --------------------------------------------------------------------------------------------------------


def test_project_name_is_a_valid_registry_node_id(pyproject: dict[str, Any]) -> None:
    name = pyproject["project"]["name"]
    assert len(name) < 100 and NODE_ID.match(name), name
    assert "comfyui" not in name.lower(), "the registry's best practice: don't put 'ComfyUI' in the node id"


def test_version_is_semantic_x_y_z(pyproject: dict[str, Any]) -> None:
    assert SEMVER.match(pyproject["project"]["version"])


def test_description_says_what_the_pack_does(pyproject: dict[str, Any]) -> None:
    description = pyproject["project"]["description"]
    assert isinstance(description, str) and len(description.strip()) >= 20


def test_license_is_a_table_pointing_at_a_file_or_text(pyproject: dict[str, Any]) -> None:
    license_ = pyproject["project"]["license"]
    # license = "MIT" / "LICENSE" as a bare string is the format the registry rejects.
    assert isinstance(license_, dict) and set(license_) & {"file", "text"}
    if "file" in license_:
        assert (PACK_DIR / license_["file"]).is_file()


def test_repository_url_is_declared(pyproject: dict[str, Any]) -> None:
    urls = pyproject["project"]["urls"]
    url = urlparse(urls["Repository"])
    assert url.scheme == "https" and url.netloc and url.path.strip("/")


def test_requires_python_is_declared(pyproject: dict[str, Any]) -> None:
    assert pyproject["project"]["requires-python"].startswith(">=")


# -- [tool.comfy] -----------------------------------------------------------------------------------------------------


def test_tool_comfy_names_the_publisher_and_the_display_name(pyproject: dict[str, Any]) -> None:
    comfy = pyproject["tool"]["comfy"]
    assert re.match(r"^[a-z0-9][a-z0-9-]*$", comfy["PublisherId"]), comfy["PublisherId"]
    assert comfy["DisplayName"].strip()


def test_icon_is_a_url_to_the_small_square_picture_in_the_repository(pyproject: dict[str, Any]) -> None:
    icon = urlparse(pyproject["tool"]["comfy"]["Icon"])
    assert icon.scheme == "https" and icon.path.lower().endswith((".png", ".jpg", ".jpeg", ".svg", ".gif"))
    # raw.githubusercontent.com/<owner>/<repo>/<branch>/<path in the repository>: that file must be in the pack.
    assert icon.netloc == "raw.githubusercontent.com"
    local = PACK_DIR.joinpath(*icon.path.strip("/").split("/")[3:])
    assert local.is_file(), f"the Icon URL points at {local.relative_to(PACK_DIR)}, which is not in the pack"
    assert local.stat().st_size < 30_000
    with Image.open(local) as image:
        # The registry's limit is stated as 800x400 in one revision and 400x400 in another: meet both.
        assert image.size == (400, 400)


def test_includes_ship_the_workflows_web_and_locales_folders(pyproject: dict[str, Any]) -> None:
    includes = pyproject["tool"]["comfy"]["includes"]
    assert {"workflows", "web", "locales"} <= set(includes)
    for folder in includes:
        assert (PACK_DIR / folder).is_dir(), f"includes names {folder!r}, which does not exist"


# -- dependencies -----------------------------------------------------------------------------------------------------


def test_requirements_never_touch_comfyuis_torch() -> None:
    names = {parse_requirement(line)[0] for line in requirement_lines()}
    assert not names & TORCH


@pytest.mark.parametrize("line", requirement_lines())
def test_requirement_is_not_pinned(line: str) -> None:
    name, spec, _marker = parse_requirement(line)
    assert "==" not in spec and "@" not in line, f"{line!r}: an exact pin or a direct URL fights other packs"
    if name in COMPILED:
        assert "~=" not in spec and "<" not in spec, \
            f"{line!r}: an upper bound on a compiled package can force a rebuild or a downgrade"


def test_pyproject_dependencies_match_requirements_txt(pyproject: dict[str, Any]) -> None:
    project = pyproject["project"]
    wanted = sorted(parse_requirement(line) for line in requirement_lines())
    if "dependencies" in project.get("dynamic", []):
        # The registry's own example: dependencies read from requirements.txt at build time.
        files = pyproject["tool"]["setuptools"]["dynamic"]["dependencies"]["file"]
        assert files == ["requirements.txt"]
    else:
        assert sorted(parse_requirement(line) for line in project["dependencies"]) == wanted


# -- the installed library and command ----------------------------------------------------------------------------

_INDEX_UNREACHABLE = ("No matching distribution found", "Could not find a version that satisfies",
                      "Failed to establish a new connection", "Temporary failure in name resolution",
                      "Network is unreachable", "connection timed out")


def _pip(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m pip ARGS``, skipping the test (and saying why) when no package index answers."""
    done = subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        output = done.stdout + done.stderr
        if any(sign.lower() in output.lower() for sign in _INDEX_UNREACHABLE):
            pytest.skip(f"no package index is reachable, so the pack cannot be installed in a fresh venv: "
                        f"{output.strip().splitlines()[-1]}")
        raise AssertionError(f"pip {' '.join(args)} failed:\n{output}")
    return done


def _source_copy(into: Path) -> Path:
    """The checkout as a fresh clone has it (no venv, build folders or caches), so the build sees every folder."""
    ignore = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                    ".mypy_cache", ".ruff_cache", "zimage-demo", "out")
    return Path(shutil.copytree(PACK_DIR, into, ignore=ignore))


def test_a_wheel_installs_the_library_and_the_zimage_command_without_torch(tmp_path: Path) -> None:
    """Build the wheel, install it in a fresh venv with no torch, and use it from a folder outside the pack."""
    source = _source_copy(tmp_path / "source")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    _pip(python, "wheel", "--no-deps", "--wheel-dir", str(tmp_path / "dist"), str(source), cwd=tmp_path)
    wheels = list((tmp_path / "dist").glob("zimage_api_nodes-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = wheel.namelist()
    top = {name.split("/")[0] for name in names}
    assert "zimage_api" in top and "zimage_api/emulator/server.py" in names
    assert not top & {"web", "locales", "workflows", "bench", "tests", "nodes.py", "__init__.py"}, top
    _pip(python, "install", str(wheels[0]), cwd=tmp_path)

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    zimage = python.parent / "zimage"

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(a) for a in argv], cwd=work, env=env, capture_output=True, text=True, timeout=300)

    assert run(python, "-c", "import torch").returncode != 0, "the venv must not have torch"
    where = run(python, "-c", "import zimage_api; print(zimage_api.__file__)")
    assert where.returncode == 0 and str(venv) in where.stdout, where

    helped = run(zimage, "--help")
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: zimage "), helped.stdout[:80]  # named as typed, not as the module
    for command in ("generate", "edit", "submit", "poll", "batch", "tasks", "emulator", "demo"):
        assert command in helped.stdout

    demo = run(zimage, "demo", "--out", "pictures")
    assert demo.returncode == 0, demo.stderr
    paths = [work / line for line in demo.stdout.splitlines() if line and not line.startswith("Demo done")]
    assert len(paths) == 4 and all(path.is_file() and path.parent == work / "pictures" for path in paths), paths
    assert demo.stdout.splitlines()[-1].startswith("Demo done: 4 placeholder pictures")

    tensor = run(python, "-c", "from zimage_api.images import bytes_to_tensor; import sys; "
                               "bytes_to_tensor([open(sys.argv[1], 'rb').read()])", paths[0])
    assert tensor.returncode == 1
    last = tensor.stderr.strip().splitlines()[-1]
    assert last.startswith("zimage_api.errors.MissingPackageError: Converting pictures to tensors needs torch, "
                           "which is not installed in this Python; install it with `"), last
    assert last.endswith("-m pip install torch` (or `pip install \".[tensors]\"` in the pack folder), or use the "
                         "picture bytes, which need no torch."), last


def test_an_editable_install_runs_the_checkouts_code(tmp_path: Path) -> None:
    source = _source_copy(tmp_path / "source")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    _pip(python, "install", "--no-deps", "-e", str(source), cwd=tmp_path)
    where = subprocess.run([str(python), "-c", "import zimage_api; print(zimage_api.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0 and Path(where.stdout.strip()).is_relative_to(source), where
    # --help needs none of the requirements (they load on first use), so --no-deps keeps this test quick.
    helped = subprocess.run([str(python.parent / "zimage"), "tasks", "--help"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert helped.returncode == 0 and "tasks resume --out recovered" in helped.stdout, helped.stderr
