"""Search: exact int32 accumulators, top-k against a brute-force numpy oracle, most_similar."""

from __future__ import annotations

import os
import re
import sys
import threading
import time
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import embq
from embq import _config
from embq import _kernels_search as ks
from embq._quantize import dequantize, quantize, row_norms
from embq._search import (
    _search_checked,
    max_exact_dim,
    most_similar,
    most_similar_batch,
    search,
    similar_by_key,
    similar_by_vector,
)
from embq._utils import effective_n_threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOT_KERNELS = _config.available_kernels()["search_dot"]
SELECT_KERNELS = _config.available_kernels()["search_select"]


@pytest.fixture(autouse=True)
def _restore_kernels():
    yield
    _config.set_kernels()


# -- oracles ---------------------------------------------------------------------------------

def numpy_acc(codes, zp, qint):
    """(m, n) int32 accumulators by numpy's int32 matrix product."""
    z = np.full(len(codes), 128, np.int32) if zp is None else zp.astype(np.int32)
    return qint.astype(np.int32) @ (codes.astype(np.int32) - z[:, None]).T


def oracle(codes, scales, zp, norms, queries, k, metric="cosine", restrict=None):
    """Brute force: every score by the documented float32 formula, sorted by (-score, row)."""
    q = np.atleast_2d(np.asarray(queries, np.float32))
    n = len(codes) if restrict is None else min(restrict, len(codes))
    qc, qs, qz = quantize(q)
    qint = (qc.astype(np.int16) - 128).astype(np.int8)
    acc = numpy_acc(codes[:n], None if zp is None else zp[:n], qint)
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "cosine":
            qn = row_norms(qc, qs, qz)
            wq = np.where(qn > 0, qs / qn, np.float32(0)).astype(np.float32)
            wr = np.where(norms[:n] > 0, scales[:n] / norms[:n], np.float32(0)).astype(np.float32)
        else:
            wq, wr = qs.astype(np.float32), scales[:n].astype(np.float32)
        s = acc.astype(np.float32) * (wr[None, :] * wq[:, None])
    s[np.isnan(s)] = -np.inf
    rows = np.broadcast_to(np.arange(n), s.shape)
    order = np.lexsort((rows, -s), axis=-1)[:, : min(k, n)]
    return np.take_along_axis(s, order, 1), order.astype(np.int64)


def make(n, d, seed=0, dup=False, zero_rows=False, zp_random=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    if dup and n >= 6:
        x[5] = x[2]
        x[4] = x[2]
    if zero_rows and n >= 2:
        x[1] = 0
    codes, scales, zp = quantize(x)
    if zp_random:
        # any zero point is allowed by the kernels; shift codes to keep values in range
        zp = rng.integers(100, 156, n).astype(np.uint8)
        codes = np.clip(codes.astype(np.int16) - 128 + zp[:, None], 0, 255).astype(np.uint8)
    norms = row_norms(codes, scales, zp)
    return codes, scales, zp, norms


def check(codes, scales, zp, norms, queries, k, metric="cosine", restrict=None, **kw):
    got_s, got_i = search(codes, scales, queries, k, zero_points=zp, norms=norms, metric=metric,
                          restrict=restrict, **kw)
    exp_s, exp_i = oracle(codes, scales, zp, norms, queries, k, metric, restrict)
    if np.asarray(queries).ndim == 1:
        exp_s, exp_i = exp_s[0], exp_i[0]
    assert got_s.dtype == np.float32 and got_i.dtype == np.int64
    assert got_i.shape == exp_i.shape
    np.testing.assert_array_equal(got_i, exp_i)
    np.testing.assert_array_equal(got_s, exp_s)


# -- accumulators ----------------------------------------------------------------------------

@pytest.mark.parametrize("kernel", DOT_KERNELS)
@pytest.mark.parametrize("d", [1, 3, 4, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 300, 301])
def test_raw_acc_equals_numpy_int32_matmul(kernel, d):
    _config.set_kernels({"search_dot": kernel})
    rng = np.random.default_rng(d)
    for n, m in [(1, 1), (3, 2), (4, 4), (9, 5), (13, 11)]:
        codes = rng.integers(0, 256, (n, d), dtype=np.uint8)
        q = rng.integers(-127, 128, (m, d)).astype(np.int8)
        zp = rng.integers(0, 256, n).astype(np.uint8)
        np.testing.assert_array_equal(ks.raw_acc(codes, None, q), numpy_acc(codes, None, q))
        np.testing.assert_array_equal(ks.raw_acc(codes, zp, q), numpy_acc(codes, zp, q))


@pytest.mark.parametrize("kernel", DOT_KERNELS)
def test_raw_acc_extremes_at_the_int32_limit(kernel):
    _config.set_kernels({"search_dot": kernel})
    d = max_exact_dim()
    assert d == (2**31 - 1) // (128 * 127)
    codes = np.zeros((5, d), np.uint8)       # code - 128 = -128 everywhere
    codes[1] = 255                           # +127
    codes[2, ::2] = 255
    q = np.full((2, d), 127, np.int8)
    q[1] = -127
    exp = (q.astype(np.int64) @ (codes.astype(np.int64) - 128).T)
    assert np.abs(exp).max() <= 2**31 - 1
    np.testing.assert_array_equal(ks.raw_acc(codes, None, q), exp)


def test_dimension_above_int32_bound_is_refused():
    d = max_exact_dim() + 1
    codes = np.full((2, d), 128, np.uint8)
    with pytest.raises(ValueError, match="too large for exact int32"):
        search(codes, np.ones(2, np.float32), np.ones(d, np.float32), 1)
    # unusual zero points tighten the bound
    zp = np.array([0, 128], np.uint8)
    assert max_exact_dim(zp) == (2**31 - 1) // (255 * 127)


# -- top-k against the oracle -----------------------------------------------------------------

@pytest.mark.parametrize("dot", DOT_KERNELS)
@pytest.mark.parametrize("select", SELECT_KERNELS)
def test_every_kernel_variant_matches_oracle(dot, select):
    _config.set_kernels({"search_dot": dot, "search_select": select})
    for n, d, m, k in [(700, 300, 3, 10), (257, 33, 20, 7), (40, 1, 5, 50), (100, 64, 70, 3)]:
        codes, scales, zp, norms = make(n, d, seed=n + d, dup=True, zero_rows=True)
        q = np.random.default_rng(d).standard_normal((m, d)).astype(np.float32)
        for metric in ("cosine", "dot"):
            check(codes, scales, zp, norms, q, k, metric)


@pytest.mark.parametrize("dot", DOT_KERNELS)
@pytest.mark.parametrize("select", SELECT_KERNELS)
def test_single_query_scan_every_variant_matches_oracle(dot, select):
    # one query goes through the fused row scan: chunks per thread, blocks of 256 rows, groups of
    # four rows with a tail, rows prefetched up to the last one
    _config.set_kernels({"search_dot": dot, "search_select": select})
    for n, d in [(1543, 300), (1031, 64), (517, 33), (9, 130), (3, 5)]:
        codes, scales, zp, norms = make(n, d, seed=n, dup=True, zero_rows=True,
                                        zp_random=n % 2 == 1)
        q = np.random.default_rng(d).standard_normal((1, d)).astype(np.float32)
        for metric in ("cosine", "dot"):
            for threads in (1, 2):
                for restrict in (None, n - 2):
                    n_eff = n if restrict is None else restrict
                    got_s, got_i = _search_checked(
                        codes, scales, zp, norms if metric == "cosine" else None, n_eff, q, 10,
                        metric, None, threads, "rows")
                    exp_s, exp_i = oracle(codes, scales, zp, norms, q, 10, metric, restrict)
                    np.testing.assert_array_equal(got_i, exp_i)
                    np.testing.assert_array_equal(got_s, exp_s)


@settings(max_examples=40, deadline=None)
@given(m=st.integers(0, 6), d=st.integers(1, 200), seed=st.integers(0, 2**16),
       zero_query=st.booleans())
def test_prepare_queries_matches_quantize_and_row_norms(m, d, seed, zero_query):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((m, d)) * rng.uniform(1e-3, 1e3)).astype(np.float32)
    if zero_query and m:
        x[0] = 0
    qc, qs, qz = quantize(x)
    qint = (qc.astype(np.int16) - 128).astype(np.int8)
    packed, sumq, wq = ks.prepare_queries(qc, qs, True)
    np.testing.assert_array_equal(packed, ks.pack_queries(qint))
    np.testing.assert_array_equal(sumq, qint.astype(np.int64).sum(axis=1))
    qn = row_norms(qc, qs, qz)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.where(qn > 0, qs / qn, np.float32(0)).astype(np.float32)
    assert wq.dtype == np.float32
    np.testing.assert_array_equal(wq, expected)
    _, _, wq_dot = ks.prepare_queries(qc, qs, False)
    np.testing.assert_array_equal(wq_dot, qs)


QUANT_KERNELS = _config.available_kernels()["quantize"]


@pytest.mark.parametrize("kernel", QUANT_KERNELS)
@pytest.mark.parametrize("threads", [1, 2])
@settings(max_examples=25, deadline=None)
@given(m=st.integers(0, 9), d=st.integers(1, 200), seed=st.integers(0, 2**16),
       zero_query=st.booleans(), cosine=st.booleans())
def test_quantize_queries_is_quantize_then_prepare_queries(kernel, threads, m, d, seed,
                                                            zero_query, cosine):
    _config.set_kernels({"quantize": kernel})
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((m, d)) * rng.uniform(1e-3, 1e3)).astype(np.float32)
    if zero_query and m:
        x[0] = 0
    qc, qs, _ = quantize(x)
    want = ks.prepare_queries(qc, qs, cosine) + (qs,)
    got = ks.quantize_queries(x, cosine, threads)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("threads", [1, 2])
def test_quantize_queries_names_the_first_query_that_is_not_finite(threads):
    x = np.ones((40, 7), np.float32)
    assert not isinstance(ks.quantize_queries(x, True, threads), int)
    x[31, 2] = np.inf
    x[17, 6] = np.nan
    assert ks.quantize_queries(x, True, threads) == 17
    x[3, 0] = -np.inf
    assert ks.quantize_queries(x, False, threads) == 3


def test_topk_refuses_queries_not_packed_for_this_dimension():
    codes, scales, zp, norms = make(10, 40)
    qc, qs, _ = quantize(np.ones((2, 40), np.float32))
    packed, sumq, wq = ks.prepare_queries(qc, qs, True)
    with pytest.raises(ValueError, match="packed queries must have shape"):
        ks.topk(codes, scales, zp, norms, 10, np.ascontiguousarray(packed[:, :-1]), sumq, wq, 3,
                True, 1)
    with pytest.raises(ValueError, match="packed queries must have shape"):
        ks.topk(codes, scales, zp, norms, 10, packed, sumq[:1], wq, 3, True, 1)
    with pytest.raises(ValueError, match="qs must have shape"):
        ks.prepare_queries(qc, qs[:1], True)


def test_small_searches_run_on_one_thread_with_the_same_results(monkeypatch):
    search_mod = sys.modules["embq._search"]
    assert search_mod._plan_threads(2, 1000, 300, 1) == 1
    assert search_mod._plan_threads(2, 1_000_000, 300, 1) == 2
    assert search_mod._plan_threads(2, 2000, 300, 1000) == 2
    assert search_mod._plan_threads(1, 1_000_000, 300, 1000) == 1

    used = []
    real_topk = ks.topk

    def recording_topk(*args, **kwargs):
        used.append(args[10])    # n_threads
        return real_topk(*args, **kwargs)

    monkeypatch.setattr(ks, "topk", recording_topk)
    codes, scales, zp, norms = make(3000, 100, seed=5, dup=True, zero_rows=True)
    q = np.random.default_rng(6).standard_normal((5, 100)).astype(np.float32)
    for metric in ("cosine", "dot"):
        used.clear()
        auto = search(codes, scales, q, 10, zero_points=zp, norms=norms, metric=metric,
                      n_threads=2)
        assert used == [1]
        with monkeypatch.context() as mp:
            mp.setattr(search_mod, "_SERIAL_MACS", 0)
            used.clear()
            threaded = search(codes, scales, q, 10, zero_points=zp, norms=norms, metric=metric,
                              n_threads=2)
            assert used == [2]
        exp_s, exp_i = oracle(codes, scales, zp, norms, q, 10, metric)
        for got_s, got_i in (auto, threaded):
            np.testing.assert_array_equal(got_i, exp_i)
            np.testing.assert_array_equal(got_s, exp_s)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 600),
    d=st.integers(1, 150),
    m=st.integers(1, 40),
    k=st.integers(1, 40),
    metric=st.sampled_from(["cosine", "dot"]),
    restrict=st.one_of(st.none(), st.integers(0, 700)),
    threads=st.sampled_from([1, 2]),
    mode=st.sampled_from(["auto", "rows", "queries"]),
    dup=st.booleans(),
    zp_random=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_topk_matches_oracle_property(n, d, m, k, metric, restrict, threads, mode, dup,
                                      zp_random, seed):
    codes, scales, zp, norms = make(n, d, seed, dup=dup, zero_rows=True, zp_random=zp_random)
    q = np.random.default_rng(seed + 1).standard_normal((m, d)).astype(np.float32)
    n_eff = n if restrict is None else min(restrict, n)
    got_s, got_i = _search_checked(codes, scales, zp, norms if metric == "cosine" else None,
                                   n_eff, q, k, metric, None, threads, mode)
    exp_s, exp_i = oracle(codes, scales, zp, norms, q, k, metric, restrict)
    np.testing.assert_array_equal(got_i, exp_i)
    np.testing.assert_array_equal(got_s, exp_s)


def test_ties_go_to_the_lower_row():
    x = np.tile(np.arange(1, 9, dtype=np.float32), (50, 1))   # 50 identical rows
    codes, scales, _zp = quantize(x)
    s, i = search(codes, scales, x[0], 7)
    np.testing.assert_array_equal(i, np.arange(7))
    assert (s == s[0]).all()
    s, i = search(codes, scales, np.stack([x[0]] * 5), 60, n_threads=2)
    assert i.shape == (5, 50)
    np.testing.assert_array_equal(i, np.tile(np.arange(50), (5, 1)))


def test_k_larger_than_n_and_empty_store():
    codes, scales, _zp, _norms = make(5, 12)
    q = np.ones((3, 12), np.float32)
    s, i = search(codes, scales, q, 10)
    assert s.shape == i.shape == (3, 5)
    assert sorted(i[0]) == list(range(5))
    s, i = search(codes[:0], scales[:0], q, 10)
    assert s.shape == i.shape == (3, 0)
    s, i = search(codes[:0], scales[:0], q[0], 10)
    assert s.shape == (0,) and i.dtype == np.int64
    s, i = search(codes, scales, q, 4, restrict=0)
    assert s.shape == (3, 0)


def test_single_query_shape_and_batch_agree():
    codes, scales, _zp, _norms = make(300, 50, seed=3)
    q = np.random.default_rng(4).standard_normal((6, 50)).astype(np.float32)
    bs, bi = search(codes, scales, q, 8)
    for j in range(6):
        s, i = search(codes, scales, q[j], 8)
        assert s.shape == (8,)
        np.testing.assert_array_equal(i, bi[j])
        np.testing.assert_array_equal(s, bs[j])


def test_zero_rows_and_zero_query_score_zero_not_nan():
    codes, scales, _zp, norms = make(30, 20, zero_rows=True)
    s, i = search(codes, scales, np.zeros(20, np.float32), 30)
    assert not np.isnan(s).any() and (s == 0).all()
    np.testing.assert_array_equal(i, np.arange(30))
    s, i = search(codes, scales, np.ones(20, np.float32), 30, norms=norms)
    assert not np.isnan(s).any()
    assert s[list(i).index(1)] == 0


def test_norms_computed_when_omitted_and_restrict():
    codes, scales, zp, norms = make(200, 40, seed=9)
    q = np.random.default_rng(1).standard_normal((4, 40)).astype(np.float32)
    a = search(codes, scales, q, 5, zero_points=zp)
    b = search(codes, scales, q, 5, zero_points=zp, norms=norms)
    np.testing.assert_array_equal(a[1], b[1])
    check(codes, scales, zp, norms, q, 5, restrict=37)
    _, i = search(codes, scales, q, 5, restrict=37)
    assert i.max() < 37
    _s, i = search(codes, scales, q, 5, restrict=10_000)   # larger than n: whole store
    np.testing.assert_array_equal(i, b[1])


def test_read_only_memmapped_codes(tmp_path):
    codes, scales, zp, norms = make(500, 70, seed=5)
    np.save(tmp_path / "c.npy", codes)
    mm = np.load(tmp_path / "c.npy", mmap_mode="r")
    assert not mm.flags.writeable
    q = np.random.default_rng(2).standard_normal((3, 70)).astype(np.float32)
    for metric in ("cosine", "dot"):
        check(mm, scales, zp, norms, q, 9, metric)


def test_threads_one_and_two_agree():
    codes, scales, zp, norms = make(3000, 96, seed=8)
    q = np.random.default_rng(0).standard_normal((100, 96)).astype(np.float32)
    one = search(codes, scales, q, 10, n_threads=1)
    two = search(codes, scales, q, 10, n_threads=2)
    for mode in ("rows", "queries"):
        for th in (1, 2):
            got = _search_checked(codes, scales, zp, norms, len(codes), q, 10, "cosine", None,
                                  th, mode)
            np.testing.assert_array_equal(got[1], one[1])
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


def test_two_python_threads_at_once_give_the_sequential_results():
    codes, scales, _zp, norms = make(20000, 64, seed=11)
    rng = np.random.default_rng(12)
    qs = [rng.standard_normal((n, 64)).astype(np.float32) for n in (1, 40)]
    expected = [search(codes, scales, q, 10, norms=norms) for q in qs]
    results: dict[int, list] = {0: [], 1: []}
    errors = []

    def work(j):
        try:
            for _ in range(5):
                results[j].append(search(codes, scales, qs[j], 10, norms=norms))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(j,)) for j in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for j in (0, 1):
        for s, i in results[j]:
            np.testing.assert_array_equal(i, expected[j][1])
            np.testing.assert_array_equal(s, expected[j][0])


# -- rescore ---------------------------------------------------------------------------------

@pytest.mark.parametrize("metric", ["cosine", "dot"])
def test_rescore_matches_float_rerank_of_int8_candidates(metric):
    codes, scales, zp, norms = make(2000, 48, seed=21)
    q = np.random.default_rng(22).standard_normal((7, 48)).astype(np.float32)
    k, r = 5, 4
    s, i = search(codes, scales, q, k, norms=norms, metric=metric, rescore=r)
    _, cand = oracle(codes, scales, zp, norms, q, k * r, metric)
    x = dequantize(codes, scales, zp).astype(np.float64)
    for j in range(len(q)):
        rows = cand[j]
        f = x[rows] @ q[j].astype(np.float64)
        if metric == "cosine":
            f = f / (np.linalg.norm(x[rows], axis=1) * np.linalg.norm(q[j]))
        best = rows[np.lexsort((rows, -f))][:k]
        np.testing.assert_array_equal(i[j], best)
        np.testing.assert_allclose(s[j], np.sort(f)[::-1][:k], rtol=1e-6, atol=1e-6)


def test_rescore_improves_recall_on_clustered_data():
    rng = np.random.default_rng(5)
    centers = rng.standard_normal((50, 64)).astype(np.float32)
    x = (centers[rng.integers(0, 50, 5000)] + 0.3 * rng.standard_normal((5000, 64))).astype(
        np.float32)
    q = x[rng.integers(0, 5000, 50)] + 0.05 * rng.standard_normal((50, 64)).astype(np.float32)
    codes, scales, _zp = quantize(x)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    exact = np.argsort(-(q @ xn.T), axis=1)[:, :10]

    def recall(i):
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i, exact)])

    r0 = recall(search(codes, scales, q, 10)[1])
    r4 = recall(search(codes, scales, q, 10, rescore=4)[1])
    assert r0 >= 0.9
    assert r4 >= r0 and r4 >= 0.97


# -- argument checks -------------------------------------------------------------------------

def test_bad_arguments_raise_clear_errors():
    codes, scales, zp, _norms = make(10, 8)
    q = np.ones(8, np.float32)
    with pytest.raises(TypeError, match="uint8"):
        search(codes.astype(np.int16), scales, q)
    with pytest.raises(ValueError, match="2-D"):
        search(codes[0], scales, q)
    with pytest.raises(ValueError, match=r"scales must have shape \(10,\)"):
        search(codes, scales[:3], q)
    with pytest.raises(TypeError, match="zero_points must be a uint8"):
        search(codes, scales, q, zero_points=zp.astype(np.int32))
    with pytest.raises(ValueError, match="dimension 7"):
        search(codes, scales, np.ones(7, np.float32))
    with pytest.raises(ValueError, match="shape"):
        search(codes, scales, np.ones((2, 2, 8), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        search(codes, scales, np.full(8, np.nan, np.float32))
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        search(codes, scales, q, 0)
    with pytest.raises(TypeError, match="k must be an int"):
        search(codes, scales, q, 2.5)
    with pytest.raises(ValueError, match="metric"):
        search(codes, scales, q, metric="euclidean")
    with pytest.raises(ValueError, match="rescore"):
        search(codes, scales, q, rescore=0)
    with pytest.raises(ValueError, match="restrict"):
        search(codes, scales, q, restrict=-1)
    with pytest.raises(ValueError, match="n_threads=0"):
        search(codes, scales, q, n_threads=0)
    with pytest.raises(ValueError, match="unknown kernel variant 'nope'"):
        _config.set_kernels({"search_dot": "nope"})


def test_selected_kernels_reports_names():
    sel = ks.selected_kernels()
    assert set(sel) == {"search_dot", "search_select"}
    assert sel["search_dot"] in DOT_KERNELS and sel["search_select"] in SELECT_KERNELS
    assert DOT_KERNELS[0] == SELECT_KERNELS[0] == "portable"


# -- store level: most_similar against gensim on the same dequantized vectors ----------------

@pytest.fixture(scope="module")
def sample_store(tmp_path_factory):
    from embq._readers import load_embeddings

    # from this file's location, so the tests pass from any working directory
    keys, x = load_embeddings(os.path.join(ROOT, "data", "sample.w2v.txt"))
    path = tmp_path_factory.mktemp("search") / "sample.embq"
    embq.save(path, x, keys)
    store = embq.open(path)
    yield store
    store.close()


@pytest.fixture(scope="module")
def sample_kv(sample_store):
    gensim = pytest.importorskip("gensim")
    kv = gensim.models.KeyedVectors(sample_store.dim)
    kv.add_vectors(list(sample_store.index_to_key), sample_store[:])
    return kv


def _agree(ours, theirs, tol=1e-5):
    """Same neighbours in the same order, except where gensim's own scores are within tol."""
    assert len(ours) == len(theirs)
    for (ka, sa), (kb, sb) in zip(ours, theirs):
        assert abs(sa - sb) <= tol
        if ka != kb:
            assert abs(dict(theirs).get(ka, -9) - sb) <= tol  # a near tie swapped


@pytest.mark.parametrize("query", [
    dict(positive=["cat"]),
    dict(positive=["king", "woman"], negative=["man"]),
    dict(positive=["日本"], topn=3),
    dict(positive=["dog", "horse"], topn=20),
    dict(positive=["cat"], restrict_vocab=500),
    dict(positive=[("cat", 2.0), "dog"], negative=[("horse", 0.5)]),
])
def test_most_similar_agrees_with_gensim(sample_store, sample_kv, query):
    ours = most_similar(sample_store, **query)
    theirs = sample_kv.most_similar(**query)
    _agree(ours, theirs)
    assert sample_store.most_similar(**query) == ours


def test_most_similar_with_vectors_and_errors(sample_store, sample_kv):
    v = sample_store["cat"] + sample_store["dog"]
    _agree(similar_by_vector(sample_store, v, topn=5), sample_kv.similar_by_vector(v, topn=5))
    _agree(most_similar(sample_store, positive=[v], negative=["mouse"]),
           sample_kv.most_similar(positive=[v], negative=["mouse"]))
    assert most_similar(sample_store, "cat", topn=0) == []
    with pytest.raises(KeyError, match="nope"):
        most_similar(sample_store, ["nope"])
    with pytest.raises(ValueError, match="no input"):
        most_similar(sample_store)
    # int8 scores without rescoring stay close to the float ones
    raw = most_similar(sample_store, "cat", topn=5, rescore=None)
    ref = dict(sample_kv.most_similar("cat", topn=50))
    assert all(abs(s - ref[k]) < 0.02 for k, s in raw)


def test_most_similar_batch_equals_one_by_one(sample_store):
    words = ["cat", "king", "café", "東京", "cat"]
    batch = most_similar_batch(sample_store, words, topn=7)
    assert len(batch) == len(words)
    for w, res in zip(words, batch):
        assert all(k != w for k, _ in res)
        one = most_similar(sample_store, w, topn=7)
        assert [k for k, _ in res] == [k for k, _ in one]
        np.testing.assert_allclose([s for _, s in res], [s for _, s in one], rtol=1e-6)
    assert sample_store.most_similar_batch(words, topn=7) == batch
    with pytest.raises(KeyError, match="zzz"):
        most_similar_batch(sample_store, ["cat", "zzz"])


def test_store_search_matches_array_search(sample_store):
    q = sample_store[["cat", "king"]]
    a = sample_store.search(q, 6)
    b = search(np.asarray(sample_store.codes), np.asarray(sample_store.scales), q, 6,
               zero_points=np.asarray(sample_store.zero_points),
               norms=np.asarray(sample_store.norms))
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1][0, 0] == sample_store.get_index("cat")


def test_store_methods_in_a_fresh_process(sample_store, run_python):
    # The Store's delegating methods import the search module on first use.
    code = (
        "import embq, sys\n"
        f"s = embq.open({str(sample_store.path)!r})\n"
        "print(s.search(s['cat'], 2)[1][1], s.most_similar('cat', topn=1)[0][0],\n"
        "      s.most_similar_batch(['cat'], topn=1)[0][0][0],\n"
        "      s.similar_by_vector(s['cat'], topn=2)[1][0])\n"
    )
    proc = run_python("-c", code)
    assert proc.returncode == 0, proc.stderr
    expected = most_similar(sample_store, "cat", topn=1)[0][0]
    row = sample_store.get_index(expected)
    assert proc.stdout.split() == [str(row), expected, expected, expected]


# -- messages and value checks of the public in-memory path ----------------------------------

def test_codes_of_dimension_zero_are_named_as_the_problem():
    with pytest.raises(ValueError, match=r"codes have dimension 0 \(shape \(3, 0\)\)"):
        search(np.zeros((3, 0), np.uint8), np.ones(3, np.float32), np.ones(0), 1)


@pytest.mark.parametrize("value", [1e300, -1e39, np.finfo(np.float64).max])
def test_float64_query_beyond_float32_says_overflow_without_a_warning(value):
    codes, scales, zp, norms = make(20, 8)
    q = np.ones((3, 8), np.float64)
    q[2, 4] = value
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="query 2 overflows float32") as info:
            search(codes, scales, q, 3)
    assert "NaN" not in str(info.value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="query 0 contains NaN or Inf"):
            search(codes, scales, np.full(8, np.inf, np.float64), 3)
        # the largest float64 that still rounds to a finite float32 is accepted
        q[2, 4] = float(np.finfo(np.float32).max)
        check(codes, scales, zp, norms, q, 3)


@pytest.mark.parametrize("name", ["scales", "norms"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, -1.0, -0.5e-30])
def test_nan_inf_or_negative_scales_and_norms_are_refused(name, bad):
    codes, scales, _zp, norms = make(40, 8)
    arrays = {"scales": scales.copy(), "norms": norms.copy()}
    arrays[name][17] = bad
    with pytest.raises(ValueError, match=rf"{name} must be finite and >= 0, got .* at row 17"):
        search(codes, arrays["scales"], np.ones(8, np.float32), 3, norms=arrays["norms"])
    # rows beyond `restrict` are not searched, so they are not checked either
    _s, i = search(codes, arrays["scales"], np.ones(8, np.float32), 3, norms=arrays["norms"],
                  restrict=17)
    assert i.max() < 17


def test_zero_scales_and_norms_are_valid():
    codes, scales, zp, norms = make(30, 8, zero_rows=True)
    assert scales[1] == 0 and norms[1] == 0
    check(codes, scales, zp, norms, np.ones((2, 8), np.float32), 30)


def test_n_threads_bool_is_refused_on_every_search_path(sample_store):
    codes, scales, _zp, _norms = make(20, 64)
    q = np.ones(64, np.float32)
    calls = [
        lambda t: search(codes, scales, q, 3, n_threads=t),
        lambda t: search(codes[:0], scales[:0], q, 3, n_threads=t),
        lambda t: sample_store.search(q, 3, n_threads=t),
        lambda t: most_similar(sample_store, "cat", n_threads=t),
        lambda t: most_similar(sample_store, "cat", topn=0, n_threads=t),
        lambda t: most_similar_batch(sample_store, ["cat"], n_threads=t),
        lambda t: most_similar_batch(sample_store, [], n_threads=t),
        lambda t: similar_by_vector(sample_store, q, n_threads=t),
    ]
    for call in calls:
        for flag in (True, False):
            with pytest.raises(TypeError, match="n_threads must be an int or None, got bool"):
                call(flag)
        call(-1)   # counts back from all cores


# -- the raw_acc test hook and the kernels' size checks --------------------------------------

def test_raw_acc_checks_its_inputs_before_any_kernel_runs():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 256, (6, 40), dtype=np.uint8)
    q = rng.integers(-127, 128, (2, 40)).astype(np.int8)
    q[1, 7] = -128   # the AVX2 sign trick cannot negate it
    with pytest.raises(ValueError, match=r"within \[-127, 127\], got -128"):
        ks.raw_acc(codes, None, q)
    q[1, 7] = -127
    with pytest.raises(ValueError, match=r"zero_points must have shape \(6,\).*got \(2,\)"):
        ks.raw_acc(codes, np.zeros(2, np.uint8), q)
    with pytest.raises(TypeError, match="zero_points must be a uint8 array, got dtype int64"):
        ks.raw_acc(codes, np.zeros(6, np.int64), q)
    with pytest.raises(TypeError, match="codes must be a uint8 array, got dtype int16"):
        ks.raw_acc(codes.astype(np.int16), None, q)
    with pytest.raises(ValueError, match=r"codes must be 2-D"):
        ks.raw_acc(codes[0], None, q)
    with pytest.raises(TypeError, match="qint must be an int8 array, got dtype int16"):
        ks.raw_acc(codes, None, q.astype(np.int16))
    with pytest.raises(ValueError, match=r"qint must have shape \(m, 40\).*got \(2, 39\)"):
        ks.raw_acc(codes, None, q[:, :39])
    d = max_exact_dim(np.array([0], np.uint8)) + 1
    with pytest.raises(ValueError, match="too large for exact int32"):
        ks.raw_acc(np.zeros((1, d), np.uint8), np.zeros(1, np.uint8), np.zeros((1, d), np.int8))
    # strided views are copied, not misread
    wide = rng.integers(0, 256, (6, 80), dtype=np.uint8)
    np.testing.assert_array_equal(ks.raw_acc(wide[:, ::2], None, q),
                                  numpy_acc(wide[:, ::2], None, q))
    np.testing.assert_array_equal(ks.raw_acc(codes, None, np.asfortranarray(q)),
                                  numpy_acc(codes, None, q))


def test_topk_and_all_scores_refuse_sizes_that_would_read_out_of_bounds():
    codes, scales, zp, norms = make(10, 40)
    qc, qs, _ = quantize(np.ones((2, 40), np.float32))
    packed, sumq, wq = ks.prepare_queries(qc, qs, True)
    good = dict(codes=codes, scales=scales, zero_points=zp, norms=norms, n_rows=10)
    bad_cases = [
        (dict(n_rows=11), "n_rows must be within"),
        (dict(scales=scales[:9]), "scales must hold at least"),
        (dict(zero_points=zp[:9]), "zero_points must hold at least"),
        (dict(norms=norms[:9]), "cosine needs norms"),
        (dict(norms=None), "cosine needs norms"),
    ]
    for change, message in bad_cases:
        a = {**good, **change}
        args = (a["codes"], a["scales"], a["zero_points"], a["norms"], a["n_rows"], packed, sumq,
                wq)
        with pytest.raises(ValueError, match=message):
            ks.topk(*args, 3, True, 1)
        with pytest.raises(ValueError, match=message):
            ks.all_scores(*args, True, 1)
    args = (codes, scales, zp, norms, 10, packed, sumq, wq)
    with pytest.raises(ValueError, match=r"k must be within \[1, n_rows=10\], got 11"):
        ks.topk(*args, 11, True, 1)
    with pytest.raises(ValueError, match="n_threads must be >= 1, got 0"):
        ks.topk(*args, 3, True, 0)


# -- gensim compatibility: topn=None, restrict_vocab=0, batches, pass-through ----------------

@pytest.mark.parametrize("restrict_vocab", [None, 0, 500, 10**9])
def test_topn_none_returns_every_score_like_gensim(sample_store, sample_kv, restrict_vocab):
    ours = most_similar(sample_store, positive=["king", "woman"], negative=["man"], topn=None,
                        restrict_vocab=restrict_vocab)
    theirs = sample_kv.most_similar(positive=["king", "woman"], negative=["man"], topn=None,
                                    restrict_vocab=restrict_vocab)
    n = len(sample_store) if not restrict_vocab else min(restrict_vocab, len(sample_store))
    assert isinstance(ours, np.ndarray) and ours.dtype == np.float32 and ours.shape == (n,)
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(ours, theirs, atol=2e-6)
    # the input keys are not removed, and the top-n scores are the same numbers
    top = most_similar(sample_store, positive=["king", "woman"], negative=["man"], topn=10,
                       restrict_vocab=restrict_vocab)
    for key, score in top:
        np.testing.assert_allclose(ours[sample_store.get_index(key)], score, rtol=1e-6)
    assert ours[sample_store.get_index("king")] > 0


def test_topn_none_without_rescore_is_the_int8_search_bit_for_bit(sample_store):
    v = sample_store["cat"] + 0.5 * sample_store["dog"]
    got = similar_by_vector(sample_store, v, topn=None, rescore=None, restrict_vocab=1000)
    v64 = v.astype(np.float64)
    q = (v64 / np.linalg.norm(v64)).astype(np.float32)
    codes, scales = np.asarray(sample_store.codes), np.asarray(sample_store.scales)
    zp, norms = np.asarray(sample_store.zero_points), np.asarray(sample_store.norms)
    exp_s, exp_i = oracle(codes, scales, zp, norms, q, 1000, restrict=1000)
    assert got.shape == (1000,)
    np.testing.assert_array_equal(got[exp_i[0]], exp_s[0])
    # every kernel variant gives those bits, threaded or not
    for dot in DOT_KERNELS:
        _config.set_kernels({"search_dot": dot})
        for threads in (1, 2):
            np.testing.assert_array_equal(
                sample_store.similar_by_vector(v, topn=None, rescore=None, restrict_vocab=1000,
                                               n_threads=threads), got)


def test_topn_none_for_keys_batches_and_empty_inputs(sample_store):
    words = ["cat", "paris", "日本"]
    batch = most_similar_batch(sample_store, words, topn=None, rescore=None)
    assert batch.shape == (3, len(sample_store)) and batch.dtype == np.float32
    for w, row in zip(words, batch):
        # the batch searches the rows as stored, one by one they are unit-normalized first:
        # the query scales may differ in the last bit
        np.testing.assert_allclose(
            row, sample_store.similar_by_key(w, topn=None, rescore=None), rtol=1e-6)
        assert int(np.argmax(row)) == sample_store.get_index(w)   # its own row, not removed
    batch4 = sample_store.most_similar_batch(words, topn=None, restrict_vocab=100)
    assert batch4.shape == (3, 100)
    np.testing.assert_allclose(batch4[1], most_similar(sample_store, "paris", topn=None)[:100],
                               rtol=1e-6, atol=1e-7)
    assert most_similar_batch(sample_store, [], topn=None).shape == (0, len(sample_store))
    assert most_similar_batch(sample_store, []) == []


def test_restrict_vocab_zero_means_no_restriction_as_in_gensim(sample_store, sample_kv):
    ours = most_similar(sample_store, "cat", restrict_vocab=0)
    assert ours == most_similar(sample_store, "cat")
    _agree(ours, sample_kv.most_similar("cat", restrict_vocab=0))
    assert most_similar_batch(sample_store, ["cat"], restrict_vocab=0)[0] == ours
    with pytest.raises(ValueError, match="restrict_vocab must be >= 0, got -3"):
        most_similar(sample_store, "cat", restrict_vocab=-3)
    with pytest.raises(TypeError, match="restrict_vocab must be an int"):
        most_similar(sample_store, "cat", restrict_vocab=2.5)


def test_most_similar_batch_refuses_a_str_and_answers_topn_zero_with_empty_lists(sample_store):
    for one in ("cat", b"cat"):
        with pytest.raises(TypeError, match="needs a list of keys"):
            most_similar_batch(sample_store, one)
        with pytest.raises(TypeError, match="needs a list of keys"):
            sample_store.most_similar_batch(one)
    assert most_similar_batch(sample_store, ["cat", "dog"], topn=0) == [[], []]
    assert most_similar_batch(sample_store, ["cat", "dog"], topn=-2) == [[], []]
    assert most_similar(sample_store, "cat", topn=-2) == []
    with pytest.raises(TypeError, match="topn must be an int"):
        most_similar_batch(sample_store, ["cat"], topn=1.5)
    # a tuple or a numpy array of keys is a batch
    assert (most_similar_batch(sample_store, ("cat", "dog"), topn=3)
            == most_similar_batch(sample_store, np.array(["cat", "dog"]), topn=3))


def test_wrong_length_vector_mixed_with_keys_gets_the_shape_message(sample_store):
    d = sample_store.dim
    with pytest.raises(ValueError, match=rf"shape \({d},\), got shape \(5,\) \(positive\[0\]\)"):
        most_similar(sample_store, positive=[np.ones(5), "cat"])
    with pytest.raises(ValueError, match=r"got shape \(5,\) \(negative\[1\]\)"):
        most_similar(sample_store, positive=["cat"], negative=["dog", np.ones(5)])
    with pytest.raises(ValueError, match=r"got shape \(2, 64\) \(positive\[1\]\)"):
        most_similar(sample_store, positive=["cat", (np.ones((2, 64)), 1.0)])
    with pytest.raises(TypeError, match=r"float arrays, got dtype <U1 \(positive\[0\]\)"):
        most_similar(sample_store, positive=[np.array(["a"] * 64), "cat"])
    v = np.ones(d)
    v[3] = np.nan
    with pytest.raises(ValueError, match=r"positive\[1\] contains NaN or Inf"):
        most_similar(sample_store, positive=["cat", v])


def test_store_wrappers_pass_rescore_and_n_threads_through(sample_store, monkeypatch):
    search_mod = sys.modules["embq._search"]
    seen = []
    real = search_mod._search

    def spy(*args, **kwargs):
        seen.append((args[7], args[9]))   # rescore, n_threads
        return real(*args, **kwargs)

    monkeypatch.setattr(search_mod, "_search", spy)
    v = sample_store["cat"]
    calls = [
        lambda **kw: sample_store.most_similar("cat", topn=3, **kw),
        lambda **kw: sample_store.most_similar_batch(["cat"], topn=3, **kw),
        lambda **kw: sample_store.similar_by_vector(v, topn=3, **kw),
        lambda **kw: sample_store.similar_by_key("cat", topn=3, **kw),
        lambda **kw: sample_store.similar_by_word("cat", topn=3, **kw),
        lambda **kw: sample_store.search(v, 3, **kw),
    ]
    for call in calls:
        seen.clear()
        call(rescore=2, n_threads=1)
        assert seen == [(2, 1)]
        seen.clear()
        call(rescore=None, n_threads=2)
        assert seen[0][0] is None and seen[0][1] == 2
    # the default of the gensim-style wrappers is rescore=4, as in embq._search
    seen.clear()
    sample_store.most_similar("cat", topn=3)
    assert seen == [(4, effective_n_threads(None))]
    int8 = sample_store.most_similar("cat", topn=5, rescore=None)
    assert int8 == most_similar(sample_store, "cat", topn=5, rescore=None)
    assert int8 != sample_store.most_similar("cat", topn=5)


# -- query layouts, dtypes and thread counts -------------------------------------------------

@pytest.mark.parametrize("metric", ["cosine", "dot"])
def test_float64_integer_strided_and_fortran_queries_match_their_float32_copy(metric):
    codes, scales, zp, norms = make(500, 40, seed=31, zp_random=True)
    rng = np.random.default_rng(32)
    wide = rng.standard_normal((9, 80))
    base = np.ascontiguousarray(wide[:, ::2], dtype=np.float32)
    expected = search(codes, scales, base, 7, zero_points=zp, norms=norms, metric=metric)
    layouts = {
        "float64": base.astype(np.float64),
        "strided": wide.astype(np.float32)[:, ::2],
        "fortran": np.asfortranarray(base),
        "transposed view": np.ascontiguousarray(base.T).T,
        "float64 strided rows": base.astype(np.float64)[::-1][::-1],
        "float16": base.astype(np.float16),
    }
    for name, q in layouts.items():
        if name == "float16":
            # a float16 query is a different vector; it must match its own float32 copy
            check(codes, scales, zp, norms, q, 7, metric)
            continue
        assert name == "float64" or not q.flags.c_contiguous or q.dtype != np.float32
        got = search(codes, scales, q, 7, zero_points=zp, norms=norms, metric=metric)
        np.testing.assert_array_equal(got[1], expected[1], err_msg=name)
        np.testing.assert_array_equal(got[0], expected[0], err_msg=name)
    check(codes, scales, zp, norms, base.astype(np.float64), 7, metric)
    ints = rng.integers(-1000, 1000, (4, 40))
    check(codes, scales, zp, norms, ints, 7, metric)
    # one strided vector (d,) too
    _s, i = search(codes, scales, wide[0].astype(np.float32)[::2], 7, zero_points=zp,
                  norms=norms, metric=metric)
    np.testing.assert_array_equal(i, expected[1][0])


def test_negative_n_threads_count_back_from_all_cores_and_never_below_one():
    codes, scales, _zp, norms = make(3000, 64, seed=41)
    q = np.random.default_rng(42).standard_normal((30, 64)).astype(np.float32)
    expected = search(codes, scales, q, 10, norms=norms, n_threads=1)
    assert effective_n_threads(-1) == effective_n_threads(None)
    assert effective_n_threads(-10**6) == 1
    for t in (-1, -2, -10**6):
        got = search(codes, scales, q, 10, norms=norms, n_threads=t)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_array_equal(got[0], expected[0])
    with pytest.raises(TypeError, match="n_threads must be an int or None"):
        search(codes, scales, q, 10, n_threads=1.5)


# -- the GIL is released while a kernel runs ----------------------------------------------------

@pytest.mark.parametrize("entry", ["topk rows", "topk queries", "all_scores"])
def test_kernels_release_the_gil(entry):
    # With a switch interval of 1000 s the interpreter never takes the GIL away from the main
    # thread, so the counter thread can run only while the main thread has released it:
    # inside a kernel that holds the GIL the count cannot move.
    rng = np.random.default_rng(7)
    n, d = 50_000, 256
    # about 0.1 s of int8 work on one core (all_scores less: its (m, n) output limits m)
    m = 64 if entry == "all_scores" else 1024
    codes = rng.integers(1, 256, (n, d), dtype=np.uint8)
    scales = np.ones(n, np.float32)
    norms = row_norms(codes, scales)
    qc, qs, _ = quantize(rng.standard_normal((m, d)).astype(np.float32))
    qp, sumq, wq = ks.prepare_queries(qc, qs, True)
    if entry == "all_scores":
        def run():
            ks.all_scores(codes, scales, None, norms, n, qp, sumq, wq, True, 1)
    else:
        mode = entry.split()[1]

        def run():
            ks.topk(codes, scales, None, norms, n, qp, sumq, wq, 10, True, 1, mode)

    count = 0
    stop = False
    started = threading.Event()

    def counter():
        nonlocal count
        started.set()
        while not stop:
            count += 1
            time.sleep(0)   # lets the main thread take the GIL back when the kernel returns

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e3)
    thread = threading.Thread(target=counter)
    try:
        thread.start()
        started.wait()
        before = count
        run()
        during = count - before
    finally:
        stop = True
        thread.join()
        sys.setswitchinterval(old)
    assert during > 0


def test_store_wrappers_refuse_unknown_options_by_name(sample_store):
    with pytest.raises(TypeError, match="rescor"):
        sample_store.most_similar("cat", rescor=2)
    with pytest.raises(TypeError, match="threads"):
        sample_store.similar_by_key("cat", threads=2)


# -- query values the gensim-style helpers refuse, and queries of any finite size ------------

_NOT_KEYS = [
    (b"cat", "bytes b'cat'"),
    (bytearray(b"cat"), "bytearray bytearray(b'cat')"),
    (memoryview(b"cat"), "memoryview <memory"),
    (True, "bool True"),
    (np.bool_(False), "bool "),  # repr np.False_ or False, by numpy version
    (3.5, "float 3.5"),
    ({"cat": 1}, "dict {'cat': 1}"),
]


@pytest.mark.parametrize("bad, shown", _NOT_KEYS)
def test_most_similar_refuses_what_is_neither_key_nor_vector(sample_store, monkeypatch, bad,
                                                              shown):
    """b"cat" used to be read as the rows 99, 97, 116 and answered; every value that is not
    a key, a vector or an (item, weight) pair is a TypeError naming it, before any search."""
    shown = re.escape(shown)
    search_mod = sys.modules["embq._search"]
    monkeypatch.setattr(search_mod, "search_store", lambda *a, **k: pytest.fail("searched"))
    with pytest.raises(TypeError, match=rf"^positive must be a key .* got {shown}"):
        most_similar(sample_store, bad)
    with pytest.raises(TypeError, match=rf"^negative must be a key .* got {shown}"):
        most_similar(sample_store, "cat", negative=bad)
    # inside a list, named by position, also in a pair and for topn=0 (nothing searched)
    for item in (bad, (bad, 1.0)):
        with pytest.raises(TypeError, match=rf"^positive\[1\](\[0\])? must be a key .* got "
                           f"{shown}"):
            most_similar(sample_store, ["cat", item])
        with pytest.raises(TypeError, match=rf"^negative\[0\](\[0\])? must be a key .* got "
                           f"{shown}"):
            most_similar(sample_store, ["cat"], negative=[item], topn=0)
    with pytest.raises(TypeError, match=rf"^positive\[0\] must be a key .* got {shown}"):
        sample_store.most_similar([bad])
    with pytest.raises(TypeError, match=rf"^keys\[1\] must be a key .* got {shown}"):
        most_similar_batch(sample_store, ["cat", bad])
    with pytest.raises(TypeError, match=rf"^key must be a str or an int row number, got {shown}"):
        similar_by_key(sample_store, bad)


def test_none_and_other_non_keys_in_lists_and_batches(sample_store):
    with pytest.raises(TypeError, match=r"^positive\[0\] must be .* got NoneType None"):
        most_similar(sample_store, [None])
    with pytest.raises(TypeError, match=r"^positive\[0\] must be .* got list \[1\.0, 2\.0\]; "
                       "vectors are numpy arrays"):
        most_similar(sample_store, [[1.0, 2.0]])
    with pytest.raises(TypeError, match="keys are str"):
        most_similar(sample_store, b"cat")
    for bad, shown in [(None, "NoneType None"), (5, "int 5"), (b"cat", "bytes b'cat'"),
                       (bytearray(b"ab"), "bytearray")]:
        with pytest.raises(TypeError, match=f"^most_similar_batch needs a list of keys .*got "
                           f"{shown}"):
            most_similar_batch(sample_store, bad)
    with pytest.raises(TypeError, match=r"^keys\[0\] must be a key .* got NoneType None"):
        most_similar_batch(sample_store, [None], topn=0)
    # None means "nothing" only for positive / negative themselves, as in gensim
    assert most_similar(sample_store, None, ["cat"], topn=2) == most_similar(
        sample_store, [], ["cat"], topn=2)


@pytest.mark.parametrize("bad, shown", [(b"cat", "bytes b'cat'"), ("cat", "str 'cat'"),
                                        (None, "NoneType None"),
                                        (["a", "b"], r"list \['a', 'b'\] \(dtype <U1\)")])
def test_similar_by_vector_refuses_keys_and_non_numbers(sample_store, bad, shown):
    with pytest.raises(TypeError, match=f"^vector must be a 1-D array of numbers, got {shown}"):
        similar_by_vector(sample_store, bad)
    with pytest.raises(TypeError, match="vector must be a 1-D array of numbers"):
        sample_store.similar_by_vector(bad)


def test_similar_by_vector_takes_a_list_of_floats(sample_store):
    v = sample_store["cat"]
    assert similar_by_vector(sample_store, v.tolist(), topn=3) == similar_by_vector(
        sample_store, v, topn=3)


def test_tuple_items_must_be_key_weight_pairs(sample_store):
    with pytest.raises(ValueError, match=r"^positive\[0\] is a tuple of 1 item \('cat',\); "
                       r"expected a \(key or vector, weight\) pair"):
        most_similar(sample_store, [("cat",)])
    with pytest.raises(ValueError, match=r"^negative\[1\] is a tuple of 3 items"):
        most_similar(sample_store, ["cat"], negative=["dog", ("cat", 1.0, 2.0)])
    with pytest.raises(ValueError, match=r"positive\[0\] is a tuple of 0 items"):
        most_similar(sample_store, [()])
    for weight, shown in [("2", "str '2'"), (None, "NoneType None"), (True, "bool True")]:
        with pytest.raises(TypeError, match=rf"^the weight of positive\[0\] must be a real "
                           f"number, got {shown}"):
            most_similar(sample_store, [("cat", weight)])
    for weight in (np.inf, -np.inf, np.nan):
        with pytest.raises(ValueError, match=r"^the weight of positive\[0\] must be finite"):
            most_similar(sample_store, [("cat", weight)])
    # numpy numbers are weights like Python ones
    assert most_similar(sample_store, [("cat", np.float32(2.0))], topn=3) == most_similar(
        sample_store, [("cat", 2.0)], topn=3)


def _scaled_row(x, target):
    """``x`` multiplied so that its largest |value| is ``target`` (float32)."""
    return (x * np.float32(target / np.abs(x).max())).astype(np.float32)


@pytest.mark.parametrize("metric", ["cosine", "dot"])
def test_queries_whose_norm_overflows_float32_rank_like_the_unscaled_query(metric):
    """A finite float32 query of 3e38 used to get an infinite norm, a zero weight, all-zero
    scores and rows 0, 1, 2. A power of two changes no ranking: the scaled query must give
    the oracle's answer for the unscaled one, bit for bit (dot scores times that power)."""
    codes, scales, zp, norms = make(300, 24, seed=11)
    rng = np.random.default_rng(5)
    q = rng.standard_normal((4, 24)).astype(np.float32)
    big = np.stack([_scaled_row(row, 3e38) for row in q])
    assert np.isfinite(big).all()
    # exactly big * 2**-110, a query of ordinary size
    small = np.ldexp(big, -110).astype(np.float32)
    assert np.array_equal(np.ldexp(small.astype(np.float64), 110), big)
    exp_s, exp_i = oracle(codes, scales, zp, norms, small, 7, metric)
    got_s, got_i = search(codes, scales, big, 7, zero_points=zp, norms=norms, metric=metric)
    np.testing.assert_array_equal(got_i, exp_i)
    if metric == "cosine":
        np.testing.assert_array_equal(got_s, exp_s)
        assert (got_s[:, 0] > 0.5).all()
    else:
        with np.errstate(over="ignore"):
            np.testing.assert_array_equal(got_s, np.ldexp(exp_s, 110).astype(np.float32))
    # one query alone, and rescored: the same rows as the unscaled query
    for i in range(len(q)):
        for rescore in (None, 4):
            s1, i1 = search(codes, scales, big[i], 7, zero_points=zp, norms=norms,
                            metric=metric, rescore=rescore)
            s2, i2 = search(codes, scales, small[i], 7, zero_points=zp, norms=norms,
                            metric=metric, rescore=rescore)
            np.testing.assert_array_equal(i1, i2)
            if metric == "cosine":
                np.testing.assert_array_equal(s1, s2)


@pytest.mark.parametrize("exponent", [-120, -80, 70, 100])
def test_tiny_and_huge_queries_give_the_oracle_answer_bit_for_bit(exponent):
    codes, scales, zp, norms = make(200, 16, seed=3, zp_random=True)
    q = np.random.default_rng(9).standard_normal((3, 16)).astype(np.float32)
    scaled = np.ldexp(q, exponent).astype(np.float32)
    assert np.array_equal(np.ldexp(scaled, -exponent), q)  # exact: no subnormal, no overflow
    exp_s, exp_i = oracle(codes, scales, zp, norms, q, 5)
    got_s, got_i = search(codes, scales, scaled, 5, zero_points=zp, norms=norms)
    np.testing.assert_array_equal(got_i, exp_i)
    np.testing.assert_array_equal(got_s, exp_s)


def test_store_search_of_a_row_scaled_to_3e38(sample_store):
    x = np.asarray(sample_store["cat"], np.float32)
    big = _scaled_row(x, 3e38)
    exp_s, exp_i = sample_store.search(np.ldexp(big, -120).astype(np.float32), k=3)
    got_s, got_i = sample_store.search(big, k=3)
    np.testing.assert_array_equal(got_i, exp_i)
    np.testing.assert_array_equal(got_s, exp_s)
    assert got_i[0] == sample_store.get_index("cat") and got_s[0] > 0.99


def _unit64(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("factor", [1e200, 2.0 ** 700, 1e-200, 2.0 ** -700])
def test_most_similar_with_huge_or_tiny_float64_vectors(sample_store, factor):
    """A float64 vector of 1e200 used to have an infinite norm in float64 (all-zero scores,
    rows 0, 1, 2); one of 1e-200 a zero norm. The ranking must be that of the unscaled
    vector: the int8 oracle on its unit query, and the float oracle after rescoring."""
    codes, scales = np.asarray(sample_store.codes), np.asarray(sample_store.scales)
    zp, norms = np.asarray(sample_store.zero_points), np.asarray(sample_store.norms)
    v = np.asarray(sample_store["king"], np.float64) - np.asarray(sample_store["man"],
                                                                  np.float64)
    keys = sample_store.index_to_key
    got = most_similar(sample_store, [v * factor], topn=10, rescore=None)
    _, rows = oracle(codes, scales, zp, norms, _unit64(v).astype(np.float32), 10)
    assert [k for k, _ in got] == [keys[int(r)] for r in rows[0]]
    assert got[0][1] > 0.5
    got = most_similar(sample_store, [v * factor], topn=10)
    assert got == most_similar(sample_store, [v], topn=10) or [k for k, _ in got] == [
        k for k, _ in most_similar(sample_store, [v], topn=10)]
    assert similar_by_vector(sample_store, v * factor, topn=5) == most_similar(
        sample_store, [v * factor], topn=5)


def test_most_similar_with_huge_weights_and_sums_beyond_float64(sample_store):
    """Weights of 2**900, and two vectors of 1e308 whose sum overflows float64: the query is
    the same direction as with ordinary sizes (powers of two: the same answer exactly)."""
    plain = most_similar(sample_store, [("cat", 1.0)], negative=[("dog", -1.0)], topn=8)
    huge = most_similar(sample_store, [("cat", 2.0 ** 900)], negative=[("dog", -(2.0 ** 900))],
                        topn=8)
    assert huge == plain
    v = np.asarray(sample_store["cat"], np.float64)
    # exactly v * 2**k with its largest |value| in [2**1023, 2**1024): finite, but v + v is not
    big = np.ldexp(v, 1024 - int(np.frexp(np.abs(v).max())[1]))
    assert np.isfinite(big).all()
    with np.errstate(over="ignore"):
        assert not np.isfinite(big + big).all()
    assert most_similar(sample_store, [big, big], topn=8) == most_similar(
        sample_store, [v, v], topn=8)


# -- allow-lists, l2, range search ------------------------------------------------------------

def l2_oracle_all(codes, scales, zp, norms, queries):
    """Every squared l2 distance by the documented float32 formula:
    ``max((n_row**2 - 2 t) + n_query**2, 0)``, ``t = float32(acc) * (s_row * s_query)``."""
    q = np.atleast_2d(np.asarray(queries, np.float32))
    qc, qs, qz = quantize(q)
    qint = (qc.astype(np.int16) - 128).astype(np.int8)
    acc = numpy_acc(codes, zp, qint)
    t = acc.astype(np.float32) * (scales[None, :].astype(np.float32) * qs[:, None])
    n2 = (norms * norms).astype(np.float32)
    qn = row_norms(qc, qs, qz)
    qn2 = (qn * qn).astype(np.float32)
    d2 = (n2[None, :] - (t + t)) + qn2[:, None]
    return np.maximum(d2, np.float32(0)).astype(np.float32)


def l2_oracle(codes, scales, zp, norms, queries, k):
    d2 = l2_oracle_all(codes, scales, zp, norms, queries)
    rows = np.broadcast_to(np.arange(d2.shape[1]), d2.shape)
    order = np.lexsort((rows, d2), axis=-1)[:, : min(k, d2.shape[1])]
    return np.take_along_axis(d2, order, 1), order.astype(np.int64)


def all_scores_oracle(codes, scales, zp, norms, queries, metric):
    """(m, n) scores (cosine, dot) or squared distances (l2) of every row."""
    if metric == "l2":
        return l2_oracle_all(codes, scales, zp, norms, queries)
    n = len(codes)
    s, i = oracle(codes, scales, zp, norms, queries, n, metric)
    out = np.empty_like(s)
    np.put_along_axis(out, i, s, axis=1)
    return out


def sub_oracle(codes, scales, zp, norms, q, k, metric, rows):
    """Search over a store holding only ``rows``, row numbers mapped back."""
    sub = (codes[rows], scales[rows], None if zp is None else zp[rows], norms[rows])
    if metric == "l2":
        s, i = l2_oracle(*sub, q, k)
    else:
        s, i = oracle(*sub, q, k, metric)
    return s, rows[i]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 1500),
    d=st.integers(1, 90),
    m=st.integers(1, 20),
    k=st.integers(1, 30),
    metric=st.sampled_from(["cosine", "dot", "l2"]),
    fraction=st.sampled_from([0.0, 0.01, 0.3, 0.5, 0.6, 0.9, 0.97, 1.0]),
    as_mask=st.booleans(),
    threads=st.sampled_from([1, 2]),
    dup=st.booleans(),
    zp_random=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_allow_equals_a_search_over_only_the_allowed_rows(n, d, m, k, metric, fraction,
                                                          as_mask, threads, dup, zp_random,
                                                          seed):
    codes, scales, zp, norms = make(n, d, seed, dup=dup, zero_rows=True, zp_random=zp_random)
    rng = np.random.default_rng(seed + 2)
    mask = rng.random(n) < fraction
    if fraction >= 0.9 and n > 600:
        mask[300:600] = True   # long consecutive runs: blocks read in place
    rows = np.flatnonzero(mask)
    q = rng.standard_normal((m, d)).astype(np.float32)
    allow = mask if as_mask else rng.permutation(np.concatenate([rows, rows[:3]]))
    got_s, got_i = search(codes, scales, q, k, zero_points=zp, norms=norms, metric=metric,
                          allow=allow, n_threads=threads)
    exp_s, exp_i = sub_oracle(codes, scales, zp, norms, q, k, metric, rows)
    assert got_i.shape == (m, min(k, rows.size))
    np.testing.assert_array_equal(got_i, exp_i)
    np.testing.assert_array_equal(got_s, exp_s)


def test_allow_single_query_fused_scan_every_variant():
    codes, scales, zp, norms = make(5000, 70, 3, dup=True)
    rng = np.random.default_rng(4)
    q = rng.standard_normal(70).astype(np.float32)
    for fraction in (0.005, 0.5, 1.0):
        rows = np.flatnonzero(rng.random(5000) < fraction)
        for dot in DOT_KERNELS:
            for sel in SELECT_KERNELS:
                _config.set_kernels({"search_dot": dot, "search_select": sel})
                for metric in ("cosine", "dot"):
                    s, i = search(codes, scales, q, 25, zero_points=zp, norms=norms,
                                  metric=metric, allow=rows)
                    es, ei = sub_oracle(codes, scales, zp, norms, q, 25, metric, rows)
                    np.testing.assert_array_equal(i, ei[0])
                    np.testing.assert_array_equal(s, es[0])


def windowed_allow(n, densities, rng):
    """Allowed rows drawn window by window (256 rows, the kernel's block), window w at
    density ``densities[w % len(densities)]``."""
    mask = np.zeros(n, bool)
    for w, start in enumerate(range(0, n, 256)):
        stop = min(n, start + 256)
        mask[start:stop] = rng.random(stop - start) < densities[w % len(densities)]
    return np.flatnonzero(mask)


def tied_store(n, d, seed):
    """A store whose row 5 is copied every 37 rows (equal scores in every window and across
    window edges), with queries that rank those copies first."""
    codes, scales, zp, norms = make(n, d, seed, zero_rows=True, zp_random=True)
    copies = np.arange(3, n, 37)
    for a in (codes, scales, zp, norms):
        a[copies] = a[5]
    return codes, scales, zp, norms


# every density of window: full, nearly full (>= 7/8: in place for several queries), above and
# below a third (in place for one query), sparse (gathered), empty
WINDOW_DENSITIES = [1.0, 0.99, 0.9, 0.875, 0.6, 0.5, 0.34, 0.33, 0.2, 0.05, 0.004, 0.0]


@pytest.mark.parametrize("select", SELECT_KERNELS)
@pytest.mark.parametrize("window", [(3, 1), (1000, 1), (1, 2)],
                         ids=["default", "every-window-in-place", "never-in-place"])
def test_allow_windows_at_every_density_match_the_oracle(select, window):
    # One query scores a window in place through the dense scan, which offers its heap only
    # the allowed rows; several queries share NaN weights on the rows not allowed once their
    # heaps hold k real scores (before that the allowed rows are picked out); sparse blocks
    # are gathered. Every path labels its heap entries by row: ties must go to the lower row
    # within a window, across window edges and across the chunks of two threads.
    _config.set_kernels({"search_select": select})
    n, d = 256 * 30 + 77, 40
    codes, scales, zp, norms = tied_store(n, d, 21)
    rng = np.random.default_rng(22)
    rows = windowed_allow(n, WINDOW_DENSITIES, rng)
    x5 = dequantize(codes[5:6], scales[5:6], zp[5:6])[0]
    queries = np.vstack([x5, rng.standard_normal((69, d)).astype(np.float32)])
    ks._set_window_density(*window)
    try:
        for m in (1, 3, 70):
            q = queries[:m]
            for metric in ("cosine", "dot", "l2"):
                for k in (1, 10, 300, rows.size):
                    exp_s, exp_i = sub_oracle(codes, scales, zp, norms, q, k, metric, rows)
                    for threads in (1, 2):
                        got_s, got_i = search(codes, scales, q, k, zero_points=zp, norms=norms,
                                              metric=metric, allow=rows, n_threads=threads)
                        np.testing.assert_array_equal(got_i, exp_i, err_msg=f"{m} {metric} {k}")
                        np.testing.assert_array_equal(got_s, exp_s, err_msg=f"{m} {metric} {k}")
    finally:
        ks._set_window_density(3, 1)


@pytest.mark.parametrize("select", SELECT_KERNELS)
def test_allow_long_windows_of_one_query_match_the_oracle(select):
    # One query streams windows of up to 16384 positions (_LONG_SPAN) through the dense scan:
    # far past one block of 256, at the cap, runs of consecutive rows longer than the cap, and
    # allow-lists whose first and last rows sit on the edges of the two threads' chunks, with
    # zero rows (weight 0) outside the list and ties across every edge; the heap is offered
    # only the allowed rows from the first window on, before it holds k scores too.
    _config.set_kernels({"search_select": select})
    n, d = 16384 * 2 + 300, 20
    codes, scales, zp, norms = tied_store(n, d, 31)
    rng = np.random.default_rng(32)
    x5 = dequantize(codes[5:6], scales[5:6], zp[5:6])[0]
    queries = np.vstack([x5, rng.standard_normal((2, d)).astype(np.float32)])
    dense = np.flatnonzero(rng.random(n) < 0.5)
    runs = np.concatenate([np.arange(0, 17000), np.arange(17001, n, 2)[:1500],
                           np.arange(21000, n)])
    lists = {
        "half": dense,
        "most": np.flatnonzero(rng.random(n) < 0.97),
        "third": np.flatnonzero(rng.random(n) < 0.36),
        "runs": runs,
        "all": np.arange(n),
        "mixed": windowed_allow(n, [0.6, 0.5, 0.4, 0.02, 1.0, 0.45], rng),
        # far from even inside one window: a row's place guessed from the window's ends is
        # hundreds of entries off (the lookup steps out from the guess, then bisects)
        "dense-then-sparse": np.concatenate([np.arange(0, 12000), np.arange(12000, n, 5)]),
        "sparse-then-dense": np.concatenate([np.arange(0, n - 12000, 5),
                                             np.arange(n - 11999, n)]),
    }
    for name, rows in lists.items():
        # chunk edges (positions c * len // nchunks) moved onto the first and last rows
        for rows_ in (rows, rows[len(rows) // 8: len(rows) - len(rows) // 8]):
            for metric in ("cosine", "dot"):
                for k in (1, 10, 60):
                    for q in queries:
                        exp_s, exp_i = sub_oracle(codes, scales, zp, norms, q[None], k, metric,
                                                  rows_)
                        for threads in (1, 2):
                            got_s, got_i = search(codes, scales, q, k, zero_points=zp,
                                                  norms=norms, metric=metric, allow=rows_,
                                                  n_threads=threads)
                            msg = f"{name} {metric} {k} {threads}"
                            np.testing.assert_array_equal(got_i, exp_i[0], err_msg=msg)
                            np.testing.assert_array_equal(got_s, exp_s[0], err_msg=msg)


@pytest.mark.parametrize("dot", DOT_KERNELS)
@pytest.mark.parametrize("select", SELECT_KERNELS)
def test_allow_mask_of_one_query_is_scanned_whole_and_matches_the_oracle(dot, select):
    # One query over a boolean mask that allows a third or more of every part of the rows
    # reads the mask itself (no row list): the unfiltered scan, only the allowed rows offered.
    # Masks denser or sparser in places, ties across the chunks of two threads, a mask that
    # ends before the last row (restrict), and the masks that go the row list's way instead.
    _config.set_kernels({"search_dot": dot, "search_select": select})
    n, d = 256 * 40 + 13, 24
    codes, scales, zp, norms = tied_store(n, d, 41)
    rng = np.random.default_rng(42)
    x5 = dequantize(codes[5:6], scales[5:6], zp[5:6])[0]
    queries = [x5, rng.standard_normal(d).astype(np.float32)]
    clustered = np.zeros(n, bool)
    clustered[: n // 2] = True
    masks = {
        "half": (rng.random(n) < 0.5, True),
        "third": (rng.random(n) < 0.4, True),
        "all": (np.ones(n, bool), True),
        "uneven": (rng.random(n) < np.linspace(0.35, 1.0, n), True),
        "clustered": (clustered, False),              # half the rows, all in one half
        # a bool view of bytes other than 0 and 1: every byte not 0 is true, as for numpy
        "bytes": (((rng.random(n) < 0.5) * rng.integers(1, 256, n)).astype(np.uint8)
                  .view(np.bool_), True),
        "sparse": (rng.random(n) < 0.05, False),
    }
    for name, (mask, dense) in masks.items():
        for restrict in (None, n - 300):
            n_eff = n if restrict is None else restrict
            token = ks.allow_mask(mask, n_eff)
            assert token.dense == dense, name
            rows = np.flatnonzero(mask[:n_eff])
            for metric in ("cosine", "dot"):
                for k in (1, 10, 200):
                    for q in queries:
                        exp_s, exp_i = sub_oracle(codes[:n_eff], scales[:n_eff], zp[:n_eff],
                                                  norms[:n_eff], q[None], k, metric, rows)
                        for threads in (1, 2):
                            got_s, got_i = search(codes, scales, q, k, zero_points=zp,
                                                  norms=norms, metric=metric, allow=mask,
                                                  restrict=restrict, n_threads=threads)
                            msg = f"{name} {restrict} {metric} {k} {threads}"
                            np.testing.assert_array_equal(got_i, exp_i[0], err_msg=msg)
                            np.testing.assert_array_equal(got_s, exp_s[0], err_msg=msg)


@pytest.mark.parametrize("select", SELECT_KERNELS)
def test_allow_mask_token_keeps_the_mask_and_lists_its_rows_on_demand(select):
    _config.set_kernels({"search_select": select})   # the width of the count and the listing
    rng = np.random.default_rng(43)
    n = 5000
    mask = rng.random(n) < 0.5
    token = ks.allow_mask(mask, n)
    assert isinstance(token, ks.AllowList) and token.n_rows == n and token.dense
    assert len(token) == int(mask.sum())
    assert np.shares_memory(token.mask, mask)        # the mask as given, not copied
    with pytest.raises(ValueError, match="read-only"):
        token.mask[0] = True
    np.testing.assert_array_equal(token.array, np.flatnonzero(mask))
    assert token.array.dtype == np.int64 and token.array is token.array
    with pytest.raises(ValueError, match="read-only"):
        token.array[0] = 3
    head = token.below(1000)
    assert head.n_rows == 1000 and len(head) == int(mask[:1000].sum())
    np.testing.assert_array_equal(head.array, np.flatnonzero(mask[:1000]))
    assert ks.allow_mask(mask, 10).n_rows == 10      # the first n_rows entries count
    sparse = mask.copy()
    sparse[: n // 16 + 1] = False                     # one part of sixteen allows nothing
    assert not ks.allow_mask(sparse, n).dense
    assert len(ks.allow_mask(mask[::2], n // 2)) == int(mask[::2].sum())  # strided: copied
    # counted in one SIMD pass (on every thread past 2**18 rows), every byte other than 0 a
    # true entry, as numpy counts them
    # and listed part by part, each part filling its own slice of the rows (branch-free: a
    # byte that is 0 must not leave its position behind, nor write past its part's slice)
    for size in (0, 1, 31, 33, 1000, (1 << 18) + 77):
        for density in (0.0, 0.003, 0.6, 1.0):
            raw = rng.integers(1, 4, size).astype(np.uint8)
            raw[rng.random(size) >= density] = 0
            if size > 100:
                raw[-1] = 0                      # the last part ends on bytes that are 0
                raw[size // 16 * 3: size // 16 * 5] = 0   # parts with none
            as_bool = raw.view(np.bool_)
            counted = ks.allow_mask(as_bool, size)
            assert len(counted) == np.count_nonzero(as_bool), (size, density)
            np.testing.assert_array_equal(counted.array, np.flatnonzero(raw))
    for bad in (mask.astype(np.uint8), mask[:10], mask.reshape(50, 100)):
        with pytest.raises(ValueError, match="mask must be a 1-D bool array of at least "
                                             "n_rows=5000 entries"):
            ks.allow_mask(bad, n)
    # a mask checked for more rows than a scan covers is refused, as a row list is; one
    # checked for fewer is scanned up to its end only (it allows nothing past it)
    qp, sq, wq = ks.prepare_queries(rng.integers(1, 256, (1, 8), dtype=np.uint8),
                                    np.ones(1, np.float32), False)
    codes = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    scales = rng.uniform(0.5, 2.0, n).astype(np.float32)
    with pytest.raises(ValueError, match=r"checked for rows within \[0, 5000\), more than "
                                         r"n_rows=1000"):
        ks.topk_x(codes, scales, None, None, 1000, token, qp, sq, wq, None, 3, 0, 1)
    assert head.dense
    want = ks.topk_x(codes, scales, None, None, n, head.array.copy(), qp, sq, wq, None, 9, 0, 2)
    got = ks.topk_x(codes, scales, None, None, n, head, qp, sq, wq, None, 9, 0, 2)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1].max() < 1000


@pytest.mark.parametrize("window", [(3, 1), (1000, 1), (1, 2)],
                         ids=["default", "every-window-in-place", "never-in-place"])
def test_range_search_windows_at_every_density_match_the_oracle(window):
    from embq._search import search_range

    n, d = 256 * 14 + 5, 24
    codes, scales, zp, norms = tied_store(n, d, 23)
    rng = np.random.default_rng(24)
    rows = windowed_allow(n, WINDOW_DENSITIES, rng)
    q = rng.standard_normal((3, d)).astype(np.float32)
    ks._set_window_density(*window)
    try:
        for metric in ("cosine", "dot", "l2"):
            full = all_scores_oracle(codes, scales, zp, norms, q, metric)
            t = float(np.quantile(full, 0.7 if metric == "l2" else 0.3))
            for m in (1, 3):
                indptr, s, i = search_range(codes, scales, q[:m], t, zero_points=zp,
                                            norms=norms, metric=metric, allow=rows,
                                            n_threads=2)
                for j in range(m):
                    sc = full[j, rows]
                    keep = sc <= np.float32(t) if metric == "l2" else sc >= np.float32(t)
                    r, v = rows[keep], sc[keep]
                    order = np.lexsort((r, v if metric == "l2" else -v))
                    np.testing.assert_array_equal(i[indptr[j]:indptr[j + 1]], r[order])
                    np.testing.assert_array_equal(s[indptr[j]:indptr[j + 1]], v[order])
    finally:
        ks._set_window_density(3, 1)


@pytest.mark.parametrize("select", SELECT_KERNELS)
def test_allow_windows_with_infinite_scores_keep_only_allowed_rows(select):
    # Scores of -inf (and NaN, ranked as -inf) from allowed rows: a heap whose worst entry is
    # -inf must not take the NaN-weighted rows a window does not allow, so that path waits
    # until the heap holds k scores above -inf; nor may a scan over a mask. Kernel level:
    # weights this large are refused by the front end.
    _config.set_kernels({"search_select": select})
    n, d = 256 * 8, 16
    rng = np.random.default_rng(27)
    codes = rng.integers(0, 256, (n, d), dtype=np.uint8)
    codes[::11] = 128                                    # acc 0: 0 * inf is NaN
    scales = np.where(rng.random(n) < 0.5, 1e-3, 100.0).astype(np.float32)
    rows = windowed_allow(n, WINDOW_DENSITIES, rng)
    qc, qs, _ = quantize(rng.standard_normal((1, d)).astype(np.float32))
    qp, sq, _ = ks.prepare_queries(qc, qs, False)
    wq = np.full(1, 1e38, np.float32)                    # 100 * 1e38 overflows to inf
    qint = (qc.astype(np.int16) - 128).astype(np.int8)
    with np.errstate(over="ignore", invalid="ignore"):
        sc = numpy_acc(codes, None, qint)[0].astype(np.float32) * (scales * wq[0])
    sc[np.isnan(sc)] = -np.inf
    assert np.isneginf(sc[rows]).sum() > 10
    mask = np.zeros(n, bool)
    mask[rows] = True
    ks._set_window_density(1000, 1)
    try:
        # a row list in windows, and a mask scanned whole (dense everywhere at this density)
        for allow in (rows, ks.allow_mask(mask, n)):
            for k in (5, rows.size - 3, rows.size):
                order = np.lexsort((rows, -sc[rows]))[:k]
                s, i = ks.topk_x(codes, scales, None, None, n, allow, qp, sq, wq, None, k, 0,
                                 1)
                np.testing.assert_array_equal(i[0], rows[order])
                np.testing.assert_array_equal(s[0], sc[rows][order])
    finally:
        ks._set_window_density(3, 1)


def test_kernels_label_heap_entries_by_row():
    # topk_x returns row numbers (not positions in idx), best first, ties by lower row, for
    # every schedule
    codes, scales, zp, norms = tied_store(3000, 16, 25)
    rows = windowed_allow(3000, WINDOW_DENSITIES, np.random.default_rng(26))
    x5 = dequantize(codes[5:6], scales[5:6], zp[5:6])
    from embq._search import _quantize_queries
    qp, sq, wq, _ = _quantize_queries(np.repeat(x5, 2, axis=0), "cosine", 1)
    exp_s, exp_i = sub_oracle(codes, scales, zp, norms, np.repeat(x5, 2, axis=0), 40, "cosine",
                              rows)
    for schedule in ("rows", "queries"):
        s, i = ks.topk_x(codes, scales, zp, norms, 3000, rows, qp, sq, wq, None, 40, 1, 2,
                         schedule)
        np.testing.assert_array_equal(i, exp_i)
        np.testing.assert_array_equal(s, exp_s)
    with pytest.raises(ValueError, match="schedule must be 'auto', 'rows' or 'queries'"):
        ks.topk_x(codes, scales, zp, norms, 3000, rows, qp, sq, wq, None, 40, 1, 2, "both")


def test_allow_row_numbers_out_of_order_sorted_or_marked_in_a_mask():
    # A few row numbers out of order are sorted and their repeats dropped; many (one per 64
    # rows or more) are marked in a mask instead, which is linear. Either way, with repeats and with
    # restrict, the answer is the search over the allowed rows alone.
    from embq._search import _MASK_FROM_ROWS, _allow_rows

    n, d = 6000, 24
    codes, scales, zp, norms = make(n, d, 51, dup=True)
    rng = np.random.default_rng(52)
    q = rng.standard_normal((2, d)).astype(np.float32)
    few = rng.choice(n, 10, replace=False)
    many = rng.choice(n, 3000, replace=False)
    assert few.size * _MASK_FROM_ROWS < n <= many.size * _MASK_FROM_ROWS
    for chosen, masked in ((few, False), (many, True)):
        shuffled = rng.permutation(np.concatenate([chosen, chosen[:4]]))
        token = _allow_rows(shuffled, n, n)
        assert (token.mask is not None) == masked
        np.testing.assert_array_equal(token.array, np.unique(chosen))
        for restrict in (None, 4000):
            rows = np.unique(chosen[chosen < (restrict or n)])
            for m in (1, 2):
                for metric in ("cosine", "dot", "l2"):
                    exp_s, exp_i = sub_oracle(codes, scales, zp, norms, q[:m], 7, metric, rows)
                    got_s, got_i = search(codes, scales, q[:m], 7, zero_points=zp, norms=norms,
                                          metric=metric, allow=shuffled, restrict=restrict)
                    np.testing.assert_array_equal(got_i, exp_i)
                    np.testing.assert_array_equal(got_s, exp_s)


def test_allow_returns_k_whenever_k_rows_are_allowed_and_restrict_intersects():
    codes, scales, zp, norms = make(2000, 16, 5)
    q = np.random.default_rng(6).standard_normal(16)
    # the allowed rows are the ones least similar: a search-then-filter would return none
    _s_all, i_all = search(codes, scales, q, 2000, zero_points=zp, norms=norms)
    worst = i_all[-12:]
    _s, i = search(codes, scales, q, 10, zero_points=zp, norms=norms, allow=worst)
    assert i.shape == (10,) and set(i) <= set(worst)
    np.testing.assert_array_equal(i, i_all[-12:-2])
    # restrict keeps the allowed rows below it
    _s, i = search(codes, scales, q, 10, zero_points=zp, norms=norms, allow=worst,
                  restrict=int(np.sort(worst)[5]))
    assert i.shape == (5,) and (i < np.sort(worst)[5]).all()
    _s, i = search(codes, scales, q, 10, zero_points=zp, norms=norms, allow=[])
    assert i.shape == (0,)


def test_allow_bad_values_are_named():
    codes, scales, _zp, _norms = make(50, 8, 7)
    q = np.ones(8)
    with pytest.raises(ValueError, match=r"allow\[1\] = 50 is not a row number.*< 50"):
        search(codes, scales, q, allow=[3, 50])
    with pytest.raises(ValueError, match=r"allow\[0\] = -1"):
        search(codes, scales, q, allow=[-1, 2])
    with pytest.raises(ValueError, match="one entry per row \\(50\\), got 49"):
        search(codes, scales, q, allow=np.ones(49, bool))
    with pytest.raises(TypeError, match="keys \\(str\\) are taken by the Store methods"):
        search(codes, scales, q, allow=["cat"])
    with pytest.raises(TypeError, match="dtype float64"):
        search(codes, scales, q, allow=np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="must be 1-D"):
        search(codes, scales, q, allow=np.ones((5, 10), bool))


def test_kernel_refuses_unsorted_or_out_of_range_idx():
    codes, scales, zp, _norms = make(50, 8, 7)
    from embq._search import _quantize_queries
    qp, sq, wq, _ = _quantize_queries(np.ones((1, 8), np.float32), "dot", 1)
    for idx in ([3, 2], [1, 50], [-1], [4, 4]):
        with pytest.raises(ValueError, match="idx must be increasing"):
            ks.topk_x(codes, scales, zp, None, 50, np.array(idx, np.int64), qp, sq, wq, None,
                      1, 0, 1)
        with pytest.raises(ValueError, match="idx must be increasing"):
            ks.range_x(codes, scales, zp, None, 50, np.array(idx, np.int64), qp, sq, wq,
                       None, 0.0, 0, 1)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 800), d=st.integers(1, 70), m=st.integers(1, 12),
       k=st.integers(1, 30), threads=st.sampled_from([1, 2]), dup=st.booleans(),
       zp_random=st.booleans(), seed=st.integers(0, 2**16))
def test_l2_matches_the_float32_oracle_bit_for_bit(n, d, m, k, threads, dup, zp_random, seed):
    codes, scales, zp, norms = make(n, d, seed, dup=dup, zero_rows=True, zp_random=zp_random)
    q = np.random.default_rng(seed + 1).standard_normal((m, d)).astype(np.float32)
    got_s, got_i = search(codes, scales, q, k, zero_points=zp, norms=norms, metric="l2",
                          n_threads=threads)
    exp_s, exp_i = l2_oracle(codes, scales, zp, norms, q, k)
    np.testing.assert_array_equal(got_i, exp_i)
    np.testing.assert_array_equal(got_s, exp_s)


def test_l2_is_the_distance_of_the_dequantized_vectors_and_rescore_reranks():
    codes, scales, zp, norms = make(3000, 48, 8)
    q = np.random.default_rng(9).standard_normal((4, 48)).astype(np.float32)
    x = dequantize(codes, scales, zp).astype(np.float64)
    true = ((x[None, :, :] - q[:, None, :].astype(np.float64)) ** 2).sum(-1)
    s, i = search(codes, scales, q, 20, zero_points=zp, norms=norms, metric="l2")
    # close to the float distance (the query is quantized too: relative error ~1e-2)
    np.testing.assert_allclose(s, np.take_along_axis(true, i, 1), rtol=0.05)
    assert (np.diff(s, axis=1) >= 0).all()
    s, i = search(codes, scales, q, 20, zero_points=zp, norms=norms, metric="l2", rescore=4)
    cand = search(codes, scales, q, 80, zero_points=zp, norms=norms, metric="l2")[1]
    exp = np.take_along_axis(true, cand, 1)
    order = np.lexsort((cand, exp), axis=-1)[:, :20]
    np.testing.assert_array_equal(i, np.take_along_axis(cand, order, 1))
    np.testing.assert_allclose(s, np.take_along_axis(exp, order, 1).astype(np.float32),
                               rtol=1e-6)


@pytest.mark.parametrize("select", SELECT_KERNELS)
def test_kernel_idx_check_names_the_first_bad_position(select):
    # the allow-list check runs at the select variant's SIMD width over blocks of 1024 rows;
    # whatever the width it must name the first position that is out of order or range
    _config.set_kernels({"search_select": select})
    rng = np.random.default_rng(28)
    for length in (1, 2, 3, 4, 5, 8, 1023, 1024, 1025, 1026, 3000, 5000):
        n_rows = 3 * length + 10
        good = np.sort(rng.choice(n_rows, length, replace=False)).astype(np.int64)
        for at in sorted({0, 1, length // 2, length - 1, max(length - 2, 0), 1024, 1025}):
            if at >= length:
                continue
            for defect in ("repeat", "down", "too-big", "negative"):
                idx = good.copy()
                if defect == "repeat" and at > 0:
                    idx[at] = idx[at - 1]
                elif defect == "down" and at > 0:
                    idx[at] = idx[at - 1] - 1
                elif defect == "too-big":
                    idx[at:] = n_rows + np.arange(length - at)
                elif defect == "negative":
                    idx[at] = -1
                ok = (idx >= 0) & (idx < n_rows)
                ok[1:] &= idx[1:] > idx[:-1]
                first = int(np.flatnonzero(~ok)[0]) if not ok.all() else None
                if first is None:
                    continue
                with pytest.raises(ValueError, match=rf"got {idx[first]} at position {first}$"):
                    ks.check_rows(idx, n_rows)
                # split among threads too: the first part with a bad position names it
                for threads in (0, 1, 2, 3, 7):
                    assert ks.first_bad_row(idx, n_rows, threads) == first, threads
        assert ks.check_rows(good, n_rows) == length       # a valid list passes
        for threads in (0, 1, 2, 3, 7):
            assert ks.first_bad_row(good, n_rows, threads) == -1
        assert ks.first_bad_row(good[:0], n_rows) == -1
        assert ks.check_rows(good, int(good[-1]) + 1) == length


@pytest.mark.parametrize("length", [0, 1, 7, 5000, 600_000])  # 600,000: on every thread
def test_mark_rows_is_numpy_fancy_assignment_and_names_the_first_bad_position(length):
    rng = np.random.default_rng(length)
    n_rows = max(2 * length, 3)
    idx = rng.integers(0, n_rows, length).astype(np.int64)   # out of order, with repeats
    mask = np.zeros(n_rows, np.uint8)
    assert ks.mark_rows(idx, mask) == -1
    want = np.zeros(n_rows, bool)
    want[idx] = True
    np.testing.assert_array_equal(mask.view(bool), want)
    for at in sorted({0, length // 2, length - 1} - {-1}):
        if at >= length:
            continue
        for bad in (-1, n_rows, -2**63, 2**63 - 1):
            wrong = idx.copy()
            wrong[at] = bad
            wrong[at + 1:at + 50] = n_rows + 1    # later bad rows are not the first
            out = np.zeros(n_rows, np.uint8)
            assert ks.mark_rows(wrong, out) == at
            assert out.view(bool)[wrong[:at]].all() if at else True


def test_shuffled_allow_list_with_a_bad_row_names_its_position():
    codes, scales, _zp, _norms = make(300, 8, 7)
    allow = np.random.default_rng(0).permutation(300)
    allow[211] = 300
    with pytest.raises(ValueError, match=r"allow\[211\] = 300 is not a row number.*< 300"):
        search(codes, scales, np.ones(8), allow=allow)
    allow[211] = 5
    allow[250] = -7
    with pytest.raises(ValueError, match=r"allow\[250\] = -7 is not a row number"):
        search(codes, scales, np.ones(8), allow=allow)


def test_long_allow_list_check_on_every_thread_names_the_first_bad_position():
    # past 2**18 rows the check is split among the threads by default
    good = np.arange(0, 2 * 400_000, 2, dtype=np.int64)
    n_rows = int(good[-1]) + 1
    assert ks.first_bad_row(good, n_rows) == -1
    for at in (1, 199_999, 200_000, 200_001, 399_999):
        for defect in ("repeat", "too-big"):
            idx = good.copy()
            if defect == "repeat":
                idx[at] = idx[at - 1]
            else:
                idx[at:] += n_rows
            assert ks.first_bad_row(idx, n_rows) == at, (at, defect)
            later = idx.copy()
            later[at + 1:] = later[at + 1:] - 1   # more defects after the first
            assert ks.first_bad_row(later, n_rows) == at, (at, defect)


def test_checked_allow_list_is_checked_once_and_only_where_it_holds():
    # allow_list's one pass makes a read-only AllowList the scans take as they are, for as many
    # rows as it was checked for and no more; a bad list gives its first bad position instead
    from embq import _kernels_sketch as ksk

    rng = np.random.default_rng(31)
    n, d = 900, 40
    codes = rng.integers(0, 256, (n, d), dtype=np.uint8)
    scales = rng.uniform(0.5, 2.0, n).astype(np.float32)
    qp, sq, wq = ks.prepare_queries(rng.integers(1, 256, (3, d), dtype=np.uint8),
                                    np.ones(3, np.float32), False)
    good = np.flatnonzero(rng.random(n) < 0.4).astype(np.int64)
    rows = ks.allow_list(good, n)
    assert isinstance(rows, ks.AllowList) and len(rows) == len(good) and rows.n_rows == n
    assert np.shares_memory(rows.array, good)       # no copy
    with pytest.raises(ValueError, match="read-only"):
        rows.array[0] = 5
    want = ks.topk_x(codes, scales, None, None, n, good, qp, sq, wq, None, 7, 0, 2)
    got = ks.topk_x(codes, scales, None, None, n, rows, qp, sq, wq, None, 7, 0, 2)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])
    # checked for n rows, so not taken for fewer (it may name rows beyond them)...
    with pytest.raises(ValueError, match=rf"checked for rows within \[0, {n}\), more than "
                                         r"n_rows=500"):
        ks.topk_x(codes, scales, None, None, 500, rows, qp, sq, wq, None, 7, 0, 1)
    with pytest.raises(ValueError, match="checked for row numbers below 900, more than "
                                         "n_rows=500"):
        ksk.nearest(np.zeros((n, 5), np.uint8), 500, np.zeros((1, 5), np.uint8), 3, 1,
                    rows=rows)
    # ... unless cut to them
    head = rows.below(500)
    assert head.n_rows == 500
    np.testing.assert_array_equal(head.array, good[good < 500])
    got = ks.topk_x(codes, scales, None, None, 500, head, qp, sq, wq, None, 7, 0, 1)
    want = ks.topk_x(codes, scales, None, None, 500, good[good < 500], qp, sq, wq, None, 7,
                     0, 1)
    np.testing.assert_array_equal(got[1], want[1])
    with pytest.raises(ValueError, match=r"n_rows must be within \[0, 900\], got 901"):
        rows.below(901)
    bad = good.copy()
    bad[5] = bad[4]
    assert ks.allow_list(bad, n) == 5
    assert ks.allow_list(good, int(good[-1])) == len(good) - 1
    with pytest.raises(TypeError):
        ks.AllowList()                                    # only allow_list makes one


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 700), d=st.integers(1, 60), m=st.integers(1, 8),
       metric=st.sampled_from(["cosine", "dot", "l2"]), quantile=st.floats(0, 1),
       allow_fraction=st.sampled_from([None, 0.2, 0.8]), cap=st.sampled_from([None, 1, 7]),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**16))
def test_range_search_returns_every_row_past_the_threshold(n, d, m, metric, quantile,
                                                           allow_fraction, cap, threads, seed):
    from embq._search import search_range

    codes, scales, zp, norms = make(n, d, seed, dup=True, zero_rows=True)
    rng = np.random.default_rng(seed + 3)
    q = rng.standard_normal((m, d)).astype(np.float32)
    rows = np.arange(n) if allow_fraction is None else np.flatnonzero(
        rng.random(n) < allow_fraction)
    allow = None if allow_fraction is None else rows
    full = all_scores_oracle(codes, scales, zp, norms, q, metric) if n else np.zeros((m, 0))
    t = float(np.quantile(full, quantile)) if full.size else 0.5
    indptr, s, i = search_range(codes, scales, q, t, zero_points=zp, norms=norms, metric=metric,
                                allow=allow, max_results=cap, n_threads=threads)
    assert indptr.shape == (m + 1,) and indptr[0] == 0
    lists = search(codes, scales, q, threshold=t, zero_points=zp, norms=norms, metric=metric,
                   allow=allow, max_results=cap, n_threads=threads)
    for j in range(m):
        sc = full[j, rows]
        keep = sc <= np.float32(t) if metric == "l2" else sc >= np.float32(t)
        r, v = rows[keep], sc[keep]
        order = np.lexsort((r, v if metric == "l2" else -v))[:cap]
        np.testing.assert_array_equal(i[indptr[j]:indptr[j + 1]], r[order])
        np.testing.assert_array_equal(s[indptr[j]:indptr[j + 1]], v[order])
        np.testing.assert_array_equal(lists[1][j], r[order])
        np.testing.assert_array_equal(lists[0][j], v[order])


def test_range_search_single_query_and_bad_arguments():
    codes, scales, zp, norms = make(300, 12, 10)
    q = np.random.default_rng(11).standard_normal(12)
    s, i = search(codes, scales, q, threshold=0.2, zero_points=zp, norms=norms)
    assert s.ndim == 1 and (s >= np.float32(0.2)).all()
    top_s, top_i = search(codes, scales, q, len(s), zero_points=zp, norms=norms)
    np.testing.assert_array_equal(i, top_i)
    np.testing.assert_array_equal(s, top_s)
    with pytest.raises(ValueError, match="rescore applies to top-k"):
        search(codes, scales, q, threshold=0.2, rescore=2)
    with pytest.raises(ValueError, match="threshold must be finite"):
        search(codes, scales, q, threshold=float("nan"))
    with pytest.raises(TypeError, match="threshold must be a real number"):
        search(codes, scales, q, threshold="0.5")
    with pytest.raises(ValueError, match="give threshold= too"):
        search(codes, scales, q, max_results=3)
    with pytest.raises(ValueError, match="'cosine', 'dot' or 'l2'"):
        search(codes, scales, q, metric="euclid")


def test_store_methods_take_allow_as_keys(sample_store):
    keys = list(sample_store.index_to_key)
    allowed = keys[::7]
    rows = np.array([sample_store.get_index(k) for k in allowed])
    mask = np.zeros(len(sample_store), bool)
    mask[rows] = True
    got = sample_store.most_similar(keys[3], topn=5, allow=allowed)
    assert [k for k, _ in got] == [k for k, _ in sample_store.most_similar(
        keys[3], topn=5, allow=mask)]
    assert all(k in set(allowed) for k, _ in got) and len(got) == 5
    assert sample_store.similar_by_vector(sample_store[keys[3]], topn=4, allow=rows) == \
        sample_store.most_similar(positive=[sample_store[keys[3]]], topn=4, allow=allowed)
    batch = sample_store.most_similar_batch(keys[:3], topn=4, allow=allowed)
    for got_b, key in zip(batch, keys[:3]):
        one = sample_store.most_similar(key, topn=4, allow=allowed)
        # the batch searches the raw row, most_similar the unit row: last-bit differences
        assert [k for k, _ in got_b] == [k for k, _ in one]
        np.testing.assert_allclose([v for _, v in got_b], [v for _, v in one], rtol=1e-6)
    _s, i = sample_store.search(sample_store[keys[3]], 6, allow=allowed)
    assert set(i) <= set(rows)
    with pytest.raises(KeyError, match=r"allow\[1\]: key 'no-such-key' not present"):
        sample_store.search(sample_store[keys[3]], 6, allow=[keys[0], "no-such-key"])
    with pytest.raises(ValueError, match="topn=None"):
        sample_store.most_similar(keys[3], topn=None, allow=allowed)


def test_store_allow_list_looks_up_keys_once_and_answers_as_allow(sample_store):
    keys = list(sample_store.index_to_key)
    allowed = keys[::7][::-1]                  # keys come in any order
    token = sample_store.allow_list(allowed)
    assert isinstance(token, embq.AllowList) and len(token) == len(set(allowed))
    np.testing.assert_array_equal(token.array,
                                  np.sort([sample_store.get_index(k) for k in allowed]))
    assert sample_store.most_similar(keys[3], topn=5, allow=token) == \
        sample_store.most_similar(keys[3], topn=5, allow=allowed)
    assert sample_store.similar_by_vector(sample_store[keys[3]], topn=4, allow=token) == \
        sample_store.similar_by_vector(sample_store[keys[3]], topn=4, allow=allowed)
    assert sample_store.most_similar_batch(keys[:3], topn=4, allow=token) == \
        sample_store.most_similar_batch(keys[:3], topn=4, allow=allowed)
    q = sample_store[keys[3]]
    for kw in ({}, {"metric": "l2"}, {"metric": "dot", "rescore": 2}, {"restrict": 900},
               {"threshold": 0.2}):
        got, want = sample_store.search(q, 6, allow=token, **kw), sample_store.search(
            q, 6, allow=allowed, **kw)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    with pytest.raises(KeyError, match=r"allow\[1\]: key 'no-such-key' not present"):
        sample_store.allow_list([keys[0], "no-such-key"])
    with pytest.raises(TypeError, match=r"allow mixes keys and other values: allow\[1\] is"):
        sample_store.allow_list([keys[0], 5])
    n = len(sample_store)
    other = embq.allow_list([1, 2], n + 1)
    with pytest.raises(ValueError, match=f"an AllowList of {n + 1} rows, but the search is "
                       f"over {n}"):
        sample_store.search(q, 3, allow=other)


@pytest.mark.parametrize("form", ["rows", "shuffled", "few-shuffled", "mask", "all", "none"])
def test_allow_list_is_checked_once_and_answers_as_the_allow_it_came_from(form):
    n, d = 3000, 24
    codes, scales, zp, norms = make(n, d, seed=3, dup=True)
    rng = np.random.default_rng(4)
    mask = rng.random(n) < (0.001 if form == "few-shuffled" else 0.4)
    rows = np.flatnonzero(mask)
    raw = {"rows": rows, "shuffled": rng.permutation(np.concatenate([rows, rows[:9]])),
           "few-shuffled": rng.permutation(rows), "mask": mask.copy(),
           "all": np.ones(n, bool), "none": np.empty(0, np.int64)}[form]
    token = embq.allow_list(raw, n)
    assert embq.allow_list(token, n) is token
    assert len(token) == (n if form == "all" else 0 if form == "none" else rows.size)
    assert not token.array.flags.writeable
    q = rng.standard_normal((5, d)).astype(np.float32)
    from embq._sketch import compute_sketch

    sk, center = compute_sketch(codes, scales, zp)
    cases = [(m, kw) for m in (q[0], q) for kw in (
        {}, {"metric": "dot"}, {"metric": "l2"}, {"restrict": 1700}, {"rescore": 2},
        {"threshold": 0.1},
        {"prefilter": "sketch", "oversample": 4, "sketch": sk, "sketch_center": center})]
    want = []
    for qq, kw in cases:
        kw = {"k": 7, **kw}
        want.append(search(codes, scales, qq, zero_points=zp, norms=norms, allow=raw, **kw))
    # the token holds its own copy: the array it came from may change
    if raw.size:
        raw[:] = raw[::-1] if raw.dtype != bool else ~raw
    for (qq, kw), w in zip(cases, want):
        kw = {"k": 7, **kw}
        got = search(codes, scales, qq, zero_points=zp, norms=norms, allow=token, **kw)
        for g, ww in zip(got, w):
            for ga, wa in zip(g if isinstance(g, list) else [g], ww if isinstance(ww, list)
                              else [ww]):
                np.testing.assert_array_equal(ga, wa)


def test_allow_list_refuses_what_a_search_refuses():
    with pytest.raises(ValueError, match=r"allow\[1\] = 10 is not a row number.*< 10"):
        embq.allow_list([3, 10], 10)
    with pytest.raises(ValueError, match=r"one entry per row \(10\), got 9"):
        embq.allow_list(np.ones(9, bool), 10)
    with pytest.raises(TypeError, match="boolean mask or integer row numbers"):
        embq.allow_list(np.ones(3, np.float32), 10)
    with pytest.raises(ValueError, match="n_rows must be >= 0"):
        embq.allow_list([1], -1)
    token = embq.allow_list(np.arange(5), 10)
    assert repr(token) == "<AllowList: 5 of 10 rows allowed (row numbers)>"
    with pytest.raises(ValueError, match="an AllowList of 10 rows, not 11"):
        embq.allow_list(token, 11)
    codes, scales, _zp, _norms = make(11, 4)
    with pytest.raises(ValueError, match=r"store.allow_list\(allow\) for the store searched, "
                       r"or embq.allow_list\(allow, 11\)"):
        search(codes, scales, np.ones(4), allow=token)
    with pytest.raises(TypeError, match=r"embq.allow_list\(allow, n_rows\)"):
        embq.AllowList()


def test_allow_checks_the_scales_and_norms_it_reads():
    codes, scales, zp, norms = make(400, 8, 12)
    q = np.ones(8)
    bad = scales.copy()
    bad[300] = np.nan
    # a small allow-list reads only its rows: a bad value elsewhere is not read
    _s, i = search(codes, bad, q, 3, zero_points=zp, norms=norms, allow=[1, 2, 3])
    np.testing.assert_array_equal(i, search(codes, scales, q, 3, zero_points=zp, norms=norms,
                                            allow=[1, 2, 3])[1])
    with pytest.raises(ValueError, match="scales must be finite and >= 0, got nan at row 300"):
        search(codes, bad, q, 3, zero_points=zp, norms=norms, allow=[1, 300])
    badn = norms.copy()
    badn[7] = -1.0
    with pytest.raises(ValueError, match=r"norms must be finite and >= 0, got -1\.0 at row 7"):
        search(codes, scales, q, 3, zero_points=zp, norms=badn, allow=[7, 9], metric="l2")
