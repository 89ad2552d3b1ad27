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
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from xfel_core.config import BeamtimeConfig
from xfel_core.lineage import model
from xfel_core.lineage.staleness import StaleOutput

from xfel_assets.defs.model_defs import BACKFILL_TAG, observation, source_versions
from xfel_assets.defs.steps import MODULE_POOL, SLURM_POOL
from xfel_assets.runtime.daemon_control import DaemonDied, flocked
from xfel_assets.runtime.dagster_names import BACKFILL_ID_TAG, PARTITION_NAME_TAG, unfinished_backfill_targets
from xfel_assets.runtime.graphql import GraphQL

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


def overviews_of(cfg: BeamtimeConfig, keys: dict[str, list[str]]) -> list[str]:
    """The overviews (run tables) that read any asset of the selection: the command makes them after the backfill.

    Not in the backfill itself: Dagster's asset backfill fails every partition downstream of a failed
    one, and a run table is wanted most when some run failed.
    """
    return [a.name for a in model.assets() if a.overview and a.enabled(cfg) and any(i.name in keys for i in a.inputs)]


def asset_order() -> list[str]:
    """Every asset of the workflow model, each after its inputs."""
    return [a.name for a in model.assets()]


def add_partitions(instance: dg.DagsterInstance, keys: dict[str, list[str]]) -> None:
    """Add the dynamic partitions (runs, measurements, samples, event runs) that the selected keys name."""
    wanted: dict[str, set[str]] = {}
    for asset, ks in keys.items():
        p = model.asset(asset).partitioning
        for k in ks:
            for name, key in p.dynamic_keys(k).items():
                wanted.setdefault(name, set()).add(key)
    for name, ks in wanted.items():
        new = sorted(ks - set(instance.get_dynamic_partitions(name)))
        if new:
            instance.add_dynamic_partitions(name, new)


def failed_steps(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """{step: why} of a failed Dagster run: its failed steps, and the steps it started and never ended (the run's
    process was killed: a daemon or worker gone), with the run's own failure message as their reason."""
    def steps(kind) -> list:
        return [r.event_log_entry for r in instance.get_records_for_run(run_id, of_type=kind).records]

    out = {e.dagster_event.step_key or "?": _root_message(e.dagster_event.step_failure_data.error)
           for e in steps(dg.DagsterEventType.STEP_FAILURE)}
    ended = set(out) | {e.dagster_event.step_key for e in steps(dg.DagsterEventType.STEP_SUCCESS)}
    unended = [e.dagster_event.step_key for e in steps(dg.DagsterEventType.STEP_START) if e.dagster_event.step_key not in ended]
    if unended or not out:
        run_failure = steps(dg.DagsterEventType.RUN_FAILURE)
        why = (run_failure[-1].message if run_failure else "") or "the run failed without a step failing (killed?)"
        for step in unended or [f"(run of {instance.get_run_by_id(run_id).job_name}, before any step)"]:
            out[step] = f"never ended: {why}"
    return out


def failed_since_materialized(instance: dg.DagsterInstance, every: dict[str, list[str | None]]) -> list[StaleOutput]:
    """Outputs (among ``every``'s partitions) whose step failed, or was killed, in a Dagster run after their latest
    materialization.

    Such a step may have written its file before it failed (a blocking check, the metadata, a kill
    between the file and Dagster's record): the file's lineage then looks current, but Dagster and the
    scientist see a failure. Never current.
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
        steps = failed_steps(instance, rec.dagster_run.run_id)
        for asset in sorted(set(steps) & assets):
            if (asset, part) in seen or (asset, part) not in wanted:
                continue
            seen.add((asset, part))
            latest = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[part]), limit=1).records
            if latest and latest[0].timestamp > (rec.end_time or rec.create_timestamp.timestamp()):
                continue
            out.append(StaleOutput(asset, part, "its last run failed (an output it left is not the current one)"))
    return out


#: Dagster refuses a backfill title longer than this (``dagster._core.definitions.utils.MAX_TITLE_LENGTH``).
MAX_TITLE = 100


def backfill_title(stale_only: bool, covered: str, counts: str) -> str:
    """The backfill's title in Dagster's list: the command and what it covers, within Dagster's 100 characters.

    ``covered`` names the runs ("3 runs (r0002-r0004), ..."); where that is too long, ``counts`` ("3 runs,
    2 event runs, 1 samples") stands in, cut if even that is too long.
    """
    head = f"xfel-assets backfill{' --stale-only' if stale_only else ''}: "
    for tail in (covered, counts):
        if len(head + tail) <= MAX_TITLE:
            return head + tail
    return (head + counts)[:MAX_TITLE - 3] + "..."


def launch_params(keys: dict[str, list[str]], title: str) -> dict:
    """LaunchBackfillParams selecting exactly these partitions (one single-key range each)."""
    return {
        "partitionsByAssets": [
            {"assetKey": {"path": [asset]},
             "partitions": {"ranges": [{"start": k, "end": k} for k in ks]}}
            for asset, ks in keys.items()
        ],
        "title": title,
        "tags": [{"key": BACKFILL_TAG, "value": "cli"}],
    }


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

    def count(subset, key) -> int:
        if key not in subset.asset_keys:
            return 0
        return len(subset.get_partitions_subset(key)) if key in subset.partitions_subsets_by_asset_key else 1

    for key in sorted(data.target_subset.asset_keys, key=lambda k: order.get(k.to_user_string(), len(order))):
        targeted, done, failed = count(data.target_subset, key), count(data.materialized_subset, key), \
            count(data.failed_and_downstream_subset, key)
        p.add(key.to_user_string(), targeted, done, failed, max(count(data.requested_subset, key) - done - failed, 0))
    return p


def follow(poll: Callable[[], Progress], backfill_id: str, poll_s: float = 1.0, timeout_s: float | None = None,
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
    from xfel_assets.runtime.liveness import pool_waits as waits

    return waits(instance, (MODULE_POOL, SLURM_POOL))


def active_backfill_over(instance: dg.DagsterInstance, keys: dict[str, list[str]]) -> tuple[str, bool] | None:
    """(id, covers all of them) of an unfinished asset backfill that targets some of these partitions, else None."""
    wanted = {(a, k) for a, ks in keys.items() for k in ks}
    for backfill_id, target in unfinished_backfill_targets(instance):
        if wanted & target:
            return backfill_id, wanted <= target
    return None


def _root_message(err) -> str:
    while err.cause is not None:
        err = err.cause
    return err.message.strip()


def failures(instance: dg.DagsterInstance, backfill_id: str) -> list[tuple[str, str, str]]:
    """(asset, partition, why) of every failed step of the backfill's runs, killed ones included."""
    out = []
    runs = instance.get_runs(filters=dg.RunsFilter(tags={BACKFILL_ID_TAG: backfill_id},
                                                   statuses=[dg.DagsterRunStatus.FAILURE]))
    for run in runs:
        partition = run.tags.get(PARTITION_NAME_TAG, "?")
        out += [(step, partition, why) for step, why in failed_steps(instance, run.run_id).items()]
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


def prepare_home(instance: dg.DagsterInstance, home: Path, cfg: BeamtimeConfig, partitions: dict[str, list[str]]) -> int:
    """Before a command's work: the pools set, the dynamic partitions it names added and the sources' data versions
    recorded (each materialization records them, so a later change of a source, a new dark run, shows its
    dependents stale in the web UI); under the home's launch lock, since commands starting at once would add the
    same partitions (a UNIQUE constraint). Returns the module step limit."""
    with launch_lock(home):
        slots = set_pools(instance, cfg)
        add_partitions(instance, partitions)
        record_source_versions(instance, cfg)
    return slots


def launch_lock(home: Path):
    """Held while a backfill looks for an unfinished one over the same partitions and launches its own."""
    return flocked(home / ".xfel-backfill-launch.lock", fcntl.LOCK_EX)
