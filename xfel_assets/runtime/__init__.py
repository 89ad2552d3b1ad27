"""How runs execute: the run launcher and its forkserver, the executor, the daemon and its control, SLURM, Dagster's GraphQL API.

The one place that uses Dagster's private API (``dagster._…``, ``dagster_graphql``): its patches in
:mod:`~xfel_assets.runtime.dagster_patches`, the private names the definitions need in
:mod:`~xfel_assets.runtime.dagster_names`. ``tests/test_dagster_contract.py`` asserts that each name we import,
patch or read exists with the signature we use, and that each module constant we set is still read where it
matters; a private import not listed there fails it too.

The patches that remain, each because Dagster 1.13 has no public way to the same behaviour (measured costs in
their docstrings):

- the daemon's loop interval (30 s; an asset backfill advances one level of the graph per round), its sensor
  loop (5 s) and its code location reload (every 60 s, a full load; ours when the files changed, and it says
  which files it loaded): module constants and ``DagsterDaemonController.check_workspace_freshness``;
- the schedule storage's table checks, remembered once true (40 % of an idle daemon's CPU with SQLite);
- a sensor tick's instance opened once per process, not per tick (two thirds of an idle tick's CPU);
- a run whose steps all wait for pool slots sleeps (``interval_to_next_pending_claim_check`` is never
  positive in 1.13: the executor spun at full CPU).

Private names used without patching: Dagster's run worker (``_execute_run_command_body``, run by our
forkserver launcher), the multiprocess executor's creation (our pools and forkserver preload), the GraphQL
schema and an in-process code location (backfills launched as the web UI launches them, without a code server),
and the asset graph subset a sensor's run request needs to start an asset backfill.
"""
