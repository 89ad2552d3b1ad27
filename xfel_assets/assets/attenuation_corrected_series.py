import dagster as dg
from xfel_core import versions
from xfel_core.insitu import pipeline

from ..metadata import materialized, png_md, scalars, table_from_frame
from ..partitions import sample_partitions
from ..resources import BeamtimeResource
from ..steps import retry_policy, run_science


@dg.asset(partitions_def=sample_partitions,
          # A sample's series reads the roi_series of its own measurements (found in its folder);
          # Dagster cannot map measurement to sample partitions, so the edge is to all of them.
          deps=[dg.AssetDep("roi_series", partition_mapping=dg.AllPartitionMapping())],
          code_version=versions.code_version("attenuation_corrected_series"), group_name="insitu",
          kinds={"parquet", "csv"}, retry_policy=retry_policy(),
          check_specs=[
              dg.AssetCheckSpec("continuous_across_changes", asset="attenuation_corrected_series", blocking=False,
                                description="After correction, the reference intensity jumps by at most 5 % "
                                "at every attenuator change."),
              dg.AssetCheckSpec("all_measurements_included", asset="attenuation_corrected_series", blocking=False,
                                description="Every measurement folder of the sample has a roi_series in the series."),
          ])
def attenuation_corrected_series(context: dg.AssetExecutionContext, beamtime: BeamtimeResource) -> dg.MaterializeResult:
    """A sample's measurements stitched in time, every attenuator change corrected and intensities per second of exposure."""
    info = run_science(pipeline.make_attenuation_corrected_series, beamtime.load(), context.partition_key)
    changes = info["changes"][["time_local", "found_by", "nominal", "measured", "factor", "used", "residual"]]
    return materialized("attenuation_corrected_series", info, {
        **scalars(info, "frames", "reference", "csv_path", "changes_csv", "png_path"),
        "measurements": dg.MetadataValue.text(", ".join(info["measurements"])),
        "attenuator_changes": table_from_frame(changes),
        "series": png_md(info["png"], "corrected intensity, centre of mass and FWHM against time"),
    })
