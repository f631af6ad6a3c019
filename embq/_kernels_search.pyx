# cython: language_level=3
"""Search kernels: exact int32 scores of uint8 rows against int8 queries, streamed into top-k heaps.

The entry points check sizes (O(1)) and allow-lists (:func:`check_rows`, O(len)) so that no
call can make a loop read out of bounds; :func:`raw_acc`, the test hook, checks everything. Values (query range, the int32 bound on
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

One scan (:func:`_scan`) serves every top-k search: all rows (the dense case), an allow-list
(sorted row numbers), and l2 (keys are minus squared distances); :func:`topk` is the dense case
of :func:`topk_x`. Heap entries are labelled by row number throughout.
"""

import numpy as np

cimport cython
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport INFINITY, NAN, sqrt
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t

from embq._kernels_common cimport (
    EMBQ_V_COUNT, embq_omp_max_threads, embq_openmp_enabled, embq_variant_runs,
)
from embq._kernels_quant cimport quant_row_fn, selected_quant_row
from embq._kernels_search cimport (
    EMBQ_QSTRIDE, embq_allow, embq_dot_fn, embq_dot_get,
    embq_fill_query_tail, embq_heap_init, embq_heap_offer, embq_heap_sort, embq_row_weights,
    embq_prefetch_row, embq_scan1, embq_select_fn, embq_select_get, embq_select_one,
)

from embq._config import _init_kernels
from embq._kernels_common import VARIANTS

DEF _ROW_BLOCK = 256
# One query, allow-list: the most positions (allowed rows) of a window scored in one stream by
# embq_scan1, and the most rows searched for a window where they are sparser
DEF _LONG_SPAN = 16384
DEF _QUERY_BLOCK = 64
# one pass over an allow-list or a mask of at least this many rows runs on every thread
# (_pass_threads)
DEF _PARALLEL_PASS_ROWS = 1 << 18
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
cdef inline void _pack_query(const uint8_t *c, int64_t d, float qs, bint cosine, int8_t *o,
                             int32_t *sq, float *w) noexcept nogil:
    """One query's packed int8 values ``code - 128`` (``o`` may alias ``c``), their sum and
    weight (see :func:`prepare_queries`)."""
    cdef int64_t j, ss = 0
    cdef int32_t s = 0, v
    cdef float nrm
    for j in range(d):
        v = <int32_t>c[j] - 128
        o[j] = <int8_t>v
        s = s + v
        ss = ss + v * v
    embq_fill_query_tail(o, d)
    sq[0] = s
    if cosine:
        nrm = <float>(<double>qs * sqrt(<double>ss))
        w[0] = qs / nrm if nrm > 0 else 0
    else:
        w[0] = qs


def prepare_queries(const uint8_t[:, ::1] qc, const float[::1] qs, bint cosine):
    """Turn quantized queries (codes around 128, scales) into what :func:`topk` reads.

    Returns ``(packed, sumq, wq)``: the int8 values ``code - 128`` in the padded layout of
    :func:`pack_queries`, their int32 sums, and each query's weight: its scale (dot) or
    ``scale / norm`` (cosine), with the norm defined as :func:`embq._quantize.row_norms` defines
    it, ``float32(float64(scale) * sqrt(float64(sum (code - 128)**2)))``, and weight 0 for a zero
    norm. One pass in C instead of a chain of small numpy calls, which matters when one query
    is searched at a time.
    """
    cdef int64_t m = qc.shape[0], d = qc.shape[1], ld = EMBQ_QSTRIDE(d), i
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
            _pack_query(&qc[i, 0], d, qs[i], cosine, &o[i, 0], &sq[i], &w[i])
    return packed, sumq, wq


def quantize_queries(const float[:, ::1] qf, bint cosine, int n_threads):
    """Quantize float32 queries as rows are quantized (the selected quantize kernel, as
    :func:`embq.quantize`) and prepare them as :func:`prepare_queries` does, in one call.

    Returns ``(packed, sumq, wq, scales)``, or the index of the first query that holds a NaN
    or an infinity. One query is searched in under a millisecond when few rows are allowed,
    and the chain ``quantize`` then ``prepare_queries`` made about ten numpy and Python calls,
    each tens of microseconds when its code has left the caches.
    """
    cdef int64_t m = qf.shape[0], d = qf.shape[1], ld = EMBQ_QSTRIDE(d), i, bad = -1
    if d == 0:
        raise ValueError("queries of dimension 0 cannot be quantized")
    packed = np.zeros((m, ld), dtype=np.int8)
    sumq = np.empty(m, dtype=np.int32)
    wq = np.empty(m, dtype=np.float32)
    scales = np.empty(m, dtype=np.float32)
    failed_a = np.zeros(m, dtype=np.uint8)
    cdef int8_t[:, ::1] o = packed
    cdef int32_t[::1] sq = sumq
    cdef float[::1] w = wq
    cdef float[::1] qs = scales
    cdef uint8_t[::1] failed = failed_a
    cdef quant_row_fn quant = selected_quant_row()
    if m == 0:
        return packed, sumq, wq, scales
    if not embq_openmp_enabled() or m < 2:
        n_threads = 1
    # each query's codes are written into its packed row, then turned into int8 in place
    with nogil:
        for i in prange(m, num_threads=n_threads, schedule="static"):
            if quant(&qf[i, 0], d, <uint8_t *>&o[i, 0], &qs[i]) != 0:
                failed[i] = 1
            else:
                _pack_query(<uint8_t *>&o[i, 0], d, qs[i], cosine, &o[i, 0], &sq[i], &w[i])
        for i in range(m):
            if failed[i]:
                bad = i
                break
    return bad if bad >= 0 else (packed, sumq, wq, scales)


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


# -- the scan --------------------------------------------------------------------------------
#
# Every search walks "positions": the rows it searches in increasing order. Without an
# allow-list (idx None) position p is row p; with one, position p is row idx[p] (idx sorted, no
# duplicates), and the rows it names are searched as if they were a store of their own. Heap
# entries are labelled by row number either way, so ties (the lower row wins) are those of the
# store of the allowed rows and the caller needs no mapping. A block of allowed rows that are
# consecutive in the codes is read in place; a window of _ROW_BLOCK rows that is mostly allowed
# is scored whole in place and its allowed rows picked out; any other block is first gathered
# (codes, scales, norms, zero points) into a per-thread buffer, so a small allowed set costs
# reading its own rows and nothing else.

from libc.string cimport memcpy

cdef extern from "_search_simd.h" nogil:
    void embq_select_ext(int sel_id, const int32_t *acc, int64_t nr, const float *scales,
                         const float *norms, float wq, int64_t row0, const int64_t *labels,
                         const embq_allow *allow, float *hv, int64_t *hi, int64_t k)
    int64_t embq_rows_first_bad(int sel_id, const int64_t *rows, int64_t n,
                                int64_t n_rows)
    int64_t embq_count_nonzero(int sel_id, const uint8_t *m, int64_t n)
    void embq_mask_rows(int sel_id, const uint8_t *m, int64_t n, int64_t base, int64_t *out)
    int64_t embq_mark_rows(const int64_t *rows, int64_t n, uint8_t *mask, int64_t n_rows)

DEF _PREFETCH_AHEAD = 8   # rows the gather asks for ahead of the one it copies
# One query: a window of _ROW_BLOCK rows is scored in place when allowed / rows >= DEN / NUM.
cdef int64_t _WIN_NUM = 3
cdef int64_t _WIN_DEN = 1


def _set_window_density(int64_t num, int64_t den):
    """Benchmark hook: score a window in place when allowed / rows >= den / num."""
    global _WIN_NUM, _WIN_DEN
    _WIN_NUM = num
    _WIN_DEN = den


DEF _MODE_DOT = 0
DEF _MODE_COSINE = 1
DEF _MODE_L2 = 2
# kinds of block (_block_rows)
DEF _CONTIG = 0     # consecutive rows, read in place
DEF _WINDOW = 1     # a window of rows read in place, allowed ones at offs
DEF _GATHERED = 2   # rows copied into the thread's buffers


@cython.final
cdef class _Job:
    """Pointers and sizes of one search, shared read-only by all threads."""
    cdef const uint8_t *codes
    cdef const float *scales
    cdef const uint8_t *zp
    cdef const float *norms     # cosine: norms; l2: squared norms; dot: NULL
    cdef const int64_t *idx     # allowed rows, increasing; NULL = every row (or the mask's)
    cdef const uint8_t *mask    # one query, a mask dense everywhere: mask[row] != 0 allowed
    cdef int64_t d
    cdef const int8_t *qp
    cdef int64_t ldq
    cdef const int32_t *sumq
    cdef const float *wq        # dot, l2: query scale; cosine: scale / norm
    cdef const float *qn2       # l2: squared norm of each dequantized query
    cdef int64_t k
    cdef int mode
    cdef embq_dot_fn dot
    cdef embq_select_fn sel
    cdef int dot_id
    cdef int sel_id


cdef struct _Work:
    # one thread's buffers, carved out of one allocation by _work_at
    int32_t *acc        # (queries of a block) x _ROW_BLOCK accumulators
    float *w            # row weights of a block
    float *keys         # l2 and range: keys of a block for one query
    float *gs           # gathered scales
    float *gn           # gathered norms
    int32_t *offs       # window: offset in the window of each allowed row
    uint8_t *gz         # gathered zero points
    uint8_t *gc         # gathered codes, _ROW_BLOCK x d


cdef struct _Block:
    const uint8_t *c
    const float *s
    const float *nm
    const uint8_t *z
    int64_t base        # first row (_CONTIG, _WINDOW)
    int64_t span        # rows to score: the window's length, else the positions
    int kind


cdef int64_t _work_bytes(int64_t m, int64_t d):
    cdef int64_t mq = min(m, _QUERY_BLOCK)
    return (mq + 5) * _ROW_BLOCK * 4 + _ROW_BLOCK * (d + 1)


cdef inline _Work _work_at(uint8_t *b, int64_t m) noexcept nogil:
    cdef _Work w
    cdef int64_t mq = m if m < _QUERY_BLOCK else _QUERY_BLOCK
    w.acc = <int32_t *>b
    b += mq * _ROW_BLOCK * 4
    w.w = <float *>b
    w.keys = w.w + _ROW_BLOCK
    w.gs = w.keys + _ROW_BLOCK
    w.gn = w.gs + _ROW_BLOCK
    w.offs = <int32_t *>(w.gn + _ROW_BLOCK)
    w.gz = <uint8_t *>(w.offs + _ROW_BLOCK)
    w.gc = w.gz + _ROW_BLOCK
    return w


cdef inline const float* _block_weights(_Job job, const float *s, const float *nm, int64_t nr,
                                        float *wbuf) noexcept nogil:
    """Row weights of nr rows, shared by every query of a block: the scales (dot, l2) or
    scale / norm (cosine; 0 for a zero row), so scoring is one multiply per row."""
    if job.mode == _MODE_COSINE:
        embq_row_weights(job.sel_id, s, nm, nr, wbuf)
        return wbuf
    return s


cdef inline int64_t _window_end(const int64_t *idx, int64_t p, int64_t nr,
                                int64_t span) noexcept nogil:
    """How many of the positions [p, p + nr) have their row in [idx[p], idx[p] + span), by
    bisection (idx is increasing; a scan would cost as much as the window's selection)."""
    cdef int64_t lo, hi, mid, end = idx[p] + span
    if idx[p + nr - 1] < end:
        return nr
    lo = 1          # idx[p + lo - 1] is in the window
    hi = nr - 1     # idx[p + hi] is not
    while lo < hi:
        mid = (lo + hi) // 2
        if idx[p + mid] < end:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline int64_t _block_rows(_Job job, int64_t p, int64_t p1, _Work *wk, _Block *b,
                                bint single) noexcept nogil:
    """The rows of the next block of positions from ``p`` (before ``p1``); returns how many.

    Three ways, by how dense the allowed rows are there: consecutive rows are read in place
    (_CONTIG); when enough of a window of _ROW_BLOCK rows is allowed (a third for ``single``,
    one query; seven eighths otherwise), the whole window is scored in place (_WINDOW, ``span``
    rows; :func:`_window_offs` says where its allowed rows are); otherwise the allowed rows
    are gathered into the thread's buffers (_GATHERED).
    """
    cdef int64_t r, row, d = job.d, nr, base, ext
    nr = p1 - p
    if nr > _ROW_BLOCK:
        nr = _ROW_BLOCK
    b.kind = _CONTIG
    if job.idx == NULL:
        base = p
    else:
        base = job.idx[p]
        # r: the positions whose rows fall in the window [base, base + _ROW_BLOCK)
        r = _window_end(job.idx, p, nr, _ROW_BLOCK)
        ext = job.idx[p + r - 1] - base + 1
        if ext != r:
            # One query is bound by memory: scoring a window in place costs about what reading
            # it costs, so it pays from a third allowed. Several queries are bound by
            # arithmetic, which a gathered block halves at half allowed: only nearly full
            # windows are scored in place.
            if (single and _WIN_NUM * r >= _WIN_DEN * ext) or 8 * r >= 7 * ext:
                b.kind = _WINDOW
                nr = r
            else:
                for r in range(nr):
                    row = job.idx[p + r]
                    if p + r + _PREFETCH_AHEAD < p1:
                        embq_prefetch_row(job.codes + job.idx[p + r + _PREFETCH_AHEAD] * d, d)
                    memcpy(wk.gc + r * d, job.codes + row * d, d)
                    wk.gs[r] = job.scales[row]
                    if job.norms != NULL:
                        wk.gn[r] = job.norms[row]
                    if job.zp != NULL:
                        wk.gz[r] = job.zp[row]
                b.c = wk.gc
                b.s = wk.gs
                b.nm = wk.gn if job.norms != NULL else NULL
                b.z = wk.gz if job.zp != NULL else NULL
                b.base = base
                b.span = nr
                b.kind = _GATHERED
                return nr
        else:
            nr = r
        # the allowed rows of the next block: the hardware prefetcher does not follow reads
        # a window apart, and a miss here would stall the stream of codes
        ext = p1 - (p + nr)
        if ext > _ROW_BLOCK:
            ext = _ROW_BLOCK
        if ext > 0:
            embq_prefetch_row(<const uint8_t *>(job.idx + p + nr), ext * sizeof(int64_t))
    b.c = job.codes + base * d
    b.s = job.scales + base
    b.nm = job.norms + base if job.norms != NULL else NULL
    b.z = job.zp + base if job.zp != NULL else NULL
    b.base = base
    b.span = job.idx[p + nr - 1] - base + 1 if b.kind == _WINDOW else nr
    return nr


cdef inline void _window_offs(const _Block *b, const int64_t *rows, int64_t nr,
                              int32_t *offs) noexcept nogil:
    """offs[r]: the row of the window (from ``b.base``) that allowed row ``rows[r]`` is."""
    cdef int64_t r
    for r in range(nr):
        offs[r] = <int32_t>(rows[r] - b.base)


@cython.cdivision(True)
cdef inline void _window_weights(_Job job, const _Block *b, const int32_t *offs, int64_t nr,
                                 float *out) noexcept nogil:
    """Weights of the allowed rows of a window, in position order (the bits of
    embq_row_weight: IEEE division is correctly rounded)."""
    cdef int64_t r, o
    cdef float nv
    if job.mode == _MODE_COSINE:
        for r in range(nr):
            o = offs[r]
            nv = b.nm[o]
            out[r] = b.s[o] / nv if nv > 0 else 0
    else:
        for r in range(nr):
            out[r] = b.s[offs[r]]


cdef inline void _window_nan_weights(_Job job, const _Block *b, const int64_t *rows, int64_t nr,
                                     float *tmp, float *out) noexcept nogil:
    """Weights of every row of a window (``b.span`` rows from ``b.base``), NaN for the rows not
    allowed; ``rows[0..nr)`` are the allowed ones (the first is ``b.base``, the last the
    window's last row); ``tmp`` a buffer of ``b.span`` floats.

    A NaN weight gives a NaN score, which the select kernels never keep once the heap's
    worst entry is a real score (> -inf): every test they make then is an ordered compare
    (``s > worst``), false for NaN. So the window goes through the dense scan unchanged.
    The weights of the whole window at SIMD width, then: in a nearly full window NaN in its
    few gaps; otherwise NaN everywhere and the allowed rows' weights copied back, branch-free
    (gaps of random lengths would cost a mispredicted branch per allowed row).
    """
    cdef int64_t r, j, prev, o
    cdef float *w = out if 8 * nr >= 7 * b.span else tmp
    if job.mode == _MODE_COSINE:
        embq_row_weights(job.sel_id, b.s, b.nm, b.span, w)
    else:
        memcpy(w, b.s, b.span * sizeof(float))
    if w == out:
        r = 1
        while r < nr:
            if r + 16 <= nr and rows[r + 15] - rows[r - 1] == 16:
                r += 16   # rows[r - 1 .. r + 15] consecutive (increasing, no repeats): no gap
                continue
            prev = rows[r - 1] - b.base
            o = rows[r] - b.base
            for j in range(prev + 1, o):
                out[j] = NAN
            r += 1
    else:
        for r in range(b.span):
            out[r] = NAN
        for r in range(nr):
            o = rows[r] - b.base
            out[o] = w[o]


cdef inline void _keys(_Job job, const int32_t *acc, int64_t nr, const float *w,
                       const float *s, const float *n2, int64_t q, float *out) noexcept nogil:
    """Ranking keys of nr rows for query q (larger is better); w, s, n2 indexed like acc.

    dot, cosine: ``float(acc) * (w_row * w_query)``, the bits the select kernels compute.
    l2: ``-max((n2_row - 2 * t) + n2_query, 0)`` with ``t = float(acc) * (s_row * s_query)``
    (the dot score of the dequantized row and query), all float32 in that order.
    """
    cdef int64_t r
    cdef float wq = job.wq[q], qn2, t, dd
    if job.mode == _MODE_L2:
        qn2 = job.qn2[q]
        for r in range(nr):
            t = <float>acc[r] * (s[r] * wq)
            dd = (n2[r] - (t + t)) + qn2   # t + t: 2t exactly, in float32
            out[r] = -dd if dd > 0 else -0.0
    else:
        for r in range(nr):
            out[r] = <float>acc[r] * (w[r] * wq)


cdef inline void _pick(const _Block *b, const int32_t *offs, int64_t nr, int32_t *acc,
                       float *s, float *nm) noexcept nogil:
    """Move the allowed rows of a window to the front, in place: accumulators, and for l2 the
    scales and squared norms (s, nm may be NULL). offs[r] >= r and increasing."""
    cdef int64_t r
    for r in range(nr):
        acc[r] = acc[offs[r]]
    if s != NULL:
        for r in range(nr):
            s[r] = b.s[offs[r]]
            nm[r] = b.nm[offs[r]]


cdef inline int64_t _long_window(_Job job, int64_t p, int64_t p1, int64_t q0, float *hv,
                                 int64_t *hi) noexcept nogil:
    """One query, allow-list: score the window of the next _LONG_SPAN positions (or, where
    they are too sparse, the positions within _LONG_SPAN rows of ``idx[p]``) in one embq_scan1
    stream that offers only the allowed rows to the heap; returns the positions done, or 0
    when the window is too sparse for that (then :func:`_block_rows` takes over).

    Windows of _ROW_BLOCK rows would restart the scan (and lose its prefetch stream) every few
    hundred rows; a long window costs about what the unfiltered scan of its rows costs: the
    same stream of codes, scales and norms, and the allow-list read only for the few rows
    whose score would enter the heap. (Weights built for the window first, NaN on the rows
    not allowed, cost a few percent more: a burst of reads while the codes' stream waits.)
    """
    cdef int64_t nr = p1 - p, r, ext, d = job.d
    cdef _Block b
    cdef embq_allow al
    if nr > _LONG_SPAN:
        nr = _LONG_SPAN
    if nr <= _ROW_BLOCK:
        return 0
    if _WIN_NUM * (_ROW_BLOCK + 1) < _WIN_DEN * (job.idx[p + _ROW_BLOCK] - job.idx[p] + 1):
        return 0    # sparse from the start (a small allow-list): no reads of far rows
    r = nr          # the next _LONG_SPAN positions, when dense enough: one read of the list
    ext = job.idx[p + nr - 1] - job.idx[p] + 1
    if _WIN_NUM * nr < _WIN_DEN * ext:
        r = _window_end(job.idx, p, nr, _LONG_SPAN)
        if r <= _ROW_BLOCK:
            return 0
        ext = job.idx[p + r - 1] - job.idx[p] + 1
        if _WIN_NUM * r < _WIN_DEN * ext:
            return 0
    # The window starts on the grid of the unfiltered scan's blocks (a multiple of _ROW_BLOCK
    # rows, the rows of embq_scan1's blocks): its rows before idx[p] are read but are not in
    # its list, so never offered. Started at its first allowed row, every block of the window
    # sat elsewhere across the pages than the unfiltered scan's, and one query over half of
    # 1,000,000 x 384 rows took 4-5% longer than over a mask of the same rows on one thread,
    # 2-3% on two (the same rows read, the same candidates; only the phase differed).
    b.base = job.idx[p] - job.idx[p] % _ROW_BLOCK
    b.span = job.idx[p + r - 1] - b.base + 1
    b.c = job.codes + b.base * d
    b.s = job.scales + b.base
    b.nm = job.norms + b.base if job.norms != NULL else NULL
    b.z = job.zp + b.base if job.zp != NULL else NULL
    b.kind = _WINDOW
    # the allow-list of the next window: the hardware prefetcher does not follow reads a
    # window apart
    ext = p1 - (p + r)
    if ext > _ROW_BLOCK:
        ext = _ROW_BLOCK
    if ext > 0:
        embq_prefetch_row(<const uint8_t *>(job.idx + p + r), ext * sizeof(int64_t))
    # the window as one stream with the rows' own weights; only the allowed rows are offered
    # (consecutive rows: all of them)
    al.rows = job.idx + p
    al.n = r
    al.mask = NULL
    embq_scan1(job.dot_id, job.sel_id, b.c, d, b.span, d, b.z, job.qp + q0 * job.ldq, job.ldq,
               job.sumq[q0], b.s, b.nm, job.wq[q0], b.base, &al if r < b.span else NULL, hv, hi,
               job.k)
    return r


cdef void _scan(_Job job, int64_t p0, int64_t p1, int64_t q0, int64_t q1, float *hv,
                int64_t *hi, _Work *wk) noexcept nogil:
    """Offer positions [p0, p1) to the heaps of queries [q0, q1) (heap of query q at
    (q - q0) * k), labelled by row.

    A window (dot, cosine) of one query goes through embq_scan1, which offers only its allowed
    rows. Several queries share the window's weights, NaN on the rows not allowed (see
    :func:`_window_nan_weights`), for every query whose heap already holds k scores above
    -inf; a query whose heap does not yet gets the allowed rows picked out of the window
    (:func:`_pick`) and offered under their row numbers.
    """
    cdef int64_t p = p0, nr, qb, nq, qi, r, h, k = job.k, d = job.d
    cdef bint single = q1 - q0 == 1, l2 = job.mode == _MODE_L2, picked
    cdef float th
    cdef int32_t *a
    cdef const float *w
    cdef const float *s
    cdef const float *nm
    cdef const int64_t *lab
    cdef _Block b
    cdef embq_allow al
    if single and not l2 and job.idx == NULL:
        # every row (or a mask's rows), one query: one fused stream over the whole range
        al.rows = NULL
        al.n = 0
        al.mask = job.mask
        embq_scan1(job.dot_id, job.sel_id, job.codes + p0 * d, d, p1 - p0, d,
                   job.zp + p0 if job.zp != NULL else NULL, job.qp + q0 * job.ldq, job.ldq,
                   job.sumq[q0], job.scales + p0,
                   job.norms + p0 if job.norms != NULL else NULL, job.wq[q0], p0,
                   &al if job.mask != NULL else NULL, hv, hi, k)
        return
    while p < p1:
        if single and not l2:
            nr = _long_window(job, p, p1, q0, hv, hi)
            if nr > 0:
                p += nr
                continue
        nr = _block_rows(job, p, p1, wk, &b, single)
        lab = job.idx + p if b.kind != _CONTIG else NULL
        if single and not l2 and b.kind == _CONTIG:
            embq_scan1(job.dot_id, job.sel_id, b.c, d, nr, d, b.z, job.qp + q0 * job.ldq,
                       job.ldq, job.sumq[q0], b.s, b.nm, job.wq[q0], b.base, NULL, hv, hi, k)
            p += nr
            continue
        s = b.s
        nm = b.nm
        picked = False
        if b.kind == _WINDOW and single and not l2:
            # one stream through the dense scan, only the allowed rows offered
            al.rows = lab
            al.n = nr
            al.mask = NULL
            embq_scan1(job.dot_id, job.sel_id, b.c, d, b.span, d, b.z, job.qp + q0 * job.ldq,
                       job.ldq, job.sumq[q0], b.s, b.nm, job.wq[q0], b.base, &al, hv, hi, k)
            p += nr
            continue
        if b.kind == _WINDOW and not l2:
            # the window's first rows are on their way while its weights are worked out
            embq_prefetch_row(b.c, 8 * d)
            _window_nan_weights(job, &b, lab, nr, wk.keys, wk.w)
        elif b.kind == _WINDOW:
            # l2: scales and squared norms picked per query with the accumulators
            _window_offs(&b, lab, nr, wk.offs)
            s = wk.gs
            nm = wk.gn
        w = wk.w
        if b.kind != _WINDOW:
            w = _block_weights(job, b.s, b.nm, nr, wk.w)
        qb = q0
        while qb < q1:
            nq = q1 - qb
            if nq > _QUERY_BLOCK:
                nq = _QUERY_BLOCK
            job.dot(b.c, d, b.span, d, b.z, job.qp + qb * job.ldq, job.ldq, job.sumq + qb,
                    nq, wk.acc, _ROW_BLOCK)
            for qi in range(nq):
                h = (qb - q0 + qi) * k
                a = wk.acc + qi * _ROW_BLOCK
                if l2:
                    if b.kind == _WINDOW:
                        _pick(&b, wk.offs, nr, a, wk.gs, wk.gn)
                    _keys(job, a, nr, w, s, nm, qb + qi, wk.keys)
                    th = hv[h]
                    for r in range(nr):
                        embq_select_one(wk.keys[r], lab[r] if lab != NULL else b.base + r,
                                        hv + h, hi + h, k, &th)
                elif b.kind == _WINDOW and hv[h] > -INFINITY:
                    job.sel(a, b.span, w, NULL, job.wq[qb + qi], b.base, hv + h, hi + h, k)
                elif b.kind == _WINDOW:
                    if not picked:   # the allowed rows' weights, once for the window
                        _window_offs(&b, lab, nr, wk.offs)
                        _window_weights(job, &b, wk.offs, nr, wk.gs)
                        picked = True
                    _pick(&b, wk.offs, nr, a, NULL, NULL)
                    embq_select_ext(job.sel_id, a, nr, wk.gs, NULL, job.wq[qb + qi], 0, lab,
                                    NULL, hv + h, hi + h, k)
                elif lab != NULL:
                    embq_select_ext(job.sel_id, a, nr, w, NULL, job.wq[qb + qi], 0, lab, NULL,
                                    hv + h, hi + h, k)
                else:
                    job.sel(a, nr, w, NULL, job.wq[qb + qi], b.base, hv + h, hi + h, k)
            qb += nq
        p += nr


cdef void _range(_Job job, int64_t p0, int64_t p1, int64_t m, float thr, int64_t *counts,
                 int64_t *offsets, float *ov, int64_t *oi, _Work *wk) noexcept nogil:
    """Rows of positions [p0, p1) whose key is >= thr, for all m queries.

    Counting pass (``offsets`` NULL): counts[q] += matches. Filling pass: matches of query q
    are written at ov/oi[offsets[q]], offsets[q] advanced, in increasing row order.
    """
    cdef int64_t p = p0, nr, qb, nq, qi, r, q, o
    cdef bint l2 = job.mode == _MODE_L2
    cdef int32_t *a
    cdef const float *w
    cdef const float *s
    cdef const float *nm
    cdef const int64_t *lab
    cdef _Block b
    while p < p1:
        nr = _block_rows(job, p, p1, wk, &b, m == 1)
        lab = job.idx + p if b.kind != _CONTIG else NULL
        s = b.s
        nm = b.nm
        if b.kind == _WINDOW:
            _window_offs(&b, lab, nr, wk.offs)
            if l2:
                s = wk.gs
                nm = wk.gn
            else:
                _window_weights(job, &b, wk.offs, nr, wk.w)
            w = wk.w
        else:
            w = _block_weights(job, b.s, b.nm, nr, wk.w)
        qb = 0
        while qb < m:
            nq = m - qb
            if nq > _QUERY_BLOCK:
                nq = _QUERY_BLOCK
            job.dot(b.c, job.d, b.span, job.d, b.z, job.qp + qb * job.ldq, job.ldq,
                    job.sumq + qb, nq, wk.acc, _ROW_BLOCK)
            for qi in range(nq):
                q = qb + qi
                a = wk.acc + qi * _ROW_BLOCK
                if b.kind == _WINDOW:
                    _pick(&b, wk.offs, nr, a, wk.gs if l2 else NULL, wk.gn)
                _keys(job, a, nr, w, s, nm, q, wk.keys)
                if offsets == NULL:
                    for r in range(nr):
                        if wk.keys[r] >= thr:
                            counts[q] += 1
                else:
                    o = offsets[q]
                    for r in range(nr):
                        if wk.keys[r] >= thr:
                            ov[o] = wk.keys[r]
                            oi[o] = lab[r] if lab != NULL else b.base + r
                            o += 1
                    offsets[q] = o
            qb += nq
        p += nr


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


cdef void _score_rows(_Job job, int64_t r0, int64_t r1, int64_t m, float *out, int64_t ldo,
                      _Work *wk) noexcept nogil:
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
        w = _block_weights(job, job.scales + rb, job.norms + rb if job.norms != NULL else NULL,
                           nr, wk.w)
        qb = 0
        while qb < m:
            nq = m - qb
            if nq > _QUERY_BLOCK:
                nq = _QUERY_BLOCK
            job.dot(job.codes + rb * job.d, job.d, nr, job.d, zp, job.qp + qb * job.ldq, job.ldq,
                    job.sumq + qb, nq, wk.acc, _ROW_BLOCK)
            for qi in range(nq):
                wqi = job.wq[qb + qi]
                o = out + (qb + qi) * ldo + rb
                a = wk.acc + qi * _ROW_BLOCK
                for r in range(nr):
                    o[r] = <float>a[r] * (w[r] * wqi)
            qb += nq
        rb += nr


@cython.boundscheck(False)
@cython.wraparound(False)
cdef int64_t _check_job(const uint8_t[:, ::1] codes, const float[::1] scales, zero_points,
                        norms, int64_t n_rows, idx, const int8_t[:, ::1] qp,
                        const int32_t[::1] sq, const float[::1] wq, qn2, int mode,
                        int n_threads) except -1:
    """The checks that keep every entry point inside its arrays; returns the number of
    positions searched (n_rows, or len(idx)).

    Sizes (O(1)) and, for ``idx``, that every row is within [0, n_rows) and increasing
    (O(len(idx)), the one value check done here: a bad index would read out of bounds). The
    values (query range, finite scales, the int32 bound on d) are the caller's to check.
    """
    cdef int64_t m = qp.shape[0], d = codes.shape[1]
    if mode not in (_MODE_DOT, _MODE_COSINE, _MODE_L2):
        raise ValueError(f"mode must be 0 (dot), 1 (cosine) or 2 (l2), got {mode}")
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
    if mode != _MODE_DOT and (norms is None or len(norms) < n_rows):
        raise ValueError(f"{'cosine' if mode == _MODE_COSINE else 'l2'} needs norms of at "
                         f"least n_rows={n_rows} values, got "
                         f"{None if norms is None else len(norms)}")
    if n_threads < 1:
        raise ValueError(f"n_threads must be >= 1, got {n_threads}")
    if mode == _MODE_L2 and (qn2 is None or len(qn2) != m):
        raise ValueError(f"l2 needs one squared query norm per query ({m}), got "
                         f"{None if qn2 is None else len(qn2)}")
    if idx is None:
        return n_rows
    return check_rows(idx, n_rows)


cdef int _pass_threads(int64_t n):
    """Threads for one pass over ``n`` entries of an allow-list or a mask: every thread for a
    long one, which comes from memory, where one thread reads it at half the speed of two."""
    if n >= _PARALLEL_PASS_ROWS and embq_openmp_enabled():
        return embq_omp_max_threads()
    return 1


cdef inline int64_t _part_start(int64_t g, int64_t n, int64_t parts) noexcept nogil:
    """The first position of part ``g`` of ``parts`` equal parts of ``n`` positions (the
    passes over an allow-list or a mask split their work so)."""
    return g * n // parts


def first_bad_row(const int64_t[::1] idx, int64_t n_rows, int n_threads=0):
    """The first position of ``idx`` (int64) whose row is out of [0, n_rows) or not above the
    one before, or -1 when ``idx`` is increasing rows within range.

    At SIMD width and without temporaries, so a front end can tell a valid allow-list (the
    usual case) from one it must sort or refuse in one pass well under a millisecond per
    million rows. ``n_threads`` (0: every thread for a long list) splits that pass: a list of
    millions of rows comes from memory, where one thread reads it at half the speed of two.
    """
    cdef int64_t npos = idx.shape[0], bad = -1, c, p0, p1, nparts
    cdef int nt = n_threads
    if npos == 0:
        return -1
    if nt <= 0:
        nt = _pass_threads(npos)
    if not embq_openmp_enabled() or npos < 2 * nt:
        nt = 1
    if nt == 1:
        with nogil:
            bad = embq_rows_first_bad(_sel_id, &idx[0], npos, n_rows)
        return bad
    # part c checks positions [p0, p1) from p0 - 1 on (its first row against the one before);
    # the first bad position overall is the first part's that has one
    nparts = nt
    found = np.full(nparts, -1, dtype=np.int64)
    cdef int64_t[::1] fv = found
    with nogil, parallel(num_threads=nt):
        for c in prange(nparts, schedule="static"):
            p0 = _part_start(c, npos, nparts)
            p1 = _part_start(c + 1, npos, nparts)
            if p0 == 0:
                fv[c] = embq_rows_first_bad(_sel_id, &idx[0], p1, n_rows)
            else:
                fv[c] = embq_rows_first_bad(_sel_id, &idx[p0 - 1], p1 - p0 + 1, n_rows)
                if fv[c] >= 0:
                    fv[c] += p0 - 1
    return _first_found(fv)


cdef int64_t _first_found(const int64_t[::1] found):
    """The first entry >= 0 of the parts' results (the parts in position order), or -1."""
    cdef Py_ssize_t c
    for c in range(found.shape[0]):
        if found[c] >= 0:
            return found[c]
    return -1


def mark_rows(const int64_t[::1] idx, uint8_t[::1] mask):
    """Set ``mask[idx[j]] = 1`` for every position ``j``, in one pass (on every thread for a
    long list); returns -1, or the first position whose row is outside [0, len(mask)), and
    then only the rows before it are sure to be marked.

    Row numbers out of order (keys give them so) become a mask this way: numpy needs a
    min and a max over them first, to refuse a bad row before ``mask[idx] = True``, three
    passes where this is one (500,000 rows: 0.5 ms against 1.7 ms from cold caches).
    """
    cdef int64_t npos = idx.shape[0], n_rows = mask.shape[0], c, p0, p1
    cdef int nt = _pass_threads(npos)
    if npos == 0:
        return -1
    found = np.full(nt, -1, dtype=np.int64)
    cdef int64_t[::1] fv = found
    with nogil, parallel(num_threads=nt):
        for c in prange(nt, schedule="static"):
            p0 = _part_start(c, npos, nt)
            p1 = _part_start(c + 1, npos, nt)
            fv[c] = embq_mark_rows(&idx[p0], p1 - p0, &mask[0], n_rows)
            if fv[c] >= 0:
                fv[c] += p0
    return _first_found(fv)


# A mask is scanned whole for one query when each of _MASK_GROUPS equal parts of its rows is
# dense enough for a window to be read in place (see _WIN_NUM): a random half then costs the
# unfiltered scan and one byte per candidate; a mask whose allowed rows cluster goes the way of
# a row list (gathered blocks, windows), which reads only the parts with allowed rows.
DEF _MASK_GROUPS = 16


@cython.final
cdef class AllowList:
    """An allow-list that passed the check: increasing int64 rows within [0, n_rows) in a
    read-only array (``array``), or a boolean mask of n_rows entries (``mask``, read-only; its
    ``array`` is made when first asked for).

    The public one (``embq.AllowList``) comes from ``embq.allow_list`` or
    ``Store.allow_list``, which own a copy of what they were given, so that it is checked once
    for any number of searches. A search makes its own from its ``allow=`` with
    :func:`allow_list` or :func:`allow_mask` (no copy; it lives for that search only). The scans
    of this module and of ``embq._kernels_sketch`` take it without a second pass over it: a
    one-query filtered search costs about one pass over the codes, and each pass over a large
    allow-list adds a few percent to it. One query over a mask that is dense everywhere reads
    the mask itself, a byte for each row whose score would enter the heap, and no list at all.
    """
    cdef object _array
    cdef readonly object mask
    cdef readonly int64_t n_rows
    cdef int64_t _count
    cdef readonly bint dense
    cdef int64_t _groups[_MASK_GROUPS]   # a mask's allowed rows in each of its parts

    def __init__(self, *args, **kwargs):
        raise TypeError("an AllowList is made by embq.allow_list(allow, n_rows) or "
                        "store.allow_list(allow), which check it")

    def __len__(self):
        return self._count

    def __repr__(self):
        form = "mask" if self.mask is not None else "row numbers"
        return f"<AllowList: {self._count:,} of {self.n_rows:,} rows allowed ({form})>"

    @property
    def array(self):
        """The allowed rows, increasing, int64, read-only."""
        if self._array is None:
            self._array = _readonly(self._list_mask())
        return self._array

    cdef object _list_mask(self):
        # each part of the mask fills its own slice (its count is known), on every thread for
        # a long mask: it comes from memory
        cdef const uint8_t[::1] mv = self.mask.view(np.uint8)
        cdef int64_t n = self.n_rows, g, a, e
        cdef int64_t starts[_MASK_GROUPS + 1]
        cdef int nt = _pass_threads(n)
        out = np.empty(self._count, dtype=np.int64)
        cdef int64_t[::1] o = out
        if self._count == 0:
            return out
        starts[0] = 0
        for g in range(_MASK_GROUPS):
            starts[g + 1] = starts[g] + self._groups[g]
        with nogil, parallel(num_threads=nt):
            for g in prange(_MASK_GROUPS, schedule="static"):
                a = _part_start(g, n, _MASK_GROUPS)
                e = _part_start(g + 1, n, _MASK_GROUPS)
                if self._groups[g] > 0:
                    embq_mask_rows(_sel_id, &mv[a], e - a, a, &o[starts[g]])
        return out

    def below(self, int64_t n_rows):
        """The rows below ``n_rows`` (at most this list's bound), as an AllowList."""
        if not 0 <= n_rows <= self.n_rows:
            raise ValueError(f"n_rows must be within [0, {self.n_rows}], got {n_rows}")
        if self.mask is not None:
            return _rows_of_mask(self.mask[:n_rows])
        return _rows(self._array[:np.searchsorted(self._array, n_rows)], n_rows)


cdef object _readonly(arr):
    view = arr.view()
    view.flags.writeable = False
    return view


cdef AllowList _rows(arr, int64_t n_rows):
    cdef AllowList r = AllowList.__new__(AllowList)
    r._array = _readonly(arr)
    r.mask = None
    r.n_rows = n_rows
    r._count = arr.shape[0]
    r.dense = False
    return r


cdef AllowList _rows_of_mask(mask):
    """An AllowList of a contiguous bool mask (its length is n_rows): counted by groups, to tell
    whether it is dense everywhere (one pass at SIMD width, on every thread for a long mask:
    it comes from memory)."""
    cdef AllowList r = AllowList.__new__(AllowList)   # _groups start at 0
    cdef const uint8_t[::1] mv = mask.view(np.uint8)
    cdef int64_t n = mv.shape[0], g, a, e, total = 0
    cdef bint dense = True
    cdef int nt = _pass_threads(n)
    if n > 0:
        with nogil, parallel(num_threads=nt):
            for g in prange(_MASK_GROUPS, schedule="static"):
                a = _part_start(g, n, _MASK_GROUPS)
                e = _part_start(g + 1, n, _MASK_GROUPS)
                r._groups[g] = embq_count_nonzero(_sel_id, &mv[a], e - a)
    for g in range(_MASK_GROUPS):
        total += r._groups[g]
        a = _part_start(g, n, _MASK_GROUPS)
        e = _part_start(g + 1, n, _MASK_GROUPS)
        if _WIN_NUM * r._groups[g] < _WIN_DEN * (e - a):
            dense = False
    r._array = None
    r.mask = _readonly(mask)
    r.n_rows = n
    r._count = total
    r.dense = dense
    return r


def allow_list(idx, int64_t n_rows):
    """``idx`` (a contiguous int64 array) as a :class:`AllowList` if it holds increasing rows
    within [0, n_rows), else the first position that does not (an int; see
    :func:`first_bad_row`). One pass."""
    arr = np.asarray(idx)
    cdef int64_t bad = first_bad_row(arr, n_rows)
    if bad >= 0:
        return bad
    return _rows(arr, n_rows)


def allow_mask(mask, int64_t n_rows):
    """The rows ``r < n_rows`` where ``mask[r]`` is true, as a :class:`AllowList` that keeps the
    mask (its first ``n_rows`` entries, not copied when contiguous) instead of a row list.

    ``mask`` is a 1-D bool array of at least ``n_rows`` entries (a ValueError otherwise).
    """
    arr = np.asarray(mask)
    if arr.dtype != np.bool_ or arr.ndim != 1 or not 0 <= n_rows <= arr.shape[0]:
        raise ValueError(f"mask must be a 1-D bool array of at least n_rows={n_rows} "
                         f"entries, got dtype {arr.dtype} and shape {arr.shape}")
    return _rows_of_mask(np.ascontiguousarray(arr[:n_rows]))


def check_rows(idx, int64_t n_rows):
    """Check that ``idx`` (int64, or a :class:`AllowList` made for at most ``n_rows`` rows) holds
    increasing rows within [0, n_rows); returns its length.

    The one value check of the allow-list entry points (a bad row would read out of bounds),
    O(len(idx)) at SIMD width for an array; a ValueError names the first bad position
    otherwise.
    """
    if isinstance(idx, AllowList):
        if (<AllowList>idx).n_rows > n_rows:
            raise ValueError(f"idx was checked for rows within [0, {(<AllowList>idx).n_rows}), "
                             f"more than n_rows={n_rows}")
        return len(idx)
    cdef const int64_t[::1] v = idx
    cdef int64_t npos = v.shape[0], bad = first_bad_row(v, n_rows)
    if bad >= 0:
        raise ValueError(f"idx must be increasing rows within [0, {n_rows}), got "
                         f"{v[bad]} at position {bad}")
    return npos


cdef _Job _make_job(const uint8_t[:, ::1] codes, const float[::1] scales, zero_points,
                    norms, idx, const int8_t[:, ::1] qp, const int32_t[::1] sq,
                    const float[::1] wq, qn2, int64_t k, int mode):
    """The job of a search that :func:`_check_job` accepted."""
    cdef _Job job = _Job()
    cdef const uint8_t[::1] zpv
    cdef const float[::1] nv
    cdef const int64_t[::1] iv
    cdef const float[::1] q2
    job.codes = &codes[0, 0]
    job.scales = &scales[0]
    job.zp = NULL
    if zero_points is not None:
        zpv = zero_points
        job.zp = &zpv[0]
    job.norms = NULL
    if mode != _MODE_DOT:
        nv = norms
        job.norms = &nv[0]
    job.idx = NULL
    job.mask = NULL
    if idx is not None and len(idx) > 0:
        iv = idx.array if isinstance(idx, AllowList) else idx
        job.idx = &iv[0]
    job.qn2 = NULL
    if mode == _MODE_L2:
        q2 = qn2
        job.qn2 = &q2[0]
    job.d = codes.shape[1]
    job.qp = &qp[0, 0]
    job.ldq = qp.shape[1]
    job.sumq = &sq[0]
    job.wq = &wq[0]
    job.k = k
    job.mode = mode
    job.dot = embq_dot_get(_dot_id)
    job.sel = embq_select_get(_sel_id)
    job.dot_id = _dot_id
    job.sel_id = _sel_id
    return job


def _work_buffers(int64_t nt, int64_t m, int64_t d):
    """One buffer per thread for :func:`_work_at` (rows 64-byte multiples); ``d`` 0 leaves out
    the gathered codes (no allow-list, nothing is gathered)."""
    return np.empty((nt, (_work_bytes(m, d) + 63) // 64 * 64), dtype=np.uint8)


def all_scores(const uint8_t[:, ::1] codes, const float[::1] scales, zero_points, norms,
               int64_t n_rows, const int8_t[:, ::1] qp, const int32_t[::1] sq,
               const float[::1] wq, bint cosine, int n_threads):
    """Scores of every row of ``codes[:n_rows]`` for each query, float32 (m, n_rows), in row order.

    What gensim's ``most_similar(topn=None)`` returns, on the int8 scores. Arguments as for
    :func:`topk` (same guarantees from the caller); the rows are split over threads in
    blocks, each block scored for every query.
    """
    cdef int64_t m = qp.shape[0], nblocks, b, r0, r1, tid
    cdef int mode = _MODE_COSINE if cosine else _MODE_DOT
    _check_job(codes, scales, zero_points, norms, n_rows, None, qp, sq, wq, None, mode,
               n_threads)
    out = np.empty((m, n_rows), dtype=np.float32)
    if m == 0 or n_rows == 0:
        return out
    cdef float[:, ::1] o = out
    cdef _Job job = _make_job(codes, scales, zero_points, norms, None, qp, sq, wq, None, 1, mode)
    if not embq_openmp_enabled():
        n_threads = 1
    cdef int nt = n_threads
    cdef uint8_t[:, ::1] wb = _work_buffers(nt, m, 0)
    cdef _Work wk
    # a few blocks of rows per thread, each a multiple of _ROW_BLOCK rows
    nblocks = (n_rows + _ROW_BLOCK - 1) // _ROW_BLOCK
    if nblocks > 4 * nt:
        nblocks = 4 * nt
    with nogil, parallel(num_threads=nt):
        for b in prange(nblocks, schedule="dynamic"):
            tid = threadid()
            wk = _work_at(&wb[tid, 0], m)
            r0 = b * n_rows // nblocks
            r1 = (b + 1) * n_rows // nblocks
            _score_rows(job, r0, r1, m, &o[0, 0], n_rows, &wk)
    return out


def topk(const uint8_t[:, ::1] codes, const float[::1] scales, zero_points, norms,
         int64_t n_rows, const int8_t[:, ::1] qp, const int32_t[::1] sq,
         const float[::1] wq, int64_t k, bint cosine, int n_threads, str mode="auto"):
    """Top-k rows of ``codes[:n_rows]`` for each query; returns (scores (m, k), rows (m, k)).

    ``qp``, ``sq``, ``wq`` are the packed queries, their sums and weights from
    :func:`prepare_queries`. Sizes are checked here (1 <= k <= n_rows <= len(codes), len(scales)
    and of norms and zero points >= n_rows, norms given when ``cosine``, n_threads >= 1; a
    ValueError otherwise); the caller guarantees the values: query values within [-127, 127]
    and d small enough for int32 accumulators. ``mode`` forces the schedule ("rows",
    "queries"; see :func:`topk_x`). The dense case of :func:`topk_x`.
    """
    if 1 <= n_rows and not 1 <= k <= n_rows:
        raise ValueError(f"k must be within [1, n_rows={n_rows}], got {k}")
    return topk_x(codes, scales, zero_points, norms, n_rows, None, qp, sq, wq, None, k,
                  _MODE_COSINE if cosine else _MODE_DOT, n_threads, mode)


def topk_x(const uint8_t[:, ::1] codes, const float[::1] scales, zero_points, norms,
           int64_t n_rows, idx, const int8_t[:, ::1] qp, const int32_t[::1] sq,
           const float[::1] wq, qn2, int64_t k, int mode, int n_threads,
           str schedule="auto"):
    """Top-k by key over the rows ``idx`` (None: rows [0, n_rows)); returns (keys, rows),
    each (m, k), best first, ties by lower row.

    ``mode`` 0 dot, 1 cosine (``norms``: row norms), 2 l2 (``norms``: squared row norms,
    ``qn2``: squared query norms, keys are minus the squared distances). Checks as for
    :func:`topk`, plus ``idx`` (int64, increasing, within [0, n_rows), or a :class:`AllowList`:
    a checked list, or a mask, which one query reads directly when it is dense everywhere) and
    1 <= k <= len(idx).

    ``schedule``: "rows" (few queries) cuts the rows into a few chunks per thread, each with
    its own heap per query, merged at the end; "queries" hands blocks of queries to the
    threads, each scanning every row into the output heaps; "auto" picks rows mode for fewer
    than 16 queries per thread while the chunk heaps stay small.
    """
    cdef int64_t npos = _check_job(codes, scales, zero_points, norms, n_rows, idx, qp, sq, wq,
                                   qn2, mode, n_threads)
    cdef int64_t m = qp.shape[0], nchunks, c, q, b, nqb, qbs, p0, p1, q0, q1, tid, nscan = npos
    cdef const uint8_t[::1] mv
    if not 1 <= k <= npos:
        raise ValueError(f"k must be within [1, {npos}] (the rows searched), got {k}")
    if schedule not in ("auto", "rows", "queries"):
        raise ValueError(f"schedule must be 'auto', 'rows' or 'queries', got {schedule!r}")
    out_v = np.empty((m, k), dtype=np.float32)
    out_i = np.empty((m, k), dtype=np.int64)
    cdef float[:, ::1] ov = out_v
    cdef int64_t[:, ::1] oi = out_i
    if m == 0:
        return out_v, out_i
    # one query over a mask dense everywhere: the rows up to the mask's end, every one read,
    # only the allowed ones offered (the mask read for those whose score would enter the heap)
    cdef bint masked = (m == 1 and mode != _MODE_L2 and isinstance(idx, AllowList)
                        and (<AllowList>idx).dense)
    cdef _Job job = _make_job(codes, scales, zero_points, norms, None if masked else idx, qp, sq,
                              wq, qn2, k, mode)
    if masked:
        mv = (<AllowList>idx).mask.view(np.uint8)
        nscan = (<AllowList>idx).n_rows
        job.mask = &mv[0]
    if not embq_openmp_enabled():
        n_threads = 1
    cdef int nt = n_threads
    cdef uint8_t[:, ::1] wb = _work_buffers(nt, m, 0 if idx is None or masked else codes.shape[1])
    cdef _Work wk
    cdef float[:, :, ::1] hv
    cdef int64_t[:, :, ::1] hi
    # Rows mode while the per-chunk heaps stay small and there are too few queries to keep every
    # thread busy with whole query blocks; queries mode otherwise.
    nchunks = min(4 * nt if nt > 1 else 1, (nscan + _ROW_BLOCK - 1) // _ROW_BLOCK)
    if schedule == "auto":
        schedule = "rows" if m < 16 * nt and nchunks * m * k <= (1 << 22) else "queries"
    if schedule == "rows":
        heap_v = np.empty((nchunks, m, k), dtype=np.float32)
        heap_i = np.empty((nchunks, m, k), dtype=np.int64)
        hv = heap_v
        hi = heap_i
        # a few chunks per thread, handed out dynamically: a thread slowed down by another
        # process does not hold the others up, and each chunk is still one long stream
        with nogil, parallel(num_threads=nt):
            for c in prange(nchunks, schedule="dynamic"):
                tid = threadid()
                wk = _work_at(&wb[tid, 0], m)
                p0 = c * nscan // nchunks
                p1 = (c + 1) * nscan // nchunks
                embq_heap_init(&hv[c, 0, 0], &hi[c, 0, 0], m * k)
                _scan(job, p0, p1, 0, m, &hv[c, 0, 0], &hi[c, 0, 0], &wk)
        # merging a few small heaps is quicker than waking the threads again
        if nt > 1 and nchunks * m * k > _SERIAL_MERGE:
            with nogil:
                for q in prange(m, num_threads=nt, schedule="static"):
                    _merge(&hv[0, 0, 0], &hi[0, 0, 0], nchunks, m, k, q, &ov[q, 0], &oi[q, 0])
        else:
            with nogil:
                for q in range(m):
                    _merge(&hv[0, 0, 0], &hi[0, 0, 0], nchunks, m, k, q, &ov[q, 0], &oi[q, 0])
    else:
        # blocks of a multiple of 4 queries (the micro-kernel's width), at least one per thread
        qbs = (m + nt - 1) // nt
        qbs = ((qbs + 3) // 4) * 4
        if qbs > _QUERY_BLOCK:
            qbs = _QUERY_BLOCK
        nqb = (m + qbs - 1) // qbs
        with nogil, parallel(num_threads=nt):
            for b in prange(nqb, schedule="dynamic"):
                tid = threadid()
                wk = _work_at(&wb[tid, 0], m)
                q0 = b * qbs
                q1 = q0 + qbs
                if q1 > m:
                    q1 = m
                for q in range(q0, q1):
                    embq_heap_init(&ov[q, 0], &oi[q, 0], k)
                _scan(job, 0, nscan, q0, q1, &ov[q0, 0], &oi[q0, 0], &wk)
                for q in range(q0, q1):
                    embq_heap_sort(&ov[q, 0], &oi[q, 0], k)
    return out_v, out_i


def range_x(const uint8_t[:, ::1] codes, const float[::1] scales, zero_points, norms,
            int64_t n_rows, idx, const int8_t[:, ::1] qp, const int32_t[::1] sq,
            const float[::1] wq, qn2, float threshold, int mode, int n_threads):
    """Every row (of ``idx``, or of [0, n_rows)) whose key is >= ``threshold``, for each query
    (arguments as for :func:`topk_x`). Returns (indptr (m + 1,), keys, rows): query q's
    matches are ``[indptr[q], indptr[q + 1])``, in increasing row order (the caller sorts).

    Two passes over the rows (count, then fill), so nothing grows inside the loops.
    """
    cdef int64_t npos = _check_job(codes, scales, zero_points, norms, n_rows, idx, qp, sq, wq,
                                   qn2, mode, n_threads)
    cdef int64_t m = qp.shape[0], nchunks, c, total, p0, p1, tid
    indptr = np.zeros(m + 1, dtype=np.int64)
    if m == 0 or npos == 0:
        return indptr, np.empty(0, np.float32), np.empty(0, np.int64)
    cdef _Job job = _make_job(codes, scales, zero_points, norms, idx, qp, sq, wq, qn2, 1, mode)
    if not embq_openmp_enabled():
        n_threads = 1
    cdef int nt = n_threads
    cdef uint8_t[:, ::1] wb = _work_buffers(nt, m, 0 if idx is None else codes.shape[1])
    cdef _Work wk
    nchunks = min(4 * nt if nt > 1 else 1, (npos + _ROW_BLOCK - 1) // _ROW_BLOCK)
    counts_a = np.zeros((nchunks, m), dtype=np.int64)
    cdef int64_t[:, ::1] counts = counts_a
    with nogil, parallel(num_threads=nt):
        for c in prange(nchunks, schedule="dynamic"):
            tid = threadid()
            wk = _work_at(&wb[tid, 0], m)
            p0 = c * npos // nchunks
            p1 = (c + 1) * npos // nchunks
            _range(job, p0, p1, m, threshold, &counts[c, 0], NULL, NULL, NULL, &wk)
    # query-major layout: query q's matches from chunk 0, then chunk 1, ... (row order)
    per_q = counts_a.sum(axis=0)
    np.cumsum(per_q, out=indptr[1:])
    total = int(indptr[m])
    starts_a = np.ascontiguousarray(
        (indptr[:m][None, :] + np.cumsum(counts_a, axis=0) - counts_a), dtype=np.int64)
    cdef int64_t[:, ::1] starts = starts_a
    out_v = np.empty(total, dtype=np.float32)
    out_i = np.empty(total, dtype=np.int64)
    if total == 0:
        return indptr, out_v, out_i
    cdef float[::1] ov = out_v
    cdef int64_t[::1] oi = out_i
    with nogil, parallel(num_threads=nt):
        for c in prange(nchunks, schedule="dynamic"):
            tid = threadid()
            wk = _work_at(&wb[tid, 0], m)
            p0 = c * npos // nchunks
            p1 = (c + 1) * npos // nchunks
            _range(job, p0, p1, m, threshold, NULL, &starts[c, 0], &ov[0], &oi[0], &wk)
    return indptr, out_v, out_i
