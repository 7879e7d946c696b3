"""The package's import graph: module sizes and import cycles.

Reads `src/hpcrepro` with `ast` (nothing is imported). Every import counts, those inside
functions too, because a cycle hidden by a function-local import is still a cycle between two
layers; only imports under `if TYPE_CHECKING:` are left out (they never run). Prints the biggest
modules, the cycles between modules and those between packages (`campaign`, `scheduler`, ...).

    python scripts/import-graph.py [--most N] [--src DIR]
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(tree: ast.AST, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The package's modules that `name` imports (the longest known prefix of each target)."""
    found: set[str] = set()
    package = name if is_package else name.rpartition(".")[0]

    def resolve(target: str) -> None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    resolve(alias.name)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    source = ".".join(base + ([child.module] if child.module else []))
                else:
                    source = child.module or ""
                for alias in child.names:
                    full = f"{source}.{alias.name}"
                    resolve(full if full in known else source)
            visit(child)

    visit(tree)
    return found


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm; only components of two or more nodes (the cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []
    counter = 0

    def connect(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path(__file__).parents[1] / "src")
    parser.add_argument("--most", type=int, default=20)
    args = parser.parse_args()
    files = {module_name(p, args.src): p for p in sorted((args.src / "hpcrepro").rglob("*.py"))}
    known = set(files)
    graph: dict[str, set[str]] = {}
    sizes: dict[str, int] = {}
    for name, path in files.items():
        text = path.read_text()
        sizes[name] = len(text.splitlines())
        tree = ast.parse(text, str(path))
        graph[name] = imports_of(tree, name, path.name == "__init__.py", known)

    total = sum(sizes.values())
    print(f"{len(files)} modules, {total} lines")
    print(f"\nbiggest {args.most} modules (lines):")
    for name, lines in sorted(sizes.items(), key=lambda kv: -kv[1])[: args.most]:
        print(f"  {lines:5d}  {name}")

    cycles = strongly_connected(graph)
    print(f"\nmodule cycles: {len(cycles)}")
    for component in cycles:
        print("  " + " <-> ".join(component))

    def package(name: str) -> str:
        parts = name.split(".")
        return ".".join(parts[:2]) if len(parts) > 2 or name in _packages else name

    _packages = {n for n, p in files.items() if p.name == "__init__.py"}
    package_graph: dict[str, set[str]] = defaultdict(set)
    edges: dict[tuple[str, str], set[str]] = defaultdict(set)
    for name, targets in graph.items():
        for target in targets:
            a, b = package(name), package(target)
            if a != b:
                package_graph[a].add(b)
                edges[a, b].add(f"{name} -> {target}")
    package_cycles = strongly_connected(dict(package_graph))
    print(f"\npackage cycles: {len(package_cycles)}")
    for component in package_cycles:
        print("  " + " <-> ".join(component))
        members = set(component)
        for (a, b), why in sorted(edges.items()):
            if a in members and b in members:
                for line in sorted(why):
                    print(f"      {line}")


if __name__ == "__main__":
    main()
