"""Generate a small demo beamtime: DSSC pump-probe runs in the European XFEL raw layout.

The signal is physical enough to check the pipeline by eye and by number: every module has a
Bragg peak whose intensity scales with the X-ray pulse energy; in pumped frames the peak drops
after time zero and recovers exponentially with the pump-probe delay. Dark frames hold only
the per-cell offset and noise. The runs carry the quirks of real data on request: dropped
trains per module, zero-frame trains, suspect trains, low-energy pulses, sequence files that
break at different trains for different sources, format 0.5 or 1.x.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import write_config
from .euxfel_writer import ControlSource, InstrumentSource, raw_file_name, write_raw_file

DSSC_SOURCE = "SCS_DET_DSSC1M-1/DET/{module}CH0:xtdf"
XGM_SOURCE = "SCS_BLU_XGM/XGM/DOOCS:output"
XGM_KEY = "data.intensitySa3TD"
DELAY_SOURCE = "SCS_ILH_LAS/MDL/OPTICALDELAY_PP800"
DELAY_KEY = "actualPosition"
CONTROL_AGGREGATOR = "DA01"
XGM_SLOTS = 1000  # the gas monitor's per-train array always has 1000 pulse slots

#: Physics of the demo signal (ADU for intensities, ps for delays, uJ for pulse energies).
PEAK_ADU = 400.0
PUMP_DEPTH = 0.5
RECOVERY_PS = 2.0
NOMINAL_PULSE_UJ = 1000.0
LOW_PULSE_UJ = 40.0
NOISE_ADU = 2.0


@dataclass
class RunSpec:
    """What one generated run looks like; the defaults give a tidy run."""

    run_number: int
    ntrains: int = 40
    frames_per_train: int = 10
    modules: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    module_shape: tuple[int, int] = (128, 512)
    frame_pattern: list[str] = field(default_factory=lambda: ["pumped", "unpumped"])
    first_train_id: int | None = None
    dark: bool = False
    #: Delay per train (ps); default: ``scan_points`` steps from -1 ps, 1 ps apart.
    delays: np.ndarray | None = None
    scan_points: int = 6
    format_version: str = "1.2"
    #: Split every source's trains into sequence files of about this many trains.
    trains_per_sequence: int | None = None
    #: Store per-frame trainId/pulseId/cellId as (frames, 1) and data as (frames, 1, y, x).
    trailing_axis: bool = True
    #: Frames per HDF5 chunk of the pixel data; 0: contiguous layout.
    chunk_frames: int = 32
    #: Rows of a frame per chunk; None: whole frames (chunks that split frames defeat direct reads).
    chunk_rows: int | None = None
    compression: str | None = None
    #: Train indices (0-based) that a module's files lack entirely, per module.
    missing_trains: dict[int, list[int]] = field(default_factory=dict)
    #: Train indices recorded with zero frames in every module.
    zero_frame_trains: list[int] = field(default_factory=list)
    #: Train indices flagged suspect (INDEX/flag = 0) in every file.
    suspect_trains: list[int] = field(default_factory=list)
    #: Train indices missing from the control file (no delay, no pulse energy).
    control_missing_trains: list[int] = field(default_factory=list)
    low_pulse_fraction: float = 0.05
    detector_dtype: str = "uint16"
    seed: int = 0

    @property
    def train_ids(self) -> np.ndarray:
        first = self.first_train_id if self.first_train_id is not None else 1_000_000 + 10_000 * self.run_number
        return np.arange(first, first + self.ntrains, dtype=np.uint64)


@dataclass
class GeneratedRun:
    """What was written, for tests to compare the readers and the science against."""

    spec: RunSpec
    path: Path
    files: list[Path]
    train_ids: np.ndarray
    delays: np.ndarray  # (trains,) ps
    pulse_energy: np.ndarray  # (trains, xray frames per train) uJ
    frames: dict[int, np.ndarray]  # module -> (trains, frames, y, x) as written (before drops); {} for large runs
    cell_ids: np.ndarray  # (frames per train,)


def default_delays(ntrains: int, scan_points: int) -> np.ndarray:
    """A stepped delay scan from -1 ps in 1 ps steps, each step held for equal numbers of trains."""
    step = np.minimum(np.arange(ntrains) * scan_points // max(ntrains, 1), scan_points - 1)
    return -1.0 + step.astype(np.float64)


def pump_response(delay_ps: np.ndarray) -> np.ndarray:
    """Relative peak intensity of pumped frames: a drop at time zero, exponential recovery."""
    d = np.asarray(delay_ps, dtype=np.float64)
    return 1.0 - PUMP_DEPTH * np.where(d >= 0, np.exp(-np.clip(d, 0, None) / RECOVERY_PS), 0.0)


def _peak_image(shape: tuple[int, int], module: int) -> np.ndarray:
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    y0, x0 = h * 0.5, w * (0.2 + 0.04 * (module % 16))
    sigma = max(1.5, h / 40)
    return np.exp(-((y - y0) ** 2 + (x - x0) ** 2) / (2 * sigma**2)).astype(np.float32)


def _cell_offsets(shape: tuple[int, int], module: int, ncells: int) -> np.ndarray:
    """Per-cell, per-pixel offset (ADU): what a dark run measures."""
    rng = np.random.default_rng(1000 + module)
    base = 40.0 + 6.0 * rng.random(shape, dtype=np.float32)
    per_cell = 3.0 * np.sin(np.arange(ncells, dtype=np.float32) * 0.7)[:, None, None]
    return (base[None] + per_cell).astype(np.float32)


def _sequence_bounds(ntrains: int, per_seq: int | None, shift: int) -> list[tuple[int, int]]:
    """Train index ranges of the sequence files of one source; ``shift`` moves the breaks."""
    if not per_seq or per_seq >= ntrains:
        return [(0, ntrains)]
    edges = [0] + list(range(per_seq - shift % per_seq or per_seq, ntrains, per_seq)) + [ntrains]
    edges = sorted(set(edges))
    return list(zip(edges[:-1], edges[1:]))


#: A run's frames are kept in memory for the tests (GeneratedRun.frames) up to this size; larger runs are
#: written a few trains at a time, in memory bounded by one sequence file.
KEEP_FRAMES_BYTES = 512 * 2**20
#: The float32 frames made at once while a module's files are written.
TRAIN_BLOCK_BYTES = 64 * 2**20


def write_run(raw_root: Path, spec: RunSpec) -> GeneratedRun:
    """Write one run folder ``raw_root/rNNNN`` with one file set per module and a control file (its frames kept
    in ``GeneratedRun.frames`` up to :data:`KEEP_FRAMES_BYTES`)."""
    rng = np.random.default_rng(spec.seed + 7919 * spec.run_number)
    run_dir = raw_root / f"r{spec.run_number:04d}"
    run_dir.mkdir(parents=True, exist_ok=True)
    tids = spec.train_ids
    nt, nf = spec.ntrains, spec.frames_per_train
    pattern = spec.frame_pattern
    frame_names = [pattern[k % len(pattern)] for k in range(nf)]
    xray = np.array([not spec.dark and "dark" not in n for n in frame_names])
    pumped = np.array(["unpumped" not in n and "pumped" in n for n in frame_names])
    cell_ids = np.arange(nf, dtype=np.uint16)

    delays = spec.delays if spec.delays is not None else default_delays(nt, spec.scan_points)
    delays = np.asarray(delays, dtype=np.float64) + rng.normal(0, 1e-4, nt)
    n_xray = int(xray.sum())
    energy = rng.normal(NOMINAL_PULSE_UJ, 0.03 * NOMINAL_PULSE_UJ, (nt, n_xray))
    low = rng.random((nt, n_xray)) < spec.low_pulse_fraction
    energy[low] = LOW_PULSE_UJ
    energy = energy.astype(np.float32)

    # Peak amplitude per (train, frame): pulse energy x pump response; 0 for dark frames.
    amp = np.zeros((nt, nf), np.float32)
    amp[:, xray] = PEAK_ADU * energy / NOMINAL_PULSE_UJ
    amp[:, pumped & xray] *= pump_response(delays)[:, None].astype(np.float32)
    if spec.dark:
        amp[:] = 0

    files: list[Path] = []
    frames_written: dict[int, np.ndarray] = {}
    flags_all = np.ones(nt, np.int32)
    flags_all[list(spec.suspect_trains)] = 0
    counts_all = np.full(nt, nf, np.uint64)
    counts_all[list(spec.zero_frame_trains)] = 0

    frame_bytes = nf * int(np.prod(spec.module_shape)) * np.dtype(spec.detector_dtype).itemsize  # one train
    keep_frames = nt * frame_bytes * len(spec.modules) <= KEEP_FRAMES_BYTES
    for m in spec.modules:
        offsets = _cell_offsets(spec.module_shape, m, nf)
        peak = _peak_image(spec.module_shape, m)
        written = np.empty((nt, nf) + spec.module_shape, spec.detector_dtype) if keep_frames else None

        def trains_of(a: int, b: int, offsets=offsets, peak=peak, written=written) -> Iterator[tuple[int, np.ndarray]]:
            """(train index, its frames as written: (frames, y, x)) for trains a..b-1, made a few trains at a time:
            the noise is drawn in train order, as one draw over the whole run would be (the same numbers)."""
            step = max(1, TRAIN_BLOCK_BYTES // (4 * frame_bytes))
            for c in range(a, b, step):
                d = min(c + step, b)
                img = offsets[None] + amp[c:d, :, None, None] * peak[None, None]
                img += rng.normal(0, NOISE_ADU, img.shape).astype(np.float32)
                img = np.clip(np.rint(img), 0, np.iinfo(np.uint16).max).astype(spec.detector_dtype)
                for t in range(c, d):
                    if written is not None:
                        written[t] = img[t - c]
                    yield t, img[t - c]

        keep = np.ones(nt, bool)
        keep[list(spec.missing_trains.get(m, []))] = False
        for seq, (a, b) in enumerate(_sequence_bounds(nt, spec.trains_per_sequence, shift=3 * m + 1)):
            sel = np.nonzero(keep[a:b])[0] + a
            counts = counts_all[sel]
            n = int(counts.sum())
            data = np.empty((n,) + spec.module_shape, spec.detector_dtype)
            starts = dict(zip(sel.tolist(), np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64).tolist()))
            for t, frames in trains_of(a, b):  # every train, the dropped ones too: the noise stays in train order
                if t in starts:
                    c = int(counts_all[t])
                    data[starts[t]:starts[t] + c] = frames[:c]
            frame_tid = np.repeat(tids[sel], counts.astype(np.int64))
            frame_cell = np.concatenate([cell_ids[: int(c)] for c in counts]) if n else np.zeros(0, np.uint16)
            pulse_id = frame_cell.astype(np.uint64)
            shape_extra = (1,) if spec.trailing_axis else ()
            datasets = {
                "data": data.reshape((n,) + shape_extra + spec.module_shape),
                "trainId": frame_tid.reshape((n,) + shape_extra),
                "pulseId": pulse_id.reshape((n,) + shape_extra),
                "cellId": frame_cell.reshape((n,) + shape_extra),
            }
            rows = spec.chunk_rows or spec.module_shape[0]
            chunks = {} if not spec.chunk_frames else {
                "data": (spec.chunk_frames,) + shape_extra + (rows, spec.module_shape[1])}
            src = InstrumentSource(DSSC_SOURCE.format(module=m), "image", counts, datasets, chunks)
            path = run_dir / raw_file_name(spec.run_number, f"DSSC{m:02d}", seq)
            write_raw_file(path, train_ids=tids[sel], instrument=[src], flags=flags_all[sel],
                           format_version=spec.format_version, run_number=spec.run_number,
                           sequence=seq)
            if spec.compression:
                _recompress(path, f"INSTRUMENT/{src.name}/image/data", spec.compression)
            files.append(path)
            del data, datasets, src
        if written is not None:
            frames_written[m] = written

    ctl_keep = np.ones(nt, bool)
    ctl_keep[list(spec.control_missing_trains)] = False
    for seq, (a, b) in enumerate(_sequence_bounds(nt, spec.trains_per_sequence, shift=0)):
        sel = np.nonzero(ctl_keep[a:b])[0] + a
        xgm = np.zeros((len(sel), XGM_SLOTS), np.float32)
        xgm[:, :n_xray] = energy[sel]
        delay_src = ControlSource(DELAY_SOURCE, {DELAY_KEY: delays[sel]})
        xgm_src = InstrumentSource(XGM_SOURCE, "data", np.ones(len(sel), np.uint64),
                                   {XGM_KEY.split(".", 1)[1]: xgm})
        path = run_dir / raw_file_name(spec.run_number, CONTROL_AGGREGATOR, seq)
        write_raw_file(path, train_ids=tids[sel], control=[delay_src], instrument=[xgm_src],
                       flags=flags_all[sel], format_version=spec.format_version,
                       run_number=spec.run_number, sequence=seq)
        files.append(path)

    return GeneratedRun(spec, run_dir, files, tids, delays, energy, frames_written, cell_ids)


def _recompress(path: Path, dset_path: str, compression: str) -> None:
    """Rewrite one dataset with an HDF5 compression filter (for the reader's filtered path)."""
    import h5py

    with h5py.File(path, "r+") as f:
        ds = f[dset_path]
        data, chunks = ds[()], ds.chunks
        del f[dset_path]
        f.create_dataset(dset_path, data=data, chunks=chunks or True, compression=compression)


def beamtime_config(
    root: Path, modules: list[int], module_shape: tuple[int, int], dark_run: int | None,
    frame_pattern: list[str], min_pulse_energy_uj: float | None = 300.0,
    chunk_frames: int = 256, maxframes: int | None = None,
) -> dict:
    """The beamtime.yaml content matching runs made by :func:`write_run`."""
    return {
        "name": root.name,
        "raw_root": "raw",
        "processed_root": "processed",
        "detector": {
            "name": "SCS_DET_DSSC1M-1",
            "source": DSSC_SOURCE,
            "aggregator": "DSSC{module:02d}",
            "modules": list(modules),
            "module_shape": list(module_shape),
        },
        "scan_variable": {
            "source": DELAY_SOURCE,
            "key": DELAY_KEY,
            "units": "ps",
            "binning": {"bin_width": 0.5},
        },
        "frame_pattern": list(frame_pattern),
        "framemask": {
            "xgm_source": XGM_SOURCE,
            "xgm_key": XGM_KEY,
            "min_pulse_energy_uj": min_pulse_energy_uj,
            "exclude_trains": [],
            "exclude_frames": [],
        },
        "maxframes": maxframes,
        "dark_run": dark_run,
        "chunk_frames": chunk_frames,
        "execution": {"max_concurrent": None, "kernel_threads": 1},
    }


def write_demo_beamtime(
    root: Path, runs: int = 3, trains: int = 40, frames: int = 10, modules: int = 4,
    module_shape: tuple[int, int] = (128, 512), seed: int = 0, insitu: bool = True,
    slurm_cluster: Path | None = None, events: bool = False, variables: bool = True, first_run: int = 1,
) -> Path:
    """Write a dark run r0001 and ``runs`` pump-probe runs r0002..., with real-data quirks, and
    (numbered from ``first_run`` instead of 1: the dark run, then the pump-probe runs)
    (with ``insitu``) an in-situ TIFF sample under raw/insitu, and (with ``events``) runs of
    PAL-XFEL event files under raw/events. With ``slurm_cluster`` (the folder of
    deploy/slurm/start-local-cluster.sh) the heavy assets run as jobs on that cluster. With
    ``variables``, the example variables file (``xfel_core/demo/variables.py``) beside beamtime.yaml.

    Returns the path of the beamtime.yaml written beside the raw folder.
    """
    root = Path(root)
    raw = root / "raw"
    mods = list(range(modules))
    pattern = ["pumped", "unpumped"]
    write_run(raw, RunSpec(run_number=first_run, ntrains=max(10, trains // 4), frames_per_train=frames,
                           modules=mods, module_shape=module_shape, dark=True, seed=seed,
                           frame_pattern=pattern))
    for i in range(runs):
        nt = trains
        write_run(raw, RunSpec(
            run_number=first_run + 1 + i, ntrains=nt, frames_per_train=frames, modules=mods,
            module_shape=module_shape, seed=seed, frame_pattern=pattern,
            trains_per_sequence=max(4, nt // 2),
            # A train each module lacks, where that leaves it the coverage checks.min_module_coverage asks for.
            missing_trains={m: [(5 + 7 * m + i) % nt] for m in mods} if nt >= 20 else {},
            zero_frame_trains=[(nt // 3) % nt],
            control_missing_trains=[(nt - 2) % nt],
        ))
    config = beamtime_config(root, mods, module_shape, dark_run=first_run, frame_pattern=pattern)
    config["name"] = "demo"
    config["ignore_runs"] = []  # a new dark: dark_run becomes its number, and the old dark's goes here
    if insitu:
        from .insitu import insitu_config, write_insitu_sample

        write_insitu_sample(raw / "insitu", seed=seed)
        config["insitu"] = insitu_config("raw/insitu")
    if events:
        from .events import events_config, write_event_runs

        write_event_runs(raw / "events", "pal", runs=2, seed=seed)
        config["events"] = events_config("raw/events", "pal")
    if variables:
        import shutil

        root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(__file__).with_name("variables.py"), root / "variables.py")
        config["variables"] = "variables.py"
    if slurm_cluster is not None:
        from .slurm import local_cluster_slurm_config

        config["compute"] = "slurm"
        config["slurm"] = local_cluster_slurm_config(slurm_cluster)
    return write_config(root, config)
