"""The documentation site: it builds with MkDocs' strict checking, every page is in its navigation, the home page is the README."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test_docs_commands import REPO, site_pages


def test_the_site_builds_strict_with_every_page_in_its_navigation(tmp_path):
    pages = site_pages()
    assert all(p.is_file() for p in pages), [p for p in pages if not p.is_file()]
    on_disk = {p for p in (REPO / "docs").rglob("*.md")} - {REPO / "docs" / "index.md"}
    assert on_disk == set(pages[1:]), f"pages not in mkdocs.yml's nav: {sorted(on_disk - set(pages))}"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    out = subprocess.run([str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "-d", str(tmp_path / "site")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    home = (tmp_path / "site" / "index.html").read_text()
    assert "Set-up: two commands" in home and 'href="tutorials/first-beamtime/"' in home  # the README, links relative
    assert (tmp_path / "site" / "howto" / "euxfel" / "index.html").is_file()


def test_the_readme_is_short_and_points_to_the_site():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 120
    for page in site_pages()[1:]:
        if page.parent.name in ("tutorials", "howto", "reference") or page.parent == REPO / "docs":
            assert f"docs/{page.relative_to(REPO / 'docs')}" in readme, f"the README does not point to {page}"


def test_the_configuration_reference_is_generated_with_every_key_described(tmp_path):
    """The reference table is made from xfel_core.config's models: every key there, each with its description."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "docs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    rows = hooks.configuration_rows()
    keys = [key for key, *_ in rows]
    for key in ("raw_root", "detector.type", "scan_variable.binning.edges", "completeness.settle_seconds",
                "execution.variable_timeout_s", "insitu.rois[].role", "events.pal.pump_rate", "slurm.jobs.insitu_frames.mem"):
        assert key in keys, key
    assert not [key for key, _, _, about in rows if not about], "keys without a #: comment in xfel_core/config.py"
    page = (REPO / "docs" / "reference" / "configuration.md").read_text()
    assert hooks.MARK in page and "| `" not in page  # the table is the generated one, not a hand copy
    assert "| `execution.variable_memory_gb` | float | `8.0` |" in hooks.configuration_table()
