"""The `xfel-assets` command (:mod:`~xfel_assets.cli.main`; the entry point names ``xfel_assets.cli:main``), its Dagster home, materialize and backfill."""

from xfel_assets.cli.main import main

__all__ = ["main"]
