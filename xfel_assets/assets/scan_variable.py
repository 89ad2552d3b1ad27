import dagster as dg
import xfel_core
from xfel_core import pipeline

from ..metadata import common, scalars, scan_points_table
from ..partitions import run_partitions
from ..resources import BeamtimeResource


@dg.asset(partitions_def=run_partitions, deps=["raw_run"], code_version=xfel_core.__version__,
          group_name="dssc", kinds={"hdf5"})
def scan_variable(context: dg.AssetExecutionContext, beamtime: BeamtimeResource) -> dg.MaterializeResult:
    """The scan variable (e.g. the pump-probe delay) per train, binned into scan points."""
    info = pipeline.make_scan_variable(beamtime.load(), context.partition_key)
    return dg.MaterializeResult(metadata={
        **common(info),
        **scalars(info, "scan_points", "trains_with_value", "trains_without_value"),
        "scan_points_table": scan_points_table(info["centres"], info["units"], trains=info["trains_per_point"]),
    })
