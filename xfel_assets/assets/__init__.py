"""The assets of the DSSC pump-probe pipeline, one module per asset; observed sources in sources.py."""

from .binned_cube import binned_cube
from .dark import dark
from .framemask import framemask
from .preprocessed_module import preprocessed_module
from .raw_run import raw_run
from .scan_variable import scan_variable
from .sources import dark_run_files, gain_map, raw_run_files

SOURCES = [raw_run_files, dark_run_files, gain_map]
ALL_ASSETS = [*SOURCES, raw_run, scan_variable, framemask, dark, preprocessed_module, binned_cube]
