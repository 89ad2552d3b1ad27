"""xfel_core: the science and the I/O of xfel-assets (plain Python, never imports Dagster)."""

__version__ = "0.1.0"
