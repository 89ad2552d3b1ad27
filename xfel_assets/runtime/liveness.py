"""Dagster runs whose worker process is gone: found, marked failed, and their pool slots freed.

A run worker killed by SIGKILL (the OOM killer, a closed terminal, ``kill -9`` of its process
group) cannot report its own end: Dagster keeps the run STARTED, its steps keep the slots of the
``xfel_module_steps`` pool and the run queue counts it as in progress, so every later run waits for
it forever. Every run worker records its process in the run's tags (:func:`worker_tags`: host,
pid and the process's start time, which tells a reused pid apart); a run whose process on this host
is gone is dead. The daemon's run monitoring asks the run launcher (``check_run_worker_health``),
and ``xfel-assets materialize`` and ``backfill`` call :func:`fail_dead_runs` before they start.
"""

from __future__ import annotations

import os
import select
import socket
import threading
from collections.abc import Callable, Mapping

import dagster as dg

HOST_TAG = "xfel/worker_host"
PID_TAG = "xfel/worker_pid"
START_TAG = "xfel/worker_start"
#: "launcher" while the tags name the daemon that launched the run (before its worker started), else "worker".
ROLE_TAG = "xfel/worker_role"

#: Statuses of a run that has a worker (or is about to): a dead one holds the queue and pool slots.
ACTIVE_STATUSES = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
                   dg.DagsterRunStatus.CANCELING]


def _process_start(pid: int) -> str | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22), None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    if fields[0] in ("Z", "X"):  # exited, not yet reaped by its parent
        return None
    return fields[19]


def worker_tags(pid: int | None = None, role: str = "worker") -> dict[str, str]:
    """Tags naming this process (or ``pid``) as the run's worker (or, ``role="launcher"``, as the one starting it)."""
    pid = os.getpid() if pid is None else pid
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), START_TAG: _process_start(pid) or "", ROLE_TAG: role}


def worker_alive(tags: Mapping[str, str]) -> bool | None:
    """Whether the run's worker process is alive; None if the run names none, or one on another host."""
    if PID_TAG not in tags or tags.get(HOST_TAG) != socket.gethostname():
        return None
    return _process_start(int(tags[PID_TAG])) == tags.get(START_TAG)


def exit_with_process(pid: int) -> None:
    """End this process as soon as process ``pid`` ends (a thread waits on its pidfd: no polling).

    A worker forked from a forkserver is not a child of the process it works for, so it would
    outlive it (a ``kill -9`` of ``xfel-assets materialize`` left workers of 1-2 GB running).
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        os._exit(1)

    def wait() -> None:
        select.select([fd], [], [])
        os._exit(1)

    threading.Thread(target=wait, name=f"exit-with-{pid}", daemon=True).start()


def dead_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """Runs not yet ended whose worker process on this host is gone."""
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=ACTIVE_STATUSES))
    return [r for r in runs if worker_alive(r.tags) is False]


def death_message(run: dg.DagsterRun) -> str:
    if run.tags.get(ROLE_TAG) == "launcher":
        return (f"the daemon that launched the run (process {run.tags.get(PID_TAG)} on {run.tags.get(HOST_TAG)}) "
                "is gone and the run's worker never started: run marked failed")
    return (f"the run's worker process {run.tags.get(PID_TAG)} on {run.tags.get(HOST_TAG)} is gone (killed, "
            "e.g. by SIGKILL, the OOM killer or a closed terminal): run marked failed, its pool slots freed")


def fail_dead_runs(instance: dg.DagsterInstance, say: Callable[[str], None] | None = None) -> list[str]:
    """Mark every dead run failed and free its concurrency slots; returns their run ids."""
    ids = []
    for run in dead_runs(instance):
        instance.report_run_failed(run, death_message(run))
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        ids.append(run.run_id)
        if say is not None:
            part = run.tags.get("dagster/partition", "")
            say(f"run {run.run_id[:8]} ({run.job_name} {part}) was left {run.status.value} by a killed process: "
                "marked failed, its slots freed")
    return ids


def pool_holders(instance: dg.DagsterInstance, pool: str) -> str | None:
    """A sentence naming who holds the pool's slots when all are taken and steps wait, else None."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    waiting = [p for p in info.pending_steps if p.assigned_timestamp is None]  # the others hold their slot
    if not waiting or len(info.claimed_slots) < info.slot_count:
        return None
    holders = []
    for slot in info.claimed_slots:
        run = instance.get_run_by_id(slot.run_id)
        where = "" if run is None else f" {run.tags.get('dagster/partition', '')} {run.status.value}"
        holders.append(f"{slot.step_key} of run {slot.run_id[:8]}{where}")
    return (f"waiting for pool {pool}: {len(info.claimed_slots)} of {info.slot_count} slots held by "
            + "; ".join(holders) + f"; {len(waiting)} steps waiting")


def pool_waits(instance: dg.DagsterInstance, pools: tuple[str, ...],
               say: Callable[[str], None] | None = None) -> str | None:
    """Who holds the slots of ``pools`` that steps wait for (dead runs are failed first), or None."""
    fail_dead_runs(instance, say=say)
    found = [w for w in (pool_holders(instance, pool) for pool in pools) if w]
    return "; ".join(found) or None
