"""The layout's rules: no import cycles among our modules (function-level imports count), and xfel_core never imports Dagster."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("xfel_core", "xfel_assets")


def module_files() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """Our modules that ``name`` imports anywhere in its file (top level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        found |= {c for c in candidates if c in known and c != name}
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    files = module_files()
    graph = {m: imported_modules(m, p, set(files)) for m, p in files.items()}
    assert cycles(graph) == []
    # The detector finds a cycle where there is one.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def absolute_imports(path: Path) -> list[str]:
    """The modules named by the absolute imports of a file (top level or inside functions)."""
    tree = ast.parse(path.read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    return names + [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level]


def test_xfel_core_never_imports_dagster():
    for name, path in module_files().items():
        if name.startswith("xfel_core"):
            assert not [n for n in absolute_imports(path) if n.split(".")[0].startswith("dagster")], path


def test_only_the_runtime_uses_dagsters_private_api():
    """dagster._… and dagster_graphql are imported in xfel_assets/runtime/ only: a Dagster upgrade is checked there."""
    private = {name: [n for n in absolute_imports(path) if n.startswith(("dagster._", "dagster_graphql"))]
               for name, path in module_files().items()}
    assert {name: found for name, found in private.items() if found and not name.startswith("xfel_assets.runtime")} == {}
    assert private["xfel_assets.runtime.dagster_names"]  # the rule sees such imports where they are


def test_the_workflow_wings_do_not_import_each_other():
    """xfel_core/euxfel, insitu and events share the rooms at the top, never each other's modules."""
    files = module_files()
    wings = ("xfel_core.euxfel", "xfel_core.insitu", "xfel_core.events")
    for name, path in files.items():
        own = next((w for w in wings if name == w or name.startswith(w + ".")), None)
        if own is None:
            continue
        others = {m for m in imported_modules(name, path, set(files))
                  if any(m == w or m.startswith(w + ".") for w in wings if w != own)}
        assert not others, (name, others)
