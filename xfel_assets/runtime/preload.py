"""Imported once by a forkserver (the run launcher's, the executor's, materialize's after a crash): everything a run or step needs (:func:`~xfel_assets.runtime.warm.warm`).

Every process forked from here ends when the process that started the forkserver ends: a killed
command or run worker leaves no workers behind.
"""

import os

from xfel_assets.runtime.liveness import exit_with_process
from xfel_assets.runtime.warm import warm

warm()

_CLIENT = os.getppid()  # this forkserver's parent: the command, daemon or run worker it forks for
os.register_at_fork(after_in_child=lambda: exit_with_process(_CLIENT))
