"""Observed source data (raw run files, dark runs, gain maps, in-situ TIFFs, event files, ROI files), from the workflow model.

Dagster does not make these; it observes them. Their data versions come from the model's sources
(file names, sizes and modification times; the gain map's values; a hash of the ROIs), so a
rewritten raw run, a new dark run or a new ROI file shows every dependent partition as stale in
the web UI.
"""

from xfel_assets.defs.model_defs import observed_sources

SOURCES = observed_sources()
