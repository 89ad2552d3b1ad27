"""`xfel-assets backfill`: launch a real Dagster asset backfill through the GraphQL API and follow it.

Dagster has no command for asset backfills; its GraphQL mutation `launchPartitionBackfill` makes
one, exactly as the web UI's backfill dialog does, and the daemon's backfill loop executes it
(one Dagster run per asset partition, in dependency order; a failed partition fails only its
downstream partitions). The query runs in this process against the code location (no web
server needed), or against a running web server with ``--url``. Progress comes from the same
API: partitions done / failed / in progress / to go, until the backfill ends.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from dagster._core.storage.tags import BACKFILL_ID_TAG, PARTITION_NAME_TAG

from xfel_core.config import BeamtimeConfig
from xfel_core.lineage import model
from xfel_core.lineage.staleness import StaleOutput

from . import daemon as daemon_mod
from .model_defs import BACKFILL_TAG, source_versions
from .model_defs import observation
from .steps import MODULE_POOL, SLURM_POOL

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
    ... on PartitionSetNotFoundError { message }
    ... on PartitionKeysNotFoundError { message }
  }
}"""

STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      status
      assetBackfillData {
        assetBackfillStatuses {
          ... on AssetPartitionsStatusCounts {
            assetKey { path }
            numPartitionsTargeted numPartitionsInProgress numPartitionsMaterialized numPartitionsFailed
          }
        }
      }
    }
    ... on PythonError { message }
    ... on BackfillNotFoundError { message }
  }
}"""

FINISHED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


@dataclass
class Progress:
    status: str
    targeted: int = 0
    done: int = 0
    failed: int = 0
    running: int = 0
    per_asset: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # asset: (done, failed, targeted)

    def add(self, asset: str, targeted: int, done: int, failed: int, running: int) -> None:
        self.targeted += targeted
        self.done += done
        self.failed += failed
        self.running += running
        self.per_asset[asset] = (done, failed, targeted)

    @property
    def to_go(self) -> int:
        return self.targeted - self.done - self.failed

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def line(self, width: int = 30) -> str:
        n = max(self.targeted, 1)
        filled = int(width * (self.done + self.failed) / n)
        bar = "#" * filled + "-" * (width - filled)
        return (f"[{bar}] {self.done}/{self.targeted} done, {self.failed} failed, {self.running} running, "
                f"{self.to_go} to go ({self.status.lower()})")


def selection(every: dict[str, list[str | None]], stale: list[StaleOutput] | None) -> dict[str, list[str]]:
    """Partition keys per asset, in dependency order: every partition in ``every``, or only the stale ones."""
    if stale is None:
        return {a: [str(k) for k in ks] for a, ks in every.items() if ks}
    keys: dict[str, list[str]] = {}
    for st in stale:
        keys.setdefault(st.asset, []).append(str(st.key))
    return {a: keys[a] for a in asset_order() if keys.get(a)}


def asset_order() -> list[str]:
    """Every asset of the workflow model, each after its inputs."""
    return [a.name for a in model.assets()]


def add_partitions(instance: dg.DagsterInstance, keys: dict[str, list[str]]) -> None:
    """Add the dynamic partitions (runs, measurements, samples, event runs) that the selected keys name."""
    wanted: dict[str, set[str]] = {}
    for asset, ks in keys.items():
        p = model.asset(asset).partitioning
        for k in ks:
            for d in p.dims or (p,):
                if d.dynamic:
                    wanted.setdefault(d.dynamic, set()).add(p.dim_key(k, d.name) if p.dims else k)
    for name, ks in wanted.items():
        new = sorted(k for k in ks if not instance.has_dynamic_partition(name, k))
        if new:
            instance.add_dynamic_partitions(name, new)


def failed_since_materialized(instance: dg.DagsterInstance, every: dict[str, list[str | None]]) -> list[StaleOutput]:
    """Outputs (among ``every``'s partitions) whose step failed in a Dagster run after their latest materialization.

    Such a step may have written its file before it failed (a blocking check, the metadata): the
    file's lineage then looks current, but Dagster and the scientist see a failure. Never current.
    """
    wanted = {(a, str(k)) for a, ks in every.items() for k in ks}
    assets = {a for a, _ in wanted}
    seen = set()
    out = []
    failed = instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    for rec in failed:
        part = rec.dagster_run.tags.get(PARTITION_NAME_TAG)
        if part is None:
            continue
        steps = {r.event_log_entry.dagster_event.step_key for r in
                 instance.get_records_for_run(rec.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records}
        for asset in sorted(steps & assets):
            if (asset, part) in seen or (asset, part) not in wanted:
                continue
            seen.add((asset, part))
            latest = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[part]), limit=1).records
            if latest and latest[0].timestamp > (rec.end_time or rec.create_timestamp.timestamp()):
                continue
            out.append(StaleOutput(asset, part, "its last run failed (an output it left is not the current one)"))
    return out


def launch_params(keys: dict[str, list[str]], title: str) -> dict:
    """LaunchBackfillParams selecting exactly these partitions (one single-key range each)."""
    return {
        "partitionsByAssets": [
            {"assetKey": {"path": [asset]}, "partitions": {"ranges": [{"start": k, "end": k} for k in ks]}}
            for asset, ks in keys.items()
        ],
        "title": title,
        "tags": [{"key": BACKFILL_TAG, "value": "cli"}],
    }


class GraphQL:
    """Dagster's GraphQL API, in this process (a workspace of our code location) or at a web server's URL."""

    def __init__(self, instance: dg.DagsterInstance, workspace_file: Path, url: str | None = None):
        self.instance, self.workspace_file, self.url = instance, workspace_file, url
        self._process_context = None

    def __enter__(self) -> GraphQL:
        if self.url is None:
            from dagster._core.workspace.context import WorkspaceProcessContext
            from dagster._core.workspace.load_target import WorkspaceFileTarget
            from dagster_graphql.schema import create_schema

            self._schema = create_schema()
            self._process_context = WorkspaceProcessContext(
                self.instance, in_process_target(self.workspace_file) or WorkspaceFileTarget(
                    paths=[str(self.workspace_file)]))
            self._process_context.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._process_context is not None:
            self._process_context.__exit__(*exc)

    def __call__(self, query: str, variables: dict) -> dict:
        if self.url is None:
            from dagster._core.definitions.partitions.context import partition_loading_context

            # Ranges of dynamic (run) partitions need the instance to resolve their keys.
            with partition_loading_context(dynamic_partitions_store=self.instance):
                result = self._schema.execute(query, context_value=self._process_context.create_request_context(),
                                              variable_values=variables)
            errors, data = result.errors, result.data
        else:
            req = urllib.request.Request(self.url.rstrip("/") + "/graphql",
                                         data=json.dumps({"query": query, "variables": variables}).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as resp:
                body = json.loads(resp.read())
            errors, data = body.get("errors"), body.get("data")
        if errors:
            raise RuntimeError(f"Dagster GraphQL error: {errors}")
        return data


def in_process_target(workspace_file: Path):
    """The workspace's Python modules loaded in this process, or None if it names anything else.

    A workspace file makes Dagster start a code server process (5 s to start, 8 s of CPU here) that
    only answers the launch and status queries; an asset backfill is not tied to the code
    location it was launched from (the daemon evaluates it against its own workspace).
    """
    import yaml
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

    entries = (yaml.safe_load(workspace_file.read_text()) or {}).get("load_from") or []
    if not entries or any(set(e) != {"python_module"} or not isinstance(e["python_module"], dict)
                          or set(e["python_module"]) - {"module_name", "location_name"} for e in entries):
        return None
    return InProcessWorkspaceLoadTarget([InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name=e["python_module"]["module_name"]),
        location_name=e["python_module"].get("location_name") or e["python_module"]["module_name"])
        for e in entries])


def launch(gql: GraphQL, keys: dict[str, list[str]], title: str) -> str:
    """Launch the asset backfill; returns its id."""
    out = gql(LAUNCH, {"params": launch_params(keys, title)})["launchPartitionBackfill"]
    if out["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"backfill not launched: {out['__typename']}: {out.get('message', '')}")
    return out["backfillId"]


def progress(gql: GraphQL, backfill_id: str) -> Progress:
    """The backfill's progress from the GraphQL API (what the web UI shows)."""
    out = gql(STATUS, {"id": backfill_id})["partitionBackfillOrError"]
    if out["__typename"] != "PartitionBackfill":
        raise RuntimeError(f"backfill {backfill_id}: {out.get('message', out['__typename'])}")
    p = Progress(out["status"])
    for s in (out.get("assetBackfillData") or {}).get("assetBackfillStatuses", []):
        if "numPartitionsTargeted" not in s:
            continue
        p.add("/".join(s["assetKey"]["path"]), s["numPartitionsTargeted"], s["numPartitionsMaterialized"],
              s["numPartitionsFailed"], s["numPartitionsInProgress"])
    return p


def progress_from_instance(instance: dg.DagsterInstance, backfill_id: str) -> Progress:
    """The same counts read from the backfill's record: far cheaper than the GraphQL status query."""
    bf = instance.get_backfill(backfill_id)
    if bf is None:
        raise RuntimeError(f"backfill {backfill_id} not found in the Dagster instance")
    data = bf.asset_backfill_data
    p = Progress(bf.status.value)
    order = {a: i for i, a in enumerate(asset_order())}
    for key in sorted(data.target_subset.asset_keys, key=lambda k: order.get(k.to_user_string(), len(order))):
        def count(subset) -> int:
            if key not in subset.asset_keys:
                return 0
            return len(subset.get_partitions_subset(key)) if key in subset.partitions_subsets_by_asset_key else 1
        targeted, done, failed = count(data.target_subset), count(data.materialized_subset), \
            count(data.failed_and_downstream_subset)
        p.add(key.to_user_string(), targeted, done, failed, max(count(data.requested_subset) - done - failed, 0))
    return p


def follow(poll: Callable[[], Progress], backfill_id: str, poll_s: float = 3.0, timeout_s: float | None = None,
           out=sys.stderr, alive: Callable[[], None] | None = None,
           waiting: Callable[[], str | None] | None = None, stalled_s: float = 30.0) -> Progress:
    """Poll the backfill until it ends, drawing a progress bar (one line per change if not a terminal).

    ``alive`` raises (DaemonDied) when the daemon executing the backfill has gone: then the
    backfill would never end. ``waiting`` says what the backfill waits for (who holds the pools'
    slots), printed when nothing has moved for ``stalled_s``."""
    tty = out.isatty()
    last, said = "", None
    t0 = moved = time.monotonic()
    while True:
        p = poll()
        line = p.line()
        if line != last:
            out.write(("\r" + line) if tty else (line + "\n"))
            out.flush()
            last, moved = line, time.monotonic()
        elif waiting is not None and time.monotonic() - moved > stalled_s:
            why = waiting()
            if why and why != said:
                out.write(("\n" if tty else "") + why + "\n")
                out.flush()
                said = why
        if p.finished:
            break
        if timeout_s is not None and time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"backfill {backfill_id} not finished after {timeout_s:.0f} s: {line}")
        if alive is not None:
            try:
                alive()
            except DaemonDied as e:
                if tty:
                    out.write("\n")
                raise DaemonDied(f"{e}. Backfill {backfill_id} is unfinished ({line}); it goes on when a "
                                 "daemon runs again: the same xfel-assets backfill command starts one and "
                                 "follows it") from None
        time.sleep(poll_s)
    if tty:
        out.write("\n")
    return p


def pool_waits(instance: dg.DagsterInstance) -> str | None:
    """Who holds the heavy pools' slots that the backfill's steps wait for, or None."""
    from .liveness import pool_waits as waits

    return waits(instance, (MODULE_POOL, SLURM_POOL))


def active_backfill_over(instance: dg.DagsterInstance, keys: dict[str, list[str]]) -> tuple[str, bool] | None:
    """(id, covers all of them) of an unfinished asset backfill that targets some of these partitions, else None."""
    from dagster._core.execution.backfill import BulkActionStatus, BulkActionsFilter

    wanted = {(a, k) for a, ks in keys.items() for k in ks}
    for bf in instance.get_backfills(filters=BulkActionsFilter(statuses=[BulkActionStatus.REQUESTED])):
        data = bf.asset_backfill_data
        if data is None:
            continue
        target = set()
        for key in data.target_subset.asset_keys:
            if key in data.target_subset.partitions_subsets_by_asset_key:
                target |= {(key.to_user_string(), str(k)) for k in
                           data.target_subset.get_partitions_subset(key).get_partition_keys()}
        if wanted & target:
            return bf.backfill_id, wanted <= target
    return None


def _root_message(err) -> str:
    while err.cause is not None:
        err = err.cause
    return err.message.strip()


def failures(instance: dg.DagsterInstance, backfill_id: str) -> list[tuple[str, str, str]]:
    """(asset, partition, why) of every failed step of the backfill's runs."""
    out = []
    runs = instance.get_runs(filters=dg.RunsFilter(tags={BACKFILL_ID_TAG: backfill_id},
                                                   statuses=[dg.DagsterRunStatus.FAILURE]))
    for run in runs:
        partition = run.tags.get(PARTITION_NAME_TAG, "?")
        for rec in instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records:
            ev = rec.event_log_entry.dagster_event
            out.append((ev.step_key or "?", partition, _root_message(ev.step_failure_data.error)))
    return sorted(out)


def record_source_versions(instance: dg.DagsterInstance, cfg: BeamtimeConfig) -> int:
    """Record the current data versions of the observed sources (as the source sensor does); returns how many."""
    events = [observation(a, k, v) for a, parts in source_versions(instance, cfg).items() for k, v in parts.items()]
    for ev in events:
        instance.report_runless_asset_event(ev)
    return len(events)


def set_pools(instance: dg.DagsterInstance, cfg: BeamtimeConfig) -> int:
    """Limit the module steps running at once across all runs to execution.max_module_steps, and (in
    SLURM mode) the SLURM jobs queued or running to slurm.max_jobs; returns the module step limit."""
    n = cfg.execution.resolved_max_module_steps()
    instance.event_log_storage.set_concurrency_slots(MODULE_POOL, n)
    if cfg.compute == "slurm":
        instance.event_log_storage.set_concurrency_slots(SLURM_POOL, cfg.slurm.max_jobs)
    return n


def daemon_running(instance: dg.DagsterInstance, interval_s: float = 30) -> bool:
    """Whether a Dagster daemon with a backfill loop is alive on this instance.

    Daemons send a heartbeat every 30 s and leave the last one behind when they stop, so a recent
    heartbeat is confirmed by waiting for the next one. (A daemon started seconds ago that has not
    sent its first heartbeat is not seen: two daemons on one instance launch every run twice.)
    """
    def last() -> float | None:
        hb = instance.get_daemon_heartbeats().get("BACKFILL")
        return None if hb is None else hb.timestamp

    seen = last()
    if seen is None or time.time() - seen > interval_s + 15:
        return False
    deadline = time.monotonic() + interval_s + 10
    while time.monotonic() < deadline:
        time.sleep(1)
        now = last()
        if now is not None and now > seen:
            return True
    return False


def daemon_command(workspace_file: Path) -> list[str]:
    """The Dagster daemon with our shorter loop interval (xfel_assets/daemon.py)."""
    return [sys.executable, "-m", "xfel_assets.daemon", "run", "-w", str(workspace_file)]


class DaemonDied(RuntimeError):
    """The daemon that executes the backfill has ended while the backfill is not finished."""


@dataclass
class DaemonWatch:
    """The daemon a backfill relies on: ours (by its lock on the home) or a foreign one (by its heartbeats)."""

    instance: dg.DagsterInstance
    home: Path
    log_path: Path | None
    xfel_pid: int | None  # None: a foreign daemon (dagster dev), watched by its heartbeats

    def check(self) -> None:
        """Raise DaemonDied if the daemon is gone."""
        if self.xfel_pid is not None:
            if daemon_mod.running_daemon(self.home) is None:
                where = f"; its log: {self.log_path}" if self.log_path else ""
                raise DaemonDied(f"the Dagster daemon (pid {self.xfel_pid}) that executes this backfill has "
                                 f"ended{where}")
            return
        hb = self.instance.get_daemon_heartbeats().get("BACKFILL")
        if hb is None or time.time() - hb.timestamp > FOREIGN_DAEMON_SILENT_S:
            raise DaemonDied(f"the Dagster daemon that executes this backfill has sent no heartbeat for "
                             f"{FOREIGN_DAEMON_SILENT_S} s: it has stopped")


#: A foreign daemon (heartbeats every 30 s) silent for this long is taken as stopped.
FOREIGN_DAEMON_SILENT_S = 180


@contextmanager
def _flocked(path: Path, mode: int):
    with open(path, "a+") as f:
        fcntl.flock(f, mode)
        try:
            yield f
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def launch_lock(home: Path):
    """Held while a backfill looks for an unfinished one over the same partitions and launches its own."""
    return _flocked(home / ".xfel-backfill-launch.lock", fcntl.LOCK_EX)


@contextmanager
def daemon_if_needed(instance: dg.DagsterInstance, workspace_file: Path, log_path: Path, say=print):
    """The home's daemon for the duration: the one running, else one started here (one per home).

    Each backfill holds a shared lock on the home's daemon users' file while it runs; the last one
    to end stops a daemon that a backfill started. Starting is serialised, so two backfills
    starting together share one daemon.
    """
    home = log_path.parent
    users = open(home / ".xfel-daemon-users.lock", "a+")
    fcntl.flock(users, fcntl.LOCK_SH)
    try:
        with _flocked(home / ".xfel-daemon-start.lock", fcntl.LOCK_EX):
            ours = daemon_mod.running_daemon(home)
            if ours is None and daemon_running(instance):
                say("using the running Dagster daemon")
                watch = DaemonWatch(instance, home, None, None)
            else:
                if ours is None:
                    say(f"starting a Dagster daemon for this backfill (log: {log_path})")
                    ours = (_start_daemon(workspace_file, log_path, home), "backfill")
                else:
                    say(f"using the running Dagster daemon (pid {ours[0]})")
                watch = DaemonWatch(instance, home, log_path, ours[0])
        yield watch
    finally:
        fcntl.flock(users, fcntl.LOCK_UN)
        with _flocked(home / ".xfel-daemon-start.lock", fcntl.LOCK_EX):
            try:
                fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)  # taken only if no other backfill uses it
            except BlockingIOError:
                pass
            else:
                running = daemon_mod.running_daemon(home)
                if running is not None and running[1] == "backfill":
                    _stop_daemon(running[0], home)
                    # A stopped daemon leaves its last heartbeats behind: the next backfill would wait
                    # 40 s to find that nobody sends another one.
                    instance.wipe_daemon_heartbeats()
            users.close()


def _start_daemon(workspace_file: Path, log_path: Path, home: Path, timeout_s: float = 120) -> int:
    """Start our daemon in its own session; returns its pid once it holds the home's daemon lock."""
    env = dict(os.environ, DAGSTER_HOME=str(home), **{daemon_mod.OWNER_ENV: "backfill"})
    with open(log_path, "a") as log:
        proc = subprocess.Popen(daemon_command(workspace_file), stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = daemon_mod.running_daemon(home)
        if running is not None and running[0] == proc.pid:
            return proc.pid
        if proc.poll() is not None:
            raise DaemonDied(f"the Dagster daemon ended at its start (exit status {proc.returncode}); its log: "
                             f"{log_path}:\n{log_path.read_text()[-2000:]}")
        time.sleep(0.1)
    stop_process_group(proc)
    raise DaemonDied(f"the Dagster daemon did not start within {timeout_s:.0f} s; its log: {log_path}")


def _stop_daemon(pid: int, home: Path, timeout_s: float = 60) -> None:
    """SIGTERM the daemon's process group (it has its own session); SIGKILL if its lock is still held after timeout_s."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and daemon_mod.running_daemon(home) is not None:
            time.sleep(0.2)
        if daemon_mod.running_daemon(home) is None:
            try:
                os.waitpid(pid, 0)  # our child if we started it: reap it
            except ChildProcessError:
                pass
            return


def stop_process_group(proc: subprocess.Popen, timeout_s: float = 60) -> None:
    """SIGTERM a process started in its own session and everything it started; SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

