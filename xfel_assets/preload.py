"""Imported once by a forkserver (the run launcher's, the executor's, materialize's): everything a run or step needs.

Forked runs and steps inherit the imported packages and the resolved Dagster repository instead
of paying for them each time. (Compiling the numba kernel here would be inherited too, but
numba's compiled state does not survive the fork: the kernel loads from its disk cache per step.)
Every process forked from here ends when the process that started the forkserver ends: a killed
command or run worker leaves no workers behind.
"""

import os

import dagster._cli.api  # noqa: F401  (the run worker's entry point, used by the run launcher)

from xfel_core import binning_kernel
from xfel_core.euxfel import pipeline  # noqa: F401

from .definitions import defs
from .liveness import exit_with_process

defs.get_repository_def()
binning_kernel.warm_up()

_CLIENT = os.getppid()  # this forkserver's parent: the command, daemon or run worker it forks for
os.register_at_fork(after_in_child=lambda: exit_with_process(_CLIENT))
