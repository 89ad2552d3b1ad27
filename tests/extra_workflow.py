"""An extra workflow declared through the model alone (beamtime.yaml ``workflows: [extra_workflow.py]``).

Per raw run: the mean pulse energy of the gas monitor over the run's trains, from the raw files,
written to ``<processed>/<run>/pulse_energy.h5``. Nothing else in the project names it: its Dagster
asset, staleness and backfill all come from this declaration.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from xfel_core.config import BeamtimeConfig
from xfel_core.lineage import versions
from xfel_core.lineage.model import AssetSpec, Input, Workflow, register
from xfel_core.outputs import atomic_h5, done_info, provenance
from xfel_core.readers import euxfel
from xfel_core.workflows.euxfel import RUN, has_dssc


def output(cfg: BeamtimeConfig, run: str) -> Path:
    return cfg.output_path(run, "pulse_energy")


def make_pulse_energy(cfg: BeamtimeConfig, run: str) -> dict:
    """The run's mean pulse energy (uJ) over trains and pulses, and the number of trains with a value."""
    t0 = time.perf_counter()
    vers = versions.made_from(cfg, "pulse_energy", run)
    dc = euxfel.open_run(cfg.run_dir(run))
    tids, energy = euxfel.train_values(dc, cfg.framemask.xgm_source, cfg.framemask.xgm_key)
    mean = float(np.nanmean(energy))
    path = output(cfg, run)
    with atomic_h5(path) as f:
        f["mean_pulse_energy_uj"] = mean
        f.attrs.update(provenance(cfg.yaml_text(), [str(p) for p in euxfel.run_files(cfg.run_dir(run))], run=run,
                                  **vers))
    return done_info(path, t0, mean_pulse_energy_uj=mean, trains=len(tids), **vers)


register(Workflow("pulse_energy", "The mean pulse energy of each raw run", assets=[
    AssetSpec("pulse_energy", RUN, make_pulse_energy, output, inputs=(Input("raw_run_files", as_="raw"),),
              config=("framemask",), enabled=has_dssc, description="The run's mean pulse energy (gas monitor)."),
]))
