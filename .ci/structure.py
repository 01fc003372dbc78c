"""The house rules a reader relies on, checked by ``make lint``: in the product (``qa_notify``
and ``workers``) no class over 150 lines, no function over 50, and no loop of imports
between packages. The app factory (``qa_notify/__init__.py``, which mounts every part and
binds ``workers``) is the one place allowed to import back up; a package's imports of the
factory itself (``workers`` -> ``qa_notify.create_app``) are that same edge.

``python .ci/structure.py --graph`` also prints which package imports which.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("qa_notify", "workers")
MAX_CLASS, MAX_FUNCTION = 150, 50


def modules():
    for top in PACKAGES:
        yield from sorted((ROOT / top).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "qa_notify" and len(parts) > 1 else parts[0]


def sizes(tree: ast.AST, path: Path) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            limit = MAX_CLASS if isinstance(node, ast.ClassDef) else MAX_FUNCTION
            if length > limit:
                out.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.name} is {length} lines (at most {limit})")
    return out


def imports(tree: ast.AST, name: str, is_package: bool) -> set[str]:
    found = set()
    base = name.split(".") if is_package else name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base[: len(base) - node.level + 1]
                target = ".".join(parent + ([node.module] if node.module else []))
                found.add(target)
                if not node.module:
                    found.update(f"{target}.{alias.name}" for alias in node.names)
            elif node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import loop between packages once (the app factory's edges are left out before)."""
    found, done = [], set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            loop = path[path.index(node) :]
            key = frozenset(loop)
            if key not in done:
                done.add(key)
                found.append([*loop, node])
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, [*path, node])

    for start in sorted(graph):
        if start != "qa_notify":
            visit(start, [])
    return found


def main() -> int:
    problems, graph = [], defaultdict(set)
    for path in modules():
        tree = ast.parse(path.read_text(), str(path))
        name = module_name(path)
        problems += sizes(tree, path)
        for target in imports(tree, name, path.name == "__init__.py"):
            a, b = package_of(name), package_of(target)
            if a != b and b != "qa_notify":
                graph[a].add(b)
    problems += [f"packages import each other round a loop: {' -> '.join(loop)}" for loop in cycles(graph)]
    if "--graph" in sys.argv:
        for a in sorted(graph):
            print(f"{a} -> {', '.join(sorted(graph[a]))}")
    print("\n".join(problems) or "structure: ok (classes <= 150 lines, functions <= 50, no package cycle)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
