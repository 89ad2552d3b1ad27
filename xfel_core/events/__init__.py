"""Per-event (shot) files, PAL-XFEL's layout and a generic per-run HDF5 file: small data and the cube.

The files are read by xfel_core.readers.events (pal, event_h5). Modules: anomalies (shot rejection rules), smalldata (per-event ROI
sums and radial profiles with the shared azimuthal integrator), pipeline (one function per asset).
"""
