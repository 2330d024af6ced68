"""Imports point one way, and no modules import each other in a circle.

Bottom up: tradai_core < strategies, tradai_replay < tradai_resources < tradai_assets < jobs, sensors <
tradai (< bench, the benchmarks, which may use anything). Every `import` in every first-party module is
read from its source (AST, no import executed), including imports inside functions and TYPE_CHECKING
blocks: a lazy import is a dependency all the same.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LAYERS: dict[str, int] = {
    "tradai_core": 0,
    "strategies": 1,
    "tradai_replay": 1,
    "tradai_resources": 2,
    "tradai_assets": 3,
    "jobs": 4,
    "sensors": 4,
    "tradai": 5,
    "bench": 6,
}


@dataclass(frozen=True)
class Import:
    """One import statement of a first-party module that names another first-party module."""

    source: str
    path: Path
    line: int
    target: str

    def where(self, root: Path) -> str:
        return f"{self.path.relative_to(root)}:{self.line} imports {self.target}"


def modules(root: Path) -> dict[str, Path]:
    """Every first-party module under `root`, by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for package in LAYERS:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(root: Path) -> Iterator[Import]:
    """Every import of one first-party module by another (a name imported from a module: that module)."""
    known = modules(root)
    for source, path in known.items():
        package = source if path.name == "__init__.py" else source.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                    for alias in node.names
                ]
            for target in dict.fromkeys(targets):
                while target and target not in known:  # `import a.b.c` of a name: its module
                    target = target.rpartition(".")[0]
                if target and target != source:
                    yield Import(source, path, node.lineno, target)


def layer(module: str) -> int:
    return LAYERS[module.partition(".")[0]]


def upward(root: Path) -> list[str]:
    """Imports of a module from a higher layer (packages on one layer may import each other)."""
    problems = []
    for found in imports(root):
        source, target = found.source.partition(".")[0], found.target.partition(".")[0]
        if layer(found.target) > layer(found.source):
            below = sorted(name for name, level in LAYERS.items() if level < LAYERS[source])
            allowed = f"only {', '.join(below)}" if below else "no other first-party package"
            problems.append(
                f"{found.where(root)}: {target} (layer {LAYERS[target]}) sits above {source} (layer "
                f"{LAYERS[source]}); {source} may import {allowed}"
            )
    return problems


def cycles(root: Path) -> list[str]:
    """Each set of modules that import each other in a circle, with one import per arrow of it."""
    edges: dict[str, dict[str, Import]] = {}
    for found in imports(root):
        edges.setdefault(found.source, {}).setdefault(found.target, found)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    problems = []
    for component in components:
        members = set(component)
        arrows = [
            edges[a][b].where(root) for a in component for b in sorted(edges.get(a, {})) if b in members
        ]
        problems.append(f"import cycle among {', '.join(component)}: " + "; ".join(arrows))
    return problems


def test_no_import_runs_upward_and_no_modules_form_a_cycle() -> None:
    problems = upward(PROJECT_ROOT) + cycles(PROJECT_ROOT)
    assert not problems, "imports must point down the layers, without cycles:\n" + "\n".join(problems)


def test_the_check_names_the_file_and_import_of_an_upward_import_and_of_a_cycle(tmp_path: Path) -> None:
    files = {
        "tradai_core/__init__.py": "",
        "tradai_core/rules.py": "def f():\n    from strategies.config import X\n",
        "strategies/__init__.py": "",
        "strategies/config.py": "X = 1\n",
        "jobs/__init__.py": "",
        "jobs/a.py": "from jobs import b\n",
        "jobs/b.py": "import jobs.a\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    [up] = upward(tmp_path)
    assert up.startswith("tradai_core/rules.py:2 imports strategies.config: strategies (layer 1) sits above")
    [cycle] = cycles(tmp_path)
    assert (
        cycle == "import cycle among jobs.a, jobs.b: jobs/a.py:1 imports jobs.b; jobs/b.py:1 imports jobs.a"
    )
