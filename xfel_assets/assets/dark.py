import dagster as dg
import xfel_core
from xfel_core import pipeline

from ..metadata import common, scalars
from ..partitions import module_partitions
from ..resources import BeamtimeResource


@dg.asset(partitions_def=module_partitions, code_version=xfel_core.__version__, group_name="calibration",
          kinds={"hdf5"})
def dark(context: dg.AssetExecutionContext, beamtime: BeamtimeResource) -> dg.MaterializeResult:
    """Per module and memory cell: the mean (and noise) of every pixel in the configured dark run."""
    info = pipeline.make_dark(beamtime.load(), int(context.partition_key))
    return dg.MaterializeResult(
        metadata={**common(info), **scalars(info, "dark_run", "cells", "frames", "mean_adu", "median_noise_adu",
                                            "dark_version")},
        data_version=dg.DataVersion(info["dark_version"]),
    )
