"""Benchmark of the module reduction (the `preprocessed_module` kernel) against its limits and baselines.

Writes a DSSC module file in the European XFEL raw layout (128 x 512 uint16 frames, per-frame
chunks, 100 frames per train, 20 scan points, pattern pumped/unpumped, about 5 % of frames
masked), then measures in the same run, on the same file (median of 3, each measurement in a
fresh process so its memory is its own):

1. memcpy of the same number of bytes in memory (np.copyto): the physical limit;
2. the h5py read ceiling: read_direct of the whole dataset in 2,000-frame blocks, no compute;
3. the dssc_process baseline as its published algorithm does it (xarray, per chunk of trains);
4. our kernel, one process, warm page cache; and cold (after posix_fadvise DONTNEED) beside a cold
   read ceiling (the two alternated, median of 5);
5. our kernel, one process per module file, two files at once;
6. a corrected (CORR) module file of float32 frames with gzip-compressed uint32 masks: the h5py read of
   both, and our reduction (frames memory-mapped, masks read and inflated by zlib, in threads with
   more than one, masked pixels left out per pixel);
and the end-to-end figure: one run of 16 modules materialized through Dagster.

Usage: python benchmarks/bench_reduce.py [--size-gb 4] [--workdir DIR] [--e2e-gb 1] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SHAPE = (128, 512)
FRAME_BYTES = SHAPE[0] * SHAPE[1] * 2
FRAMES_PER_TRAIN = 100
SCAN_POINTS = 20
PATTERN = ["pumped", "unpumped"]
MASKED_FRACTION = 0.05
SOURCE = "SCS_DET_DSSC1M-1/DET/0CH0:xtdf"
DATASET = f"INSTRUMENT/{SOURCE}/image/data"


# ----------------------------------------------------------------------------- the data


def make_module_file(path: Path, size_gb: float, seed: int = 0) -> None:
    """A raw module file of about ``size_gb`` GB: 128 x 512 uint16 frames, one chunk per frame."""
    from xfel_core.demo.euxfel_writer import InstrumentSource, write_raw_file

    ntrains = max(SCAN_POINTS, int(size_gb * 1e9 / FRAME_BYTES / FRAMES_PER_TRAIN))
    n = ntrains * FRAMES_PER_TRAIN
    rng = np.random.default_rng(seed)
    bank = (40 + rng.poisson(30, (64,) + SHAPE)).astype(np.uint16)  # offsets + photon counts, ADU

    def fill(ds):
        block = 2048
        for a in range(0, n, block):
            b = min(n, a + block)
            idx = (np.arange(a, b) * 7) % len(bank)
            ds[a:b] = bank[idx][:, None]

    tids = np.arange(10_000, 10_000 + ntrains, dtype=np.uint64)
    cells = np.tile(np.arange(FRAMES_PER_TRAIN, dtype=np.uint16), ntrains)[:, None]
    src = InstrumentSource(
        SOURCE, "image", np.full(ntrains, FRAMES_PER_TRAIN),
        {"cellId": cells, "pulseId": cells.astype(np.uint64), "trainId": np.repeat(tids, FRAMES_PER_TRAIN)[:, None]},
        chunks={"data": (1, 1) + SHAPE}, lazy={"data": ((n, 1) + SHAPE, "uint16", fill)},
    )
    write_raw_file(path, train_ids=tids, instrument=[src], run_number=1)


CORR_SOURCE = "SCS_DET_DSSC1M-1/CORR/0CH0:output"
CORR_FRAME_BYTES = SHAPE[0] * SHAPE[1] * 4


def make_corr_file(path: Path, size_gb: float, seed: int = 2) -> None:
    """A corrected module file of about ``size_gb`` GB of float32 frames, as the correction pipeline writes it:
    ``image.data`` uncompressed, one chunk per frame, ``image.mask`` uint32 gzip-compressed (about 2 % bad)."""
    import h5py

    from xfel_core.demo.euxfel_writer import InstrumentSource, write_raw_file

    ntrains = max(SCAN_POINTS, int(size_gb * 1e9 / CORR_FRAME_BYTES / FRAMES_PER_TRAIN))
    n = ntrains * FRAMES_PER_TRAIN
    rng = np.random.default_rng(seed)
    bank = rng.normal(30, 6, (64,) + SHAPE).astype(np.float32)  # photons, corrected ADU
    masks = np.where(rng.random((64,) + SHAPE) < 0.02, 2, 0).astype(np.uint32)

    def fill(ds):
        for a in range(0, n, 2048):
            b = min(n, a + 2048)
            ds[a:b] = bank[(np.arange(a, b) * 7) % len(bank)]

    tids = np.arange(10_000, 10_000 + ntrains, dtype=np.uint64)
    cells = np.tile(np.arange(FRAMES_PER_TRAIN, dtype=np.uint16), ntrains)
    src = InstrumentSource(
        CORR_SOURCE, "image", np.full(ntrains, FRAMES_PER_TRAIN),
        {"cellId": cells, "pulseId": cells.astype(np.uint64), "trainId": np.repeat(tids, FRAMES_PER_TRAIN)},
        chunks={"data": (1,) + SHAPE}, lazy={"data": ((n,) + SHAPE, "float32", fill)},
    )
    write_raw_file(path, train_ids=tids, instrument=[src], run_number=1)
    with h5py.File(path, "r+") as f:
        m = f.create_dataset(f"INSTRUMENT/{CORR_SOURCE}/image/mask", (n,) + SHAPE, np.uint32, chunks=(1,) + SHAPE,
                             compression="gzip", compression_opts=1)
        for a in range(0, n, 2048):
            b = min(n, a + 2048)
            m[a:b] = masks[(np.arange(a, b) * 5) % len(masks)]


def scan_and_mask(train_ids: np.ndarray, seed: int = 1):
    """Scan point per train (20 equal steps) and a framemask with ~5 % of frames rejected."""
    from xfel_core.config import Binning, FramemaskConfig
    from xfel_core.euxfel.framemask import build_framemask
    from xfel_core.scan import bin_scan_values

    step = np.arange(len(train_ids)) * SCAN_POINTS // len(train_ids)
    scan = bin_scan_values(train_ids, step.astype(float), Binning(bin_width=1.0))
    fm = build_framemask(train_ids, FRAMES_PER_TRAIN, PATTERN, FramemaskConfig(xgm_source=None))
    rng = np.random.default_rng(seed)
    fm.mask &= rng.random(fm.mask.shape) >= MASKED_FRACTION
    fm.reason[~fm.mask] = 4
    return scan, fm


# ----------------------------------------------------------------------------- measurements


class PeakAnon:
    """Peak anonymous (private, non-page-cache) resident memory of this process, sampled."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.005)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(64 << 20):
            pass


def cache_as_read(path: Path) -> None:
    """Put the file in the page cache as a file read from storage is, not as this process wrote it.

    A file written here stays cached in the small pieces it was written in; read back from storage,
    the kernel caches it in large folios. Memory-mapping the former costs 5-8x more page faults
    time on this VM (0.11 s against 0.015 s for 2 GB, measured), and a raw file on an analysis node
    is always one read from storage (the DAQ wrote it elsewhere).
    """
    drop_cache(path)
    warm(path)


def worker_kernel(path: Path, cold: bool, threads: int, wait_for_go: bool = False) -> dict:
    from xfel_core.euxfel.preprocess import DarkConstants, assign_groups, reduce_frames
    from xfel_core.readers import euxfel

    from xfel_core.binning_kernel import Accumulators

    # Load the compiled kernel first, as the executor's forkserver does for every step.
    warm_acc = Accumulators(1, 8, threads)
    warm_acc.add(np.zeros(8, np.uint16), np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64),
                 np.zeros((1, 8), np.float32))
    # The dark constants come from the dark asset's file (26 MB), not from the module file measured.
    cells = np.arange(FRAMES_PER_TRAIN)
    dark = DarkConstants(cells, np.full((len(cells),) + SHAPE, 40, np.float32),
                         np.ones((len(cells),) + SHAPE, np.float32), np.ones(len(cells), np.int64))
    if cold:
        drop_cache(path)
    if wait_for_go:  # start together with the other process, after both have loaded everything
        print("ready", flush=True)
        sys.stdin.readline()
    with PeakAnon() as mem:
        wall_start = time.time()
        t0 = time.perf_counter()
        dc = euxfel.open_run(path.parent, [path])
        frames = euxfel.module_frames(dc, SOURCE, 0, SHAPE)
        scan, fm = scan_and_mask(np.asarray(dc.train_ids))
        group, stats = assign_groups(frames, scan, fm, len(PATTERN))
        sums, sumsq, counts = reduce_frames(frames, group, scan.nbins * len(PATTERN), dark, 256, stats,
                                            threads=threads)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "kernel_seconds": stats.seconds, "frames": frames.nframes,
            "wall_start": wall_start, "wall_end": wall_start + seconds,
            "bytes": frames.nframes * FRAME_BYTES, "peak_anon": mem.peak,
            "paths": sorted(set(stats.read_paths.values()))}


def worker_corr(path: Path, threads: int) -> dict:
    """Our reduction of a corrected module file: float32 frames (memory-mapped) and their masks (h5py, gzip)."""
    from xfel_core.binning_kernel import Accumulators
    from xfel_core.euxfel.detectors import KINDS
    from xfel_core.euxfel.preprocess import assign_groups, reduce_frames
    from xfel_core.readers import euxfel

    warm_acc = Accumulators(1, 8, threads, per_pixel=True)  # the compiled kernel loaded first
    warm_acc.add(np.zeros(8, np.float32), np.zeros(1, np.int64), np.zeros(1, np.int64),
                 mask=(np.zeros(8, np.uint32), np.zeros(1, np.int64), 0xFFFFFFFF))
    with PeakAnon() as mem:
        t0 = time.perf_counter()
        dc = euxfel.open_run(path.parent, [path])
        frames = euxfel.module_frames(dc, CORR_SOURCE, 0, SHAPE, KINDS["DSSC1M"], corrected=True)
        scan, fm = scan_and_mask(np.asarray(dc.train_ids))
        group, stats = assign_groups(frames, scan, fm, len(PATTERN))
        reduce_frames(frames, group, scan.nbins * len(PATTERN), None, 256, stats, threads=threads)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "frames": frames.nframes, "bytes": frames.nframes * CORR_FRAME_BYTES,
            "peak_anon": mem.peak, "paths": sorted(set(stats.read_paths.values()))}


def worker_corr_read(path: Path) -> dict:
    """The h5py read ceiling of a corrected file: its float32 frames and their gzip masks, 2,000-frame blocks."""
    import h5py

    with PeakAnon() as mem, h5py.File(path, "r") as f:
        data, mask = f[f"INSTRUMENT/{CORR_SOURCE}/image/data"], f[f"INSTRUMENT/{CORR_SOURCE}/image/mask"]
        n = data.shape[0]
        buf, mbuf = np.empty((2000,) + SHAPE, np.float32), np.empty((2000,) + SHAPE, np.uint32)
        t0 = time.perf_counter()
        for a in range(0, n, 2000):
            b = min(n, a + 2000)
            data.read_direct(buf, np.s_[a:b], np.s_[0:b - a])
            mask.read_direct(mbuf, np.s_[a:b], np.s_[0:b - a])
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "frames": n, "bytes": n * CORR_FRAME_BYTES, "peak_anon": mem.peak}


def worker_read_ceiling(path: Path, cold: bool) -> dict:
    import h5py

    if cold:
        drop_cache(path)
    with PeakAnon() as mem, h5py.File(path, "r") as f:
        ds = f[DATASET]
        n = ds.shape[0]
        buf = np.empty((2000,) + ds.shape[1:], ds.dtype)
        t0 = time.perf_counter()
        for a in range(0, n, 2000):
            b = min(n, a + 2000)
            ds.read_direct(buf, np.s_[a:b], np.s_[0:b - a])
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "frames": n, "bytes": n * FRAME_BYTES, "peak_anon": mem.peak}


def worker_baseline(path: Path, max_frames: int) -> dict:
    """dssc_process's published algorithm (xarray), on the first ``max_frames`` frames."""
    import h5py
    import xarray as xr

    with PeakAnon() as mem, h5py.File(path, "r") as f:
        ds = f[DATASET]
        tids = f["INDEX/trainId"][()]
        ntrains = min(len(tids), max_frames // FRAMES_PER_TRAIN)
        scan, fm = scan_and_mask(tids)
        scan_da = xr.DataArray(scan.centres[scan.bin_index], dims="trainId", coords={"trainId": tids})
        mask_da = xr.DataArray(fm.mask, dims=("trainId", "pulse"), coords={"trainId": tids})
        t0 = time.perf_counter()
        chunk_trains = 20
        module_data = xr.Dataset({name: (("scan_variable", "x", "y"), np.zeros((len(scan.centres),) + SHAPE))
                                  for name in PATTERN} | {"sum_count": (("scan_variable",), np.zeros(len(scan.centres)))},
                                 coords={"scan_variable": scan.centres})
        for t0_train in range(0, ntrains, chunk_trains):
            t1_train = min(ntrains, t0_train + chunk_trains)
            data = ds[t0_train * FRAMES_PER_TRAIN: t1_train * FRAMES_PER_TRAIN]
            arr = xr.DataArray(data.reshape((t1_train - t0_train, FRAMES_PER_TRAIN) + SHAPE),
                               dims=("trainId", "pulse", "x", "y"),
                               coords={"trainId": tids[t0_train:t1_train]})
            arr = arr.isel(pulse=slice(0, FRAMES_PER_TRAIN))  # maxframes
            arr = arr.where(mask_da.sel(trainId=arr.trainId))
            chunk = xr.Dataset({name: arr.isel(pulse=slice(i, None, len(PATTERN))).mean("pulse")
                                for i, name in enumerate(PATTERN)})
            chunk["scan_variable"] = scan_da.sel(trainId=chunk.trainId)
            chunk = chunk.set_coords("scan_variable")
            chunk["sum_count"] = xr.full_like(chunk["scan_variable"], 1)
            summed = chunk.groupby("scan_variable").sum("trainId")
            for name in summed.data_vars:
                module_data[name].loc[{"scan_variable": summed.scan_variable.values}] += summed[name].values
        seconds = time.perf_counter() - t0
    n = ntrains * FRAMES_PER_TRAIN
    return {"seconds": seconds, "frames": n, "bytes": n * FRAME_BYTES, "peak_anon": mem.peak}


def worker_check(path: Path) -> dict:
    """Kernel means (all frames, no mask) against a plain numpy float64 mean per group."""
    import h5py

    from xfel_core.euxfel.preprocess import reduce_frames
    from xfel_core.readers import euxfel

    dc = euxfel.open_run(path.parent, [path])
    frames = euxfel.module_frames(dc, SOURCE, 0, SHAPE)
    scan, _ = scan_and_mask(np.asarray(dc.train_ids))
    group = scan.bins_of(frames.train_id) * 2 + frames.position % 2
    sums, _, counts = reduce_frames(frames, group, scan.nbins * 2, None, 256)
    kernel_mean = sums / counts[:, None]
    ref = np.zeros_like(sums)
    with h5py.File(path, "r") as f:
        ds = f[DATASET]
        for a in range(0, frames.nframes, 2000):
            block = ds[a: a + 2000].reshape(-1, SHAPE[0] * SHAPE[1]).astype(np.float64)
            g = group[a: a + 2000]
            for gid in np.unique(g):
                ref[gid] += block[g == gid].sum(axis=0)
    ref /= np.bincount(group, minlength=len(counts))[:, None]
    return {"max_abs_diff": float(np.abs(kernel_mean - ref).max())}


def run_worker(kind: str, *args, env=None) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", kind, *map(str, args)], capture_output=True,
                         text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"worker {kind} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_of(n: int, fn) -> dict:
    results = [fn() for _ in range(n)]
    results.sort(key=lambda r: r["seconds"])
    return results[len(results) // 2]


def medians_alternating(n: int, *fns) -> list[dict]:
    """The median of ``n`` runs of each function, run in turn (a, b, a, b, ...) so that drift hits all alike."""
    runs = [[fn() for fn in fns] for _ in range(n)]
    return [sorted(col, key=lambda r: r["seconds"])[n // 2] for col in zip(*runs)]


def memcpy(nbytes: int) -> dict:
    block = min(nbytes, 1 << 30)
    src = np.ones(block // 2, np.uint16)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in
    reps = max(1, round(nbytes / block))
    t0 = time.perf_counter()
    for _ in range(reps):
        np.copyto(dst, src)
    return {"seconds": time.perf_counter() - t0, "bytes": reps * block, "frames": reps * block // FRAME_BYTES,
            "peak_anon": 2 * block}


def two_processes(a: Path, b: Path, threads: int) -> dict:
    """Both workers load everything first, then start on one signal; the time is the span of their work."""
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", "kernel", str(p), "0", str(threads), "go"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for p in (a, b)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    seconds = max(o["wall_end"] for o in outs) - min(o["wall_start"] for o in outs)
    return {"seconds": seconds, "bytes": sum(o["bytes"] for o in outs), "frames": sum(o["frames"] for o in outs),
            "peak_anon": max(o["peak_anon"] for o in outs)}


def end_to_end(workdir: Path, size_gb: float) -> dict:
    """One run of 16 modules materialized through Dagster (multiprocess executor, 2 at once)."""
    from xfel_core.demo.beamtime import RunSpec, beamtime_config, write_config, write_run

    root = workdir / "e2e"
    shutil.rmtree(root, ignore_errors=True)
    frames = 10
    ntrains = max(2, int(size_gb * 1e9 / 16 / FRAME_BYTES / frames))
    mods = list(range(16))
    write_run(root / "raw", RunSpec(run_number=1, ntrains=4, frames_per_train=frames, modules=mods, dark=True))
    write_run(root / "raw", RunSpec(run_number=2, ntrains=ntrains, frames_per_train=frames, modules=mods,
                                    chunk_frames=1))
    cfg = beamtime_config(root, mods, SHAPE, dark_run=1, frame_pattern=PATTERN)
    config = write_config(root, cfg)
    (root / "home").mkdir()
    env = dict(os.environ, XFEL_BEAMTIME=str(config), DAGSTER_HOME=str(root / "home"))
    result = run_worker("e2e", root, env=env)
    result["bytes"] = 16 * ntrains * frames * FRAME_BYTES
    return result


def worker_e2e(root: Path) -> dict:
    import dagster as dg

    from xfel_assets.cli.materialize import materialize_runs
    from xfel_core.config import load_beamtime

    cfg = load_beamtime(os.environ["XFEL_BEAMTIME"])
    workers = cfg.execution.resolved_max_concurrent()
    stages: dict[str, float] = {}
    with dg.DagsterInstance.get() as instance:
        t0 = time.perf_counter()
        outcomes = materialize_runs(["r0002"], instance, workers, cfg.module_keys, log=lambda *a: None,
                                    stage_seconds=stages)
        wall = time.perf_counter() - t0
        if not all(o.success for o in outcomes):
            raise SystemExit("end-to-end materialization failed: " + "; ".join(o.error for o in outcomes if o.error))
        kernel = 0.0
        for key in instance.get_materialized_partitions(dg.AssetKey("preprocessed_module")):
            ev = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("preprocessed_module"), asset_partitions=[str(key)]),
                limit=1)
            kernel += ev.records[0].asset_materialization.metadata["seconds"].value
    return {"wall": wall, "module_wall": stages["modules"], "step_seconds": kernel, "workers": workers,
            "steps": 16}


# ----------------------------------------------------------------------------- report


def row(name: str, r: dict) -> str:
    gbs = r["bytes"] / r["seconds"] / 1e9
    return (f"| {name} | {gbs:7.2f} | {r['frames'] / r['seconds']:10,.0f} | {r['peak_anon'] / 2**20:8.0f} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-gb", type=float, default=4.0, help="size of the module file (default 4)")
    p.add_argument("--small-gb", type=float, default=1.0, help="the smaller file for the memory comparison")
    p.add_argument("--baseline-gb", type=float, default=0.5, help="part of the file the slow baseline reduces")
    p.add_argument("--e2e-gb", type=float, default=1.0, help="total size of the 16-module end-to-end run (0: skip)")
    p.add_argument("--threads", type=int, default=1, help="kernel threads per process")
    p.add_argument("--corr-gb", type=float, default=1.0, help="size of the corrected (CORR) module file (0: skip)")
    p.add_argument("--workdir", type=Path, default=None, help="where to write the files (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the generated files")
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        kind, *rest = args.worker
        if kind == "kernel":
            res = worker_kernel(Path(rest[0]), rest[1] == "1", int(rest[2]), wait_for_go=rest[3:] == ["go"])
        elif kind == "read":
            res = worker_read_ceiling(Path(rest[0]), rest[1] == "1")
        elif kind == "baseline":
            res = worker_baseline(Path(rest[0]), int(rest[1]))
        elif kind == "check":
            res = worker_check(Path(rest[0]))
        elif kind == "e2e":
            res = worker_e2e(Path(rest[0]))
        elif kind == "corr":
            res = worker_corr(Path(rest[0]), int(rest[1]))
        elif kind == "corr_read":
            res = worker_corr_read(Path(rest[0]))
        print(json.dumps(res))
        return 0

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-reduce-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        big, other, small = work / "a" / "RAW-R0001-DSSC00-S00000.h5", work / "b" / "RAW-R0001-DSSC00-S00000.h5", \
            work / "c" / "RAW-R0001-DSSC00-S00000.h5"
        for path, size in ((big, args.size_gb), (small, args.small_gb)):
            if not path.exists():
                t0 = time.perf_counter()
                make_module_file(path, size)
                print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t0:.0f} s",
                      flush=True)
        if not other.exists():
            other.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(big, other)
        corr = work / "d" / "CORR-R0001-DSSC00-S00000.h5"
        if args.corr_gb > 0 and not corr.exists():
            t0 = time.perf_counter()
            make_corr_file(corr, args.corr_gb)
            print(f"wrote {corr} ({corr.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t0:.0f} s", flush=True)
        for path in (big, other, small) + ((corr,) if args.corr_gb > 0 else ()):
            cache_as_read(path)

        check = run_worker("check", big)
        print(f"kernel means vs numpy float64 reference: max abs difference {check['max_abs_diff']:.3g} ADU",
              flush=True)
        if not check["max_abs_diff"] < 1e-9:
            print("FAIL: the kernel's means differ from the float64 reference", file=sys.stderr)
            return 1

        t = args.threads
        res = {}
        res["memcpy"] = median_of(3, lambda: memcpy(big.stat().st_size))
        res["read"] = median_of(3, lambda: run_worker("read", big, 0))
        nbase = int(args.baseline_gb * 1e9 / FRAME_BYTES)
        res["baseline"] = median_of(3, lambda: run_worker("baseline", big, nbase))
        res["kernel"] = median_of(3, lambda: run_worker("kernel", big, 0, t))
        res["kernel_small"] = median_of(3, lambda: run_worker("kernel", small, 0, t))
        ncpu = os.cpu_count() or 1
        if ncpu > 1 and t == 1:
            res["kernel_threads"] = median_of(3, lambda: run_worker("kernel", big, 0, ncpu))
        # Alternated, median of 5: this VM's disk drifts between 1 and 3.5 GB/s within a minute.
        res["cold_read"], res["cold_kernel"] = medians_alternating(5, lambda: run_worker("read", big, 1),
                                                                   lambda: run_worker("kernel", big, 1, t))
        cache_as_read(big)  # the cold runs left it cached as the kernel read it
        res["two"] = median_of(3, lambda: two_processes(big, other, t))
        if args.corr_gb > 0:
            res["corr_read"] = median_of(3, lambda: run_worker("corr_read", corr))
            res["corr"] = median_of(3, lambda: run_worker("corr", corr, t))
            if ncpu > 1 and t == 1:
                res["corr_threads"] = median_of(3, lambda: run_worker("corr", corr, ncpu))

        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
        print(f"\nmachine: {os.cpu_count()} cores, {cpu}, {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB; module file {big.stat().st_size / 1e9:.2f} GB, "
              f"{res['kernel']['frames']} frames of 128 x 512 uint16; kernel threads per process: {t}; "
              f"kernel read path: {', '.join(res['kernel']['paths'])}\n")
        print("| way of reducing one module file | GB/s | frames/s | peak private MiB |")
        print("| --- | ---: | ---: | ---: |")
        print(row("memcpy of the same bytes (np.copyto), the physical limit", res["memcpy"]))
        print(row("h5py read_direct, 2,000-frame blocks, no compute (read ceiling)", res["read"]))
        print(row(f"dssc_process baseline, xarray (first {args.baseline_gb:g} GB)", res["baseline"]))
        print(row("our kernel, 1 process, warm cache", res["kernel"]))
        print(row(f"our kernel, 1 process, warm, {small.stat().st_size / 1e9:.1f} GB file", res["kernel_small"]))
        if "kernel_threads" in res:
            print(row(f"our kernel, 1 process, {ncpu} threads (private accumulators), warm", res["kernel_threads"]))
        print(row("h5py read ceiling, cold cache", res["cold_read"]))
        print(row("our kernel, 1 process, cold cache", res["cold_kernel"]))
        print(row("our kernel, 2 processes on 2 module files, warm", res["two"]))
        if "corr" in res:
            print(row("CORR file (float32 + gzip uint32 mask): h5py read ceiling of both, warm", res["corr_read"]))
            print(row(f"CORR file: our kernel with the masks, 1 process, warm ({', '.join(res['corr']['paths'])})",
                      res["corr"]))
            if "corr_threads" in res:
                print(row(f"CORR file: the same, {ncpu} threads (inflating the masks)", res["corr_threads"]))
        gb = lambda r: r["bytes"] / r["seconds"]  # noqa: E731
        print(f"\nratios kernel/memcpy={gb(res['kernel']) / gb(res['memcpy']):.2f} "
              f"kernel/read_ceiling={gb(res['kernel']) / gb(res['read']):.2f} "
              f"kernel/baseline={gb(res['kernel']) / gb(res['baseline']):.1f} "
              f"cold_kernel/cold_read={gb(res['cold_kernel']) / gb(res['cold_read']):.2f} "
              f"two_processes/one={gb(res['two']) / gb(res['kernel']):.2f}"
              + (f" corr/corr_read_ceiling={gb(res['corr']) / gb(res['corr_read']):.2f}" if "corr" in res else "")
              + (f" corr_threads/corr_read_ceiling={gb(res['corr_threads']) / gb(res['corr_read']):.2f}"
                 if "corr_threads" in res else ""),
              flush=True)
        e2e = end_to_end(work, args.e2e_gb) if args.e2e_gb > 0 else None
        if e2e:
            overhead = e2e["module_wall"] - e2e["step_seconds"] / e2e["workers"]
            print(f"\nend to end: one run of 16 modules, {e2e['bytes'] / 1e9:.2f} GB, through Dagster with the "
                  f"multiprocess executor ({e2e['workers']} at once): all assets {e2e['wall']:.1f} s; the 16 module "
                  f"steps {e2e['module_wall']:.1f} s wall = {e2e['bytes'] / e2e['module_wall'] / 1e9:.2f} GB/s; "
                  f"orchestration overhead {overhead:.1f} s ({overhead / 16 * e2e['workers']:.2f} s per step)")
        return 0
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
