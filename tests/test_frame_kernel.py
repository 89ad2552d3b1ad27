"""The frame kernel (one pass per image) against its numpy reference, a plain loop and pyFAI, on every path."""

from __future__ import annotations

import numpy as np
import pytest

from xfel_core import frame_kernel as fk
from xfel_core.azimuthal import pyfai_profile, radial_integrator
from xfel_core.config import GeometryConfig, Roi
from xfel_core.events.smalldata import mean_image, reduce_events
from xfel_core.readers.event_run import EventRun, ImageBlock

SHAPE = (40, 56)
GEOM = GeometryConfig.model_validate({"distance_m": 0.05, "pixel_size_m": [75e-6, 75e-6], "beam_centre_px": [12.0, 30.0],
                                      "energy_kev": 9.7, "npt": 30, "unit": "q_A^-1", "radial_range": [0.1, 1.2]})
ROIS = [Roi(name="centre", role="intensity", y=[10, 20], x=[20, 40]),
        Roi(name="edge", role="intensity", y=[0, 40], x=[50, 56]),  # at the image's edge
        Roi(name="overlap", role="intensity", y=[15, 30], x=[30, 45])]


def loop_reference(images, dark, mask, bin_of, nbins, rois):
    """A plain loop over images and pixels: the contract as the docstring says it."""
    k = len(images)
    out = {"total": np.zeros(k), "peak": np.zeros(k), "roi": np.zeros((k, len(rois))), "hist": np.zeros((k, nbins))}
    for i in range(k):
        img = images[i].astype(np.float64) - (0.0 if dark is None else dark.reshape(SHAPE))
        img[mask] = 0.0
        out["total"][i] = img.sum()
        img = np.maximum(img, 0.0)
        out["peak"][i] = img.max()
        for j, r in enumerate(rois):
            out["roi"][i, j] = img[r.y[0]:r.y[1], r.x[0]:r.x[1]].sum()
        for p, b in enumerate(bin_of):
            if b >= 0:
                out["hist"][i, b] += img.flat[p]
    return out


def case(dtype, k=5, seed=0):
    rng = np.random.default_rng(seed)
    images = (rng.poisson(30.0, (k,) + SHAPE) - (10 if dtype == np.float32 else 0)).astype(dtype)
    dark = rng.normal(5.0, 1.0, SHAPE).astype(np.float32)
    mask = rng.random(SHAPE) < 0.05
    return images, dark, mask


def run_kernel(fn, images, dark, mask, radial, rois):
    k, nb = len(images), len(radial.radial)
    out = {"total": np.zeros(k), "peak": np.zeros(k), "roi": np.zeros((k, len(rois))), "hist": np.full((k, nb), 7.0)}
    rects = np.array([[r.y[0], r.y[1], r.x[0], r.x[1]] for r in rois], np.int64).reshape(-1, 4)
    fn(images, None if dark is None else dark.reshape(-1), mask.reshape(-1), radial.bin_of, nb, rects,
       out["total"], out["peak"], out["roi"], out["hist"])
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
@pytest.mark.parametrize("with_dark", [True, False])
def test_compiled_and_numpy_kernels_equal_a_plain_loop(dtype, with_dark):
    images, dark, mask = case(dtype)
    dark = dark if with_dark else None
    radial = radial_integrator(GEOM, SHAPE, mask)
    ref = loop_reference(images, dark, mask, radial.bin_of, len(radial.radial), ROIS)
    for fn in (fk.reduce_numpy, fk.reduce_numba):
        out = run_kernel(fn, images, dark, mask, radial, ROIS)
        for key in ref:
            np.testing.assert_allclose(out[key], ref[key], rtol=1e-12, atol=1e-9, err_msg=f"{fn.__name__} {key}")
    assert (ref["hist"].sum(axis=1) > 0).all() and np.isfinite(radial.from_sums(ref["hist"])).sum() > 10


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_pixels_set_apart_and_the_mean_image_in_the_same_pass(dtype):
    """Pixels set apart (special) count nowhere but in their column; the images are summed into acc."""
    images, dark, mask = case(dtype, k=6, seed=1)
    radial = radial_integrator(GEOM, SHAPE, mask)
    rng = np.random.default_rng(2)
    apart = rng.choice(np.flatnonzero(~mask.ravel()), size=9, replace=False)
    special = np.full(mask.size, -1, np.int64)
    special[apart] = np.arange(len(apart))
    as_masked = mask.copy().reshape(-1)
    as_masked[apart] = True
    ref = loop_reference(images, dark.reshape(-1), as_masked.reshape(SHAPE), np.where(special >= 0, -1, radial.bin_of),
                         len(radial.radial), ROIS)
    values = images.reshape(len(images), -1).astype(np.float64)[:, apart] - dark.reshape(-1)[apart]
    for fn in (fk.reduce_numpy, fk.reduce_numba):
        k, nb = len(images), len(radial.radial)
        out = [np.zeros(k), np.zeros(k), np.zeros((k, len(ROIS))), np.zeros((k, nb))]
        cand, acc = np.zeros((k, len(apart))), np.ones(mask.size)
        rects = np.array([[r.y[0], r.y[1], r.x[0], r.x[1]] for r in ROIS], np.int64)
        fn(images, dark.reshape(-1), mask.reshape(-1), radial.bin_of, nb, rects, *out, special, cand, acc)
        for key, got in zip(("total", "peak", "roi", "hist"), out):
            np.testing.assert_allclose(got, ref[key], rtol=1e-12, atol=1e-9, err_msg=f"{fn.__name__} {key}")
        np.testing.assert_allclose(cand, values, rtol=1e-12)
        np.testing.assert_allclose(acc, 1 + (images.astype(np.float64) - dark).sum(axis=0).ravel(), rtol=1e-12)


def test_every_pixel_masked_one_image_no_roi_and_empty_bins():
    images, dark, _ = case(np.float32, k=1)
    mask = np.ones(SHAPE, bool)
    radial = radial_integrator(GEOM, SHAPE, mask)
    assert (radial.bin_of == -1).all()
    for fn in (fk.reduce_numpy, fk.reduce_numba):
        out = run_kernel(fn, images, dark, mask, radial, [])
        assert out["total"][0] == 0 and out["peak"][0] == 0 and out["roi"].shape == (1, 0)
        assert (out["hist"] == 0).all() and np.isnan(radial.from_sums(out["hist"])).all()


def test_sum_kernels_equal_numpy():
    images, dark, _ = case(np.uint16)
    for d in (dark, None):
        a, b = np.zeros(images[0].size), np.zeros(images[0].size)
        fk.sum_numpy(images, None if d is None else d.reshape(-1), a)
        fk.sum_numba(images, None if d is None else d.reshape(-1), b)
        np.testing.assert_allclose(b, a, rtol=1e-12)
        np.testing.assert_allclose(a, (images.astype(np.float64) - (0 if d is None else d)).sum(axis=0).ravel())


def in_memory_run(images: np.ndarray, path, files: int = 3, compression: str | None = None) -> EventRun:
    """A run whose images sit in ``files`` HDF5 files (uneven splits), as the layout readers describe them;
    uncompressed, the reductions read them through a memory map, compressed through h5py."""
    import h5py

    edges = np.linspace(0, len(images), files + 1).astype(int)
    edges[1] += 1  # files of different lengths: blocks split them differently
    blocks = []
    for n, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        p = path / f"part{n}.h5"
        with h5py.File(p, "w") as f:
            f.create_dataset("images", data=images[lo:hi], chunks=(1,) + SHAPE, compression=compression)
        blocks.append(ImageBlock(p, "images", np.arange(hi - lo), np.arange(lo, hi)))
    k = len(images)
    return EventRun(run="r0002", files=[b.path for b in blocks], timestamp=np.arange(k), i0=np.ones(k),
                    scan=np.zeros(k), laser=np.zeros(k, bool), timing_tool=None, blocks=blocks, shape=SHAPE)


@pytest.mark.parametrize("chunk, threads, compression", [(1, 1, None), (4, 1, "gzip"), (4, 2, None), (7, 3, "gzip")])
def test_a_run_in_blocks_and_threads_equals_the_whole_run_at_once_and_pyfai(tmp_path, chunk, threads, compression):
    images, dark, mask = case(np.float32, k=17, seed=3)
    run = in_memory_run(images, tmp_path, compression=compression)
    block, part = run.read_plan(chunk)[0]
    mapped = isinstance(run.read(block, part, np.empty((chunk,) + SHAPE, np.float32), {}, mapped=True)[1], fk.Frames)
    assert mapped == (compression is None)  # the memory map where the layout allows, h5py otherwise
    radial = radial_integrator(GEOM, SHAPE, mask)
    red = reduce_events(run, dark, mask, ROIS, radial, chunk, threads)
    ref = loop_reference(images, dark.reshape(-1), mask, radial.bin_of, len(radial.radial), ROIS)
    for key in ("total", "peak", "roi"):
        np.testing.assert_allclose(red[key], ref[key], rtol=1e-12, atol=1e-9)
    # Profiles equal pyFAI's integrate1d of the prepared image (no pixel splitting), from bin 1 (README).
    for i in (0, 16):
        prepared = np.clip(images[i] - dark, 0, None)
        prepared[mask] = 0
        _, expected = pyfai_profile(GEOM, prepared, mask, GEOM.radial_range)
        filled = np.isfinite(red["profile"][i])
        assert (expected[~filled] == 0).all()
        np.testing.assert_allclose(red["profile"][i, 1:][filled[1:]], expected[1:][filled[1:]], rtol=1e-5)
    np.testing.assert_allclose(mean_image(run, chunk, dark, threads), (images - dark).mean(axis=0), rtol=1e-6,
                               atol=1e-6)


def test_a_file_truncated_under_the_map_is_named_not_a_crash(tmp_path):
    """The map is made from the whole file; a file cut shorter afterwards is a named error before any page past its
    end is touched (that would be SIGBUS)."""
    import os

    from xfel_core.exceptions import RawFileChangedError

    images, dark, mask = case(np.float32, k=12)
    run = in_memory_run(images, tmp_path, files=1)
    files: dict = {}
    block, part = run.read_plan(4)[0]
    run.read(block, part, np.empty((4,) + SHAPE, np.float32), files, mapped=True)
    os.truncate(block.path, os.path.getsize(block.path) // 2)
    block, part = run.read_plan(4)[2]
    with pytest.raises(RawFileChangedError, match="part0.h5: the file was truncated while it was read"):
        run.read(block, part, np.empty((4,) + SHAPE, np.float32), files, mapped=True)


def test_a_failing_read_in_one_worker_names_the_file_and_stops_the_others(tmp_path):
    from xfel_core.exceptions import RunDataError

    images, dark, mask = case(np.float32, k=12)
    run = in_memory_run(images, tmp_path)
    run.blocks[1].path.write_bytes(run.blocks[1].path.read_bytes()[:2000])  # truncated
    radial = radial_integrator(GEOM, SHAPE, mask)
    with pytest.raises(RunDataError, match="part1.h5"):
        reduce_events(run, dark, mask, ROIS, radial, 2, 2)


def two_pass_reference(run, dark, mask, chunk):
    """Hot pixels from the dark, else from the run's mean image (a first pass), then the reduction with them masked."""
    from xfel_core.events import anomalies

    source = dark if dark is not None else mean_image(run, chunk)
    hot = anomalies.hot_pixels(source, 5.0)
    radial = radial_integrator(GEOM, SHAPE, mask | hot)
    return reduce_events(run, dark, mask | hot, ROIS, radial, chunk), hot


@pytest.mark.parametrize("story, reads", [
    ("hot from the start", 1),  # set apart by the first block's mean, found hot at the end
    ("bright at first only", 1),  # set apart, not hot over the run: added back
    ("hot after the first block", 2),  # not set apart: a second pass
    ("with a dark run", 1),  # hot pixels from the dark
])
@pytest.mark.parametrize("threads", [1, 2])
def test_hot_pixels_found_in_the_same_pass_equal_a_first_pass_for_them(tmp_path, story, reads, threads):
    from xfel_core.events.smalldata import reduce_run

    images, dark, mask = case(np.float32, k=20, seed=4)
    images = np.clip(images, 0, None) + 5.0
    chunk = 4
    if story == "hot from the start":
        images[:, 5, 7] += 5000.0
    elif story == "bright at first only":
        images[:chunk, 5, 7] += 150.0  # hot at half the factor in the first block, not over the run
    elif story == "hot after the first block":
        images[chunk:, 5, 7] += 5000.0
    dark = dark if story == "with a dark run" else None
    if dark is not None:
        dark[9, 9] += 5000.0
    mask[5, 7] = mask[9, 9] = False
    run = in_memory_run(images, tmp_path)
    red, hot, radial, n = reduce_run(run, dark, mask, ROIS, GEOM, chunk, threads, hot_factor=5.0)
    ref, ref_hot = two_pass_reference(run, dark, mask, chunk)
    assert n == reads
    np.testing.assert_array_equal(hot, ref_hot)
    assert hot[5, 7] == (story in ("hot from the start", "hot after the first block"))
    assert hot[9, 9] == (dark is not None)
    for key in ("total", "peak", "roi", "profile"):
        np.testing.assert_allclose(red[key], ref[key], rtol=1e-12, atol=1e-9, err_msg=key)


@pytest.mark.parametrize("shape", [(1, 1), (2, 7), (40, 56)])
def test_the_compiled_3x3_median_equals_scipys(shape):
    from xfel_core.events.anomalies import median3x3, median3x3_scipy

    rng = np.random.default_rng(shape[0])
    for image in (rng.random(shape), rng.integers(0, 3, shape).astype(np.float64), rng.poisson(40.0, shape) * 1.0):
        np.testing.assert_array_equal(median3x3(image), median3x3_scipy(image))


def test_a_radial_integrator_without_some_pixels_equals_one_made_with_them_masked():
    _, _, mask = case(np.float32)
    extra = np.zeros(SHAPE, bool)
    extra[3:9, 20:24] = True
    made = radial_integrator(GEOM, SHAPE, mask | extra)
    derived = radial_integrator(GEOM, SHAPE, mask).without(extra)
    np.testing.assert_array_equal(derived.bin_of, made.bin_of)
    np.testing.assert_allclose(derived.norm, made.norm, rtol=1e-12, atol=1e-15)
    assert (derived.matrix != made.matrix).nnz == 0


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_group_sums_equal_the_numpy_reference_and_a_direct_sum(dtype):
    """The event cube's pass: weight x max(image - dark, 0), masked pixels 0, into each image's group."""
    from xfel_core.frame_kernel import Frames, group_sums, group_sums_numpy

    rng = np.random.default_rng(5)
    k, shape, ngroups = 30, (12, 20), 4
    images = (rng.normal(20, 15, (k,) + shape).clip(0, None)).astype(dtype)
    dark = rng.normal(10, 2, shape).astype(np.float32).ravel()
    masked = rng.random(shape[0] * shape[1]) < 0.1
    weights = rng.uniform(0.5, 2.0, k)
    groups = rng.integers(-1, ngroups, k)
    flat = np.concatenate([np.zeros(7, dtype), images.ravel()])  # images in a flat array, as a memory map has them
    frames = Frames(flat, 7 + np.arange(k) * shape[0] * shape[1], shape)
    for d in (dark, None):
        got = [np.zeros((ngroups, dark.size)), np.zeros((ngroups, dark.size)), np.zeros(ngroups, np.int64)]
        ref = [np.zeros((ngroups, dark.size)), np.zeros((ngroups, dark.size)), np.zeros(ngroups, np.int64)]
        group_sums(frames, d, masked, weights, groups, *got)
        group_sums_numpy(images, d, masked, weights, groups, *ref)
        for a, b in zip(got, ref):
            np.testing.assert_allclose(a, b, rtol=1e-12)
        sel = groups == 2
        x = images[sel].reshape(sel.sum(), -1).astype(np.float64) - (d if d is not None else 0)
        x = np.where(masked, 0, np.clip(x, 0, None)) * weights[sel, None]
        np.testing.assert_allclose(got[0][2], x.sum(axis=0), rtol=1e-12)
        np.testing.assert_allclose(got[1][2], (x * x).sum(axis=0), rtol=1e-12)
        assert got[2][2] == sel.sum()
