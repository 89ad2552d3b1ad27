import dagster as dg
import xfel_core
from xfel_core import pipeline

from ..metadata import common, counts_table, scalar, scalars
from ..partitions import run_partitions
from ..resources import BeamtimeResource


@dg.asset(partitions_def=run_partitions, code_version=xfel_core.__version__, group_name="dssc",
          kinds={"hdf5"})
def raw_run(context: dg.AssetExecutionContext, beamtime: BeamtimeResource) -> dg.MaterializeResult:
    """A raw run folder, opened and validated: its trains, frames per train, modules, files and sources."""
    info = pipeline.make_raw_run(beamtime.load(), context.partition_key)
    return dg.MaterializeResult(metadata={
        **common(info),
        **scalars(info, "trains", "first_train", "last_train", "frames_per_train", "modules", "files",
                  "suspect_trains", "zero_frame_trains"),
        "raw_size_bytes": scalar(info["raw_size_bytes"]),
        "missing_trains_per_module": counts_table(info["missing_trains_per_module"], "module", "missing trains"),
        "sources": dg.MetadataValue.md("\n".join(f"- `{s}`" for s in info["sources"])),
    })
