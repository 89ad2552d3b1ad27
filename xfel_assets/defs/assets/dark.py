import dagster as dg

from xfel_assets.defs.metadata import materialized, scalars
from xfel_assets.defs.model_defs import make, model_asset
from xfel_assets.defs.resources import BeamtimeResource


@model_asset("dark")
def dark(context: dg.AssetExecutionContext, beamtime: BeamtimeResource) -> dg.MaterializeResult:
    """Per module and memory cell: the mean (and noise) of every pixel in the configured dark run."""
    info = make(context, beamtime.load())
    return materialized("dark", info, scalars(info, "cells", "frames", "mean_adu", "median_noise_adu"))
