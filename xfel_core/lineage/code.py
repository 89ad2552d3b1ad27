"""Which source code computes an asset: found by following its make function's names, never listed by hand.

From the make function, every name it uses is followed: to the functions and classes of its own
module, and through its imports to the functions and classes of the other xfel_core modules
(``from .cube import write_cube``, ``euxfel.open_run``), recursively. An asset's code is the source of
every function and class so reached, with the module-level statements (constants, imports) of
their modules. Editing a function changes the code version of exactly the assets that reach it.
The lineage bookkeeping (``xfel_core.lineage``), the workflow declarations and the demo writers
are not the science and are not followed.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PACKAGE = "xfel_core"
NOT_SCIENCE = ("xfel_core.lineage", "xfel_core.workflows", "xfel_core.demo")
DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def module_path(name: str) -> Path | None:
    """The file of an importable module, or None (a name inside a module, or not a module)."""
    loaded = sys.modules.get(name)
    if loaded is not None and str(getattr(loaded, "__file__", None) or "").endswith(".py"):
        return Path(loaded.__file__)
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):
        return None
    return Path(spec.origin) if spec is not None and spec.origin and spec.origin.endswith(".py") else None


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


@dataclass(frozen=True)
class _Module:
    name: str
    source: str
    defs: dict[str, ast.AST]
    #: local name -> (module, name in it) for ``from m import x``; (module, None) for a module object
    imports: dict[str, tuple[str, str | None]]
    rest: str  # the module-level statements that are not functions or classes


def _ours(module: str) -> bool:
    return (module == PACKAGE or module.startswith(PACKAGE + ".")) and not module.startswith(NOT_SCIENCE)


@lru_cache(maxsize=None)
def _module(name: str) -> _Module | None:
    path = module_path(name)
    if path is None:
        return None
    source = path.read_text()
    tree = ast.parse(source)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    imports: dict[str, tuple[str, str | None]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _absolute(node, package)
            for a in node.names:
                sub = f"{target}.{a.name}"
                imports[a.asname or a.name] = (sub, None) if module_path(sub) is not None else (target, a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                imports[a.asname or a.name.split(".")[0]] = (a.name if a.asname else a.name.split(".")[0], None)
    defs = {n.name: n for n in tree.body if isinstance(n, DEFS)}
    rest = "\n".join(ast.get_source_segment(source, n) or "" for n in tree.body if not isinstance(n, DEFS))
    return _Module(name, source, defs, imports, rest)


def imported_modules(name: str) -> set[str]:
    """The modules a module imports anywhere in its file (functions' imports too)."""
    mod = _module(name)
    return set() if mod is None else {m for m, _ in mod.imports.values()}


def _segment(mod: _Module, node: ast.AST) -> str:
    """A function's or class's source, its decorators included."""
    lines = mod.source.splitlines()
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return "\n".join(lines[first - 1: node.end_lineno])


def reached(fn: Callable) -> dict[str, list[str]]:
    """``{module: [its functions and classes]}`` that ``fn`` reaches through the names it uses."""
    fn = inspect.unwrap(fn)
    out: dict[str, set[str]] = {}
    own = fn.__module__  # a beamtime's own workflow file is followed too
    todo = [(own, fn.__name__)]
    seen = set()
    while todo:
        m, name = todo.pop()
        if (m, name) in seen or not (_ours(m) or m == own):
            continue
        seen.add((m, name))
        mod = _module(m)
        if mod is None:
            continue
        if name not in mod.defs:
            if name in mod.imports:  # a name re-exported from another module
                todo.append(mod.imports[name] if mod.imports[name][1] else (mod.imports[name][0], name))
            continue
        out.setdefault(m, set()).add(name)
        for n in ast.walk(mod.defs[name]):
            if isinstance(n, ast.Name):
                if n.id in mod.defs:
                    todo.append((m, n.id))
                elif n.id in mod.imports and mod.imports[n.id][1] is not None:
                    todo.append(mod.imports[n.id])
            elif isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in mod.imports:
                target, obj = mod.imports[n.value.id]
                if obj is None:  # module.attribute
                    todo.append((target, n.attr))
    return {m: sorted(names) for m, names in sorted(out.items())}


def code_text(fn: Callable) -> list[str]:
    """The source an asset's code version hashes: per module reached, its module-level statements and the reached definitions."""
    parts = []
    for m, names in reached(fn).items():
        mod = _module(m)
        parts += [f"# {m}", mod.rest] + [_segment(mod, mod.defs[n]) for n in names]
    return parts


def code_modules(fn: Callable) -> list[str]:
    """The xfel_core modules whose code ``fn`` reaches."""
    return list(reached(fn))
