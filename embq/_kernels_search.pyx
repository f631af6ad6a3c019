# cython: language_level=3
"""Search kernels: exact int32 scores of uint8 rows against int8 queries, streamed into top-k heaps.

The entry points check sizes (O(1)) so that no call can make a loop read out of bounds;
:func:`raw_acc`, the test hook, checks everything. Values (query range, the int32 bound on
``d``, finite scales) are checked by the caller, ``embq._search``. The loops run without the GIL
and never raise.

Work is split in one of two ways:

* rows mode (few queries): the rows are cut into a few contiguous chunks handed to threads; each
  chunk keeps its own heap per query, and the heaps are merged at the end;
* queries mode (many queries): query blocks are handed to threads; each block scans every row
  and fills the output heaps directly.

Either way a thread works on a block of ``_ROW_BLOCK`` rows against ``_QUERY_BLOCK`` queries at a
time: the int32 accumulators of that block go into a small buffer, are turned into scores and
offered to the heaps. No m x n score matrix is ever built.

A single query is bound by memory bandwidth, not arithmetic: its chunks go through
``embq_scan1`` (``_search_simd.h``), one C loop per chunk that computes, scores and selects with
the next rows prefetched, which keeps it close to the time of reading the codes once.
"""

import numpy as np

cimport cython
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport sqrt
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t

from embq._kernels_common cimport EMBQ_V_COUNT, embq_openmp_enabled, embq_variant_runs
from embq._kernels_search cimport (
    EMBQ_QSTRIDE, embq_dot_fn, embq_dot_get,
    embq_fill_query_tail, embq_heap_init, embq_heap_offer, embq_heap_sort, embq_row_weights,
    embq_scan1, embq_select_fn, embq_select_get,
)

from embq._config import _init_kernels
from embq._kernels_common import VARIANTS

DEF _ROW_BLOCK = 256
DEF _QUERY_BLOCK = 64
# rows mode merges the per-chunk heaps on one thread below this many entries
DEF _SERIAL_MERGE = 1 << 16

# Variant ids (EMBQ_V_*, _common.h) of the search_dot and search_select families in use.
cdef int _dot_id = 0
cdef int _sel_id = 0


def kernel_variants():
    """Return ``{"search_dot": {variant: runs}, "search_select": {...}}`` for the variants this
    build has, best last (see embq._config)."""
    cdef int v
    return {
        "search_dot": {VARIANTS[v]: bool(embq_variant_runs(v)) for v in range(EMBQ_V_COUNT)
                       if embq_dot_get(v) != NULL},
        "search_select": {VARIANTS[v]: bool(embq_variant_runs(v)) for v in range(EMBQ_V_COUNT)
                          if embq_select_get(v) != NULL},
    }


def selected_kernels():
    """Return the variants in use, e.g. ``{"search_dot": "avx512vnni", "search_select": "avx512"}``."""
    return {"search_dot": VARIANTS[_dot_id], "search_select": VARIANTS[_sel_id]}


def _use_kernel(family, name):
    """Run variant ``name`` of ``family`` (embq._config validates the request)."""
    global _dot_id, _sel_id
    if family not in ("search_dot", "search_select") or not kernel_variants()[family].get(name):
        raise ValueError(f"the {family} family has no variant {name!r} this CPU can run")
    if family == "search_dot":
        _dot_id = VARIANTS.index(name)
    else:
        _sel_id = VARIANTS.index(name)


_init_kernels(kernel_variants(), _use_kernel)


def query_stride(int64_t d):
    """Bytes per packed query row for dimension ``d``."""
    return EMBQ_QSTRIDE(d)


def pack_queries(const int8_t[:, ::1] qint):
    """Copy int8 queries (m, d) into the padded layout the kernels read (zero pad + tail vector)."""
    cdef int64_t m = qint.shape[0], d = qint.shape[1], ld = EMBQ_QSTRIDE(d), i
    out = np.zeros((m, ld), dtype=np.int8)
    cdef int8_t[:, ::1] o = out
    with nogil:
        for i in range(m):
            if d > 0:
                o[i, :d] = qint[i, :]
            embq_fill_query_tail(&o[i, 0], d)
    return out


@cython.cdivision(True)
def prepare_queries(const uint8_t[:, ::1] qc, const float[::1] qs, bint cosine):
    """Turn quantized queries (codes around 128, scales) into what :func:`topk` reads.

    Returns ``(packed, sumq, wq)``: the int8 values ``code - 128`` in the padded layout of
    :func:`pack_queries`, their int32 sums, and each query's weight: its scale (dot) or
    ``scale / norm`` (cosine), with the norm defined as :func:`embq._quantize.row_norms` defines
    it, ``float32(float64(scale) * sqrt(float64(sum (code - 128)**2)))``, and weight 0 for a zero
    norm. One pass in C instead of a chain of small numpy calls, which matters when one query
    is searched at a time.
    """
    cdef int64_t m = qc.shape[0], d = qc.shape[1], ld = EMBQ_QSTRIDE(d), i, j
    cdef int64_t ss
    cdef int32_t s, v
    cdef float nrm
    if qs.shape[0] != m:
        raise ValueError(f"qs must have shape ({m},), got ({qs.shape[0]},)")
    packed = np.zeros((m, ld), dtype=np.int8)
    sumq = np.empty(m, dtype=np.int32)
    wq = np.empty(m, dtype=np.float32)
    cdef int8_t[:, ::1] o = packed
    cdef int32_t[::1] sq = sumq
    cdef float[::1] w = wq
    with nogil:
        for i in range(m):
            s = 0
            ss = 0
            for j in range(d):
                v = <int32_t>qc[i, j] - 128
                o[i, j] = <int8_t>v
                s = s + v
                ss = ss + v * v
            embq_fill_query_tail(&o[i, 0], d)
            sq[i] = s
            if cosine:
                nrm = <float>(<double>qs[i] * sqrt(<double>ss))
                w[i] = qs[i] / nrm if nrm > 0 else 0
            else:
                w[i] = qs[i]
    return packed, sumq, wq


_INT32_MAX = 2**31 - 1


def raw_acc(codes, zero_points, qint):
    """Exact int32 accumulators ``out[i, r] = sum_j (codes[r, j] - zp[r]) * qint[i, j]``.

    The test hook that exposes what the selected dot kernel computes before any scaling, so
    the tests can compare every variant with numpy's int32 matrix product (small inputs: the
    whole (m, n) result is built). Unlike the internal entry points it checks everything
    itself, because it is callable from Python with any arrays and must never read out of
    bounds or return a wrong number silently.

    Parameters
    ----------
    codes : ndarray of uint8, shape (n, d)
    zero_points : ndarray of uint8, shape (n,), or None
        Per-row zero points; None means 128 for every row.
    qint : ndarray of int8, shape (m, d)
        Query values within [-127, 127]: the AVX2 sign trick negates query bytes, and -128
        has no int8 negation.

    Returns
    -------
    ndarray of int32, shape (m, n)

    Raises
    ------
    TypeError
        For a wrong dtype.
    ValueError
        For a wrong shape or length, a query value of -128, or a dimension too large for
        exact int32 accumulators.
    """
    codes = np.asarray(codes)
    qint = np.asarray(qint)
    if codes.dtype != np.uint8:
        raise TypeError(f"codes must be a uint8 array, got dtype {codes.dtype}")
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D (n, d), got shape {codes.shape}")
    if qint.dtype != np.int8:
        raise TypeError(f"qint must be an int8 array, got dtype {qint.dtype}")
    if qint.ndim != 2 or qint.shape[1] != codes.shape[1]:
        raise ValueError(f"qint must have shape (m, {codes.shape[1]}) to match the codes, "
                         f"got {qint.shape}")
    if qint.size and int(qint.min()) < -127:
        raise ValueError(f"qint values must be within [-127, 127], got {int(qint.min())}")
    worst = 128
    if zero_points is not None:
        zero_points = np.asarray(zero_points)
        if zero_points.dtype != np.uint8:
            raise TypeError(f"zero_points must be a uint8 array, got dtype {zero_points.dtype}")
        if zero_points.shape != (codes.shape[0],):
            raise ValueError(f"zero_points must have shape ({codes.shape[0]},) (one per row), "
                             f"got {zero_points.shape}")
        zero_points = np.ascontiguousarray(zero_points)
        if zero_points.size:
            worst = max(int(zero_points.max()), 255 - int(zero_points.min()), 1)
    if codes.shape[1] > _INT32_MAX // (worst * 127):
        raise ValueError(f"dimension {codes.shape[1]} is too large for exact int32 accumulators "
                         f"(at most {_INT32_MAX // (worst * 127)} with these zero points)")
    return _raw_acc(np.ascontiguousarray(codes), zero_points, np.ascontiguousarray(qint))


cdef _raw_acc(const uint8_t[:, ::1] codes, zero_points, const int8_t[:, ::1] qint):
    """:func:`raw_acc` after its checks."""
    cdef int64_t n = codes.shape[0], d = codes.shape[1], m = qint.shape[0]
    out = np.zeros((m, n), dtype=np.int32)
    if n == 0 or m == 0:
        return out
    qpack = pack_queries(qint)
    sumq = np.asarray(qint, dtype=np.int32).sum(axis=1, dtype=np.int32)
    cdef const int8_t[:, ::1] qp = qpack
    cdef const int32_t[::1] sq = sumq
    cdef const uint8_t[::1] zpv
    cdef const uint8_t *zptr = NULL
    if zero_points is not None:
        zpv = zero_points
        zptr = &zpv[0]
    cdef int32_t[:, ::1] o = out
    cdef embq_dot_fn dot = embq_dot_get(_dot_id)
    with nogil:
        dot(&codes[0, 0], d, n, d, zptr, &qp[0, 0], qp.shape[1], &sq[0], m, &o[0, 0], n)
    return out


@cython.final
cdef class _Job:
    """Pointers and sizes of one search, shared read-only by all threads."""
    cdef const uint8_t *codes
    cdef const float *scales
    cdef const uint8_t *zp
    cdef const float *norms
    cdef int64_t d
    cdef const int8_t *qp
    cdef int64_t ldq
    cdef const int32_t *sumq
    cdef const float *wq
    cdef int64_t k
    cdef bint cosine
    cdef embq_dot_fn dot
    cdef embq_select_fn sel
    cdef int dot_id
    cdef int sel_id


cdef inline const float* _block_weights(_Job job, int64_t rb, int64_t nr,
                                        float *wbuf) noexcept nogil:
    """Row weights of rows [rb, rb + nr), shared by every query of a block: the scales (dot)
    or scale / norm (cosine; 0 for a zero row), so scoring is one multiply per row."""
    if job.cosine:
        embq_row_weights(job.sel_id, job.scales + rb, job.norms + rb, nr, wbuf)
        return wbuf
    return job.scales + rb


cdef void _scan(_Job job, int64_t r0, int64_t r1, int64_t q0, int64_t q1, float *hv,
                int64_t *hi, int32_t *acc, float *wbuf) noexcept nogil:
    """Offer rows [r0, r1) to the heaps of queries [q0, q1) (heap of query q at (q - q0) * k)."""
    cdef int64_t rb = r0, nr, qb, nq, qi, k = job.k
    cdef const uint8_t *zp
    cdef const float *w
    while rb < r1:
        nr = r1 - rb
        if nr > _ROW_BLOCK:
            nr = _ROW_BLOCK
        zp = job.zp + rb if job.zp != NULL else NULL
        w = _block_weights(job, rb, nr, wbuf)
        qb = q0
        while qb < q1:
            nq = q1 - qb
            if nq > _QUERY_BLOCK:
                nq = _QUERY_BLOCK
            job.dot(job.codes + rb * job.d, job.d, nr, job.d, zp, job.qp + qb * job.ldq, job.ldq,
                    job.sumq + qb, nq, acc, _ROW_BLOCK)
            for qi in range(nq):
                job.sel(acc + qi * _ROW_BLOCK, nr, w, NULL, job.wq[qb + qi], rb,
                        hv + (qb - q0 + qi) * k, hi + (qb - q0 + qi) * k, k)
            qb += nq
        rb += nr


cdef void _merge(const float *hv, const int64_t *hi, int64_t nchunks, int64_t m, int64_t k,
                 int64_t q, float *ov, int64_t *oi) noexcept nogil:
    """Merge query q's heaps of every chunk (laid out (nchunks, m, k)) into a sorted top-k."""
    cdef int64_t c, t, base
    embq_heap_init(ov, oi, k)
    for c in range(nchunks):
        base = (c * m + q) * k
        for t in range(k):
            embq_heap_offer(ov, oi, k, hv[base + t], hi[base + t])
    embq_heap_sort(ov, oi, k)


cdef void _scan_chunk(_Job job, int64_t r0, int64_t r1, int64_t m, float *hv, int64_t *hi,
                     int32_t *acc, float *wbuf) noexcept nogil:
    """Rows mode: offer rows [r0, r1) to all m queries' heaps (one query: the fused scan)."""
    if m == 1:
        embq_scan1(job.dot_id, job.sel_id, job.codes + r0 * job.d, job.d, r1 - r0, job.d,
                   job.zp + r0 if job.zp != NULL else NULL, job.qp, job.ldq, job.sumq[0],
                   job.scales + r0, job.norms + r0 if job.cosine else NULL, job.wq[0], r0,
                   hv, hi, job.k)
    else:
        _scan(job, r0, r1, 0, m, hv, hi, acc, wbuf)


cdef _check_job(const uint8_t[:, ::1] codes, const float[::1] scales, zero_points, norms,
                int64_t n_rows, const int8_t[:, ::1] qp, const int32_t[::1] sq,
                const float[::1] wq, bint cosine, int n_threads):
    """The O(1) checks that keep :func:`topk` and :func:`all_scores` inside their arrays.

    The values (query range, finite scales, the int32 bound on d) are the caller's to check;
    these are only the sizes, so a wrong call raises instead of reading out of bounds.
    """
    cdef int64_t m = qp.shape[0], d = codes.shape[1]
    if d < 1:
        raise ValueError(f"codes must have dimension >= 1, got shape ({codes.shape[0]}, {d})")
    if qp.shape[1] != EMBQ_QSTRIDE(d) or sq.shape[0] != m or wq.shape[0] != m:
        raise ValueError(
            f"packed queries must have shape ({m}, {EMBQ_QSTRIDE(d)}) with {m} sums and weights, "
            f"got ({qp.shape[0]}, {qp.shape[1]}), {sq.shape[0]}, {wq.shape[0]}")
    if not 0 <= n_rows <= codes.shape[0]:
        raise ValueError(f"n_rows must be within [0, {codes.shape[0]}], got {n_rows}")
    if scales.shape[0] < n_rows:
        raise ValueError(f"scales must hold at least n_rows={n_rows} values, got "
                         f"{scales.shape[0]}")
    if zero_points is not None and len(zero_points) < n_rows:
        raise ValueError(f"zero_points must hold at least n_rows={n_rows} values, got "
                         f"{len(zero_points)}")
    if cosine and (norms is None or len(norms) < n_rows):
        raise ValueError(f"cosine needs norms of at least n_rows={n_rows} values, got "
                         f"{None if norms is None else len(norms)}")
    if n_threads < 1:
        raise ValueError(f"n_threads must be >= 1, got {n_threads}")


cdef void _score_rows(_Job job, int64_t r0, int64_t r1, int64_t m, float *out, int64_t ldo,
                      int32_t *acc, float *wbuf) noexcept nogil:
    """Scores of rows [r0, r1) for all m queries into out[q * ldo + r] (no selection).

    The same arithmetic as the selection kernels, ``float(acc) * (w_row * w_query)``, so a
    score here has the bits :func:`topk` reports for that row.
    """
    cdef int64_t rb = r0, nr, qb, nq, qi, r
    cdef const uint8_t *zp
    cdef const float *w
    cdef float wqi
    cdef float *o
    cdef int32_t *a
    while rb < r1:
        nr = r1 - rb
        if nr > _ROW_BLOCK:
            nr = _ROW_BLOCK
        zp = job.zp + rb if job.zp != NULL else NULL
        w = _block_weights(job, rb, nr, wbuf)
        qb = 0
        while qb < m:
            nq = m - qb
            if nq > _QUERY_BLOCK:
                nq = _QUERY_BLOCK
            job.dot(job.codes + rb * job.d, job.d, nr, job.d, zp, job.qp + qb * job.ldq, job.ldq,
                    job.sumq + qb, nq, acc, _ROW_BLOCK)
            for qi in range(nq):
                wqi = job.wq[qb + qi]
                o = out + (qb + qi) * ldo + rb
                a = acc + qi * _ROW_BLOCK
                for r in range(nr):
                    o[r] = <float>a[r] * (w[r] * wqi)
            qb += nq
        rb += nr


cdef _Job _make_job(const uint8_t[:, ::1] codes, const float[::1] scales, zero_points, norms,
                    const int8_t[:, ::1] qp, const int32_t[::1] sq, const float[::1] wq,
                    int64_t k, bint cosine):
    cdef _Job job = _Job()
    cdef const uint8_t[::1] zpv
    cdef const float[::1] nv
    job.codes = &codes[0, 0]
    job.scales = &scales[0]
    job.zp = NULL
    if zero_points is not None:
        zpv = zero_points
        job.zp = &zpv[0]
    job.norms = NULL
    if cosine:
        nv = norms
        job.norms = &nv[0]
    job.d = codes.shape[1]
    job.qp = &qp[0, 0]
    job.ldq = qp.shape[1]
    job.sumq = &sq[0]
    job.wq = &wq[0]
    job.k = k
    job.cosine = cosine
    job.dot = embq_dot_get(_dot_id)
    job.sel = embq_select_get(_sel_id)
    job.dot_id = _dot_id
    job.sel_id = _sel_id
    return job


def all_scores(const uint8_t[:, ::1] codes, const float[::1] scales, zero_points, norms,
               int64_t n_rows, const int8_t[:, ::1] qp, const int32_t[::1] sq,
               const float[::1] wq, bint cosine, int n_threads):
    """Scores of every row of ``codes[:n_rows]`` for each query, float32 (m, n_rows), in row order.

    What gensim's ``most_similar(topn=None)`` returns, on the int8 scores. Arguments as for
    :func:`topk` (same guarantees from the caller); the rows are split over threads in
    blocks, each block scored for every query.
    """
    cdef int64_t m = qp.shape[0], nblocks, b, r0, r1, tid
    _check_job(codes, scales, zero_points, norms, n_rows, qp, sq, wq, cosine, n_threads)
    out = np.empty((m, n_rows), dtype=np.float32)
    if m == 0 or n_rows == 0:
        return out
    cdef float[:, ::1] o = out
    cdef _Job job = _make_job(codes, scales, zero_points, norms, qp, sq, wq, 1, cosine)
    if not embq_openmp_enabled():
        n_threads = 1
    cdef int nt = n_threads
    acc_buf = np.empty((nt, min(m, _QUERY_BLOCK) * _ROW_BLOCK), dtype=np.int32)
    cdef int32_t[:, ::1] accb = acc_buf
    w_buf = np.empty((nt, _ROW_BLOCK), dtype=np.float32)
    cdef float[:, ::1] wb = w_buf
    # a few blocks of rows per thread, each a multiple of _ROW_BLOCK rows
    nblocks = (n_rows + _ROW_BLOCK - 1) // _ROW_BLOCK
    if nblocks > 4 * nt:
        nblocks = 4 * nt
    with nogil, parallel(num_threads=nt):
        for b in prange(nblocks, schedule="dynamic"):
            tid = threadid()
            r0 = b * n_rows // nblocks
            r1 = (b + 1) * n_rows // nblocks
            _score_rows(job, r0, r1, m, &o[0, 0], n_rows, &accb[tid, 0], &wb[tid, 0])
    return out


def topk(const uint8_t[:, ::1] codes, const float[::1] scales, zero_points, norms,
         int64_t n_rows, const int8_t[:, ::1] qp, const int32_t[::1] sq,
         const float[::1] wq, int64_t k, bint cosine, int n_threads, str mode="auto"):
    """Top-k rows of ``codes[:n_rows]`` for each query; returns (scores (m, k), rows (m, k)).

    ``qp``, ``sq``, ``wq`` are the packed queries, their sums and weights from
    :func:`prepare_queries`. Sizes are checked here (1 <= k <= n_rows <= len(codes), len(scales)
    and of norms and zero points >= n_rows, norms given when ``cosine``, n_threads >= 1; a
    ValueError otherwise); the caller guarantees the values: query values within [-127, 127]
    and d small enough for int32 accumulators.
    """
    cdef int64_t m = qp.shape[0], d = codes.shape[1]
    cdef int64_t nchunks, c, q, t, b, nqb, qbs, r0, r1, q0, q1, tid
    cdef _Job job
    _check_job(codes, scales, zero_points, norms, n_rows, qp, sq, wq, cosine, n_threads)
    if not 1 <= k <= n_rows:
        raise ValueError(f"k must be within [1, n_rows={n_rows}], got {k}")
    out_v = np.empty((m, k), dtype=np.float32)
    out_i = np.empty((m, k), dtype=np.int64)
    cdef float[:, ::1] ov = out_v
    cdef int64_t[:, ::1] oi = out_i
    if m == 0:
        return out_v, out_i

    job = _make_job(codes, scales, zero_points, norms, qp, sq, wq, k, cosine)

    if not embq_openmp_enabled():
        n_threads = 1
    cdef int nt = n_threads
    # one (queries x rows) accumulator block per thread; a block never holds more than
    # min(m, _QUERY_BLOCK) queries
    acc_buf = np.empty((nt, min(m, _QUERY_BLOCK) * _ROW_BLOCK), dtype=np.int32)
    cdef int32_t[:, ::1] accb = acc_buf
    w_buf = np.empty((nt, _ROW_BLOCK), dtype=np.float32)
    cdef float[:, ::1] wb = w_buf

    # Rows mode while the per-chunk heaps stay small and there are too few queries to keep every
    # thread busy with whole query blocks; queries mode otherwise.
    nchunks = min(4 * nt if nt > 1 else 1, (n_rows + _ROW_BLOCK - 1) // _ROW_BLOCK)
    if mode == "auto":
        mode = "rows" if (m < 16 * nt or nchunks * m * k > (1 << 22)) else "queries"
        if nchunks * m * k > (1 << 22):
            mode = "queries"
    cdef float[:, :, ::1] hv
    cdef int64_t[:, :, ::1] hi
    if mode == "rows":
        heap_v = np.empty((nchunks, m, k), dtype=np.float32)
        heap_i = np.empty((nchunks, m, k), dtype=np.int64)
        hv = heap_v
        hi = heap_i
        # a few chunks per thread, handed out dynamically: a thread slowed down by another
        # process does not hold the others up, and each chunk is still one long stream
        with nogil, parallel(num_threads=nt):
            for c in prange(nchunks, schedule="dynamic"):
                tid = threadid()
                r0 = c * n_rows // nchunks
                r1 = (c + 1) * n_rows // nchunks
                embq_heap_init(&hv[c, 0, 0], &hi[c, 0, 0], m * k)
                _scan_chunk(job, r0, r1, m, &hv[c, 0, 0], &hi[c, 0, 0], &accb[tid, 0],
                            &wb[tid, 0])
        # merging a few small heaps is quicker than waking the threads again
        if nt > 1 and nchunks * m * k > _SERIAL_MERGE:
            with nogil:
                for q in prange(m, num_threads=nt, schedule="static"):
                    _merge(&hv[0, 0, 0], &hi[0, 0, 0], nchunks, m, k, q, &ov[q, 0], &oi[q, 0])
        else:
            with nogil:
                for q in range(m):
                    _merge(&hv[0, 0, 0], &hi[0, 0, 0], nchunks, m, k, q, &ov[q, 0], &oi[q, 0])
    elif mode == "queries":
        # blocks of a multiple of 4 queries (the micro-kernel's width), at least one per thread
        qbs = (m + nt - 1) // nt
        qbs = ((qbs + 3) // 4) * 4
        if qbs > _QUERY_BLOCK:
            qbs = _QUERY_BLOCK
        nqb = (m + qbs - 1) // qbs
        with nogil, parallel(num_threads=nt):
            for b in prange(nqb, schedule="dynamic"):
                tid = threadid()
                q0 = b * qbs
                q1 = q0 + qbs
                if q1 > m:
                    q1 = m
                for q in range(q0, q1):
                    embq_heap_init(&ov[q, 0], &oi[q, 0], k)
                _scan(job, 0, n_rows, q0, q1, &ov[q0, 0], &oi[q0, 0], &accb[tid, 0],
                      &wb[tid, 0])
                for q in range(q0, q1):
                    embq_heap_sort(&ov[q, 0], &oi[q, 0], k)
    else:
        raise ValueError(f"mode must be 'auto', 'rows' or 'queries', got {mode!r}")
    return out_v, out_i
