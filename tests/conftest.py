"""Shared fixtures: small runs in the real European XFEL raw layout, written per test session.

The Dagster definitions read the module list from $XFEL_BEAMTIME when imported, so the session
beamtime is created and the variable set here, before any test imports xfel_assets.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from xfel_core.demo.beamtime import RunSpec, beamtime_config, write_config, write_run

MODULES = [0, 1]
SHAPE = (16, 32)
PATTERN = ["pumped", "unpumped"]

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="xfel-assets-tests-"))
SESSION_BEAMTIME = _SESSION_DIR / "beamtime"


def make_beamtime(root: Path, runs: list[RunSpec], dark: RunSpec | None = None, **config) -> Path:
    """Write the runs (and a dark run) under root/raw and a beamtime.yaml for them."""
    if dark is not None:
        write_run(root / "raw", dark)
    for spec in runs:
        write_run(root / "raw", spec)
    cfg = beamtime_config(root, MODULES, SHAPE, dark_run=None if dark is None else dark.run_number,
                          frame_pattern=runs[0].frame_pattern if runs else PATTERN)
    cfg.update(config)
    return write_config(root, cfg)


def small_run(run_number: int, **kw) -> RunSpec:
    kw.setdefault("ntrains", 12)
    kw.setdefault("frames_per_train", 6)
    return RunSpec(run_number=run_number, modules=MODULES, module_shape=SHAPE, **kw)


def dark_run(run_number: int = 1, frames: int = 6) -> RunSpec:
    return RunSpec(run_number=run_number, ntrains=8, frames_per_train=frames, modules=MODULES,
                   module_shape=SHAPE, dark=True)


# The session beamtime the Dagster tests run on: a dark run and two pump-probe runs.
_SESSION_CONFIG = make_beamtime(
    SESSION_BEAMTIME,
    [small_run(2, trains_per_sequence=5, missing_trains={0: [3]}, zero_frame_trains=[7],
               control_missing_trains=[10]), small_run(3)],
    dark=dark_run(), chunk_frames=7,
)
os.environ["XFEL_BEAMTIME"] = str(_SESSION_CONFIG)
# Tests never touch the user's Dagster home.
(_SESSION_DIR / "dagster_home").mkdir()
os.environ["DAGSTER_HOME"] = str(_SESSION_DIR / "dagster_home")


@pytest.fixture(scope="session")
def session_beamtime() -> Path:
    return _SESSION_CONFIG


def reduce_dssc_run(cfg, run: str) -> None:
    """Every DSSC output of a run (darks included), by the xfel_core functions the assets call, without Dagster."""
    from xfel_core.euxfel import pipeline

    for make in (pipeline.make_raw_run, pipeline.make_scan_variable, pipeline.make_framemask):
        make(cfg, run)
    for m in cfg.detector.modules:
        if cfg.dark_run is not None:
            pipeline.make_dark(cfg, m)
        pipeline.make_preprocessed_module(cfg, run, m)
    pipeline.make_binned_cube(cfg, run)


def new_run_sensor_tick(instance, config_path: Path, cursor):
    """One evaluation of new_run_sensor on ``instance``: (result, the cursor after it)."""
    import dagster as dg

    from xfel_assets.definitions import defs
    from xfel_assets.defs.resources import resources_for
    from xfel_assets.defs.sensors import new_run_sensor

    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                  resources=resources_for(config_path))
    result = new_run_sensor(ctx)
    return result, (result.cursor if isinstance(result, dg.SensorResult) else None) or ctx.cursor


def execute_requests(instance, config_path: Path, result) -> list:
    """Run a sensor result's run requests as the daemon would (partitions added first); their Dagster results."""
    import dagster as dg

    from xfel_assets.defs.assets import ALL_ASSETS
    from xfel_assets.defs.resources import resources_for

    for req in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return [dg.materialize(ALL_ASSETS, selection=req.asset_selection, partition_key=req.partition_key,
                           instance=instance, resources=resources_for(config_path), tags=req.tags,
                           raise_on_error=False)
            for req in result.run_requests]


#: Files whose tests drive a daemon, a cluster or a browser, longest first (measured with two workers).
#: `make test` hands whole files to its two workers in this order (pytest-xdist ``--dist loadfile
#: --no-loadscope-reorder``: a file's module-scoped cluster or web server starts once, and xdist does
#: not put the files with the most tests first), so that no worker is left with one of them alone at the end.
LONGEST_FIRST = ("test_soak.py", "test_docs_commands.py", "test_live_ui.py", "test_reliability_killed.py", "test_workflow_model.py", "test_slurm.py", "test_backfill.py",
                 "test_e2e_ui.py", "test_completeness.py", "test_postgres.py", "test_reliability_daemon.py",
                 "test_reliability.py", "test_dagster.py", "test_daemon.py", "test_recalibration.py",
                 "test_insitu_dagster.py", "test_notebooks.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
