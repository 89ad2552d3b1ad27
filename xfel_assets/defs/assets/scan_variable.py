import dagster as dg
import numpy as np

from xfel_core.previews import scan_points_png

from xfel_assets.defs.metadata import materialized, png_md, scalars, scan_points_table
from xfel_assets.defs.model_defs import make, model_asset
from xfel_assets.defs.resources import BeamtimeResource


@model_asset("scan_variable")
def scan_variable(context: dg.AssetExecutionContext, beamtime: BeamtimeResource) -> dg.MaterializeResult:
    """The scan variable (e.g. the pump-probe delay) per train, binned into scan points."""
    info = make(context, beamtime.load())
    return materialized("scan_variable", info, {
        **scalars(info, "scan_points", "trains_with_value", "trains_without_value"),
        "scan_points_table": scan_points_table(info["centres"], info["units"], trains=info["trains_per_point"]),
        "trains_per_scan_point": png_md(scan_points_png(np.asarray(info["centres"]), np.asarray(info["trains_per_point"]),
                                                        info["units"], f"{context.partition_key}: trains per scan point"),
                                        "trains per scan point"),
    })
