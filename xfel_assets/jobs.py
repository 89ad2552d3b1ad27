"""Asset jobs, one per partitioning (a Dagster job cannot mix partitionings)."""

import dagster as dg

run_inputs_job = dg.define_asset_job(
    "run_inputs_job", selection=["raw_run", "scan_variable", "framemask"],
    description="Validate a run, bin its scan variable and build its framemask.")
dark_job = dg.define_asset_job("dark_job", selection=["dark"],
                               description="The per-cell dark of one module from the configured dark run.")
module_job = dg.define_asset_job("module_job", selection=["preprocessed_module"],
                                 description="Reduce one module of one run.")
cube_job = dg.define_asset_job("cube_job", selection=["binned_cube"],
                               description="Join a run's modules into the binned cube.")

ALL_JOBS = [run_inputs_job, dark_job, module_job, cube_job]
