import dagster as dg
import xfel_core
from xfel_core import pipeline

from ..metadata import common, counts_table, scalar, scalars, scan_points_table
from ..partitions import by_module, by_run, check_modules_match, run_module_partitions, split_run_module_key
from ..resources import BeamtimeResource


@dg.asset(
    partitions_def=run_module_partitions,
    deps=[
        dg.AssetDep("raw_run", partition_mapping=by_run),
        dg.AssetDep("scan_variable", partition_mapping=by_run),
        dg.AssetDep("framemask", partition_mapping=by_run),
        dg.AssetDep("dark", partition_mapping=by_module),
    ],
    code_version=xfel_core.__version__,
    group_name="dssc",
    kinds={"hdf5", "numba"},
)
def preprocessed_module(context: dg.AssetExecutionContext, beamtime: BeamtimeResource) -> dg.MaterializeResult:
    """One module of one run: dark-subtracted frames summed per (scan point, frame type), with sums of squares and counts."""
    cfg = beamtime.load()
    check_modules_match(cfg)
    run, module = split_run_module_key(context.partition_key)
    info = pipeline.make_preprocessed_module(cfg, run, module)
    frame_types = list(cfg.frame_pattern)
    return dg.MaterializeResult(metadata={
        **common(info),
        **scalars(info, "frames_total", "frames_kept", "kernel_seconds", "bytes_read", "dark_version"),
        "frames_rejected": scalar(info["frames_total"] - info["frames_kept"]),
        "frames_per_second": scalar(round(info["frames_per_second"], 1)),
        "frames_rejected_by_reason": counts_table(info["rejected"]),
        "read_path": dg.MetadataValue.md("\n".join(f"- `{p}`: {how}" for p, how in info["read_paths"].items())),
        "scan_points_table": scan_points_table(info["centres"], info["units"], frame_counts=info["counts"],
                                               frame_types=frame_types),
    })
