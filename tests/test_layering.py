"""The stage rules (DESIGN: graph/ -> compile/ -> runtime/ -> the front), read from the
sources: every import, at module level or inside a function, of every module.

- graph/ imports nothing of compile/, runtime/ or the front;
- compile/ imports nothing of runtime/ or the front;
- runtime/ imports nothing of the front;
- no import cycle among the modules, except the ones listed in KNOWN_CYCLES, which are
  still to be split (issue 28): a new cycle fails, and so does a listed one that is gone
  (then shrink the list).
"""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Package -> folder, as pyproject.toml maps them.
PACKAGES = {
    "conv1d_transpose": "conv1d_transpose",
    "conv1d_transpose.cli": "conv1d_transpose/cli",
    "conv1d_transpose.graph": "graph",
    "conv1d_transpose.compile": "compile",
    "conv1d_transpose.compile.kernels": "compile/kernels",
    "conv1d_transpose.runtime": "runtime",
}
STAGES = ("graph", "compile", "runtime")
FORBIDDEN = {"graph": {"compile", "runtime", "front"}, "compile": {"runtime", "front"},
             "runtime": {"front"}}

# Strongly connected sets of modules still to be split (issue 28).
KNOWN_CYCLES = [
]


def modules() -> dict[str, pathlib.Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            name = package if path.name == "__init__.py" else f"{package}.{path.stem}"
            found[name] = path
    return found


def imports_of(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """The package's modules that `name` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            # `from pkg import name`: the submodule pkg.name where there is one, else pkg.
            for alias in node.names:
                target = f"{module}.{alias.name}"
                found.add(target if target in known else module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {item for item in found if item in known and item != name}


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else "front"


def short(module: str) -> str:
    return module.partition(".")[2] or module


def cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.add(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_reader_finds_every_stage_and_the_imports_inside_functions():
    edges = graph()
    assert {stage(m) for m in edges} == {"graph", "compile", "runtime", "front"}
    # tuning imports the thread setup inside a function: seen.
    assert "conv1d_transpose.compile.machine" in edges["conv1d_transpose.compile.tuning"]
    # (a relative import two levels up, inside a function)
    assert "conv1d_transpose.graph.reference" in edges["conv1d_transpose.compile.tuning"]


@pytest.mark.parametrize("lower", STAGES)
def test_a_stage_imports_nothing_of_the_stages_after_it(lower):
    breaks = sorted(f"{short(a)} -> {short(b)}" for a, targets in graph().items()
                    if stage(a) == lower for b in targets if stage(b) in FORBIDDEN[lower])
    assert breaks == []


def test_no_import_cycles_but_the_known_ones():
    found = [{short(m) for m in component} for component in cycles(graph())]
    new = [sorted(c) for c in found if not any(c <= known for known in KNOWN_CYCLES)]
    gone = [sorted(k) for k in KNOWN_CYCLES if not any(c & k for c in found)]
    assert new == [], f"new import cycles: {new}"
    assert gone == [], f"cycles no longer there (take them off KNOWN_CYCLES): {gone}"


def test_the_cycle_finder_finds_a_planted_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [{"a", "b", "c"}]
