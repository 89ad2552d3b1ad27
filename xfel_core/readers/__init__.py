"""The readers: one module per file format, each raising RunDataError that names the file and the problem.

- :mod:`.euxfel` (European XFEL raw run folders, through EXtra-data and h5py) with :mod:`.frame_map`
  (a module's frames as byte ranges of its files, read in large blocks);
- :mod:`.events`: event files in the configured layout, :mod:`.pal` (PAL-XFEL) or :mod:`.event_h5`
  (one generic HDF5 file per run), into an :class:`~.event_run.EventRun`;
- :mod:`.tiff`: in-situ TIFF frames and their Pilatus headers.

What every reader offers, in the names of its format: the files behind a run (``run_files``: what
the completeness rule, the raw versions and the provenance are made from) and its frames read in
blocks into a preallocated buffer (``iter_frame_blocks``, ``EventRun.for_each_block``,
``read_frames_into``). A new format is a new module here and, for a new layout of a workflow, a
line in that workflow's dispatcher (``events.LAYOUTS``).
"""
