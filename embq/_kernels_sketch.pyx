# cython: language_level=3
"""Sketch kernels: sign bits of rows and queries, Hamming distances, the K nearest rows per query
by counting, and the exact int32 scores of candidate rows.

The entry points check sizes (O(1) or one pass over small arrays) so that no call reads out of
bounds; :func:`hamming`, the test hook, checks everything. The loops run without the GIL.

The candidate scan works like the int8 search (:mod:`embq._kernels_search`): rows mode (few
queries: contiguous row chunks handed to threads, each with its own candidate sets, merged at the
end) or queries mode (blocks of up to ``_QUERY_BLOCK`` queries handed to threads, each scanning
every row). The scan kernels (``_sketch_simd.h``) compare each distance with its candidate set's
limit as they compute it: no distance is stored, no m x n matrix is built. An allow-list is
scanned in place (the rows at its positions), not copied.
"""

import numpy as np

cimport cython
from cython.parallel cimport parallel, prange, threadid
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint32_t
from libc.string cimport memcpy

from embq._kernels_common cimport EMBQ_V_COUNT, embq_openmp_enabled
from embq._kernels_search cimport (
    EMBQ_QSTRIDE, embq_dot_fn, embq_dot_get, embq_heap_init, embq_heap_offer, embq_heap_sort,
    embq_row_weights,
)

from embq._config import _init_kernels
from embq._kernels_common import VARIANTS
from embq._kernels_search import AllowList, first_bad_row


cdef extern from "_sketch_simd.h" nogil:
    ctypedef struct embq_cands:
        int32_t *cd
        int64_t *cr
        int64_t *cn
        int32_t *lim
        int64_t K
        int64_t cap
        int32_t *hist
        int32_t maxd
        int32_t *shared
    ctypedef void (*embq_hscan_fn)(const uint8_t *rows, const int64_t *idx, int64_t r0,
                                   int64_t r1, int64_t nb, const uint8_t *q, int64_t nq,
                                   const embq_cands *c) noexcept nogil
    embq_hscan_fn embq_hscan_get(int v)
    int embq_hscan_runs(int v)
    void embq_cand_cut(int32_t *cd, int64_t *cr, int64_t *cn, int32_t *lim, int64_t K,
                       int32_t *hist, int32_t maxd)
    void embq_prefetch_bytes(const uint8_t *p, int64_t n)
    void embq_prefetch(const void *p)


DEF _ROW_BLOCK = 256      # candidate rows gathered at a time by score_candidates
DEF _QUERY_BLOCK = 32     # queries per task of the queries mode
DEF _BLOCK_BYTES = 16384  # sketch bytes per block of the scan (within L1 with the queries)
DEF _L2_BLOCK_BYTES = 1 << 17  # sketch bytes per block for two or three queries (within L2)
DEF _MIN_CHUNK = 256      # fewest rows per chunk of the rows mode
DEF _GATHER_AHEAD = 6     # candidate rows prefetched ahead of the one score_candidates copies
DEF _SCORE_THREADED_BYTES = 1 << 19  # code bytes gathered by score_candidates worth threads

cdef int _ham_id = 0


def kernel_variants():
    """Return ``{"sketch": {variant: runs}}`` for the variants this build has, best last."""
    cdef int v
    return {"sketch": {VARIANTS[v]: bool(embq_hscan_runs(v)) for v in range(EMBQ_V_COUNT)
                       if embq_hscan_get(v) != NULL}}


def selected_kernels():
    """Return the variant in use, e.g. ``{"sketch": "avx2"}``."""
    return {"sketch": VARIANTS[_ham_id]}


def _use_kernel(family, name):
    """Run variant ``name`` of ``family`` (embq._config validates the request)."""
    global _ham_id
    if family != "sketch" or not kernel_variants()["sketch"].get(name):
        raise ValueError(f"the {family} family has no variant {name!r} this CPU can run")
    _ham_id = VARIANTS.index(name)


_init_kernels(kernel_variants(), _use_kernel)


def sketch_bytes(int64_t d):
    """Bytes of one sketch row of dimension ``d``: ``ceil(d / 8)``."""
    return (d + 7) // 8


def sign_bits(const float[:, ::1] x, const float[::1] center, int n_threads=1):
    """Sketch rows of ``x`` (n, d): bit j set when ``x[i, j] > center[j]``; uint8 (n, ceil(d/8)).

    Bit j is bit ``j % 8`` (least significant first) of byte ``j // 8``; padding bits are 0.
    NaN compares false, so it gives a 0 bit.
    """
    cdef int64_t n = x.shape[0], d = x.shape[1], nb = (d + 7) // 8, i, j, t
    cdef uint32_t byte
    cdef const float *xi
    cdef const float *c
    if center.shape[0] != d:
        raise ValueError(f"center must have shape ({d},), got ({center.shape[0]},)")
    out = np.zeros((n, nb), dtype=np.uint8)
    if n == 0 or d == 0:
        return out
    cdef uint8_t[:, ::1] o = out
    if not embq_openmp_enabled() or n * d < (1 << 20):
        n_threads = 1
    c = &center[0]
    # branch-free: the comparisons are as unpredictable as the data
    with nogil:
        for i in prange(n, num_threads=max(n_threads, 1), schedule="static"):
            xi = &x[i, 0]
            for j in range(nb):
                byte = 0
                for t in range(8):
                    if j * 8 + t < d:
                        byte = byte | ((<uint32_t>(xi[j * 8 + t] > c[j * 8 + t])) << t)
                o[i, j] = <uint8_t>byte
    return out


def hamming(sketch, queries, rows=None):
    """Hamming distances ``out[i, j] = popcount(sketch[r_j] XOR queries[i])``, int32 (m, c).

    ``r_j`` is ``rows[j]`` (increasing row numbers) or, without ``rows``, ``j`` for every row.
    The test hook that exposes what the selected variant's scan computes: it runs the scan with
    candidate sets large enough to admit every row, so each row's distance is recorded as the
    scan computed it (the whole (m, c) matrix is built: small inputs only). Checks dtypes and
    shapes itself.
    """
    sketch = np.asarray(sketch)
    queries = np.asarray(queries)
    for name, a in (("sketch", sketch), ("queries", queries)):
        if a.dtype != np.uint8:
            raise TypeError(f"{name} must be a uint8 array, got dtype {a.dtype}")
        if a.ndim != 2:
            raise ValueError(f"{name} must be 2-D, got shape {a.shape}")
    if queries.shape[1] != sketch.shape[1]:
        raise ValueError(f"queries must have shape (m, {sketch.shape[1]}) to match the sketch, "
                         f"got {queries.shape}")
    idx = None if rows is None else _checked_rows(rows, sketch.shape[0])
    return _hamming(np.ascontiguousarray(sketch), np.ascontiguousarray(queries), idx)


cdef _hamming(const uint8_t[:, ::1] sk, const uint8_t[:, ::1] qs, idx):
    cdef int64_t nb = sk.shape[1], m = qs.shape[0]
    cdef int64_t npos = sk.shape[0] if idx is None else len(idx)
    cdef int32_t maxd = <int32_t>(8 * nb)
    out = np.zeros((m, npos), dtype=np.int32)
    if npos == 0 or m == 0 or nb == 0:
        return out
    cand_r = np.empty((m, npos), dtype=np.int64)
    cand_n = np.zeros(m, dtype=np.int64)
    cand_l = np.full(m, maxd + 1, dtype=np.int32)
    hist = np.empty(maxd + 1, dtype=np.int32)
    cdef int32_t[:, ::1] o = out
    cdef int64_t[:, ::1] cr = cand_r
    cdef int64_t[::1] cn = cand_n
    cdef int32_t[::1] lim = cand_l
    cdef int32_t[::1] h = hist
    cdef const int64_t[::1] iv
    cdef const int64_t *ip = NULL
    if idx is not None:
        iv = idx
        ip = &iv[0]
    cdef embq_cands c
    # every distance is at most maxd < lim, and a set of npos entries is never full before
    # its last row: every row enters, in order, with its distance
    c.cd = &o[0, 0]
    c.cr = &cr[0, 0]
    c.cn = &cn[0]
    c.lim = &lim[0]
    c.K = npos
    c.cap = npos
    c.hist = &h[0]
    c.maxd = maxd
    c.shared = NULL
    cdef embq_hscan_fn scan = embq_hscan_get(_ham_id)
    with nogil:
        scan(&sk[0, 0], ip, 0, npos, nb, &qs[0, 0], m, &c)
    return out


cdef _checked_rows(rows, int64_t n_rows):
    """``rows`` as an int64 array of strictly increasing row numbers below ``n_rows``: a
    :class:`embq._kernels_search.AllowList` checked for at most ``n_rows`` rows as it is, anything
    else through the same SIMD pass (:func:`embq._kernels_search.first_bad_row`)."""
    if isinstance(rows, AllowList):
        if rows.n_rows > n_rows:
            raise ValueError(f"rows were checked for row numbers below {rows.n_rows}, more than "
                             f"n_rows={n_rows}")
        return rows.array
    arr = np.asarray(rows)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ValueError(f"rows must be a 1-D array of row numbers, got {arr.dtype} "
                         f"{arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    bad = first_bad_row(arr, n_rows)
    if bad >= 0:
        raise ValueError(f"rows must be strictly increasing row numbers within [0, {n_rows}), "
                         f"got rows[{bad}] = {arr[bad]}"
                         + (f" after {arr[bad - 1]}" if bad > 0 else ""))
    return arr


cdef void _scan(embq_hscan_fn scan, const uint8_t *sk, const int64_t *idx, int64_t nb,
                int64_t p0, int64_t p1, const uint8_t *qs, int64_t nq,
                const embq_cands *c) noexcept nogil:
    """Offer the rows at positions [p0, p1) to the sets of the nq queries at qs (the first nq
    sets of c), a block of rows at a time: the block stays in L1 while every group of four
    queries passes over it. One group needs no blocking; two or three queries, which pass one
    after the other, take blocks that stay in L2 (the L1 blocks would cut their prefetching
    short at every block's end)."""
    cdef int64_t step = _BLOCK_BYTES // nb, pb = p0, pe
    if nq == 1 or nq == 4:
        step = p1 - p0
    elif nq < 4:
        step = _L2_BLOCK_BYTES // nb
    if step < 16:
        step = 16
    while pb < p1:
        pe = pb + step
        if pe > p1:
            pe = p1
        scan(sk, idx, pb, pe, nb, qs, nq, c)
        pb = pe


cdef embq_cands _sets(int32_t *cd, int64_t *cr, int64_t *cn, int32_t *lim, int64_t K,
                      int64_t cap, int32_t *hist, int32_t maxd, int32_t *shared) noexcept nogil:
    cdef embq_cands c
    c.cd = cd
    c.cr = cr
    c.cn = cn
    c.lim = lim
    c.K = K
    c.cap = cap
    c.hist = hist
    c.maxd = maxd
    c.shared = shared
    return c


def nearest(const uint8_t[:, ::1] sketch, int64_t n_rows, const uint8_t[:, ::1] qs, int64_t K,
            int n_threads, str mode="auto", rows=None, int64_t n_chunks=0):
    """The ``K`` rows of ``sketch[:n_rows]`` nearest each query sketch in Hamming distance.

    With ``rows`` (strictly increasing row numbers below ``n_rows``, an allow-list) only those
    rows are scanned and ``K`` is at most ``len(rows)``. ``mode`` and ``n_chunks`` (the row chunks
    of the rows mode, 0 for the default) change the work split, never the result. Ties go to
    the lower row. Returns
    ``(rows, dist)``, int64 and int32 (m, K), each query's rows in increasing row order with
    their distances. Requires 1 <= K <= the rows scanned, n_rows <= len(sketch) and query
    sketches as wide as the rows (a ValueError otherwise).
    """
    cdef int64_t n = sketch.shape[0], nb = sketch.shape[1], m = qs.shape[0], npos
    cdef int64_t nchunks, c, q, b, nqb, qbs, p0, p1, q0, q1, tid, cap, e, s, total
    cdef int32_t maxd = <int32_t>(8 * nb)
    if nb < 1 or qs.shape[1] != nb:
        raise ValueError(f"query sketches must have {nb} >= 1 bytes like the rows, got "
                         f"{qs.shape[1]}")
    if not 0 <= n_rows <= n:
        raise ValueError(f"n_rows must be within [0, {n}], got {n_rows}")
    idx = None if rows is None else _checked_rows(rows, n_rows)
    npos = n_rows if idx is None else len(idx)
    if not 1 <= K <= npos:
        raise ValueError(f"K must be within [1, {npos}] (the rows scanned), got {K}")
    if n_threads < 1:
        raise ValueError(f"n_threads must be >= 1, got {n_threads}")
    out_r = np.empty((m, K), dtype=np.int64)
    out_d = np.empty((m, K), dtype=np.int32)
    if m == 0:
        return out_r, out_d
    if not embq_openmp_enabled():
        n_threads = 1
    cdef int nt = n_threads
    cdef embq_hscan_fn scan = embq_hscan_get(_ham_id)
    cdef const int64_t[::1] iv
    cdef const int64_t *ip = NULL
    if idx is not None:
        iv = idx
        ip = &iv[0]
    cap = 2 * K + 256
    hist_buf = np.empty((nt, maxd + 1), dtype=np.int32)
    cdef int32_t[:, ::1] hb = hist_buf
    cdef int64_t[:, ::1] orr = out_r
    cdef int32_t[:, ::1] od = out_d
    cdef int32_t[:, ::1] cd
    cdef int64_t[:, ::1] cr
    cdef int64_t[::1] cn
    cdef int32_t[::1] lim
    cdef int32_t[::1] sh
    cdef int32_t[:, ::1] md
    cdef int64_t[:, ::1] mr
    cdef int64_t[::1] mn
    cdef int32_t[::1] ml
    cdef embq_cands cs
    if n_chunks < 0:
        raise ValueError(f"n_chunks must be >= 0, got {n_chunks}")
    # two chunks per thread: each chunk's sets start empty and fill before their limits
    # bite, so one query over 1,000,000 x 48 bytes on two threads scans about 5% slower in
    # eight chunks than in four, and 35% slower in sixteen; two per thread still lets a
    # thread that gets its core late take less than half
    nchunks = n_chunks if n_chunks else min(2 * nt if nt > 1 else 1,
                                            (npos + _MIN_CHUNK - 1) // _MIN_CHUNK)
    nchunks = min(nchunks, npos)
    if mode == "auto":
        mode = "rows" if m < 4 * nt and nchunks > 1 else "queries"
    if mode == "rows":
        nchunks = max(nchunks, 1)
        cand_d = np.empty((nchunks * m, cap), dtype=np.int32)
        cand_r = np.empty((nchunks * m, cap), dtype=np.int64)
        cand_n = np.zeros(nchunks * m, dtype=np.int64)
        cand_l = np.full(nchunks * m, maxd + 1, dtype=np.int32)
        # each query's bound shared by its chunks (embq_cands): a chunk that starts late
        # refuses at once what another chunk's K nearest already beat
        bound = np.full(m, maxd, dtype=np.int32)
        cd, cr, cn, lim, sh = cand_d, cand_r, cand_n, cand_l, bound
        with nogil, parallel(num_threads=nt):
            for c in prange(nchunks, schedule="dynamic"):
                tid = threadid()
                p0 = c * npos // nchunks
                p1 = (c + 1) * npos // nchunks
                cs = _sets(&cd[c * m, 0], &cr[c * m, 0], &cn[c * m], &lim[c * m], K, cap,
                           &hb[tid, 0], maxd, &sh[0])
                _scan(scan, &sketch[0, 0], ip, nb, p0, p1, &qs[0, 0], m, &cs)
        # merge: the chunks' sets (up to cap entries each) in chunk order keep the rows
        # increasing; one more cut gives the K best
        merged_d = np.empty((m, nchunks * cap), dtype=np.int32)
        merged_r = np.empty((m, nchunks * cap), dtype=np.int64)
        merged_n = np.zeros(m, dtype=np.int64)
        merged_l = np.zeros(m, dtype=np.int32)
        md, mr, mn, ml = merged_d, merged_r, merged_n, merged_l
        with nogil:
            for q in range(m):
                total = 0
                for c in range(nchunks):
                    s = c * m + q
                    e = cn[s]
                    memcpy(&md[q, total], &cd[s, 0], sizeof(int32_t) * e)
                    memcpy(&mr[q, total], &cr[s, 0], sizeof(int64_t) * e)
                    total = total + e
                mn[q] = total
                embq_cand_cut(&md[q, 0], &mr[q, 0], &mn[q], &ml[q], K, &hb[0, 0], maxd)
                memcpy(&orr[q, 0], &mr[q, 0], sizeof(int64_t) * K)
                memcpy(&od[q, 0], &md[q, 0], sizeof(int32_t) * K)
    elif mode == "queries":
        cand_d = np.empty((m, cap), dtype=np.int32)
        cand_r = np.empty((m, cap), dtype=np.int64)
        cand_n = np.zeros(m, dtype=np.int64)
        cand_l = np.full(m, maxd + 1, dtype=np.int32)
        cd, cr, cn, lim = cand_d, cand_r, cand_n, cand_l
        qbs = (m + nt - 1) // nt
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
                cs = _sets(&cd[q0, 0], &cr[q0, 0], &cn[q0], &lim[q0], K, cap, &hb[tid, 0],
                           maxd, NULL)
                _scan(scan, &sketch[0, 0], ip, nb, 0, npos, &qs[q0, 0], q1 - q0, &cs)
                for q in range(q0, q1):
                    embq_cand_cut(&cd[q, 0], &cr[q, 0], &cn[q], &lim[q], K, &hb[tid, 0], maxd)
                    memcpy(&orr[q, 0], &cr[q, 0], sizeof(int64_t) * K)
                    memcpy(&od[q, 0], &cd[q, 0], sizeof(int32_t) * K)
    else:
        raise ValueError(f"mode must be 'auto', 'rows' or 'queries', got {mode!r}")
    return out_r, out_d


def score_candidates(const uint8_t[:, ::1] codes, const float[::1] scales, zero_points, norms,
                     const int64_t[:, ::1] cand, const int8_t[:, ::1] qp,
                     const int32_t[::1] sq, const float[::1] wq, int64_t k, bint cosine,
                     int dot_id, int sel_id, int n_threads):
    """Top-k of each query's candidate rows by the exact int32 score of the int8 search.

    ``cand`` (m, c) holds row numbers (increasing order reads the codes forward); ``qp``,
    ``sq``, ``wq`` are the packed queries of :func:`embq._kernels_search.prepare_queries`;
    ``dot_id`` and ``sel_id`` the int8 search's variants in use. A score is
    ``float(acc) * (w_row * w_query)`` exactly as the int8 search computes it (the same dot
    and row-weight kernels on the gathered rows); ties go to the lower row. Returns
    (scores float32 (m, k), rows int64 (m, k)), best first.
    """
    cdef int64_t m = cand.shape[0], c = cand.shape[1], n = codes.shape[0], d = codes.shape[1]
    cdef int64_t q, a, nr, t, row, ahead, tid, ldq = qp.shape[1]
    if qp.shape[0] != m or sq.shape[0] != m or wq.shape[0] != m:
        raise ValueError(f"{m} candidate lists need {m} packed queries, sums and weights, got "
                         f"{qp.shape[0]}, {sq.shape[0]}, {wq.shape[0]}")
    if not 1 <= k <= c:
        raise ValueError(f"k must be within [1, {c}] (the candidates per query), got {k}")
    if d < 1 or ldq != EMBQ_QSTRIDE(d):
        raise ValueError(f"packed queries must have {EMBQ_QSTRIDE(d)} bytes per row for "
                         f"dimension {d}, got {ldq}")
    if n_threads < 1:
        raise ValueError(f"n_threads must be >= 1, got {n_threads}")
    cand_np = np.asarray(cand)
    need = int(cand_np.max()) + 1 if cand_np.size else 0
    if cand_np.size and (cand_np.min() < 0 or need > n):
        raise ValueError(f"candidate rows must be within [0, {n}), got "
                         f"{cand_np.min()}..{need - 1}")
    # scales, zero points and norms may cover only the first rows (a restricted search)
    if scales.shape[0] < need or (zero_points is not None and len(zero_points) < need) or (
            cosine and (norms is None or len(norms) < need)):
        raise ValueError(f"scales, zero points and norms must cover every candidate row "
                         f"(at least {need} values)")
    out_v = np.empty((m, k), dtype=np.float32)
    out_i = np.empty((m, k), dtype=np.int64)
    if m == 0:
        return out_v, out_i
    cdef float[:, ::1] ov = out_v
    cdef int64_t[:, ::1] oi = out_i
    cdef const uint8_t[::1] zpv
    cdef const float[::1] nv
    cdef const uint8_t *zp = NULL
    cdef const float *nm = NULL
    if zero_points is not None:
        zpv = zero_points
        zp = &zpv[0]
    if cosine:
        nv = norms
        nm = &nv[0]
    if not embq_openmp_enabled() or m * c * d < _SCORE_THREADED_BYTES:
        n_threads = 1
    cdef int nt = n_threads
    # fewer queries than threads: each query's candidates split into nt parts, each part's
    # top-k in its own heap, merged at the end (the order of (score, row) is total, so the
    # merge keeps exactly the k best); the gathers are latency-bound, so the parts overlap
    cdef int64_t nparts = nt if m < nt else 1, ntask = m * nparts, task, part, a1
    part_v = np.empty((ntask, k), dtype=np.float32) if nparts > 1 else out_v
    part_i = np.empty((ntask, k), dtype=np.int64) if nparts > 1 else out_i
    cdef float[:, ::1] pv = part_v
    cdef int64_t[:, ::1] pi = part_i
    cdef embq_dot_fn dot = embq_dot_get(dot_id)
    rows_buf = np.empty((nt, _ROW_BLOCK * d), dtype=np.uint8)
    zp_buf = np.empty((nt, _ROW_BLOCK), dtype=np.uint8)
    sc_buf = np.empty((nt, _ROW_BLOCK), dtype=np.float32)
    nm_buf = np.empty((nt, _ROW_BLOCK), dtype=np.float32)
    w_buf = np.empty((nt, _ROW_BLOCK), dtype=np.float32)
    acc_buf = np.empty((nt, _ROW_BLOCK), dtype=np.int32)
    cdef uint8_t[:, ::1] rb = rows_buf
    cdef uint8_t[:, ::1] zb = zp_buf
    cdef float[:, ::1] sb = sc_buf
    cdef float[:, ::1] nbf = nm_buf
    cdef float[:, ::1] wb = w_buf
    cdef int32_t[:, ::1] ab = acc_buf
    with nogil, parallel(num_threads=nt):
        for task in prange(ntask, schedule="dynamic"):
            tid = threadid()
            q = task // nparts
            part = task % nparts
            embq_heap_init(&pv[task, 0], &pi[task, 0], k)
            a = c * part // nparts
            a1 = c * (part + 1) // nparts
            while a < a1:
                nr = a1 - a
                if nr > _ROW_BLOCK:
                    nr = _ROW_BLOCK
                for t in range(nr):
                    row = cand[q, a + t]
                    if a + t + _GATHER_AHEAD < a1:  # the rows are scattered: ask for them early
                        ahead = cand[q, a + t + _GATHER_AHEAD]
                        embq_prefetch_bytes(&codes[ahead, 0], d)
                        embq_prefetch(&scales[ahead])
                        if zp != NULL:
                            embq_prefetch(&zp[ahead])
                        if cosine:
                            embq_prefetch(&nm[ahead])
                    memcpy(&rb[tid, t * d], &codes[row, 0], d)
                    zb[tid, t] = zp[row] if zp != NULL else 128
                    sb[tid, t] = scales[row]
                    if cosine:
                        nbf[tid, t] = nm[row]
                if cosine:  # scale / norm, as the int8 search weighs a row
                    embq_row_weights(sel_id, &sb[tid, 0], &nbf[tid, 0], nr, &wb[tid, 0])
                else:
                    memcpy(&wb[tid, 0], &sb[tid, 0], sizeof(float) * nr)
                dot(&rb[tid, 0], d, nr, d, &zb[tid, 0], &qp[q, 0], ldq, &sq[q], 1, &ab[tid, 0],
                    _ROW_BLOCK)
                for t in range(nr):
                    embq_heap_offer(&pv[task, 0], &pi[task, 0], k,
                                    <float>ab[tid, t] * (wb[tid, t] * wq[q]), cand[q, a + t])
                a = a + nr
            if nparts == 1:
                embq_heap_sort(&ov[q, 0], &oi[q, 0], k)
    if nparts > 1:
        with nogil:
            for q in range(m):
                embq_heap_init(&ov[q, 0], &oi[q, 0], k)
                for task in range(q * nparts, (q + 1) * nparts):
                    for t in range(k):
                        embq_heap_offer(&ov[q, 0], &oi[q, 0], k, pv[task, t], pi[task, t])
                embq_heap_sort(&ov[q, 0], &oi[q, 0], k)
    return out_v, out_i
