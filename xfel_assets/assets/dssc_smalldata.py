import dagster as dg
from xfel_core import versions
from xfel_core.dssc_smalldata import make_dssc_smalldata

from ..metadata import materialized, scalar, scalars
from ..partitions import check_modules_match, module_step_deps, run_module_partitions, split_run_module_key
from ..resources import BeamtimeResource
from ..steps import MODULE_POOL, retry_policy, run_science


@dg.asset(
    partitions_def=run_module_partitions,
    deps=module_step_deps("dark"),
    code_version=versions.code_version("dssc_smalldata"),
    group_name="dssc",
    kinds={"hdf5", "xarray"},
    pool=MODULE_POOL,
    retry_policy=retry_policy(),
)
def dssc_smalldata(context: dg.AssetExecutionContext, beamtime: BeamtimeResource) -> dg.MaterializeResult:
    """Per frame of one module of a run: train, pulse, cell, frame type, scan value, pulse energy, kept flag, ROI sums and radial profile."""
    cfg = beamtime.load()
    check_modules_match(cfg)
    run, module = split_run_module_key(context.partition_key)
    info = run_science(make_dssc_smalldata, cfg, run, module)
    return materialized("dssc_smalldata", info, {
        **scalars(info, "events", "kept", "radial_bins"),
        "events_per_second": scalar(round(info["events_per_second"], 1)),
        "rois": dg.MetadataValue.text(", ".join(info["rois"]) or "none"),
    })
