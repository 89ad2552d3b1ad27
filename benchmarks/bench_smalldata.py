"""Benchmark of event_smalldata against pyFAI's CPU engines and the h5py read ceiling, with its memory.

For each image size it writes one run of event images in the generic layout (float32, one HDF5
chunk per image, a powder ring, Poisson noise, no dark run: the hot pixels come from a first pass
over the run) and measures in the same run, on the same file, warm page cache (median of 3):

1. the read ceiling: h5py ``read_direct`` of the whole dataset in 32-image blocks, no compute;
2. pyFAI alone: ``integrate1d`` of every image one at a time, images already in memory, for each of
   its CPU engines without pixel splitting (histogram, CSR, CSC; Cython) and the best of them;
3. our frame kernel alone, one thread, on the same in-memory images;
4. ``make_event_smalldata`` end to end (reading, hot-pixel pass, the kernel, anomaly rules, writing
   the file), with one worker and with two (``execution.kernel_threads``);
5. the peak private memory of ``make_event_smalldata`` (two workers, a fresh process each; anonymous
   resident memory, not the page cache the memory map shows) on a 1 GB and a 4 GB run of 1-Mpixel
   images: memory bounded by the blocks, not by the run's length.

It checks first that our profile equals pyFAI's (histogram engine) in the bins inside the range.
The last line: ``ratios e2e/pyfai_best=... e2e/read_ceiling=... two_workers/one=... memory_4gb/1gb=...``
(e2e with two workers, 1-Mpixel images). Usage:
python benchmarks/bench_smalldata.py [--events-1m 400] [--events-module 1000] [--memory-gb 1 4] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from xfel_core.azimuthal import integrator, radial_integrator
from xfel_core.config import load_beamtime
from xfel_core.demo.beamtime import write_config
from xfel_core.events import pipeline as ep
from xfel_core.frame_kernel import reduce_frames, warm_up
from xfel_core.readers.events import read_run

SIZES = {"1 Mpixel (1024 x 1024)": (1024, 1024), "DSSC module (128 x 512)": (128, 512)}
ENGINES = {"histogram": ("no", "histogram", "cython"), "csr": ("no", "csr", "cython"), "csc": ("no", "csc", "cython")}
READ_BLOCK = 32


def geometry(shape: tuple[int, int]) -> dict:
    return {"distance_m": 0.1, "pixel_size_m": [75e-6, 75e-6], "beam_centre_px": [shape[0] / 2, shape[1] / 2],
            "energy_kev": 9.7, "npt": 500, "unit": "q_A^-1"}


def write_run(root: Path, shape: tuple[int, int], events: int, threads: int = 1) -> Path:
    """A generic-layout run r0002 of ``events`` ring images, and its beamtime.yaml."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    r = np.hypot(yy - shape[0] / 2, xx - shape[1] / 2)
    mean = 2.0 + 40.0 * np.exp(-0.5 * ((r - 0.35 * min(shape)) / 3.0) ** 2)
    raw = root / "raw"
    raw.mkdir(parents=True)
    with h5py.File(raw / "r0002.h5", "w") as f:
        d = f.create_dataset("images", shape=(events,) + shape, dtype=np.float32, chunks=(1,) + shape)
        noise = rng.poisson(mean, (16,) + shape).astype(np.float32)  # 16 noise patterns, reused: writing is quick
        for s in range(0, events, 16):
            k = min(16, events - s)
            d[s:s + k] = noise[:k]
        f["i0"] = rng.uniform(900, 1100, events)
        f["delay"] = np.repeat(np.arange(5.0), -(-events // 5))[:events]
    cy, cx = shape[0] // 2, shape[1] // 2
    section = {"layout": "generic", "raw_root": "raw",
               "generic": {"file": "r{run:04d}.h5", "images": "images", "i0": "i0", "scan": "delay"},
               "rois": [{"name": "a", "role": "intensity", "y": [cy - 20, cy + 20], "x": [cx - 20, cx + 20]},
                        {"name": "b", "role": "intensity", "y": [0, 20], "x": [0, 20]}],
               "geometry": geometry(shape), "binning": {"bin_width": 1.0}}
    return write_config(root, {"name": "bench", "raw_root": "raw", "processed_root": "processed", "events": section,
                               "execution": {"kernel_threads": threads}})


def median_time(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def with_threads(cfg, threads: int):
    return cfg.model_copy(update={"execution": cfg.execution.model_copy(update={"kernel_threads": threads})})


def measure(label: str, shape: tuple[int, int], events: int, workdir: Path) -> dict:
    root = workdir / label.split()[0]
    cfg = load_beamtime(write_run(root, shape, events))
    ev = cfg.events
    path = root / "raw" / "r0002.h5"
    nbytes = events * shape[0] * shape[1] * 4
    buf = np.empty((READ_BLOCK,) + shape, np.float32)

    def read_ceiling():
        with h5py.File(path, "r") as f:
            d = f["images"]
            for s in range(0, events, READ_BLOCK):
                k = min(READ_BLOCK, events - s)
                d.read_direct(buf[:k], np.s_[s:s + k])

    with h5py.File(path, "r") as f:
        images = f["images"][()]
    mask = np.zeros(shape, dtype=bool)
    radial = radial_integrator(ev.geometry, shape, mask)
    ai = integrator(ev.geometry)
    rng = ev.geometry.radial_range  # None: the detector's whole range, pyFAI's and ours alike

    def pyfai(method):
        for img in images:
            ai.integrate1d(img, ev.geometry.npt, unit=ev.geometry.unit, method=method, mask=mask, radial_range=rng,
                           correctSolidAngle=True)

    nb = len(radial.radial)
    out = [np.empty(events), np.empty(events), np.empty((events, 0)), np.empty((events, nb))]

    def kernel():
        for s in range(0, events, ev.chunk_events):
            e = min(events, s + ev.chunk_events)
            reduce_frames(images[s:e], None, mask.reshape(-1), radial.bin_of, nb, np.zeros((0, 4), np.int64),
                          out[0][s:e], out[1][s:e], out[2][s:e], out[3][s:e])

    # Our profile equals pyFAI's on the same image (a check before the figures), in every bin with pixels.
    kernel()
    ours = radial.from_sums(out[3][:1])[0]
    ref = ai.integrate1d(images[0], ev.geometry.npt, unit=ev.geometry.unit, method=ENGINES["histogram"], mask=mask,
                         radial_range=rng, correctSolidAngle=True).intensity
    inside = np.isfinite(ours)
    diff = float(np.max(np.abs(ours[inside] - ref[inside]) / np.abs(ref[inside])))

    read_ceiling()  # warm the page cache
    row = {"label": label, "events": events, "read": events / median_time(read_ceiling),
           "mb": nbytes / events / 1e6, "max_rel_diff": diff}
    for name, method in ENGINES.items():
        pyfai(method)  # warm-up: pyFAI builds its look-up table on the first call
        row[f"pyfai_{name}"] = events / median_time(lambda: pyfai(method))
    row["pyfai_best"] = max(row[f"pyfai_{n}"] for n in ENGINES)
    row["kernel"] = events / median_time(kernel)
    for threads in (1, 2):
        c = with_threads(cfg, threads)
        ep.make_event_smalldata(c, "r0002")  # warm-up: numba's cache, pyFAI's geometry
        row[f"e2e_{threads}"] = events / median_time(lambda: ep.make_event_smalldata(c, "r0002"))
    return row


MEMORY_SCRIPT = """
import sys, threading
from xfel_core.config import load_beamtime
from xfel_core.events import pipeline as ep

def anon():
    return int(dict(line.split(":", 1) for line in open("/proc/self/status"))["RssAnon"].split()[0]) * 1024

peak, done = [anon()], threading.Event()

def sample():
    while not done.wait(0.005):
        peak[0] = max(peak[0], anon())

t = threading.Thread(target=sample)
t.start()
ep.make_event_smalldata(load_beamtime(sys.argv[1]), "r0002")
done.set()
t.join()
print(max(peak[0], anon()))
"""


def peak_memory(workdir: Path, gb: float) -> tuple[int, float]:
    """(events, peak private bytes) of make_event_smalldata with two workers on a ``gb`` GB run of 1-Mpixel images.

    Private: the process's anonymous resident memory (RssAnon, sampled every 5 ms), not the file's pages that
    the memory map shows in its resident size (the page cache's, shared and reclaimable)."""
    events = int(gb * 1e9 // (1024 * 1024 * 4))
    root = workdir / f"mem{gb:g}"
    config = write_run(root, (1024, 1024), events, threads=2)
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(config)], capture_output=True, text=True, check=True)
    shutil.rmtree(root / "raw")
    return events, int(out.stdout.split()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events-1m", type=int, default=400)
    p.add_argument("--events-module", type=int, default=1000)
    p.add_argument("--memory-gb", type=float, nargs=2, default=[1.0, 4.0])
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-smalldata-", dir=args.workdir))
    warm_up()
    try:
        rows = [measure(label, shape, args.events_1m if shape[0] == 1024 else args.events_module, workdir)
                for label, shape in SIZES.items()]
        memory = [peak_memory(workdir, gb) for gb in args.memory_gb]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\nevents per second, warm page cache, median of 3:\n")
    print("| images | events | read ceiling (h5py, 32-image blocks) | pyFAI histogram | pyFAI CSR | pyFAI CSC "
          "| frame kernel alone, 1 thread | event_smalldata, 1 worker | event_smalldata, 2 workers "
          "| profile vs pyFAI (max rel. diff) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['events']} | {r['read']:.0f} ({r['read'] * r['mb'] / 1e3:.1f} GB/s) "
              f"| {r['pyfai_histogram']:.0f} | {r['pyfai_csr']:.0f} | {r['pyfai_csc']:.0f} | {r['kernel']:.0f} "
              f"| {r['e2e_1']:.0f} | {r['e2e_2']:.0f} | {r['max_rel_diff']:.1e} |")
    print("\npeak private memory of event_smalldata (2 workers, 1-Mpixel images; anonymous resident memory):\n")
    print("| run | events | peak private |")
    print("|---|---|---|")
    for gb, (events, peak) in zip(args.memory_gb, memory):
        print(f"| {gb:g} GB | {events} | {peak / 2**20:.0f} MiB |")
    r = rows[0]
    print(f"\nratios e2e/pyfai_best={r['e2e_2'] / r['pyfai_best']:.2f} e2e/read_ceiling={r['e2e_2'] / r['read']:.2f} "
          f"two_workers/one={r['e2e_2'] / r['e2e_1']:.2f} memory_4gb/1gb={memory[-1][1] / memory[0][1]:.2f}")


if __name__ == "__main__":
    main()
