import dagster as dg

from xfel_assets.defs.metadata import materialized, png_md, scalars, scan_points_table
from xfel_assets.defs.model_defs import make, model_asset
from xfel_assets.defs.partitions import check_modules_match
from xfel_assets.defs.resources import BeamtimeResource


@model_asset("binned_cube")
def binned_cube(context: dg.AssetExecutionContext, beamtime: BeamtimeResource) -> dg.MaterializeResult:
    """The run's mean detector image per (scan point, frame type, module), with standard errors, counts and the pump-probe difference."""
    cfg = beamtime.load()
    check_modules_match(cfg)
    info = make(context, cfg)
    return materialized("binned_cube", info, {
        **scalars(info, "scan_points", "modules", "frames_kept", "has_difference", "nan_fraction"),
        "scan_points_table": scan_points_table(info["centres"], info["units"], frame_counts=info["counts"],
                                               frame_types=info["frame_types"]),
        "pump_probe": png_md(info["png"], "pump-probe curve over the ROI and the assembled mean and difference images"),
        "open_with": dg.MetadataValue.md(
            f"```python\nimport xarray as xr\nds = xr.open_dataset({str(info['path'])!r}, engine='h5netcdf')\n```"),
    })
