import dagster as dg

from xfel_assets.defs.compute import ComputeResource
from xfel_assets.defs.metadata import counts_table, materialized, scalar, scalars, scan_points_table, size_md
from xfel_assets.defs.model_defs import make, model_asset
from xfel_assets.defs.partitions import check_modules_match
from xfel_assets.defs.resources import BeamtimeResource


@model_asset("preprocessed_module")
def preprocessed_module(context: dg.AssetExecutionContext, beamtime: BeamtimeResource,
                        compute: ComputeResource) -> dg.MaterializeResult:
    """One module of one run: its kept frames, dark-subtracted (and multiplied or divided by the gain map, if gain_map is configured), summed per (scan point, frame type), with sums of squares and counts."""
    cfg = beamtime.load()
    check_modules_match(cfg)
    info = make(context, cfg, compute=compute)
    frame_types = cfg.frame_types
    return materialized("preprocessed_module", info, {
        **scalars(info, "frames_total", "frames_kept", "kernel_seconds"),
        "read_from_disk": size_md(info["bytes_read"]),
        "frames_rejected": scalar(info["frames_total"] - info["frames_kept"]),
        "frames_per_second": scalar(info["frames_per_second"]),
        "frames_rejected_by_reason": counts_table(info["rejected"]),
        "read_path": dg.MetadataValue.md("\n".join(f"- `{p}`: {how}" for p, how in info["read_paths"].items())),
        "scan_points_table": scan_points_table(info["centres"], info["units"], frame_counts=info["counts"],
                                               frame_types=frame_types),
    })
