"""In-situ TIFF series (the SPring-8 BL11XU workflow): read, correct, ROI series, attenuation correction.

Modules: layout (samples, measurements, where outputs go), correct (bad pixels, flat-field, background), rois (ROI files and per-frame ROI
quantities), attenuation (stitching and attenuator changes), plots (PNG previews), pipeline
(one function per asset). The TIFFs and their Pilatus headers are read by xfel_core.readers.tiff.
"""
