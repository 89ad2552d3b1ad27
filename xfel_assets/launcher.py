"""The run launcher as Dagster homes name it in dagster.yaml (``module: xfel_assets.launcher``); it lives in :mod:`xfel_assets.runtime.launcher`."""

from xfel_assets.runtime.launcher import ForkserverRunLauncher

__all__ = ["ForkserverRunLauncher"]
