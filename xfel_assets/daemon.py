"""`python -m xfel_assets.daemon run -w workspace.yaml`: the Dagster daemon with a shorter loop interval.

Dagster's daemons (backfills above all) wait DEFAULT_DAEMON_INTERVAL_SECONDS (30 s, a constant of
dagster._daemon.controller, read at every loop) between rounds. An asset backfill of runs x
modules advances one level of the asset graph per round (run inputs and darks, then modules,
then cubes), so a 30 s wait costs a whole-beamtime reprocessing minutes of idling. This entry
point sets the interval from $XFEL_DAEMON_INTERVAL_S (default 5 s) and then runs Dagster's own
daemon command line unchanged; `xfel-assets backfill` starts it when no daemon is running.
"""

from __future__ import annotations

import os
import sys

import dagster._daemon.controller as controller
from dagster._daemon.cli import main as dagster_daemon_main

INTERVAL_ENV = "XFEL_DAEMON_INTERVAL_S"
DEFAULT_INTERVAL_S = 5


def main() -> None:
    controller.DEFAULT_DAEMON_INTERVAL_SECONDS = int(os.environ.get(INTERVAL_ENV) or DEFAULT_INTERVAL_S)
    sys.argv[0] = "dagster-daemon"
    dagster_daemon_main()


if __name__ == "__main__":
    main()
