import dagster as dg

from xfel_core.events.plots import profile_png

from xfel_assets.defs.compute import ComputeResource
from xfel_assets.defs.metadata import counts_table, materialized, png_md, scalars
from xfel_assets.defs.model_defs import make, model_asset
from xfel_assets.defs.resources import BeamtimeResource


@model_asset("event_smalldata")
def event_smalldata(context: dg.AssetExecutionContext, beamtime: BeamtimeResource,
                    compute: ComputeResource) -> dg.MaterializeResult:
    """Per event (shot) of a run: I0, scan value (timing-tool corrected), laser flag, ROI sums, radial profile (pyFAI geometry) and the anomaly flags."""
    info = make(context, beamtime.load(), compute=compute)
    md = {
        **scalars(info, "events", "kept", "hot_pixels", "masked_pixels", "scan_points", "laser_on", "radial_bins",
                  "radial_unit", "has_timing_tool", "events_per_second"),
        "shots_rejected_by_rule": counts_table(info["rejected_by_rule"], "rule", "shots"),
        "timestamp_join": dg.MetadataValue.text(info["timestamp_join"]),
        "shots_missing_from_the_timestamp_lists": counts_table(info["shots_missing_from"], "timestamp list",
                                                               "shots missing"),
        "scan_source": dg.MetadataValue.text(info["scan_source"]),
        "rois": dg.MetadataValue.text(", ".join(info["rois"]) or "none"),
    }
    if info["profile_mean"] is not None:
        md["mean_radial_profile"] = png_md(profile_png(info["radial"], info["profile_mean"], info["radial_unit"],
                                                       f"{context.partition_key}: mean of {info['kept']} kept shots"),
                                           "mean radial profile")
    return materialized("event_smalldata", info, md)
