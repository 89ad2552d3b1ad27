"""The demo beamtime's own variables: per-run quantities written as a scientist writes them.

Copied beside the demo's beamtime.yaml (``variables: variables.py``); edit it there. Each function
asks for its inputs by parameter name: ``run`` (the raw data), an asset's name (its output), or
another variable's name. See the README, "Your own per-run variables".
"""

import numpy as np

from xfel_core.variables import Skip, variable

XGM = ("SCS_BLU_XGM/XGM/DOOCS:output", "data.intensitySa3TD")


@variable(title="XGM pulse energy", units="uJ", description="Mean gas-monitor pulse energy over the run's X-ray pulses")
def xgm_mean(run):
    energy = run[XGM].ndarray()  # (trains, 1000 pulse slots); the slots after the train's pulses are 0
    return float(np.nanmean(energy[:, (energy > 0).any(axis=0)]))


@variable(title="Delay range", units="ps")
def delay_span(binned_cube):
    delays = binned_cube["scan_variable"].values
    return float(delays.max() - delays.min())


def _roi_difference(cube):
    """Pumped minus unpumped mean over the module images, per scan point (ADU)."""
    return cube["difference"].mean(("module", "y", "x"))


@variable(title="Pump-probe at the largest delay", units="ADU")
def pp_last_delay(binned_cube):
    if "difference" not in binned_cube:
        raise Skip("no pumped and unpumped frames")
    return float(_roi_difference(binned_cube).isel(scan_variable=-1))


@variable(title="Pump-probe per pulse energy", units="ADU/uJ")
def pp_per_uj(pp_last_delay, xgm_mean):
    return pp_last_delay / xgm_mean


@variable(title="Pump-probe curve", units="ADU")
def pp_curve(binned_cube):
    return _roi_difference(binned_cube)


@variable(title="Signal recovered", description="True if the pump-probe signal at the largest delay is within 1/e of "
          "its extremum")
def recovered(pp_curve):
    values = np.asarray(pp_curve)
    peak = values[np.argmax(np.abs(values))]
    return bool(abs(values[-1]) < abs(peak) / np.e)


@variable(title="Pump-probe figure")
def pp_figure(binned_cube, run_key):
    from matplotlib.figure import Figure

    curve = _roi_difference(binned_cube)
    fig = Figure(figsize=(4, 3))
    ax = fig.subplots()
    ax.plot(curve["scan_variable"], curve, "o-")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(xlabel=f"delay ({binned_cube['scan_variable'].attrs.get('units', '')})", ylabel="pumped - unpumped (ADU)",
           title=f"{run_key}: mean over the modules")
    fig.tight_layout()
    return fig


@variable(title="I0 spread", units="%", workflow="events", description="Shot-to-shot spread of the incoming "
          "intensity: standard deviation over mean")
def i0_spread(run):
    return float(100 * np.std(run.i0) / np.mean(run.i0))


@variable(title="Transmitted exposure", units="s", workflow="insitu",
          description="Exposure times the filter transmission, summed over the frames (from their headers)")
def transmitted_exposure(run):
    return float(sum(h.exposure_s * h.transmission for h in run.headers))


@variable(title="Bragg peak shift", units="px", workflow="insitu",
          description="Horizontal centre of mass of the peak ROI, last frame minus first")
def peak_shift(roi_series):
    return float(roi_series["peak_com_x"].iloc[-1] - roi_series["peak_com_x"].iloc[0])
