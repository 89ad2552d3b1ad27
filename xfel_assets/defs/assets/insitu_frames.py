import dagster as dg

from xfel_assets.defs.compute import ComputeResource
from xfel_assets.defs.metadata import materialized, scalars
from xfel_assets.defs.model_defs import BACKFILL_TAG, make, model_asset
from xfel_assets.defs.resources import BeamtimeResource


class InsituFramesConfig(dg.Config):
    """Run config of insitu_frames."""

    #: Replace an existing output that was made from other TIFFs or settings.
    overwrite: bool = False


@model_asset("insitu_frames")
def insitu_frames(context: dg.AssetExecutionContext, config: InsituFramesConfig,
                  beamtime: BeamtimeResource, compute: ComputeResource) -> dg.MaterializeResult:
    """A measurement's frames divided by the sample's flat-field, bad pixels replaced by their 3 x 3 median (insitu.median_filter), the background regions' level subtracted (if configured), with their header times, exposures and transmissions."""
    # `xfel-assets backfill` (tag xfel/backfill: cli) was asked to redo outputs made from other TIFFs or settings.
    overwrite = config.overwrite or context.run.tags.get(BACKFILL_TAG) == "cli"
    info = make(context, beamtime.load(), overwrite, compute=compute)
    return materialized("insitu_frames", info, {
        **scalars(info, "frames", "shape", "first_frame", "last_frame", "duration_s", "exposure_s",
                  "frames_without_transmission", "flatfield_frames", "bad_pixels_flatfield",
                  "bad_pixels_max_per_frame", "background_mean"),
        "transmissions": dg.MetadataValue.text(", ".join(f"{t:g}" for t in info["transmissions"]) or "none in headers"),
    })
