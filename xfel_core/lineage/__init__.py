"""Lineage: the workflow model (model), code versions from imports (code), versions (versions) and staleness (staleness)."""
