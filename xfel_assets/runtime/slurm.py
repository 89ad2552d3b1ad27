"""Running one xfel_core step as a SLURM job through dagster-slurm (``compute: slurm``).

dagster-slurm submits ``slurm_payload.py`` with ``sbatch`` over SSH on the login node, polls the
job, streams its logs into the step's log and carries Dagster Pipes messages back. This module is
the only one that knows about it: swapping the integration means rewriting :func:`run_on_slurm`.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import os
import pickle
import re
import shlex
import signal
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_slurm import BashLauncher, ComputeResource, SlurmQueueConfig, SlurmResource, SSHConnectionResource
from dagster_slurm.helpers.ssh_pool import SSHConnectionPool

from xfel_core.config import BeamtimeConfig, SlurmConfig
from xfel_core.hashing import digest

PAYLOAD = Path(__file__).with_name("slurm_payload.py")
# Dagster's own Pipes context reads a preview property of the message readers on every run.
warnings.filterwarnings("ignore", message="Function `PipesMessageReader.expected_writer_count`")
#: The job id in dagster-slurm's errors ("Job 12 was CANCELLED. ...").
JOB_ID_RE = re.compile(r"\bJob (\d+)\b")


def ssh_resource(sc: SlurmConfig) -> SSHConnectionResource:
    """The login node as dagster-slurm reaches it: key authentication, the host key checked."""
    return SSHConnectionResource(
        host=sc.ssh.host, port=sc.ssh.port, user=sc.ssh.user,
        key_path=str(sc.ssh.key_path.expanduser()) if sc.ssh.key_path else None,
        host_key_checking="strict",
        known_hosts_file=str(sc.ssh.known_hosts.expanduser()) if sc.ssh.known_hosts else None,
    )


@functools.lru_cache(maxsize=4)
def _compute_resource(sc: SlurmConfig) -> ComputeResource:
    """dagster-slurm's resource for this cluster, using our Python environment as its "pre-deployed" one."""
    ssh = ssh_resource(sc)
    slurm = SlurmResource(
        ssh=ssh,
        queue=SlurmQueueConfig(partition=sc.partition, account=sc.account, qos=sc.qos),
        remote_base=str(sc.remote_base),
        status_poll_interval_seconds=sc.poll_interval_s,
        status_poll_max_interval_seconds=4 * sc.poll_interval_s,
    )
    return ComputeResource(mode="slurm", slurm=slurm, default_launcher=BashLauncher(),
                           pre_deployed_env_path=_environment_layout(sc, ssh))


def _environment_layout(sc: SlurmConfig, ssh: SSHConnectionResource) -> str:
    """dagster-slurm wants ``DIR/activate.sh`` and ``DIR/env/bin/python``: make that layout on the
    cluster around our virtual environment (idempotent; once per process and configuration)."""
    env = str(sc.python_env)
    layout = f"{sc.remote_base}/xfel-env-{digest(env, n=10)}"
    with SSHConnectionPool(ssh) as pool:
        pool.run(environment_script(env, layout))
    return layout


def environment_script(env: str, layout: str) -> str:
    """The shell script that makes the layout; every value quoted (python_env may hold any character)."""
    q = shlex.quote
    missing = f"no Python at {env}/bin/python on the cluster (slurm.python_env)"
    activate = f"source {q(env + '/bin/activate')}"
    return (f"test -x {q(env + '/bin/python')} || {{ echo {q(missing)} >&2; exit 3; }}; "
            f"mkdir -p {q(layout)} && ln -sfn {q(env)} {q(layout + '/env')} && "
            f"printf '%s\\n' {q(activate)} > {q(layout + '/activate.sh')}")


def _sacct_summary(sc: SlurmConfig, job_id: str) -> str:
    """SLURM's own account of a job (state, exit code, reason, elapsed), for the step's error."""
    cmd = f"sacct -j {int(job_id)} -X -n -P -o State,ExitCode,Reason,Elapsed,NodeList"
    try:
        with SSHConnectionPool(ssh_resource(sc)) as pool:
            row = pool.run(cmd).strip().splitlines()
    except Exception as e:  # the error being reported matters more than this detail
        return f"(sacct not reachable: {e})"
    if not row:
        return "(sacct has no record of the job)"
    state, exit_code, reason, elapsed, nodes = (row[0].split("|") + [""] * 5)[:5]
    code, _, sig = exit_code.partition(":")
    ended = f"killed by signal {sig} ({_signal_name(sig)})" if sig not in ("", "0") else f"exit code {code}"
    why = f", reason {reason}" if reason not in ("", "None") else ""
    return f"state {state}, {ended}{why}, elapsed {elapsed}, node {nodes}"


def _wait_until_left_queue(context: dg.AssetExecutionContext, sc: SlurmConfig, job_id: str,
                           timeout_s: float = 120.0) -> None:
    """Return once SLURM no longer lists the job: a COMPLETING job still holds its node, and
    dagster-slurm 1.22 counts COMPLETING as COMPLETED, so without this the pool's slot would be
    given to the next job while this one is still in the queue."""
    tries = max(1, int(timeout_s / 0.2))
    cmd = (f"for i in $(seq {tries}); do squeue -h -j {int(job_id)} -o %i 2>/dev/null | grep -q . || exit 0; "
           "sleep 0.2; done; exit 1")
    try:
        with SSHConnectionPool(ssh_resource(sc)) as pool:
            pool.run(cmd)
    except Exception as e:  # the step's own outcome matters more than the queue's bookkeeping
        context.log.warning(f"SLURM job {job_id} was still in the queue {timeout_s:.0f} s after it ended: {e}")


def _signal_name(number: str) -> str:
    try:
        return signal.Signals(int(number)).name
    except ValueError:
        return "unknown signal"


@contextlib.contextmanager
def _job_slot(context: dg.AssetExecutionContext, sc: SlurmConfig) -> Iterator[None]:
    """Hold one of ``slurm.max_jobs`` slots of this machine while a job is queued or running.

    The Dagster pool caps the jobs too, but on SQLite two steps can take its last free slot at
    once (the claim selects a free row, then updates it unguarded: 3 jobs seen with max_jobs 2).
    A file lock cannot be taken twice, and is given back when its holder ends, however it ends.
    """
    cluster = digest(f"{sc.ssh.user}@{sc.ssh.host}:{sc.ssh.port}", n=10)
    folder = Path(os.environ.get("DAGSTER_HOME") or tempfile.gettempdir()) / "xfel-slurm-slots" / cluster
    folder.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for i in range(sc.max_jobs):
            f = open(folder / f"slot-{i}", "a")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            try:
                yield
            finally:
                f.close()  # gives the lock back
            return
        if not waited:
            context.log.info(f"waiting for one of the {sc.max_jobs} SLURM job slots (slurm.max_jobs)")
            waited = True
        time.sleep(0.2)


def run_on_slurm(context: dg.AssetExecutionContext, cfg: BeamtimeConfig, asset: str,
                 fn: Callable[..., dict], args: tuple[Any, ...]) -> dict:
    """Run ``fn(cfg, *args)`` as a SLURM job; returns its result dict with ``slurm`` = job id, node, seconds."""
    sc = cfg.slurm
    with _job_slot(context, sc):
        return _run_job(context, cfg, asset, fn, args)


def _run_job(context: dg.AssetExecutionContext, cfg: BeamtimeConfig, asset: str, fn: Callable[..., dict],
             args: tuple[Any, ...]) -> dict:
    sc = cfg.slurm
    size = getattr(sc.jobs, asset)
    compute = _compute_resource(sc)
    try:
        completed = compute.run(
            context=context,
            payload_path=str(PAYLOAD),
            extras={"function": f"{fn.__module__}:{fn.__name__}", "config_path": str(cfg.source_file),
                    "args": list(args)},
            extra_slurm_opts={"cpus_per_task": size.cpus, "mem": size.mem, "time_limit": size.time_limit},
            poll_timeout=sc.job_timeout_s,
        )
    except Exception as e:
        m = JOB_ID_RE.search(str(e))
        detail = ""
        if m:
            _wait_until_left_queue(context, sc, m.group(1))
            detail = f"SLURM job {m.group(1)}: {_sacct_summary(sc, m.group(1))}. "
        # Not a Failure: the step's retry policy applies (node failure, time limit, scancel).
        raise RuntimeError(f"{asset} {context.partition_key} on SLURM failed. {detail}{e}") from e
    messages = [m for m in completed.get_custom_messages() if isinstance(m, dict)]
    job_ids = {m["job_id"] for m in messages if m.get("job_id")}
    for job_id in job_ids:
        _wait_until_left_queue(context, sc, job_id)
    for m in messages:
        if "xfel_error" in m:
            raise dg.Failure(description=m["xfel_error"], allow_retries=False)
    results = [m for m in messages if "info" in m]
    if not results:
        raise RuntimeError(f"{asset} {context.partition_key}: the SLURM job ended without reporting a result "
                           "(see the job's log in the step's stdout/stderr)")
    r = results[-1]
    info = pickle.loads(base64.b64decode(r["info"]))
    info["slurm"] = {"job_id": r["job_id"], "node": r["node"], "seconds": r["seconds"]}
    return info
