"""Tests of stamp cutting, channel stacks and normalisations."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from lsst.meas.ml.cutouts import (
    Stamps,
    asinh_stretch,
    cut_stamps,
    multiband_stack,
    nanmedian_rows,
    variance_normalise,
)
from lsst.meas.ml.images import Box, ImageError, PixelPlanes


def ramp(height=40, width=50) -> np.ndarray:
    """Pixel value encodes its local position: 1000 * row + column."""
    j, i = np.indices((height, width))
    return (1000.0 * j + i).astype(np.float32)


def naive_stamp(plane, xy0, x, y, size, fill=0.0):
    """One stamp by an explicit pixel loop (the reference)."""
    out = np.full((size, size), fill, dtype=np.float32)
    box = Box.from_center(x, y, size)
    for r in range(size):
        for c in range(size):
            jj, ii = box.y0 + r - xy0[1], box.x0 + c - xy0[0]
            if 0 <= jj < plane.shape[0] and 0 <= ii < plane.shape[1]:
                out[r, c] = plane[jj, ii]
    return out


def test_interior_and_edge_stamps_match_reference():
    image = ramp()
    xy0 = (100, 200)
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(95, 155, 60), [100.0, 149.0, 124.5, 124.49]])
    y = np.concatenate([rng.uniform(195, 245, 60), [200.0, 239.0, 210.5, 210.5]])
    for size in (7, 8):
        st = cut_stamps([image], x, y, size, xy0=xy0, fill=-1.0)
        assert st.data.shape == (len(x), 1, size, size) and st.data.dtype == np.float32
        for k in range(len(x)):
            np.testing.assert_array_equal(st.data[k, 0], naive_stamp(image, xy0, x[k], y[k], size, fill=-1.0))
            box = Box.from_center(x[k], y[k], size)
            assert (st.x0[k], st.y0[k]) == (box.x0, box.y0)
            inside = Box(*xy0, 50, 40).contains(box)
            assert st.edge[k] == (not inside)
            assert st.missing[k].any() == (not inside)
            # Missing pixels are exactly those holding the fill value here.
            np.testing.assert_array_equal(st.missing[k], st.data[k, 0] == -1.0)
    # Integers are pixel centres; halves round up.
    st = cut_stamps([image], [110.0, 110.5, 110.49], [205.0, 205.0, 205.0], 1, xy0=xy0)
    assert st.data[:, 0, 0, 0].tolist() == [5010.0, 5011.0, 5010.0]


@pytest.mark.parametrize("chunk_bytes", [64, 1 << 20])
def test_many_stamps_on_three_planes_match_reference(monkeypatch, chunk_bytes):
    """Image, variance and mask planes with NaNs and mask bits, stamps inside and across the edge.

    A tiny chunk size makes the inside stamps go through many chunks (out of
    image order), the default puts them all in one.
    """
    import lsst.meas.ml.cutouts as cutouts

    monkeypatch.setattr(cutouts, "_CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(3)
    height, width, size, xy0, bits, fill = 45, 60, 7, (-20, 30), 0b101, -7.0
    image = rng.normal(size=(height, width)).astype(np.float32)
    image[rng.random(image.shape) < 0.01] = np.nan
    variance = rng.uniform(1, 2, size=(height, width)).astype(np.float32)
    variance[10, 40] = np.nan
    mask = rng.integers(0, 1 << 20, size=(height, width), dtype=np.int32)
    mask[rng.random(mask.shape) < 0.9] &= ~bits  # bad bits on about 10% of pixels
    n = 300
    x = rng.uniform(xy0[0] - 5, xy0[0] + width + 5, n)
    y = rng.uniform(xy0[1] - 5, xy0[1] + height + 5, n)
    x[:3], y[:3] = np.nan, [np.inf, 40.0, np.nan]
    st = cut_stamps([image, variance, mask], x, y, size, xy0=xy0, fill=fill, bad_mask_bits=bits)
    assert 50 < st.edge.sum() < n - 50  # both paths are exercised
    assert st.mask is not None and st.mask.dtype == np.int32
    for k in range(n):
        if not np.isfinite(x[k] + y[k]):
            assert st.missing[k].all() and (st.data[k, :2] == fill).all() and (st.data[k, 2] == 0).all()
            assert (st.mask[k] == 0).all() and not st.bad[k].any()
            continue
        ref = [
            naive_stamp(p.astype(np.float64), xy0, x[k], y[k], size, fill=np.inf) for p in (image, variance)
        ]
        missing = ref[0] == np.inf
        ref_mask = naive_stamp(mask.astype(np.float64), xy0, x[k], y[k], size, fill=0.0)
        np.testing.assert_array_equal(st.missing[k], missing)
        np.testing.assert_array_equal(st.data[k, 0], np.where(missing, fill, ref[0]))
        np.testing.assert_array_equal(st.data[k, 1], np.where(missing, fill, ref[1]))
        np.testing.assert_array_equal(st.mask[k], ref_mask.astype(np.int32))
        np.testing.assert_array_equal(st.data[k, 2], st.mask[k].astype(np.float32))  # 0 off the image
        bad = np.isnan(ref[0]) | np.isnan(ref[1]) | ((ref_mask.astype(np.int64) & bits) != 0)
        np.testing.assert_array_equal(st.bad[k], bad & ~missing)
    assert st.bad.any() and np.isnan(st.data[:, 0]).any()


def test_offimage_and_nonfinite_positions():
    image = ramp(10, 10)
    st = cut_stamps([image], [5, -1, 12, 3, np.nan], [5, 5, 5, 9.6, 1], 5)
    assert st.offimage.tolist() == [False, True, True, True, True]
    assert st.edge.tolist() == [False, True, True, True, True]
    assert st.missing[4].all() and (st.data[4] == 0).all()
    # A centre just off the image still gets the overlapping pixels.
    assert not st.missing[1].all() and st.missing[1][:, :2].all()


def test_exposure_planes_calibration_and_mask_bits():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(30, 30)).astype(np.float32)
    variance = np.full((30, 30), 4.0, np.float32)
    mask = np.zeros((30, 30), np.int32)
    exposure = PixelPlanes(image=image, variance=variance, mask=mask, photo_calib=2.0, xy0=(10, 20))
    mask[5, 6] = exposure.get_plane_bitmask("SAT")
    mask[7, 7] = exposure.get_plane_bitmask("DETECTED")
    mask[8, 8] = 1 << 30  # a high bit survives: masks are cut as integers
    st = cut_stamps(exposure, [17.0], [27.0], 5, bad_mask_bits=["SAT", "BAD"])
    np.testing.assert_allclose(st.data[0, 0], 2.0 * image[5:10, 5:10])
    np.testing.assert_allclose(st.data[0, 1], 16.0)
    assert st.mask is not None and st.mask.dtype == np.int32
    assert st.mask[0, 3, 3] == 1 << 30 and st.data[0, 2, 0, 1] == float(mask[5, 6])
    assert st.bad[0].sum() == 1 and st.bad[0, 0, 1]  # SAT only; DETECTED is not bad
    st = cut_stamps(exposure, [17.0], [27.0], 5, bad_mask_bits=1 << 30)
    assert st.bad[0, 3, 3] and st.bad[0].sum() == 1


def test_nan_pixels_and_all_nan_stamps():
    image = ramp(40, 40)
    image[0:15, 0:15] = np.nan
    image[30, 30] = np.nan
    variance = np.ones_like(image)
    st = cut_stamps([image, variance], [7, 30, 25], [7, 30, 10], 9)
    assert st.bad[0].all() and st.all_bad.tolist() == [True, False, False]
    assert st.bad[1].sum() == 1 and st.bad[1, 4, 4]
    assert not st.bad[2].any()
    # Channel stack of an all-NaN stamp: finite data, masks set, flag raised.
    exp = PixelPlanes(image=image, variance=variance)
    stack = multiband_stack({"r": exp}, [7, 30], [7, 30], 9, object_mask=None)
    assert np.isfinite(stack.data).all()
    assert stack.channels == ("r", "nan_mask_r")
    assert (stack.data[0, 1] == 1).all() and (stack.data[0, 0] == 0).all()
    assert stack.data[1, 1].sum() == 1 and stack.all_bad.tolist() == [True, False]


def test_zero_sources():
    st = cut_stamps([ramp(), ramp()], np.array([]), np.array([]), 11)
    assert isinstance(st, Stamps)
    assert st.data.shape == (0, 2, 11, 11) and st.data.dtype == np.float32
    assert st.missing.shape == st.bad.shape == (0, 11, 11) and st.missing.dtype == bool
    assert st.offimage.shape == (0,) and st.edge.dtype == bool
    exp = PixelPlanes(image=ramp())
    stack = multiband_stack({"g": exp, "r": exp}, [], [], 11, object_mask=3.0)
    assert stack.data.shape == (0, 5, 11, 11) and stack.data.dtype == np.float32


def test_bad_arguments():
    with pytest.raises(ImageError, match="one length"):
        cut_stamps([ramp()], [1, 2], [1], 5)
    with pytest.raises(ImageError, match="positive"):
        cut_stamps([ramp()], [1], [1], 0)
    with pytest.raises(ImageError, match="one shape"):
        cut_stamps([ramp(), ramp(10, 10)], [1], [1], 5)
    with pytest.raises(ImageError, match="bbox="):
        cut_stamps(lambda box: [ramp()], [1], [1], 5)
    with pytest.raises(ImageError, match="No exposure for band"):
        multiband_stack({"g": PixelPlanes(image=ramp())}, [1], [1], 5, bands=["g", "z"])


def test_reader_reads_only_the_needed_region():
    big = ramp(400, 500)
    full = Box(1000, 2000, 500, 400)
    calls = []

    def reader(box: Box) -> PixelPlanes:
        calls.append(box)
        assert full.contains(box)
        rows, cols = full.local_slices(box)
        return PixelPlanes(
            image=big[rows, cols], variance=np.ones(box.shape, np.float32), xy0=(box.x0, box.y0)
        )

    x = np.array([1100.0, 1130.0, 1003.0])
    y = np.array([2100.0, 2120.0, 2002.0])
    st = cut_stamps(reader, x, y, 11, bbox=full)
    assert len(calls) == 1
    assert calls[0] == Box(1000, 2000, 136, 126)  # union of the stamps, clipped to the image
    ref = cut_stamps(PixelPlanes(image=big, xy0=(1000, 2000)), x, y, 11)
    np.testing.assert_array_equal(st.data, ref.data)
    np.testing.assert_array_equal(st.missing, ref.missing)
    assert st.edge.tolist() == [False, False, True]
    # Planes from a reader work too.
    st2 = cut_stamps(lambda box: [big[full.local_slices(box)]], x, y, 11, bbox=full)
    np.testing.assert_array_equal(st2.data[:, 0], ref.data[:, 0])


def test_out_buffer():
    out = np.full((3, 1, 5, 5), 99.0, np.float32)
    st = cut_stamps([ramp()], [3, 10, 49], [3, 10, 39], 5, out=out)
    assert st.data is out
    np.testing.assert_array_equal(out, cut_stamps([ramp()], [3, 10, 49], [3, 10, 39], 5).data)
    with pytest.raises(ImageError, match="out must be"):
        cut_stamps([ramp()], [3], [3], 5, out=np.zeros((1, 1, 5, 4), np.float32))


def test_asinh_stretch():
    data = np.array([[[[0.0, 1.0], [-1.0, 100.0]]], [[[np.nan, np.inf], [2.0, 3.0]]]], np.float32)
    out = asinh_stretch(data, 2.0)
    np.testing.assert_allclose(out[0, 0], np.arcsinh(data[0, 0] / 2.0), rtol=1e-6)
    assert np.isfinite(out).all() and out[1, 0, 0, 0] == 0 and out[1, 0, 0, 1] == 0
    two = np.stack([data[0, 0], data[0, 0]])[None]
    per_channel = asinh_stretch(two, np.array([1.0, 10.0]))
    np.testing.assert_allclose(per_channel[0, 1], np.arcsinh(data[0, 0] / 10.0), rtol=1e-6)
    bad = np.zeros((1, 2, 2, 2), bool)
    bad[0, :, 1, 1] = True
    assert (asinh_stretch(two, 1.0, bad=bad, fill=-5)[0, :, 1, 1] == -5).all()
    with pytest.raises(ImageError, match="3 values for 2 channels"):
        asinh_stretch(two, np.array([1.0, 2.0, 3.0]))


def test_variance_normalise():
    rng = np.random.default_rng(3)
    image = rng.normal(size=(4, 6, 6)).astype(np.float32)
    variance = np.full((4, 6, 6), 4.0, np.float32)
    variance[1, 2, 3] = 0.0
    variance[2] = np.nan  # a stamp without variance
    out = variance_normalise(image, variance)
    np.testing.assert_allclose(out[0], image[0] / 2.0)
    assert out[1, 2, 3] == 0.0 and (out[2] == 0).all() and np.isfinite(out).all()
    variance[3] = np.linspace(1, 9, 36).reshape(6, 6)
    stamp = variance_normalise(image, variance, mode="stamp")
    np.testing.assert_allclose(stamp[3], image[3] / np.sqrt(np.median(variance[3])), rtol=1e-6)
    with pytest.raises(ImageError, match="mode"):
        variance_normalise(image, variance, mode="global")


def test_multiband_eleven_channels():
    rng = np.random.default_rng(4)
    bands = ["u", "g", "r", "i", "z"]
    exposures = {}
    for k, band in enumerate(bands):
        image = rng.normal(scale=0.5, size=(60, 60)).astype(np.float32)
        image[30, 30] += 50 * (k + 1)
        mask = np.zeros((60, 60), np.int32)
        mask[28:33, 28:33] = 1 << 5  # DETECTED
        if band == "z":
            image[0:3, 0:3] = np.nan
            mask[40, 40] = 1  # BAD
        variance = np.full((60, 60), 0.25, np.float32)
        exposures[band] = PixelPlanes(image=image, variance=variance, mask=mask, xy0=(5, 5))
    st = multiband_stack(exposures, [35, 6, 45], [35, 6, 45], 15, bands=bands)
    assert st.data.shape == (3, 11, 15, 15)
    assert st.channels == ("u", "g", "r", "i", "z", "object_mask") + tuple(f"nan_mask_{b}" for b in bands)
    assert np.isfinite(st.data).all()
    # asinh with the stamp's own noise (sqrt(0.25) = 0.5).
    np.testing.assert_allclose(st.data[0, 2, 7, 7], np.arcsinh(exposures["r"].image[30, 30] / 0.5), rtol=1e-5)
    assert st.data[0, 5].sum() == 25 and st.data[0, 5, 5:10, 5:10].all()
    assert (st.data[1, 6:10] == st.missing[1]).all() and st.missing[1].any()
    assert st.data[1, 10].sum() > st.data[1, 9].sum()  # NaN corner only in z
    assert st.data[2, 10, 7, 7] == 1 and st.data[2, 10].sum() == 1 and st.data[2, 9].sum() == 0  # BAD in z
    # Variance normalisation and a disc object mask.
    st = multiband_stack(
        exposures, [35.0], [35.0], 15, normalise="variance", object_mask=2.0, nan_masks=False
    )
    assert st.channels == ("u", "g", "r", "i", "z", "object_mask")
    np.testing.assert_allclose(st.data[0, 0, 7, 7], exposures["u"].image[30, 30] / 0.5, rtol=1e-6)
    assert st.data[0, 5].sum() == 13  # pixels within 2 of the centre
    scales = {b: 1.0 for b in bands}
    fixed = multiband_stack(exposures, [35.0], [35.0], 15, asinh_scale=scales, object_mask=None)
    np.testing.assert_allclose(fixed.data[0, 0, 7, 7], np.arcsinh(exposures["u"].image[30, 30]), rtol=1e-5)
    # A band without an exposure: an error by default, blank channels on request.
    partial = {b: e for b, e in exposures.items() if b != "g"}
    with pytest.raises(ImageError, match=r"\['g'\]"):
        multiband_stack(partial, [35.0], [35.0], 15, bands=bands)
    blank = multiband_stack(
        {**partial, "g": None}, [35.0, 6.0], [35.0, 6.0], 15, bands=bands, missing_bands="blank"
    )
    full = multiband_stack(exposures, [35.0, 6.0], [35.0, 6.0], 15, bands=bands)
    assert blank.channels == full.channels and blank.data.shape == full.data.shape
    assert (blank.data[:, 1] == 0).all() and (blank.data[:, 7] == 1).all()
    keep = [c for c in range(11) if c not in (1, 7)]
    np.testing.assert_array_equal(blank.data[:, keep], full.data[:, keep])
    with pytest.raises(ImageError, match="No exposure"):
        multiband_stack({}, [35.0], [35.0], 15, bands=bands, missing_bands="blank")
    with pytest.raises(ImageError, match="missing_bands"):
        multiband_stack(exposures, [35.0], [35.0], 15, missing_bands="skip")


def test_cutout_benchmark_runs_small():
    """The benchmark code path works (figures are printed by `meas-ml bench core`, not judged here)."""
    from lsst.meas.ml.bench import bench_cutouts

    figures = bench_cutouts(n_sources=20, image_size=128, stamp_size=11, repeats=1)
    assert figures["bytes"] == 20 * 3 * 11 * 11 * 4
    assert figures["floor_s"] > 0
    assert figures["auto_threads"] >= 1
    for key in (
        "floor_alloc_s",
        "cut_stamps_s",
        "cut_stamps_out_s",
        "cut_stamps_threads1_s",
        "cut_stamps_out_threads1_s",
        "loop_of_slices_s",
    ):
        assert figures[key] > 0
        assert figures[key.removesuffix("_s") + "_ratio"] == pytest.approx(figures[key] / figures["floor_s"])


def _threaded_case(rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Planes with NaNs and mask bits, positions inside, across and off the edge."""
    height, width = 70, 90
    image = rng.normal(size=(height, width)).astype(np.float32)
    image[rng.random(image.shape) < 0.02] = np.nan
    variance = rng.uniform(1, 2, size=(height, width)).astype(np.float32)
    variance[30, 50] = np.nan
    mask = rng.integers(0, 1 << 10, size=(height, width), dtype=np.int32)
    n = 400
    x = rng.uniform(-8, width + 8, n)
    y = rng.uniform(-8, height + 8, n)
    x[:2], y[:2] = np.nan, [3.0, np.inf]
    return [image, variance, mask], x, y


@pytest.mark.parametrize("threads", [2, 3, None])
def test_threads_give_identical_stamps(monkeypatch, threads):
    """Several threads fill every field exactly as one thread does (edge stamps, NaNs, mask bits)."""
    import os

    import torch
    from lsst.meas.ml import cutouts

    monkeypatch.setattr(cutouts, "_CHUNK_BYTES", 4 * 9 * 9 * 7)  # 7 stamps per chunk: many chunks
    monkeypatch.setattr(os, "cpu_count", lambda: 4)  # exercise the pool on any machine
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)  # what "auto" follows
    planes, x, y = _threaded_case(np.random.default_rng(11))
    kwargs = {"xy0": (5, -3), "fill": -2.0, "bad_mask_bits": 0b1001}
    one = cut_stamps(planes, x, y, 9, threads=1, **kwargs)
    many = cut_stamps(planes, x, y, 9, threads=threads, **kwargs)
    assert cutouts._POOL is not None
    assert 50 < one.edge.sum() < len(x) - 50 and one.bad.any() and np.isnan(one.data).any()
    for field in ("data", "missing", "bad", "x", "y", "offimage", "edge", "x0", "y0", "mask"):
        a, b = getattr(one, field), getattr(many, field)
        assert a.dtype == b.dtype and a.shape == b.shape, field
        assert a.tobytes() == b.tobytes(), field  # bit for bit, NaNs included
    assert one.channels == many.channels
    # The same with a preallocated output.
    out = np.full_like(one.data, 123.0)
    again = cut_stamps(planes, x, y, 9, threads=threads, out=out, **kwargs)
    assert again.data is out and out.tobytes() == one.data.tobytes()


def test_thread_count_policy(monkeypatch):
    import os

    import torch
    from lsst.meas.ml import cutouts

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # e.g. a pipetask -j N worker
    assert cutouts.thread_count(None) == 1
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    assert cutouts.thread_count(None) == 4  # capped at the CPU count
    assert cutouts.thread_count(2) == 2
    assert cutouts.thread_count(64) == 4
    # More threads than chunks: one chunk, same result.
    planes, x, y = _threaded_case(np.random.default_rng(5))
    one = cut_stamps(planes, x[:3], y[:3], 5, threads=1)
    assert cut_stamps(planes, x[:3], y[:3], 5, threads=4).data.tobytes() == one.data.tobytes()
    for bad in (0, -1, 1.5, True, "2", "two"):
        with pytest.raises(ImageError, match="threads must be"):
            cut_stamps(planes, x, y, 5, threads=bad)


def _cut_in_child(queue) -> None:
    planes, x, y = _threaded_case(np.random.default_rng(7))
    queue.put(cut_stamps(planes, x, y, 9, threads=2).data.tobytes())


def test_threads_after_fork(monkeypatch):
    """A forked process (as under ``pipetask -j N``) makes a pool of its own.

    The pool inherited through fork has no threads: using it would hang.
    """
    import multiprocessing
    import os

    from lsst.meas.ml import cutouts

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    monkeypatch.setattr(cutouts, "_CHUNK_BYTES", 4 * 9 * 9 * 7)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    planes, x, y = _threaded_case(np.random.default_rng(7))
    expected = cut_stamps(planes, x, y, 9, threads=2).data.tobytes()  # the parent's pool exists now
    assert cutouts._POOL is not None
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_cut_in_child, args=(queue,))
    child.start()
    try:
        got = queue.get(timeout=60)
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
    assert got == expected


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nanmedian_rows_equals_numpy(dtype):
    rng = np.random.default_rng(3)
    for shape in [(40, 7), (3, 5, 64), (9, 1), (12, 4096)]:
        a = rng.normal(size=shape).astype(dtype)
        a[rng.random(shape) < 0.2] = np.nan
        a.reshape(-1, shape[-1])[0] = np.nan  # an all-NaN row
        a.reshape(-1, shape[-1])[-1] = rng.normal(size=shape[-1])  # a row without NaN
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = np.nanmedian(a, axis=-1)
        got = nanmedian_rows(a)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
    assert nanmedian_rows(np.zeros((0, 5), dtype)).shape == (0,)
