import dagster as dg
import xfel_core
from xfel_core import pipeline

from ..metadata import common, scalars, scan_points_table
from ..partitions import check_modules_match, run_partitions
from ..resources import BeamtimeResource


@dg.asset(partitions_def=run_partitions, deps=["preprocessed_module", "scan_variable"],
          code_version=xfel_core.__version__, group_name="dssc", kinds={"hdf5", "xarray"})
def binned_cube(context: dg.AssetExecutionContext, beamtime: BeamtimeResource) -> dg.MaterializeResult:
    """The run's mean detector image per (scan point, frame type, module), with standard errors, counts and the pump-probe difference."""
    cfg = beamtime.load()
    check_modules_match(cfg)
    info = pipeline.make_binned_cube(cfg, context.partition_key)
    return dg.MaterializeResult(metadata={
        **common(info),
        **scalars(info, "scan_points", "modules", "frames_kept", "has_difference", "nan_fraction"),
        "scan_points_table": scan_points_table(info["centres"], info["units"], frame_counts=info["counts"],
                                               frame_types=info["frame_types"]),
        "open_with": dg.MetadataValue.md(
            f"```python\nimport xarray as xr\nds = xr.open_dataset({str(info['path'])!r}, engine='h5netcdf')\n```"),
    })
