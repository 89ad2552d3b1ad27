"""Where each frame's bytes are in an HDF5 file, to read them straight from a memory map of the file.

Raw European XFEL detector data is stored uncompressed in chunks of whole frames, allocated
in order (with a small B-tree node between every few dozen chunks). For such a dataset, or a
contiguous one, the file offset of every frame follows from HDF5's chunk index, and the kernel
reads the frames where they are in the page cache through a read-only memory map of the file: no
HDF5 read path, no per-chunk calls, no copy. (Measured on this project's VM, warm cache: a memory
map read at 11.8 GB/s, ``preadv`` into a reused 32 MB buffer at 2.2 GB/s, the copy out of the
page cache being the cost.) Whenever the layout is not understood (filters, chunks that split
frames, unallocated chunks, virtual datasets, foreign byte order, chunks out of order or
misaligned) :func:`frame_byte_offsets` says why and the caller reads through h5py instead.
For a cold cache, :class:`ReadAhead` reads the next windows' bytes while the kernel works.
"""

from __future__ import annotations

import mmap
import os
import threading
import zlib
from pathlib import Path

import h5py
import numpy as np

from ..exceptions import RawFileChangedError, RunDataError


def frame_byte_offsets(path: str | Path, dataset: str) -> tuple[np.ndarray, np.dtype] | str:
    """(file offset in bytes of every frame, dtype), or the reason the frames cannot be read directly."""
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        dcpl = ds.id.get_create_plist()
        dtype = ds.dtype
        if dtype.kind not in "uif" or not dtype.isnative:
            return f"dtype {dtype} is not a native-order number"
        if dcpl.get_nfilters():
            return "the dataset is filtered (compressed)"
        n = ds.shape[0]
        frame_bytes = int(np.prod(ds.shape[1:], dtype=np.int64)) * dtype.itemsize
        layout = dcpl.get_layout()
        if layout == h5py.h5d.CONTIGUOUS:
            base = ds.id.get_offset()
            if base is None:
                return "the dataset's storage is not allocated"
            offsets = base + np.arange(n, dtype=np.int64) * frame_bytes
        elif layout == h5py.h5d.CHUNKED:
            if tuple(ds.chunks[1:]) != tuple(ds.shape[1:]):
                return f"chunks {ds.chunks} do not hold whole frames of {ds.shape[1:]}"
            k = ds.chunks[0]
            chunk_offsets = np.full(-(-n // k), -1, dtype=np.int64)

            def note(info):
                chunk_offsets[info.chunk_offset[0] // k] = info.byte_offset

            ds.id.chunk_iter(note)
            if (chunk_offsets < 0).any():
                return "some chunks are not allocated (fill value)"
            j = np.arange(n, dtype=np.int64)
            offsets = chunk_offsets[j // k] + (j % k) * frame_bytes
        else:
            return "the dataset is neither contiguous nor chunked (compact or virtual)"
    if n and (np.diff(offsets) < frame_bytes).any():
        return "chunks are not stored in frame order"
    if n and ((offsets - offsets[0]) % dtype.itemsize).any():
        return "frames are not aligned to the element size relative to each other"
    return offsets, dtype


#: Wanted frames handed to the kernel at a time; the next windows are read ahead meanwhile (cold cache).
WINDOW_FRAMES = 1024


def map_frames(path: str | Path, offsets: np.ndarray, frame_bytes: int,
               dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, mmap.mmap]:
    """``(data, element_offsets, map)``: the file memory-mapped read-only, viewed as ``dtype``, and
    where each frame starts in it. Only the page cache backs the map (no private memory); it is
    unmapped when ``data`` and ``map`` are gone."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        end = int(offsets.max()) + frame_bytes if len(offsets) else 0
        if end > size:  # reading past the end of a map is SIGBUS, not an error: check first
            raise RunDataError(f"{path}: the file has {size} bytes but its chunk index places frames up to byte "
                               f"{end}: the file is shorter than its chunk index (truncated)")
        mapped = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    shift = int(offsets[0]) % dtype.itemsize if len(offsets) else 0
    data = np.frombuffer(mapped, dtype=dtype, count=(size - shift) // dtype.itemsize, offset=shift)
    return data, (offsets - shift) // dtype.itemsize, mapped


class ReadAhead:
    """A thread that reads a file's byte ranges into the page cache ahead of the reader.

    At most ``ahead`` ranges beyond the one being reduced, piece by piece: a piece whose sampled
    pages are all cached is skipped (``preadv`` with ``RWF_NOWAIT`` tells without waiting, and
    works on files we may not write, where ``mincore`` does not), any other is read with ``pread``
    into one reused scratch buffer. Reading, not ``posix_fadvise(WILLNEED)``: the OS caches what is
    read in large folios, which the memory map then maps 10-30x faster than the single pages an
    advice leaves (measured here: 0.007 s against 0.25 s per GB), and reads at the device's
    streaming speed. The reader waits (:meth:`ready`) until its range has been read rather than
    faulting the missing pages in itself: its small reads between the thread's large ones would
    slow the device down. A hint only: errors are the reader's to report.
    """

    def __init__(self, path: str | Path, ranges: list[tuple[int, int]], ahead: int = 2):
        self._fd = os.open(path, os.O_RDONLY)
        self._ranges = ranges
        self._allowed = threading.Semaphore(ahead)
        self._done = [threading.Event() for _ in ranges]
        self._next = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="read-ahead", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        scratch = memoryview(bytearray(_PIECE))  # the probes' page and the reads' buffer
        try:
            for (first, end), done in zip(self._ranges, self._done):
                self._allowed.acquire()
                if self._stop:
                    return
                for a in range(first, end, _PIECE):
                    b = min(end, a + _PIECE)
                    if not _cached(self._fd, a, b, scratch[: mmap.PAGESIZE]):
                        os.preadv(self._fd, [scratch[: b - a]], a)
                done.set()
        except OSError:
            pass
        finally:
            for done in self._done:  # no reader waits for a thread that has ended
                done.set()

    def require_size(self, end: int, path: str | Path) -> None:
        """Raise RawFileChangedError unless the file still holds ``end`` bytes: touching a mapped page past
        the end of a file truncated under the map is SIGBUS, which kills the process."""
        size = os.fstat(self._fd).st_size
        if size < end:
            raise RawFileChangedError(f"{path}: the file was truncated while it was read (now {size} bytes, the "
                                      f"frames being read end at byte {end}): a copy or migration is rewriting it")

    def ready(self) -> None:
        """Wait until the reader's next range is in the page cache; one more may then be read ahead."""
        self._allowed.release()
        self._done[self._next].wait()
        self._next += 1

    def close(self) -> None:
        self._stop = True
        self._allowed.release()
        self._thread.join()
        os.close(self._fd)

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


#: Distance between the pages probed to tell whether a piece is cached.
_PROBE_EVERY = 1 << 20


def _cached(fd: int, first: int, end: int, page: memoryview) -> bool:
    """Whether bytes [first, end) of the file look cached: every probed page is (no waiting for I/O).

    False where the file system cannot tell (``RWF_NOWAIT`` unsupported, as on some network and
    parallel file systems): then the piece is read. ``page``: a page-sized buffer for the probes."""
    for pos in [*range(first, end, _PROBE_EVERY), end - 1]:
        try:
            os.preadv(fd, [page], pos - pos % mmap.PAGESIZE, os.RWF_NOWAIT)
        except OSError:  # BlockingIOError: not cached; EOPNOTSUPP and the like: cannot tell
            return False
    return True


#: Bytes per read-ahead read (and the scratch buffer's size). Sequential 1 MB reads kept this VM's
#: disk at 3.3-3.5 GB/s in every trial; 16 MB reads varied from 1.5 to 3.5 GB/s.
_PIECE = 1 << 20


def deflated_chunks(path: str | Path, dataset: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.dtype] | str:
    """(file offset, stored bytes, filter mask of each entry's chunk, dtype) of a dataset stored one entry per
    chunk with the deflate (gzip) filter alone, as the correction pipeline writes the masks; or why not.

    Such chunks are read with ``pread`` and inflated by zlib in threads (zlib releases the GIL; HDF5's own
    read path inflates one chunk at a time under h5py's lock)."""
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        dcpl = ds.id.get_create_plist()
        filters = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]
        if filters != [h5py.h5z.FILTER_DEFLATE]:
            return f"filters {filters} are not the deflate filter alone"
        if ds.dtype.kind not in "uib" or not ds.dtype.isnative:
            return f"dtype {ds.dtype} is not a native-order integer"
        if dcpl.get_layout() != h5py.h5d.CHUNKED or tuple(ds.chunks) != (1,) + tuple(ds.shape[1:]):
            return f"chunks {ds.chunks} are not one entry each"
        n = ds.shape[0]
        offsets = np.full(n, -1, np.int64)
        sizes = np.zeros(n, np.int64)
        masks = np.zeros(n, np.int64)

        def note(info):
            i = info.chunk_offset[0]
            offsets[i], sizes[i], masks[i] = info.byte_offset, info.size, info.filter_mask

        ds.id.chunk_iter(note)
        if (offsets < 0).any():
            return "some chunks are not allocated (fill value)"
        return offsets, sizes, masks, ds.dtype


class Inflater:
    """Entries of a deflated dataset (:func:`deflated_chunks`) read and inflated into a caller's buffer: by a
    pool of ``threads`` threads, or with one thread in the caller's own; a file shorter than its chunk index
    is a named error."""

    def __init__(self, path: str | Path, chunks: tuple, threads: int):
        from concurrent.futures import ThreadPoolExecutor

        self.path = path
        self.offsets, self.sizes, self.filter_masks, self.dtype = chunks
        self._fd = os.open(path, os.O_RDONLY)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="inflate") if threads > 1 else None

    def _one(self, entry: int, out: np.ndarray) -> None:
        raw = os.pread(self._fd, int(self.sizes[entry]), int(self.offsets[entry]))
        if len(raw) < self.sizes[entry]:
            raise RawFileChangedError(f"{self.path}: the file ends before chunk {entry} of its masks (truncated)")
        data = raw if self.filter_masks[entry] & 1 else zlib.decompress(raw)  # bit 0 set: deflate was skipped
        out[...] = np.frombuffer(data, self.dtype).reshape(out.shape)

    def submit(self, first: int, end: int, buf: np.ndarray):
        """Start reading entries [first, end) into buf[:end - first]; returns the futures to wait on (none: done)."""
        if self._pool is None:
            for e in range(first, end):
                self._one(e, buf[e - first])
            return []
        return [self._pool.submit(self._one, e, buf[e - first]) for e in range(first, end)]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        os.close(self._fd)

    def __enter__(self) -> Inflater:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
