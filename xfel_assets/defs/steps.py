"""How the asset steps run: which errors are retried, and the concurrency pools of the heavy steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg

from xfel_core.exceptions import XfelError

from xfel_assets.defs.beamtime import config_at_load

#: Concurrency pool of the steps that read whole detector modules (dark, preprocessed_module):
#: its limit (execution.max_module_steps) bounds them across all runs of a backfill.
MODULE_POOL = "xfel_module_steps"
#: Concurrency pool of the steps that run as SLURM jobs (``compute: slurm``): its limit
#: (slurm.max_jobs) bounds the jobs queued or running on the cluster across all runs.
SLURM_POOL = "xfel_slurm_jobs"
#: Pools whose steps are heavy: a run with several of them uses the multiprocess executor.
HEAVY_POOLS = (MODULE_POOL, SLURM_POOL)


def heavy_pool(local_pool: str | None = None) -> str | None:
    """The pool of a heavy asset: the SLURM pool in SLURM mode (the config when the definitions load), else ``local_pool``."""
    cfg = config_at_load()
    return SLURM_POOL if cfg is not None and cfg.compute == "slurm" else local_pool


def run_science(fn: Callable[..., dict], *args: Any) -> dict:
    """Call an xfel_core step; only I/O errors (OSError) are retried, every other error fails at once."""
    try:
        return fn(*args)
    except dg.Failure:
        raise
    except XfelError as e:
        # Retrying cannot mend a corrupt file or a wrong config: fail now, naming the file.
        raise dg.Failure(description=str(e), allow_retries=False) from e
    except OSError:
        raise  # a file system or network hiccup, a file rewritten while read: the retry policy applies
    except Exception as e:
        # A bug or data we did not foresee: the same code on the same data fails the same way again.
        raise dg.Failure(description=f"{type(e).__name__}: {e}", allow_retries=False) from e


def retry_policy() -> dg.RetryPolicy:
    """Retries with exponential backoff and jitter, from the config's execution section."""
    cfg = config_at_load()
    retries, delay = 2, 2.0
    if cfg is not None:
        retries, delay = cfg.execution.retries, cfg.execution.retry_delay_s
    return dg.RetryPolicy(max_retries=retries, delay=delay, backoff=dg.Backoff.EXPONENTIAL,
                          jitter=dg.Jitter.PLUS_MINUS)
