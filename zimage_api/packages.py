"""The third-party packages the library imports, the pip name of each, and the sentence that says how to install one.

This module imports nothing outside the standard library, so that it can explain a missing package from any Python,
including one where none of the requirements is installed.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from .errors import MissingPackageError

__all__ = ["TENSORS_EXTRA", "PIP_NAMES", "pip_command", "missing_package_message", "import_torch"]

TENSORS_EXTRA = "tensors"
"""The optional extra that adds torch (``pip install ".[tensors]"`` in the pack folder)."""

PIP_NAMES = {"PIL": "pillow", "requests": "requests", "numpy": "numpy", "torch": "torch"}
"""Import name to pip name, for every third-party package the library imports."""

REQUIRED = ("requests", "PIL", "numpy")
"""The import names of the hard requirements (requirements.txt); torch is optional."""


def pip_command(*packages: str) -> str:
    """The pip command that installs ``packages`` into the Python running now (quoted when its path has spaces)."""
    python = sys.executable or "python"
    if " " in python:
        python = f'"{python}"'
    return f"{python} -m pip install {' '.join(packages)}"


def missing_package_message(err: ModuleNotFoundError) -> str | None:
    """One sentence naming the missing package of ``err`` and the command that installs it; None when ``err`` is
    not about one of :data:`PIP_NAMES` (a module of this library that failed to load is a bug, not a missing
    install)."""
    top = (err.name or "").split(".")[0]
    package = PIP_NAMES.get(top)
    if package is None:
        return None
    if top == "torch":
        return _torch_message()
    # Name every missing requirement at once, so one command installs them all.
    missing = sorted({PIP_NAMES[name] for name in REQUIRED if _absent(name)} | {package})
    names = missing[0] if len(missing) == 1 else ", ".join(missing[:-1]) + " and " + missing[-1]
    noun, pronoun = ("package", "it") if len(missing) == 1 else ("packages", "them")
    return (f"The Python {noun} {names} {'is' if len(missing) == 1 else 'are'} not installed in this Python "
            f"({sys.executable or 'python'}); install {pronoun} with `{pip_command(*missing)}`.")


def _absent(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


def _torch_message() -> str:
    return (f"Converting pictures to tensors needs torch, which is not installed in this Python; install it with "
            f"`{pip_command('torch')}` (or `pip install \".[{TENSORS_EXTRA}]\"` in the pack folder), or use the "
            f"picture bytes, which need no torch.")


def import_torch() -> ModuleType:
    """``torch``, or :class:`MissingPackageError` with the install command when it is not installed."""
    try:
        import torch
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] != "torch":
            raise
        raise MissingPackageError(_torch_message(), package="torch") from err
    return torch
