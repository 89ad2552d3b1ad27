import dagster as dg
from xfel_core import pipeline, versions

from ..metadata import materialized, png_md, scalars, scan_points_table
from ..partitions import check_modules_match, run_partitions
from ..resources import BeamtimeResource
from ..steps import retry_policy, run_science


@dg.asset(partitions_def=run_partitions, deps=["preprocessed_module", "scan_variable"],
          code_version=versions.code_version("binned_cube"), group_name="dssc", kinds={"hdf5", "xarray"},
          retry_policy=retry_policy(),
          check_specs=[
              dg.AssetCheckSpec("means_finite", asset="binned_cube", blocking=False,
                                description="No NaN or infinite mean in a bin with frames."),
              dg.AssetCheckSpec("all_modules_present", asset="binned_cube", blocking=False,
                                description="Every configured module is in the cube with frames."),
          ])
def binned_cube(context: dg.AssetExecutionContext, beamtime: BeamtimeResource) -> dg.MaterializeResult:
    """The run's mean detector image per (scan point, frame type, module), with standard errors, counts and the pump-probe difference."""
    cfg = beamtime.load()
    check_modules_match(cfg)
    info = run_science(pipeline.make_binned_cube, cfg, context.partition_key)
    return materialized("binned_cube", info, {
        **scalars(info, "scan_points", "modules", "frames_kept", "has_difference", "nan_fraction"),
        "scan_points_table": scan_points_table(info["centres"], info["units"], frame_counts=info["counts"],
                                               frame_types=info["frame_types"]),
        "pump_probe": png_md(info["png"], "pump-probe curve over the ROI and the assembled mean and difference images"),
        "open_with": dg.MetadataValue.md(
            f"```python\nimport xarray as xr\nds = xr.open_dataset({str(info['path'])!r}, engine='h5netcdf')\n```"),
    })
