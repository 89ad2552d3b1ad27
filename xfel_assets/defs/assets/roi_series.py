import dagster as dg

from xfel_assets.defs.metadata import materialized, png_md, scalars
from xfel_assets.defs.model_defs import make, model_asset
from xfel_assets.defs.resources import BeamtimeResource


@model_asset("roi_series")
def roi_series(context: dg.AssetExecutionContext, beamtime: BeamtimeResource) -> dg.MaterializeResult:
    """Per frame of a measurement: the ROIs' centre of mass, FWHM along y and x, and integrated intensities."""
    info = make(context, beamtime.load())
    summary = "\n".join(f"| {c} | {a:.4g} | {b:.4g} | {n} |" for c, (a, b, n) in info["summary"].items())
    return materialized("roi_series", info, {
        **scalars(info, "frames", "csv_path", "png_path"),
        "rois": dg.MetadataValue.md("| ROI | role | y | x |\n|---|---|---|---|\n" + "\n".join(
            f"| {n} | {role} | {y} | {x} |" for n, role, y, x in info["rois"])),
        "first_and_last_frame": dg.MetadataValue.md("| column | first frame | last frame | NaN |\n|---|---|---|---|\n"
                                                    + summary),
        "mean_image_with_rois": png_md(info["png"], "mean image with the ROIs"),
    })
