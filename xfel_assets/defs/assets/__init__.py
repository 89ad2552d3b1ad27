"""The assets: one module each for what the web UI shows of it (description, metadata), and the observed sources.

Everything else about an asset (partitions, inputs, code version, checks, pool) comes from its
declaration in the workflow model (``xfel_core/workflows/``). An asset declared in the model
without a module here (a beamtime's own workflow file) gets a generic one: its make function's
numbers and strings as metadata.
"""

from xfel_core.lineage import model

from xfel_assets.defs.assets.attenuation_corrected_series import attenuation_corrected_series
from xfel_assets.defs.assets.binned_cube import binned_cube
from xfel_assets.defs.assets.dark import dark
from xfel_assets.defs.assets.dssc_smalldata import dssc_smalldata
from xfel_assets.defs.assets.event_cube import event_cube
from xfel_assets.defs.assets.event_smalldata import event_smalldata
from xfel_assets.defs.assets.framemask import framemask
from xfel_assets.defs.assets.insitu_frames import insitu_frames
from xfel_assets.defs.assets.preprocessed_module import preprocessed_module
from xfel_assets.defs.assets.raw_run import raw_run
from xfel_assets.defs.assets.roi_series import roi_series
from xfel_assets.defs.assets.scan_variable import scan_variable
from xfel_assets.defs.beamtime import config_at_load
from xfel_assets.defs.model_defs import generic_asset, observed_sources

DESCRIBED = {a.key.to_user_string(): a for a in (
    raw_run, scan_variable, framemask, dark, preprocessed_module, binned_cube, dssc_smalldata,
    insitu_frames, roi_series, attenuation_corrected_series, event_smalldata, event_cube)}

#: The beamtime the definitions are made for (None before it exists).
CONFIG = config_at_load()
if CONFIG is not None:
    model.load_files(CONFIG)  # the beamtime's own workflows, before the assets are listed
#: The model's assets, and below its jobs, as the definitions take them: the jobs and sensors select from these
#: even if the model is loaded with another beamtime's files later in this process.
SPECS = model.assets()
SPECS_BY_NAME = {spec.name: spec for spec in SPECS}
ASSETS = [DESCRIBED.get(spec.name) or generic_asset(spec.name) for spec in SPECS]
# The observed sources after the beamtime's files too: a source they declare (the notes) is observable.
SOURCES = observed_sources()
ALL_ASSETS = [*SOURCES, *ASSETS]
JOBS = model.jobs()
