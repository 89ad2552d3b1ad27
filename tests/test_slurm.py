"""`compute: slurm` on a real single-node SLURM cluster (deploy/slurm/start-local-cluster.sh), started and stopped here.

The heavy assets run as SLURM jobs through dagster-slurm (sbatch over SSH, Dagster Pipes back).
Run with ``pytest -m slurm`` (make test runs it after the main suite); needs root, as CI has.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dagster as dg
import h5py
import numpy as np
import pytest
import yaml

from xfel_core.config import SLURM_ASSETS, load_beamtime

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "deploy" / "slurm"
CLI = Path(sys.executable).with_name("xfel-assets")


@pytest.fixture(scope="module")
def cluster():
    """The local cluster's folder; its environment (SLURM_CONF) is set for squeue, sacct and scancel here."""
    # Outside pytest's private tmp folders: MariaDB runs as the mysql user.
    folder = Path(tempfile.mkdtemp(prefix="xfel-slurm-"))
    folder.chmod(0o755)
    old = os.environ.get("SLURM_CONF")
    try:
        out = subprocess.run([str(SCRIPTS / "start-local-cluster.sh"), str(folder), "2223"],
                             capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stdout + out.stderr
        os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
        yield folder
    finally:
        subprocess.run([str(SCRIPTS / "stop-local-cluster.sh"), str(folder)], timeout=120)
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        shutil.rmtree(folder, ignore_errors=True)


def slurm_cmd(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True, timeout=30).stdout


def sacct_states(job_ids) -> dict[str, str]:
    out = slurm_cmd("sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(str(j) for j in job_ids))
    return dict(line.split("|", 1) for line in out.splitlines() if "|" in line)


def materialize(config: Path, home: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DAGSTER_HOME=str(home), XFEL_BEAMTIME=str(config))
    return subprocess.run([str(CLI), "materialize", "--beamtime", str(config), *extra], env=env,
                          capture_output=True, text=True, timeout=600)


def local_copy(config: Path, name: str) -> Path:
    """The same beamtime (same raw files) in local mode, with its own processed folder."""
    data = yaml.safe_load(config.read_text())
    data.pop("slurm")
    data.update(compute="local", processed_root=str(config.parent / f"processed-{name}"))
    path = config.with_name(f"beamtime-{name}.yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def reduce_locally(config: Path, runs: list[str]) -> None:
    """Every DSSC output of ``runs``, by the xfel_core functions that the local mode's steps call."""
    from conftest import reduce_dssc_run

    cfg = load_beamtime(config)
    for run in runs:
        reduce_dssc_run(cfg, run)


class QueueWatcher(threading.Thread):
    """Polls squeue every 0.1 s: the most jobs queued or running at once, and a callback per sighting."""

    def __init__(self, on_jobs=None):
        super().__init__(daemon=True)
        self.most, self.seen, self.on_jobs = 0, set(), on_jobs
        self.peak = []  # the jobs (id, state, name) listed when the most were
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            out = subprocess.run(["squeue", "-h", "-o", "%i|%T|%j"], capture_output=True, text=True).stdout
            jobs = [line.split("|", 2) for line in out.split("\n") if line.count("|") == 2]
            if len(jobs) > self.most:
                self.most, self.peak = len(jobs), jobs
            self.seen.update(j[0] for j in jobs)
            if self.on_jobs:
                self.on_jobs(jobs)
            time.sleep(0.1)

    def stop(self):
        self._stop_event.set()
        self.join()


def test_two_runs_on_slurm_equal_local_mode_bit_for_bit_within_the_job_cap(cluster, tmp_path):
    from xfel_core.demo.beamtime import write_demo_beamtime

    config = write_demo_beamtime(tmp_path / "bt", runs=2, trains=24, frames=10, modules=2, insitu=False,
                                 slurm_cluster=cluster, variables=False)
    data = yaml.safe_load(config.read_text())
    # Four Dagster runs at once, each wanting a SLURM job: only the pool (max_jobs 2) holds the cap.
    data["execution"]["max_concurrent"] = 4
    assert data["slurm"]["max_jobs"] == 2
    config.write_text(yaml.safe_dump(data, sort_keys=False))

    reduce_locally(local_copy(config, "local"), ["r0002", "r0003"])

    watcher = QueueWatcher()
    watcher.start()
    try:
        out = materialize(config, tmp_path / "home-slurm")
    finally:
        watcher.stop()
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert len(watcher.seen) >= 4  # 2 runs x 2 modules, each its own job
    assert watcher.most == 2, (f"at most {watcher.most} jobs were in the queue at once (max_jobs is 2): "
                               f"{watcher.peak}; sacct:\n" + slurm_cmd(
                                   "sacct", "-X", "-P", "-o", "JobID,JobName%40,State,Submit,Start,End",
                                   "-j", ",".join(j[0] for j in watcher.peak)) + out.stdout[-3000:])

    for run in ("r0002", "r0003"):
        with h5py.File(tmp_path / "bt" / "processed-local" / run / "binned_cube.h5") as a, \
                h5py.File(tmp_path / "bt" / "processed" / run / "binned_cube.h5") as b:
            names = []
            a.visit(lambda n: names.append(n) if isinstance(a[n], h5py.Dataset) else None)
            assert "mean" in names and len(names) > 3
            for n in names:
                x, y = a[n][()], b[n][()]
                assert x.dtype == y.dtype and x.shape == y.shape, n
                if x.dtype.kind in "fc":
                    assert np.array_equal(x, y, equal_nan=True), n  # bit for bit, NaN where NaN
                else:
                    assert np.array_equal(x, y), n

    os.environ["DAGSTER_HOME"], old = str(tmp_path / "home-slurm"), os.environ["DAGSTER_HOME"]
    try:
        with dg.DagsterInstance.get() as instance:
            records = instance.fetch_materializations(dg.AssetKey("preprocessed_module"), limit=100).records
            mds = [r.asset_materialization.metadata for r in records]
    finally:
        os.environ["DAGSTER_HOME"] = old
    assert len(mds) == 4
    job_ids = [md["slurm_job_id"].value for md in mds]
    assert len(set(job_ids)) == 4 and {str(j) for j in job_ids} <= watcher.seen
    for md in mds:
        assert md["computed_on"].value == f"SLURM job {md['slurm_job_id'].value} on localhost"
        assert md["slurm_node"].value == "localhost" and md["frames_per_second"].value > 0
        assert md["elapsed_seconds"].value >= md["slurm_payload_seconds"].value - 1
    assert set(sacct_states(job_ids).values()) == {"COMPLETED"}


def test_killed_and_cancelled_jobs_fail_their_step_with_the_reason_and_the_retry_succeeds(cluster, tmp_path):
    from xfel_core.demo.beamtime import write_demo_beamtime

    config = write_demo_beamtime(tmp_path / "bt", runs=1, trains=24, frames=10, modules=2, insitu=False,
                                 slurm_cluster=cluster, variables=False)
    data = yaml.safe_load(config.read_text())
    data["execution"].update(retries=1, retry_delay_s=1)
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    home = tmp_path / "home"
    processed = tmp_path / "bt" / "processed"
    # Of this run's assets only preprocessed_module runs as SLURM jobs: the watcher below sees the two module
    # jobs and their retries.
    assert not {"raw_run", "scan_variable", "framemask", "dark", "binned_cube"} & set(SLURM_ASSETS)

    done: dict[str, str] = {}

    def interfere(jobs):
        for job_id, state, name in jobs:
            if state != "RUNNING":
                continue
            if "partition=00_r0002" in name and "scancel" not in done:
                done["scancel"] = job_id
                subprocess.run(["scancel", job_id], check=True)
            elif "partition=01_r0002" in name and "kill" not in done:
                # The payload dies on the node (as on a segfault or an out-of-memory kill).
                killed = subprocess.run(["pkill", "-KILL", "-f", "partition=01_r0002.*slurm_payload.py"])
                if killed.returncode == 0:
                    done["kill"] = job_id

    watcher = QueueWatcher(interfere)
    watcher.start()
    try:
        env = dict(os.environ, DAGSTER_HOME=str(home), XFEL_BEAMTIME=str(config))
        out = subprocess.run([str(CLI), "materialize", "--beamtime", str(config), "--runs", "r0002"], env=env,
                             capture_output=True, text=True, timeout=600)
    finally:
        watcher.stop()
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert set(done) == {"scancel", "kill"}, done
    states = sacct_states([done["scancel"], done["kill"]])
    assert states[done["scancel"]].startswith("CANCELLED") and states[done["kill"]] == "FAILED", states

    os.environ["DAGSTER_HOME"], old = str(home), os.environ["DAGSTER_HOME"]
    try:
        with dg.DagsterInstance.get() as instance:
            reasons = [e.dagster_event.event_specific_data.error.to_string()
                       for run in instance.get_runs()
                       for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)]
            mats = instance.fetch_materializations(dg.AssetKey("preprocessed_module"), limit=100).records
            latest = {r.partition_key: r.asset_materialization.metadata for r in mats}
    finally:
        os.environ["DAGSTER_HOME"] = old
    assert len(reasons) == 2, reasons
    cancelled = next(r for r in reasons if f"SLURM job {done['scancel']}:" in r)
    assert "CANCELLED" in cancelled and "preprocessed_module 00|r0002" in cancelled
    killed = next(r for r in reasons if f"SLURM job {done['kill']}:" in r)
    assert "state FAILED, killed by signal 9 (SIGKILL)" in killed
    # The retries ran as new jobs and wrote whole outputs; nothing partial is left beside them.
    for m in ("00", "01"):
        assert str(latest[f"{m}|r0002"]["slurm_job_id"].value) not in (done["scancel"], done["kill"])
        with h5py.File(processed / "r0002" / f"preprocessed_module_{m}.h5") as f:
            assert f.attrs["frames_kept"] > 0
    assert not [p.name for p in (processed / "r0002").iterdir() if re.search(r"\.tmp-", p.name)]
