import dagster as dg
from xfel_core import pipeline, versions
from xfel_core.previews import kept_fraction_png

from ..metadata import counts_table, materialized, png_md, scalars
from ..partitions import run_partitions
from ..resources import BeamtimeResource
from ..steps import retry_policy, run_science


@dg.asset(partitions_def=run_partitions, deps=["raw_run"], code_version=versions.code_version("framemask"),
          group_name="dssc", kinds={"hdf5"}, retry_policy=retry_policy(),
          check_specs=[dg.AssetCheckSpec("kept_fraction", asset="framemask", blocking=True,
                                         description="The framemask keeps at least "
                                         "checks.min_kept_fraction of the run's frames.")])
def framemask(context: dg.AssetExecutionContext, beamtime: BeamtimeResource) -> dg.MaterializeResult:
    """Which frames of which trains are used (trains x frames), from the pulse energy and exclusions."""
    info = run_science(pipeline.make_framemask, beamtime.load(), context.partition_key)
    return materialized("framemask", info, {
        **scalars(info, "trains", "frames_per_train", "frames_kept", "frames_rejected", "kept_fraction"),
        "frames_by_reason": counts_table(info["reasons"]),
        "kept_fraction_per_train": png_md(kept_fraction_png(info["train_ids"], info["kept_fraction_per_train"],
                                                            f"{context.partition_key}: frames kept per train"),
                                          "kept fraction per train"),
    })
