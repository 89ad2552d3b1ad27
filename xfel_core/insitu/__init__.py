"""In-situ TIFF series (the SPring-8 BL11XU workflow): read, correct, ROI series, attenuation correction.

Modules: layout (samples, measurements, where outputs go), tiff_reader (frames and Pilatus
headers), correct (bad pixels, flat-field, background), rois (ROI files and per-frame ROI
quantities), attenuation (stitching and attenuator changes), plots (PNG previews), pipeline
(one function per asset).
"""
