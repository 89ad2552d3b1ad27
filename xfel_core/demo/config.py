"""Writing a beamtime.yaml for demo and test data (used by the demo beamtime, in-situ and event-file writers)."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_config(root: Path, config: dict) -> Path:
    """Write ``config`` as ``root/beamtime.yaml`` (root is created); returns its path."""
    path = root / "beamtime.yaml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text("# Beamtime configuration (see README, 'Configuration')\n"
                    + yaml.safe_dump(config, sort_keys=False))
    return path
