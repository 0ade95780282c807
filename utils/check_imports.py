#!/usr/bin/env python3
"""Checks the package's layering: ``python utils/check_imports.py [flowse_dir]``.

Reads every ``flowse/**/*.py`` with ``ast`` (nothing is imported) and collects each
module's imports of ``flowse.*`` modules, those inside functions included (a lazy import
is still a dependency). Reports, and exits 1 on any:
- layer violations: ``flowse.models`` and ``flowse.features`` import nothing from
  ``flowse.data``, ``flowse.train``, ``flowse.rl``, ``flowse.metrics``; ``flowse.metrics``
  nothing from ``flowse.rl`` or ``flowse.train`` (the RL code calls metrics, never the
  reverse); no library module imports ``flowse.bin``;
- import cycles between modules (strongly connected components of the graph);
- modules over ``MAX_LINES`` lines.
"""
from __future__ import annotations

import ast
import os
import sys

MAX_LINES = 400
# (importing package, forbidden packages)
RULES: list[tuple[str, tuple[str, ...]]] = [
    ("flowse.models", ("flowse.data", "flowse.train", "flowse.rl", "flowse.metrics", "flowse.bin")),
    ("flowse.features", ("flowse.data", "flowse.train", "flowse.rl", "flowse.metrics", "flowse.models", "flowse.bin")),
    ("flowse.metrics", ("flowse.rl", "flowse.train", "flowse.bin")),
    ("flowse", ("flowse.bin",)),
]


def _module_name(root: str, path: str) -> str:
    rel = os.path.relpath(path, os.path.dirname(root))[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def import_graph(root: str) -> dict[str, set[str]]:
    """``{module: {flowse modules it imports}}`` for every module under ``root`` (the flowse dir)."""
    files = {}
    for d, _, names in os.walk(root):
        for n in names:
            if n.endswith(".py"):
                p = os.path.join(d, n)
                files[_module_name(root, p)] = p
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        pkg = mod if path.endswith("__init__.py") else mod.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            for n in names:
                while n and n not in files:
                    n = n.rpartition(".")[0]
                if n and n != mod:
                    deps.add(n)
        graph[mod] = deps
    return graph


def _inside(mod: str, pkg: str) -> bool:
    return mod == pkg or mod.startswith(pkg + ".")


def layer_violations(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    out = []
    for mod, deps in sorted(graph.items()):
        for pkg, forbidden in RULES:
            if not _inside(mod, pkg) or (pkg == "flowse" and _inside(mod, "flowse.bin")):
                continue
            out += [(mod, d) for d in sorted(deps) if any(_inside(d, f) for f in forbidden)]
    return sorted(set(out))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def long_modules(root: str, limit: int = MAX_LINES) -> list[tuple[str, int]]:
    out = []
    for d, _, names in os.walk(root):
        for n in names:
            if n.endswith(".py"):
                p = os.path.join(d, n)
                with open(p, encoding="utf-8") as f:
                    lines = sum(1 for _ in f)
                if lines > limit:
                    out.append((os.path.relpath(p, os.path.dirname(root)), lines))
    return sorted(out)


def main(argv: list[str]) -> int:
    root = argv[0] if argv else os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "flowse")
    graph = import_graph(root)
    bad = layer_violations(graph)
    cyc = cycles(graph)
    long = long_modules(root)
    for mod, dep in bad:
        print(f"layer violation: {mod} imports {dep}")
    for c in cyc:
        print(f"import cycle: {' <-> '.join(c)}")
    for path, n in long:
        print(f"module over {MAX_LINES} lines: {path} ({n})")
    print(f"{len(graph)} modules, {sum(len(d) for d in graph.values())} imports: "
          f"{len(bad)} layer violation(s), {len(cyc)} cycle(s), {len(long)} long module(s)")
    return 1 if (bad or cyc or long) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
