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
import hashlib
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PACKAGE = "xfel_core"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
NOT_SCIENCE = ("xfel_core.lineage", "xfel_core.workflows", "xfel_core.demo")
DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def module_path(name: str) -> Path | None:
    """The file of one of our modules (or of a loaded workflow file), or None (a name inside a module, not ours)."""
    loaded = sys.modules.get(name)
    if loaded is not None and str(getattr(loaded, "__file__", None) or "").endswith(".py"):
        return Path(loaded.__file__)
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    base = PACKAGE_DIR.parent.joinpath(*name.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


@dataclass(frozen=True)
class _Module:
    name: str
    lines: list[str]
    defs: dict[str, ast.AST]
    #: local name -> (module, name in it) for ``from m import x``; (module, None) for a module object
    imports: dict[str, tuple[str, str | None]]
    rest: str  # the module-level statements that are not functions or classes


def _ours(module: str) -> bool:
    return (module == PACKAGE or module.startswith(PACKAGE + ".")) and not module.startswith(NOT_SCIENCE)


@cache
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
    lines = source.splitlines()
    # Top-level statements start at column 0: whole lines are their source.
    rest = "\n".join("\n".join(lines[n.lineno - 1: n.end_lineno]) for n in tree.body if not isinstance(n, DEFS))
    return _Module(name, lines, defs, imports, rest)


def imported_modules(name: str) -> set[str]:
    """The modules a module imports anywhere in its file (functions' imports too)."""
    mod = _module(name)
    return set() if mod is None else {m for m, _ in mod.imports.values()}


def _segment(mod: _Module, node: ast.AST) -> str:
    """A function's or class's source, its decorators included."""
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return "\n".join(mod.lines[first - 1: node.end_lineno])


@cache
def _uses(module: str, name: str) -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
    """The names a definition uses, and its ``imported_name.attribute`` pairs."""
    mod = _module(module)
    node = mod.defs[name]
    names, attributes = set(), set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            names.add(n.id)
        elif isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in mod.imports:
            attributes.add((n.value.id, n.attr))
    # A parameter shadows the module's name (a user variable's input named as the variable it reads).
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        a = node.args
        names -= {p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if p is not None}
    return frozenset(names), frozenset(attributes)


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
        names, attributes = _uses(m, name)
        for n in names:
            if n in mod.defs:
                todo.append((m, n))
            elif n in mod.imports and mod.imports[n][1] is not None:
                todo.append(mod.imports[n])
        for base, attr in attributes:
            target, obj = mod.imports[base]
            if obj is None:  # module.attribute
                todo.append((target, attr))
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


@cache
def sources_digest() -> str:
    """A hash of the bytes of every source file of the package: what an asset's code can reach in it."""
    h = hashlib.sha256()
    for file in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = file.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        path = module_path(name) or file  # as the code is read (:func:`_module`)
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def function_key(fn: Callable) -> str:
    """What :func:`code_text` of ``fn`` depends on besides the package's sources: its name and its own module's file."""
    fn = inspect.unwrap(fn)
    key = f"{fn.__module__}:{fn.__qualname__}"
    path = module_path(fn.__module__)
    if path is not None and not path.resolve().is_relative_to(PACKAGE_DIR):
        key += ":" + _file_digest(path)
    return key


@cache
def _file_digest(path: Path) -> str:
    """A file's bytes, hashed once per process (a variables file serves each of its variables)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def forget() -> None:
    """Read the source files again at the next call (after a file was edited in this process)."""
    _module.cache_clear()
    _uses.cache_clear()
    sources_digest.cache_clear()
    _file_digest.cache_clear()
