"""Asset jobs, one per partitioning (a Dagster job cannot mix partitionings)."""

import dagster as dg

run_inputs_job = dg.define_asset_job(
    "run_inputs_job", selection=["raw_run", "scan_variable", "framemask"],
    description="Validate a run, bin its scan variable and build its framemask.")
dark_job = dg.define_asset_job("dark_job", selection=["dark"],
                               description="The per-cell dark of one module from the configured dark run.")
module_job = dg.define_asset_job("module_job", selection=["preprocessed_module"],
                                 description="Reduce one module of one run.")
dssc_smalldata_job = dg.define_asset_job("dssc_smalldata_job", selection=["dssc_smalldata"],
                                         description="Per-frame small data of one module of one run.")
cube_job = dg.define_asset_job("cube_job", selection=["binned_cube"],
                               description="Join a run's modules into the binned cube.")

insitu_measurement_job = dg.define_asset_job(
    "insitu_measurement_job", selection=["insitu_frames", "roi_series"],
    description="Correct one in-situ measurement's frames and compute its ROI series.")
insitu_sample_job = dg.define_asset_job(
    "insitu_sample_job", selection=["attenuation_corrected_series"],
    description="Stitch one sample's measurements and correct the attenuator changes.")

event_run_job = dg.define_asset_job(
    "event_run_job", selection=["event_smalldata", "event_cube"],
    description="Per-event small data and the binned cube of one run of event files.")

observe_raw_runs_job = dg.define_asset_job(
    "observe_raw_runs_job", selection=["raw_run_files"],
    description="Observe every run's raw files (new data versions make their outputs stale).")
observe_calibration_job = dg.define_asset_job(
    "observe_calibration_job", selection=["dark_run_files", "gain_map"],
    description="Observe the dark run's files and the gain maps of every module.")

ALL_JOBS = [run_inputs_job, dark_job, module_job, dssc_smalldata_job, cube_job, insitu_measurement_job, insitu_sample_job, event_run_job,
            observe_raw_runs_job, observe_calibration_job]
