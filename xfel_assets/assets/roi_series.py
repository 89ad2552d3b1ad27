import dagster as dg
from xfel_core import versions
from xfel_core.insitu import pipeline

from ..metadata import materialized, png_md, scalars
from ..partitions import measurement_partitions
from ..resources import BeamtimeResource
from ..steps import retry_policy, run_science


@dg.asset(partitions_def=measurement_partitions, deps=["insitu_frames"],
          code_version=versions.code_version("roi_series"), group_name="insitu", kinds={"parquet", "csv"},
          retry_policy=retry_policy())
def roi_series(context: dg.AssetExecutionContext, beamtime: BeamtimeResource) -> dg.MaterializeResult:
    """Per frame of a measurement: the ROIs' centre of mass, FWHM along y and x, and integrated intensities."""
    info = run_science(pipeline.make_roi_series, beamtime.load(), context.partition_key)
    summary = "\n".join(f"| {c} | {a:.4g} | {b:.4g} | {n} |" for c, (a, b, n) in info["summary"].items())
    return materialized("roi_series", info, {
        **scalars(info, "frames", "csv_path", "png_path"),
        "rois": dg.MetadataValue.md("| ROI | role | y | x |\n|---|---|---|---|\n" + "\n".join(
            f"| {n} | {role} | {y} | {x} |" for n, role, y, x in info["rois"])),
        "first_and_last_frame": dg.MetadataValue.md("| column | first frame | last frame | NaN |\n|---|---|---|---|\n"
                                                    + summary),
        "mean_image_with_rois": png_md(info["png"], "mean image with the ROIs"),
    })
