"""The packages only point down (docs/architecture.md gives the order and why).

Every ``import`` of a mobilenets module is read from the source (at module level and inside
functions alike), so an import hidden in a function cannot get around the order: a module may
import its own package's modules and those of lower layers, never a higher layer, and the
imports between modules form no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mobilenets

ROOT = Path(mobilenets.__file__).parent

# lowest first; packages in one layer do not import each other
LAYERS = (
    ("version", "files", "layers", "data"),
    ("models",),
    ("weights",),
    ("cost",),
    ("compress",),
    ("training",),          # the task-agnostic engine
    ("tasks",),             # classification, ... on the engine
    ("deploy",),            # portable export, then one folder per runtime
    ("cli",),
    ("__init__", "__main__"),   # the public facade: ``import mobilenets``
)
LEVEL = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(name: str) -> bool:
    return (ROOT.parent / Path(*name.split("."))).is_dir()


def exists(name: str) -> bool:
    path = ROOT.parent / Path(*name.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


def imports(path: Path) -> set[str]:
    """The mobilenets modules ``path`` imports, resolved to modules (``from . import x``
    names the submodule x when there is one)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "mobilenets"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "mobilenets":
                continue
            subs = [f"{target}.{a.name}" for a in node.names if exists(f"{target}.{a.name}")]
            found |= set(subs) if len(subs) == len(node.names) else {target, *subs}
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted(ROOT.rglob("*.py"))}


def layer_of(name: str) -> str:
    parts = name.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def upward(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in edges.items():
        for dst in targets:
            a, b = layer_of(src), layer_of(dst)
            if a == b:
                continue
            if LEVEL[b] >= LEVEL[a]:
                bad.append(f"{src} -> {dst} ({a} may not import {b})")
    return sorted(bad)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_every_package_has_a_layer():
    packages = {layer_of(module_name(p)) for p in ROOT.rglob("*.py")}
    assert packages <= set(LEVEL), f"add {sorted(packages - set(LEVEL))} to LAYERS and to " \
                                   f"docs/architecture.md"


def test_no_import_points_up():
    assert upward(graph()) == []


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_the_checks_can_fail():
    """The checks on a made-up graph with an upward import and a cycle."""
    edges = {"mobilenets.models.a": {"mobilenets.weights.b"},
             "mobilenets.weights.b": {"mobilenets.models.a"},
             "mobilenets.deploy.c": {"mobilenets.training.d"}, "mobilenets.training.d": set()}
    assert upward(edges) == ["mobilenets.models.a -> mobilenets.weights.b "
                             "(models may not import weights)"]
    assert cycles(edges) == [["mobilenets.models.a", "mobilenets.weights.b"]]


def test_function_level_imports_are_read(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from mobilenets.cli import main\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path / "mobilenets"
    try:
        ROOT.mkdir()
        (ROOT / "cli").mkdir()
        (ROOT / "cli" / "main.py").write_text("")
        (ROOT / "models").mkdir()
        target = ROOT / "models" / "x.py"
        target.write_text(src.read_text())
        assert imports(target) == {"mobilenets.cli.main"}
    finally:
        ROOT = saved


@pytest.mark.parametrize("doc", ["docs/architecture.md"])
def test_architecture_doc_names_every_package(doc):
    text = (ROOT.parent.parent / doc).read_text()
    missing = [p for layer in LAYERS for p in layer
               if p not in ("version", "__init__", "__main__") and f"`{p}`" not in text]
    assert missing == []
