"""Read European XFEL raw run folders: run opening and train alignment through EXtra-data,
the detector pixels through h5py in large blocks.

Runs are opened with ``DataCollection.from_paths`` rather than ``RunDirectory`` because the
latter writes a ``karabo_data_map.json`` cache into a writable run folder, and raw folders are
read-only to us. Suspect trains (``INDEX/flag`` = 0 in format 1.x; out-of-order train ids in
format 0.5, which EXtra-data detects) are excluded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..exceptions import RunDataError

#: A run folder as the facility names it (raw/r0042, proc/r0042).
RUN_DIR_RE = re.compile(r"^r(?P<run>\d{4})$")
FILE_RE = re.compile(r"^(?P<kind>RAW|CORR)-R(?P<run>\d{4})-(?P<agg>[A-Za-z0-9]+)-S(?P<seq>\d{5})\.h5$")


def run_files(run_dir: Path, kind: str = "RAW") -> list[Path]:
    """The sequence files of a run folder, sorted by name: raw (``RAW-…``) or corrected (``CORR-…``, in proc)."""
    if not run_dir.is_dir():
        raise RunDataError(f"run folder {run_dir} does not exist")
    files = sorted(p for p in run_dir.iterdir() if (m := FILE_RE.match(p.name)) and m["kind"] == kind)
    folder = RUN_DIR_RE.match(run_dir.name)
    foreign = [p.name for p in files if folder and int(FILE_RE.match(p.name)["run"]) != int(folder["run"])]
    if foreign:
        raise RunDataError(f"{run_dir}: {', '.join(foreign[:4])}{' ...' if len(foreign) > 4 else ''} belong to another "
                           f"run (the run number in their names), not to {run_dir.name}: move them to their own run "
                           "folder")
    return files


def aggregator_of(path: Path) -> str:
    """The aggregator part of a sequence file's name (``DSSC07``, ``JNGFR01``, ``DA01``)."""
    return FILE_RE.match(path.name)["agg"]


def files_of_aggregator(files: list[Path], aggregator: str) -> list[Path]:
    return [p for p in files if aggregator_of(p) == aggregator]


def sequence_gaps(files: list[Path]) -> dict[str, list[int]]:
    """Missing sequence numbers of each aggregator: a gap below its highest sequence file (S00000 upward)."""
    seqs: dict[str, set[int]] = {}
    for p in files:
        m = FILE_RE.match(p.name)
        seqs.setdefault(m["agg"], set()).add(int(m["seq"]))
    return {agg: sorted(set(range(max(s) + 1)) - s) for agg, s in sorted(seqs.items()) if len(s) <= max(s)}


def files_train_ids(files: list[Path]) -> np.ndarray:
    """The valid trains (nonzero id, not flagged suspect) in the files' train indexes, ascending, unique."""
    ids = []
    for p in files:
        with h5py.File(p, "r") as f:
            tid = f["INDEX/trainId"][()].ravel()
            ok = tid > 0
            if "INDEX/flag" in f:
                ok &= f["INDEX/flag"][()].ravel() != 0
            ids.append(tid[ok])
    return np.unique(np.concatenate(ids)).astype(np.uint64) if ids else np.zeros(0, np.uint64)


def train_index_problem(path: Path) -> str | None:
    """Why a file's train index is not complete (None if it is): no valid train, or an index entry
    pointing past the data written (a file still being written, or cut short)."""
    try:
        with h5py.File(path, "r") as f:
            if "INDEX/trainId" not in f:
                return f"{path}: no INDEX/trainId dataset yet"
            if not (f["INDEX/trainId"][()] > 0).any():
                return f"{path}: its train index has no train yet"
            problems = []

            def visit(name, obj):
                if isinstance(obj, h5py.Group) and "first" in obj and "count" in obj:
                    first, count = obj["first"][()], obj["count"][()]
                    end = int((first + count).max()) if len(first) else 0
                    data = f.get(f"INSTRUMENT/{name}") or f.get(f"CONTROL/{name}")
                    lengths = [d.shape[0] for d in _datasets(data)] if isinstance(data, h5py.Group) else []
                    if lengths and end > min(lengths):
                        problems.append(f"{name} points to entry {end} of data with {min(lengths)}")

            f["INDEX"].visititems(visit)
            if problems:
                return f"{path}: train index points past the data written ({problems[0]})"
    except (OSError, KeyError, ValueError) as e:
        return f"{path}: cannot be read as HDF5 ({e}): still being written, or truncated"
    return None


def _datasets(group: h5py.Group) -> list[h5py.Dataset]:
    out = []
    group.visititems(lambda _n, o: out.append(o) if isinstance(o, h5py.Dataset) else None)
    return out


def check_openable(path: Path) -> None:
    """Open one file with h5py and read its train index, or fail naming the file."""
    try:
        with h5py.File(path, "r") as f:
            if "INDEX/trainId" not in f:
                raise RunDataError(f"{path}: no INDEX/trainId dataset; not a European XFEL raw file")
            f["INDEX/trainId"][:]
    except RunDataError:
        raise
    except (OSError, KeyError, ValueError) as e:
        raise RunDataError(
            f"{path}: cannot be read as HDF5 ({e}); the file is truncated, corrupt or still being written"
        ) from None


def open_run(run_dir: Path, files: list[Path] | None = None):
    """Open a run folder with EXtra-data (suspect trains excluded); errors name the bad file."""
    import extra_data

    files = run_files(run_dir) if files is None else files
    if not files:
        raise RunDataError(f"run folder {run_dir} holds no raw files (RAW-R####-<aggregator>-S#####.h5)")
    for p in files:
        check_openable(p)
    try:
        return extra_data.DataCollection.from_paths(
            [str(p) for p in files], inc_suspect_trains=False, parallelize=False
        )
    except Exception as e:  # EXtra-data's FileStructureError and h5py's errors name no file
        raise RunDataError(f"run folder {run_dir}: EXtra-data cannot open it: {e}") from e


def suspect_train_count(dc) -> int:
    """Trains that some file flags as suspect (excluded from processing)."""
    bad: set[int] = set()
    for fa in dc.files:
        bad.update(int(t) for t in fa.train_ids[~fa.validity_flag])
    return len(bad - set(int(t) for t in dc.train_ids))


@dataclass
class FrameSegment:
    """Entries of one source stored contiguously in one file: ``dataset[first:first+total]``.

    An entry holds ``frames_per_entry`` frames (JUNGFRAU: the memory cells of a train; else 1)."""

    path: str
    dataset: str
    first: int
    train_ids: np.ndarray  # (trains,)
    counts: np.ndarray  # (trains,) entries per train
    frames_per_entry: int = 1

    @property
    def total(self) -> int:
        """Entries in the segment."""
        return int(self.counts.sum())

    @property
    def frames(self) -> int:
        return self.total * self.frames_per_entry


@dataclass
class ModuleFrames:
    """Where every frame of one detector module is, and its train, position and memory cell.

    Per-frame arrays are in reading order (trains ascending): ``train_id``, ``position``
    (0 for the first frame of its train) and ``cell_id`` (the memory cell).
    A frame's ``npixels`` pixels lie contiguous in its entry (of ``entry_shape`` as stored: the signal
    plane first for AGIPD raw data, the memory cells along the first axis for JUNGFRAU).
    """

    module: int
    source: str
    segments: list[FrameSegment]
    train_id: np.ndarray
    position: np.ndarray
    cell_id: np.ndarray
    entry_shape: tuple[int, ...]  # one entry as stored, e.g. (1, 128, 512); (2, 512, 128) AGIPD raw
    dtype: np.dtype
    files: list[str] = field(default_factory=list)
    frames_per_entry: int = 1
    #: Dataset of the per-pixel mask (corrected data; 0: good pixel), or None.
    mask_dataset: str | None = None
    #: The mask bits that exclude a pixel (None: any nonzero value).
    mask_bits: int | None = None

    @property
    def nframes(self) -> int:
        return len(self.train_id)

    @property
    def npixels(self) -> int:
        return int(np.prod(self.entry_shape[-2:]))

    @property
    def entry_elements(self) -> int:
        return int(np.prod(self.entry_shape))

    def mask_bits_or_all(self) -> int:
        """The bits of the mask that exclude a pixel: ``mask_bits``, or all of them."""
        return 0xFFFFFFFF if self.mask_bits is None else int(self.mask_bits)

    def frames_per_train(self) -> tuple[np.ndarray, np.ndarray]:
        """(train ids, frame counts) of the trains this module has in the run."""
        tids = np.concatenate([s.train_ids for s in self.segments]) if self.segments else np.zeros(0, np.uint64)
        counts = np.concatenate([s.counts for s in self.segments]) if self.segments else np.zeros(0, np.uint64)
        return tids, counts * self.frames_per_entry


def find_module(dc, kind_, name: str, module: int, corrected: bool, source: str) -> None:
    """Check with EXtra-data's component of the detector type that the run has this module, raw or corrected,
    under ``source``; else a RunDataError naming the detector, the module and the sources there are."""
    from extra_data import SourceNameError

    from ..euxfel.detectors import component

    what = f"{kind_.name} {'corrected' if corrected else 'raw'} module {module:02d} ({source})"
    try:
        det = component(kind_)(dc, detector_name=name, modules=[module], raw=not corrected)
    except (SourceNameError, ValueError) as e:
        raise RunDataError(f"no {what} in {[fa.filename for fa in dc.files][:4]}: {e}; sources there: "
                           f"{sorted(dc.instrument_sources)[:8]} (check detector.type, name and data)") from None
    found = set(det.source_to_modno)
    if source not in found:
        raise RunDataError(f"no {what}: EXtra-data finds {sorted(found)} for detector {name!r} "
                           "(check detector.source)")


def module_frames(dc, source: str, module: int, frame_shape: tuple[int, int], kind_=None,
                  corrected: bool = False, mask_bits: int | None = None) -> ModuleFrames:
    """Locate the frames of one module source in an opened run, checking the files agree.

    ``kind_``: the detector's entry of :mod:`xfel_core.euxfel.detectors` (default DSSC1M); ``corrected``:
    CORR files (float32 with a per-pixel mask, which must be there)."""
    from ..euxfel.detectors import KINDS

    kind_ = kind_ or KINDS["DSSC1M"]
    group = kind_.group
    if source not in dc.instrument_sources:
        raise RunDataError(f"run has no detector source {source!r}; sources: {sorted(dc.instrument_sources)}")
    kd = dc[source, f"{group}.{kind_.data_key}"]
    entry = tuple(kd.entry_shape)
    fpe = entry[0] if kind_.cells_in_entry and len(entry) == 3 else 1
    planes = 1 if corrected else kind_.raw_planes
    expected = (fpe,) + tuple(frame_shape) if kind_.cells_in_entry else \
        (tuple(frame_shape) if corrected else (planes,) + tuple(frame_shape))
    if entry != expected and not (planes == 1 and not kind_.cells_in_entry and entry == tuple(frame_shape)):
        raise RunDataError(
            f"{source}: frames are {entry} in {kd.files[0].filename}, but the config's detector.module_shape is "
            f"{tuple(frame_shape)}: a {kind_.name} {'corrected' if corrected else 'raw'} module's entries would be "
            f"{expected} (check detector.type, data and module_shape)"
        )
    mask_ds = f"INSTRUMENT/{source}/{group}/{kind_.mask_key}" if corrected else None
    wanted = np.asarray(dc.train_ids, dtype=np.uint64)
    segments: list[FrameSegment] = []
    for fa in kd.files:
        if len(fa.train_ids) == 0:
            continue
        firsts, counts = fa.get_index(source, group)
        include = np.isin(fa.train_ids, wanted) & fa.validity_flag
        # Contiguous runs of included trains become one segment each.
        edges = np.flatnonzero(np.diff(np.concatenate([[0], include.astype(np.int8), [0]])))
        for a, b in zip(edges[::2], edges[1::2]):
            seg = FrameSegment(fa.filename, kd.hdf5_data_path, int(firsts[a]),
                               fa.train_ids[a:b].astype(np.uint64), counts[a:b].astype(np.int64), fpe)
            _check_segment(seg, fa.filename, source, kind_)
            segments.append(seg)
    segments.sort(key=lambda s: int(s.train_ids[0]))

    tids, positions, cells = [], [], []
    for seg in segments:
        counts = seg.counts * fpe
        tids.append(np.repeat(seg.train_ids, counts))
        starts = np.repeat(np.cumsum(counts) - counts, counts)
        positions.append((np.arange(seg.frames) - starts).astype(np.int32))
        with h5py.File(seg.path, "r") as f:
            if mask_ds is not None and mask_ds not in f:  # every sequence file: the first may have it, a later not
                raise RunDataError(f"{seg.path}: corrected data of {source} without a mask ({group}.{kind_.mask_key}): "
                                   "masked pixels would be summed as data; use the correction's output with its mask")
            cell_ds = f[seg.dataset.rsplit("/", 1)[0] + "/" + kind_.cell_key]
            cell = np.asarray(cell_ds[seg.first: seg.first + seg.total])
            cells.append(cell.reshape(seg.frames) if fpe > 1 else cell.reshape(seg.total, -1)[:, 0])
    cat = lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt)  # noqa: E731
    return ModuleFrames(
        module=module, source=source, segments=segments,
        train_id=cat(tids, np.uint64), position=cat(positions, np.int32), cell_id=cat(cells, np.int64),
        entry_shape=entry, dtype=np.dtype(kd.dtype),
        files=sorted({fa.filename for fa in kd.files}), frames_per_entry=fpe, mask_dataset=mask_ds,
        mask_bits=mask_bits,
    )


def _check_segment(seg: FrameSegment, filename: str, source: str, kind_) -> None:
    cell_path = seg.dataset.rsplit("/", 1)[0] + "/" + kind_.cell_key
    with h5py.File(filename, "r") as f:
        n = f[seg.dataset].shape[0]
        ncell = f[cell_path].shape[0]
    end = seg.first + seg.total
    if end > n or end > ncell:
        raise RunDataError(
            f"{filename}: INDEX of {source} points to entries up to {end}, but {seg.dataset} holds {n} "
            f"and {cell_path} {ncell}; the file is truncated or inconsistent"
        )


def iter_frame_blocks(
    frames: ModuleFrames, block_frames: int, wanted: np.ndarray
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, stop, block)``: frames ``start:stop`` (reading order) as (n, pixels).

    Only blocks holding a wanted frame are read, and each is trimmed to its first and last
    wanted frame. ``block`` is a view of one buffer reused for every block (a copy where the
    frames are not contiguous, AGIPD raw): use it before asking for the next.
    """
    fpe, npix = frames.frames_per_entry, frames.npixels
    per = max(1, block_frames // fpe)
    buf = np.empty((per,) + frames.entry_shape, dtype=frames.dtype)
    offset = 0
    for seg in frames.segments:
        ranges = frame_ranges(wanted[offset: offset + seg.frames], per * fpe)
        for (a, b), (data, elements) in zip(ranges, read_entry_blocks(seg, seg.dataset, ranges, fpe, buf)):
            if frames.entry_elements == npix * fpe:  # frames contiguous: a view
                block = data[elements[0]: elements[0] + (b - a) * npix].reshape(b - a, npix)
            else:
                block = data[elements[:, None] + np.arange(npix)]
            yield offset + a, offset + b, block
        offset += seg.frames


def frame_ranges(wanted: np.ndarray, per: int) -> list[tuple[int, int]]:
    """The reads of a segment's wanted frames: [lo, hi) within each ``per`` frames (a whole number of entries),
    trimmed to its first and last wanted frame; none where no frame is wanted."""
    return [(a + int(h[0]), a + int(h[-1]) + 1) for a in range(0, len(wanted), per)
            if (h := np.flatnonzero(wanted[a:a + per])).size]


def _offsets(rel: np.ndarray, fpe: int, entry_elements: int, npix: int) -> np.ndarray:
    """Element offset of frames (numbered from the first entry read) in the entries read."""
    return (rel // fpe) * entry_elements + (rel % fpe) * npix


def read_mask_blocks(seg: FrameSegment, dataset: str, ranges: list[tuple[int, int]], fpe: int, entries: int,
                     entry_shape: tuple, threads: int = 1):
    """:func:`read_entry_blocks` of a mask dataset, with blocks of at most ``entries`` entries: where it is
    stored deflated one entry per chunk (the correction's output), read by ``pread`` and inflated by zlib in
    ``threads`` threads, the next block while the caller works on this one; else through h5py."""
    from .frame_map import Inflater, deflated_chunks

    chunks = deflated_chunks(seg.path, dataset)
    if isinstance(chunks, str):
        with h5py.File(seg.path, "r") as f:
            dtype = f[dataset].dtype
        yield from read_entry_blocks(seg, dataset, ranges, fpe, np.empty((entries,) + tuple(entry_shape), dtype))
        return
    npix = int(np.prod(entry_shape[-2:]))
    entry_elements = int(np.prod(entry_shape))
    bufs = [np.empty((entries,) + tuple(entry_shape), chunks[3]) for _ in range(2)]  # one read, one in use
    spans = [(lo // fpe, (hi - 1) // fpe + 1) for lo, hi in ranges]
    with Inflater(seg.path, chunks, threads) as inflater:
        pending = inflater.submit(seg.first + spans[0][0], seg.first + spans[0][1], bufs[0]) if spans else []
        for k, ((lo, hi), (elo, _)) in enumerate(zip(ranges, spans)):
            for fut in pending:
                fut.result()
            if k + 1 < len(spans):
                a, b = spans[k + 1]
                pending = inflater.submit(seg.first + a, seg.first + b, bufs[(k + 1) % 2])
            yield bufs[k % 2].reshape(-1), _offsets(np.arange(lo, hi) - elo * fpe, fpe, entry_elements, npix)


def read_entry_blocks(seg: FrameSegment, dataset: str, ranges: list[tuple[int, int]], fpe: int, buf: np.ndarray):
    """For each frame range [lo, hi) of a segment (frames numbered within it): (flat data, element offset of
    each frame lo..hi-1 in it) of the entries holding them, read by h5py into ``buf`` (entries, *entry);
    ``dataset``: the frames' or another of the same entries (the mask)."""
    npix = int(np.prod(buf.shape[-2:]))
    entry_elements = int(np.prod(buf.shape[1:]))
    with h5py.File(seg.path, "r") as f:
        ds = f[dataset]
        for lo, hi in ranges:
            elo, ehi = lo // fpe, (hi - 1) // fpe + 1
            try:
                ds.read_direct(buf, np.s_[seg.first + elo: seg.first + ehi], np.s_[0: ehi - elo])
            except (OSError, ValueError) as e:
                raise RunDataError(f"{seg.path}: reading entries {seg.first + elo}-{seg.first + ehi} "
                                   f"of {dataset} failed ({e}); the file is corrupt") from None
            yield buf.reshape(-1), _offsets(np.arange(lo, hi) - elo * fpe, fpe, entry_elements, npix)


def train_values(dc, source: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(train ids, values) of one key, one entry per train (trains without data left out)."""
    try:
        kd = dc[source, key]
    except (KeyError, ValueError) as e:
        raise RunDataError(f"run has no {source!r} / {key!r} ({e}); check the config's source and key") from None
    tids = np.asarray(kd.train_id_coordinates(), dtype=np.uint64)
    values = kd.ndarray()
    if len(np.unique(tids)) != len(tids):
        raise RunDataError(f"{source} / {key}: more than one entry per train; expected one value per train")
    return tids, values
