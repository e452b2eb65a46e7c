"""Import cycles among panechat's modules: ``python scripts/import_cycles.py [PACKAGE ...]``.

Builds the graph of the imports each module may run, over the packages named (default:
``core``, ``tui`` and ``api``), and prints every cycle: for each import between modules that
import each other, the shortest loop through it. Imports inside functions count (deferring an
import hides a cycle, it does not remove one); those under ``if TYPE_CHECKING:`` do not, as
they never run. A package's ``__init__`` counts as the package, and importing ``a.b`` is not
counted as importing ``a``. Exits 1 if there is a cycle, 0 if none.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "tui", "api")


def _modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Every module of ``packages`` by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import under ``node`` that may run, inside functions too; not those under
    ``if TYPE_CHECKING:``, which never do."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            for stmt in child.orelse:
                yield from _imports(ast.Module(body=[stmt], type_ignores=[]))
        else:
            yield from _imports(child)


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """``name`` or its longest prefix that is one of ``modules``."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def import_graph(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the modules of ``packages`` it imports."""
    modules = _modules(root, packages)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                resolved = _known(target, modules)
                if resolved is not None and resolved != name:
                    graph[name].add(resolved)
    return graph


def find_cycles(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> list[list[str]]:
    """The import cycles: for each import between two modules of a group that import each
    other, the shortest loop through it, first module repeated last (``[a, b, a]``); empty
    when there are none."""
    graph = import_graph(root, packages)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    loops: set[tuple[str, ...]] = set()
    for group in groups:
        for node in group:
            for nxt in graph[node] & group:
                loop = [node, *_path(graph, group, nxt, node)]
                first = loop.index(min(loop))
                loops.add(tuple(loop[first:] + loop[:first]))
    return sorted([*loop, loop[0]] for loop in loops)


def _path(graph: dict[str, set[str]], group: set[str], start: str, end: str) -> list[str]:
    """The shortest path from ``start`` to ``end`` inside ``group``, without ``end``."""
    came_from: dict[str, str | None] = {start: None}
    frontier = [start]
    while end not in came_from:
        following: list[str] = []
        for node in frontier:
            for nxt in sorted(graph[node] & group):
                if nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    path: list[str] = []
    step = came_from[end]
    while step is not None:
        path.append(step)
        step = came_from[step]
    return path[::-1]


def main(argv: Sequence[str] | None = None) -> int:
    packages = list(argv if argv is not None else sys.argv[1:]) or list(PACKAGES)
    cycles = find_cycles(ROOT, packages)
    for cycle in cycles:
        print(" -> ".join(cycle))
    if not cycles:
        print(f"no import cycles in {', '.join(packages)}")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
