"""MkDocs hooks: the home page is the repository's README, with its links into docs/ made relative to the site."""

from __future__ import annotations

from pathlib import Path


def on_page_read_source(page, config) -> str | None:
    """The README as the source of index.md (one text for GitHub and the site)."""
    if page.file.src_uri != "index.md":
        return None
    text = (Path(config.config_file_path).parent / "README.md").read_text()
    return text.replace("[`docs/`](docs/)", "`docs/`").replace("](docs/", "](")
