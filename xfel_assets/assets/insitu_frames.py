import dagster as dg
from xfel_core import versions
from xfel_core.insitu import pipeline

from ..metadata import materialized, scalars
from ..partitions import measurement_partitions
from ..resources import BeamtimeResource
from ..steps import retry_policy, run_science


class InsituFramesConfig(dg.Config):
    """Run config of insitu_frames."""

    #: Replace an existing output that was made from other TIFFs or settings.
    overwrite: bool = False


@dg.asset(partitions_def=measurement_partitions, deps=["insitu_files"], code_version=versions.code_version("insitu_frames"),
          group_name="insitu", kinds={"hdf5", "tiff"}, retry_policy=retry_policy())
def insitu_frames(context: dg.AssetExecutionContext, config: InsituFramesConfig,
                  beamtime: BeamtimeResource) -> dg.MaterializeResult:
    """A measurement's frames with bad pixels replaced (3 x 3 median), flat-field divided and background subtracted, with their header times, exposures and transmissions."""
    info = run_science(pipeline.make_insitu_frames, beamtime.load(), context.partition_key, config.overwrite)
    return materialized("insitu_frames", info, {
        **scalars(info, "frames", "shape", "first_frame", "last_frame", "duration_s", "exposure_s",
                  "frames_without_transmission", "flatfield_frames", "bad_pixels_flatfield",
                  "bad_pixels_max_per_frame", "background_mean"),
        "transmissions": dg.MetadataValue.text(", ".join(f"{t:g}" for t in info["transmissions"]) or "none in headers"),
    })
