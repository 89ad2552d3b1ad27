"""The program a SLURM job runs: one xfel_core step, its result sent back to Dagster through Pipes.

dagster-slurm copies this file into the job's folder on the cluster and runs it with the
cluster's Python environment (which has xfel-assets installed). The Pipes extras name the
function (``module:name``), the beamtime YAML and the arguments; the job loads the config,
calls the function exactly as the local mode does, and reports one custom message:
``{"info": <pickled result, base64>, "node", "job_id", "seconds"}``, or ``{"xfel_error": message, "job_id"}``
for bad data or config (not worth a retry).
"""

from __future__ import annotations

import base64
import importlib
import os
import pickle
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from dagster_pipes import PipesDefaultMessageWriter, PipesMessageWriterChannel, open_dagster_pipes


class _MessagesOnly(PipesDefaultMessageWriter):
    """Pipes messages without a copy of the job's stdout and stderr in them.

    dagster-slurm already streams the job's output files into the step's log; the copy through
    Pipes (``include_stdio_in_messages``) tees each stream and, on closing, waits out its 1 s
    polls one stream after the other: 5 s of every job's 11 s, measured on the demo's modules.
    """

    @contextmanager
    def open(self, params: dict) -> Iterator[PipesMessageWriterChannel]:
        params = {k: v for k, v in params.items() if k != self.INCLUDE_STDIO_IN_MESSAGES_KEY}
        with super().open(params) as channel:
            yield channel


def _stop_on_signal(signum, frame):
    # SLURM sends SIGTERM on scancel and at the time limit (SIGKILL follows after KillWait):
    # unwinding runs the writers' cleanup, so no temporary output is left behind.
    raise SystemExit(f"stopped by {signal.Signals(signum).name} (the SLURM job was cancelled or reached its time limit)")


def main() -> None:
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGINT, _stop_on_signal)
    with open_dagster_pipes(message_writer=_MessagesOnly()) as pipes:
        extras = pipes.extras
        from xfel_core.config import load_beamtime
        from xfel_core.exceptions import XfelError

        module, name = extras["function"].split(":")
        fn = getattr(importlib.import_module(module), name)
        t0 = time.perf_counter()
        try:
            info = fn(load_beamtime(extras["config_path"]), *extras["args"])
        except XfelError as e:
            pipes.report_custom_message({"xfel_error": str(e), "job_id": os.environ.get("SLURM_JOB_ID", "")})
            return
        pipes.report_custom_message({
            "info": base64.b64encode(pickle.dumps(info)).decode(),
            "node": os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
            "job_id": os.environ.get("SLURM_JOB_ID", ""),
            "seconds": time.perf_counter() - t0,
        })


if __name__ == "__main__":
    main()
