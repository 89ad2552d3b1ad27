"""Versions of code, configuration, source data and results: what made each output, as short hashes.

Three kinds of version, all short sha256 hex strings, all derived from the workflow model:

- **code version** of an asset: a hash of the code its make function reaches (:mod:`.code`), so
  that editing a function changes the version of exactly the assets that use it;
- **source versions**: what comes from outside the pipeline, each source's ``version`` in the
  model (a raw run's files, a dark run's files and number, a gain map's values, ROIs);
- **lineage version** of an output: a hash of its asset's code version, the configuration keys it
  declares that it reads, and the lineage or source versions of its inputs. Each output records
  its own lineage version (attribute ``lineage_version``) and that is its Dagster data version.
  An output is stale when its recorded lineage version differs from the one its inputs have now
  (:mod:`.staleness`): this walks the whole lineage, however many partitions an edge joins.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path

from .. import CACHE_DIR, __version__
from ..config import BeamtimeConfig
from ..hashing import digest, files_fingerprint
from ..outputs import read_attrs
from . import code, model

#: The code versions found, one file each, named by what they depend on (see :func:`code_version`).
CODE_VERSIONS_DIR = CACHE_DIR / "code-versions"
NO_DARK = "no-dark"
NO_GAIN = "no-gain"

__all__ = ["digest", "files_fingerprint", "code_version", "config_version", "lineage_version", "recorded_lineage",
           "recorded_inputs", "output_versions", "made_from", "NO_DARK", "NO_GAIN"]


@cache
def code_version(asset: str) -> str:
    """A hash of the package version and the source of the code that computes ``asset`` (found from its make function)."""
    spec = model.asset(asset)
    # Finding the code takes parsing every module it reaches (1.2 s of CPU for all assets, in every process that
    # loads the definitions): the result is kept on disk under everything it depends on.
    key = digest(__version__, asset, code.sources_digest(), *(code.function_key(fn) for fn in (spec.make, *spec.code)))
    path = CODE_VERSIONS_DIR / key
    try:
        return path.read_text()
    except OSError:
        pass
    version = digest(__version__, *code.code_text(spec.make), *(t for fn in spec.code for t in code.code_text(fn)), n=12)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{key}.{os.getpid()}")
        tmp.write_text(version)
        tmp.replace(path)
    except OSError:  # a read-only cache: computed each time
        pass
    return version


def config_version(cfg: BeamtimeConfig, asset: str) -> str:
    """A hash of the config keys ``asset`` declares that it reads."""
    keys = model.asset(asset).config
    # Keys at their defaults are left out: a new optional key in a later release changes no version.
    data = cfg.model_dump(mode="json", include=keys if isinstance(keys, dict) else set(keys), exclude_defaults=True)
    return digest(json.dumps(data, sort_keys=True), n=12)


def config_keys(asset: str) -> list[str]:
    """The configuration keys ``asset`` reads, dotted (``events.anomalies``)."""
    keys = model.asset(asset).config
    if not isinstance(keys, dict):
        return list(keys)
    return [f"{s}.{k}" if k else s for s, ks in keys.items()
            for k in (sorted(ks) if isinstance(ks, (set, frozenset, list, tuple)) else [None])]


def config_versions(cfg: BeamtimeConfig, asset: str) -> dict[str, str]:
    """``{dotted key: hash of its value}`` of each configuration key ``asset`` reads (to say which one changed)."""
    out = {}
    for dotted in config_keys(asset):
        section, _, key = dotted.partition(".")
        data = cfg.model_dump(mode="json", include={section: {key}} if key else {section}, exclude_defaults=True)
        out[dotted] = digest(json.dumps(data, sort_keys=True), n=8)
    return out


def lineage_version(asset: str, cfg: BeamtimeConfig, inputs: dict[str, str]) -> str:
    """The lineage version of an output of ``asset`` made from inputs with these versions."""
    return digest(asset, code_version(asset), config_version(cfg, asset),
                 json.dumps(inputs, sort_keys=True))


def recorded_lineage(path: Path) -> str | None:
    """The lineage version an output file records; None if the file or the attribute is missing."""
    v = read_attrs(path).get("lineage_version")
    return None if v is None else str(v)


def input_versions(cfg: BeamtimeConfig, asset: str, key: str | None,
                   version_of: Callable[[model.AssetSpec | model.Source, str | None], str | None]) -> dict[str, str | None]:
    """``{recorded name: version}`` of an asset partition's inputs, each upstream's from ``version_of(node, key)``."""
    spec = model.asset(asset)
    out: dict[str, str | None] = {}
    for inp in spec.inputs:
        if inp.when is not None and not inp.when(cfg):
            if inp.otherwise is not None:
                out[inp.recorded_name] = inp.otherwise
            continue
        up = model.node(inp.name)
        for name, upkey in model.upstream_keys(cfg, spec, inp, key).items():
            out[name] = version_of(up, upkey)
    return out


def recorded_inputs(cfg: BeamtimeConfig, asset: str, key: str | None) -> dict[str, str | None]:
    """The versions of the inputs an output made now reads: its sources' now, its input assets' recorded in their files."""
    def version_of(up, upkey):
        if isinstance(up, model.Source):
            return up.version(cfg, upkey)
        return recorded_lineage(up.output(cfg, upkey))

    return input_versions(cfg, asset, key, version_of)


def output_versions(cfg: BeamtimeConfig, asset: str, inputs: dict[str, str | None]) -> dict:
    """The version attributes of an output of ``asset`` made from ``inputs`` (their lineage or source versions).

    An input whose file records no version (written by an older release) counts as "unknown",
    which no current version equals: its dependents show as stale.
    """
    inputs = {k: v or "unknown" for k, v in inputs.items()}
    return {"lineage_version": lineage_version(asset, cfg, inputs),
            "code_version": code_version(asset),
            "input_versions": json.dumps(inputs, sort_keys=True),
            "config_versions": json.dumps(config_versions(cfg, asset), sort_keys=True)}


def made_from(cfg: BeamtimeConfig, asset: str, key: str | None) -> dict:
    """The version attributes of the output of one partition of ``asset`` made now (:func:`output_versions`)."""
    return output_versions(cfg, asset, recorded_inputs(cfg, asset, key))
