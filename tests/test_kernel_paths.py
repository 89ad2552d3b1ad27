"""Every way the module reduction gets its frames' bytes, against a straightforward float64 computation."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SHAPE, small_run
from xfel_core import binning_kernel
from xfel_core.config import Binning, FramemaskConfig
from xfel_core.demo.beamtime import DSSC_SOURCE, write_run
from xfel_core.euxfel.framemask import build_framemask
from xfel_core.euxfel.preprocess import DIRECT_PATH, assign_groups, compute_dark, reduce_frames
from xfel_core.readers import euxfel
from xfel_core.scan import bin_scan_values

PATHS = {
    "per-frame chunks": (dict(chunk_frames=1), DIRECT_PATH),
    "multi-frame chunks splitting trains": (dict(chunk_frames=5), DIRECT_PATH),
    "contiguous": (dict(chunk_frames=0), DIRECT_PATH),
    "float32 frames": (dict(detector_dtype="float32"), DIRECT_PATH),
    "int32 frames": (dict(detector_dtype="int32"), DIRECT_PATH),
    "compressed": (dict(compression="gzip"), "h5py blocks (the dataset is filtered"),
    "chunks splitting frames": (dict(chunk_rows=4), "h5py blocks (chunks"),
}


def straightforward(gen, m, fm, scan, ntypes, dark):
    """Loop over frames in float64: sums, sums of squares and counts per group."""
    nb = scan.nbins
    sums = np.zeros((nb * ntypes,) + SHAPE)
    sq = np.zeros_like(sums)
    n = np.zeros(nb * ntypes, np.int64)
    for t, tid in enumerate(gen.train_ids):
        b = scan.bin_index[np.searchsorted(scan.train_id, tid)]
        row = np.searchsorted(fm.train_id, tid)
        for p in range(gen.spec.frames_per_train):
            if b < 0 or not fm.mask[row, p]:
                continue
            x = gen.frames[m][t, p].astype(np.float64) - (dark.mean[p] if dark is not None else 0)
            g = b * ntypes + p % ntypes
            sums[g] += x
            sq[g] += x * x
            n[g] += 1
    return sums.reshape(len(n), -1), sq.reshape(len(n), -1), n


def reduce(tmp_path, spec_kw, binning=None, rules=None, threads=1, direct=True, dark=True):
    gen = write_run(tmp_path, small_run(2, **spec_kw))
    dc = euxfel.open_run(gen.path)
    frames = euxfel.module_frames(dc, DSSC_SOURCE.format(module=0), 0, SHAPE)
    scan = bin_scan_values(gen.train_ids, gen.delays, binning or Binning(bin_width=1.0))
    rules = rules or FramemaskConfig(min_pulse_energy_uj=300)
    fm = build_framemask(gen.train_ids, gen.spec.frames_per_train, gen.spec.frame_pattern, rules,
                         gen.train_ids, gen.pulse_energy)
    dk = compute_dark(frames, 4) if dark else None  # this run's own per-cell mean serves as a dark
    group, stats = assign_groups(frames, scan, fm, 2)
    got = reduce_frames(frames, group, scan.nbins * 2, dk, block_frames=4, stats=stats, threads=threads,
                        direct=direct)
    return got, straightforward(gen, 0, fm, scan, 2, dk), stats


@pytest.mark.parametrize("name", list(PATHS))
@pytest.mark.parametrize("impl", ["numba 1 thread", "numba 2 threads", "numpy reference"])
def test_every_read_path_equals_float64_loop(tmp_path, monkeypatch, name, impl):
    spec_kw, expected_path = PATHS[name]
    threads = 2 if impl == "numba 2 threads" else 1
    if impl == "numpy reference":
        monkeypatch.setattr(binning_kernel.jit, "AVAILABLE", False)  # as on a machine without numba
    got, ref, stats = reduce(tmp_path, dict(spec_kw, low_pulse_fraction=0.1), threads=threads)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-6)
    assert all(how.startswith(expected_path) for how in stats.read_paths.values()), stats.read_paths
    assert got[2].sum() == stats.kept > 0


@pytest.mark.parametrize("threads", [1, 2])
def test_many_kernel_batches_per_window_equal_float64_loop(tmp_path, monkeypatch, threads):
    """Real windows hold one batch (1,024 frames); batches of 5 frames cross trains and groups."""
    monkeypatch.setattr(binning_kernel, "BATCH_FRAMES", 5)
    got, ref, stats = reduce(tmp_path, dict(low_pulse_fraction=0.1), threads=threads)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-6)
    assert got[2].sum() == stats.kept > 5


def test_h5py_fallback_forced_equals_direct_reads(tmp_path):
    mapped, _, s1 = reduce(tmp_path / "a", {})
    read, _, s2 = reduce(tmp_path / "b", {}, direct=False)
    assert set(s1.read_paths.values()) == {DIRECT_PATH}
    assert set(s2.read_paths.values()) == {"h5py blocks (direct reads disabled)"}
    for a, b in zip(mapped, read):
        np.testing.assert_array_equal(a, b)


def test_empty_scan_bins_all_masked_and_one_frame(tmp_path):
    # nbins much larger than the scan points: most bins stay empty (count 0, sums 0)
    got, ref, _ = reduce(tmp_path / "empty", {}, binning=Binning(nbins=50))
    assert (got[2] == 0).sum() > 40
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-6)
    # every frame masked: nothing read, all zero
    got, _, stats = reduce(tmp_path / "masked", {}, rules=FramemaskConfig(exclude_frames=list(range(6))))
    assert stats.kept == 0 and stats.read_paths == {} and not got[0].any() and not got[2].any()
    # a run of a single frame
    got, ref, _ = reduce(tmp_path / "one", dict(ntrains=1, frames_per_train=1, low_pulse_fraction=0.0),
                         dark=False)
    assert got[2].sum() == 1
    np.testing.assert_allclose(got[0], ref[0])


def test_a_file_shorter_than_its_chunk_index_is_named_not_mapped(tmp_path):
    """Reading past the end of a memory map would kill the process (SIGBUS): the size is checked first."""
    from xfel_core.exceptions import RunDataError
    from xfel_core.readers import frame_map

    path = tmp_path / "short.bin"
    path.write_bytes(bytes(1000))
    offsets = np.array([0, 400, 800], np.int64)  # the last frame would end at byte 1200
    with pytest.raises(RunDataError, match=r"short\.bin: .*1000 bytes.*1200.*truncated"):
        frame_map.map_frames(path, offsets, 400, np.dtype(np.uint16))
    data, elements, _ = frame_map.map_frames(path, offsets[:2], 400, np.dtype(np.uint16))
    assert list(elements) == [0, 200] and data.size == 500 and not data.flags.writeable


@pytest.fixture
def disk_tmp_path(tmp_path):
    """A folder on a disk file system: on tmpfs (where `make test` keeps its temporary files) a page
    cache probe with RWF_NOWAIT cannot tell, and the read-ahead reads every piece."""
    import shutil
    import tempfile
    from pathlib import Path

    var_tmp = Path("/var/tmp")
    if not var_tmp.is_dir():
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="xfel-read-ahead-", dir=var_tmp))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_read_ahead_reads_what_is_not_cached_within_its_windows_and_stops_with_the_reader(disk_tmp_path, monkeypatch):
    """At most `ahead` windows beyond the reader's; cached pieces only probed, the others read; the
    reader goes on once its window is read; the thread ends with the reader, error or not."""
    import errno
    import os
    import threading
    import time

    from xfel_core.readers import frame_map

    path = disk_tmp_path / "frames.bin"
    path.write_bytes(os.urandom(1 << 20))
    ranges = [(i << 16, (i + 1) << 16) for i in range(16)]
    calls = []  # (window, "probe" or "read")
    preadv = os.preadv

    def spy(fd, buffers, offset, flags=0):
        calls.append((offset >> 16, "probe" if flags & os.RWF_NOWAIT else "read"))
        return preadv(fd, buffers, offset, flags)

    def wait_for(call):
        deadline = time.monotonic() + 10
        while call not in calls and time.monotonic() < deadline:
            time.sleep(0.001)

    monkeypatch.setattr(os, "preadv", spy)
    monkeypatch.setattr(frame_map, "_PROBE_EVERY", 4096)  # every page: an exact answer on this small file
    monkeypatch.setattr(frame_map, "_PIECE", 1 << 14)  # four pieces a window
    with pytest.raises(RuntimeError, match="reader failed"):
        with frame_map.ReadAhead(path, ranges, ahead=2) as ahead:
            for _ in range(3):  # the reader is on window 2: windows 0-4 may be read ahead, no more
                ahead.ready()
            wait_for((4, "probe"))
            time.sleep(0.05)
            raise RuntimeError("reader failed")
    assert {w for w, _ in calls} == set(range(5))
    assert {kind for _, kind in calls} == {"probe"}  # just written: cached
    assert not [t for t in threading.enumerate() if t.name == "read-ahead"]

    # Windows 8-15 not cached (as the probe would say after the OS dropped them): exactly those are
    # read, each in full before the reader goes on to it.
    cached = frame_map._cached
    monkeypatch.setattr(frame_map, "_cached", lambda fd, a, b, page: a < ranges[8][0] and cached(fd, a, b, page))
    calls.clear()
    with frame_map.ReadAhead(path, ranges, ahead=2) as ahead:
        for k in range(len(ranges)):
            ahead.ready()
            assert calls.count((k, "read")) == (4 if k >= 8 else 0)
    assert [w for w, kind in calls if kind == "read"] == [w for w in range(8, 16) for _ in range(4)]

    # A file system that cannot answer the probe (EOPNOTSUPP, as some network file systems): all is read.
    monkeypatch.setattr(frame_map, "_cached", cached)

    def no_nowait(fd, buffers, offset, flags=0):
        if flags & os.RWF_NOWAIT:
            raise OSError(errno.EOPNOTSUPP, "RWF_NOWAIT not supported")
        return spy(fd, buffers, offset, flags)

    monkeypatch.setattr(os, "preadv", no_nowait)
    calls.clear()
    with frame_map.ReadAhead(path, ranges, ahead=2) as ahead:
        for _ in ranges:
            ahead.ready()
    assert [w for w, _ in calls] == [w for w in range(16) for _ in range(4)]
