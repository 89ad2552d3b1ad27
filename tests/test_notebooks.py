"""The notebooks under notebooks/, executed top to bottom by nbclient on freshly generated demo data.

Each notebook ends by printing ``RESULT {...}``: its key numbers, checked here against the truth
the demo data were generated with.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import reduce_dssc_run
from xfel_core.config import load_beamtime
from xfel_core.demo import beamtime as dssc_demo
from xfel_core.demo import events as events_demo
from xfel_core.demo import insitu as insitu_demo
from xfel_core.demo.beamtime import write_demo_beamtime

nbclient = pytest.importorskip("nbclient")
import nbformat  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(scope="module")
def demo_beamtime(tmp_path_factory):
    """The demo beamtime (one DSSC run, the in-situ sample, event runs), every output made, as $XFEL_BEAMTIME."""
    from xfel_core.events import pipeline as events
    from xfel_core.insitu import layout
    from xfel_core.insitu import pipeline as insitu

    root = tmp_path_factory.mktemp("notebook-demo")
    cfg = load_beamtime(write_demo_beamtime(root, runs=1, modules=2, events=True))
    reduce_dssc_run(cfg, "r0002")
    for key in layout.all_measurement_keys(cfg.insitu):
        insitu.make_insitu_frames(cfg, key)
        insitu.make_roi_series(cfg, key)
    insitu.make_attenuation_corrected_series(cfg, "GaN01")
    events.make_event_smalldata(cfg, "r0002")
    old = os.environ.get("XFEL_BEAMTIME")
    os.environ["XFEL_BEAMTIME"] = str(cfg.source_file)  # the kernels inherit it
    yield cfg
    if old is None:
        os.environ.pop("XFEL_BEAMTIME", None)
    else:
        os.environ["XFEL_BEAMTIME"] = old


def run_notebook(name: str, workdir: Path) -> dict:
    """Execute a notebook (errors fail the test with the cell) and return its RESULT."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}}).execute()
    out = workdir / name
    nbformat.write(nb, out)  # the executed notebook, plots included, for a look
    printed = [o["text"] for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("name") == "stdout"]
    line = next(l for text in printed for l in text.splitlines() if l.startswith("RESULT "))
    return ast.literal_eval(line.removeprefix("RESULT "))


def test_dssc_pump_probe_notebook_finds_the_demo_recovery_time(demo_beamtime, tmp_path):
    result = run_notebook("dssc_pump_probe.ipynb", tmp_path)
    assert abs(result["tau_ps"] - dssc_demo.RECOVERY_PS) < 0.1 * dssc_demo.RECOVERY_PS
    assert abs(result["depth"] - dssc_demo.PUMP_DEPTH) < 0.05


def test_small_data_notebook_finds_the_ring_shift_and_its_build_up(demo_beamtime, tmp_path):
    result = run_notebook("small_data.ipynb", tmp_path)
    truth = events_demo.RING_SHIFT * (1 - np.exp(-result["delay_last_bin"] / events_demo.TAU_PS))
    assert abs(result["shift_last_bin"] - truth) < 0.1 * abs(events_demo.RING_SHIFT)
    assert abs(result["tau_ps"] - events_demo.TAU_PS) < 0.25 * events_demo.TAU_PS
    assert result["shots_used"] > 0.9 * 236  # the demo's shots, less the planted outliers


def test_insitu_notebook_finds_the_growth_and_a_continuous_series(demo_beamtime, tmp_path):
    result = run_notebook("insitu_series.ipynb", tmp_path)
    assert abs(result["efolding_s"] - insitu_demo.GROWTH_S) < 0.03 * insitu_demo.GROWTH_S
    assert result["changes"] == 4 and result["max_jump"] < 0.03
