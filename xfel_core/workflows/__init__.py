"""The workflows, one module each, declaring their sources and assets in the workflow model.

- ``euxfel``: European XFEL detector runs (DSSC): a run's inputs, the dark, modules, the cube.
- ``insitu``: in-situ TIFF series: corrected frames and ROI series per measurement, a sample's
  attenuation-corrected series.
- ``events``: per-event files (PAL-XFEL, generic HDF5): small data and the cube per run.
"""
