"""Which outputs are stale: made with other code, config, raw files or calibration than the current ones.

Every output records its lineage version (see :mod:`xfel_core.versions`). Here the lineage
version each output would have if made now is computed from the current sources and code, input
by input, down the whole graph (raw_run -> scan_variable, framemask -> preprocessed_module <- dark,
gain map -> binned_cube), and compared with the recorded one. Unlike Dagster's own staleness
(which is not transitive and skips edges from 100 or more partitions), this finds every result
made with old constants, including a cube whose modules have not been redone yet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from . import versions
from .config import BeamtimeConfig
from .outputs import read_attrs

RUN_ASSETS = ("raw_run", "scan_variable", "framemask")


@dataclass(frozen=True)
class StaleOutput:
    """One asset partition whose output is missing or out of date, and why."""

    asset: str
    run: str | None  # None for the per-module dark
    module: int | None  # None for the per-run assets
    reason: str


def _recorded(path: Path) -> tuple[str | None, str | None, dict]:
    """(lineage version, code version, input versions) recorded in an output; Nones if absent."""
    a = read_attrs(path)
    lin, code = a.get("lineage_version"), a.get("code_version")
    try:
        inputs = json.loads(a.get("input_versions", "{}"))
    except ValueError:
        inputs = {}
    return (None if lin is None else str(lin)), (None if code is None else str(code)), inputs


class _Expected:
    """Lineage versions that outputs made now would have, computed lazily and remembered."""

    def __init__(self, cfg: BeamtimeConfig):
        self.cfg = cfg
        self._dark: dict[int, str] = {}
        self._gain: dict[int, str] = {}

    def dark_inputs(self, m: int) -> dict[str, str]:
        return {"dark_source": versions.dark_source_version(self.cfg, m)}

    def dark(self, m: int) -> str:
        if m not in self._dark:
            self._dark[m] = versions.NO_DARK if self.cfg.dark_run is None else versions.lineage_version(
                "dark", self.cfg, self.dark_inputs(m))
        return self._dark[m]

    def gain(self, m: int) -> str:
        if m not in self._gain:
            self._gain[m] = versions.gain_version(self.cfg, m)
        return self._gain[m]

    def run_inputs(self, run: str) -> dict[str, dict[str, str]]:
        """Expected inputs of each asset of a run, by asset (modules as preprocessed_module_MM)."""
        cfg = self.cfg
        raw = {"raw": versions.raw_run_version(cfg, run)}
        lin_raw = versions.lineage_version("raw_run", cfg, raw)
        sv = {"raw_run": lin_raw}
        fm = {"raw_run": lin_raw}
        lin_sv = versions.lineage_version("scan_variable", cfg, sv)
        lin_fm = versions.lineage_version("framemask", cfg, fm)
        out = {"raw_run": raw, "scan_variable": sv, "framemask": fm}
        cube = {"scan_variable": lin_sv}
        for m in cfg.detector.modules:
            pm = {"raw_run": lin_raw, "scan_variable": lin_sv, "framemask": lin_fm,
                  "dark": self.dark(m), "gain": self.gain(m)}
            out[f"preprocessed_module_{m:02d}"] = pm
            cube[f"preprocessed_module_{m:02d}"] = versions.lineage_version("preprocessed_module", cfg, pm)
        out["binned_cube"] = cube
        return out


def _why(asset: str, path: Path, cfg: BeamtimeConfig, expected_inputs: dict[str, str]) -> str | None:
    """None if the output at ``path`` is current, else the reason it is not."""
    lin, code, inputs = _recorded(path)
    if lin is None:
        return "no output" if not path.exists() else "output records no lineage version"
    if lin == versions.lineage_version(asset, cfg, expected_inputs):
        return None
    if code != versions.code_version(asset):
        return f"code changed ({code} -> {versions.code_version(asset)})"
    changed = sorted(k for k in set(inputs) | set(expected_inputs) if inputs.get(k) != expected_inputs.get(k))
    if changed:
        return "input changed: " + ", ".join(changed)
    return "configuration changed"


def find_stale(cfg: BeamtimeConfig, runs: list[str]) -> list[StaleOutput]:
    """Every output of ``runs`` (and every dark) that is missing or out of date, with the reason."""
    exp = _Expected(cfg)
    stale: list[StaleOutput] = []
    if cfg.dark_run is not None:
        for m in cfg.detector.modules:
            why = _why("dark", cfg.output_path(cfg.dark_run_key, "dark", m), cfg, exp.dark_inputs(m))
            if why:
                stale.append(StaleOutput("dark", None, m, why))
    for run in runs:
        inputs = exp.run_inputs(run)
        for asset in RUN_ASSETS + ("binned_cube",):
            why = _why(asset, cfg.output_path(run, asset), cfg, inputs[asset])
            if why:
                stale.append(StaleOutput(asset, run, None, why))
        for m in cfg.detector.modules:
            why = _why("preprocessed_module", cfg.output_path(run, "preprocessed_module", m), cfg,
                       inputs[f"preprocessed_module_{m:02d}"])
            if why:
                stale.append(StaleOutput("preprocessed_module", run, m, why))
    return stale
