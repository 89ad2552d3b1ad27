"""The Dagster home of xfel-assets: its dagster.yaml and workspace.yaml, made once under a lock, and checked."""

from __future__ import annotations

import os
from pathlib import Path

from xfel_core.exceptions import XfelError

DAGSTER_YAML = """\
# Dagster instance of xfel-assets (see README, "Dagster instance").
telemetry:
  enabled: false
{storage}run_launcher:
  # Each run forked from a server with Dagster and our code imported (xfel_assets/runtime/launcher.py).
  module: xfel_assets.launcher
  class: ForkserverRunLauncher
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
concurrency:
  runs:
    max_concurrent_runs: {max_runs}
  pools:
    # Module steps (dark, preprocessed_module) at once across all runs: execution.max_module_steps.
    default_limit: {max_module_steps}
retention:
  # The new-run sensor ticks every few seconds: keep its skipped ticks one day.
  sensor:
    purge_after_days:
      skipped: 1
      failure: 30
      success: -1
backfills:
  # Submit a backfill's runs from several threads (each submission plans a run).
  use_threads: true
  num_submit_workers: 4
run_monitoring:
  # A run whose worker process is gone (killed) is marked failed (the launcher's health check, see
  # xfel_assets/runtime/liveness.py) and its pool slots freed soon after.
  enabled: true
  poll_interval_seconds: 15
  # A run launched by a daemon that was killed before the run started never starts: failed after this
  # (Dagster: 180 s, during which the new-run sensor's chain of that run waits).
  start_timeout_seconds: 60
  free_slots_after_run_end_seconds: 10
"""

POSTGRES_STORAGE = """\
storage:
  postgres:
    postgres_url:
      env: XFEL_DAGSTER_POSTGRES_URL
"""

WORKSPACE_YAML = """\
load_from:
  - python_module:
      module_name: xfel_assets.definitions
      location_name: xfel_assets
"""

#: With this variable set when the Dagster home is created, the instance stores runs, events and
#: schedules in that PostgreSQL database instead of SQLite files in the home folder.
POSTGRES_ENV = "XFEL_DAGSTER_POSTGRES_URL"


#: Written once a new Dagster home's storages exist: a home without it is created (again) under the lock.
HOME_READY = ".xfel-home-ready"


def ensure_dagster_home(home: Path, max_runs: int, max_module_steps: int | None = None) -> Path:
    """Create the Dagster home with our dagster.yaml (SQLite, or PostgreSQL if $XFEL_DAGSTER_POSTGRES_URL is set) and workspace.yaml.

    Commands, a daemon and its code server starting together on a new home would each create and
    stamp the storages' schemas, and alembic fails on the race ("more than one head", "UNIQUE
    constraint failed: alembic_version"), leaving a home no command can open. So the home is made
    under an exclusive file lock, its storages created once, and marked ready last.
    """
    import fcntl

    home.mkdir(parents=True, exist_ok=True)
    if (home / HOME_READY).exists():
        return home
    with open(home / ".xfel-home.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (home / HOME_READY).exists():  # made by the command that held the lock before us
            return home
        cfg = home / "dagster.yaml"
        if not cfg.exists():
            storage = POSTGRES_STORAGE if os.environ.get(POSTGRES_ENV) else ""
            tmp = cfg.with_name(".dagster.yaml.tmp")
            tmp.write_text(DAGSTER_YAML.format(storage=storage, max_runs=max_runs,
                                               max_module_steps=max_module_steps or max_runs))
            tmp.rename(cfg)
        ws = home / "workspace.yaml"
        if not ws.exists():
            ws.write_text(WORKSPACE_YAML)
        check_dagster_home(home)
        (home / HOME_READY).write_text("storages created and at the current schema\n")
    return home


def check_dagster_home(home: Path) -> None:
    """Open the home's storages (creating a new one's), migrating an old schema; a clear error if they are damaged."""
    import dagster as dg

    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            instance.get_runs(limit=1)
            instance.get_dynamic_partitions("runs")
    except Exception as first:  # alembic, sqlalchemy and Dagster errors alike
        try:  # an older or half-stamped schema: what `dagster instance migrate` does
            with dg.DagsterInstance.from_config(str(home)) as instance:
                instance.upgrade()
                instance.get_runs(limit=1)
        except Exception as e:
            why = lambda err: f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"  # noqa: E731
            again = "" if why(e) == why(first) else f" ({why(e)})"
            raise XfelError(
                f"the Dagster home {home} cannot be opened ({why(first)}); migrating it failed too{again}. It holds Dagster's records only (no data: outputs are "
                f"files beside the raw data): move it aside and run the command again, which creates a new one "
                f"(then `xfel-assets backfill --stale-only` finds what the records no longer know)") from None
