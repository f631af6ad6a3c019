"""Searching a sharded store shard by shard: in this process, or one Dask task per shard.

Everything a Dask worker runs is defined here, in the package, so workers import it by name
(a function defined in a test or a notebook would have to be pickled by value).  A task gets
the manifest and a shard index, never an open store: it opens the shard by path on the worker
(checking it against its manifest entry) and keeps it open for later tasks, so the shard's
pages stay in that machine's page cache.

The int8 score of a row depends only on the row and the query, so a shard's top-k is the
single store's top-k restricted to the shard's rows, and merging the shards' lists by (score
descending, row ascending) gives exactly the single store's answer, ties included.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from embq._errors import StoreError

if TYPE_CHECKING:
    from embq._manifest import Manifest
    from embq._store import Store

__all__ = [
    "cached_shard",
    "gather_codes",
    "merge_topk",
    "open_shard",
    "search_dask",
    "search_local",
    "search_shard",
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
                    uuid=store.attrs.get(SHARD_UUID_ATTR), size=size)
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


# -- restrict and merge --------------------------------------------------------------------------

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


def merge_topk(scores_a: np.ndarray, rows_a: np.ndarray, scores_b: np.ndarray,
               rows_b: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge two per-query top lists (m, a) and (m, b) into the best ``k`` of each row.

    Best first by score, equal scores by the lower row, as the single-store kernels order them.
    """
    scores = np.concatenate([scores_a, scores_b], axis=1)
    rows = np.concatenate([rows_a, rows_b], axis=1)
    if scores.shape[1] == 0:
        return scores, rows
    pick = np.lexsort((rows, -scores), axis=-1)[:, :k]
    return np.take_along_axis(scores, pick, axis=1), np.take_along_axis(rows, pick, axis=1)


def _empty(m: int) -> tuple[np.ndarray, np.ndarray]:
    return np.empty((m, 0), np.float32), np.empty((m, 0), np.int64)


# -- the per-shard search ------------------------------------------------------------------------

def _search_one(store: Store, offset: int, queries: np.ndarray, k: int, metric: str,
                restrict: int | None, n_threads: int) -> tuple[np.ndarray, np.ndarray]:
    from embq._search import search_store

    scores, rows = search_store(store, queries, k, metric=metric, restrict=restrict,
                                n_threads=n_threads)
    return scores, rows + offset


def search_shard(manifest: Manifest, i: int, queries: np.ndarray, k: int, metric: str,
                 restrict: int | None, n_threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Dask task: the int8 top-``k`` of shard ``i`` for float32 ``queries`` (m, d).

    Opens the shard by path on the worker (cached between tasks) and returns float32 scores
    and int64 *global* rows, shape (m, min(k, rows searched)).  ``n_threads`` is explicit:
    Dask workers run with ``OMP_NUM_THREADS=1``.
    """
    store = cached_shard(manifest, i)
    return _search_one(store, manifest.shards[i].offset, queries, k, metric, restrict,
                       n_threads)


def search_local(stores: Sequence[Store], manifest: Manifest, queries: np.ndarray, k: int,
                 metric: str, restrict: int | None,
                 n_threads: int) -> tuple[np.ndarray, np.ndarray]:
    """The int8 top-``k`` over every shard, in this process, shard after shard."""
    best = _empty(queries.shape[0])
    for i, r in enumerate(shard_restricts(manifest, restrict)):
        if r == 0:
            continue
        part = _search_one(stores[i], manifest.shards[i].offset, queries, k, metric, r,
                           n_threads)
        best = merge_topk(*best, *part, k)
    return best


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


def search_dask(client: Any, manifest: Manifest, queries: np.ndarray, k: int, metric: str,
                restrict: int | None,
                n_threads: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The int8 top-``k`` over every shard, one Dask task per shard.

    The queries and the manifest are scattered once; results are merged as they arrive, so
    this process holds at most two (m, k) lists.  Any task that fails (after Dask's own
    retries on lost workers) fails the whole search: the remaining tasks are cancelled and
    the error is raised, never a partial answer.
    """
    from distributed import as_completed

    restricts = shard_restricts(manifest, restrict)
    jobs = [i for i, r in enumerate(restricts) if r != 0]
    best = _empty(queries.shape[0])
    if not jobs:
        return best
    chosen, threads = _worker_plan(client, jobs, n_threads)
    q_future, m_future = client.scatter([queries, manifest], broadcast=True, hash=False)
    token = uuid.uuid4().hex
    futures = [
        client.submit(search_shard, m_future, i, q_future, k, metric, restricts[i], t,
                      key=f"embq-search-{token}-{i}", workers=w,
                      allow_other_workers=w is not None, pure=False)
        for i, w, t in zip(jobs, chosen, threads)
    ]
    try:
        for future in as_completed(futures):
            best = merge_topk(*best, *future.result(), k)
    finally:
        client.cancel(futures)
        del q_future, m_future
    return best


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
