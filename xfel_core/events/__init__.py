"""Per-event (shot) files, PAL-XFEL's layout and a generic per-run HDF5 file: small data and the cube.

Modules: readers (runs, events, images), anomalies (shot rejection rules), smalldata (per-event ROI
sums and radial profiles with the shared azimuthal integrator), pipeline (one function per asset).
"""
