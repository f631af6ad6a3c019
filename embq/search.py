"""Nearest-neighbour search over per-row uint8 codes: exact int32 scores, top-k, most_similar.

A float query is quantized like a row (:func:`embq.quantize.quantize`: symmetric, values in
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
from typing import Any, Iterable

import numpy as np

from embq._utils import effective_n_threads

__all__ = ["search", "search_store", "most_similar", "most_similar_batch", "similar_by_vector"]

_METRICS = ("cosine", "dot")
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
    q2 = np.ascontiguousarray(q2, dtype=np.float32)
    if q2.size and not np.isfinite(q2).all():
        bad = int(np.argmin(np.isfinite(q2).all(axis=1)))
        raise ValueError(f"query {bad} contains NaN or Inf")
    return q2, single


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
    codes: Any,
    scales: Any,
    queries: Any,
    k: int = 10,
    *,
    zero_points: Any = None,
    norms: Any = None,
    metric: str = "cosine",
    rescore: int | None = None,
    restrict: int | None = None,
    n_threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows of quantized ``codes`` for each query.

    Parameters
    ----------
    codes : ndarray of uint8, shape (n, d)
        Row codes (memory-mapped read-only arrays are fine; they are never copied when
        C-contiguous).
    scales : ndarray of float32, shape (n,)
        Per-row scales.
    queries : array_like of float, shape (d,) or (m, d)
        Float queries; each is quantized like a row.
    k : int, default 10
        Number of neighbours; fewer columns come back when fewer than ``k`` rows are searched.
    zero_points : ndarray of uint8, shape (n,), optional
        Per-row zero points (128 when omitted).
    norms : ndarray of float32, shape (n,), optional
        L2 norms of the dequantized rows (:func:`embq.quantize.row_norms`); computed when
        needed and not given.
    metric : {"cosine", "dot"}
    rescore : int, optional
        Re-rank the best ``k * rescore`` rows with the float query against dequantized rows.
    restrict : int, optional
        Search only the first ``restrict`` rows.
    n_threads : int, optional
        Threads (None = all cores, negative counts back from all).

    Returns
    -------
    scores : ndarray of float32, shape (k,) or (m, k)
    indices : ndarray of int64, same shape
        Best first; equal scores by increasing row.
    """
    codes = _check_codes(codes)
    n, d = codes.shape
    scales = _check_vector(scales, n, "scales", np.float32)
    zp = None if zero_points is None else _check_vector(zero_points, n, "zero_points", np.uint8)
    if metric not in _METRICS:
        raise ValueError(f"metric must be 'cosine' or 'dot', got {metric!r}")
    k = _positive_int(k, "k")
    if rescore is not None:
        rescore = _positive_int(rescore, "rescore")
    n_eff = n if restrict is None else min(_positive_int(restrict, "restrict", allow_zero=True), n)
    qf, single = _check_queries(queries, d)
    threads = _plan_threads(effective_n_threads(n_threads), n_eff, d, qf.shape[0])
    # scanning the zero points costs O(n); only needed when the worst case could overflow
    limit = max_exact_dim(zp) if d > _INT32_MAX // (255 * 127) else d
    if d > limit:
        raise ValueError(
            f"dimension {d} is too large for exact int32 accumulators (at most {limit} with "
            "these zero points); split the vectors or reduce the dimension"
        )
    if metric == "cosine":
        if norms is None:
            from embq.quantize import row_norms

            norms = row_norms(codes[:n_eff], scales[:n_eff], None if zp is None else zp[:n_eff],
                              n_threads=threads)
            norms = np.ascontiguousarray(norms, dtype=np.float32)
        else:
            norms = _check_vector(norms, n, "norms", np.float32)
    else:
        norms = None

    scores, rows = _search_checked(codes, scales, zp, norms, n_eff, qf, k, metric, rescore,
                                   threads)
    if single:
        return scores[0], rows[0]
    return scores, rows


def _quantize_queries(qf: np.ndarray, metric: str,
                      threads: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantize float queries like rows; return (packed int8, int32 sums, float32 weights)."""
    from embq.quantize import quantize

    if qf.size < _SERIAL_QUERY_VALUES:
        threads = 1
    qc, qs, _ = quantize(qf, n_threads=threads)   # symmetric: every zero point is 128
    return _kernels().prepare_queries(qc, np.asarray(qs, dtype=np.float32), metric == "cosine")


def _search_checked(codes, scales, zp, norms, n_eff, qf, k, metric, rescore, threads,
                    mode="auto"):
    m = qf.shape[0]
    kk = min(k, n_eff)
    if kk == 0 or m == 0:
        return np.empty((m, kk), np.float32), np.empty((m, kk), np.int64)
    kc = min(k * rescore, n_eff) if rescore else kk
    qp, sumq, wq = _quantize_queries(qf, metric, threads)
    scores, rows = _kernels().topk(codes, scales, zp, norms, n_eff, qp, sumq, wq, kc,
                                   metric == "cosine", threads, mode)
    if rescore:
        scores, rows = _rescore(codes, scales, zp, qf, rows, kk, metric, threads)
    return scores, rows


def _rescore(codes, scales, zp, qf, cand, kk, metric, threads=1):
    """Re-rank candidate rows (m, c) by the float query against the dequantized rows."""
    from embq.quantize import dequantize

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
        s = np.einsum("icd,id->ic", x, q)
        if metric == "cosine":
            denom = np.sqrt(np.einsum("icd,icd->ic", x, x)) * np.linalg.norm(q, axis=1)[:, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                s = np.where(denom > 0, s / denom, 0.0)
        s32 = s.astype(np.float32)
        idx = cand[a:b]
        # best first, ties by lower row: sort by (-score, row)
        pick = np.lexsort((idx, -s32), axis=-1)[:, :kk]
        out_s[a:b] = np.take_along_axis(s32, pick, axis=1)
        out_i[a:b] = np.take_along_axis(idx, pick, axis=1)
    return out_s, out_i


def search_store(store: Any, queries: Any, k: int = 10, *, metric: str = "cosine",
                 rescore: int | None = None, restrict: int | None = None,
                 n_threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`search` over an open :class:`embq.Store` (its memory-mapped codes, scales, norms).

    The store's norms are used as stored; nothing of size n is copied.
    """
    return search(store.codes, store.scales, queries, k, zero_points=store.zero_points,
                  norms=store.norms if metric == "cosine" else None, metric=metric,
                  rescore=rescore, restrict=restrict, n_threads=n_threads)


# -- gensim-style helpers --------------------------------------------------------------------

def _as_list(items: Any) -> list:
    if items is None:
        return []
    if isinstance(items, (str, int, np.integer)):
        return [items]
    if isinstance(items, np.ndarray):
        # gensim's rule: a 1-D array is one vector, a 2-D array a list of vectors
        return [items] if items.ndim == 1 else list(items)
    return list(items)


def _key_of(store: Any, row: int) -> Any:
    keys = store.index_to_key
    return keys[row] if keys is not None else row


def _unit_row(store: Any, key: Any) -> tuple[np.ndarray, int]:
    row = store.get_index(key)
    vec = np.asarray(store[row], dtype=np.float64)
    nrm = float(np.sqrt(np.dot(vec, vec)))
    return (vec / nrm if nrm > 0 else vec), row


def most_similar(store: Any, positive: Any = None, negative: Any = None, topn: int = 10,
                 restrict_vocab: int | None = None, *, rescore: int | None = 4,
                 n_threads: int | None = None) -> list[tuple[Any, float]]:
    """Keys most similar to a combination of keys and/or vectors (gensim's ``most_similar``).

    Positive items count +1, negative -1 (an ``(item, weight)`` pair uses its weight as given,
    as gensim 4 does); keys are
    unit-normalized, vectors used as given; the weighted mean is unit-normalized and searched by
    cosine. The input keys are left out of the results.

    Parameters
    ----------
    store : embq.Store
    positive, negative : key, vector, or a list of them (or of ``(item, weight)`` pairs)
    topn : int, default 10
    restrict_vocab : int, optional
        Search only the first ``restrict_vocab`` rows.
    rescore : int or None, default 4
        Re-rank the best ``topn * rescore`` by the float query against the dequantized rows
        (so scores match float cosine on the dequantized vectors); None keeps int8 scores.
    n_threads : int, optional

    Returns
    -------
    list of (key, float)
        Best first. Rows of a store without keys are reported by row number.
    """
    if isinstance(topn, (int, np.integer)) and not isinstance(topn, bool) and topn < 1:
        return []
    topn = _positive_int(topn, "topn")
    # gensim 4's rule: plain items weigh +1 (positive) or -1 (negative); an (item, weight) pair
    # uses its weight as given, on either side
    items = [(it, 1.0) for it in _as_list(positive)] + [(it, -1.0) for it in _as_list(negative)]
    items = [(it[0], float(it[1])) if isinstance(it, tuple) else (it, sign)
             for it, sign in items]
    if not items:
        raise ValueError("cannot compute similarity with no input: give positive and/or negative")
    parts, exclude = [], set()
    for item, weight in items:
        if isinstance(item, np.ndarray):
            parts.append(weight * np.asarray(item, dtype=np.float64))
        else:
            vec, row = _unit_row(store, item)
            parts.append(weight * vec)
            exclude.add(row)
    mean = np.mean(parts, axis=0)
    if mean.shape != (store.dim,):
        raise ValueError(f"query vectors must have shape ({store.dim},), got {mean.shape}")
    nrm = np.linalg.norm(mean)
    if nrm > 0:
        mean = mean / nrm
    scores, rows = search_store(store, mean.astype(np.float32), topn + len(exclude),
                                rescore=rescore, restrict=restrict_vocab, n_threads=n_threads)
    out = [(_key_of(store, int(r)), float(s)) for s, r in zip(scores, rows)
           if int(r) not in exclude]
    return out[:topn]


def most_similar_batch(store: Any, keys: Iterable[Any], topn: int = 10,
                       restrict_vocab: int | None = None, *, rescore: int | None = 4,
                       n_threads: int | None = None) -> list[list[tuple[Any, float]]]:
    """``most_similar(key)`` for many keys in one batched search; each leaves itself out.

    Unknown keys raise ``KeyError`` naming the first one before any search runs.
    """
    keys = list(keys)
    topn = _positive_int(topn, "topn")
    if not keys:
        return []
    rows = np.array([store.get_index(key) for key in keys], dtype=np.int64)
    q = np.asarray(store[rows], dtype=np.float32)
    scores, found = search_store(store, q, topn + 1, rescore=rescore, restrict=restrict_vocab,
                                 n_threads=n_threads)
    result = []
    for qi, own in enumerate(rows):
        hits = [(_key_of(store, int(r)), float(s)) for s, r in zip(scores[qi], found[qi])
                if int(r) != own]
        result.append(hits[:topn])
    return result


def similar_by_vector(store: Any, vector: Any, topn: int = 10,
                      restrict_vocab: int | None = None, *, rescore: int | None = 4,
                      n_threads: int | None = None) -> list[tuple[Any, float]]:
    """Keys most similar to a vector by cosine (gensim's ``similar_by_vector``)."""
    vec = np.asarray(vector)
    if vec.ndim != 1:
        raise ValueError(f"vector must be 1-D (d,), got shape {vec.shape}")
    return most_similar(store, positive=[vec], topn=topn, restrict_vocab=restrict_vocab,
                        rescore=rescore, n_threads=n_threads)
