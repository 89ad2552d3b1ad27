"""European XFEL detector runs (DSSC, AGIPD, LPD, JUNGFRAU; raw or corrected): the run summary, framemask, dark,
per-module reduction, gain map, small data.

Modules: detectors (the table of detector types: where each keeps its frames), run_summary (a run's
trains and frames), framemask (which frames are used), bunch_pattern (frame types from the machine's
bunch pattern), laser_delay (the pump-probe delay from the stage, trigger and BAM), preprocess (the
dark, the per-module reduction and their files), gain (gain / flat-field maps), dssc_smalldata
(per-frame small data), pipeline (one function per asset). The raw and corrected files are read by
``xfel_core.readers.euxfel``; the cube and the binning kernel are shared with the event files.
"""
