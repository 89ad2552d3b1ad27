import dagster as dg
from xfel_core import versions
from xfel_core.events import pipeline

from ..metadata import materialized, png_md, scalars, scan_points_table
from ..partitions import event_run_partitions
from ..resources import BeamtimeResource
from ..steps import retry_policy, run_science


@dg.asset(partitions_def=event_run_partitions, deps=["event_smalldata"],
          code_version=versions.code_version("event_cube"), group_name="events", kinds={"hdf5", "xarray"},
          retry_policy=retry_policy())
def event_cube(context: dg.AssetExecutionContext, beamtime: BeamtimeResource) -> dg.MaterializeResult:
    """The kept shots' normalised images binned by scan value, laser on (pumped) and off (unpumped): the binned_cube format."""
    info = run_science(pipeline.make_event_cube, beamtime.load(), context.partition_key)
    return materialized("event_cube", info, {
        **scalars(info, "scan_points", "events_kept", "has_difference"),
        "scan_points_table": scan_points_table(info["centres"], info["units"], frame_counts=info["counts"],
                                               frame_types=info["frame_types"]),
        "pump_probe": png_md(info["png"], "pump-probe curve over the ROI and the mean and difference images"),
        "open_with": dg.MetadataValue.md(
            f"```python\nimport xarray as xr\nds = xr.open_dataset({str(info['path'])!r}, engine='h5netcdf')\n```"),
    })
