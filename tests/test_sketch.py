"""Sign-bit sketch: kernels against numpy oracles, store format, compress, search, CLI."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import embq
from embq import _config
from embq import _kernels_sketch as ksk
from embq._errors import StoreError
from embq._quantize import dequantize, quantize, row_norms
from embq._search import search
from embq._sketch import add_sketch, compute_sketch
from embq._store import StoreWriter
from embq.cli import main

SKETCH_KERNELS = _config.available_kernels()["sketch"]
DIMS = (1, 7, 13, 64, 100, 256, 384, 512, 777)


@pytest.fixture(autouse=True)
def _restore_kernels():
    yield
    _config.set_kernels()


# -- oracles ---------------------------------------------------------------------------------

def bits_oracle(x, center):
    return np.packbits(x > center, axis=1, bitorder="little")


def hamming_oracle(sketch, qs):
    return np.unpackbits(sketch[None, :, :] ^ qs[:, None, :], axis=2).sum(axis=2)


def nearest_oracle(dist, K):
    """Per query the K rows of smallest (distance, row)."""
    rows = np.arange(dist.shape[1])
    return [set(np.lexsort((rows, d))[:K].tolist()) for d in dist]


def int8_scores(codes, scales, zp, norms, qf, rows, metric):
    """The documented float32 score of the int8 search for the given rows of each query."""
    qc, qs, qz = quantize(np.atleast_2d(qf))
    qint = qc.astype(np.int32) - 128
    out = []
    for i, r in enumerate(rows):
        acc = (codes[r].astype(np.int32) - zp[r].astype(np.int32)[:, None]) @ qint[i]
        if metric == "cosine":
            qn = row_norms(qc[i:i + 1], qs[i:i + 1], qz[i:i + 1])[0]
            wq = np.float32(qs[i] / qn) if qn > 0 else np.float32(0)
            wr = np.where(norms[r] > 0, scales[r] / norms[r], np.float32(0)).astype(np.float32)
        else:
            wq, wr = np.float32(qs[i]), scales[r]
        out.append(acc.astype(np.float32) * (wr * wq))
    return out


def make(n, d, seed=0):
    rng = np.random.default_rng(seed)
    # clustered, so Hamming distances tie often and the selection's tie rule is exercised
    centers = rng.standard_normal((8, d)).astype(np.float32)
    x = centers[rng.integers(0, 8, n)] + 0.3 * rng.standard_normal((n, d)).astype(np.float32)
    return x, quantize(x)


# -- kernels ---------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", SKETCH_KERNELS)
@pytest.mark.parametrize("d", DIMS)
def test_hamming_matches_unpackbits(variant, d):
    rng = np.random.default_rng(d)
    x = rng.standard_normal((70, d)).astype(np.float32)
    q = rng.standard_normal((9, d)).astype(np.float32)
    center = rng.standard_normal(d).astype(np.float32) * 0.1
    sk = ksk.sign_bits(x, center)
    qs = ksk.sign_bits(q, center)
    assert sk.shape == (70, (d + 7) // 8)
    np.testing.assert_array_equal(sk, bits_oracle(x, center))
    _config.set_kernels({"sketch": variant})
    np.testing.assert_array_equal(ksk.hamming(sk, qs), hamming_oracle(sk, qs))


@pytest.mark.parametrize("variant", SKETCH_KERNELS)
def test_hamming_all_ones_and_zeros(variant):
    _config.set_kernels({"sketch": variant})
    for nb in (1, 8, 15, 16, 31, 32, 33, 48, 64, 65, 100):
        a = np.full((3, nb), 255, np.uint8)
        b = np.zeros((2, nb), np.uint8)
        np.testing.assert_array_equal(ksk.hamming(a, b), np.full((2, 3), 8 * nb))
        np.testing.assert_array_equal(ksk.hamming(a, a), np.zeros((3, 3)))


# every width the word loops treat differently: under 8 bytes, tails of 1..7 bytes, the
# fixed-length copies (48, 64, 96, 128) and their neighbours
WIDTHS = list(range(1, 71)) + [95, 96, 97, 127, 128, 129]


@pytest.mark.parametrize("variant", SKETCH_KERNELS)
def test_hamming_every_width_and_query_count(variant):
    rng = np.random.default_rng(11)
    _config.set_kernels({"sketch": variant})
    for nb in WIDTHS:
        # rows not a multiple of anything, queries in groups of four and left over
        sk = rng.integers(0, 256, (37, nb), dtype=np.uint8)
        for m in (1, 3, 4, 7):
            qs = rng.integers(0, 256, (m, nb), dtype=np.uint8)
            np.testing.assert_array_equal(ksk.hamming(sk, qs), hamming_oracle(sk, qs),
                                          err_msg=f"nb={nb} m={m}")


@pytest.mark.parametrize("variant", SKETCH_KERNELS)
def test_hamming_of_listed_rows(variant):
    rng = np.random.default_rng(12)
    _config.set_kernels({"sketch": variant})
    for nb in (3, 8, 38, 48, 100):
        sk = rng.integers(0, 256, (300, nb), dtype=np.uint8)
        qs = rng.integers(0, 256, (6, nb), dtype=np.uint8)
        rows = np.flatnonzero(rng.random(300) < 0.3)
        np.testing.assert_array_equal(ksk.hamming(sk, qs, rows=rows),
                                      hamming_oracle(sk[rows], qs))
    with pytest.raises(ValueError, match=r"strictly increasing.*rows\[2\] = 4 after 7"):
        ksk.hamming(sk, qs, rows=[1, 7, 4])
    with pytest.raises(ValueError, match=r"within \[0, 300\), got rows\[0\] = 300"):
        ksk.hamming(sk, qs, rows=[300])


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 1500), nb=st.sampled_from(WIDTHS), m=st.integers(1, 11),
       kfrac=st.floats(0, 1), seed=st.integers(0, 2**31), mode=st.sampled_from(
           ["auto", "rows", "queries"]), threads=st.integers(1, 3), chunks=st.integers(0, 9),
       variant=st.sampled_from(SKETCH_KERNELS), narrow=st.booleans(), allow=st.booleans())
def test_nearest_is_the_oracles_set(n, nb, m, kfrac, seed, mode, threads, chunks, variant,
                                    narrow, allow):
    rng = np.random.default_rng(seed)
    # few distinct bits (narrow) make many ties at the threshold
    hi = 2 if narrow else 256
    sk = rng.integers(0, hi, (n, nb), dtype=np.uint8)
    qs = rng.integers(0, hi, (m, nb), dtype=np.uint8)
    rows = np.flatnonzero(rng.random(n) < 0.5) if allow else None
    if rows is not None and rows.size == 0:
        rows = np.array([n - 1])
    npos = n if rows is None else len(rows)
    K = max(1, int(kfrac * npos))
    _config.set_kernels({"sketch": variant})
    got, dist = ksk.nearest(sk, n, qs, K, threads, mode, rows=rows, n_chunks=chunks)
    listed = np.arange(n) if rows is None else rows
    oracle = hamming_oracle(sk[listed], qs)
    expect = nearest_oracle(oracle, K)
    for i in range(m):
        assert set(got[i].tolist()) == {int(listed[j]) for j in expect[i]}
        assert (np.diff(got[i]) > 0).all()
        np.testing.assert_array_equal(dist[i], hamming_oracle(sk[got[i]], qs[i:i + 1])[0])


@pytest.mark.parametrize("variant", SKETCH_KERNELS)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_nearest_chunks_sharing_bounds(variant, threads):
    # many chunks, each cut many times, with ties at every threshold: a bound published by one
    # chunk must never refuse a row that ties into the K nearest of another
    rng = np.random.default_rng(threads)
    _config.set_kernels({"sketch": variant})
    sk = rng.integers(0, 2, (6000, 5), dtype=np.uint8)
    qs = rng.integers(0, 2, (3, 5), dtype=np.uint8)
    oracle = hamming_oracle(sk, qs)
    for K in (1, 7, 40):
        for chunks in (2, 9, 31):
            got, _ = ksk.nearest(sk, 6000, qs, K, threads, "rows", n_chunks=chunks)
            assert [set(r.tolist()) for r in got] == nearest_oracle(oracle, K)


@pytest.mark.parametrize("variant", SKETCH_KERNELS)
@pytest.mark.parametrize("narrow", [False, True])
def test_nearest_one_query_48_bytes(variant, narrow):
    # d = 384 has its own one-query loop (avx2: four rows per step, compared with the limit
    # together, rows prefetched ahead): row counts around its step and its prefetch distance,
    # sets cut many times (small K) or rarely, allow-lists, chunks that start mid-step
    rng = np.random.default_rng(48 + narrow)
    _config.set_kernels({"sketch": variant})
    hi = 2 if narrow else 256
    sk = rng.integers(0, hi, (3001, 48), dtype=np.uint8)
    for n in (1, 3, 4, 5, 67, 68, 69, 70, 71, 3001):
        q = rng.integers(0, hi, (1, 48), dtype=np.uint8)
        for rows in (None, np.flatnonzero(rng.random(n) < 0.6)):
            if rows is not None and rows.size == 0:
                continue
            listed = np.arange(n) if rows is None else rows
            oracle = hamming_oracle(sk[listed], q)
            for K in sorted({1, min(3, len(listed)), max(1, len(listed) // 7), len(listed)}):
                for threads, mode, chunks in ((1, "queries", 0), (2, "rows", 7)):
                    got, dist = ksk.nearest(sk, n, q, K, threads, mode, rows=rows,
                                            n_chunks=chunks)
                    assert set(got[0].tolist()) == {int(listed[j])
                                                    for j in nearest_oracle(oracle, K)[0]}
                    np.testing.assert_array_equal(dist[0], hamming_oracle(sk[got[0]], q)[0])


@pytest.mark.parametrize("variant", SKETCH_KERNELS)
def test_nearest_two_or_three_queries_in_blocks(variant):
    # two or three queries pass over the rows one after the other in blocks of 128 KB: rows
    # enough for several blocks, each set's limit carried from block to block
    rng = np.random.default_rng(23)
    _config.set_kernels({"sketch": variant})
    for nb in (48, 64):
        sk = rng.integers(0, 4, (9001, nb), dtype=np.uint8)
        for m in (2, 3):
            qs = rng.integers(0, 4, (m, nb), dtype=np.uint8)
            for rows in (None, np.flatnonzero(rng.random(9001) < 0.8)):
                listed = np.arange(9001) if rows is None else rows
                oracle = hamming_oracle(sk[listed], qs)
                for K in (1, 60, 4000):
                    got, dist = ksk.nearest(sk, 9001, qs, K, 1, rows=rows)
                    assert [set(r.tolist()) for r in got] == [
                        {int(listed[j]) for j in e} for e in nearest_oracle(oracle, K)]
                    for i in range(m):
                        np.testing.assert_array_equal(dist[i], hamming_oracle(sk[got[i]],
                                                                              qs[i:i + 1])[0])


def test_nearest_restricted_rows_and_bad_sizes():
    rng = np.random.default_rng(3)
    sk = rng.integers(0, 256, (500, 6), dtype=np.uint8)
    qs = rng.integers(0, 256, (4, 6), dtype=np.uint8)
    rows, _ = ksk.nearest(sk, 300, qs, 20, 2)
    assert rows.max() < 300
    assert [set(r.tolist()) for r in rows] == nearest_oracle(hamming_oracle(sk[:300], qs), 20)
    with pytest.raises(ValueError, match="K must be within"):
        ksk.nearest(sk, 300, qs, 301, 1)
    with pytest.raises(ValueError, match="n_rows"):
        ksk.nearest(sk, 501, qs, 3, 1)
    with pytest.raises(ValueError, match="bytes like the rows"):
        ksk.nearest(sk, 500, qs[:, :5].copy(), 3, 1)
    with pytest.raises(TypeError, match="uint8"):
        ksk.hamming(sk.astype(np.int16), qs)
    with pytest.raises(ValueError, match=r"K must be within \[1, 2\]"):
        ksk.nearest(sk, 300, qs, 3, 1, rows=[5, 9])
    with pytest.raises(ValueError, match=r"within \[0, 300\), got rows\[1\] = 300"):
        ksk.nearest(sk, 300, qs, 1, 1, rows=[5, 300])
    with pytest.raises(ValueError, match="n_chunks must be >= 0"):
        ksk.nearest(sk, 300, qs, 1, 1, n_chunks=-1)


# -- search ----------------------------------------------------------------------------------

@pytest.mark.parametrize("metric", ["cosine", "dot"])
@pytest.mark.parametrize("d", [13, 64, 300])
def test_prefilter_scores_equal_int8_oracle_on_candidates(metric, d):
    x, (codes, scales, zp) = make(1500, d, seed=d)
    norms = row_norms(codes, scales, zp)
    sk, center = compute_sketch(codes, scales, zp)
    rng = np.random.default_rng(7)
    q = x[rng.integers(0, 1500, 6)] + 0.2 * rng.standard_normal((6, d)).astype(np.float32)
    k, over = 10, 8
    s, r = search(codes, scales, q, k, zero_points=zp, metric=metric, prefilter="sketch",
                  oversample=over, sketch=sk, sketch_center=center, n_threads=2)
    qsk = ksk.sign_bits(q, center)
    dist = hamming_oracle(sk, qsk)
    cands = [np.array(sorted(c)) for c in nearest_oracle(dist, k * over)]
    exact = int8_scores(codes, scales, zp, norms, q, cands, metric)
    for i in range(len(q)):
        order = np.lexsort((cands[i], -exact[i]))[:k]
        np.testing.assert_array_equal(r[i], cands[i][order])
        np.testing.assert_array_equal(s[i], exact[i][order])


@pytest.mark.parametrize("m", [1, 2, 4])
def test_score_candidates_split_over_threads(monkeypatch, m):
    # fewer queries than threads: each query's candidates are scored in parts, one heap per
    # part, merged; every row twice (equal scores), so the merge must keep the lower rows
    x, (codes, scales, zp) = make(1500, 300, seed=5)
    codes, scales, zp = (np.concatenate([a, a]) for a in (codes, scales, zp))
    norms = row_norms(codes, scales, zp)
    sk, center = compute_sketch(codes, scales, zp)
    rng = np.random.default_rng(m)
    q = x[rng.integers(0, 1500, m)] + 0.2 * rng.standard_normal((m, 300)).astype(np.float32)
    calls = []
    real = ksk.score_candidates
    monkeypatch.setattr(ksk, "score_candidates", lambda *a: calls.append(a) or real(*a))
    k, over = 10, 200  # 2000 candidates of 300 bytes per query: enough for threads
    search(codes, scales, q, k, zero_points=zp, prefilter="sketch", oversample=over,
           sketch=sk, sketch_center=center)
    (args,) = calls
    dist = hamming_oracle(sk, ksk.sign_bits(q, center))
    cands = [np.array(sorted(c)) for c in nearest_oracle(dist, k * over)]
    np.testing.assert_array_equal(args[4], np.array(cands))
    exact = int8_scores(codes, scales, zp, norms, q, cands, "cosine")
    for threads in (1, 2, 3):
        s, r = real(*args[:-1], threads)
        for i in range(m):
            order = np.lexsort((cands[i], -exact[i]))[:k]
            assert (exact[i][order][:-1] == exact[i][order][1:]).any()  # ties in the top k
            np.testing.assert_array_equal(r[i], cands[i][order])
            np.testing.assert_array_equal(s[i], exact[i][order])


def test_prefilter_with_every_candidate_is_the_plain_search():
    x, (codes, scales, zp) = make(800, 40, seed=1)
    sk, center = compute_sketch(codes, scales, zp)
    q = x[:5] + 0.01
    for kwargs in ({}, {"rescore": 3}, {"restrict": 500}, {"metric": "dot"}):
        a = search(codes, scales, q, 7, zero_points=zp, **kwargs)
        b = search(codes, scales, q, 7, zero_points=zp, prefilter="sketch", oversample=1000,
                   sketch=sk, sketch_center=center, **kwargs)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    one = search(codes, scales, q[0], 7, zero_points=zp, prefilter="sketch", sketch=sk,
                 sketch_center=center)
    assert one[0].shape == (7,)


def _sub_search(codes, scales, zp, norms, sk, center, q, k, keep, **kwargs):
    """The oracle of a sketch search with an allow-list: the same search over a store holding
    only the allowed rows (their codes, scales, norms and sketch rows; the same center), its
    rows mapped back."""
    s, r = search(codes[keep], scales[keep], q, k, zero_points=zp[keep],
                  norms=None if norms is None else norms[keep], prefilter="sketch",
                  sketch=sk[keep], sketch_center=center, **kwargs)
    return s, keep[r]


@pytest.mark.parametrize("metric", ["cosine", "dot"])
@pytest.mark.parametrize("threads", [1, 2])
def test_prefilter_with_allow_is_a_store_of_the_allowed_rows(metric, threads):
    x, (codes, scales, zp) = make(3000, 72, seed=9)
    norms = row_norms(codes, scales, zp)
    sk, center = compute_sketch(codes, scales, zp)
    rng = np.random.default_rng(1)
    q = x[rng.integers(0, 3000, 7)] + 0.3 * rng.standard_normal((7, 72)).astype(np.float32)
    mask = rng.random(3000) < 0.3
    keep = np.flatnonzero(mask)
    for kwargs in ({"oversample": 4}, {"oversample": 3, "rescore": 2}, {}):
        want = _sub_search(codes, scales, zp, norms, sk, center, q, 10, keep, metric=metric,
                           n_threads=threads, **kwargs)
        for allow in (mask, keep, list(keep[::-1])):  # a mask, rows, rows in any order
            got = search(codes, scales, q, 10, zero_points=zp, norms=norms, metric=metric,
                         prefilter="sketch", sketch=sk, sketch_center=center, allow=allow,
                         n_threads=threads, **kwargs)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
            assert np.isin(got[1], keep).all()
    # fewer allowed rows than k or than the candidates: every allowed row, ranked exactly
    few = keep[:6]
    got = search(codes, scales, q, 10, zero_points=zp, metric=metric, prefilter="sketch",
                 sketch=sk, sketch_center=center, allow=few)
    plain = search(codes, scales, q, 10, zero_points=zp, metric=metric, allow=few)
    assert got[1].shape == (7, 6)
    np.testing.assert_array_equal(got[0], plain[0])
    np.testing.assert_array_equal(got[1], plain[1])
    none = search(codes, scales, q[0], 10, zero_points=zp, prefilter="sketch", sketch=sk,
                  sketch_center=center, allow=np.zeros(3000, bool))
    assert none[0].shape == (0,) and none[1].shape == (0,)


def test_prefilter_with_restrict_and_allow():
    x, (codes, scales, zp) = make(2000, 50, seed=10)
    sk, center = compute_sketch(codes, scales, zp)
    q = x[[3, 1500, 777]] + 0.05
    # restrict: a store of the first rows (same sketch rows and center)
    got = search(codes, scales, q, 8, zero_points=zp, prefilter="sketch", oversample=5,
                 sketch=sk, sketch_center=center, restrict=1200)
    want = search(codes[:1200], scales[:1200], q, 8, zero_points=zp[:1200],
                  prefilter="sketch", oversample=5, sketch=sk[:1200], sketch_center=center)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[1].max() < 1200
    # restrict and allow: the allowed rows below restrict
    allow = np.arange(0, 2000, 3)
    got = search(codes, scales, q, 8, zero_points=zp, prefilter="sketch", oversample=5,
                 sketch=sk, sketch_center=center, restrict=1200, allow=allow)
    want = _sub_search(codes, scales, zp, None, sk, center, q, 8, allow[allow < 1200],
                       oversample=5)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_prefilter_refuses_threshold_and_l2():
    x, (codes, scales, zp) = make(50, 16)
    sk, center = compute_sketch(codes, scales, zp)
    kw = dict(prefilter="sketch", sketch=sk, sketch_center=center)
    with pytest.raises(ValueError, match=r"ranks rows by angle.*threshold="):
        search(codes, scales, x[0], zero_points=zp, threshold=0.5, **kw)
    with pytest.raises(ValueError, match=r"ranks rows by angle.*metric='l2'"):
        search(codes, scales, x[0], zero_points=zp, metric="l2", **kw)


def test_prefilter_argument_errors():
    x, (codes, scales, zp) = make(50, 16)
    sk, center = compute_sketch(codes, scales, zp)
    q = x[0]
    with pytest.raises(ValueError, match="needs a sketch"):
        search(codes, scales, q, prefilter="sketch")
    with pytest.raises(ValueError, match="prefilter must be None or 'sketch'"):
        search(codes, scales, q, prefilter="bits", sketch=sk, sketch_center=center)
    with pytest.raises(ValueError, match="oversample must be >= 1"):
        search(codes, scales, q, prefilter="sketch", oversample=0, sketch=sk,
               sketch_center=center)
    with pytest.raises(TypeError, match="oversample must be an int"):
        search(codes, scales, q, prefilter="sketch", oversample=2.5, sketch=sk,
               sketch_center=center)
    with pytest.raises(ValueError, match="only used with prefilter"):
        search(codes, scales, q, oversample=4)
    with pytest.raises(ValueError, match=r"sketch must be uint8 of shape \(50, 2\)"):
        search(codes, scales, q, prefilter="sketch", sketch=sk[:, :1], sketch_center=center)
    bad = center.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="at column 3"):
        search(codes, scales, q, prefilter="sketch", sketch=sk, sketch_center=bad)


# -- the sketch itself, the store, compress --------------------------------------------------

def test_compute_sketch_definition():
    _, (codes, scales, zp) = make(300, 21)
    sk, center = compute_sketch(codes, scales, zp)
    xh = dequantize(codes, scales, zp)
    np.testing.assert_array_equal(center, (xh.astype(np.float64).sum(0) / 300).astype(np.float32))
    np.testing.assert_array_equal(sk, bits_oracle(xh, center))
    assert (np.unpackbits(sk, axis=1, bitorder="little")[:, 21:] == 0).all()  # padding


def test_writer_sketch_equals_sketch_of_finished_store(tmp_path, monkeypatch):
    # small blocks so the two passes go over many blocks and appends
    monkeypatch.setattr("embq._sketch.BLOCK_BYTES", 4 * 33 * 100)
    x, _ = make(1234, 33, seed=5)
    path = tmp_path / "s.h5"
    with StoreWriter(path, 33, has_keys=False, sketch=True) as w:
        for a in range(0, 1234, 500):
            w.append(x[a:a + 500])
    with embq.open(path) as s:
        sk, center = compute_sketch(s.codes, s.scales, s.zero_points)
        np.testing.assert_array_equal(s.sketch, sk)
        np.testing.assert_array_equal(s.sketch_center, center)
        assert not s.sketch.flags.writeable


def test_compress_writes_sketch_and_no_sketch(tmp_path):
    x, _ = make(700, 24, seed=2)
    np.save(tmp_path / "x.npy", x)
    with_sk = embq.compress(tmp_path / "x.npy", tmp_path / "a.h5")
    without = embq.compress(tmp_path / "x.npy", tmp_path / "b.h5", sketch=False)
    assert with_sk["sketch_bytes"] == 700 * 3 + 4 * 24
    assert without["sketch_bytes"] == 0
    with embq.open(tmp_path / "a.h5") as a, embq.open(tmp_path / "b.h5") as b:
        assert b.sketch is None and b.sketch_center is None
        np.testing.assert_array_equal(a.codes, b.codes)
        sk, center = compute_sketch(a.codes, a.scales, a.zero_points)
        np.testing.assert_array_equal(a.sketch, sk)
        np.testing.assert_array_equal(a.sketch_center, center)
        q = x[:3]
        np.testing.assert_array_equal(
            a.search(q, 5, prefilter="sketch", oversample=700)[1], a.search(q, 5)[1])
        with pytest.raises(ValueError, match="has no sketch"):
            b.search(q, 5, prefilter="sketch")


def test_add_sketch_in_place_and_to_output(tmp_path):
    x, _ = make(400, 19, seed=4)
    np.save(tmp_path / "x.npy", x)
    embq.compress(tmp_path / "x.npy", tmp_path / "a.h5")
    embq.compress(tmp_path / "x.npy", tmp_path / "b.h5", sketch=False)
    assert add_sketch(tmp_path / "b.h5")["added"]
    assert not add_sketch(tmp_path / "b.h5")["added"]
    add_sketch(tmp_path / "b.h5", tmp_path / "c.h5")
    with embq.open(tmp_path / "a.h5") as a:
        for other in ("b.h5", "c.h5"):
            with embq.open(tmp_path / other) as b:
                np.testing.assert_array_equal(a.sketch, b.sketch)
                np.testing.assert_array_equal(a.sketch_center, b.sketch_center)
    assert sorted(os.listdir(tmp_path)) == ["a.h5", "b.h5", "c.h5", "x.npy"]  # no temp left


def test_cli_sketch_and_info(tmp_path, capsys):
    x, _ = make(300, 16, seed=6)
    np.save(tmp_path / "x.npy", x)
    assert main(["compress", "-q", "--no-sketch", str(tmp_path / "x.npy"),
                 str(tmp_path / "a.h5")]) == 0
    assert main(["info", str(tmp_path / "a.h5")]) == 0
    assert "sketch       none" in capsys.readouterr().out
    assert main(["sketch", str(tmp_path / "a.h5")]) == 0
    assert "sketch of 300 rows x 16 added" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "a.h5")]) == 0
    assert "(2 bytes per row)" in capsys.readouterr().out
    assert main(["sketch", str(tmp_path / "a.h5"), "-o", str(tmp_path / "a.h5")]) == 0
    assert main(["sketch", str(tmp_path / "a.h5"), "-o", str(tmp_path / "x.npy")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["sketch", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.h5")]) == 2
    assert not (tmp_path / "y.h5").exists()


@pytest.mark.parametrize("change", ["shape", "dtype", "center_shape", "only_one", "nan"])
def test_open_refuses_a_bad_sketch(tmp_path, change):
    x, _ = make(100, 20, seed=8)
    path = tmp_path / "s.h5"
    with StoreWriter(path, 20, has_keys=False, sketch=True) as w:
        w.append(x)
    with h5py.File(path, "r+") as f:
        if change == "shape":
            del f["sketch"]
            f.create_dataset("sketch", data=np.zeros((100, 2), np.uint8))
        elif change == "dtype":
            del f["sketch"]
            f.create_dataset("sketch", data=np.zeros((100, 3), np.int8))
        elif change == "center_shape":
            del f["sketch_center"]
            f.create_dataset("sketch_center", data=np.zeros(19, np.float32))
        elif change == "only_one":
            del f["sketch_center"]
        else:
            f["sketch_center"][5] = np.inf
    expect = {"shape": r"'sketch' has shape \(100, 2\), expected \(100, 3\)",
              "dtype": "'sketch' has dtype", "center_shape": r"'sketch_center' has shape",
              "only_one": "missing dataset 'sketch_center'", "nan": "at column 5"}[change]
    with pytest.raises(StoreError, match=expect):
        embq.open(path)


# -- the most_similar family --------------------------------------------------------------

@pytest.fixture
def keyed_store(tmp_path):
    x, _ = make(1200, 32, seed=12)
    path = tmp_path / "kv.h5"
    with StoreWriter(path, 32, has_keys=True, sketch=True) as w:
        w.append(x, keys=[f"w{i}" for i in range(1200)])
    with embq.open(path) as store:
        yield store


def test_most_similar_family_takes_the_sketch(keyed_store):
    s = keyed_store
    sk = dict(prefilter="sketch", oversample=3)
    # with the sketch: what store.search with the same options gives
    q = np.asarray(s["w5"], np.float32)
    scores, rows = s.search(q / np.linalg.norm(q), 6, rescore=4, **sk)
    want = [(f"w{r}", float(v)) for v, r in zip(scores, rows) if r != 5][:5]
    assert s.most_similar("w5", topn=5, **sk) == want
    assert s.similar_by_key("w5", topn=5, **sk) == want
    # the batch searches the stored vectors as they are (the sketch of a query depends on
    # its length: the center is subtracted)
    scores, rows = s.search(s[["w5", "w9"]], 6, rescore=4, **sk)
    assert s.most_similar_batch(["w5", "w9"], topn=5, **sk) == [
        [(f"w{r}", float(v)) for v, r in zip(scores[i], rows[i]) if r != own][:5]
        for i, own in enumerate((5, 9))]
    scores, rows = s.search(q / np.linalg.norm(q), 5, rescore=4, **sk)  # unit, as searched
    assert s.similar_by_vector(s["w5"], topn=5, **sk) == [
        (f"w{r}", float(v)) for v, r in zip(scores, rows)]
    # few candidates change the answer (so the options do reach the search) ...
    assert s.most_similar("w5", topn=20, prefilter="sketch", oversample=1) != \
        s.most_similar("w5", topn=20)
    # ... every candidate gives the plain search, and the default is the plain search
    for key in ("w5", "w700"):
        full = s.most_similar(key, topn=10, prefilter="sketch", oversample=1000)
        assert full == s.most_similar(key, topn=10)
    # with allow= and restrict_vocab too
    allow = [f"w{i}" for i in range(0, 1200, 2)]
    got = s.most_similar("w5", topn=5, allow=allow, restrict_vocab=900, **sk)
    assert all(int(key[1:]) % 2 == 0 and int(key[1:]) < 900 for key, _ in got)
    assert len(got) == 5
    with pytest.raises(ValueError, match="prefilter= and oversample= choose the candidates"):
        s.most_similar("w5", topn=None, prefilter="sketch")
    with pytest.raises(ValueError, match="oversample is only used with prefilter='sketch'"):
        s.similar_by_key("w5", oversample=3)
