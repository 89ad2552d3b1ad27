import dagster as dg
from xfel_core import pipeline, versions

from ..metadata import counts_table, materialized, scalar, scalars, size_md
from ..partitions import run_partitions
from ..resources import BeamtimeResource
from ..steps import retry_policy, run_science


@dg.asset(partitions_def=run_partitions, deps=["raw_run_files"], code_version=versions.code_version("raw_run"),
          group_name="dssc", kinds={"hdf5"}, retry_policy=retry_policy(),
          check_specs=[dg.AssetCheckSpec("modules_cover_run", asset="raw_run", blocking=False,
                                         description="Every module has data in at least checks.min_module_coverage "
                                         "of the control data's trains, and no sequence file is missing.")])
def raw_run(context: dg.AssetExecutionContext, beamtime: BeamtimeResource) -> dg.MaterializeResult:
    """A raw run folder, opened and validated: its trains, frames per train, modules, files and sources."""
    info = run_science(pipeline.make_raw_run, beamtime.load(), context.partition_key)
    return materialized("raw_run", info, {
        **scalars(info, "trains", "first_train", "last_train", "frames_per_train", "modules", "files",
                  "suspect_trains", "zero_frame_trains"),
        "raw_size": size_md(info["raw_size_bytes"]),
        "missing_trains_per_module": counts_table(info["missing_trains_per_module"], "module", "missing trains"),
        "sources": dg.MetadataValue.md("\n".join(f"- `{s}`" for s in info["sources"])),
    })
