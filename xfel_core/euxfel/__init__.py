"""European XFEL detector runs (DSSC): the run summary, framemask, dark, per-module reduction, gain map, small data.

Modules: run_summary (a run's trains and frames), framemask (which frames are used), preprocess
(the dark, the per-module reduction and their files), gain (gain / flat-field maps),
dssc_smalldata (per-frame small data), pipeline (one function per asset). The raw files are read
by ``xfel_core.readers.euxfel``; the cube and the binning kernel are shared with the event files.
"""
