"""Which outputs are stale: made with other code, configuration, raw files or calibration than now.

Every output records its lineage version (see :mod:`.versions`). Here the lineage version each
output would have if made now is computed from the current sources and code, input by input,
down the whole graph of the workflow model, and compared with the recorded one. Unlike Dagster's
own staleness (which is not transitive and skips edges from 100 or more partitions), this finds
every result made with old constants, including a cube whose modules have not been redone yet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..config import BeamtimeConfig
from ..outputs import read_attrs
from . import model, versions


@dataclass(frozen=True)
class StaleOutput:
    """One asset partition whose output is missing or out of date, and why."""

    asset: str
    key: str | None  # the partition key, as Dagster spells it; None: unpartitioned
    reason: str


def _json(a: dict, name: str) -> dict:
    try:
        return json.loads(a.get(name, "{}"))
    except ValueError:
        return {}


def _recorded(path: Path) -> tuple[str | None, str | None, dict, dict]:
    """(lineage, code, input and configuration versions) recorded in an output; Nones if absent."""
    a = read_attrs(path)
    lin, code = a.get("lineage_version"), a.get("code_version")
    return (None if lin is None else str(lin)), (None if code is None else str(code)), _json(a, "input_versions"), \
        _json(a, "config_versions")


class Expected:
    """The versions that outputs and sources would have now, computed once each and remembered."""

    def __init__(self, cfg: BeamtimeConfig):
        self.cfg = cfg
        self._memo: dict[tuple[str, str | None], str] = {}
        self._inputs: dict[tuple[str, str | None], dict[str, str]] = {}

    def version(self, node: model.AssetSpec | model.Source, key: str | None) -> str:
        """A source's version now, or the lineage version an asset's output made now would have."""
        k = (node.name, key)
        if k not in self._memo:
            if isinstance(node, model.Source):
                self._memo[k] = node.version(self.cfg, key)
            else:
                self._memo[k] = versions.lineage_version(node.name, self.cfg, self.inputs(node.name, key))
        return self._memo[k]

    def inputs(self, asset: str, key: str | None) -> dict[str, str]:
        """The input versions an output of one partition made now would record."""
        k = (asset, key)
        if k not in self._inputs:
            got = versions.input_versions(self.cfg, asset, key, self.version)
            self._inputs[k] = {n: v or "unknown" for n, v in got.items()}
        return self._inputs[k]


def why_stale(exp: Expected, spec: model.AssetSpec, key: str | None) -> str | None:
    """None if the output of this partition is current, else the reason in words."""
    path = spec.output(exp.cfg, key)
    lin, code, inputs, config = _recorded(path)
    if lin is None:
        return "no output" if not path.exists() else "output records no lineage version"
    if lin == exp.version(spec, key):
        return None
    if code != versions.code_version(spec.name):
        return "code changed"
    expected = exp.inputs(spec.name, key)
    changed = sorted(k for k in set(inputs) | set(expected) if inputs.get(k) != expected.get(k))
    if changed:
        return "input changed: " + ", ".join(changed)
    now = versions.config_versions(exp.cfg, spec.name)
    keys = [k for k in now if config.get(k) != now[k]] or list(now)
    return "configuration changed: " + ", ".join(keys)


#: The default scope: every partition found on disk.
EVERY_PARTITION = model.Scope()


def partitions(cfg: BeamtimeConfig, spec: model.AssetSpec, scope: model.Scope) -> list[str | None]:
    """The partition keys an asset has in this beamtime (within the scope); none if it is not configured."""
    return spec.partitioning.keys(cfg, scope) if spec.enabled(cfg) else []


def find_stale(cfg: BeamtimeConfig, scope: model.Scope = EVERY_PARTITION,
               workflow: str | None = None) -> list[StaleOutput]:
    """Every output of the beamtime (of one workflow) that is missing or out of date, in dependency order."""
    model.load_files(cfg)
    exp = Expected(cfg)
    out = []
    for spec in model.assets():
        if (workflow is not None and spec.workflow != workflow) or spec.overview:
            continue
        for key in partitions(cfg, spec, scope):
            why = why_stale(exp, spec, key)
            if why:
                out.append(StaleOutput(spec.name, key, why))
    return out


def every_partition(cfg: BeamtimeConfig, scope: model.Scope = EVERY_PARTITION,
                    workflow: str | None = None) -> dict[str, list[str | None]]:
    """The partition keys of every asset (of one workflow) in the scope, in dependency order."""
    model.load_files(cfg)
    out = {}
    for spec in model.assets():
        if (workflow is None or spec.workflow == workflow) and not spec.overview:
            keys = partitions(cfg, spec, scope)
            if keys:
                out[spec.name] = keys
    return out
