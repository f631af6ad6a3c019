"""Tests of the uint8 quantization kernels against the plain-numpy definition."""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import embq._quantize as Q
from embq import _config, _kernels_quant, _kernels_store

quantize, quantize_reference = Q.quantize, Q.quantize_reference
dequantize, row_norms = Q.dequantize, Q.row_norms

F32_MAX = float(np.finfo(np.float32).max)
KERNELS = _config.available_kernels()["quantize"]


@contextlib.contextmanager
def kernel(name):
    before = _config.set_kernels({"quantize": name})
    assert _kernels_quant.selected_kernels() == {"quantize": name}
    try:
        yield
    finally:
        _config.set_kernels(before)


def assert_same(a, b):
    """Bit-for-bit equality of two QuantizedRows."""
    assert a.codes.dtype == np.uint8 and a.scales.dtype == np.float32
    assert a.zero_points.dtype == np.uint8
    assert a.codes.shape == b.codes.shape
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.scales.view(np.uint32), b.scales.view(np.uint32))
    np.testing.assert_array_equal(a.zero_points, b.zero_points)


def check_error_bound(x, q):
    """|dequantize(quantize(x)) - float32(x)| <= scale/2 plus float32 rounding slack."""
    x32 = np.asarray(x, dtype=np.float32).astype(np.float64)
    back = dequantize(q.codes, q.scales, q.zero_points).astype(np.float64)
    s = q.scales.astype(np.float64)[:, None]
    # Slack: reciprocal, product and dequantization roundings (each <= 2**-24 relative on
    # values up to 127 * scale), plus half the subnormal spacing for the tiniest rows.
    tol = s * (0.5 + 4e-5) + 2.0**-149
    assert (np.abs(back - x32) <= tol).all()


# Rows spread over the whole float32 range, including subnormal ones.
_row_exponents = st.sampled_from([0, 0, 0, -1, 3, -30, 30, -36, -37, -38, -40, -44, 37])


@st.composite
def matrices(draw, max_n=24, max_d=80):
    n = draw(st.integers(0, max_n))
    d = draw(st.integers(1, max_d))
    base = draw(hnp.arrays(np.float32, (n, d), elements=st.floats(-1, 1, width=32)))
    exps = np.array(draw(st.lists(_row_exponents, min_size=n, max_size=n)), dtype=np.float64)
    x = base.astype(np.float64) * 10.0 ** exps[:, None]
    return x.astype(np.float32)


# ------------------------------------------------------------------------------------------
# quantize == reference, bit for bit


@settings(max_examples=150, deadline=None)
@given(matrices())
def test_quantize_matches_reference_and_error_bound(x):
    ref = quantize_reference(x)
    for name in KERNELS:
        with kernel(name):
            got = quantize(x)
        assert_same(got, ref)
    check_error_bound(x, ref)
    assert (ref.zero_points == 128).all()


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40),
                  elements=st.floats(width=32, allow_nan=False, allow_infinity=False)))
def test_quantize_arbitrary_finite_float32(x):
    # Any finite float32 values at all: mixed magnitudes in a row, subnormals, +-FLT_MAX.
    ref = quantize_reference(x)
    for name in KERNELS:
        with kernel(name):
            assert_same(quantize(x), ref)
    check_error_bound(x, ref)


@settings(max_examples=60, deadline=None)
@given(matrices(max_n=12, max_d=40), st.integers(0, 2))
def test_layouts_and_float64(x, which):
    x64 = x.astype(np.float64) * 1.0000001  # values float32 cannot hold exactly
    views = [
        np.asfortranarray(x),
        x[::-1],
        x[:, ::-1],
        x64,
        np.asfortranarray(x64),
        x64[::2, ::2],
        np.repeat(x, 3, axis=1)[:, which::3],
    ]
    for v in views:
        ref = quantize_reference(v)
        contiguous = quantize_reference(np.ascontiguousarray(v, np.float32))
        np.testing.assert_array_equal(ref.codes, contiguous.codes)
        for name in KERNELS:
            with kernel(name):
                assert_same(quantize(v), ref)


@pytest.mark.parametrize("d", [1, 2, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 96, 300, 1001])
@pytest.mark.parametrize("n", [0, 1, 5])
def test_shapes(n, d):
    rng = np.random.default_rng(n * 1000 + d)
    x = rng.standard_normal((n, d)).astype(np.float32)
    ref = quantize_reference(x)
    for name in KERNELS:
        with kernel(name):
            got = quantize(x)
        assert_same(got, ref)
        assert got.codes.shape == (n, d)
        assert got.scales.shape == (n,) and got.zero_points.shape == (n,)
        assert got.codes.flags.c_contiguous
    check_error_bound(x, ref)


@pytest.mark.parametrize(
    "magnitude", [1e-30, 1e30, 3.0e38, 1e-36, 3e-37, 1e-38, 1e-40, 1e-43, 1.4e-45]
)
@pytest.mark.parametrize("d", [1, 5, 40])
def test_magnitudes(magnitude, d):
    rng = np.random.default_rng(d)
    x = (rng.uniform(-1, 1, (6, d)) * magnitude).astype(np.float32)
    x[0, 0] = np.float32(magnitude)  # at least one value of the full magnitude
    ref = quantize_reference(x)
    for name in KERNELS:
        with kernel(name):
            assert_same(quantize(x), ref)
    check_error_bound(x, ref)
    nonzero = np.abs(x).max(axis=1) > 0
    assert (ref.scales[nonzero] > 0).all()
    assert np.isfinite(dequantize(*ref)).all()


def test_subnormal_scales_are_rounded_up():
    # max|x| = 190 * 2**-149: a round-to-nearest scale would be 1 * 2**-149 (too small, codes
    # would clip at 255); the definition rounds subnormal scales up instead.
    tiny = np.float32(2.0**-149)
    x = np.array([[190 * tiny, -95 * tiny, tiny, 0]], dtype=np.float32)
    q = Q.quantize(x)
    assert q.scales[0] == np.float32(2 * tiny)
    # -47.5 -> -48, 0.5 -> 0
    np.testing.assert_array_equal(q.codes[0], [128 + 95, 128 - 48, 128 + 0, 128])
    assert_same(q, quantize_reference(x))
    smallest = quantize(np.array([[tiny]], np.float32))
    assert smallest.scales[0] == tiny and smallest.codes[0, 0] == 129
    assert dequantize(*smallest)[0, 0] == tiny


def test_round_half_to_even_and_formula():
    # max|x| = 127 gives scale 1 and inv 1, so the codes are 128 + rint(x).
    x = np.array([[127, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -127]], dtype=np.float32)
    q = Q.quantize(x)
    assert q.scales[0] == 1
    np.testing.assert_array_equal(q.codes[0], 128 + np.array([127, 0, 2, 2, 0, -2, -2, 126, -127]))
    y = np.array([[0.5, -1.0, 0.25]], dtype=np.float32)
    np.testing.assert_array_equal(quantize(y).codes, [[192, 1, 160]])


def test_codes_stay_in_1_255():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((500, 77)).astype(np.float32) * 10.0 ** rng.integers(-40, 38, (500, 1))
    q = quantize(x.astype(np.float32))
    assert q.codes.min() >= 1 and q.codes.max() <= 255
    # Every nonzero row uses a code at its full range, +-127.
    nonzero = np.abs(x).max(axis=1) > 0
    assert (np.abs(q.codes.astype(int) - 128).max(axis=1)[nonzero] == 127).all()


def test_all_zero_rows():
    x = np.zeros((4, 33), np.float32)
    x[1, 3] = -0.0
    x[2] = np.linspace(-1, 1, 33)
    with np.errstate(all="raise"):
        q = quantize(x)
        back = dequantize(*q)
    assert_same(q, quantize_reference(x))
    for r in (0, 1, 3):
        assert q.scales[r] == 0
        assert (q.codes[r] == 128).all()
        assert (back[r] == 0).all() and not np.signbit(back[r]).any()
    assert row_norms(*q)[0] == 0


def test_read_only_memmap(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 70)).astype(np.float32)
    path = tmp_path / "x.f32"
    x.tofile(path)
    mm = np.memmap(path, dtype=np.float32, mode="r", shape=x.shape)
    assert not mm.flags.writeable
    assert_same(quantize(mm), quantize_reference(x))
    mmf = np.memmap(path, dtype=np.float32, mode="r", shape=x.shape[::-1]).T  # column-major view
    assert_same(quantize(mmf), quantize_reference(np.ascontiguousarray(mmf)))


def test_other_float_inputs():
    x = np.arange(12, dtype=np.float16).reshape(3, 4)
    assert_same(quantize(x), quantize_reference(x.astype(np.float32)))
    big_endian = np.arange(12, dtype=">f4").reshape(3, 4)
    assert_same(quantize(big_endian), quantize_reference(big_endian.astype(np.float32)))
    lst = [[1.0, 2.0], [3.0, -4.0]]
    assert_same(quantize(lst), quantize_reference(np.array(lst, np.float32)))


def test_float64_rounds_to_float32_first():
    x = np.array([[1 + 2.0**-30, 1.0, 127.0 * (1 + 2.0**-25)]])
    assert_same(quantize(x), quantize(x.astype(np.float32)))
    # Values below float32's subnormal range become 0.
    q = quantize(np.array([[1e-50, -1e-50]]))
    assert q.scales[0] == 0 and (q.codes == 128).all()
    # Just above FLT_MAX but rounding to it is fine.
    q = quantize(np.array([[F32_MAX * (1 + 2.0**-26), 1.0]]))
    assert_same(q, quantize(np.array([[F32_MAX, 1.0]], np.float32)))


def test_rows_near_float32_max_dequantize_finite():
    # float32(FLT_MAX / 127) * 127 overflows, so such rows take the next scale below.
    fmax = np.float32(F32_MAX)
    x = np.array([[fmax, -fmax, fmax / 2], [fmax * np.float32(0.99999), 1, 0]], np.float32)
    q = Q.quantize(x)
    assert_same(q, quantize_reference(x))
    nearest = fmax / np.float32(127)
    with np.errstate(over="ignore"):
        assert np.isinf(nearest * np.float32(127))
    assert q.scales[0] == np.nextafter(nearest, np.float32(0))
    np.testing.assert_array_equal(q.codes[0], [255, 1, 192])
    back = dequantize(*q)
    assert np.isfinite(back).all()
    check_error_bound(x, q)


# ------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonfinite_names_first_bad_row(bad, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5000, 40)).astype(dtype)
    x[4321, 7] = bad
    x[1234, 39] = bad
    x[77, 0] = bad if bad != bad else -bad  # NaN here, or the opposite infinity
    for name in KERNELS:
        with kernel(name):
            for v in (x, np.asfortranarray(x)):
                for nt in (1, 2):
                    with pytest.raises(ValueError, match=r"^row 77 contains .* at column 0"):
                        quantize(v, n_threads=nt)
    with pytest.raises(ValueError, match=r"^row 77 "):
        quantize_reference(x)


def test_float64_beyond_float32_range():
    x = np.ones((10, 6))
    x[6, 2] = 1e39
    x[8, 1] = -1e300
    for fn in (quantize, quantize_reference):
        with pytest.raises(ValueError,
                           match=r"row 6, column 2: value 1e\+39 is outside the float32 range"):
            fn(x)


def test_rejects_bad_shapes_and_dtypes():
    with pytest.raises(ValueError, match="2-D"):
        quantize(np.ones(5, np.float32))
    with pytest.raises(ValueError, match="2-D"):
        quantize(np.ones((2, 2, 2), np.float32))
    with pytest.raises(ValueError, match="dimension 0"):
        quantize(np.ones((3, 0), np.float32))
    with pytest.raises(ValueError, match="dimension 0"):
        quantize_reference(np.ones((0, 0), np.float32))
    with pytest.raises(TypeError, match="got dtype int64"):
        quantize(np.ones((3, 2), np.int64))
    with pytest.raises(TypeError, match="complex"):
        quantize(np.ones((3, 2), np.complex64))
    with pytest.raises(ValueError, match="n_threads=0"):
        quantize(np.ones((3, 2), np.float32), n_threads=0)


def test_empty_matrix():
    q = quantize(np.empty((0, 17), np.float32))
    assert q.codes.shape == (0, 17) and q.scales.shape == (0,) and q.zero_points.shape == (0,)
    assert dequantize(*q).shape == (0, 17)
    assert row_norms(*q).shape == (0,)
    assert dequantize(*q, rows=[]).shape == (0, 17)


# ------------------------------------------------------------------------------------------
# threads and kernels agree


def test_threads_and_kernels_identical():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3000, 101)) * 10.0 ** rng.integers(-38, 30, (3000, 1))
    x = x.astype(np.float32)
    ref = quantize_reference(x)
    deq_ref = ((ref.codes.astype(np.float32) - 128) * ref.scales[:, None])
    for name in KERNELS:
        with kernel(name):
            for nt in (1, 2, -1, None):
                for v in (x, np.asfortranarray(x), x.astype(np.float64)):
                    assert_same(quantize(v, n_threads=nt), ref)
                np.testing.assert_array_equal(dequantize(*ref, n_threads=nt), deq_ref)
                np.testing.assert_array_equal(row_norms(*ref, n_threads=nt),
                                              row_norms_reference(*ref))


def test_quantize_family_variants():
    assert KERNELS[0] == "portable"
    assert set(KERNELS) <= {"portable", "avx2", "neon"}
    variants = _kernels_quant.kernel_variants()["quantize"]
    assert [name for name, runs in variants.items() if runs] == KERNELS
    # Without EMBQ_KERNELS in the environment the best variant runs.
    if "EMBQ_KERNELS" not in os.environ:
        assert _kernels_quant.selected_kernels() == {"quantize": KERNELS[-1]}
    with pytest.raises(ValueError, match="no variant 'sse9'"):
        _kernels_quant._use_kernel("quantize", "sse9")
    missing = next(k for k in ("avx2", "neon") if k not in KERNELS)  # they need different CPUs
    with pytest.raises(ValueError, match=f"no variant '{missing}'"):
        _kernels_quant._use_kernel("quantize", missing)


def test_package_level_function_survives_submodule_import():
    import embq
    import embq._quantize

    q = embq.quantize(np.ones((2, 3), np.float32))
    assert (q.codes == 255).all()


# ------------------------------------------------------------------------------------------
# dequantize


def dequantize_reference(codes, scales, zero_points):
    return (codes.astype(np.float32) - zero_points[:, None].astype(np.float32)) * scales[:, None]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 30).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.uint8, (n, 37)),
            hnp.arrays(np.float32, n, elements=st.floats(0, 2.0**100, width=32)),
            hnp.arrays(np.uint8, n),
            st.lists(st.integers(-n, n - 1), max_size=50),
        )
    )
)
def test_dequantize_rows_property(args):
    codes, scales, zps, rows = args
    full = dequantize_reference(codes, scales, zps)
    for name in KERNELS:
        with kernel(name):
            np.testing.assert_array_equal(dequantize(codes, scales, zps), full)
            got = dequantize(codes, scales, zps, rows=rows)
            assert got.shape == (len(rows), 37) and got.dtype == np.float32
            want = full[np.array(rows, dtype=np.intp)] if rows else full[:0]
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("d", [1, 7, 15, 16, 17, 33, 300])
def test_dequantize_every_variant_matches_the_definition(d):
    # Every code against every zero point, with scales whose products round, come close to
    # FLT_MAX and fall into the subnormals.
    codes = np.resize(np.arange(256, dtype=np.uint8), (256, d))
    zps = np.arange(256, dtype=np.uint8)
    scales = np.array([1.0, 0.1, 1.2345678, 1.3e36, 1e-40, 0.0, 2.0**-126, 7.0],
                      np.float32)[np.arange(256) % 8]
    full = dequantize_reference(codes, scales, zps)
    for name in KERNELS:
        with kernel(name):
            for nt in (1, 2):
                got = dequantize(codes, scales, zps, n_threads=nt)
                np.testing.assert_array_equal(got.view(np.uint32), full.view(np.uint32))


def test_store_row_reads_follow_the_quantize_variant():
    # The store dequantizes rows with the selected quantize kernel: the same bits as
    # embq.dequantize whatever the variant.
    rng = np.random.default_rng(21)
    codes = rng.integers(0, 256, (300, 37), dtype=np.uint8)
    scales = (rng.standard_normal(300) * 10.0 ** rng.integers(-40, 30, 300)).astype(np.float32)
    scales = np.abs(scales)
    zps = rng.integers(0, 256, 300, dtype=np.uint8)
    full = dequantize_reference(codes, scales, zps)
    rows = rng.integers(0, 300, 1000)
    index = _kernels_store.StoreIndex(codes, scales, zps)
    for name in KERNELS:
        with kernel(name):
            np.testing.assert_array_equal(index.gather(2, rows).view(np.uint32),
                                          full[rows].view(np.uint32))
            np.testing.assert_array_equal(index.row_vector(123).view(np.uint32),
                                          full[123].view(np.uint32))


def recon_reference(x, codes, scales, zps):
    """The sums of _kernels_quant.recon_block, computed in float64 numpy."""
    x = x.astype(np.float64)
    xh = dequantize_reference(codes, scales, zps).astype(np.float64)
    s = scales.astype(np.float64)
    diff = np.abs(x - xh)
    pos = s > 0
    xx = (x * x).sum(1)
    hh = (xh * xh).sum(1)
    rel = xx > 0
    cos = rel & (hh > 0)
    return (
        int(pos.sum()) * x.shape[1],
        (diff[pos].sum(1) / s[pos]).sum(),
        (diff[pos].max(1) / s[pos]).max() if pos.any() and x.shape[1] else 0.0,
        int(rel.sum()),
        (np.sqrt((diff[rel] ** 2).sum(1)) / np.sqrt(xx[rel])).sum(),
        int(cos.sum()),
        ((x[cos] * xh[cos]).sum(1) / (np.sqrt(xx[cos]) * np.sqrt(hh[cos]))).sum(),
    )


@settings(max_examples=60, deadline=None)
@given(matrices(max_n=20, max_d=70), st.integers(0, 2**32 - 1))
def test_recon_block_matches_float64_oracle(x, seed):
    rng = np.random.default_rng(seed)
    q = quantize_reference(x)
    codes = q.codes.copy()
    zps = q.zero_points.copy()
    if seed % 2:  # other zero points and perturbed codes: the sums must not assume 128
        zps = rng.integers(0, 256, x.shape[0], dtype=np.uint8)
        codes ^= rng.integers(0, 2, codes.shape, dtype=np.uint8)
    got = _kernels_quant.recon_block(x, codes, q.scales, zps)
    want = recon_reference(x, codes, q.scales, zps)
    for name, g, w in zip(("elems", "sum_abs", "max_abs", "rel_rows", "sum_rel", "cos_rows",
                           "sum_cos"), got, want):
        if isinstance(w, int):
            assert g == w, name
        elif name == "max_abs":
            assert g == w, name  # the same operations on the same doubles
        else:
            assert g == pytest.approx(w, rel=1e-12, abs=1e-300), name


def test_recon_block_checks_shapes():
    x = np.ones((3, 4), np.float32)
    codes = np.full((3, 4), 128, np.uint8)
    s = np.ones(3, np.float32)
    z = np.full(3, 128, np.uint8)
    with pytest.raises(ValueError, match="differs from x"):
        _kernels_quant.recon_block(x, codes[:2], s, z)
    with pytest.raises(ValueError, match="must hold 3 entries"):
        _kernels_quant.recon_block(x, codes, s[:2], z)
    empty = _kernels_quant.recon_block(x[:0], codes[:0], s[:0], z[:0])
    assert empty == (0, 0.0, 0.0, 0, 0.0, 0, 0.0)


def test_dequantize_rows_forms():
    rng = np.random.default_rng(2)
    q = quantize(rng.standard_normal((50, 19)).astype(np.float32))
    full = dequantize(*q)
    np.testing.assert_array_equal(full, dequantize_reference(*q))
    np.testing.assert_array_equal(dequantize(*q, rows=[3, -1, 3, 0]), full[[3, 49, 3, 0]])
    np.testing.assert_array_equal(dequantize(*q, rows=np.array([7, 7], np.uint16)), full[[7, 7]])
    np.testing.assert_array_equal(dequantize(*q, rows=range(10, 0, -3)), full[10:0:-3])
    np.testing.assert_array_equal(dequantize(*q, rows=slice(5, 40, 7)), full[5:40:7])
    np.testing.assert_array_equal(dequantize(*q, rows=-2), full[-2])
    np.testing.assert_array_equal(dequantize(*q, rows=np.int64(4)), full[4])
    np.testing.assert_array_equal(dequantize(q.codes, q.scales), full)
    np.testing.assert_array_equal(dequantize(q.codes, q.scales, rows=[1]), full[[1]])


def test_dequantize_out_of_range_and_bad_rows():
    q = quantize(np.ones((6, 4), np.float32))
    with pytest.raises(IndexError, match=r"row index 6 is out of range for 6 rows"):
        dequantize(*q, rows=[0, 6, 1])
    with pytest.raises(IndexError, match=r"row index -7 is out of range for 6 rows"):
        dequantize(*q, rows=[-7])
    with pytest.raises(IndexError, match=r"row index 9 is out of range for 6 rows"):
        dequantize(*q, rows=9)
    with pytest.raises(TypeError, match="flatnonzero"):
        dequantize(*q, rows=np.ones(6, bool))
    with pytest.raises(TypeError, match="integer row indices"):
        dequantize(*q, rows=[0.5])
    with pytest.raises(ValueError, match="1-D"):
        dequantize(*q, rows=[[0, 1]])


def test_dequantize_out_buffer():
    rng = np.random.default_rng(8)
    q = quantize(rng.standard_normal((20, 9)).astype(np.float32))
    buf = np.full((3, 9), np.nan, np.float32)
    res = dequantize(*q, rows=[2, 2, -3], out=buf)
    assert res is buf
    np.testing.assert_array_equal(buf, dequantize(*q)[[2, 2, 17]])
    full = np.empty((20, 9), np.float32)
    assert dequantize(*q, out=full) is full
    one = np.empty(9, np.float32)
    assert dequantize(*q, rows=5, out=one) is one
    np.testing.assert_array_equal(one, dequantize(*q)[5])
    with pytest.raises(ValueError, match=r"out must have shape \(3, 9\), got \(3, 8\)"):
        dequantize(*q, rows=[1, 2, 3], out=np.empty((3, 8), np.float32))
    with pytest.raises(TypeError, match="float32, got float64"):
        dequantize(*q, out=np.empty((20, 9)))
    with pytest.raises(ValueError, match="C-contiguous"):
        dequantize(*q, out=np.empty((9, 20), np.float32).T)
    ro = np.empty((20, 9), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        dequantize(*q, out=ro)
    with pytest.raises(TypeError, match="numpy array"):
        dequantize(*q, out=[[0.0] * 9] * 20)


def test_dequantize_validates_arrays():
    codes = np.full((4, 3), 130, np.uint8)
    s = np.ones(4, np.float32)
    with pytest.raises(TypeError, match="codes must be a uint8 array, got dtype int64"):
        dequantize(codes.astype(np.int64), s)
    with pytest.raises(ValueError, match="codes must be 2-D"):
        dequantize(codes[0], s)
    with pytest.raises(TypeError, match="scales must be a float32 array, got dtype float64"):
        dequantize(codes, s.astype(np.float64))
    with pytest.raises(ValueError, match=r"scales must have shape \(4,\) to match codes with "
                                         r"4 rows, got \(3,\)"):
        dequantize(codes, s[:3])
    with pytest.raises(TypeError, match="zero_points must be a uint8 array"):
        dequantize(codes, s, np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="zero_points must have shape"):
        row_norms(codes, s, np.zeros(5, np.uint8))
    with pytest.raises(TypeError, match="codes must be a uint8 array"):
        row_norms(codes.astype(np.float32), s)


def test_dequantize_memmap_rows(tmp_path):
    rng = np.random.default_rng(9)
    q = quantize(rng.standard_normal((400, 48)).astype(np.float32))
    path = tmp_path / "codes.u8"
    q.codes.tofile(path)
    codes = np.memmap(path, dtype=np.uint8, mode="r", shape=q.codes.shape)
    rows = [399, 0, 123, 0, -5]
    np.testing.assert_array_equal(dequantize(codes, q.scales, q.zero_points, rows=rows),
                                  dequantize(*q)[rows])
    np.testing.assert_array_equal(dequantize(codes, q.scales), dequantize(*q))


def _rss_bytes():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_dequantize_rows_reads_only_those_rows(tmp_path):
    # 2 GiB of codes in a sparse file: reading all of it would map 2 GiB of pages.
    n, d = 1 << 21, 1024
    path = tmp_path / "huge.u8"
    with open(path, "wb") as fh:
        fh.truncate(n * d)
    codes = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, d))
    scales = np.ones(n, np.float32)
    before = _rss_bytes()
    got = dequantize(codes, scales, rows=[n - 1, 0, 12345, -7])
    grown = _rss_bytes() - before
    np.testing.assert_array_equal(got, np.full((4, d), -128, np.float32))
    assert grown < 64 << 20, f"process grew by {grown >> 20} MiB for 4 rows"
    del codes


def test_dequantize_odd_code_layouts():
    rng = np.random.default_rng(12)
    q = quantize(rng.standard_normal((30, 11)).astype(np.float32))
    full = dequantize(*q)
    fortran = np.asfortranarray(q.codes)
    np.testing.assert_array_equal(dequantize(fortran, q.scales), full)
    np.testing.assert_array_equal(dequantize(fortran, q.scales, rows=[4, -1]), full[[4, -1]])
    wide = np.zeros((30, 22), np.uint8)
    wide[:, ::2] = q.codes
    np.testing.assert_array_equal(dequantize(wide[:, ::2], q.scales), full)
    np.testing.assert_array_equal(dequantize(q.codes[::-1], q.scales[::-1]), full[::-1])
    np.testing.assert_array_equal(dequantize(q.codes[::3], q.scales[::3], rows=[1, 2]),
                                  full[::3][[1, 2]])


# ------------------------------------------------------------------------------------------
# row_norms


def row_norms_reference(codes, scales, zero_points=None):
    zp = np.full(codes.shape[0], 128) if zero_points is None else zero_points
    c = codes.astype(np.int64) - zp[:, None].astype(np.int64)
    norms = scales.astype(np.float64) * np.sqrt((c * c).sum(axis=1).astype(np.float64))
    return norms.astype(np.float32)


@settings(max_examples=60, deadline=None)
@given(
    st.tuples(st.integers(0, 20), st.integers(1, 90)).flatmap(
        lambda nd: st.tuples(
            hnp.arrays(np.uint8, nd),
            hnp.arrays(np.float32, nd[0], elements=st.floats(0, 2.0**115, width=32)),
            hnp.arrays(np.uint8, nd[0]),
        )
    )
)
def test_row_norms_property(args):
    codes, scales, zps = args
    for name in KERNELS:
        with kernel(name):
            np.testing.assert_array_equal(row_norms(codes, scales, zps),
                                          row_norms_reference(codes, scales, zps))
            np.testing.assert_array_equal(row_norms(codes, scales),
                                          row_norms_reference(codes, scales))


def test_row_norms_long_rows_exact():
    # Rows long enough to overflow an int32 accumulator: the sum must stay exact.
    d = 16 * 8192 * 2 + 37
    codes = np.zeros((2, d), np.uint8)
    codes[1] = 255
    zps = np.array([255, 0], np.uint8)
    scales = np.array([1.0, 0.5], np.float32)
    for name in KERNELS:
        with kernel(name):
            got = row_norms(codes, scales, zps)
        np.testing.assert_array_equal(got, row_norms_reference(codes, scales, zps))
        assert got[0] == np.float32(np.sqrt(d * 255.0**2))


def test_row_norms_of_dequantized_rows():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((100, 50)).astype(np.float32)
    q = Q.quantize(x)
    norms = row_norms(*q)
    np.testing.assert_allclose(norms, np.linalg.norm(dequantize(*q).astype(np.float64), axis=1),
                               rtol=1e-6)
    np.testing.assert_allclose(norms, np.linalg.norm(x, axis=1), rtol=2e-2)


def test_unaligned_input():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((9, 45)).astype(np.float32)
    raw = np.empty(x.nbytes + 1, np.uint8)
    u = raw[1:].view(np.float32).reshape(x.shape)
    u[...] = x
    assert not u.flags.aligned
    for name in KERNELS:
        with kernel(name):
            assert_same(quantize(u), quantize_reference(x))


def test_drivers_check_shapes_themselves():
    # The compiled drivers refuse arguments that would make them read or write out of bounds,
    # even when called directly.
    codes = np.full((4, 3), 128, np.uint8)
    s = np.ones(4, np.float32)
    z = np.full(4, 128, np.uint8)
    with pytest.raises(IndexError, match="row index 4 is out of range for 4 rows"):
        _kernels_quant.dequantize_into(codes, np.array([0, 4], np.intp), s[:2], z[:2],
                                       np.empty((2, 3), np.float32), 1)
    with pytest.raises(ValueError, match="do not agree"):
        _kernels_quant.dequantize_into(codes, None, s, z, np.empty((4, 2), np.float32), 1)
    with pytest.raises(ValueError, match="do not fit"):
        _kernels_quant.quantize_into(np.ones((5, 3), np.float32), codes, s, 1)
    with pytest.raises(ValueError, match="do not agree"):
        _kernels_quant.row_norms_into(codes, s[:3], z, np.empty(4, np.float32), 1)


def test_recon_stats_check_their_inputs():
    from embq._recon import ReconstructionStats

    x = np.ones((3, 4), np.float32)
    q = Q.quantize(x)
    stats = ReconstructionStats()
    with pytest.raises(TypeError, match="codes must be a uint8 array, got dtype int64"):
        stats.update(x, q.codes.astype(np.int64), q.scales)
    with pytest.raises(TypeError, match="x must be a float32 or float64 array, got dtype int32"):
        stats.update(x.astype(np.int32), q.codes, q.scales)
    with pytest.raises(TypeError, match="zero_points must be a uint8 array, got dtype int64"):
        stats.update(x, q.codes, q.scales, np.full(3, 128))
    with pytest.raises(ValueError, match=r"scales must have shape \(3,\), got \(2,\)"):
        stats.update(x, q.codes, q.scales[:2])
    with pytest.raises(ValueError, match="2-D of the same shape"):
        stats.update(x, q.codes[:, :2], q.scales)
    assert stats.rows == 0  # nothing counted from a refused block
    stats.update(x.astype(np.float64)[:, ::-1], q.codes[:, ::-1], q.scales, q.zero_points)
    assert stats.rows == 3 and stats.result()["error_max_abs_over_scale"] <= 0.5 + 1e-6


def test_recon_stats_merge_equals_one_pass():
    from embq._recon import ReconstructionStats

    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 17)).astype(np.float32)
    x[5] = 0
    q = Q.quantize(x)
    whole = ReconstructionStats()
    whole.update(x, q.codes, q.scales, q.zero_points)
    parts = [ReconstructionStats() for _ in range(3)]
    for p, (a, b) in zip(parts, [(0, 100), (100, 101), (101, 300)]):
        p.update(x[a:b], q.codes[a:b], q.scales[a:b], q.zero_points[a:b])
    merged = ReconstructionStats()
    for p in parts:
        merged.merge(p)
    assert merged.rows == whole.rows == 300
    got, want = merged.result(), whole.result()
    assert got.keys() == want.keys()
    for name in want:
        assert got[name] == pytest.approx(want[name], rel=1e-12), name
    assert got["error_max_abs_over_scale"] == want["error_max_abs_over_scale"]
