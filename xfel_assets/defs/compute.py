"""Where the heavy assets compute: in Dagster's step process (local) or as SLURM jobs (``compute: slurm``).

The assets the workflow model marks ``slurm`` hand their xfel_core function to
:meth:`ComputeResource.run`; the asset code is the same in both modes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg

from xfel_core.config import BeamtimeConfig
from xfel_core.lineage import model

from xfel_assets.defs.steps import run_science


class ComputeResource(dg.ConfigurableResource):
    """Runs an xfel_core step where the beamtime config's ``compute`` key says."""

    def run(self, context: dg.AssetExecutionContext, cfg: BeamtimeConfig, fn: Callable[..., dict],
            *args: Any) -> dict:
        """``fn(cfg, *args)`` here, or as a SLURM job; the result dict either way (plus ``slurm`` on the cluster)."""
        asset = context.asset_key.path[-1]
        if cfg.compute == "slurm" and model.asset(asset).slurm:
            from xfel_assets.runtime.slurm import run_on_slurm  # dagster-slurm is only needed in SLURM mode
            return run_on_slurm(context, cfg, asset, fn, args)
        return run_science(fn, cfg, *args)
