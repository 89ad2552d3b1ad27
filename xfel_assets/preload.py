"""Imported once by a forkserver (the run launcher's and the executor's): everything a run or step needs.

Forked runs and steps inherit the imported packages and the resolved Dagster repository instead
of paying for them each time. (Compiling the numba kernel here would be inherited too, but
numba's compiled state does not survive the fork: the kernel loads from its disk cache per step.)
"""

import dagster._cli.api  # noqa: F401  (the run worker's entry point, used by the run launcher)

from xfel_core import binning_kernel, pipeline  # noqa: F401

from .definitions import defs

defs.get_repository_def()
binning_kernel.warm_up()
