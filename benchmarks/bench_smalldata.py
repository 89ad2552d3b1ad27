"""Benchmark of event_smalldata: events per second against pyFAI alone, on 1-Mpixel and DSSC-module images.

For each image size it writes one run of event images in the generic layout (float32, one HDF5
chunk per image, a powder ring, Poisson noise) and measures in the same run (median of 3, warm
page cache):

1. pyFAI alone: ``integrate1d`` of every image, one at a time, images already in memory (the
   radial profile only, no ROI sums, no reading);
2. our per-event reduction on the same in-memory images (dark subtraction, clipping, mask, 2 ROI
   sums, total, peak and the radial profile of a whole block in one sparse product);
3. ``make_event_smalldata`` end to end: reading the file, hot-pixel pass, reduction, anomaly rules,
   writing the small-data file.

The ratio line divides 2 and 3 by 1 (events per second). Usage:
python benchmarks/bench_smalldata.py [--events-1m 100] [--events-module 500] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from xfel_core.config import load_beamtime
from xfel_core.demo.beamtime import write_config
from xfel_core.events import pipeline as ep
from xfel_core.azimuthal import PYFAI_METHOD, integrator, radial_integrator
from xfel_core.readers.events import read_run
from xfel_core.events.smalldata import reduce_events

SIZES = {"1 Mpixel (1024 x 1024)": (1024, 1024), "DSSC module (128 x 512)": (128, 512)}


def geometry(shape: tuple[int, int]) -> dict:
    return {"distance_m": 0.1, "pixel_size_m": [75e-6, 75e-6], "beam_centre_px": [shape[0] / 2, shape[1] / 2],
            "energy_kev": 9.7, "npt": 500, "unit": "q_A^-1"}


def write_run(root: Path, shape: tuple[int, int], events: int) -> Path:
    """A generic-layout run r0002 of ``events`` ring images, and its beamtime.yaml."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    r = np.hypot(yy - shape[0] / 2, xx - shape[1] / 2)
    mean = 2.0 + 40.0 * np.exp(-0.5 * ((r - 0.35 * min(shape)) / 3.0) ** 2)
    raw = root / "raw"
    raw.mkdir(parents=True)
    with h5py.File(raw / "r0002.h5", "w") as f:
        d = f.create_dataset("images", shape=(events,) + shape, dtype=np.float32, chunks=(1,) + shape)
        block = 50
        for s in range(0, events, block):
            k = min(block, events - s)
            d[s:s + k] = rng.poisson(mean, (k,) + shape).astype(np.float32)
        f["i0"] = rng.uniform(900, 1100, events)
        f["delay"] = np.repeat(np.arange(5.0), -(-events // 5))[:events]
    cy, cx = shape[0] // 2, shape[1] // 2
    section = {"layout": "generic", "raw_root": "raw",
               "generic": {"file": "r{run:04d}.h5", "images": "images", "i0": "i0", "scan": "delay"},
               "rois": [{"name": "a", "role": "intensity", "y": [cy - 20, cy + 20], "x": [cx - 20, cx + 20]},
                        {"name": "b", "role": "intensity", "y": [0, 20], "x": [0, 20]}],
               "geometry": geometry(shape), "binning": {"bin_width": 1.0}}
    return write_config(root, {"name": "bench", "raw_root": "raw", "processed_root": "processed", "events": section})


def median_time(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(label: str, shape: tuple[int, int], events: int, workdir: Path) -> dict:
    root = workdir / label.split()[0]
    cfg = load_beamtime(write_run(root, shape, events))
    ev = cfg.events
    raw = read_run(ev, "r0002")
    images = np.concatenate([imgs.copy() for _, imgs in raw.iter_images(ev.chunk_events)])
    mask = np.zeros(shape, dtype=bool)
    radial = radial_integrator(ev.geometry, shape, mask)
    ai = integrator(ev.geometry)
    rng = (radial.edges[0], radial.edges[-1])

    def pyfai_alone():
        for img in images:
            ai.integrate1d(img, ev.geometry.npt, unit=ev.geometry.unit, method=PYFAI_METHOD, mask=mask,
                           radial_range=rng, correctSolidAngle=True)

    class InMemory:  # the run's images from memory, in the reader's blocks
        nevents, shape_ = events, shape

        def iter_images(self, chunk, wanted=None):
            for s in range(0, events, chunk):
                yield np.arange(s, min(s + chunk, events)), images[s:s + chunk].copy()

    mem = InMemory()
    mem.shape = shape
    pyfai_alone()  # warm-up: pyFAI builds its look-up on the first call
    t_pyfai = median_time(pyfai_alone)
    t_ours = median_time(lambda: reduce_events(mem, None, mask, ev.rois, radial, ev.chunk_events))
    t_e2e = median_time(lambda: ep.make_event_smalldata(cfg, "r0002"))
    # Our profile equals pyFAI's on the same image (a check before the figures).
    ours = reduce_events(mem, None, mask, ev.rois, radial, ev.chunk_events)["profile"][0]
    ref = ai.integrate1d(images[0], ev.geometry.npt, unit=ev.geometry.unit, method=PYFAI_METHOD, mask=mask,
                         radial_range=rng, correctSolidAngle=True).intensity
    diff = float(np.nanmax(np.abs(ours[1:] - ref[1:]) / np.abs(ref[1:]).clip(1e-9)))
    return {"label": label, "events": events, "pyfai": events / t_pyfai, "ours": events / t_ours,
            "e2e": events / t_e2e, "max_rel_diff": diff}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events-1m", type=int, default=100)
    p.add_argument("--events-module", type=int, default=500)
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-smalldata-", dir=args.workdir))
    try:
        rows = [measure(label, shape, args.events_1m if shape[0] == 1024 else args.events_module, workdir)
                for label, shape in SIZES.items()]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n| images | events | pyFAI integrate1d alone (events/s) | our reduction, in memory (events/s) "
          "| event_smalldata end to end (events/s) | profile vs pyFAI (max rel. diff) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['events']} | {r['pyfai']:.0f} | {r['ours']:.0f} | {r['e2e']:.0f} | {r['max_rel_diff']:.1e} |")
    print("ratios " + " ".join(f"{r['label'].split()[0]}{'_1M' if '1024' in r['label'] else '_module'}:"
                               f" ours/pyfai={r['ours'] / r['pyfai']:.2f} e2e/pyfai={r['e2e'] / r['pyfai']:.2f}"
                               for r in rows))


if __name__ == "__main__":
    main()
