"""Our raw files as EXtra-data reads them, and our reader on the quirks of real runs."""

from __future__ import annotations

import extra_data
import h5py
import numpy as np
import pytest

from conftest import MODULES, SHAPE, small_run
from xfel_core.demo.beamtime import DELAY_SOURCE, DSSC_SOURCE, XGM_SOURCE, write_run
from xfel_core.demo.euxfel_writer import InstrumentSource, write_raw_file
from xfel_core.exceptions import RunDataError
from xfel_core.readers import euxfel


def expected_frames(gen, m):
    """(train ids, frames (n, y, x)) of module m as written, trains in order."""
    spec = gen.spec
    tids, frames = [], []
    for t, tid in enumerate(gen.train_ids):
        if t in spec.missing_trains.get(m, []) or t in spec.suspect_trains or t in spec.zero_frame_trains:
            continue
        tids += [tid] * spec.frames_per_train
        frames.append(gen.frames[m][t])
    return np.array(tids, np.uint64), np.concatenate(frames)


@pytest.mark.parametrize("format_version", ["0.5", "1.0", "1.2"])
@pytest.mark.parametrize("trailing_axis", [True, False])
def test_extra_data_sees_what_we_wrote_and_our_reader_agrees(tmp_path, format_version, trailing_axis):
    suspect = [] if format_version == "0.5" else [8]  # 0.5 has no INDEX/flag
    spec = small_run(2, format_version=format_version, trailing_axis=trailing_axis, trains_per_sequence=5,
                     missing_trains={1: [2, 3]}, zero_frame_trains=[5], suspect_trains=suspect, chunk_frames=4)
    gen = write_run(tmp_path, spec)
    assert len({p.name for p in gen.files if "DSSC00" in p.name}) == 3  # split over sequence files

    run = extra_data.RunDirectory(str(gen.path), inc_suspect_trains=False)
    good = np.array([t for i, t in enumerate(gen.train_ids) if i not in suspect], np.uint64)
    np.testing.assert_array_equal(run.train_ids, good)
    assert run.all_sources == {DSSC_SOURCE.format(module=m) for m in MODULES} | {XGM_SOURCE, DELAY_SOURCE}
    counts = run[DSSC_SOURCE.format(module=1), "image.data"].data_counts(labelled=True)
    assert counts.loc[gen.train_ids[2]] == 0 and counts.loc[gen.train_ids[5]] == 0
    assert counts.loc[gen.train_ids[0]] == spec.frames_per_train

    dc = euxfel.open_run(gen.path)
    for m in MODULES:
        frames = euxfel.module_frames(dc, DSSC_SOURCE.format(module=m), m, SHAPE)
        tids, data = expected_frames(gen, m)
        np.testing.assert_array_equal(frames.train_id, tids)
        np.testing.assert_array_equal(frames.position, np.tile(np.arange(spec.frames_per_train), len(tids) // 6))
        np.testing.assert_array_equal(frames.cell_id, frames.position)
        got = np.zeros((frames.nframes, frames.npixels), frames.dtype)
        for a, b, block in euxfel.iter_frame_blocks(frames, 7, np.ones(frames.nframes, bool)):
            got[a:b] = block
        np.testing.assert_array_equal(got, data.reshape(len(data), -1))


def test_blocks_skip_unwanted_frames_and_read_compressed_data(tmp_path):
    gen = write_run(tmp_path, small_run(2, compression="gzip"))
    dc = euxfel.open_run(gen.path)
    frames = euxfel.module_frames(dc, DSSC_SOURCE.format(module=0), 0, SHAPE)
    with h5py.File(frames.segments[0].path) as f:
        assert f[frames.segments[0].dataset].compression == "gzip"
    wanted = np.zeros(frames.nframes, bool)
    wanted[[3, 4, 40]] = True
    blocks = [(a, b, block.copy()) for a, b, block in euxfel.iter_frame_blocks(frames, 16, wanted)]
    assert [(a, b) for a, b, _ in blocks] == [(3, 5), (40, 41)]  # trimmed, and block 16-31 never read
    _, data = expected_frames(gen, 0)
    np.testing.assert_array_equal(blocks[0][2], data[3:5].reshape(2, -1))


def test_out_of_order_train_in_format_0_5_is_excluded(tmp_path):
    """Format 0.5 has no INDEX/flag: EXtra-data drops a train id that breaks the order."""
    tids = np.array([100, 101, 102, 9999, 103, 104], np.uint64)
    n = 2
    data = np.arange(len(tids) * n * 4 * 8, dtype=np.uint16).reshape(len(tids) * n, 1, 4, 8)
    src = InstrumentSource(DSSC_SOURCE.format(module=0), "image", np.full(len(tids), n),
                           {"data": data, "cellId": np.tile(np.arange(n, dtype=np.uint16), len(tids))[:, None],
                            "trainId": np.repeat(tids, n)[:, None], "pulseId": np.zeros((len(tids) * n, 1), np.uint64)})
    path = tmp_path / "r0001" / "RAW-R0001-DSSC00-S00000.h5"
    write_raw_file(path, train_ids=tids, instrument=[src], format_version="0.5")
    dc = euxfel.open_run(path.parent)
    assert 9999 not in dc.train_ids
    frames = euxfel.module_frames(dc, DSSC_SOURCE.format(module=0), 0, (4, 8))
    assert 9999 not in frames.train_id and frames.nframes == 10
    got = np.concatenate([b.copy() for _, _, b in euxfel.iter_frame_blocks(frames, 3, np.ones(10, bool))])
    np.testing.assert_array_equal(got, np.delete(data.reshape(12, -1), [6, 7], axis=0))


def test_truncated_file_is_named(tmp_path):
    gen = write_run(tmp_path, small_run(2))
    victim = [p for p in gen.files if "DSSC01" in p.name][0]
    victim.write_bytes(victim.read_bytes()[:5000])
    with pytest.raises(RunDataError, match=rf"{victim.name}.*truncated"):
        euxfel.open_run(gen.path)


def test_index_pointing_past_the_data_is_named(tmp_path):
    gen = write_run(tmp_path, small_run(2))
    victim = [p for p in gen.files if "DSSC00" in p.name][0]
    with h5py.File(victim, "r+") as f:  # a file cut short by the DAQ: fewer frames than the index says
        path = f"INSTRUMENT/{DSSC_SOURCE.format(module=0)}/image/data"
        data = f[path][:-10]
        del f[path]
        f[path] = data
    dc = euxfel.open_run(gen.path)
    with pytest.raises(RunDataError, match=rf"{victim.name}: INDEX .* truncated or inconsistent"):
        euxfel.module_frames(dc, DSSC_SOURCE.format(module=0), 0, SHAPE)


def test_module_shape_mismatch_is_named(tmp_path):
    gen = write_run(tmp_path, small_run(2))
    dc = euxfel.open_run(gen.path)
    with pytest.raises(RunDataError, match=r"module_shape is \(128, 512\)"):
        euxfel.module_frames(dc, DSSC_SOURCE.format(module=0), 0, (128, 512))
