import dagster as dg
from xfel_core import pipeline, versions

from ..metadata import materialized, scalars
from ..partitions import module_partitions
from ..resources import BeamtimeResource
from ..steps import MODULE_POOL, retry_policy, run_science


@dg.asset(partitions_def=module_partitions, deps=["dark_run_files"], code_version=versions.code_version("dark"),
          group_name="calibration", kinds={"hdf5"}, pool=MODULE_POOL, retry_policy=retry_policy(),
          check_specs=[dg.AssetCheckSpec("noise_within_bounds", asset="dark", blocking=True,
                                         description="The module's median dark noise lies within "
                                         "checks.dark_noise_adu and no pixel's noise is NaN.")])
def dark(context: dg.AssetExecutionContext, beamtime: BeamtimeResource) -> dg.MaterializeResult:
    """Per module and memory cell: the mean (and noise) of every pixel in the configured dark run."""
    info = run_science(pipeline.make_dark, beamtime.load(), int(context.partition_key))
    return materialized("dark", info, scalars(info, "cells", "frames", "mean_adu", "median_noise_adu"))
