"""The library's layout: no import cycle at run time, no process-wide state set at run time, no command named in the
library's own text."""

from __future__ import annotations

import ast
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[1] / "zimage_api"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(LIBRARY.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_imports(path: Path) -> set[str]:
    """The modules of the library that ``path`` imports when it runs (``TYPE_CHECKING`` blocks left out), at any
    depth: a function-level import is a run-time import too."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.ImportFrom):
                base = package
                for _ in range(max(child.level - 1, 0)):
                    base = base.rpartition(".")[0]
                target = (f"{base}.{child.module}" if child.module else base) if child.level else (child.module or "")
                if target.startswith("zimage_api"):
                    found.add(target)
                    for alias in child.names:  # ``from . import x`` names a module
                        found.add(f"{target}.{alias.name}")
            elif isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names if alias.name.startswith("zimage_api"))
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in LIBRARY.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {target for target in _runtime_imports(path) if target in modules and target != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def connect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return groups


def test_no_import_cycle_at_run_time() -> None:
    # A package's __init__ importing its own modules is how a package exports them, not a cycle between concerns.
    graph = {name: {t for t in targets if not (name.endswith("__init__") or t == name.rpartition(".")[0])}
             for name, targets in _graph().items()}
    assert _cycles(graph) == []


def test_no_process_wide_state_is_set_at_run_time() -> None:
    offenders = []
    for path in LIBRARY.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Global):
                offenders.append(f"{path.name}: global {', '.join(node.names)}")
            if isinstance(node, ast.Assign) and any("os.environ[" in ast.unparse(t) for t in node.targets):
                offenders.append(f"{path.name}: writes the environment")
    assert offenders == []


def test_the_library_names_no_command_outside_the_command_line() -> None:
    named = [path.relative_to(LIBRARY).as_posix() for path in LIBRARY.rglob("*.py")
             if "python -m zimage_api poll" in path.read_text(encoding="utf-8")
             and path.relative_to(LIBRARY).parts[0] != "cli"]
    assert named == []
