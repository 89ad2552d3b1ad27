"""numba kernels compiled at their module's first use, not when it is imported.

Importing numba costs about 0.5 s of CPU (measured), paid by every process that loads the pipeline's
modules: each command, each Dagster code server, the web server's and the daemon's, though most of
them never run a kernel. A kernel module declares its kernels with :meth:`Kernels.njit` (plain Python
functions until then) and calls :meth:`Kernels.ready` before it runs one: numba is imported, and each
kernel is replaced in the module by numba's compiled function (loaded from numba's disk cache), so
kernels calling kernels and ``numba.prange`` resolve as with ``@numba.njit`` at import.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

#: Whether numba is installed (a pinned dependency; the numpy references run without it).
AVAILABLE = importlib.util.find_spec("numba") is not None


class Kernels:
    """The kernels of one module (``kernels = Kernels(globals())``), compiled at the first :meth:`ready`."""

    def __init__(self, namespace: dict[str, Any]):
        self._namespace = namespace
        self._declared: dict[str, tuple[Callable, dict]] = {}
        self._lock = threading.Lock()
        self._ready = False

    def njit(self, **options) -> Callable[[Callable], Callable]:
        """``@numba.njit(**options)``, applied at :meth:`ready`."""
        def declare(fn: Callable) -> Callable:
            self._declared[fn.__name__] = (fn, options)
            return fn
        return declare

    def ready(self) -> ModuleType:
        """numba, with this module's kernels set in its namespace as numba's compiled functions."""
        import numba

        with self._lock:
            if not self._ready:
                self._namespace["numba"] = numba
                for name, (fn, options) in self._declared.items():
                    self._namespace[name] = numba.njit(**options)(fn)
                self._ready = True
        return numba
