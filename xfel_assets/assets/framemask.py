import dagster as dg
import xfel_core
from xfel_core import pipeline

from ..metadata import common, counts_table, scalars
from ..partitions import run_partitions
from ..resources import BeamtimeResource


@dg.asset(partitions_def=run_partitions, deps=["raw_run"], code_version=xfel_core.__version__,
          group_name="dssc", kinds={"hdf5"})
def framemask(context: dg.AssetExecutionContext, beamtime: BeamtimeResource) -> dg.MaterializeResult:
    """Which frames of which trains are used (trains x frames), from the pulse energy and exclusions."""
    info = pipeline.make_framemask(beamtime.load(), context.partition_key)
    return dg.MaterializeResult(metadata={
        **common(info),
        **scalars(info, "trains", "frames_per_train", "frames_kept", "frames_rejected", "kept_fraction"),
        "frames_by_reason": counts_table(info["reasons"]),
    })
