"""The pack loaded the way ComfyUI loads it, and stand-ins for what ComfyUI shows: progress bars, status text, Cancel.

Import it as ``tests.comfy_stubs`` everywhere (never as ``comfy_stubs``), so that every test sees one
:class:`FakeInterrupt` class.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

PACK_DIR = Path(__file__).resolve().parent.parent
# ComfyUI imports a pack folder under its full path with "." replaced by "_x_" (nodes.py, load_custom_node).
PACK_MODULE = str(PACK_DIR).replace(".", "_x_")
MUG = ("Editorial-style product photo of a ceramic mug on a linen table, soft morning light. 35mm look, "
       "neutral color grading, no text, uncluttered background.")


def load_pack() -> ModuleType:
    """Import the pack like ComfyUI: spec_from_file_location on its __init__.py under an odd module name."""
    if PACK_MODULE in sys.modules:
        return sys.modules[PACK_MODULE]
    spec = importlib.util.spec_from_file_location(PACK_MODULE, PACK_DIR / "__init__.py",
                                                  submodule_search_locations=[str(PACK_DIR)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    spec.loader.exec_module(module)
    return module


def pack_nodes() -> ModuleType:
    """The pack's ``nodes`` module, as the loaded pack holds it (load the pack first)."""
    return sys.modules[PACK_MODULE + ".nodes"]


def patch_nodes(monkeypatch: pytest.MonkeyPatch, hooks: Any, clock: Any) -> ModuleType:
    """Point the pack's nodes at ``hooks`` (ComfyUI's UI) and the fake ``clock``; the data folder counts as ready."""
    module = pack_nodes()
    context = module.NodeContext(hooks=hooks, clock=clock, sleep=clock.sleep)
    monkeypatch.setattr(module._Node, "context", context)
    return module


class FakeInterrupt(Exception):
    """Stands in for comfy.model_management.InterruptProcessingException."""


class RecordingBar:
    """Stands in for comfy.utils.ProgressBar; records every update."""

    def __init__(self, total: int, node_id: str | None) -> None:
        self.total, self.node_id = total, node_id
        self.updates: list[tuple[float, float]] = []

    def update_absolute(self, value: float, total: float | None = None, preview: Any = None) -> None:
        self.updates.append((value, total if total is not None else self.total))


class RecordingHooks:
    """Records what the nodes show in ComfyUI; ``flag`` is the Cancel button."""

    def __init__(self, base: type) -> None:
        self._base = base
        self.bars: list[RecordingBar] = []
        self.texts: list[tuple[str, str | None]] = []
        self.flag = False
        self.interrupt_checks = 0
        self.user_dir: str | None = None

    def progress_bar(self, total: int, node_id: str | None) -> RecordingBar:
        bar = RecordingBar(total, node_id)
        self.bars.append(bar)
        return bar

    def send_text(self, text: str, node_id: str | None) -> None:
        self.texts.append((text, node_id))

    def interrupted(self) -> bool:
        self.interrupt_checks += 1
        return self.flag

    def interrupt_exception(self) -> type[BaseException]:
        return FakeInterrupt

    def raise_interrupt(self) -> None:
        raise FakeInterrupt()

    def user_directory(self) -> str | None:
        return self.user_dir

    def all_text(self) -> str:
        return "\n".join(text for text, _ in self.texts)


def call_node(result: object) -> object:
    """A node's output: its FUNCTION is a coroutine where ComfyUI awaits them, so await it as ComfyUI does."""
    import asyncio
    import inspect

    return asyncio.run(result) if inspect.iscoroutine(result) else result  # type: ignore[arg-type]
