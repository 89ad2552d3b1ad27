import dagster as dg

from xfel_assets.defs.metadata import counts_table, materialized, scalars, size_md
from xfel_assets.defs.model_defs import make, model_asset
from xfel_assets.defs.resources import BeamtimeResource


@model_asset("raw_run")
def raw_run(context: dg.AssetExecutionContext, beamtime: BeamtimeResource) -> dg.MaterializeResult:
    """A raw run folder, opened and validated: its trains, frames per train, modules, files and sources."""
    info = make(context, beamtime.load())
    return materialized("raw_run", info, {
        **scalars(info, "trains", "first_train", "last_train", "frames_per_train", "modules", "files",
                  "suspect_trains", "zero_frame_trains"),
        "raw_size": size_md(info["raw_size_bytes"]),
        "missing_trains_per_module": counts_table(info["missing_trains_per_module"], "module", "missing trains"),
        "sources": dg.MetadataValue.md("\n".join(f"- `{s}`" for s in info["sources"])),
    })
