"""The assets, one module per asset: the DSSC pump-probe pipeline, the in-situ TIFF series, event files; observed sources in sources.py."""

from .attenuation_corrected_series import attenuation_corrected_series
from .binned_cube import binned_cube
from .event_cube import event_cube
from .event_smalldata import event_smalldata
from .dark import dark
from .dssc_smalldata import dssc_smalldata
from .framemask import framemask
from .insitu_frames import insitu_frames
from .preprocessed_module import preprocessed_module
from .raw_run import raw_run
from .roi_series import roi_series
from .scan_variable import scan_variable
from .sources import SOURCES

DSSC_ASSETS = [raw_run, scan_variable, framemask, dark, preprocessed_module, binned_cube, dssc_smalldata]
INSITU_ASSETS = [insitu_frames, roi_series, attenuation_corrected_series]
EVENT_ASSETS = [event_smalldata, event_cube]
ALL_ASSETS = [*SOURCES, *DSSC_ASSETS, *INSITU_ASSETS, *EVENT_ASSETS]
