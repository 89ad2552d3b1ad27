"""Every change xfel-assets makes to Dagster's behaviour through its private API, in one place (Dagster 1.13).

Each patch says what Dagster does, what that cost here (measured) and what we do instead. They are
applied by the module that needs them, once per process (calling a patch again does nothing):

- :func:`patch_run_execution` (the executor): steps waiting for a pool slot sleep instead of spinning;
- :func:`patch_sensor_instance` (the sensors, in the code server): one instance per process, not per tick;
- :func:`patch_daemon` (``python -m xfel_assets.daemon``): a shorter loop interval, the code location
  reloaded only when its files changed, the schedule storage's schema checks remembered.

Other places that call Dagster's private API without changing it: the run launcher
(:mod:`xfel_assets.runtime.launcher`, Dagster's run worker), the backfill command (:mod:`xfel_assets.cli.backfill`,
the GraphQL schema and an in-process code location), the stage chains (:mod:`xfel_assets.defs.run_chains`).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import dagster as dg

from xfel_assets.runtime.launcher import workspace_fingerprint, write_loaded_code

_applied: set[str] = set()


def _once(name: str) -> bool:
    """True the first time ``name`` is asked for in this process."""
    if name in _applied:
        return False
    _applied.add(name)
    return True


# --- Run execution: steps waiting for pool slots -------------------------------------------------

def patch_run_execution() -> None:
    """A run whose steps all wait for pool slots held elsewhere sleeps until the next claim check.

    Dagster 1.13's ``interval_to_next_pending_claim_check`` returns min(0, ...), always <= 0, and the
    multiprocess executor does not sleep at all: such a run spun at full CPU.
    """
    if not _once("run_execution"):
        return
    from dagster._core.execution.plan.active import ActiveExecution
    from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

    def seconds_to_next_claim(self: InstanceConcurrencyContext) -> float:
        if not self._pending_claims or not self._pending_timeouts:
            return 0.0
        return max(0.0, min(self._pending_timeouts.values()) - time.time())

    get_steps_to_execute = ActiveExecution.get_steps_to_execute

    def get_steps_or_wait(self: ActiveExecution, limit: int | None = None):
        steps = get_steps_to_execute(self, limit)
        ctx = self._instance_concurrency_context
        if not steps and not self._in_flight and ctx is not None and ctx.has_pending_claims():
            time.sleep(min(max(ctx.interval_to_next_pending_claim_check(), 0.05), 5.0))
        return steps

    InstanceConcurrencyContext.interval_to_next_pending_claim_check = seconds_to_next_claim
    ActiveExecution.get_steps_to_execute = get_steps_or_wait


# --- Sensors: one instance per code server ------------------------------------------------------

_instances: dict[str, dg.DagsterInstance] = {}
_instances_lock = threading.Lock()


def patch_sensor_instance() -> None:
    """A sensor tick's ``context.instance`` is this process's instance of the tick's Dagster home, opened once.

    Dagster opens a new instance for every tick (its resources and its log need one): with SQLite,
    the storages and Alembic's migration scripts are loaded each time, two thirds of an idle tick's
    CPU (measured; with a tick a second, 14 % of a core in the code server, 3 % with this).
    """
    if not _once("sensor_instance"):
        return
    tick_instance = dg.SensorEvaluationContext.instance

    def process_instance(self: dg.SensorEvaluationContext) -> dg.DagsterInstance:
        if self._instance is None and self._instance_ref is not None:
            key = repr(self._instance_ref)
            with _instances_lock:
                if key not in _instances:
                    _instances[key] = dg.DagsterInstance.from_ref(self._instance_ref)
                self._instance = _instances[key]
        return tick_instance.fget(self)

    dg.SensorEvaluationContext.instance = property(process_instance, doc=tick_instance.__doc__)


# --- The daemon ---------------------------------------------------------------------------------

class _RoundInterval(float):
    """The backfill loop's interval, which waits ``max(0, interval - round_duration)`` after each round:
    here at least the round's own duration, so that evaluating a large backfill (seconds per round for
    thousands of partitions) takes at most half a core from the runs it launches."""

    #: The last round's duration (s): the least wait, also when a run's end wakes the loop early.
    last_round: float = 0.0

    def __sub__(self, round_duration: float) -> float:
        _RoundInterval.last_round = round_duration
        return max(float(self) - round_duration, round_duration)


#: Seconds between the looks for a run that ended while the backfill loop waits.
RUN_END_POLL_S = 0.5
_ENDED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


class _WakeOnRunEnd:
    """The backfill loop's shutdown event, whose wait between rounds also ends once a Dagster run has ended.

    An asset backfill advances one level of the asset graph per round (inputs, modules, cube, variables):
    waiting the whole interval after a level's runs have ended cost a backfill of one run about half an
    interval per level. The wait is never shorter than the round before it took."""

    def __init__(self, event: threading.Event, instance: dg.DagsterInstance):
        self._event, self._instance = event, instance

    def wait(self, timeout: float | None = None) -> bool:
        import datetime

        if timeout is None:
            return self._event.wait()
        start = time.monotonic()
        since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=_RoundInterval.last_round + 1)
        ended = dg.RunsFilter(statuses=_ENDED, updated_after=since)
        while True:
            left = timeout - (time.monotonic() - start)
            if left <= 0:
                return False
            if self._event.wait(min(RUN_END_POLL_S, left)):
                return True
            if time.monotonic() - start >= _RoundInterval.last_round and self._instance.get_runs_count(ended):
                return False


def _remember_true(method, keyed: bool = True):
    """``method(self, *args)`` cached per storage once it returned True (a table or an index, once there, stays).

    ``keyed=False``: the answer does not depend on the arguments (a database connection)."""
    def cached(self, *args):
        seen = self.__dict__.setdefault("_xfel_true", set())
        key = (method.__name__, args if keyed else ())
        if key in seen:
            return True
        found = method(self, *args)
        if found:
            seen.add(key)
        return found
    cached.__name__ = method.__name__
    return cached


def patch_daemon(interval_s: float, sensor_loop_s: float, workspace_reload_s: float, code_file: Path | None = None) -> None:
    """The daemon's loop interval, its sensor loop, its code location reloads and its schema checks.

    - ``DEFAULT_DAEMON_INTERVAL_SECONDS`` (30 s, read at every loop) becomes ``interval_s``: an
      asset backfill advances one level of the asset graph per round. The wait after a round is
      never shorter than the round took (:class:`_RoundInterval`), and ends early once a Dagster run
      has ended (:class:`_WakeOnRunEnd`, passed to the backfill loop as its shutdown event).
    - The sensor loop looks at the sensors every ``sensor_loop_s`` (Dagster: 5 s), so that a run
      is taken within its sensor's interval.
    - Dagster replaces the code server every 60 s (``RELOAD_WORKSPACE_INTERVAL``) to pick up edited
      code: a full load of the definitions each minute (5-10 s of CPU here, and a new process). Ours
      reloads when :func:`workspace_fingerprint` changed (checked every 5 s), and at least every
      ``workspace_reload_s``. Once its code location is loaded, it writes the fingerprint of the files
      it was loaded from to ``code_file`` (see :func:`loaded_code`): a backfill launched after an edit waits for
      it, since the daemon evaluates an asset backfill against its own code location (one without a new
      variable fails the backfill).
    - The schedule storage asks the database for its table list at every instigator-state read and
      write (a sensor tick does several): with SQLite, 40 % of an idle daemon's CPU (measured). Those
      answers, once True, are kept.
    """
    if not _once("daemon"):
        return
    import dagster._daemon.controller as controller
    import dagster._daemon.daemon as daemons
    import dagster._daemon.sensor as sensor_daemon
    from dagster._core.storage.schedules.sql_schedule_storage import SqlScheduleStorage

    controller.DEFAULT_DAEMON_INTERVAL_SECONDS = _RoundInterval(interval_s)
    backfill_loop = daemons.BackfillDaemon.core_loop

    def core_loop(self, workspace_process_context, shutdown_event):
        yield from backfill_loop(self, workspace_process_context,
                                 _WakeOnRunEnd(shutdown_event, workspace_process_context.instance))

    daemons.BackfillDaemon.core_loop = core_loop
    sensor_daemon.MIN_INTERVAL_LOOP_TIME = sensor_loop_s
    controller.RELOAD_WORKSPACE_INTERVAL = workspace_reload_s
    dagster_freshness = controller.DagsterDaemonController.check_workspace_freshness

    beamtime = os.environ.get("XFEL_BEAMTIME")
    at_start = workspace_fingerprint(beamtime)  # before the daemon loads its code location: a later edit is seen

    def check_workspace_freshness(self, last_workspace_update_time: float) -> float:
        fp = workspace_fingerprint(beamtime)
        loaded = getattr(self, "_xfel_fingerprint", at_start)
        if fp != loaded:
            last_workspace_update_time = 0.0  # changed: reload now
        updated = dagster_freshness(self, last_workspace_update_time)
        self._xfel_fingerprint = fp if updated != last_workspace_update_time else loaded
        if code_file is not None and self._xfel_fingerprint != getattr(self, "_xfel_written", None):
            write_loaded_code(code_file, self._xfel_fingerprint, beamtime)
            self._xfel_written = self._xfel_fingerprint
        return updated

    controller.DagsterDaemonController.check_workspace_freshness = check_workspace_freshness
    for name in ("has_instigators_table", "has_secondary_index_table", "has_built_index"):
        setattr(SqlScheduleStorage, name, _remember_true(getattr(SqlScheduleStorage, name)))
    SqlScheduleStorage._has_instigators_table = _remember_true(SqlScheduleStorage._has_instigators_table, keyed=False)
