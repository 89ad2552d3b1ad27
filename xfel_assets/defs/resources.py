"""The resources every asset may ask for: which beamtime.yaml the assets work on, and where heavy steps run."""

from __future__ import annotations

import os

import dagster as dg

from xfel_core.config import beamtime_path_from_env

from xfel_assets.defs.beamtime import BeamtimeResource, config_at_load  # noqa: F401  (imported from here by the definitions)
from xfel_assets.defs.compute import ComputeResource


def resources_for(config_path: str | os.PathLike) -> dict[str, dg.ConfigurableResource]:
    """The resources every asset may ask for: the beamtime (``config_path``) and where heavy steps compute."""
    return {"beamtime": BeamtimeResource(config_path=str(config_path)), "compute": ComputeResource()}


def default_resources() -> dict[str, dg.ConfigurableResource]:
    return resources_for(beamtime_path_from_env())

