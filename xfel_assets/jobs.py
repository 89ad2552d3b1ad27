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

#: The processing of raw runs as stages of Dagster runs, in dependency order (a run cannot mix
#: partitionings): (stage name, jobs). Used by the new-run sensor's chains and by `materialize`.
RUN_STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("inputs", ("run_inputs_job", "dark_job")),
    ("modules", ("module_job", "dssc_smalldata_job")),
    ("cube", ("cube_job",)),
)


def run_stage_work(stage: str, runs: list[str], modules: list[str], darks: list[str] = (),
                   smalldata: bool = False) -> list[tuple[str, str]]:
    """(job name, partition key) of every Dagster run of one stage for ``runs`` (the darks of ``darks``;
    dssc_smalldata with ``smalldata``)."""
    from .partitions import run_module_key

    if stage == "inputs":
        return [("run_inputs_job", r) for r in runs] + [("dark_job", m) for m in darks]
    if stage == "modules":
        jobs = ("module_job", "dssc_smalldata_job") if smalldata else ("module_job",)
        return [(j, str(run_module_key(r, m))) for j in jobs for r in runs for m in modules]
    if stage == "cube":
        return [("cube_job", r) for r in runs]
    raise ValueError(f"no stage {stage!r}: {[s for s, _ in RUN_STAGES]}")
