"""MkDocs hooks: the home page is the repository's README; the configuration reference is generated from the code.

The reference table of ``beamtime.yaml`` is made from the configuration's own models (``xfel_core.config``): every
key, its type, its default and its description (the ``#:`` comment above the field), so it cannot drift from
what is validated. ``reference/configuration.md`` marks where it goes with ``<!-- generated: configuration keys -->``.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from pathlib import Path

MARK = "<!-- generated: configuration keys -->"


def on_page_read_source(page, config) -> str | None:
    """The README as the source of index.md (one text for GitHub and the site)."""
    if page.file.src_uri != "index.md":
        return None
    text = (Path(config.config_file_path).parent / "README.md").read_text()
    return text.replace("[`docs/`](docs/)", "`docs/`").replace("](docs/", "](")


def on_page_markdown(markdown: str, page, config, files) -> str:
    """The configuration reference's table, generated where the page marks it."""
    return markdown.replace(MARK, configuration_table()) if MARK in markdown else markdown


def field_comments(cls: type) -> dict[str, str]:
    """{field: its ``#:`` comment} of a class, from its source (the comment lines right above each field)."""
    out, comment = {}, []
    for line in inspect.getsource(cls).splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#:"):
            comment.append(stripped[2:].strip())
            continue
        m = re.match(r"^    (\w+)\s*:", line)
        if m and comment:
            out[m[1]] = " ".join(comment)
        comment = [] if not stripped.startswith("#") else comment
    return out


def _models(annotation) -> list[type]:
    """The pydantic models inside a field's annotation (``X | None``, ``list[X]``, ``Annotated[X, ...]``)."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _type_name(annotation) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return {"str": "text", "Path": "path", "NoneType": "null"}.get(annotation.__name__, annotation.__name__)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " or ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {_type_name(args[0])} to {_type_name(args[1])}"
    return str(annotation).replace("typing.", "")


def _default(field) -> str:
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        return "(the keys below)"
    return f"`{json.dumps(value, default=str)}`"


def configuration_rows(model=None, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) of every configuration key, depth first, nested models after their key."""
    if model is None:
        from xfel_core.config import BeamtimeConfig

        model = BeamtimeConfig
    comments = {k: v for base in reversed(model.__mro__) if hasattr(base, "model_fields") and base.__module__ == model.__module__
                for k, v in field_comments(base).items()}  # a base's fields too (Roi's y and x are Rect's)
    rows = []
    for name, field in model.model_fields.items():
        if name == "source_file":  # set by the loader, not written
            continue
        key = prefix + name
        nested = _models(field.annotation)
        listed = typing.get_origin(field.annotation) is list or any(
            typing.get_origin(a) is list for a in typing.get_args(field.annotation))
        kind = "mapping (the keys below)" if nested and not listed else _type_name(field.annotation)
        about = comments.get(name) or (inspect.getdoc(nested[0]) or "").split("\n\n")[0].replace("\n", " ") \
            if len(nested) == 1 else comments.get(name, "")
        rows.append((key, kind, _default(field), about))
        for sub in nested:
            rows += configuration_rows(sub, key + ("[]." if listed else "."))
    return rows


def configuration_table() -> str:
    """The reference table in Markdown."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key, kind, default, description in configuration_rows():
        lines.append(f"| `{key}` | {cell(kind)} | {cell(default)} | {cell(description)} |")
    return "\n".join(lines)
