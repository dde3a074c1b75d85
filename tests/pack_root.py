"""A pytest plugin (loaded with ``-p tests.pack_root``, see pyproject.toml).

The repository root is a ComfyUI pack: its ``__init__.py`` uses relative imports, because ComfyUI imports the folder
as a package. pytest would import that file on its own under a name made from the folder's name, which fails when
the checkout's folder is not a valid module name. Collecting the root as a plain folder avoids it; the tests load
the pack the way ComfyUI does instead. A conftest.py cannot do this: its hooks do not reach the root folder itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_collect_directory(path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if path == ROOT:
        return pytest.Dir.from_parent(parent, path=path)
    return None
