"""The `slurm` section of a beamtime config for the local cluster of deploy/slurm/start-local-cluster.sh."""

from __future__ import annotations

import sys
from pathlib import Path

from ..config import SLURM_ASSETS
from ..exceptions import ConfigError


def read_cluster_env(cluster_dir: Path) -> dict[str, str]:
    """The ``export KEY=VALUE`` lines that start-local-cluster.sh wrote to DIR/cluster.env."""
    path = Path(cluster_dir) / "cluster.env"
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: start the cluster first "
                          f"(deploy/slurm/start-local-cluster.sh {cluster_dir})") from None
    env = {}
    for line in lines:
        key, sep, value = line.removeprefix("export ").partition("=")
        if sep:
            env[key.strip()] = value.strip()
    return env


def local_cluster_slurm_config(cluster_dir: Path, max_jobs: int = 2, python_env: Path | None = None) -> dict:
    """`compute: slurm` settings for the local cluster in ``cluster_dir``: its sshd, this Python
    environment (the cluster shares this machine's file system), job folders under the cluster's folder."""
    cluster_dir = Path(cluster_dir).resolve()
    env = read_cluster_env(cluster_dir)
    small = {"cpus": 1, "mem": "2G", "time_limit": "00:10:00"}
    return {
        "ssh": {"host": env["XFEL_SLURM_SSH_HOST"], "port": int(env["XFEL_SLURM_SSH_PORT"]),
                "user": env["XFEL_SLURM_SSH_USER"], "key_path": env["XFEL_SLURM_SSH_KEY"],
                "known_hosts": env["XFEL_SLURM_SSH_KNOWN_HOSTS"]},
        "python_env": str(python_env or Path(sys.prefix)),
        "remote_base": str(cluster_dir / "jobs"),
        "partition": "debug",
        "max_jobs": max_jobs,
        "poll_interval_s": 0.5,
        "jobs": {asset: dict(small) for asset in SLURM_ASSETS},
    }
