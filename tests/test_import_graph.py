"""pha's modules import each other without a cycle (issue 14: a layered house). Read
statically from the source, so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

PHA = Path(__file__).resolve().parents[1] / "pha"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PHA.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The pha modules `name` (at `path`) imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            root = f"{base}.{node.module}" if node.level and node.module else (node.module or base)
            if node.level == 0 and not root.startswith("pha"):
                continue
            # `from .x import y` may name a submodule y or a symbol of x
            targets = [root] + [f"{root}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in modules and t != name}
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PHA.rglob("*.py")}
    modules = set(paths)
    return {name: _imports(path, name, modules) for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of a package's import graph, ignoring edges from a package's __init__ to its
    own submodules and back (re-exporting what they define is not a cycle between layers)."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # a package and its own submodules
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"pha.a": {"pha.b"}, "pha.b": {"pha.c"}, "pha.c": {"pha.a"}}) == [
        "pha.a", "pha.b", "pha.c", "pha.a"
    ]  # fmt: skip
    assert find_cycle({"pha.a": {"pha.b"}, "pha.b": set()}) is None


def test_pha_has_no_import_cycle():
    graph = import_graph()
    assert "pha.scoring" in graph["pha.task_free"]  # the graph is read, not empty
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
