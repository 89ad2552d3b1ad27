import dagster as dg

from xfel_assets.defs.metadata import materialized, png_md, scalars, scan_points_table
from xfel_assets.defs.model_defs import make, model_asset
from xfel_assets.defs.resources import BeamtimeResource


@model_asset("event_cube")
def event_cube(context: dg.AssetExecutionContext, beamtime: BeamtimeResource) -> dg.MaterializeResult:
    """The kept shots' normalised images binned by scan value, laser on (pumped) and off (unpumped): the binned_cube format."""
    info = make(context, beamtime.load())
    return materialized("event_cube", info, {
        **scalars(info, "scan_points", "events_kept", "has_difference"),
        "scan_points_table": scan_points_table(info["centres"], info["units"], frame_counts=info["counts"],
                                               frame_types=info["frame_types"]),
        "pump_probe": png_md(info["png"], "pump-probe curve over the ROI and the mean and difference images"),
        "open_with": dg.MetadataValue.md(
            f"```python\nimport xarray as xr\nds = xr.open_dataset({str(info['path'])!r}, engine='h5netcdf')\n```"),
    })
