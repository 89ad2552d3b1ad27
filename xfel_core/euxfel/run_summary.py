"""Open and validate a raw run; summarise its trains, frames and modules (the `raw_run` asset)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..config import RUN_KEY_RE, BeamtimeConfig, run_key
from ..exceptions import MissingInputError, RunDataError
from ..outputs import atomic_h5, provenance
from ..readers import euxfel


@dataclass
class RunSummary:
    run: str
    path: Path
    files: list[Path]
    size_bytes: int
    train_ids: np.ndarray  # (trains,) valid trains of the run, ascending
    modules: list[int]
    frames_per_train: np.ndarray  # (modules, trains) frames of each module in each train; 0 if missing
    present: np.ndarray  # (modules, trains) bool: the module has the train (possibly with 0 frames)
    sources: list[str]
    suspect_trains: int

    @property
    def ntrains(self) -> int:
        return len(self.train_ids)


def data_runs(cfg: BeamtimeConfig) -> list[str]:
    """Run folders (``r0042``) in the raw root, the dark run and the ignored runs left out."""
    if not cfg.has_dssc or not cfg.raw_root.is_dir():
        return []
    skip = {cfg.dark_run_key} | {run_key(n) for n in cfg.ignore_runs}
    return sorted(p.name for p in cfg.raw_root.iterdir()
                  if p.is_dir() and RUN_KEY_RE.match(p.name) and p.name not in skip)


def expected_files_present(cfg: BeamtimeConfig, run_dir: Path) -> tuple[list[Path], list[str]]:
    """(the run's raw files, what is missing: modules without files, no control file)."""
    files = euxfel.run_files(run_dir)
    problems = []
    det = cfg.detector
    if det.corrected:  # the modules' files are the corrected ones, in the run's proc folder
        folder = cfg.detector_dir(run_dir.name)
        files = control_files(cfg, files) + (euxfel.run_files(folder, "CORR") if folder.is_dir() else [])
    kind, folder = ("CORR", cfg.detector_dir(run_dir.name)) if det.corrected else ("RAW", run_dir)
    for m in det.modules:
        agg = det.aggregator_for(m)
        if not euxfel.files_of_aggregator(files, agg):
            problems.append(f"module {m:02d} has no files (expected {folder}/{kind}-R*-{agg}-S*.h5)")
    if not control_files(cfg, files):
        problems.append(f"no control-data file (RAW-R*-DA*-S*.h5) in {run_dir}")
    return files, problems


def control_files(cfg: BeamtimeConfig, files: list[Path]) -> list[Path]:
    """The run's files that are not detector module files (the control data: DA aggregators)."""
    det_aggs = {cfg.detector.aggregator_for(m) for m in range(16)}
    return [p for p in files if euxfel.aggregator_of(p) not in det_aggs]


def summarize_run(cfg: BeamtimeConfig, run: str):
    """Open the run folder, check every configured module is there; returns (summary, run)."""
    run_dir = cfg.run_dir(run)
    files, problems = expected_files_present(cfg, run_dir)
    if problems:
        raise RunDataError(f"run {run} is incomplete: " + "; ".join(problems))
    dc = euxfel.open_run(run_dir, files)
    tids = np.asarray(dc.train_ids, dtype=np.uint64)
    mods = cfg.detector.modules
    fpt = np.zeros((len(mods), len(tids)), dtype=np.int64)
    present = np.zeros((len(mods), len(tids)), dtype=bool)
    for i, m in enumerate(mods):
        src = cfg.detector.source_for(m)
        if src not in dc.instrument_sources:
            raise RunDataError(f"run {run}: no source {src!r} for module {m:02d} in "
                               f"{[str(p) for p in euxfel.files_of_aggregator(files, cfg.detector.aggregator_for(m))]}")
        frames = open_module(dc, cfg.detector, m)
        mt, mc = frames.frames_per_train()
        pos = np.searchsorted(tids, mt)
        fpt[i, pos] = mc
        present[i, pos] = True
    summary = RunSummary(
        run=run, path=run_dir, files=files, size_bytes=sum(p.stat().st_size for p in files),
        train_ids=tids, modules=list(mods), frames_per_train=fpt, present=present,
        sources=sorted(dc.all_sources), suspect_trains=euxfel.suspect_train_count(dc),
    )
    return summary, dc


def module_files(cfg: BeamtimeConfig, run: str, module: int) -> list[Path]:
    """A module's files of a run: raw in the run folder, or corrected (``CORR-…``) in its proc folder; [] if
    the folder is not there."""
    folder = cfg.detector_dir(run)
    if not folder.is_dir():
        return []
    kind = "CORR" if cfg.detector.corrected else "RAW"
    return euxfel.files_of_aggregator(euxfel.run_files(folder, kind), cfg.detector.aggregator_for(module))


def open_module(dc, det, module: int) -> euxfel.ModuleFrames:
    """The module's frames in an opened run (``det``: the config's detector), found by EXtra-data's component
    of the detector type."""
    source = det.source_for(module)
    euxfel.find_module(dc, det.kind, det.name, module, det.corrected, source)
    return euxfel.module_frames(dc, source, module, det.module_shape, det.kind, det.corrected, det.mask_bits)


def write_run_summary(path: Path, s: RunSummary, cfg: BeamtimeConfig, attrs: dict | None = None) -> None:
    with atomic_h5(path) as f:
        f["train_id"] = s.train_ids
        f["module"] = np.asarray(s.modules, dtype=np.int64)
        f["frames_per_train"] = s.frames_per_train
        f["frames_per_train"].attrs["axes"] = "module, train_id"
        f["present"] = s.present
        f.attrs.update(provenance(cfg.yaml_text(), [str(p) for p in s.files], run=s.run,
                                  sources=json.dumps(s.sources), size_bytes=s.size_bytes,
                                  suspect_trains=s.suspect_trains, **(attrs or {})))


def read_frames_per_train(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train ids, modules, frames per train (modules, trains)) from a raw_run output."""
    if not path.exists():
        raise MissingInputError(f"{path} does not exist: materialize raw_run for this run first")
    with h5py.File(path, "r") as f:
        return f["train_id"][()], f["module"][()], f["frames_per_train"][()]
