"""The beamtime resource: the validated beamtime.yaml, re-read when the file changes, and the one read at load time."""

from __future__ import annotations

import os
from functools import lru_cache

import dagster as dg

from xfel_core.config import BeamtimeConfig, beamtime_path_from_env, load_beamtime


@lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int) -> BeamtimeConfig:
    return load_beamtime(path)


class BeamtimeResource(dg.ConfigurableResource):
    """The beamtime configuration file; by default the one named by $XFEL_BEAMTIME."""

    config_path: str

    def load(self) -> BeamtimeConfig:
        """The validated configuration (re-read when the file changes)."""
        try:
            mtime = os.stat(self.config_path).st_mtime_ns
        except FileNotFoundError:
            mtime = 0
        return _load(self.config_path, mtime)


def config_at_load() -> BeamtimeConfig | None:
    """The config named by $XFEL_BEAMTIME when the definitions load (None if it does not exist yet):
    module partitions, executor and retry settings come from it, read once."""
    path = beamtime_path_from_env()
    return BeamtimeResource(config_path=str(path)).load() if path.exists() else None
