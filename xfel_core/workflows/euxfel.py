"""European XFEL detector runs (DSSC, AGIPD, LPD, JUNGFRAU; raw or corrected): the assets of a raw run, its modules
and the dark, declared once."""

from __future__ import annotations

import itertools

from ..config import BeamtimeConfig, run_module_key
from ..euxfel import dssc_smalldata, pipeline
from ..euxfel.gain import read_gain_map
from ..euxfel.run_summary import data_runs, module_files
from ..hashing import digest, files_fingerprint
from ..lineage.model import BEAMTIME, AssetSpec, Check, Input, Job, Partitioning, Scope, Source, Workflow, register
from ..lineage.versions import NO_DARK, NO_GAIN
from ..rois import rois_version, section_rois


def run_keys(cfg: BeamtimeConfig, scope: Scope) -> list[str]:
    """The beamtime's data runs (the dark run and ignored runs left out), or the scope's."""
    runs = data_runs(cfg)
    return runs if scope.runs is None else [r for r in scope.runs if r in runs]


def module_keys(cfg: BeamtimeConfig, scope: Scope) -> list[str]:
    """The configured detector modules, ``00`` ... ``15``."""
    return cfg.module_keys


RUN = Partitioning("run", run_keys, dynamic="runs")
MODULE = Partitioning("module", module_keys, args=lambda key: (int(key),))
RUN_MODULE = Partitioning(
    "run_module", lambda cfg, scope: [run_module_key(r, m) for r, m in itertools.product(run_keys(cfg, scope),
                                                                                       cfg.detector.modules)],
    args=lambda key: (key.split("|")[1], int(key.split("|")[0])), dims=(MODULE, RUN))


def has_dssc(cfg: BeamtimeConfig) -> bool:
    return cfg.has_dssc


def has_dark(cfg: BeamtimeConfig) -> bool:
    return cfg.has_dssc and cfg.dark_run is not None


def raw_run_version(cfg: BeamtimeConfig, run: str) -> str:
    """Source version of a raw run: its folder's files (names, sizes, modification times), and with corrected
    data its proc folder's (a new correction of the run is a new version)."""
    run_dir = cfg.run_dir(run)
    if not run_dir.is_dir():
        return digest("missing", run)
    folders = {run_dir, cfg.detector_dir(run)}
    return files_fingerprint([p for d in sorted(folders) if d.is_dir() for p in d.iterdir() if p.is_file()])


def dark_source_version(cfg: BeamtimeConfig, module: str) -> str:
    """Source version of a module's dark: the dark run's number and that module's raw files.

    A new dark run is new provenance even if its frames equal the old one's: the outputs name the
    dark run they were made with, so every output made with the old one is stale.
    """
    if cfg.dark_run is None:
        return NO_DARK
    run = cfg.dark_run_key
    return digest(run, files_fingerprint(module_files(cfg, run, int(module))))


def gain_version(cfg: BeamtimeConfig, module: str) -> str:
    """Source version of a module's gain / flat-field map: a hash of its values (or no-gain)."""
    return NO_GAIN if cfg.gain_map is None else read_gain_map(cfg, int(module)).version


def smalldata_rois_version(cfg: BeamtimeConfig, key: None) -> str:
    """Source version of the DSSC small data's ROIs (from the config or its ROI file)."""
    return rois_version(section_rois(cfg.smalldata)) if cfg.smalldata is not None else "no-rois"


def _modules_of_run(cfg: BeamtimeConfig, run: str) -> dict[str, str]:
    return {f"preprocessed_module_{m:02d}": run_module_key(run, m) for m in cfg.detector.modules}


def _run_path(asset: str):
    return lambda cfg, run: cfg.output_path(run, asset)


def _module_path(asset: str):
    return lambda cfg, key: cfg.output_path(key.split("|")[1], asset, int(key.split("|")[0]))


RUN_INPUTS = (Input("raw_run"), Input("scan_variable"), Input("framemask"))
DARK = Input("dark", when=has_dark, otherwise=NO_DARK)
KINDS = ("hdf5",)

WORKFLOW = register(Workflow("euxfel", "European XFEL detector runs (DSSC, AGIPD, LPD, JUNGFRAU): modules reduced "
                            "per scan point, the binned cube", sources=[
    Source("raw_run_files", RUN, raw_run_version, "The raw files of each run (European XFEL run folder); version: "
           "file names, sizes, modification times.", enabled=has_dssc, job="observe_raw_runs_job"),
    Source("dark_run_files", MODULE, dark_source_version, "Each module's files in the configured dark run; version: "
           "the run number and the files.", enabled=has_dssc, job="observe_calibration_job"),
    Source("gain_map", MODULE, gain_version, "Each module's gain / flat-field map from the configured file; version: "
           "a hash of its values.", enabled=has_dssc, job="observe_calibration_job"),
    Source("smalldata_rois", BEAMTIME, smalldata_rois_version, "The ROIs of the DSSC small data (smalldata section "
           "or its ROI file); version: a hash of the ROIs.", enabled=lambda cfg: cfg.smalldata is not None),
], assets=[
    AssetSpec("raw_run", RUN, pipeline.make_raw_run, _run_path("raw_run"),
              inputs=(Input("raw_run_files", as_="raw"),), config=("detector",), kinds=KINDS, enabled=has_dssc,
              job="run_inputs_job",
              checks=(Check("modules_cover_run", "Every module has data in at least checks.min_module_coverage of the "
                            "control data's trains, and no sequence file is missing."),)),
    AssetSpec("scan_variable", RUN, pipeline.make_scan_variable, _run_path("scan_variable"),
              inputs=(Input("raw_run"),), config=("scan_variable", "bunch_pattern"), kinds=KINDS, enabled=has_dssc,
              job="run_inputs_job"),
    AssetSpec("framemask", RUN, pipeline.make_framemask, _run_path("framemask"),
              inputs=(Input("raw_run"),), config=("framemask", "maxframes", "frame_pattern", "bunch_pattern"),
              kinds=KINDS, enabled=has_dssc, job="run_inputs_job",
              checks=(Check("kept_fraction", "The framemask keeps at least checks.min_kept_fraction of the run's "
                            "frames.", blocking=True),)),
    AssetSpec("dark", MODULE, pipeline.make_dark, lambda cfg, m: pipeline.dark_path(cfg, int(m)),
              inputs=(Input("dark_run_files", as_="dark_source"),), config=("detector", "dark_run"), kinds=KINDS,
              pool="module", enabled=has_dark, job="dark_job",
              checks=(Check("noise_within_bounds", "The module's median dark noise lies within checks.dark_noise_adu "
                            "and no pixel's noise is NaN.", blocking=True),)),
    AssetSpec("preprocessed_module", RUN_MODULE, pipeline.make_preprocessed_module, _module_path("preprocessed_module"),
              inputs=(*RUN_INPUTS, DARK, Input("gain_map", as_="gain")),
              config=("detector", "frame_pattern", "gain_map"), kinds=("hdf5", "numba"), pool="module", slurm=True,
              enabled=has_dssc, job="module_job",
              checks=(Check("counts_add_up", "The frames summed equal the frames kept; kept plus rejected equal all "
                            "frames of the module.", blocking=True),)),
    AssetSpec("binned_cube", RUN, pipeline.make_binned_cube, _run_path("binned_cube"),
              inputs=(Input("preprocessed_module", fan_in=_modules_of_run), Input("scan_variable")),
              config=("detector", "frame_pattern"), kinds=("hdf5", "xarray"), enabled=has_dssc, job="cube_job",
              checks=(Check("means_finite", "No NaN or infinite mean in a bin with frames."),
                      Check("all_modules_present", "Every configured module is in the cube with frames."))),
    AssetSpec("dssc_smalldata", RUN_MODULE, dssc_smalldata.make_dssc_smalldata, _module_path("dssc_smalldata"),
              inputs=(*RUN_INPUTS, Input("smalldata_rois", as_="rois"), DARK),
              config={"detector": True, "frame_pattern": True, "framemask": True,
                      "smalldata": {"geometry", "beam_centres"}},
              kinds=("hdf5", "xarray"), pool="module", job="dssc_smalldata_job",
              enabled=lambda cfg: cfg.has_dssc and cfg.smalldata is not None),
], jobs=[
    # A raw run's processing: its inputs and the missing darks, then its modules, then its cube.
    Job("run_inputs_job", "Validate a run, bin its scan variable and build its framemask.", stage="inputs"),
    Job("dark_job", "The per-cell dark of one module from the configured dark run.", stage="inputs"),
    Job("module_job", "Reduce one module of one run.", stage="modules"),
    Job("dssc_smalldata_job", "Per-frame small data of one module of one run.", stage="modules"),
    Job("cube_job", "Join a run's modules into the binned cube.", stage="cube"),
    Job("observe_raw_runs_job", "Observe every run's raw files (new data versions make their outputs stale)."),
    Job("observe_calibration_job", "Observe the dark run's files and the gain maps of every module."),
]))
