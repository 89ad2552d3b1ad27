"""Runs of any European XFEL imaging detector, raw or corrected, written by EXtra-data's own mock-data writer.

EXtra-data ships the writer its tests use (``extra_data.tests.mockdata``: ``AGIPDModule``, ``LPDModule``,
``DSSCModule``, ``JUNGFRAUModule``; ``raw=False`` for the correction pipeline's output). It lays out
the files as the facility does and leaves the values zero; here they are filled with known values:
a motor scanned over the run (the control data, ``RAW-R####-DA01``), detector frames whose mean
depends on the motor position and the frame's parity (pumped / unpumped), and with corrected data
a per-pixel mask with some bad pixels. Raw files go to ``<raw_root>/r####``, corrected ones to
``<proc_root>/r####`` as ``CORR-R####-<aggregator>-S00000.h5``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..euxfel.detectors import KINDS, DetectorKind

MOTOR_SOURCE = "SA1_XTD9_MONO/MDL/PHOTON_ENERGY_MOTOR"  # any motor: its actualPosition is the scan
MOTOR_KEY = "actualPosition"
TIMESERVER = "SCS_RR_UTC/TSYS/TIMESERVER"  # the bunch pattern's control source
DELAY_STAGE = "SCS_ILH_LAS/MOTOR/DELAY_AX_800"  # the optical delay line (actualPosition, mm)
TRIGGER = "SCS_ILH_LAS/CTRL/PPL_DELAY"  # the laser's trigger delay (currentOpticalDelay, ps)
BAM = "XFEL_SDIAG_BAM/DOOCS/1932M_TL:output"  # the bunch arrival monitor (data.absoluteTD, fs)
FIRST_TRAIN = 10000


def pump_probe_table(ntrains: int, fel_pulses: int, first: int = 200, spacing: int = 4, laser_every: int = 2,
                     sase: int = 3, laser: str = "LP_SCS") -> np.ndarray:
    """(trains, 2700) uint32 bunch pattern tables as the timeserver writes them: ``fel_pulses`` X-ray pulses to
    ``sase`` from position ``first``, ``spacing`` apart, and the pump-probe laser on every ``laser_every``-th
    of them (its bits written from position 0, as the timing system does)."""
    from euxfel_bunch_pattern import DESTINATION_T4D, DESTINATION_T5D, PHOTON_LINE_DEFLECTION, PPL_BITS

    table = np.zeros((ntrains, 2700), np.uint32)
    dest = {1: DESTINATION_T4D, 2: DESTINATION_T5D, 3: DESTINATION_T4D | PHOTON_LINE_DEFLECTION}[sase]
    table[:, first:first + fel_pulses * spacing:spacing] |= np.uint32(dest)
    table[:, 0:fel_pulses * spacing:spacing * laser_every] |= np.uint32(PPL_BITS[laser])
    return table


@dataclass
class MockRun:
    """What was written: the motor per train and every module's frames and masks (for the tests' loops)."""

    run: int
    kind: DetectorKind
    corrected: bool
    modules: list[int]
    train_ids: np.ndarray  # (trains,)
    motor: np.ndarray  # (trains,) motor position per train
    files: dict[int, Path]  # module -> its file


def _jungfrau_module(cells: int):
    from extra_data.tests.mockdata.jungfrau import JUNGFRAUModule

    class Module(JUNGFRAUModule):
        """The mock JUNGFRAU module with ``cells`` memory cells per train (1 to 16, as the detector is set);
        corrected data under the correction's output channel."""

        def __init__(self, device_id: str, raw: bool):
            super().__init__(device_id, raw=raw)
            self.output_channels = ("daqOutput/data",) if raw else ("output/data",)

        @property
        def instrument_keys(self):
            return [(k, t, (cells,) + s[1:]) for k, t, s in super().instrument_keys]

    return Module


def write_mock_run(raw_root: Path, proc_root: Path, kind: str, run: int, modules: list[int], ntrains: int = 6,
                   frames_per_train: int = 4, corrected: bool = False, detector_name: str | None = None,
                   positions: tuple[float, ...] = (0.0, 1.0, 2.0), seed: int = 0,
                   with_mask: bool = True, bunch_pattern: np.ndarray | None = None,
                   laser: dict[str, np.ndarray] | None = None) -> MockRun:
    """Write one run of the detector type ``kind`` with EXtra-data's mock writer, filled with known values.

    JUNGFRAU keeps ``frames_per_train`` memory cells per train in one entry; the XTDF detectors
    ``frames_per_train`` frames. ``with_mask=False``: corrected files without their mask (bad input).
    ``bunch_pattern`` (trains, 2700): the timeserver's tables, written with the control data; ``laser``: the
    delay's sources, ``stage`` (trains,) mm, ``trigger`` (trains,) ps, ``bam`` (trains, 5400) fs."""
    from extra_data.tests.mockdata import write_file
    from extra_data.tests.mockdata.base import DeviceBase
    from extra_data.tests.mockdata.detectors import AGIPDModule, DSSCModule, LPDModule
    from extra_data.tests.mockdata.motor import Motor

    class Timeserver(DeviceBase):
        control_keys = [("bunchPatternTable", "u4", (2700,))]

    class Trigger(DeviceBase):
        control_keys = [("currentOpticalDelay", "f8", ())]

    class Bam(DeviceBase):
        output_channels = ("output/data",)
        instrument_keys = [("absoluteTD", "f4", (5400,))]

    laser = laser or {}

    k = KINDS[kind]
    name = detector_name or k.detector_name
    rng = np.random.default_rng(seed)
    raw_dir, proc_dir = raw_root / f"r{run:04d}", proc_root / f"r{run:04d}"
    raw_dir.mkdir(parents=True, exist_ok=True)
    motor = np.repeat(np.asarray(positions, float), -(-ntrains // len(positions)))[:ntrains]
    motor = motor + np.random.default_rng((seed, run)).normal(0, 1e-3, ntrains)  # the motor's jitter at rest
    control = raw_dir / f"RAW-R{run:04d}-DA01-S00000.h5"
    if not control.exists():  # (a run's corrected files are written after its raw ones)
        devices = [Motor(MOTOR_SOURCE)] + ([Timeserver(TIMESERVER)] if bunch_pattern is not None else []) \
            + ([Motor(DELAY_STAGE)] if "stage" in laser else []) + ([Trigger(TRIGGER)] if "trigger" in laser else []) \
            + ([Bam(BAM.split(":")[0])] if "bam" in laser else [])
        write_file(str(control), devices, ntrains, firsttrain=FIRST_TRAIN, format_version="1.0")
        with h5py.File(control, "r+") as f:
            f[f"CONTROL/{MOTOR_SOURCE}/{MOTOR_KEY}/value"][:ntrains] = motor
            if bunch_pattern is not None:
                f[f"CONTROL/{TIMESERVER}/bunchPatternTable/value"][:ntrains] = bunch_pattern
            for what, path in (("stage", f"CONTROL/{DELAY_STAGE}/actualPosition/value"),
                               ("trigger", f"CONTROL/{TRIGGER}/currentOpticalDelay/value"),
                               ("bam", f"INSTRUMENT/{BAM}/data/absoluteTD")):
                if what in laser:
                    f[path][:ntrains] = laser[what]
    classes = {"AGIPD1M": AGIPDModule, "AGIPD500K": AGIPDModule, "LPD1M": LPDModule, "DSSC1M": DSSCModule}
    files = {}
    for m in modules:
        source = (k.corr_source if corrected else k.raw_source).replace("{name}", name).format(module=m)
        device, channel = source.split(":")
        if k.cells_in_entry:
            dev = _jungfrau_module(frames_per_train)(device, raw=not corrected)
        else:
            dev = classes[kind](device, frames_per_train=frames_per_train, raw=not corrected, channel_name=channel)
        folder, prefix = (proc_dir, "CORR") if corrected else (raw_dir, "RAW")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{prefix}-R{run:04d}-{k.aggregator.format(module=m)}-S00000.h5"
        write_file(str(path), [dev], ntrains, firsttrain=FIRST_TRAIN, format_version="1.0")
        _fill(path, source, k, corrected, motor, rng, with_mask)
        files[m] = path
    return MockRun(run, k, corrected, list(modules), FIRST_TRAIN + np.arange(ntrains, dtype=np.uint64), motor, files)


def _fill(path: Path, source: str, k: DetectorKind, corrected: bool, motor: np.ndarray, rng, with_mask: bool) -> None:
    """Known values: frame = 100 + 10 x motor + 5 on even frames of a train (pumped) + noise (sigma 3); raw
    AGIPD's gain plane 0-2; JUNGFRAU's memory cells 0, 1, ...; corrected: float32, about 5 % of the pixels
    masked in each frame (bit 1 or bit 3 set)."""
    group = f"INSTRUMENT/{source}/{k.group}"
    with h5py.File(path, "r+") as f:
        data = f[f"{group}/{k.data_key}"]
        first = f[f"INDEX/{source}/{k.group}/first"][()]
        count = f[f"INDEX/{source}/{k.group}/count"][()]
        fpe = data.shape[1] if k.cells_in_entry else 1
        for t, (a, n) in enumerate(zip(first.astype(int), count.astype(int))):
            frames = rng.normal(0, 3, (n,) + data.shape[1:])
            signal = 100 + 10 * motor[t] + 5.0 * (np.arange(n * fpe) % 2 == 0)
            if k.cells_in_entry:
                frames += signal.reshape(n, fpe, 1, 1)
            elif frames.ndim == 4:  # raw XTDF: (frames, planes, y, x), the signal in plane 0
                frames[:, 0] += signal[:, None, None]
                if k.raw_planes == 2:
                    frames[:, 1] = rng.integers(0, 3, frames[:, 1].shape)  # AGIPD's gain stage
            else:
                frames += signal[:, None, None]
            data[a:a + n] = frames.astype(np.float32) if corrected else np.clip(np.rint(frames), 0, 65535)
        if k.cells_in_entry:
            f[f"{group}/{k.cell_key}"][...] = np.arange(fpe, dtype=np.uint8)
        mask_path = f"{group}/{k.mask_key}"
        if corrected and mask_path in f:
            mask = f[mask_path]
            for a, n in zip(first.astype(int), count.astype(int)):
                bad = rng.random((n,) + mask.shape[1:]) < 0.05
                mask[a:a + n] = np.where(bad, rng.choice(np.array([2, 8], np.uint32), bad.shape), 0)
            if not with_mask:
                del f[mask_path]


def write_demo_detector(root: Path, kind: str = "AGIPD1M", corrected: bool = True, runs: int = 2, trains: int = 12,
                        frames: int = 4, modules: list[int] | None = None, seed: int = 0) -> Path:
    """A beamtime of ``runs`` scans (r0002, r0003, ...) of one European XFEL detector, written by EXtra-data's mock
    writer, with the timeserver's bunch pattern (``frame_pattern: auto``); its beamtime.yaml (kept if present)."""
    from .config import write_config

    root = Path(root)
    k = KINDS[kind]
    modules = list(range(k.first_module, k.first_module + 2)) if modules is None else list(modules)
    # Frames: one per X-ray pulse, the laser on every second; a detector frame more than there are pulses (dark).
    table = pump_probe_table(trains, max(1, frames - 1))
    for r in range(runs):
        write_mock_run(root / "raw", root / "proc", kind, 2 + r, modules, ntrains=trains, frames_per_train=frames,
                       corrected=False, seed=seed + r, bunch_pattern=table)
        if corrected:
            write_mock_run(root / "raw", root / "proc", kind, 2 + r, modules, ntrains=trains,
                           frames_per_train=frames, corrected=True, seed=seed + r)
    path = root / "beamtime.yaml"
    if path.exists():
        return path
    return write_config(root, {
        "name": root.name, "raw_root": "raw", "processed_root": "processed", "proc_root": "proc",
        "detector": {"type": kind, "data": "corrected" if corrected else "raw", "modules": modules},
        "scan_variable": {"source": MOTOR_SOURCE, "key": MOTOR_KEY, "units": "mm", "binning": {"auto": True}},
        "frame_pattern": "auto",
        "bunch_pattern": {"source": TIMESERVER, "sase": 3, "laser": "LP_SCS"},
        "framemask": {"xgm_source": None},
        "dark_run": None,
    })
