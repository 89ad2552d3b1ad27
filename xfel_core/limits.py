"""User code under a time limit and a memory limit, in a process of its own, failing alone and named.

A scientist's variable may hang (a network file system, an endless loop) or allocate a whole run
at once. Run in the step's process, the first hangs the step (and ``materialize``) for ever and the
second has the kernel kill the process, taking the run's other variables with it and naming none.
:func:`run_limited` forks the step's process (fast: everything is imported already), sets the
child's data limit, waits for its answer at most ``timeout_s`` and kills it then.
"""

from __future__ import annotations

import os
import pickle
import resource
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from .exceptions import XfelError


class LimitError(XfelError, RuntimeError):
    """User code went over its time limit, or its process was killed (for memory, by the kernel)."""


def _data_bytes() -> int:
    """This process's data segment now (VmData: heap and private anonymous memory), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    return 0


def _child(fn: Callable[[], Any], memory_bytes: int, out: int) -> None:
    """In the forked child: limit the data segment, call ``fn``, send back its result or its exception."""
    try:
        limit = _data_bytes() + memory_bytes
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        payload = pickle.dumps(("ok", fn()))
    except BaseException as e:  # every error goes back to the parent, which raises it
        tb = traceback.format_exc()
        try:
            payload = pickle.dumps(("error", e, tb))
        except Exception:  # an exception that does not pickle
            payload = pickle.dumps(("error", RuntimeError(f"{type(e).__name__}: {e}"), tb))
    with os.fdopen(out, "wb") as f:
        f.write(payload)


def run_limited(fn: Callable[[], Any], what: str, timeout_s: float, memory_gb: float,
                limits_named: str = "execution.variable_timeout_s, execution.variable_memory_gb") -> Any:
    """``fn()`` in a forked process with at most ``memory_gb`` GiB more data and ``timeout_s`` seconds; its result.

    An exception of ``fn`` is raised here (its traceback in the child printed to stderr); a child over its time
    is killed and :class:`LimitError` names ``what`` and the limit; so does a child killed by a signal.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        os.close(read)
        code = 0
        try:
            _child(fn, int(memory_gb * 2**30), write)
        except BaseException:
            code = 1
        os._exit(code)
    os.close(write)
    chunks, deadline = [], time.monotonic() + timeout_s
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                raise LimitError(f"{what}: no result after {timeout_s:g} s: killed (the limit is "
                                 f"{limits_named.split(', ')[0]} in beamtime.yaml)")
            ready, _, _ = select.select([read], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(read, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(read)
        _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and not chunks:
        sig = signal.Signals(os.WTERMSIG(status)).name
        raise LimitError(f"{what}: its process was killed by {sig}"
                         + (" (out of memory? the limit is " + limits_named.split(', ')[-1] + ")"
                            if sig == "SIGKILL" else ""))
    if not chunks:
        raise LimitError(f"{what}: its process ended (exit status {os.WEXITSTATUS(status)}) without a result")
    answer = pickle.loads(b"".join(chunks))
    if answer[0] == "ok":
        return answer[1]
    _, error, tb = answer
    if isinstance(error, MemoryError):
        error = MemoryError(f"{what}: over its memory limit of {memory_gb:g} GiB ({limits_named.split(', ')[-1]} "
                            f"in beamtime.yaml): {error}")
    print(f"{what} failed in its process:\n{tb}", file=sys.stderr, flush=True)  # the step's log keeps it
    raise error
