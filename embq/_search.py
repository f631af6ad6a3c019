"""Nearest-neighbour search over per-row uint8 codes: exact int32 scores, top-k, most_similar.

A float query is quantized like a row (:func:`embq._quantize.quantize`: symmetric, values in
[-127, 127], its own scale ``s_q``). For row ``i`` with codes ``c_i``, zero point ``z_i`` and scale
``s_i`` the kernels compute the exact int32 accumulator ``acc = sum_j (c_ij - z_i) * q_j`` and score

* ``metric="dot"``:    ``float32(acc) * (s_i * s_q)``
* ``metric="cosine"``: ``float32(acc) * (w_i * w_q)`` with ``w = scale / norm`` of the dequantized
  row or query (``w = 0`` for a zero vector, so it scores 0, never NaN),

all in float32 in that order (the tests reproduce it bit for bit with numpy). The best ``k`` rows
come first; equal scores are ordered by row number. ``rescore=R`` re-ranks the best ``k * R``
rows by the float query against the dequantized rows (float64 arithmetic).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from embq._utils import effective_n_threads

if TYPE_CHECKING:
    from embq._kernels_search import AllowList
    from embq._typing import AnyStore, ArrayLike

__all__ = [
    "allow_list",
    "most_similar",
    "most_similar_batch",
    "search",
    "search_store",
    "similar_by_key",
    "similar_by_vector",
]

# The metrics of the top-k scan that embq._sharded merges shard by shard; l2 is searched by
# this module only (a sharded store checks against _METRICS, so it refuses l2 rather than
# answer it as dot).
_METRICS = ("cosine", "dot")
_ALL_METRICS = ("cosine", "dot", "l2")
_MODES = {"dot": 0, "cosine": 1, "l2": 2}
_INT32_MAX = 2**31 - 1
# Below this many multiply-adds (rows x dim x queries) a search runs on one thread: waking a
# second thread and joining it costs more than it saves, and on a machine whose other cores are
# busy a parallel region can wait milliseconds for a core. The results do not depend on it.
_SERIAL_MACS = 1 << 22
# Quantizing the queries themselves is threaded only past this many values.
_SERIAL_QUERY_VALUES = 1 << 20


def _plan_threads(threads: int, n_rows: int, d: int, m: int) -> int:
    """Threads to use for a search of ``m`` queries over ``n_rows`` rows of dimension ``d``."""
    if threads > 1 and n_rows * max(d, 1) * m < _SERIAL_MACS:
        return 1
    return threads


# A row gathered from memory (a sparse allow-list) costs about as much as this many rows read
# in sequence: each waits for memory, where a stream is prefetched (140 ns against 28 ns per
# row of 384 bytes on one thread, 1,000,000 x 384 with 1% of the rows allowed, measured
# interleaved with full scans so that the gathered rows come from memory).
_GATHERED_ROW_COST = 5


def _rows_read(n_eff: int, idx: AllowList | None) -> int:
    """About how many rows' worth of reading a scan does: every row, or with an allow-list
    its rows, each weighted as a gathered row, up to every row (where a third or more are
    allowed the kernels read every row, passing over the others)."""
    return n_eff if idx is None else min(n_eff, _GATHERED_ROW_COST * len(idx))


def _kernels():
    from embq import _kernels_search

    return _kernels_search


def selected_kernels() -> dict[str, str]:
    """Return the search micro-kernels in use, e.g. ``{"search_dot": "avx512vnni", ...}``."""
    return _kernels().selected_kernels()


# -- argument checks -------------------------------------------------------------------------

def _positive_int(value: Any, name: str, *, allow_zero: bool = False) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got bool {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None
    lo = 0 if allow_zero else 1
    if v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    return v


def _check_codes(codes: Any) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.dtype != np.uint8:
        raise TypeError(f"codes must be a uint8 array, got dtype {codes.dtype}")
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D (n, d), got shape {codes.shape}")
    if not codes.flags.c_contiguous:
        codes = np.ascontiguousarray(codes)
    return codes


def _check_vector(values: Any, n: int, name: str, dtype: type) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) (one per row), got shape {arr.shape}")
    if dtype is np.float32:
        if arr.dtype.kind != "f":
            raise TypeError(f"{name} must be a float array, got dtype {arr.dtype}")
    elif arr.dtype != dtype:
        raise TypeError(f"{name} must be a {np.dtype(dtype).name} array, got dtype {arr.dtype}")
    # np.asarray(..., dtype, order) copies only when the caller's array is not already usable
    return np.ascontiguousarray(arr, dtype=dtype)


def _check_row_values(values: np.ndarray, name: str) -> None:
    """Refuse NaN, Inf and negative per-row scales or norms (arrays handed in by the caller).

    A negative or NaN weight would not crash the kernels (it scores 0 or sorts last), but the
    results would be silently wrong. Two reductions (NaN propagates through both) cost about
    0.1 ms per million rows; only a bad array pays for locating the first bad row.
    """
    if values.size == 0:
        return
    if values.min() >= 0 and values.max() < np.inf:
        return
    bad = int(np.flatnonzero(~((values >= 0) & (values < np.inf)))[0])
    raise ValueError(
        f"{name} must be finite and >= 0, got {values[bad]} at row {bad}"
    )


def _check_read_values(values: np.ndarray, n_eff: int, idx: AllowList | None, name: str) -> None:
    """:func:`_check_row_values` over the rows a search reads: the first ``n_eff``, or only
    the allowed rows ``idx`` when they are few (a 1% allow-list then costs 1% of the check)."""
    if idx is None or 4 * len(idx) >= n_eff:
        _check_row_values(values[:n_eff], name)
        return
    idx = idx.array
    sub = values[idx]
    if sub.size and not (sub.min() >= 0 and sub.max() < np.inf):
        _check_row_values(values[:int(idx[-1]) + 1], name)   # names the first bad row


def _check_queries(queries: Any, d: int) -> tuple[np.ndarray, bool]:
    q = np.asarray(queries)
    if q.dtype.kind not in "fiu" or q.dtype == np.bool_:
        raise TypeError(f"queries must be a float array, got dtype {q.dtype}")
    single = q.ndim == 1
    if q.ndim not in (1, 2):
        raise ValueError(f"queries must have shape (d,) or (m, d), got shape {q.shape}")
    q2 = q.reshape(1, -1) if single else q
    if q2.shape[1] != d:
        raise ValueError(
            f"queries have dimension {q2.shape[1]}, the rows have dimension {d} "
            f"(queries shape {q.shape})"
        )
    if q2.dtype == np.float32 and q2.flags.c_contiguous:
        q32 = q2   # the usual query: no cast, and no error state to set up for one
    else:
        # A finite float64 value beyond float32's range becomes Inf in the cast; the check
        # below tells that apart from a real NaN or Inf, so numpy's warning is not needed.
        with np.errstate(over="ignore", invalid="ignore"):
            q32 = np.ascontiguousarray(q2, dtype=np.float32)
    if q32.size and not np.isfinite(q32).all():
        raise _bad_query_error(q2, int(np.argmin(np.isfinite(q32).all(axis=1))))
    return q32, single


def _bad_query_error(q2: np.ndarray, bad: int) -> ValueError:
    """The error for query ``bad`` of ``q2`` (as given), whose float32 values are not finite."""
    if np.isfinite(q2[bad]).all():
        big = float(np.abs(q2[bad]).max())
        return ValueError(
            f"query {bad} overflows float32: a value of magnitude {big:.6g}, expected at "
            f"most {float(np.finfo(np.float32).max):.6g}"
        )
    return ValueError(f"query {bad} contains NaN or Inf, expected finite values")


def max_exact_dim(zero_points: np.ndarray | None = None) -> int:
    """Largest d for which every int32 accumulator is exact.

    |code - zp| is at most max(zp, 255 - zp) (128 for the standard zero point) and |q| <= 127.
    """
    if zero_points is None or len(zero_points) == 0:
        worst = 128
    else:
        worst = max(int(zero_points.max()), 255 - int(zero_points.min()), 1)
    return _INT32_MAX // (worst * 127)


# -- the search ------------------------------------------------------------------------------

def search(
    codes: ArrayLike,
    scales: ArrayLike,
    queries: ArrayLike,
    k: int = 10,
    *,
    zero_points: ArrayLike | None = None,
    norms: ArrayLike | None = None,
    metric: str = "cosine",
    rescore: int | None = None,
    restrict: int | None = None,
    n_threads: int | None = None,
    allow: ArrayLike | None = None,
    threshold: float | None = None,
    max_results: int | None = None,
    prefilter: str | None = None,
    oversample: int | None = None,
    sketch: Any = None,
    sketch_center: Any = None,
) -> tuple[Any, Any]:
    """Top-k rows of quantized ``codes`` for each query, or every row past a threshold.

    Parameters
    ----------
    codes : ndarray of uint8, shape (n, d)
        Row codes, d >= 1 (memory-mapped read-only arrays are fine; they are never copied
        when C-contiguous).
    scales : ndarray of float32, shape (n,)
        Per-row scales, finite and >= 0.
    queries : array_like of float, shape (d,) or (m, d)
        Float queries (any float or integer dtype, any memory order); each is quantized like
        a row. Values must be finite and fit float32.
    k : int, default 10
        Number of neighbours; fewer columns come back when fewer than ``k`` rows are searched.
    zero_points : ndarray of uint8, shape (n,), optional
        Per-row zero points (128 when omitted).
    norms : ndarray of float32, shape (n,), optional
        L2 norms of the dequantized rows (:func:`embq._quantize.row_norms`), finite and >= 0;
        computed when needed and not given.
    metric : {"cosine", "dot", "l2"}
        ``"l2"`` reports squared Euclidean distances, smallest first (see the module notes).
    rescore : int, optional
        Re-rank the best ``k * rescore`` rows with the float query against dequantized rows
        (top-k only).
    restrict : int, optional
        Search only the first ``restrict`` rows (0 searches none).
    n_threads : int, optional
        Threads (None = all cores, negative counts back from all).
    allow : array_like of bool, shape (n,), or array_like of int, optional
        Search only these rows: a boolean mask over all n rows, or row numbers (any order,
        repeats ignored). The result is that of a search over a store holding only the
        allowed rows (same scores, same ties), with rows numbered as in ``codes``; ``k``
        results come back whenever ``k`` rows are allowed. Combined with ``restrict``, only
        allowed rows below ``restrict`` are searched. A mask is the quicker form when many
        rows are allowed: one query over a mask that allows a third or more of the rows
        throughout reads every row, as the unfiltered scan does, and looks at the mask only
        for the rows whose score would enter the top ``k`` (no list of row numbers to check).
        Or an :class:`AllowList` from :func:`allow_list`, checked once for many searches.
    threshold : float, optional
        Range search: instead of the top ``k``, every row scoring at least ``threshold``
        (cosine, dot) or at a squared distance of at most ``threshold`` (l2); ``k`` is then
        not used. Sorted like top-k.
    max_results : int, optional
        With ``threshold``: keep at most this many (the best) per query.
    prefilter : {None, "sketch"}, default None
        None scans every row exactly. ``"sketch"`` scores exactly only the ``k * oversample``
        rows nearest each query in Hamming distance between sign-bit sketches (see
        :mod:`embq._sketch`): much faster, and the scores reported are the exact ones of those
        rows, but a true neighbour outside the candidates is missed.
    oversample : int, optional
        Candidates per wanted neighbour with ``prefilter="sketch"`` (default
        ``embq._sketch.DEFAULT_OVERSAMPLE``); at least ``k * rescore`` are taken.
    sketch, sketch_center : ndarray, optional
        The rows' sketch (uint8 (n, ceil(d/8))) and its center (float32 (d,)), from
        :func:`embq._sketch.compute_sketch`; needed with ``prefilter="sketch"``.

    Returns
    -------
    scores : ndarray of float32, shape (k,) or (m, k)
    indices : ndarray of int64, same shape
        Best first; equal scores by increasing row. With ``threshold``: for one query
        (shape (d,)) two 1-D arrays; for (m, d) queries two lists of m such arrays (views
        into the arrays :func:`search_range` returns).

    Raises
    ------
    TypeError
        For arrays of the wrong dtype, or a non-int ``k``, ``rescore``, ``restrict`` or
        ``n_threads``.
    ValueError
        For wrong shapes, NaN, Inf or negative scales or norms, queries that are not finite
        or overflow float32, and out-of-range arguments.
    """
    return _search(codes, scales, queries, k, zero_points, norms, metric, rescore, restrict,
                   n_threads, trusted=False, allow=allow, threshold=threshold,
                   max_results=max_results, prefilter=prefilter, oversample=oversample,
                   sketch=sketch, sketch_center=sketch_center)


def search_range(
    codes: ArrayLike,
    scales: ArrayLike,
    queries: ArrayLike,
    threshold: float,
    *,
    zero_points: ArrayLike | None = None,
    norms: ArrayLike | None = None,
    metric: str = "cosine",
    restrict: int | None = None,
    n_threads: int | None = None,
    allow: ArrayLike | None = None,
    max_results: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Range search in CSR form: every row scoring at least ``threshold`` (cosine, dot) or
    within squared distance ``threshold`` (l2), for each query.

    Arguments as for :func:`search`. Returns ``(indptr, scores, rows)``: the matches of query
    ``q`` are ``scores[indptr[q]:indptr[q + 1]]`` and ``rows[...]``, best first, ties by lower
    row (a single (d,) query is treated as one row of queries).
    """
    q = np.asarray(queries)
    return _search(codes, scales, q.reshape(1, -1) if q.ndim == 1 else q, 1, zero_points,
                   norms, metric, None, restrict, n_threads, trusted=False, allow=allow,
                   threshold=threshold, max_results=max_results, csr=True)


# Row numbers out of order become a mask when there are at least one per this many rows;
# fewer are sorted. Marking a mask costs a few passes over n bytes, sorting about 10 ns per
# row number (1,000,000 rows: 10,000 numbers sort in 70 us, the mask with its count and list
# takes about 200 us; at 20,000 numbers the two are even).
_MASK_FROM_ROWS = 64


def allow_list(allow: ArrayLike, n_rows: int) -> AllowList:
    """Check an allow-list once, for any number of searches over ``n_rows`` rows.

    Each search checks the ``allow=`` it is given: one pass over the row numbers (4 MB for
    half of a million rows, about 2% of one query's scan) or one count of a mask, and a sort
    or a marking pass for row numbers out of order. The :class:`AllowList` this returns has
    been through that already, and ``search``, ``Store.search``, ``most_similar``,
    ``most_similar_batch`` and ``similar_by_vector`` take it as ``allow=`` as it is. It holds
    its own copy, so a change to the array it came from changes nothing.

    Parameters
    ----------
    allow : array_like of bool, shape (n_rows,), or array_like of int
        A boolean mask over all ``n_rows`` rows, or row numbers within [0, n_rows) in any
        order (repeats ignored). ``Store.allow_list`` also takes keys.
    n_rows : int
        The rows of the codes it will be used with; a search over another number of rows
        refuses it.

    Returns
    -------
    AllowList
        ``len()`` is the number of allowed rows; ``array`` lists them (int64, increasing,
        read-only); ``mask`` is the boolean mask where it is held as one (a mask was given,
        or many row numbers out of order), None otherwise.

    Raises
    ------
    TypeError
        Neither booleans nor integers.
    ValueError
        A mask of another length than ``n_rows``, or a row number outside [0, n_rows).

    Examples
    --------
    >>> import numpy as np, embq
    >>> q = embq.quantize(np.eye(4, dtype=np.float32))
    >>> allowed = embq.allow_list([1, 3], 4)
    >>> allowed
    <AllowList: 2 of 4 rows allowed (row numbers)>
    >>> embq.search(q.codes, q.scales, np.ones(4), 1, allow=allowed)[1]
    array([1])
    """
    n = _positive_int(n_rows, "n_rows", allow_zero=True)
    if isinstance(allow, _kernels().AllowList):
        if allow.n_rows != n:
            raise ValueError(f"allow is an AllowList of {allow.n_rows} rows, not {n}")
        return allow
    # a copy of what the caller holds: the list is checked once, so it must not change
    return _allow_rows(np.array(allow, copy=True), n, n)


def _allow_rows(allow: Any, n: int, n_eff: int) -> AllowList:
    """An allow-list as increasing unique row numbers within [0, n_eff): a checked
    :class:`embq._kernels_search.AllowList` (its ``array`` int64), which the scans take without
    checking it again. A boolean mask stays a mask (one query scans it without a row list),
    and so do many row numbers out of order (marked in a mask instead of sorted; a few are
    sorted).

    A boolean mask must cover all ``n`` rows; row numbers must be within [0, n) (negative
    numbers are refused rather than counted from the end).
    """
    if isinstance(allow, _kernels().AllowList):
        if allow.n_rows != n:
            raise ValueError(f"allow is an AllowList of {allow.n_rows} rows, but the search "
                             f"is over {n}; make it with store.allow_list(allow) for the "
                             f"store searched, or embq.allow_list(allow, {n})")
        return allow.below(n_eff) if n_eff < n else allow
    if isinstance(allow, (str, bytes)) or (isinstance(allow, (list, tuple)) and any(
            isinstance(a, str) for a in allow)):
        raise TypeError("allow must be a boolean mask or row numbers; keys (str) are taken "
                        "by the Store methods (store.search(..., allow=keys))")
    arr = np.asarray(allow)
    if arr.ndim != 1:
        raise ValueError(f"allow must be 1-D (a mask of length {n} or row numbers), got "
                         f"shape {arr.shape}")
    if arr.dtype == np.bool_:
        if arr.shape[0] != n:
            raise ValueError(f"a boolean allow mask must have one entry per row ({n}), got "
                             f"{arr.shape[0]}")
        rows = _kernels().allow_mask(arr, n_eff)
    elif arr.dtype.kind in "iu" or arr.size == 0:
        flat = np.ascontiguousarray(arr, dtype=np.int64)
        # increasing rows (the usual list) need no copy and no second pass: the kernel's
        # one SIMD pass checks them for the scans, which then take them as they are
        rows = _kernels().allow_list(flat, n)
        if not isinstance(rows, int):
            return rows.below(n_eff) if n_eff < n else rows
        if flat.size * _MASK_FROM_ROWS >= n:
            # many rows out of order (or repeated): marking them in a mask is linear, where
            # sorting them is not (500,000 rows: the mask 0.5 ms, np.sort 6 ms)
            mask = np.zeros(n, dtype=np.bool_)
            bad = _kernels().mark_rows(flat, mask.view(np.uint8))
            if bad < 0:
                return _kernels().allow_mask(mask, n_eff)
        else:
            lo, hi = int(flat.min()), int(flat.max())
            bad = -1 if lo >= 0 and hi < n else int(np.flatnonzero((flat < 0) | (flat >= n))[0])
        if bad >= 0:
            raise ValueError(f"allow[{bad}] = {int(flat[bad])} is not a row number: expected "
                             f"0 <= row < {n}")
        # sorted, then repeats dropped: np.unique takes ten times as long (1 ms for 10,000)
        srt = np.sort(flat)
        first = np.empty(srt.size, dtype=np.bool_)
        first[0] = True
        np.not_equal(srt[1:], srt[:-1], out=first[1:])
        unique = srt[first]
        rows = _kernels().allow_list(unique[:np.searchsorted(unique, n_eff)], n_eff)
    else:
        raise TypeError(f"allow must be a boolean mask or integer row numbers, got dtype "
                        f"{arr.dtype}")
    return rows


def _range_args(threshold: Any, max_results: Any,
                rescore: int | None) -> tuple[float | None, int | None]:
    """``threshold`` and ``max_results`` of a range search, checked (None, None: top-k)."""
    if threshold is None:
        if max_results is not None:
            raise ValueError("max_results caps a range search: give threshold= too")
        return None, None
    if isinstance(threshold, (bool, np.bool_)) or not isinstance(
            threshold, (int, float, np.integer, np.floating)):
        raise TypeError(f"threshold must be a real number, got {_describe(threshold)}")
    if not np.isfinite(float(threshold)):
        raise ValueError(f"threshold must be finite, got {threshold}")
    if rescore is not None:
        raise ValueError("rescore applies to top-k searches, not with threshold=")
    if max_results is not None:
        max_results = _positive_int(max_results, "max_results")
    return float(threshold), max_results


def _check_sketch_search(prefiltered: bool, threshold: float | None, metric: str) -> None:
    """The searches the sketch prefilter can answer: top-k by cosine or dot."""
    if prefiltered and (threshold is not None or metric == "l2"):
        raise ValueError("prefilter='sketch' is for top-k cosine or dot searches: the sketch "
                         "ranks rows by angle, so it cannot find every row within a threshold= "
                         "nor rank by metric='l2' (a distance that depends on the lengths)")


def _search(codes, scales, queries, k, zero_points, norms, metric, rescore, restrict,
            n_threads, *, trusted: bool, allow: Any = None, threshold: Any = None,
            max_results: Any = None, csr: bool = False, prefilter: str | None = None,
            oversample: int | None = None, sketch: Any = None,
            sketch_center: Any = None) -> tuple[Any, ...]:
    """:func:`search`; ``trusted`` skips the O(n) value checks of scales and norms.

    A store's arrays were checked when it was written, and a single-query search is fast
    enough that a pass over them would show, so :func:`search_store` trusts them.
    """
    codes = _check_codes(codes)
    n, d = codes.shape
    if d == 0:
        raise ValueError(
            f"codes have dimension 0 (shape {codes.shape}): there is nothing to score; "
            "expected rows of dimension >= 1"
        )
    scales = _check_vector(scales, n, "scales", np.float32)
    zp = None if zero_points is None else _check_vector(zero_points, n, "zero_points", np.uint8)
    if metric not in _ALL_METRICS:
        raise ValueError(f"metric must be 'cosine', 'dot' or 'l2', got {metric!r}")
    k = _positive_int(k, "k")
    if rescore is not None:
        rescore = _positive_int(rescore, "rescore")
    threshold, max_results = _range_args(threshold, max_results, rescore)
    n_eff = n if restrict is None else min(_positive_int(restrict, "restrict", allow_zero=True), n)
    from embq._sketch import check_prefilter

    plan = check_prefilter(prefilter, oversample, sketch, sketch_center, d, n)
    _check_sketch_search(plan is not None, threshold, metric)
    qf, single = _check_queries(queries, d)
    threads = _plan_threads(effective_n_threads(n_threads), n_eff, d, qf.shape[0])
    # scanning the zero points costs O(n); only needed when the worst case could overflow
    limit = max_exact_dim(zp) if d > _INT32_MAX // (255 * 127) else d
    if d > limit:
        raise ValueError(
            f"dimension {d} is too large for exact int32 accumulators (at most {limit} with "
            "these zero points); split the vectors or reduce the dimension"
        )
    # the allowed rows first: only their scales and norms are read, so only they are checked
    idx = None if allow is None else _allow_rows(allow, n, n_eff)
    if not trusted:
        _check_read_values(scales, n_eff, idx, "scales")
    if metric in ("cosine", "l2"):
        if norms is None:
            from embq._quantize import row_norms

            norms = row_norms(codes[:n_eff], scales[:n_eff], None if zp is None else zp[:n_eff],
                              n_threads=threads)
            norms = np.ascontiguousarray(norms, dtype=np.float32)
        else:
            norms = _check_vector(norms, n, "norms", np.float32)
            if not trusted:
                _check_read_values(norms, n_eff, idx, "norms")
    else:
        norms = None
    if threshold is not None:
        indptr, scores, rows = _range_checked(codes, scales, zp, norms, n_eff, idx, qf,
                                              float(threshold), metric, max_results, threads)
        if csr:
            return indptr, scores, rows
        if single:
            return scores, rows
        return np.split(scores, indptr[1:-1]), np.split(rows, indptr[1:-1])
    if plan is not None and idx is not None:  # the sketch scan over the allowed rows only
        scores, rows = _search_checked(codes, scales, zp, norms, len(idx), qf, k, metric,
                                       rescore, threads, plan=plan._replace(rows=idx))
    elif idx is None and metric != "l2":
        scores, rows = _search_checked(codes, scales, zp, norms, n_eff, qf, k, metric,
                                       rescore, threads, plan=plan)
    else:
        scores, rows = _search_x(codes, scales, zp, norms, n_eff, idx, qf, k, metric,
                                 rescore, threads)
    if single:
        return scores[0], rows[0]
    return scores, rows


# Queries whose largest |value| lies outside [2**-_SAFE_EXPONENT, 2**_SAFE_EXPONENT] are scaled
# by a power of two before quantizing. Outside that range the float32 arithmetic of the query's
# scale and norm over- or underflows: a value of 3e38 gives an infinite norm, so a zero cosine
# weight and all-zero scores. Inside it nothing changes, bit for bit.
_SAFE_EXPONENT = 64


def _query_exponents(qf: np.ndarray) -> np.ndarray | None:
    """Per query, the power of two that brings its largest |value| into [1, 2) (0 for a zero
    query), or None when every query is zero or inside the safe range."""
    if qf.size == 0:
        return None
    peak = np.abs(qf).max(axis=1)
    if (((peak >= 2.0 ** -_SAFE_EXPONENT) & (peak <= 2.0 ** _SAFE_EXPONENT)) | (peak == 0)).all():
        return None
    _, exponents = np.frexp(peak)  # peak = mantissa * 2**e with mantissa in [0.5, 1)
    exponents = exponents.astype(np.int64) - 1
    exponents[peak == 0] = 0
    return exponents


# The query scales (max |value| / 127) of queries inside the safe range: checking them costs
# two reductions over one value per query, nothing per dimension.
_SAFE_SCALES = (float(np.float32(2.0 ** -_SAFE_EXPONENT / 127)),
                float(np.float32(2.0 ** _SAFE_EXPONENT / 127)))


def _quantize_queries(qf: np.ndarray, metric: str,
                      threads: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Quantize float queries like rows.

    Returns (packed int8, int32 sums, float32 weights, exponents): a query outside the safe
    range is scaled by ``2**-e`` (see :func:`_query_exponents`) and quantized again, which
    changes no cosine score and divides its dot scores by ``2**e``; ``exponents`` holds those
    ``e`` (None when no query was scaled) for the caller to scale dot scores back.
    """
    if qf.size < _SERIAL_QUERY_VALUES:
        threads = 1
    packed, sumq, wq, qs = _quantized(qf, metric == "cosine", threads)
    exponents = None
    lo, hi = _SAFE_SCALES
    # one query (the latency-critical case) is checked with Python floats, no numpy call
    safe = (lo <= float(qs[0]) <= hi if qs.shape[0] == 1
            else qs.shape[0] == 0 or (qs.min() >= lo and qs.max() <= hi))
    if not safe:
        exponents = _query_exponents(qf)  # zero queries only: None
        if exponents is not None:
            # Exact: a power of two only moves the exponent of each value.
            packed, sumq, wq, _ = _quantized(
                np.ldexp(qf, -exponents[:, None]).astype(np.float32), metric == "cosine",
                threads)
    return packed, sumq, wq, exponents


def _quantized(qf: np.ndarray, cosine: bool, threads: int):
    """(packed, sums, weights, scales) of float32 queries (C order) already found finite."""
    out = _kernels().quantize_queries(qf, cosine, threads)
    if isinstance(out, int):   # not reached from search(): _check_queries refused it first
        raise _bad_query_error(qf, out)
    return out


def _search_checked(codes, scales, zp, norms, n_eff, qf, k, metric, rescore, threads,
                    mode="auto", plan=None):
    m = qf.shape[0]
    kk = min(k, n_eff)
    if kk == 0 or m == 0:
        return np.empty((m, kk), np.float32), np.empty((m, kk), np.int64)
    kc = min(k * rescore, n_eff) if rescore else kk
    qp, sumq, wq, exponents = _quantize_queries(qf, metric, threads)
    if plan is not None:  # prefilter="sketch" (embq._sketch)
        from embq._sketch import prefilter_topk

        scores, rows = prefilter_topk(codes, scales, zp, norms, n_eff, qf, qp, sumq, wq, kc,
                                      metric == "cosine", plan, k, threads)
    else:
        scores, rows = _kernels().topk(codes, scales, zp, norms, n_eff, qp, sumq, wq, kc,
                                       metric == "cosine", threads, mode)
    if rescore:
        scores, rows = _rescore(codes, scales, zp, qf, rows, kk, metric, threads)
    elif exponents is not None and metric == "dot":
        # The ranking was made on the scaled query; the scores are the query's own (a dot
        # product beyond float32's range is reported as +-inf, still in ranking order).
        with np.errstate(over="ignore"):
            scores = np.ldexp(scores, exponents[:, None]).astype(np.float32)
    return scores, rows


def _l2_queries(qf: np.ndarray, threads: int):
    """Quantized queries for l2: (packed, sums, scales, squared norms of the dequantized
    queries). No power-of-two rescue (a distance is not invariant under scaling): a query
    so large that its squared norm overflows float32 gets infinite distances."""
    packed, sumq, wq, qs = _quantized(qf, False,
                                      threads if qf.size >= _SERIAL_QUERY_VALUES else 1)
    v = packed[:, :qf.shape[1]].astype(np.int64)
    ss = np.einsum("ij,ij->i", v, v).astype(np.float64)
    qn = (qs.astype(np.float64) * np.sqrt(ss)).astype(np.float32)
    with np.errstate(over="ignore"):
        qn2 = qn * qn
    return packed, sumq, wq, qn2


def _prepared(qf, metric, norms, threads, *, rescue: bool):
    """Queries and row norms as :func:`embq._kernels_search.topk_x` reads them:
    (packed, sums, weights, squared query norms or None, norms argument, exponents)."""
    if metric == "l2":
        qp, sumq, wq, qn2 = _l2_queries(qf, threads)
        with np.errstate(over="ignore"):
            return qp, sumq, wq, qn2, norms * norms, None
    if rescue:
        qp, sumq, wq, exponents = _quantize_queries(qf, metric, threads)
    else:
        qp, sumq, wq, _ = _quantized(qf, metric == "cosine",
                                     threads if qf.size >= _SERIAL_QUERY_VALUES else 1)
        exponents = None
    return qp, sumq, wq, None, norms if metric == "cosine" else None, exponents


def _search_x(codes, scales, zp, norms, n_eff, idx, qf, k, metric, rescore, threads):
    """Top-k over an allow-list and/or by l2, on :func:`embq._kernels_search.topk_x`."""
    m = qf.shape[0]
    npos = n_eff if idx is None else len(idx)
    kk = min(k, npos)
    if kk == 0 or m == 0:
        return np.empty((m, kk), np.float32), np.empty((m, kk), np.int64)
    kc = min(k * rescore, npos) if rescore else kk
    threads = _plan_threads(threads, _rows_read(n_eff, idx), codes.shape[1], m)
    qp, sumq, wq, qn2, nrm, exponents = _prepared(qf, metric, norms, threads, rescue=True)
    keys, rows = _kernels().topk_x(codes, scales, zp, nrm, n_eff, idx, qp, sumq, wq, qn2, kc,
                                   _MODES[metric], threads)
    scores = -keys if metric == "l2" else keys
    if rescore:
        scores, rows = _rescore(codes, scales, zp, qf, rows, kk, metric, threads)
    elif exponents is not None and metric == "dot":
        with np.errstate(over="ignore"):
            scores = np.ldexp(scores, exponents[:, None]).astype(np.float32)
    return scores, rows


def _range_checked(codes, scales, zp, norms, n_eff, idx, qf, threshold, metric, max_results,
                   threads):
    """Range search: (indptr, scores, rows), each query's matches best first."""
    m = qf.shape[0]
    npos = n_eff if idx is None else len(idx)
    threads = _plan_threads(threads, _rows_read(n_eff, idx), codes.shape[1], m)
    # cosine is invariant under the power-of-two rescue; dot and l2 are searched unscaled so
    # that the threshold means the same thing for every query
    qp, sumq, wq, qn2, nrm, _ = _prepared(qf, metric, norms, threads,
                                          rescue=metric == "cosine")
    with np.errstate(over="ignore"):
        thr = np.float32(threshold)
    key = -thr if metric == "l2" else thr
    if m == 0 or npos == 0:
        return np.zeros(m + 1, np.int64), np.empty(0, np.float32), np.empty(0, np.int64)
    indptr, keys, rows = _kernels().range_x(codes, scales, zp, nrm, n_eff, idx, qp, sumq, wq,
                                            qn2, float(key), _MODES[metric], threads)
    qid = np.repeat(np.arange(m, dtype=np.int64), np.diff(indptr))
    order = np.lexsort((rows, -keys, qid))   # per query: best key first, then lower row
    keys, rows = keys[order], rows[order]
    if max_results is not None and keys.size:
        rank = np.arange(keys.size, dtype=np.int64) - np.repeat(indptr[:-1], np.diff(indptr))
        keep = rank < max_results
        keys, rows = keys[keep], rows[keep]
        indptr = np.concatenate(([0], np.cumsum(np.minimum(np.diff(indptr), max_results))))
    return indptr, (-keys if metric == "l2" else keys), rows


def _rescore(codes, scales, zp, qf, cand, kk, metric, threads=1):
    """Re-rank candidate rows (m, c) by the float query against the dequantized rows."""
    from embq._quantize import dequantize

    m, c = cand.shape
    d = codes.shape[1]
    out_s = np.empty((m, kk), np.float32)
    out_i = np.empty((m, kk), np.int64)
    step = max(1, (1 << 22) // max(1, c * max(d, 1)))  # about 32 MB of float64 per chunk
    for a in range(0, m, step):
        b = min(m, a + step)
        rows = cand[a:b].ravel()
        # gather in increasing row order (kind to memory maps), then restore
        order = np.argsort(rows, kind="stable")
        x = np.empty((rows.size, d), np.float32)
        x[order] = dequantize(codes, scales, zp, rows=rows[order],
                              n_threads=threads if rows.size * d >= _SERIAL_MACS else 1)
        x = x.reshape(b - a, c, d).astype(np.float64)
        q = qf[a:b].astype(np.float64)
        if metric == "l2":
            diff = x - q[:, None, :]
            s = -np.einsum("icd,icd->ic", diff, diff)   # ranked as a similarity
        else:
            s = np.einsum("icd,id->ic", x, q)
        if metric == "cosine":
            denom = np.sqrt(np.einsum("icd,icd->ic", x, x)) * np.linalg.norm(q, axis=1)[:, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                s = np.where(denom > 0, s / denom, 0.0)
        with np.errstate(over="ignore"):
            s32 = s.astype(np.float32)
        idx = cand[a:b]
        # best first, ties by lower row: sort by (-score, row). A dot product beyond float32's
        # range is +-inf in float32; those are ranked by their float64 value.
        rank = s32.astype(np.float64)
        big = np.isinf(s32)
        if big.any():
            rank[big] = s[big]
        pick = np.lexsort((idx, -rank), axis=-1)[:, :kk]
        out_s[a:b] = np.take_along_axis(-s32 if metric == "l2" else s32, pick, axis=1)
        out_i[a:b] = np.take_along_axis(idx, pick, axis=1)
    return out_s, out_i


def search_store(store: AnyStore, queries: Any, k: int = 10, *, metric: str = "cosine",
                 rescore: int | None = None, restrict: int | None = None,
                 n_threads: int | None = None, allow: Any = None,
                 threshold: float | None = None, max_results: int | None = None,
                 prefilter: str | None = None,
                 oversample: int | None = None) -> tuple[Any, Any]:
    """:func:`search` over an open :class:`embq.Store` (its memory-mapped codes, scales, norms,
    and sketch for ``prefilter="sketch"``).

    The store's norms are used as stored and its scales and norms are not checked again (the
    writer checked them); nothing of size n is copied or scanned in Python. ``allow`` may
    also be a list of keys (str).
    """
    sketch = store.sketch if prefilter is not None else None
    if prefilter == "sketch" and sketch is None:
        raise ValueError(f"prefilter='sketch': the store {store.path!r} has no sketch; add one "
                         "with `embq sketch STORE` (or compress without --no-sketch)")
    return _search(store.codes, store.scales, queries, k, store.zero_points,
                   store.norms if metric in ("cosine", "l2") else None, metric, rescore,
                   restrict, n_threads, trusted=True, allow=_store_allow(store, allow),
                   threshold=threshold, max_results=max_results, prefilter=prefilter,
                   oversample=oversample, sketch=sketch,
                   sketch_center=store.sketch_center if sketch is not None else None)


def _store_allow(store: AnyStore, allow: Any) -> Any:
    """A Store's allow-list: keys (str) become row numbers; masks, row numbers and an
    :class:`AllowList` pass."""
    if allow is None or isinstance(allow, (np.ndarray, _kernels().AllowList)):
        return allow
    if isinstance(allow, str):
        raise TypeError(f"allow must be a list of keys, a boolean mask or row numbers, got "
                        f"{_describe(allow)}; pass [{allow!r}] for one key")
    items = list(allow)
    if any(isinstance(a, str) for a in items):
        return _key_rows(store, items, "allow")
    return np.asarray(items) if items else np.empty(0, np.int64)


def _key_rows(store: AnyStore, keys: list, name: str) -> np.ndarray:
    """Rows of ``keys`` (all str), looked up as one batch: a KeyError names the first one
    absent as ``name[j]``, a TypeError the first item that is not a str."""
    try:
        rows = store._rows_of_keys(keys)
    except TypeError:
        j = next(j for j, key in enumerate(keys) if not isinstance(key, str))
        raise TypeError(f"{name} mixes keys and other values: {name}[{j}] is "
                        f"{_describe(keys[j])}") from None
    missing = rows < 0
    if missing.any():
        j = int(np.argmax(missing))
        raise KeyError(f"{name}[{j}]: key {keys[j]!r} not present")
    return rows


# -- gensim-style helpers --------------------------------------------------------------------

_KEY_OR_VECTOR = "a key (str or int row number) or a vector (1-D numpy array)"


def _describe(value: Any) -> str:
    """``bytes b'cat'``: the type and a short repr of a value an error refuses."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _is_key(value: Any) -> bool:
    return isinstance(value, (str, int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _query_items(value: Any, name: str) -> list[tuple[Any, str]]:
    """gensim's ``positive``/``negative``: None, one key or vector, or a list of keys, vectors
    and (key or vector, weight) pairs. Returns ``(item, label)`` with labels such as
    ``positive[2]``; each item is checked later by :func:`_query_item`.

    bytes are refused here: iterating them would give row numbers (``b"cat"`` is rows 99, 97,
    116), which is never what was meant.
    """
    if value is None:
        return []
    if _is_key(value) or (isinstance(value, np.ndarray) and value.ndim == 1):
        return [(value, name)]
    if isinstance(value, np.ndarray):
        if value.ndim != 2:
            raise ValueError(f"{name} must be one vector (d,) or several (m, d) as a numpy "
                             f"array, got shape {value.shape}")
        return [(row, f"{name}[{j}]") for j, row in enumerate(value)]
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name} must be {_KEY_OR_VECTOR}, or a list of them, got "
                        f"{_describe(value)}; keys are str (decode bytes first)")
    if isinstance(value, (bool, np.bool_, float, np.floating, complex, dict)) or not hasattr(
            value, "__iter__"):
        raise TypeError(f"{name} must be {_KEY_OR_VECTOR}, or a list of them, got "
                        f"{_describe(value)}")
    return [(item, f"{name}[{j}]") for j, item in enumerate(value)]


def _query_item(item: Any, sign: float, label: str) -> tuple[Any, float]:
    """One query item as ``(key or vector, weight)``: plain items weigh ``sign`` (+1 positive,
    -1 negative), an ``(item, weight)`` pair its weight as given (gensim 4's rule).

    Only types and values are checked here; keys are looked up later.
    """
    weight = sign
    if isinstance(item, tuple):
        if len(item) != 2:
            raise ValueError(f"{label} is a tuple of {len(item)} item"
                             f"{'s' if len(item) != 1 else ''} {item!r}; expected a (key or "
                             "vector, weight) pair such as ('king', 2.0)")
        item, weight = item
        if isinstance(weight, (bool, np.bool_)) or not isinstance(
                weight, (int, float, np.integer, np.floating)):
            raise TypeError(f"the weight of {label} must be a real number, got "
                            f"{_describe(weight)}")
        weight = float(weight)
        if not np.isfinite(weight):
            raise ValueError(f"the weight of {label} must be finite, got {weight}")
        label = f"{label}[0]"
    if _is_key(item):
        return item, weight
    if isinstance(item, np.ndarray):
        return item, weight
    hint = ""
    if isinstance(item, (bytes, bytearray, memoryview)):
        hint = "; keys are str (decode bytes first)"
    elif isinstance(item, (list, tuple)):
        hint = "; vectors are numpy arrays, (item, weight) pairs tuples"
    raise TypeError(f"{label} must be {_KEY_OR_VECTOR} or an (item, weight) tuple, got "
                    f"{_describe(item)}{hint}")


def _key_of(store: AnyStore, row: int) -> Any:
    keys = store.index_to_key
    return keys[row] if keys is not None else row


def _checked_vector(store: AnyStore, item: np.ndarray, label: str) -> np.ndarray:
    """A query vector as float64, or the error that says what is wrong with it."""
    # checked one by one: numpy cannot average vectors of different lengths, and its error
    # would not say which item is wrong
    if item.dtype.kind not in "fiu" or item.dtype == np.bool_:
        raise TypeError(f"query vectors must be float arrays, got dtype {item.dtype} ({label})")
    if item.shape != (store.dim,):
        raise ValueError(f"query vectors must have shape ({store.dim},), got shape "
                         f"{item.shape} ({label})")
    vec = np.asarray(item, dtype=np.float64)
    if not np.isfinite(vec).all():
        raise ValueError(f"query vector {label} contains NaN or Inf, expected finite values")
    return vec


def _scaled(vec: np.ndarray) -> tuple[np.ndarray, int]:
    """``vec`` as ``(v, e)`` with ``vec == v * 2**e`` and max |v| in [0.5, 1) (exactly: a
    power of two only moves exponents); ``(vec, 0)`` for a zero vector."""
    peak = float(np.abs(vec).max()) if vec.size else 0.0
    if peak == 0:
        return vec, 0
    e = int(np.frexp(peak)[1])
    return np.ldexp(vec, -e), e


def _unit(vec: np.ndarray) -> np.ndarray:
    """``vec / ||vec||`` for any finite float64 vector (zero stays zero): the norm is taken
    of the vector scaled to max |v| < 1, so its squares neither overflow (values of 1e200)
    nor underflow (values of 1e-200); for other vectors the result is the same bit for bit."""
    v, _ = _scaled(vec)
    nrm = np.linalg.norm(v)
    return v / nrm if nrm > 0 else v


def _query_vector(store: AnyStore,
                  items: list[tuple[Any, float, str]]) -> tuple[np.ndarray, set[int]]:
    """gensim's query: the unit-normalized weighted mean of unit keys and raw vectors.

    ``items`` are ``(key or vector, weight, label)``, checked by :func:`_query_item`. Returns
    the query (float32, shape (d,)) and the rows of the keys it was made from. Any finite
    vectors and weights work: when the plain float64 arithmetic over- or underflows (vectors
    of 1e200 or 1e-200, weights of 2**900, a sum of two 1e308 vectors), each term
    ``weight * vector`` is formed as a mantissa part times a power of two and all terms are
    brought to the largest one's power before summing, which gives the same direction.
    """
    if not items:
        raise ValueError("cannot compute similarity with no input: give positive and/or negative")
    vectors, weights, exclude = [], [], set()
    # Unit rows and ordinary weights cannot over- or underflow: no need to silence numpy
    # (np.errstate costs microseconds, which a one-key query notices).
    ordinary = all(w == 0 or 2.0 ** -300 < abs(w) < 2.0 ** 300 for _, w, _ in items)
    for item, weight, label in items:
        if isinstance(item, np.ndarray):
            vectors.append(_checked_vector(store, item, label))
            ordinary = False
        else:
            row = store.get_index(item)
            vec = np.asarray(store[row], dtype=np.float64)
            # a stored row is float32: its float64 squares can neither overflow nor underflow
            nrm = float(np.sqrt(np.dot(vec, vec)))
            vectors.append(vec / nrm if nrm > 0 else vec)
            exclude.add(row)
        weights.append(weight)
    if ordinary:
        mean = np.mean([w * v for w, v in zip(weights, vectors)], axis=0)
        nrm = np.linalg.norm(mean)
    else:
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            mean = np.mean([w * v for w, v in zip(weights, vectors)], axis=0)
            nrm = np.linalg.norm(mean)
    if 2.0 ** -400 < nrm < 2.0 ** 400:  # nothing over- or underflowed that matters
        return (mean / nrm).astype(np.float32), exclude
    # the same computation, exactly, on terms scaled by powers of two
    terms = []
    for weight, vec in zip(weights, vectors):
        v, ev = _scaled(vec)
        w, ew = _scaled(np.array([weight], np.float64))
        terms.append((w[0] * v, ev + ew))
    top = max(e for _, e in terms)
    mean = np.mean([np.ldexp(t, e - top) for t, e in terms], axis=0)
    return _unit(mean).astype(np.float32), exclude


def _common_args(store: AnyStore, restrict_vocab: Any, rescore: Any,
                 n_threads: Any) -> tuple[int | None, int | None, int]:
    """Check the arguments shared by the gensim-style helpers, before anything is looked up.

    Returns ``(restrict, rescore, threads)``. As in gensim, ``restrict_vocab=0`` (like None)
    means no restriction: gensim tests ``if restrict_vocab:``. The checks run even when the
    answer is empty (``topn=0``), so a bad argument is never silently accepted.
    """
    threads = effective_n_threads(n_threads)
    if rescore is not None:
        rescore = _positive_int(rescore, "rescore")
    restrict = None
    if restrict_vocab is not None:
        restrict = _positive_int(restrict_vocab, "restrict_vocab", allow_zero=True) or None
    return restrict, rescore, threads


def _topn_arg(topn: Any) -> int | None:
    """gensim's ``topn``: None = every row's score, an int < 1 = no results (returns 0)."""
    if topn is None:
        return None
    if isinstance(topn, (int, np.integer)) and not isinstance(topn, (bool, np.bool_)) \
            and topn < 1:
        return 0
    return _positive_int(topn, "topn")


def _all_scores(store: AnyStore, qf: np.ndarray, restrict: int | None, rescore: int | None,
                threads: int) -> np.ndarray:
    """Cosine scores of every row (the first ``restrict``) for each query: float32 (m, n).

    With ``rescore`` the scores are those rescoring gives (the float query against the
    dequantized rows, float64 arithmetic), so a row's entry equals the score a top-n call
    reports for it; without, the int8 scores of :func:`search`, bit for bit. Rows are
    dequantized a block at a time: no float copy of the matrix is made.
    """
    if hasattr(store, "shards"):
        return store._all_scores(qf, restrict, rescore, threads)   # shard by shard
    n = len(store)
    n_eff = n if restrict is None else min(restrict, n)
    m = qf.shape[0]
    out = np.empty((m, n_eff), np.float32)
    if m == 0 or n_eff == 0:
        return out
    codes, scales = store.codes, store.scales
    zp = store.zero_points
    if rescore:
        from embq._quantize import dequantize

        d = codes.shape[1]
        q = qf.astype(np.float64)
        qn = np.linalg.norm(q, axis=1)
        step = max(256, (1 << 22) // max(d, 1))   # about 32 MB of float64 rows per block
        for a in range(0, n_eff, step):
            b = min(n_eff, a + step)
            x = dequantize(codes[a:b], scales[a:b], None if zp is None else zp[a:b],
                           n_threads=threads).astype(np.float64)
            dots = q @ x.T
            denom = qn[:, None] * np.sqrt(np.einsum("rd,rd->r", x, x))[None, :]
            with np.errstate(divide="ignore", invalid="ignore"):
                out[:, a:b] = np.where(denom > 0, dots / denom, 0.0)
        return out
    threads = _plan_threads(threads, n_eff, codes.shape[1], m)
    qp, sumq, wq, _ = _quantize_queries(qf, "cosine", threads)
    return _kernels().all_scores(codes, scales, zp, store.norms, n_eff, qp, sumq, wq, True,
                                 threads)


def most_similar(store: AnyStore, positive: Any = None, negative: Any = None, topn: int | None = 10,
                 restrict_vocab: int | None = None, *, rescore: int | None = 4,
                 n_threads: int | None = None, allow: Any = None, prefilter: str | None = None,
                 oversample: int | None = None) -> list[tuple[Any, float]] | np.ndarray:
    """Keys most similar to a combination of keys and/or vectors (gensim's ``most_similar``).

    Positive items count +1, negative -1 (an ``(item, weight)`` pair uses its weight as given,
    as gensim 4 does); keys are unit-normalized, vectors used as given; the weighted mean is
    unit-normalized and searched by cosine. The input keys are left out of the results.

    Parameters
    ----------
    store : embq.Store
    positive, negative : key, vector, or a list of them (or of ``(item, weight)`` pairs)
        A key is a str or a row number; a vector a 1-D array of the store's dimension.
    topn : int or None, default 10
        Number of results; an int < 1 gives ``[]`` (as in gensim). None returns the scores
        of every row instead, in row order, input keys included (gensim's ``topn=None``).
    restrict_vocab : int, optional
        Search only the first ``restrict_vocab`` rows; None or 0 searches all of them.
    rescore : int or None, default 4
        Re-rank the best ``topn * rescore`` by the float query against the dequantized rows
        (so scores match float cosine on the dequantized vectors); None keeps int8 scores.
        With ``topn=None`` it chooses between those two kinds of scores for every row.
    n_threads : int, optional
    allow : list of keys, boolean mask (n,), row numbers or AllowList, optional
        Return only these rows (see :func:`search`; applied inside the scan, so ``topn``
        results come back whenever that many allowed rows remain). Not with ``topn=None``.
        For a filter used many times, ``store.allow_list(keys)`` looks its keys up once.
    prefilter : {None, "sketch"}, default None
        ``"sketch"`` scores exactly only the rows nearest the query by sign-bit sketch (the
        store needs a sketch; see :func:`search_store`). Not with ``topn=None``.
    oversample : int, optional
        Candidates per wanted result with ``prefilter="sketch"`` (see :func:`search`).

    Returns
    -------
    list of (key, float), or ndarray of float32 with shape (n,) when ``topn`` is None
        Best first. Rows of a store without keys are reported by row number. The array has
        one score per searched row (``min(restrict_vocab, len(store))`` of them); a zero row
        scores 0 where gensim would give NaN.

    Raises
    ------
    KeyError
        For a key not in the store.
    TypeError
        For an item that is neither a key, a vector nor an ``(item, weight)`` tuple (bytes,
        bool, None inside a list, float, list...), naming the item (``positive[1]``) and
        what it is; for bad argument types.
    ValueError
        For a tuple that is not a pair, a non-finite weight, a vector of the wrong shape or
        with non-finite values, and out-of-range arguments.

    Notes
    -----
    Any finite vectors and weights give the ranking of their direction: the query is
    combined and normalized with power-of-two scaling (see :func:`_query_vector`), so a
    vector of 1e200s or of 1e-200s is searched like the same vector of ordinary size.
    """
    items = [(*_query_item(item, 1.0, label), label)
             for item, label in _query_items(positive, "positive")]
    items += [(*_query_item(item, -1.0, label), label)
              for item, label in _query_items(negative, "negative")]
    return _most_similar(store, items, topn, restrict_vocab, rescore, n_threads, allow,
                         prefilter, oversample)


def _allow_kw(allow: Any, prefilter: Any = None, oversample: Any = None) -> dict[str, Any]:
    """``allow=``, ``prefilter=`` and ``oversample=`` for ``store.search`` only when given: a
    sharded store's search (which has neither allow-lists nor sketches) then still serves the
    most_similar family."""
    given = {"allow": allow, "prefilter": prefilter, "oversample": oversample}
    return {name: value for name, value in given.items() if value is not None}


def _no_allow_with_all(allow: Any, topn: Any, prefilter: Any = None,
                       oversample: Any = None) -> None:
    if allow is not None and topn is None:
        raise ValueError("allow= selects the rows of a top-n search; with topn=None every "
                         "row's score is returned, so give topn or leave allow out")
    if (prefilter is not None or oversample is not None) and topn is None:
        raise ValueError("prefilter= and oversample= choose the candidates of a top-n search; "
                         "with topn=None every row's score is returned, so give topn or leave "
                         "them out")


def _most_similar(store: AnyStore, items: list[tuple[Any, float, str]], topn: Any,
                  restrict_vocab: Any, rescore: Any, n_threads: Any, allow: Any = None,
                  prefilter: Any = None,
                  oversample: Any = None) -> list[tuple[Any, float]] | np.ndarray:
    """:func:`most_similar` on checked ``(key or vector, weight, label)`` items."""
    restrict, rescore, threads = _common_args(store, restrict_vocab, rescore, n_threads)
    topn = _topn_arg(topn)
    _no_allow_with_all(allow, topn, prefilter, oversample)
    if topn == 0:
        return []
    q, exclude = _query_vector(store, items)
    if topn is None:
        return _all_scores(store, q[None, :], restrict, rescore, threads)[0]
    scores, rows = store.search(q, topn + len(exclude), rescore=rescore, restrict=restrict,
                                n_threads=threads, **_allow_kw(allow, prefilter, oversample))
    out = [(_key_of(store, int(r)), float(s)) for s, r in zip(scores, rows)
           if int(r) not in exclude]
    return out[:topn]


def most_similar_batch(store: AnyStore, keys: Iterable[Any], topn: int | None = 10,
                       restrict_vocab: int | None = None, *, rescore: int | None = 4,
                       n_threads: int | None = None, allow: Any = None,
                       prefilter: str | None = None, oversample: int | None = None
                       ) -> list[list[tuple[Any, float]]] | np.ndarray:
    """``most_similar(key)`` for many keys in one batched search; each leaves itself out.

    Parameters
    ----------
    store : embq.Store
    keys : list of keys
        A list (or other iterable) of keys; a single str is refused rather than read as a
        sequence of one-character keys.
    topn : int or None, default 10
        As in :func:`most_similar`: an int < 1 gives an empty list per key (keys are not
        looked up); None gives every row's score for every key.
    restrict_vocab, rescore, n_threads, allow, prefilter, oversample
        As in :func:`most_similar`.

    Returns
    -------
    list of lists of (key, float), or ndarray of float32 with shape (len(keys), n)
        One list per key, in order; the array when ``topn`` is None (each key's own row
        included, as in :func:`most_similar`).

    Raises
    ------
    TypeError
        When ``keys`` is not a list of keys (a str, bytes, None, a number...), or one of them
        is not a key (str or int row number), naming it (``keys[3]``).
    KeyError
        Naming the first unknown key, before any search runs.
    """
    if isinstance(keys, str):
        raise TypeError(f"most_similar_batch needs a list of keys, got {_describe(keys)}; "
                        f"pass [{keys!r}] (or call most_similar for one key)")
    if isinstance(keys, (bytes, bytearray, memoryview)) or not hasattr(keys, "__iter__") \
            or isinstance(keys, dict):
        raise TypeError(f"most_similar_batch needs a list of keys (str or int row numbers), "
                        f"got {_describe(keys)}")
    keys = list(keys)
    for j, key in enumerate(keys):
        if not _is_key(key):
            hint = ("; keys are str (decode bytes first)"
                    if isinstance(key, (bytes, bytearray, memoryview)) else "")
            raise TypeError(f"keys[{j}] must be a key (str or int row number), got "
                            f"{_describe(key)}{hint}")
    restrict, rescore, threads = _common_args(store, restrict_vocab, rescore, n_threads)
    topn = _topn_arg(topn)
    _no_allow_with_all(allow, topn, prefilter, oversample)
    if topn == 0:
        return [[] for _ in keys]
    rows = np.array([store.get_index(key) for key in keys], dtype=np.int64)
    q = (np.asarray(store[rows], dtype=np.float32) if keys
         else np.empty((0, store.dim), np.float32))
    if topn is None:
        return _all_scores(store, q, restrict, rescore, threads)
    if not keys:
        return []
    scores, found = store.search(q, topn + 1, rescore=rescore, restrict=restrict,
                                 n_threads=threads, **_allow_kw(allow, prefilter, oversample))
    result = []
    for qi, own in enumerate(rows):
        hits = [(_key_of(store, int(r)), float(s)) for s, r in zip(scores[qi], found[qi])
                if int(r) != own]
        result.append(hits[:topn])
    return result


def similar_by_vector(store: AnyStore, vector: Any, topn: int | None = 10,
                      restrict_vocab: int | None = None, *, rescore: int | None = 4,
                      n_threads: int | None = None, allow: Any = None,
                      prefilter: str | None = None,
                      oversample: int | None = None) -> list[tuple[Any, float]] | np.ndarray:
    """Keys most similar to a vector by cosine (gensim's ``similar_by_vector``).

    Arguments and results as for :func:`most_similar` with ``positive=[vector]``; the vector
    may be any array-like of numbers (a list of floats too).

    Raises
    ------
    TypeError
        For a vector that is not numbers (a str or bytes key, None...): keys go to
        :func:`similar_by_key`.
    ValueError
        For a vector that is not 1-D of the store's dimension, or not finite.
    """
    if vector is None or isinstance(vector, (str, bytes, bytearray, memoryview)):
        raise TypeError(f"vector must be a 1-D array of numbers, got {_describe(vector)} "
                        "(for a key, use similar_by_key)")
    vec = np.asarray(vector)
    if vec.dtype.kind not in "fiu" or vec.dtype == np.bool_:
        raise TypeError(f"vector must be a 1-D array of numbers, got {_describe(vector)} "
                        f"(dtype {vec.dtype})")
    if vec.ndim != 1:
        raise ValueError(f"vector must be 1-D (d,), got shape {vec.shape}")
    return _most_similar(store, [(vec, 1.0, "vector")], topn, restrict_vocab, rescore,
                         n_threads, allow, prefilter, oversample)


def similar_by_key(store: AnyStore, key: Any, topn: int | None = 10,
                   restrict_vocab: int | None = None, *, rescore: int | None = 4,
                   n_threads: int | None = None, allow: Any = None,
                   prefilter: str | None = None,
                   oversample: int | None = None) -> list[tuple[Any, float]] | np.ndarray:
    """Keys most similar to a key, the key itself left out (gensim's ``similar_by_key``).

    Arguments and results as for :func:`most_similar` with ``positive=[key]``.

    Raises
    ------
    TypeError
        For a key that is not a str or int row number (bytes, a vector...), naming it.
    KeyError
        For a key not in the store.
    """
    if not _is_key(key):
        hint = ("; keys are str (decode bytes first)"
                if isinstance(key, (bytes, bytearray, memoryview)) else
                "; for a vector, use similar_by_vector" if isinstance(key, np.ndarray) else "")
        raise TypeError(f"key must be a str or an int row number, got {_describe(key)}{hint}")
    return _most_similar(store, [(key, 1.0, "key")], topn, restrict_vocab, rescore, n_threads,
                         allow, prefilter, oversample)
