"""Asset jobs, one per partitioning (a Dagster job cannot mix partitionings)."""

from __future__ import annotations

import dagster as dg

#: Each job's assets (its selection), for the run requests that target them by asset.
JOB_SELECTIONS: dict[str, list[str]] = {}


def _asset_job(name: str, selection: list[str], description: str) -> dg.UnresolvedAssetJobDefinition:
    """An asset job of the named assets (recorded in JOB_SELECTIONS)."""
    JOB_SELECTIONS[name] = list(selection)
    return dg.define_asset_job(name, selection=selection, description=description)


run_inputs_job = _asset_job(
    "run_inputs_job", selection=["raw_run", "scan_variable", "framemask"],
    description="Validate a run, bin its scan variable and build its framemask.")
dark_job = _asset_job("dark_job", selection=["dark"],
                               description="The per-cell dark of one module from the configured dark run.")
module_job = _asset_job("module_job", selection=["preprocessed_module"],
                                 description="Reduce one module of one run.")
dssc_smalldata_job = _asset_job("dssc_smalldata_job", selection=["dssc_smalldata"],
                                         description="Per-frame small data of one module of one run.")
cube_job = _asset_job("cube_job", selection=["binned_cube"],
                               description="Join a run's modules into the binned cube.")

insitu_measurement_job = _asset_job(
    "insitu_measurement_job", selection=["insitu_frames", "roi_series"],
    description="Correct one in-situ measurement's frames and compute its ROI series.")
insitu_sample_job = _asset_job(
    "insitu_sample_job", selection=["attenuation_corrected_series"],
    description="Stitch one sample's measurements and correct the attenuator changes.")

event_run_job = _asset_job(
    "event_run_job", selection=["event_smalldata", "event_cube"],
    description="Per-event small data and the binned cube of one run of event files.")

observe_raw_runs_job = _asset_job(
    "observe_raw_runs_job", selection=["raw_run_files"],
    description="Observe every run's raw files (new data versions make their outputs stale).")
observe_calibration_job = _asset_job(
    "observe_calibration_job", selection=["dark_run_files", "gain_map"],
    description="Observe the dark run's files and the gain maps of every module.")

ALL_JOBS = [run_inputs_job, dark_job, module_job, dssc_smalldata_job, cube_job, insitu_measurement_job, insitu_sample_job, event_run_job,
            observe_raw_runs_job, observe_calibration_job]

#: The stages of a raw run's processing, in dependency order (a Dagster run cannot mix
#: partitionings); run_stage_work says which Dagster runs each stage is. Used by the new-run
#: sensor's chains and by `materialize`.
RUN_STAGES = ("inputs", "modules", "cube")


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
    raise ValueError(f"no stage {stage!r}: {list(RUN_STAGES)}")


def job_assets(job: str) -> list[dg.AssetKey]:
    """The assets an asset job of ours materializes (its selection, a list of asset names)."""
    return [dg.AssetKey(a) for a in JOB_SELECTIONS[job]]
