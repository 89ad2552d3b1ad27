import dagster as dg

from ..metadata import materialized, scalars
from ..model_defs import make, model_asset
from ..resources import BeamtimeResource


@model_asset("dark")
def dark(context: dg.AssetExecutionContext, beamtime: BeamtimeResource) -> dg.MaterializeResult:
    """Per module and memory cell: the mean (and noise) of every pixel in the configured dark run."""
    info = make(context, beamtime.load())
    return materialized("dark", info, scalars(info, "cells", "frames", "mean_adu", "median_noise_adu"))
