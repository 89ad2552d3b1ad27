"""Per-event (shot) files, PAL-XFEL's layout and a generic per-run HDF5 file: small data and the cube.

Modules: readers (runs, events, images), anomalies (shot rejection rules), azimuthal (pyFAI
geometry as one sparse matrix for a whole stack of images), smalldata (per-event ROI sums and
radial profiles), pipeline (one function per asset).
"""
