"""How the asset steps run: which errors are retried, and the concurrency pool of module steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg

from xfel_core.exceptions import XfelError

from .resources import config_at_load

#: Concurrency pool of the steps that read whole detector modules (dark, preprocessed_module):
#: its limit (execution.max_module_steps) bounds them across all runs of a backfill.
MODULE_POOL = "xfel_module_steps"


def run_science(fn: Callable[..., dict], *args: Any) -> dict:
    """Call an xfel_core step; bad data and config (XfelError) fail at once, I/O errors are retried."""
    try:
        return fn(*args)
    except XfelError as e:
        # Retrying cannot mend a corrupt file or a wrong config: fail now, naming the file.
        raise dg.Failure(description=str(e), allow_retries=False) from e


def retry_policy() -> dg.RetryPolicy:
    """Retries with exponential backoff and jitter, from the config's execution section."""
    cfg = config_at_load()
    retries, delay = 2, 2.0
    if cfg is not None:
        retries, delay = cfg.execution.retries, cfg.execution.retry_delay_s
    return dg.RetryPolicy(max_retries=retries, delay=delay, backoff=dg.Backoff.EXPONENTIAL,
                          jitter=dg.Jitter.PLUS_MINUS)
