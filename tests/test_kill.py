"""A module step killed while it writes its output leaves the previous output intact; rerunning succeeds."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time

import h5py

from xfel_core.euxfel import pipeline
from xfel_core.config import load_beamtime
from xfel_core.demo.beamtime import RunSpec, beamtime_config, write_config, write_run

STEP = "from xfel_core.euxfel import pipeline; from xfel_core.config import load_beamtime; " \
       "pipeline.make_preprocessed_module(load_beamtime({cfg!r}), 'r0002', 0)"


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_killed_module_step_keeps_the_previous_output(tmp_path):
    # 60 scan points x 2 frame types of 128 x 512 float64 sums: a 126 MB output that takes a while to write.
    spec = RunSpec(run_number=2, ntrains=120, frames_per_train=2, modules=[0], module_shape=(128, 512),
                   scan_points=60, chunk_frames=8)
    write_run(tmp_path / "raw", spec)
    path = write_config(tmp_path, beamtime_config(tmp_path, [0], (128, 512), dark_run=None,
                                                  frame_pattern=spec.frame_pattern))
    cfg = load_beamtime(path)
    for make in (pipeline.make_raw_run, pipeline.make_scan_variable, pipeline.make_framemask):
        make(cfg, "r0002")
    out = cfg.output_path("r0002", "preprocessed_module", 0)
    pipeline.make_preprocessed_module(cfg, "r0002", 0)
    before = digest(out)

    for attempt in range(5):
        proc = subprocess.Popen([sys.executable, "-c", STEP.format(cfg=str(path))])
        tmp = out.with_name(f".{out.name}.tmp-{socket.gethostname()}-{proc.pid}")
        deadline = time.monotonic() + 120
        while not tmp.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        if tmp.exists():
            proc.send_signal(signal.SIGKILL)  # mid-write: the temporary file is open
            proc.wait()
            break
        proc.wait()
    else:
        raise AssertionError("never caught the step while it was writing")

    assert proc.returncode == -signal.SIGKILL
    assert tmp.exists()  # what the killed writer left, under another name
    assert digest(out) == before  # the previous output, untouched and readable
    with h5py.File(out, "r") as f:
        assert f["sum"].shape == (60, 2, 128, 512) and f.attrs["frames_kept"] > 0

    info = pipeline.make_preprocessed_module(cfg, "r0002", 0)  # rerunning succeeds ...
    assert info["frames_kept"] > 0
    assert not tmp.exists()  # ... and clears the abandoned temporary file
    with h5py.File(out, "r") as f:
        assert f["sum"].shape == (60, 2, 128, 512)


def test_only_this_hosts_dead_writers_temporaries_are_removed(tmp_path):
    from xfel_core.outputs import remove_abandoned_temporaries

    out = tmp_path / "r0002_m00.h5"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine_dead = out.with_name(f".{out.name}.tmp-{socket.gethostname()}-{dead.pid}")
    mine_alive = out.with_name(f".{out.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    other_host = out.with_name(f".{out.name}.tmp-node042-{dead.pid}")  # a SLURM job elsewhere: cannot tell
    old_style = out.with_name(f".{out.name}.tmp-{dead.pid}")
    for p in (mine_dead, mine_alive, other_host, old_style):
        p.write_bytes(b"partial")
    assert sorted(remove_abandoned_temporaries(out)) == sorted([mine_dead, old_style])
    assert mine_alive.exists() and other_host.exists()
