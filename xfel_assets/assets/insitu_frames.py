import dagster as dg
from xfel_core import versions
from xfel_core.insitu import pipeline

from ..metadata import materialized, scalars
from ..partitions import measurement_partitions
from ..compute import ComputeResource
from ..resources import BeamtimeResource
from ..steps import heavy_pool, retry_policy


class InsituFramesConfig(dg.Config):
    """Run config of insitu_frames."""

    #: Replace an existing output that was made from other TIFFs or settings.
    overwrite: bool = False


@dg.asset(partitions_def=measurement_partitions, deps=["insitu_files"], code_version=versions.code_version("insitu_frames"),
          group_name="insitu", kinds={"hdf5", "tiff"}, retry_policy=retry_policy(), pool=heavy_pool())
def insitu_frames(context: dg.AssetExecutionContext, config: InsituFramesConfig,
                  beamtime: BeamtimeResource, compute: ComputeResource) -> dg.MaterializeResult:
    """A measurement's frames divided by the sample's flat-field, bad pixels replaced by their 3 x 3 median (insitu.median_filter), the background regions' level subtracted (if configured), with their header times, exposures and transmissions."""
    info = compute.run(context, beamtime.load(), pipeline.make_insitu_frames, context.partition_key, config.overwrite)
    return materialized("insitu_frames", info, {
        **scalars(info, "frames", "shape", "first_frame", "last_frame", "duration_s", "exposure_s",
                  "frames_without_transmission", "flatfield_frames", "bad_pixels_flatfield",
                  "bad_pixels_max_per_frame", "background_mean"),
        "transmissions": dg.MetadataValue.text(", ".join(f"{t:g}" for t in info["transmissions"]) or "none in headers"),
    })
