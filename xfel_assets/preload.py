"""Imported once by the executor's forkserver: everything a step needs, loaded before steps fork.

Forked steps inherit the imported packages and the resolved Dagster repository instead of
paying for them in every step. (Compiling the numba kernel here would be inherited too, but
numba's compiled state does not survive the fork: the kernel loads from its disk cache per step.)
"""

from xfel_core import binning_kernel, pipeline  # noqa: F401

from .definitions import defs

defs.get_repository_def()
binning_kernel.warm_up()
