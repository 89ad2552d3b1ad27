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

FILE_RE = re.compile(r"^RAW-R(\d{4})-([A-Za-z0-9]+)-S(\d{5})\.h5$")


def run_files(run_dir: Path) -> list[Path]:
    """The raw sequence files of a run folder, sorted by name."""
    if not run_dir.is_dir():
        raise RunDataError(f"run folder {run_dir} does not exist")
    return sorted(p for p in run_dir.iterdir() if FILE_RE.match(p.name))


def files_of_aggregator(files: list[Path], aggregator: str) -> list[Path]:
    return [p for p in files if FILE_RE.match(p.name).group(2) == aggregator]


def sequence_gaps(files: list[Path]) -> dict[str, list[int]]:
    """Missing sequence numbers of each aggregator: a gap below its highest sequence file (S00000 upward)."""
    seqs: dict[str, set[int]] = {}
    for p in files:
        m = FILE_RE.match(p.name)
        seqs.setdefault(m.group(2), set()).add(int(m.group(3)))
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
    """Frames of one source stored contiguously in one file: ``dataset[first:first+total]``."""

    path: str
    dataset: str
    first: int
    train_ids: np.ndarray  # (trains,)
    counts: np.ndarray  # (trains,) frames per train

    @property
    def total(self) -> int:
        return int(self.counts.sum())


@dataclass
class ModuleFrames:
    """Where every frame of one detector module is, and its train, position and memory cell.

    Per-frame arrays are in reading order (trains ascending): ``train_id``, ``position``
    (0 for the first frame of its train) and ``cell_id`` (the DSSC memory cell).
    """

    module: int
    source: str
    segments: list[FrameSegment]
    train_id: np.ndarray
    position: np.ndarray
    cell_id: np.ndarray
    entry_shape: tuple[int, ...]  # one frame as stored, e.g. (1, 128, 512)
    dtype: np.dtype
    files: list[str] = field(default_factory=list)

    @property
    def nframes(self) -> int:
        return len(self.train_id)

    @property
    def npixels(self) -> int:
        return int(np.prod(self.entry_shape))

    def frames_per_train(self) -> tuple[np.ndarray, np.ndarray]:
        """(train ids, frame counts) of the trains this module has in the run."""
        tids = np.concatenate([s.train_ids for s in self.segments]) if self.segments else np.zeros(0, np.uint64)
        counts = np.concatenate([s.counts for s in self.segments]) if self.segments else np.zeros(0, np.uint64)
        return tids, counts


def module_frames(dc, source: str, module: int, frame_shape: tuple[int, int]) -> ModuleFrames:
    """Locate the frames of one module source in an opened run, checking the files agree."""
    if source not in dc.instrument_sources:
        raise RunDataError(f"run has no detector source {source!r}; sources: {sorted(dc.instrument_sources)}")
    kd = dc[source, "image.data"]
    if tuple(kd.entry_shape[-2:]) != tuple(frame_shape) or int(np.prod(kd.entry_shape)) != int(np.prod(frame_shape)):
        raise RunDataError(
            f"{source}: frames are {kd.entry_shape} in {kd.files[0].filename}, but the config's "
            f"detector.module_shape is {tuple(frame_shape)}"
        )
    wanted = np.asarray(dc.train_ids, dtype=np.uint64)
    segments: list[FrameSegment] = []
    for fa in kd.files:
        if len(fa.train_ids) == 0:
            continue
        firsts, counts = fa.get_index(source, "image")
        include = np.isin(fa.train_ids, wanted) & fa.validity_flag
        # Contiguous runs of included trains become one segment each.
        edges = np.flatnonzero(np.diff(np.concatenate([[0], include.astype(np.int8), [0]])))
        for a, b in zip(edges[::2], edges[1::2]):
            seg = FrameSegment(fa.filename, kd.hdf5_data_path, int(firsts[a]),
                               fa.train_ids[a:b].astype(np.uint64), counts[a:b].astype(np.int64))
            _check_segment(seg, fa.filename, source)
            segments.append(seg)
    segments.sort(key=lambda s: int(s.train_ids[0]))

    tids, positions, cells = [], [], []
    for seg in segments:
        counts = seg.counts
        tids.append(np.repeat(seg.train_ids, counts))
        starts = np.repeat(np.cumsum(counts) - counts, counts)
        positions.append((np.arange(seg.total) - starts).astype(np.int32))
        with h5py.File(seg.path, "r") as f:
            cell_ds = f[seg.dataset.rsplit("/", 1)[0] + "/cellId"]
            cells.append(np.asarray(cell_ds[seg.first: seg.first + seg.total]).reshape(seg.total, -1)[:, 0])
    cat = lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt)  # noqa: E731
    return ModuleFrames(
        module=module, source=source, segments=segments,
        train_id=cat(tids, np.uint64), position=cat(positions, np.int32), cell_id=cat(cells, np.int64),
        entry_shape=tuple(kd.entry_shape), dtype=np.dtype(kd.dtype),
        files=sorted({fa.filename for fa in kd.files}),
    )


def _check_segment(seg: FrameSegment, filename: str, source: str) -> None:
    with h5py.File(filename, "r") as f:
        n = f[seg.dataset].shape[0]
        ncell = f[seg.dataset.rsplit("/", 1)[0] + "/cellId"].shape[0]
    end = seg.first + seg.total
    if end > n or end > ncell:
        raise RunDataError(
            f"{filename}: INDEX of {source} points to frames up to {end}, but image.data holds {n} "
            f"and image.cellId {ncell}; the file is truncated or inconsistent"
        )


def iter_frame_blocks(
    frames: ModuleFrames, block_frames: int, wanted: np.ndarray
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, stop, block)``: frames ``start:stop`` (reading order) as (n, pixels).

    Only blocks holding a wanted frame are read, and each is trimmed to its first and last
    wanted frame. ``block`` is a view of one buffer reused for every block: use it before
    asking for the next.
    """
    buf = np.empty((block_frames,) + frames.entry_shape, dtype=frames.dtype)
    offset = 0
    for seg in frames.segments:
        for a, b, block in iter_segment_blocks(seg, buf, wanted[offset: offset + seg.total]):
            yield offset + a, offset + b, block
        offset += seg.total


def iter_segment_blocks(seg: FrameSegment, buf: np.ndarray, wanted: np.ndarray):
    """Like :func:`iter_frame_blocks` for one segment, reading into ``buf`` (block frames, *entry)."""
    block_frames = len(buf)
    flat = buf.reshape(block_frames, -1)
    with h5py.File(seg.path, "r") as f:
        ds = f[seg.dataset]
        for a in range(0, seg.total, block_frames):
            b = min(a + block_frames, seg.total)
            hit = np.flatnonzero(wanted[a:b])
            if hit.size == 0:
                continue
            lo, hi = a + int(hit[0]), a + int(hit[-1]) + 1
            try:
                ds.read_direct(buf, np.s_[seg.first + lo: seg.first + hi], np.s_[0: hi - lo])
            except OSError as e:
                raise RunDataError(f"{seg.path}: reading frames {seg.first + lo}-{seg.first + hi} "
                                   f"of {seg.dataset} failed ({e}); the file is corrupt") from None
            yield lo, hi, flat[: hi - lo]


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
