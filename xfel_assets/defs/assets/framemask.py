import dagster as dg

from xfel_core.previews import kept_fraction_png

from xfel_assets.defs.metadata import counts_table, materialized, png_md, scalars
from xfel_assets.defs.model_defs import make, model_asset
from xfel_assets.defs.resources import BeamtimeResource


@model_asset("framemask")
def framemask(context: dg.AssetExecutionContext, beamtime: BeamtimeResource) -> dg.MaterializeResult:
    """Which frames of which trains are used (trains x frames), from the pulse energy and exclusions."""
    info = make(context, beamtime.load())
    return materialized("framemask", info, {
        **scalars(info, "trains", "frames_per_train", "frames_kept", "frames_rejected", "kept_fraction"),
        "frames_by_reason": counts_table(info["reasons"]),
        "kept_fraction_per_train": png_md(kept_fraction_png(info["train_ids"], info["kept_fraction_per_train"],
                                                            f"{context.partition_key}: frames kept per train"),
                                          "kept fraction per train"),
    })
