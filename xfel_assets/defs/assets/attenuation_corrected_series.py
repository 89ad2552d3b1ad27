import dagster as dg

from xfel_assets.defs.metadata import materialized, png_md, scalars, table_from_frame
from xfel_assets.defs.model_defs import make, model_asset
from xfel_assets.defs.resources import BeamtimeResource


@model_asset("attenuation_corrected_series")
def attenuation_corrected_series(context: dg.AssetExecutionContext, beamtime: BeamtimeResource) -> dg.MaterializeResult:
    """A sample's measurements stitched in time, every attenuator change corrected and intensities per second of exposure."""
    info = make(context, beamtime.load())
    changes = info["changes"][["time_local", "found_by", "nominal", "measured", "factor", "used", "residual"]]
    return materialized("attenuation_corrected_series", info, {
        **scalars(info, "frames", "reference", "csv_path", "changes_csv", "png_path"),
        "measurements": dg.MetadataValue.text(", ".join(info["measurements"])),
        "attenuator_changes": table_from_frame(changes),
        "series": png_md(info["png"], "corrected intensity, centre of mass and FWHM against time"),
    })
