"""A sharded store: a directory of single-file stores read as one (layout in docs/format.md).

:func:`open` opens either kind of store.  A :class:`ShardedStore` has the read API of
:class:`embq.Store` and answers exactly as one store holding the same rows in the same order:
global row = shard offset + local row, lookups probe the shards in order, and a search scans
each shard (here, with the usual threads, or one Dask task per shard with ``client=``) and
merges the shards' top lists by (score descending, row ascending; l2 distance ascending).
``restrict``, ``restrict_vocab``, ``allow``, ties and the exclusions of ``most_similar`` count
global rows; range searches and the sketch prefilter merge as docs/format.md ("Sharded store")
describes.

The lookup methods are :class:`embq.Store`'s own (``get_index``, ``__getitem__``, ...): they
are written against the store's row index (``find``, ``find_many``, ``key_vector``,
``row_vector``, ``gather``), which :class:`_ShardedIndex` provides over the shards.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from embq._keyedvectors import LazyVectors
from embq._store import Store, _IndexToKey, _KeyToIndex, _missing_key_error

__all__ = ["ShardedStore", "open"]


def open(path: str | os.PathLike, *, client: Any = None) -> Store | ShardedStore:
    """Open a store read-only: a single store file, or a sharded store directory.

    Parameters
    ----------
    path : str or os.PathLike
        A store file, or a directory holding ``manifest.json`` and its shards.
    client : distributed.Client, optional
        Search a sharded store on this Dask cluster (one task per shard; the workers open
        the shards by path, so they must see the same files).  Without it the shards are
        searched in this process.

    Returns
    -------
    Store or ShardedStore

    Raises
    ------
    FileNotFoundError
        No such file.
    IsADirectoryError
        A directory without ``manifest.json``.
    StoreError
        The file is not a valid store; or, for a directory, the manifest is invalid or a
        shard is missing, unreadable or not the file the manifest names (message names it).
    ValueError
        ``client`` given for a single store file.
    """
    from embq._manifest import MANIFEST_NAME, is_sharded

    p = os.fspath(path)
    if os.path.isdir(p):
        if not is_sharded(p):
            raise IsADirectoryError(
                errno.EISDIR, f"{p!r} is a directory, not a store: it has no {MANIFEST_NAME}, "
                "so it is no sharded store either (or the sharded store's build did not "
                "finish)", p)
        return ShardedStore(path, client=client)
    if client is not None:
        raise ValueError(
            f"client= searches a sharded store on a cluster, but {os.fspath(path)!r} is a "
            "single store file; open it without client= (or shard it first)"
        )
    return Store(path)


class _ShardedIndex:
    """The row index of a sharded store: each shard's index, rows shifted by its offset.

    A key is looked up in the shards in order until found (keys are unique across the store,
    which the writer of the shards guarantees).  It is hashed once, here, and each shard
    probes its table with that hash; a batch is hashed once (``hash_keys``) and goes to each
    shard as one ``find_many`` call holding only the keys not found yet, with their hashes.
    """

    def __init__(self, owner: ShardedStore) -> None:
        from embq import _kernels_store

        self._owner = owner
        self._indexes = [s._index for s in owner._stores]
        self._offsets = [e.offset for e in owner.manifest.shards]
        self._manifest = owner.manifest
        self._kernels = _kernels_store

    def find(self, key: object) -> int:
        if not isinstance(key, str):
            return self._indexes[0].find(key)   # its TypeError, as one store's
        try:
            h = self._kernels.hash_key(key)
        except UnicodeEncodeError:
            return -1   # a str without UTF-8 form (lone surrogates): no store holds it
        for index, off in zip(self._indexes, self._offsets):
            r = index.find_hashed(key, h)
            if r >= 0:
                return off + r
        return -1

    def find_many(self, keys: list) -> np.ndarray:
        hashes = self._kernels.hash_keys(keys)
        out = np.full(len(keys), -1, np.int64)
        pending = np.arange(len(keys))
        for index, off in zip(self._indexes, self._offsets):
            if pending.size == 0:
                break
            if pending.size == len(keys):
                r = index.find_many(keys, hashes)
            else:
                r = index.find_many([keys[j] for j in pending.tolist()], hashes[pending])
            hit = r >= 0
            out[pending[hit]] = r[hit] + off
            pending = pending[~hit]
        return out

    def key_vector(self, key: object) -> np.ndarray:
        r = self.find(key)
        if r < 0:
            raise _missing_key_error(self._owner, key)
        return self.row_vector(r)

    def row_vector(self, r: int) -> np.ndarray:
        shard, local = self._manifest.locate([r])
        return self._indexes[int(shard[0])].row_vector(int(local[0]))

    def gather(self, n_threads: int, rows: Any) -> np.ndarray:
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        out = np.empty((rows.shape[0], self._manifest.dim), np.float32)
        if rows.size == 0:
            return out
        shard, local = self._manifest.locate(rows)
        for s in np.unique(shard).tolist():
            sel = shard == s
            out[sel] = self._indexes[s].gather(n_threads, local[sel])
        return out


class _ShardedKeys(_IndexToKey):
    """``index_to_key`` of a sharded store: the shards' keys one after the other, lazily.

    Indexing, iteration, membership, ``index``, ``count``, equality and ``repr`` are the
    single store's; only where keys are read differs (their shards).
    """

    def _arrays(self):
        st = self._store
        st._check_open()
        return st._stores, st.manifest

    def _decode(self, stores, manifest, j: int) -> str:
        shard, local = manifest.locate([j])
        return stores[int(shard[0])].index_to_key[int(local[0])]

    def _decode_block(self, stores, manifest, start: int, stop: int) -> list[str]:
        out: list[str] = []
        for s, e in zip(stores, manifest.shards):
            a, b = max(start - e.offset, 0), min(stop - e.offset, e.rows)
            if a < b:
                out += s.index_to_key[a:b]
        return out


class _ShardedVectors(LazyVectors):
    """``vectors`` of a sharded store (:class:`embq._keyedvectors.LazyVectors`): rows
    dequantized by their shards (the same kernel, the same bits), norms read from them."""

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        st = self._store
        st._check_open()
        x = st._index.gather(1, rows)
        if self._normed:
            nrm = np.empty(rows.shape[0], np.float32)
            shard, local = st.manifest.locate(rows)
            for i in np.unique(shard).tolist():
                sel = shard == i
                nrm[sel] = np.asarray(st._stores[i].norms)[local[sel]]
            x /= np.where(nrm > 0, nrm, np.float32(1))[:, None]
        return x


def _no_global_array(name: str) -> property:
    def get(self: ShardedStore) -> np.ndarray:
        raise AttributeError(
            f"a sharded store has no single {name!r} array: each shard has its own, "
            f"store.shards[i].{name} (global rows store.offsets[i] to store.offsets[i + 1])"
        )

    return property(get, doc=f"Not available: see ``shards[i].{name}``.")


class ShardedStore:
    """A read-only sharded store (see :func:`open`): the read API of :class:`embq.Store`.

    Attributes
    ----------
    path : str
        The store directory.
    manifest : embq._manifest.Manifest
        The validated manifest.
    client : distributed.Client or None
        Where :meth:`search` runs; None searches in this process.
    shards : tuple of Store
        The open shards in row order (``codes``, ``scales``, ``zero_points`` and ``norms``
        are per shard; a sharded store has no single array of them).
    """

    dtype = np.dtype(np.float32)

    def __init__(self, path: str | os.PathLike, *, client: Any = None) -> None:
        from embq import _manifest
        from embq._dist_search import open_shard

        self._closed = True
        self._index = None
        self._stores: list[Store] = []
        self.path = os.fspath(path)
        self.manifest = _manifest.read_manifest(self.path)
        self.client = client
        self.dim: int = self.manifest.dim
        self.has_keys: bool = self.manifest.has_keys
        self._n: int = self.manifest.rows
        # One thread per gather, as Store does: lookup batches are small.
        self._threads = 1
        try:
            for i in range(len(self.manifest.shards)):
                self._stores.append(open_shard(self.manifest, i))
        except BaseException:
            for s in self._stores:
                s.close()
            raise
        # The store's own description; the shards' attributes stay theirs (shards[i].attrs).
        self.attrs: dict[str, Any] = {
            "format": _manifest.FORMAT, "format_version": _manifest.FORMAT_VERSION,
            "scheme": self._stores[0].attrs.get("scheme"), "dim": self.dim, "n_rows": self._n,
            "has_keys": self.has_keys, "n_shards": len(self._stores),
            "sketch": self.manifest.sketch,
        }
        if self.manifest.sketch:
            self._check_sketch_centers()
        self._index = _ShardedIndex(self)
        self._closed = False

    def _check_sketch_centers(self) -> None:
        """Every shard of a store with a sketch holds the same center (the whole store's):
        a shard whose center differs was not sketched with the others, and its Hamming
        distances would not be the single store's."""
        from embq._errors import StoreError

        first = self._stores[0].sketch_center
        for i, st in enumerate(self._stores[1:], 1):
            if st.sketch_center.tobytes() != first.tobytes():
                e = self.manifest.shards[i]
                self.close()
                raise StoreError(
                    f"shard {i} ({e.path}) of {self.manifest.directory}: its sketch_center "
                    "differs from shard 0's; every shard of a sharded store must hold the "
                    "center of all its rows", path=self.manifest.shard_path(i))

    # -- what Store already defines over its row index -----------------------------------------
    shape = Store.shape
    closed = Store.closed
    __len__ = Store.__len__
    __enter__ = Store.__enter__
    __exit__ = Store.__exit__
    _check_open = Store._check_open
    _checked_index = Store._checked_index
    _find = Store._find
    _rows_of_keys = Store._rows_of_keys
    _range_text = Store._range_text
    __contains__ = Store.__contains__
    has_index_for = Store.has_index_for
    get_index = Store.get_index
    __getitem__ = Store.__getitem__
    _getitem = Store._getitem
    _check_row = Store._check_row
    _rows_from_ints = Store._rows_from_ints
    _getitem_array = Store._getitem_array
    _getitem_list = Store._getitem_list
    _resolve = Store._resolve
    vectors_for_all = Store.vectors_for_all
    allow_list = Store.allow_list

    def _verify_miss(self, key: str) -> None:
        """A key every shard reported absent: each shard checks its own probe sequence
        (:meth:`Store._verify_miss`), so a shard whose hash table does not match its keys is
        a StoreError naming that shard's file rather than a wrong "absent"."""
        from embq._kernels_store import hash_key

        try:
            h = hash_key(key)
        except UnicodeEncodeError:
            return   # no store holds a str without UTF-8 form
        for s in self._stores:
            s._verify_miss(key, h)

    def _drop_resident_pages(self) -> None:
        """:meth:`Store._drop_resident_pages` of every shard (after a scan over all rows)."""
        for s in self._stores:
            s._drop_resident_pages()

    codes = _no_global_array("codes")
    scales = _no_global_array("scales")
    zero_points = _no_global_array("zero_points")
    norms = _no_global_array("norms")

    # -- basics ----------------------------------------------------------------------------------
    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        keys = "keys" if self.has_keys else "no keys"
        where = "" if self.client is None else " on a Dask cluster"
        return (f"<embq.ShardedStore {self.path!r} shape={self.shape} "
                f"shards={len(self.manifest.shards)} {keys}{where} ({state})>")

    def close(self) -> None:
        """Close every shard.  Safe to call more than once."""
        self._closed = True
        self._index = None
        for s in self._stores:
            s.close()

    def __reduce__(self):
        raise TypeError(
            "embq.ShardedStore objects cannot be pickled: they hold memory maps of open shard "
            "files; pickle the path and call embq.open(path) in the other process (a search "
            "with client= sends each Dask worker the manifest, and the worker opens its shard)"
        )

    @property
    def shards(self) -> tuple[Store, ...]:
        """The open shard stores, in row order."""
        self._check_open()
        return tuple(self._stores)

    def shard(self, i: int) -> Store:
        """Shard ``i`` (a :class:`Store`; its rows are global rows ``offsets[i]`` onwards)."""
        return self.shards[i]

    @property
    def offsets(self) -> np.ndarray:
        """int64 ``(n_shards + 1,)``: shard ``i`` holds global rows ``offsets[i]:offsets[i+1]``."""
        return self.manifest.offsets

    # -- keys ------------------------------------------------------------------------------------
    @property
    def index_to_key(self) -> Sequence[str] | None:
        """Keys in global row order (a lazy sequence), or None without keys."""
        self._check_open()
        return _ShardedKeys(self) if self.has_keys else None

    @property
    def key_to_index(self):
        """Key -> global row (a lazy mapping over the shards' hash tables), or None."""
        self._check_open()
        return _KeyToIndex(self) if self.has_keys else None

    def get_vector(self, key: Any, norm: bool = False) -> np.ndarray:
        """Dequantized float32 vector of a key or global row (see :meth:`Store.get_vector`)."""
        i = self.get_index(key)
        shard, local = self.manifest.locate([i])
        return self._stores[int(shard[0])].get_vector(int(local[0]), norm=norm)

    # -- search ----------------------------------------------------------------------------------
    def search(self, queries, k: int = 10, *, metric: str = "cosine", rescore=None,
               restrict=None, n_threads=None, allow=None, threshold=None, max_results=None,
               prefilter=None, oversample=None) -> tuple[Any, Any]:
        """Search exactly as :meth:`Store.search` on one store holding all the rows.

        Options as :func:`embq._search.search_store`: ``metric`` ("cosine", "dot", "l2"),
        ``rescore``, ``restrict``, ``n_threads``, ``allow`` (keys, a boolean mask over the
        global rows, or global row numbers), ``threshold``/``max_results`` (range search) and
        ``prefilter="sketch"``/``oversample`` (the store must have been built or sketched
        with one sketch over all its shards).

        Each shard answers for its own rows (only its allowed local rows are sent to it); the
        answers merge as the single store orders them: top lists by (score descending, or l2
        distance ascending; then row), range matches per query likewise, cut to
        ``max_results``; prefilter candidates by (Hamming distance, row), cut to the single
        store's ``K = k * oversample``, then the best by exact score.  ``rescore`` re-ranks
        the merged candidates once, as :func:`embq._search.search` does.  With a ``client``
        the shards are searched by Dask tasks (``n_threads`` then counts threads per task;
        None shares each worker's threads among the tasks it runs) and the rescoring reads
        the candidates' codes here.

        Returns
        -------
        scores : ndarray of float32, shape (k,) or (m, k)
        indices : ndarray of int64, same shape (global rows)
            With ``threshold``: two 1-D arrays for one query, two lists of m arrays for
            (m, d) queries.
        """
        from embq import _dist_search as ds
        from embq import _search as sr
        from embq._utils import effective_n_threads

        self._check_open()
        if metric not in sr._ALL_METRICS:
            raise ValueError(f"metric must be 'cosine', 'dot' or 'l2', got {metric!r}")
        k = sr._positive_int(k, "k")
        if rescore is not None:
            rescore = sr._positive_int(rescore, "rescore")
        threshold, max_results = sr._range_args(threshold, max_results, rescore)
        n_eff = self._n if restrict is None else min(
            sr._positive_int(restrict, "restrict", allow_zero=True), self._n)
        oversample = self._prefilter_plan(prefilter, oversample)
        sr._check_sketch_search(oversample is not None, threshold, metric)
        qf, single = sr._check_queries(queries, self.dim)
        idx = None if allow is None else sr._allow_rows(sr._store_allow(self, allow), self._n,
                                                        n_eff)
        m = qf.shape[0]
        npos = n_eff if idx is None else len(idx)
        # Here: n_threads for the scan and the rescoring.  On a cluster: per task (None lets
        # each worker share its threads), and the rescoring here runs on one thread.
        task_threads = None if n_threads is None else effective_n_threads(n_threads)
        threads = effective_n_threads(n_threads) if self.client is None else task_threads or 1
        jobs = ds.shard_jobs(self.manifest, None if n_eff == self._n else n_eff, idx)
        if threshold is not None:
            spec = ds.ShardSearch(1, metric, threshold, max_results)
            indptr, scores, rows = self._run(qf, spec, jobs if m and npos else [], threads,
                                             task_threads)
            if single:
                return scores, rows
            return np.split(scores, indptr[1:-1]), np.split(rows, indptr[1:-1])
        kk = min(k, npos)
        kc = min(k * rescore, npos) if rescore else kk
        if not (kk and m):
            return _no_rows(m, kk, single)
        exponents = None
        if oversample is not None:
            # The shards take the float queries as they are (their sketches are of those),
            # each returning its K nearest rows scored; the K nearest of all and then the
            # best kc of those are chosen here, as the single store chooses them.
            n_cand = min(n_eff, max(kc, k * oversample))
            scores, cand, _ = self._run(qf, ds.ShardSearch(n_cand, metric, prefilter=True),
                                        jobs, threads, task_threads)
            scores, rows = ds.best_scored(scores, cand, kc)
            if metric == "dot" and sr._query_exponents(qf) is not None:
                # One store ranks the candidates of a query outside the safe range by their
                # dot scores with the scaled query; the shards' scores are scaled back and
                # may have overflowed to equal infinities. Rank each query's candidates
                # again the same way: a search allowed only them (a rare case: queries of
                # magnitude beyond 2**64 or below 2**-64).
                for i in range(m):
                    scores[i], rows[i] = self.search(qf[i], kc, metric="dot", allow=cand[i],
                                                     n_threads=n_threads)
        else:
            # A query outside embq._search's safe range is scaled by a power of two before
            # the int8 scan (exactly what one store does); the shards then rank the scaled
            # query, so their dot scores merge in the single store's order even where
            # scaling them back over- or underflows, and are scaled back once, after the
            # merge.  l2 distances are not scale-invariant: one store never scales for them.
            if metric != "l2":
                exponents = sr._query_exponents(qf)
            scan = qf if exponents is None else np.ldexp(
                qf, -exponents[:, None]).astype(np.float32)
            scores, rows = self._run(scan, ds.ShardSearch(kc, metric), jobs, threads,
                                     task_threads)
        if rescore:
            scores, rows = self._rescore(qf, rows, kk, metric, threads)
        elif exponents is not None and metric == "dot":
            with np.errstate(over="ignore"):
                scores = np.ldexp(scores, exponents[:, None]).astype(np.float32)
        if single:
            return scores[0], rows[0]
        return scores, rows

    def _run(self, queries: np.ndarray, spec: Any, jobs: list, threads: int,
             task_threads: int | None) -> tuple[np.ndarray, ...]:
        """The shards' merged answer to ``spec``: here, or on the client's cluster."""
        from embq import _dist_search as ds

        if self.client is None:
            return ds.search_local(self._stores, self.manifest, queries, spec, jobs, threads)
        return ds.search_dask(self.client, self.manifest, queries, spec, jobs, task_threads)

    def _prefilter_plan(self, prefilter: Any, oversample: Any) -> int | None:
        """Check ``prefilter``/``oversample`` as one store does; the oversample to use, or
        None for the plain scan.  A store whose manifest records no sketch of all its shards
        (built before sharded sketches, or with ``--no-sketch``) is refused, saying how to
        add one: shards sketched one by one have centers of their own, and their Hamming
        distances would not be the single store's."""
        from embq._sketch import check_prefilter

        if prefilter == "sketch" and not self.manifest.sketch:
            raise ValueError(
                f"prefilter='sketch': the sharded store {self.path!r} has no sketch of all its "
                f"shards; add one with `embq sketch {self.path}` (or compress without "
                "--no-sketch)")
        s0 = self._stores[0]
        with_sketch = prefilter is not None and self.manifest.sketch
        plan = check_prefilter(prefilter, oversample, s0.sketch if with_sketch else None,
                               s0.sketch_center if with_sketch else None, self.dim, len(s0))
        return None if plan is None else plan[2]

    @property
    def sketch(self) -> None:
        """Not available: each shard has its rows' sketch, ``shards[i].sketch``."""
        raise AttributeError(
            "a sharded store has no single 'sketch' array: each shard has its own rows' "
            "sketch, store.shards[i].sketch (against the one center, store.sketch_center)")

    @property
    def sketch_center(self) -> np.ndarray | None:
        """float32 (dim,): the center of the store's sketch (the column mean of all rows),
        which every shard holds; None when the store has no sketch of all its shards."""
        self._check_open()
        return self._stores[0].sketch_center if self.manifest.sketch else None

    def _rescore(self, qf: np.ndarray, cand: np.ndarray, kk: int, metric: str,
                 threads: int) -> tuple[np.ndarray, np.ndarray]:
        """embq._search's rescoring of the merged candidates, over their gathered codes.

        The candidates' rows are numbered by their rank among the sorted unique rows, so
        the rescoring sees the same candidates in the same order and breaks ties the same
        way as on one store.
        """
        from embq._dist_search import gather_codes
        from embq._search import _rescore

        uniq = np.unique(cand)
        codes, scales, zps = gather_codes(self._stores, self.manifest, uniq)
        pos = np.searchsorted(uniq, cand)
        scores, picked = _rescore(codes, scales, zps, qf, pos, kk, metric, threads)
        return scores, uniq[picked]

    def _all_scores(self, qf: np.ndarray, restrict: int | None, rescore: int | None,
                    threads: int) -> np.ndarray:
        """embq._search's every-row cosine scores, shard by shard (each row's is its own)."""
        from embq._dist_search import shard_restricts
        from embq._search import _all_scores

        parts = [_all_scores(s, qf, r, rescore, threads)
                 for s, r in zip(self._stores, shard_restricts(self.manifest, restrict))
                 if r != 0]
        return (np.concatenate(parts, axis=1) if parts
                else np.empty((qf.shape[0], 0), np.float32))

    # The gensim-style searches are Store's own: embq._search's, which search through
    # store.search (allow= included) and hand the every-row scores (topn=None) to
    # _all_scores above.
    most_similar = Store.most_similar
    most_similar_batch = Store.most_similar_batch
    similar_by_vector = Store.similar_by_vector
    similar_by_key = Store.similar_by_key
    similar_by_word = Store.similar_by_word

    # -- the rest of gensim's KeyedVectors ---------------------------------------------------
    # Store's own methods (embq._keyedvectors), which read rows through the API above (keys,
    # get_vector, store[...], search, _all_scores).
    vector_size = Store.vector_size
    similarity = Store.similarity
    distance = Store.distance
    n_similarity = Store.n_similarity
    distances = Store.distances
    cosine_similarities = Store.__dict__["cosine_similarities"]   # the staticmethod itself
    get_mean_vector = Store.get_mean_vector
    doesnt_match = Store.doesnt_match
    rank_by_centrality = Store.rank_by_centrality
    relative_cosine_similarity = Store.relative_cosine_similarity
    save_word2vec_format = Store.save_word2vec_format
    to_arrow = Store.to_arrow
    fill_norms = Store.fill_norms
    add_vectors = Store.add_vectors
    add_vector = Store.add_vector
    sort_by_descending_frequency = Store.sort_by_descending_frequency
    __setitem__ = Store.__setitem__

    @property
    def vectors(self):
        """Read-only array-like of the dequantized rows, read from their shards on access
        (see :attr:`Store.vectors`)."""
        return _ShardedVectors(self, normed=False)

    def get_normed_vectors(self):
        """Read-only array-like of the unit rows (see ``vectors``)."""
        return _ShardedVectors(self, normed=True)

    most_similar_cosmul = Store.most_similar_cosmul
    closer_than = Store.closer_than
    words_closer_than = Store.words_closer_than
    rank = Store.rank

    # -- evaluation and interop ------------------------------------------------------------------
    evaluate_word_pairs = Store.evaluate_word_pairs
    evaluate_word_analogies = Store.evaluate_word_analogies

    def to_keyed_vectors(self):
        """A gensim ``KeyedVectors`` of every row (the shards' arrays are concatenated in
        memory for it); see :func:`embq._interop.to_keyed_vectors`."""
        from types import SimpleNamespace

        from embq._interop import to_keyed_vectors

        self._check_open()
        whole = SimpleNamespace(
            shape=self.shape, has_keys=self.has_keys, index_to_key=self.index_to_key,
            **{name: np.concatenate([getattr(s, name) for s in self._stores])
               for name in ("codes", "scales", "zero_points")})
        return to_keyed_vectors(whole)


def _no_rows(m: int, kk: int, single: bool) -> tuple[np.ndarray, np.ndarray]:
    scores, rows = np.empty((m, kk), np.float32), np.empty((m, kk), np.int64)
    return (scores[0], rows[0]) if single else (scores, rows)
