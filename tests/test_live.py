"""A beamtime run live: the failures seen while one `xfel-assets ui` ran for days, each pinned by a test."""

from __future__ import annotations

import pytest
from dagster._core.definitions.utils import is_valid_title_and_reason

from xfel_core.lineage.model import Scope

from xfel_assets.cli import backfill as bf
from xfel_assets.cli.main import _counted, _covered


@pytest.mark.parametrize("stale_only", [False, True])
@pytest.mark.parametrize("scope", [
    Scope(runs=["r0002", "r0003", "r0004"], event_runs=["r0002", "r0003"], samples=["GaN01"]),  # the demo's
    Scope(runs=[f"r{n:04d}" for n in range(2, 400, 3)], event_runs=[f"r{n:04d}" for n in range(2, 400, 7)],
          samples=[f"sample_with_a_long_name_{i}" for i in range(40)]),
])
def test_the_backfill_title_is_one_dagster_accepts(scope, stale_only):
    """The README's `backfill --stale-only` on the demo was refused: its title had 102 characters (Dagster: 100)."""
    title = bf.backfill_title(stale_only, _covered(scope), _counted(scope))
    assert is_valid_title_and_reason(title) == (True, None), title
    assert title.startswith("xfel-assets backfill" + (" --stale-only" if stale_only else ""))
    assert "3 runs" in title or "133 runs" in title
