"""Searching a sharded store shard by shard: in this process, or one Dask task per shard.

Everything a Dask worker runs is defined here, in the package, so workers import it by name
(a function defined in a test or a notebook would have to be pickled by value).  A task gets
the manifest and a shard index, never an open store: it opens the shard by path on the worker
(checking it against its manifest entry) and keeps it open for later tasks, so the shard's
pages stay in that machine's page cache.

The int8 score of a row depends only on the row and the query, so a shard's top-k is the
single store's top-k restricted to the shard's rows, and merging the shards' lists by (score
descending, row ascending) gives exactly the single store's answer, ties included.  The same
holds for l2 distances (merged smallest first), for range matches (each query's matches of all
shards, sorted and cut as one store does) and, because every shard's sketch is taken against
the whole store's center, for the sketch prefilter's Hamming distances (each shard's K nearest,
merged by (distance, row) and cut to K, are the single store's K nearest).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from embq._errors import StoreError

if TYPE_CHECKING:
    from embq._manifest import Manifest
    from embq._store import Store

__all__ = [
    "ShardSearch",
    "best_scored",
    "cached_shard",
    "gather_codes",
    "hamming",
    "merge_nearest",
    "merge_range",
    "merge_topk",
    "open_shard",
    "search_dask",
    "search_local",
    "search_shard",
    "shard_jobs",
    "shard_restricts",
]


# -- opening shards ----------------------------------------------------------------------------

def open_shard(manifest: Manifest, i: int) -> Store:
    """Open shard ``i`` of ``manifest`` and check it is the file the manifest names.

    Raises
    ------
    StoreError
        Naming the shard: the file is missing or unreadable, not a store, or differs from its
        entry (size, ``shard_uuid``, rows, dimension, keys).
    """
    from embq._manifest import SHARD_UUID_ATTR, check_shard
    from embq._store import Store

    path = manifest.shard_path(i)
    where = f"shard {i} ({manifest.shards[i].path}) of {manifest.directory}"
    try:
        size = os.path.getsize(path)
        store = Store(path)
    except StoreError as exc:
        raise StoreError(f"{where}: {exc}", path=path) from exc
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StoreError(f"{where}: cannot open it ({reason})", path=path) from exc
    try:
        check_shard(manifest, i, rows=len(store), dim=store.dim, has_keys=store.has_keys,
                    uuid=store.attrs.get(SHARD_UUID_ATTR), size=size,
                    has_sketch=store.sketch is not None)
    except BaseException:
        store.close()
        raise
    return store


# Shards opened by tasks in this (worker) process: absolute path -> (what it was checked
# against, Store).  A file with another identity (replaced, rewritten) or a manifest with
# another entry for it is opened and checked again.
_CACHE: dict[str, tuple[tuple, Store]] = {}
_CACHE_LOCK = threading.Lock()


def _identity(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def cached_shard(manifest: Manifest, i: int) -> Store:
    """:func:`open_shard`, reusing the store a previous task of this process opened.

    The file's identity (device, inode, size, modification time) and the manifest's entry
    are compared on every call, so a shard deleted or replaced since is noticed (and
    reported by :func:`open_shard`).
    """
    path = manifest.shard_path(i)
    ident = _identity(path)
    stamp = (ident, manifest.shards[i], manifest.dim, manifest.has_keys)
    with _CACHE_LOCK:
        hit = _CACHE.get(path)
        if hit is not None and ident is not None and hit[0] == stamp:
            return hit[1]
        if hit is not None:
            del _CACHE[path]
            hit[1].close()
        store = open_shard(manifest, i)
        if ident is not None:
            _CACHE[path] = (stamp, store)
        return store


# -- what a shard searches, and how the shards' answers merge ------------------------------------

@dataclass(frozen=True)
class ShardSearch:
    """One search as every shard runs it (the queries travel separately, scattered once).

    Attributes
    ----------
    k : int
        Top-k: rows per shard (``k * rescore`` when the merged list is rescored).  With
        ``prefilter``: the candidates ``K`` the single store would take.
    metric : str
    threshold, max_results
        A range search (``k`` unused).
    prefilter : bool
        ``prefilter="sketch"``: each shard returns its ``K`` rows nearest in Hamming
        distance, all of them scored exactly, with their distances.
    """

    k: int
    metric: str
    threshold: float | None = None
    max_results: int | None = None
    prefilter: bool = False


# Jobs of one search: (shard index, its restrict, its allowed local rows, a mask of its rows,
# or None).
Job = tuple[int, "int | None", "np.ndarray | None"]


def shard_restricts(manifest: Manifest, restrict: int | None) -> list[int | None]:
    """Per shard, the ``restrict`` that searches exactly its rows among the first ``restrict``.

    None means all of the shard's rows; 0 means the shard is not searched.
    """
    out: list[int | None] = []
    for e in manifest.shards:
        if restrict is None:
            out.append(None if e.rows else 0)
        else:
            out.append(min(max(restrict - e.offset, 0), e.rows))
    return out


def shard_jobs(manifest: Manifest, restrict: int | None, allow: Any = None) -> list[Job]:
    """The shards a search reads: each with its ``restrict`` and, for an allow-list, its
    allowed *local* rows.

    ``allow`` is increasing unique global rows, all below ``restrict``, or a checked
    :class:`embq._kernels_search.AllowList` of them. When that holds a mask, a shard searched whole
    gets its slice of the mask (a byte per row to send, where row numbers take eight per
    allowed row, and one query scans it as one store scans a mask); a shard cut by
    ``restrict`` gets its row numbers. Shards with nothing to search are left out, so a task
    never receives a global list or mask.
    """
    from embq._kernels_search import AllowList

    mask = allow.mask if isinstance(allow, AllowList) else None
    rows = allow.array if isinstance(allow, AllowList) and mask is None else allow
    jobs: list[Job] = []
    offsets = manifest.offsets
    for i, r in enumerate(shard_restricts(manifest, restrict)):
        if r == 0:
            continue
        if allow is None:
            jobs.append((i, r, None))
        elif mask is not None:
            lo, size = int(offsets[i]), manifest.shards[i].rows
            local = mask[lo:lo + (size if r is None else r)]
            if local.any():
                whole = r is None or r == size
                jobs.append((i, r, local if whole else np.flatnonzero(local)))
        else:
            a, b = np.searchsorted(rows, offsets[i:i + 2])
            if b > a:
                jobs.append((i, r, rows[a:b] - offsets[i]))
    return jobs


def merge_topk(scores_a: np.ndarray, rows_a: np.ndarray, scores_b: np.ndarray,
               rows_b: np.ndarray, k: int, *,
               ascending: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Merge two per-query top lists (m, a) and (m, b) into the best ``k`` of each row.

    Best first by score (the smallest first when ``ascending``: l2 distances), equal scores
    by the lower row, as the single-store kernels order them.
    """
    scores = np.concatenate([scores_a, scores_b], axis=1)
    rows = np.concatenate([rows_a, rows_b], axis=1)
    if scores.shape[1] == 0:
        return scores, rows
    pick = np.lexsort((rows, scores if ascending else -scores), axis=-1)[:, :k]
    return np.take_along_axis(scores, pick, axis=1), np.take_along_axis(rows, pick, axis=1)


def merge_nearest(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...],
                  k: int) -> tuple[np.ndarray, ...]:
    """Merge two per-query candidate lists ``(scores, rows, distances)``, each (m, c), into
    the ``k`` of smallest Hamming distance, equal distances by the lower row: the sketch
    prefilter's selection over all rows, which is the selection over every shard's own."""
    parts = [np.concatenate([x, y], axis=1) for x, y in zip(a, b)]
    if parts[0].shape[1] == 0:
        return tuple(parts)
    pick = np.lexsort((parts[1], parts[2]), axis=-1)[:, :k]
    return tuple(np.take_along_axis(p, pick, axis=1) for p in parts)


def best_scored(scores: np.ndarray, rows: np.ndarray,
                k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of each query's scored candidates: score descending, then lower row."""
    pick = np.lexsort((rows, -scores), axis=-1)[:, :k]
    return np.take_along_axis(scores, pick, axis=1), np.take_along_axis(rows, pick, axis=1)


def merge_range(parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], m: int,
                metric: str, max_results: int | None) -> tuple[np.ndarray, ...]:
    """The shards' range results ``(indptr, scores, global rows)`` as one CSR answer.

    Each query's matches are sorted as :func:`embq._search._range_checked` sorts them (best
    first: score descending, l2 distance ascending; equal ones by the lower row) and cut to
    ``max_results``; every shard already kept its own best ``max_results``, which hold the
    overall best.
    """
    if not parts:
        return np.zeros(m + 1, np.int64), np.empty(0, np.float32), np.empty(0, np.int64)
    qid = np.concatenate([np.repeat(np.arange(m, dtype=np.int64), np.diff(p[0]))
                          for p in parts])
    scores = np.concatenate([p[1] for p in parts])
    rows = np.concatenate([p[2] for p in parts])
    order = np.lexsort((rows, scores if metric == "l2" else -scores, qid))
    scores, rows, qid = scores[order], rows[order], qid[order]
    counts = np.bincount(qid, minlength=m)
    if max_results is not None and scores.size:
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        keep = np.arange(scores.size, dtype=np.int64) - np.repeat(starts, counts) < max_results
        scores, rows = scores[keep], rows[keep]
        counts = np.minimum(counts, max_results)
    indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    return indptr, scores, rows


def _empty(m: int, spec: ShardSearch) -> tuple[np.ndarray, ...]:
    if spec.threshold is not None:
        return ()
    base = (np.empty((m, 0), np.float32), np.empty((m, 0), np.int64))
    return (*base, np.empty((m, 0), np.int32)) if spec.prefilter else base


class _Merger:
    """Merges the shards' answers to one search as they arrive (in any order)."""

    def __init__(self, m: int, spec: ShardSearch) -> None:
        self.m = m
        self.spec = spec
        self.best = _empty(m, spec)
        self.ranges: dict[int, tuple[np.ndarray, ...]] = {}

    def add(self, i: int, part: tuple[np.ndarray, ...]) -> None:
        spec = self.spec
        if spec.threshold is not None:
            self.ranges[i] = part   # merged once, at the end
        elif spec.prefilter:
            self.best = merge_nearest(self.best, part, spec.k)
        else:
            self.best = merge_topk(*self.best, *part, spec.k, ascending=spec.metric == "l2")

    def result(self) -> tuple[np.ndarray, ...]:
        spec = self.spec
        if spec.threshold is not None:
            return merge_range([self.ranges[i] for i in sorted(self.ranges)], self.m,
                               spec.metric, spec.max_results)
        return self.best


# -- the per-shard search ------------------------------------------------------------------------

# Set bits of every byte value: the Hamming distance of two packed sketches is the sum of
# _POPCOUNT over the bytes of their XOR.
_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1,
                                                                             dtype=np.uint8)
# Bytes of gathered sketches per block of queries in hamming().
_HAMMING_BLOCK = 1 << 22


def hamming(sketch: np.ndarray, rows: np.ndarray, qsk: np.ndarray) -> np.ndarray:
    """Hamming distances (m, c) int32 between the sketches of ``rows`` (m, c) and of the
    queries ``qsk`` (m, nb), a block of queries at a time (a few MB of gathered bits)."""
    m, c = rows.shape
    out = np.empty((m, c), np.int32)
    sk = np.asarray(sketch)
    step = max(1, _HAMMING_BLOCK // max(1, c * qsk.shape[1]))
    for a in range(0, m, step):
        b = min(m, a + step)
        x = sk[rows[a:b]]
        np.bitwise_xor(x, qsk[a:b, None, :], out=x)
        out[a:b] = _POPCOUNT[x].sum(axis=2, dtype=np.int32)
    return out


def _search_one(store: Store, offset: int, queries: np.ndarray, spec: ShardSearch,
                restrict: int | None, allow: np.ndarray | None,
                n_threads: int) -> tuple[np.ndarray, ...]:
    """One shard's answer, rows global: top-k ``(scores, rows)``; with the prefilter
    ``(scores, rows, Hamming distances)``; for a range search CSR ``(indptr, scores, rows)``."""
    from embq._search import search_store

    kw: dict[str, Any] = {"metric": spec.metric, "restrict": restrict, "n_threads": n_threads}
    if allow is not None:
        kw["allow"] = allow
    if spec.threshold is not None:
        scores, rows = search_store(store, queries, threshold=spec.threshold,
                                    max_results=spec.max_results, **kw)
        indptr = np.zeros(len(rows) + 1, np.int64)
        np.cumsum([len(r) for r in rows], out=indptr[1:])
        if not rows:
            return indptr, np.empty(0, np.float32), np.empty(0, np.int64)
        return indptr, np.concatenate(scores), np.concatenate(rows) + offset
    if spec.prefilter:
        # oversample=1 with k=K: the shard's K nearest by Hamming distance, all scored
        scores, rows = search_store(store, queries, spec.k, prefilter="sketch", oversample=1,
                                    **kw)
        # the queries' sketches by the kernel the single store's prefilter uses: the same bits
        from embq._kernels_sketch import sign_bits

        qsk = sign_bits(np.ascontiguousarray(queries, np.float32), store.sketch_center)
        dist = hamming(store.sketch, rows, qsk)
        return scores, rows + offset, dist
    scores, rows = search_store(store, queries, spec.k, **kw)
    return scores, rows + offset


def search_shard(manifest: Manifest, i: int, queries: np.ndarray, spec: ShardSearch,
                 restrict: int | None, allow: np.ndarray | None,
                 n_threads: int) -> tuple[np.ndarray, ...]:
    """Dask task: shard ``i``'s answer to ``spec`` for float32 ``queries`` (m, d).

    Opens the shard by path on the worker (cached between tasks) and returns what
    :func:`_search_one` does, with *global* rows.  ``allow`` holds the shard's allowed local
    rows or a mask of its rows (never a list or mask over the whole store).  ``n_threads`` is
    explicit: Dask workers run with ``OMP_NUM_THREADS=1``.
    """
    store = cached_shard(manifest, i)
    return _search_one(store, manifest.shards[i].offset, queries, spec, restrict, allow,
                       n_threads)


def search_local(stores: Sequence[Store], manifest: Manifest, queries: np.ndarray,
                 spec: ShardSearch, jobs: Sequence[Job],
                 n_threads: int) -> tuple[np.ndarray, ...]:
    """The merged answer over the shards of ``jobs``, in this process, shard after shard."""
    merger = _Merger(queries.shape[0], spec)
    for i, r, allow in jobs:
        merger.add(i, _search_one(stores[i], manifest.shards[i].offset, queries, spec, r,
                                  allow, n_threads))
    return merger.result()


def _worker_plan(client: Any, jobs: list[int],
                 n_threads: int | None) -> tuple[list[list[str] | None], list[int]]:
    """Stable worker per shard (shard index modulo the sorted workers) and its thread count.

    A worker running several shards' tasks at once shares its threads among them; an explicit
    ``n_threads`` is used as given.  With no worker connected yet, tasks are not placed (the
    scheduler holds them until workers arrive) and run on one thread each.
    """
    nthreads = client.nthreads()   # asks the scheduler: the client's own view can lag
    workers = sorted(nthreads)
    if not workers:
        return [None] * len(jobs), [n_threads or 1] * len(jobs)
    chosen = [workers[i % len(workers)] for i in jobs]
    if n_threads is not None:
        return [[w] for w in chosen], [n_threads] * len(jobs)
    load = {w: chosen.count(w) for w in set(chosen)}
    threads = []
    for w in chosen:
        have = max(1, int(nthreads[w]))
        threads.append(max(1, have // min(have, load[w])))
    return [[w] for w in chosen], threads


def search_dask(client: Any, manifest: Manifest, queries: np.ndarray, spec: ShardSearch,
                jobs: Sequence[Job], n_threads: int | None) -> tuple[np.ndarray, ...]:
    """The merged answer over the shards of ``jobs``, one Dask task per shard.

    The queries and the manifest are scattered once; top lists are merged as they arrive,
    so this process holds at most two of them (range results are kept until all are in).
    Any task that fails (after Dask's own retries on lost workers) fails the whole search:
    the remaining tasks are cancelled and the error is raised, never a partial answer.
    """
    from distributed import as_completed

    merger = _Merger(queries.shape[0], spec)
    if not jobs:
        return merger.result()
    chosen, threads = _worker_plan(client, [j[0] for j in jobs], n_threads)
    q_future, m_future = client.scatter([queries, manifest], broadcast=True, hash=False)
    token = uuid.uuid4().hex
    futures = [
        client.submit(search_shard, m_future, i, q_future, spec, r, allow, t,
                      key=f"embq-search-{token}-{i}", workers=w,
                      allow_other_workers=w is not None, pure=False)
        for (i, r, allow), w, t in zip(jobs, chosen, threads)
    ]
    shard_of = {f.key: i for f, (i, _, _) in zip(futures, jobs)}
    try:
        for future in as_completed(futures):
            merger.add(shard_of[future.key], future.result())
    finally:
        client.cancel(futures)
        del q_future, m_future
    return merger.result()


# -- rescoring -----------------------------------------------------------------------------------

def gather_codes(stores: Sequence[Store], manifest: Manifest,
                 rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes, scales and zero points of sorted unique global ``rows``, read from their shards."""
    d = manifest.dim
    codes = np.empty((rows.shape[0], d), np.uint8)
    scales = np.empty(rows.shape[0], np.float32)
    zps = np.empty(rows.shape[0], np.uint8)
    shard, local = manifest.locate(rows)
    for s in np.unique(shard).tolist():
        sel = shard == s
        st, lr = stores[s], local[sel]
        codes[sel] = st.codes[lr]
        scales[sel] = st.scales[lr]
        zps[sel] = st.zero_points[lr]
    return codes, scales, zps
