"""Write HDF5 files in the European XFEL raw layout (format versions 0.5 and 1.x).

The layout, as EXtra-data reads it:

- ``INDEX/trainId`` (trains,) uint64; from format 1.0 also ``INDEX/flag`` (1: good train,
  0: suspect), ``INDEX/timestamp`` and ``INDEX/origin``.
- ``INDEX/<source>/<group>/first`` and ``count`` (trains,) uint64: where each train's entries
  start in the source's datasets and how many there are (0 for a train without data).
- ``CONTROL/<source>/<key>/value`` and ``timestamp``: one entry per train (slow data).
- ``INSTRUMENT/<source>/<group>/<key>``: any number of entries per train (fast data).
- ``METADATA``: in 1.x ``dataFormatVersion`` and ``dataSources/{dataSourceId,deviceId,root}``;
  in 0.5 (unversioned) only ``METADATA/dataSourceId``.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

FORMAT_VERSIONS = ("0.5", "1.0", "1.2")


@dataclass
class InstrumentSource:
    """Fast data of one source in one file: entries per train and the datasets (entries, ...)."""

    name: str
    group: str
    counts: np.ndarray  # (trains of the file,) entries per train
    data: dict[str, np.ndarray]
    #: HDF5 chunk shape per key (default: h5py's choice, contiguous for small data).
    chunks: dict[str, tuple[int, ...]] = field(default_factory=dict)
    #: Datasets too large for memory: key -> (shape, dtype, fill(dataset)) writing them block by block.
    lazy: dict[str, tuple[tuple[int, ...], str, object]] = field(default_factory=dict)


@dataclass
class ControlSource:
    """Slow data of one source: one value per train of the file for every key."""

    name: str
    values: dict[str, np.ndarray]  # key -> (trains of the file, ...)


def _bytes_array(strings: list[str]) -> np.ndarray:
    width = max([len(s) for s in strings] + [1])
    return np.array([s.encode("ascii") for s in strings], dtype=f"S{width}")


def write_raw_file(
    path: Path,
    *,
    train_ids: np.ndarray,
    control: list[ControlSource] = (),
    instrument: list[InstrumentSource] = (),
    format_version: str = "1.2",
    flags: np.ndarray | None = None,
    run_number: int = 0,
    sequence: int = 0,
    proposal: int = 900000,
) -> None:
    """Write one raw sequence file with the given trains and sources."""
    if format_version not in FORMAT_VERSIONS:
        raise ValueError(f"format_version must be one of {FORMAT_VERSIONS}, got {format_version!r}")
    train_ids = np.asarray(train_ids, dtype=np.uint64)
    ntrains = len(train_ids)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["INDEX/trainId"] = train_ids
        timestamps = (train_ids.astype(np.float64) * 1e8).astype(np.uint64)  # 10 Hz, in ns
        if format_version != "0.5":
            f["INDEX/timestamp"] = timestamps
            f["INDEX/flag"] = (np.ones(ntrains, np.int32) if flags is None
                               else np.asarray(flags, dtype=np.int32))
            f["INDEX/origin"] = np.full(ntrains, -1, np.int32)

        source_ids, device_ids, roots = [], [], []
        for src in control:
            source_ids.append(f"CONTROL/{src.name}")
            device_ids.append(src.name)
            roots.append("CONTROL")
            f[f"INDEX/{src.name}/first"] = np.arange(ntrains, dtype=np.uint64)
            f[f"INDEX/{src.name}/count"] = np.ones(ntrains, dtype=np.uint64)
            for key, values in src.values.items():
                values = np.asarray(values)
                if len(values) != ntrains:
                    raise ValueError(f"{src.name}.{key}: {len(values)} values for {ntrains} trains")
                grp = f.create_group(f"CONTROL/{src.name}/{key.replace('.', '/')}")
                grp["value"] = values
                grp["timestamp"] = timestamps
                run_grp = f.create_group(f"RUN/{src.name}/{key.replace('.', '/')}")
                run_grp["value"] = values[:1] if ntrains else values
                run_grp["timestamp"] = timestamps[:1]

        for src in instrument:
            counts = np.asarray(src.counts, dtype=np.uint64)
            if len(counts) != ntrains:
                raise ValueError(f"{src.name}: {len(counts)} counts for {ntrains} trains")
            source_ids.append(f"INSTRUMENT/{src.name}/{src.group}")
            device_ids.append(src.name)
            roots.append("INSTRUMENT")
            first = np.zeros(ntrains, dtype=np.uint64)
            first[1:] = np.cumsum(counts)[:-1]
            f[f"INDEX/{src.name}/{src.group}/first"] = first
            f[f"INDEX/{src.name}/{src.group}/count"] = counts
            for key, values in src.data.items():
                if len(values) != int(counts.sum()):
                    raise ValueError(f"{src.name}.{key}: {len(values)} entries, INDEX counts {int(counts.sum())}")
                chunks = src.chunks.get(key)
                if chunks is not None and len(values) == 0:
                    chunks = None
                if chunks is not None:
                    chunks = (min(chunks[0], len(values)),) + tuple(chunks[1:])
                f.create_dataset(f"INSTRUMENT/{src.name}/{src.group}/{key.replace('.', '/')}",
                                 data=values, chunks=chunks,
                                 maxshape=(None,) + values.shape[1:] if chunks else None)
            for key, (shape, dtype, fill) in src.lazy.items():
                if shape[0] != int(counts.sum()):
                    raise ValueError(f"{src.name}.{key}: {shape[0]} entries, INDEX counts {int(counts.sum())}")
                ds = f.create_dataset(f"INSTRUMENT/{src.name}/{src.group}/{key.replace('.', '/')}",
                                      shape=shape, dtype=dtype, chunks=src.chunks.get(key))
                fill(ds)

        if format_version == "0.5":
            f["METADATA/dataSourceId"] = _bytes_array(source_ids)
        else:
            now = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
            meta = {
                "dataFormatVersion": format_version,
                "creationDate": now,
                "updateDate": now,
                "daqLibrary": "1.x",
                "karaboFramework": "2.x",
            }
            for key, value in meta.items():
                f[f"METADATA/{key}"] = _bytes_array([value])
            f["METADATA/proposalNumber"] = np.array([proposal], np.uint32)
            f["METADATA/runNumber"] = np.array([run_number], np.uint32)
            f["METADATA/sequenceNumber"] = np.array([sequence], np.uint32)
            f["METADATA/dataSources/dataSourceId"] = _bytes_array(source_ids)
            f["METADATA/dataSources/deviceId"] = _bytes_array(device_ids)
            f["METADATA/dataSources/root"] = _bytes_array(roots)


def raw_file_name(run_number: int, aggregator: str, sequence: int) -> str:
    """The facility's file name, for example ``RAW-R0042-DSSC07-S00001.h5``."""
    return f"RAW-R{run_number:04d}-{aggregator}-S{sequence:05d}.h5"
