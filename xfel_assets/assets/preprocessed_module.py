import dagster as dg
from xfel_core import pipeline, versions

from ..metadata import counts_table, materialized, scalar, scalars, scan_points_table, size_md
from ..partitions import check_modules_match, module_step_deps, run_module_partitions, split_run_module_key
from ..compute import ComputeResource
from ..resources import BeamtimeResource
from ..steps import MODULE_POOL, heavy_pool, retry_policy


@dg.asset(
    partitions_def=run_module_partitions,
    deps=module_step_deps("dark", "gain_map"),
    code_version=versions.code_version("preprocessed_module"),
    group_name="dssc",
    kinds={"hdf5", "numba"},
    pool=heavy_pool(MODULE_POOL),
    retry_policy=retry_policy(),
    check_specs=[dg.AssetCheckSpec("counts_add_up", asset="preprocessed_module", blocking=True,
                                   description="The frames summed equal the frames kept; "
                                   "kept plus rejected equal all frames of the module.")],
)
def preprocessed_module(context: dg.AssetExecutionContext, beamtime: BeamtimeResource,
                        compute: ComputeResource) -> dg.MaterializeResult:
    """One module of one run: its kept frames, dark-subtracted (and multiplied or divided by the gain map, if gain_map is configured), summed per (scan point, frame type), with sums of squares and counts."""
    cfg = beamtime.load()
    check_modules_match(cfg)
    run, module = split_run_module_key(context.partition_key)
    info = compute.run(context, cfg, pipeline.make_preprocessed_module, run, module)
    frame_types = list(cfg.frame_pattern)
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
