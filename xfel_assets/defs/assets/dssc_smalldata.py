import dagster as dg

from xfel_assets.defs.metadata import materialized, scalar, scalars
from xfel_assets.defs.model_defs import make, model_asset
from xfel_assets.defs.partitions import check_modules_match
from xfel_assets.defs.resources import BeamtimeResource


@model_asset("dssc_smalldata")
def dssc_smalldata(context: dg.AssetExecutionContext, beamtime: BeamtimeResource) -> dg.MaterializeResult:
    """Per frame of one module of a run: train, pulse, cell, frame type, scan value, pulse energy, kept flag, ROI sums and radial profile."""
    cfg = beamtime.load()
    check_modules_match(cfg)
    info = make(context, cfg)
    return materialized("dssc_smalldata", info, {
        **scalars(info, "events", "kept", "radial_bins"),
        "events_per_second": scalar(round(info["events_per_second"], 1)),
        "rois": dg.MetadataValue.text(", ".join(info["rois"]) or "none"),
    })
