"""The rest of gensim's ``KeyedVectors`` surface on a read-only :class:`embq.Store`.

Names, arguments, defaults and return types are gensim 4's. Methods that score every row
(``distances`` of one key against all, ``closer_than``, ``rank``, ``most_similar_cosmul``) run
on the int8 kernels of :mod:`embq._search`, batched and without the GIL; methods on a few keys
(``similarity``, ``n_similarity``, ``doesnt_match``...) work on the dequantized float32 rows of
those keys, with gensim's own arithmetic. ``vectors`` and ``get_normed_vectors()`` are
read-only array-likes that dequantize the rows asked for, block by block;
``numpy.asarray(...)`` gives the full float32 copy.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from embq._search import _all_scores, _common_args, _describe, _key_of, _topn_arg

if TYPE_CHECKING:
    from embq._typing import AnyStore

__all__ = ["LazyVectors", "read_only_error"]

logger = logging.getLogger(__name__)

# rows dequantized at a time by np.asarray(store.vectors): about 16 MB of float32
_BLOCK_VALUES = 1 << 22


def read_only_error(name: str) -> TypeError:
    """The error of every gensim method that would change a store."""
    return TypeError(
        f"{name}: an embq store is read-only (its codes are quantized once, when written); "
        "write a new store instead, e.g. embq.save(path, numpy.vstack([numpy.asarray("
        "store.vectors), new_vectors]), list(store.index_to_key) + new_keys), or "
        "embq.StoreWriter(path).append(...) for large inputs"
    )


class LazyVectors:
    """Read-only array-like of a store's dequantized rows (``normed``: divided by the norms).

    Indexing (an int, a slice, a list or array of rows) dequantizes only those rows;
    ``numpy.asarray`` dequantizes everything, a block of rows at a time, into one float32
    array. Assignment raises (the store is read-only).
    """

    def __init__(self, store: AnyStore, normed: bool) -> None:
        self._store = store
        self._normed = normed

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self._store), self._store.dim)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    ndim = 2

    @property
    def size(self) -> int:
        return len(self._store) * self._store.dim

    def __len__(self) -> int:
        return len(self._store)

    def __repr__(self) -> str:
        kind = "normed vectors" if self._normed else "vectors"
        return f"<embq {kind} of {self._store!r}, shape {self.shape}, dequantized on access>"

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        from embq._quantize import dequantize

        s = self._store
        x = dequantize(s.codes, s.scales, s.zero_points, rows=rows)
        if self._normed:
            nrm = np.asarray(s.norms)[rows]
            x /= np.where(nrm > 0, nrm, np.float32(1))[:, None]
        return x

    def __getitem__(self, key: Any) -> np.ndarray:
        n = len(self._store)
        if isinstance(key, tuple):
            first, rest = key[0], key[1:]
            return self[first][(slice(None), *rest) if not np.isscalar(first) and not
                               isinstance(first, (int, np.integer)) else rest]
        if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
            i = int(key)
            if not -n <= i < n:
                raise IndexError(f"row {i} out of range for {n} rows")
            return self._rows(np.array([i % n], np.int64))[0]
        if isinstance(key, slice):
            return self._rows(np.arange(n, dtype=np.int64)[key])
        arr = np.asarray(key)
        if arr.dtype == np.bool_:
            if arr.shape != (n,):
                raise IndexError(f"a boolean index must have shape ({n},), got {arr.shape}")
            return self._rows(np.flatnonzero(arr))
        if arr.dtype.kind not in "iu" or arr.ndim != 1:
            raise IndexError(f"rows must be an int, a slice or a 1-D array of ints, got "
                             f"{_describe(key)}")
        rows = arr.astype(np.int64)
        if rows.size and (rows.min() < -n or rows.max() >= n):
            raise IndexError(f"row numbers must be within [-{n}, {n}), got {rows.min()}.."
                             f"{rows.max()}")
        return self._rows(rows % max(n, 1))

    def __setitem__(self, key: Any, value: Any) -> None:
        raise read_only_error("vectors[...] = ...")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        n, d = self.shape
        out = np.empty((n, d), np.float32)
        step = max(1, _BLOCK_VALUES // max(d, 1))
        for a in range(0, n, step):
            out[a:a + step] = self._rows(np.arange(a, min(n, a + step), dtype=np.int64))
        return out if dtype is None else out.astype(dtype, copy=False)

    def __iter__(self):
        n, d = self.shape
        step = max(1, _BLOCK_VALUES // max(d, 1))
        for a in range(0, n, step):
            yield from self._rows(np.arange(a, min(n, a + step), dtype=np.int64))


def _unitvec(v: np.ndarray) -> np.ndarray:
    """gensim's ``matutils.unitvec`` for a dense float vector (zero stays zero)."""
    nrm = np.linalg.norm(v)
    return (v / nrm).astype(v.dtype, copy=False) if nrm > 0 else v


def similarity(store: AnyStore, w1: Any, w2: Any) -> np.float32:
    """Cosine similarity of two keys (gensim's ``similarity``), on the dequantized rows."""
    return np.dot(_unitvec(store[w1]), _unitvec(store[w2]))


def distance(store: AnyStore, w1: Any, w2: Any) -> np.float32:
    """``1 - similarity(w1, w2)``."""
    return 1 - similarity(store, w1, w2)


def get_mean_vector(store: AnyStore, keys: Any, weights: Any = None, pre_normalize: bool = True,
                    post_normalize: bool = False, ignore_missing: bool = True) -> np.ndarray:
    """gensim's ``get_mean_vector``: the weighted mean of keys (unit rows when
    ``pre_normalize``) and vectors, divided by the sum of |weights| of the items used."""
    if len(keys) == 0:
        raise ValueError("cannot compute mean with no input")
    if isinstance(weights, list):
        weights = np.array(weights, dtype=np.float32)
    if weights is None:
        weights = np.ones(len(keys), dtype=np.float32)
    if len(keys) != weights.shape[0]:
        raise ValueError("keys and weights array must have same number of elements")
    mean = np.zeros(store.dim, np.float32)
    total = 0
    for j, key in enumerate(keys):
        if isinstance(key, np.ndarray):
            mean += weights[j] * key
            total += abs(weights[j])
        elif key in store:
            mean += weights[j] * store.get_vector(key, norm=pre_normalize)
            total += abs(weights[j])
        elif not ignore_missing:
            raise KeyError(f"Key '{key}' not present in vocabulary")
    if total > 0:
        mean = mean / total
    if post_normalize:
        mean = _unitvec(mean).astype(np.float32)
    return mean


def n_similarity(store: AnyStore, ws1: Sequence[Any], ws2: Sequence[Any]) -> np.float32:
    """Cosine of the means of two sets of keys (gensim's ``n_similarity``)."""
    if not (len(ws1) and len(ws2)):
        raise ZeroDivisionError("At least one of the passed list is empty.")
    m1 = get_mean_vector(store, ws1, pre_normalize=False)
    m2 = get_mean_vector(store, ws2, pre_normalize=False)
    return np.dot(_unitvec(m1), _unitvec(m2))


def cosine_similarities(vector_1: np.ndarray, vectors_all: np.ndarray) -> np.ndarray:
    """gensim's static ``cosine_similarities`` (plain float arrays, no store)."""
    norm = np.linalg.norm(vector_1)
    all_norms = np.linalg.norm(vectors_all, axis=1)
    return np.dot(vectors_all, vector_1) / (norm * all_norms)


def _input_vector(store: AnyStore, word_or_vector: Any) -> np.ndarray:
    if isinstance(word_or_vector, (str, int, np.integer)) and not isinstance(
            word_or_vector, (bool, np.bool_)):
        return store.get_vector(word_or_vector)
    vec = np.asarray(word_or_vector)
    if vec.dtype.kind not in "fiu" or vec.shape != (store.dim,):
        raise ValueError(f"word_or_vector must be a key or a vector of shape ({store.dim},), "
                         f"got {_describe(word_or_vector)}")
    if not np.isfinite(vec).all():
        raise ValueError("word_or_vector contains NaN or Inf, expected finite values")
    return vec.astype(np.float32)


def distances(store: AnyStore, word_or_vector: Any, other_words: Iterable[Any] = (),
              *, n_threads: int | None = None) -> np.ndarray:
    """``1 - cosine`` from a key or vector to other keys (gensim's ``distances``).

    Without ``other_words`` every row is scored by the int8 cosine kernel (one batched scan;
    a zero row scores 0, so its distance is 1 where gensim gives NaN); with them, their
    dequantized rows are scored in float, as gensim does.
    """
    vec = _input_vector(store, word_or_vector)
    other_words = list(other_words)
    if not other_words:
        _, _, threads = _common_args(store, None, None, n_threads)
        return 1 - _all_scores(store, vec[None, :], None, None, threads)[0]
    rows = [store.get_index(w) for w in other_words]
    return 1 - cosine_similarities(vec, store[rows])


def _closer_rows(store: AnyStore, key1: Any, key2: Any, n_threads: int | None) -> np.ndarray:
    """Rows closer to ``key1`` than ``key2`` is, increasing (see :func:`closer_than`)."""
    r1, r2 = store.get_index(key1), store.get_index(key2)
    _, _, threads = _common_args(store, None, None, n_threads)
    vec = store.get_vector(r1)
    # key2's score by the same kernel arithmetic: a search allowed only its row (the store's
    # own search, so a sharded store answers it shard by shard)
    t, _ = store.search(vec, 1, allow=np.array([r2], np.int64), n_threads=threads)
    scores, rows = store.search(vec, threshold=float(t[0]), n_threads=threads)
    return np.sort(rows[(scores > t[0]) & (rows != r1)])


def closer_than(store: AnyStore, key1: Any, key2: Any, *,
                n_threads: int | None = None) -> list[Any]:
    """Keys closer to ``key1`` than ``key2`` is (gensim's ``closer_than``), in row order.

    One range search with the int8 cosine kernel from ``key1``'s row, at the threshold of
    ``key2``'s own kernel score (so the comparison is between scores of the same
    arithmetic); rows scoring exactly that much are not closer, and ``key1`` is left out.
    """
    rows = _closer_rows(store, key1, key2, n_threads)
    keys = store.index_to_key
    return [keys[int(r)] for r in rows] if keys is not None else [int(r) for r in rows]


def rank(store: AnyStore, key1: Any, key2: Any, *, n_threads: int | None = None) -> int:
    """``len(closer_than(key1, key2)) + 1`` (gensim's ``rank``), without building the keys."""
    return len(_closer_rows(store, key1, key2, n_threads)) + 1


def rank_by_centrality(store: AnyStore, words: Sequence[Any],
                       use_norm: bool = True) -> list[tuple[np.float32, Any]]:
    """gensim's ``rank_by_centrality``: (cosine to the mean, word), most central first;
    words not in the store are ignored with a warning."""
    used = [w for w in words if w in store]
    if len(used) != len(words):
        logger.warning("vectors for words %s are not present in the model, ignoring these words",
                       set(words) - set(used))
    if not used:
        raise ValueError("cannot select a word from an empty list")
    vectors = np.vstack([store.get_vector(w, norm=use_norm) for w in used]).astype(np.float32)
    mean = get_mean_vector(store, vectors, post_normalize=True)
    dists = np.dot(vectors, mean)
    return sorted(zip(dists, used), reverse=True)


def doesnt_match(store: AnyStore, words: Sequence[Any]) -> Any:
    """The word furthest from the mean of the others (gensim's ``doesnt_match``)."""
    return rank_by_centrality(store, words)[-1][1]


def relative_cosine_similarity(store: AnyStore, wa: Any, wb: Any, topn: int = 10) -> float:
    """gensim's ``relative_cosine_similarity``: ``similarity(wa, wb)`` over the sum of
    ``wa``'s ``topn`` neighbour scores."""
    sims = store.similar_by_word(wa, topn)
    if not sims:
        raise ValueError("Cannot calculate relative cosine similarity without any similar words.")
    return float(similarity(store, wa, wb)) / sum(s for _, s in sims)


def most_similar_cosmul(store: AnyStore, positive: Any = None, negative: Any = None,
                        topn: int | None = 10, restrict_vocab: int | None = None, *,
                        rescore: int | None = 4,
                        n_threads: int | None = None) -> list[tuple[Any, float]] | np.ndarray:
    """gensim's ``most_similar_cosmul`` (Levy and Goldberg's 3CosMul).

    Each term's cosine with every row comes from one batched int8 kernel call (all terms as
    queries), shifted to [0, 1] and combined as gensim does,
    ``prod((1 + cos * |term|) / 2) / (prod(negative ones) + 1e-6)``; keys are unit terms,
    vectors are used as given. The best ``topn * rescore`` are then scored again on the
    dequantized rows in float64 and re-ranked (``rescore=None`` keeps the int8 scores).
    ``restrict_vocab`` searches only the first rows (gensim 4 accepts but ignores it).
    ``topn`` None or 0 returns every row's combined score, as gensim does.
    """
    if isinstance(topn, (int, np.integer)) and not isinstance(topn, bool) and topn < 1:
        return []
    if positive is None:
        positive = []
    elif isinstance(positive, (str, np.ndarray)) or not isinstance(positive, Iterable):
        positive = [positive]
    if negative is None:
        negative = []
    elif isinstance(negative, (str, np.ndarray)) or not isinstance(negative, Iterable):
        negative = [negative]
    positive, negative = list(positive), list(negative)
    restrict, rescore, threads = _common_args(store, restrict_vocab, rescore, n_threads)
    topn = _topn_arg(topn)
    exclude = {store.get_index(w) for w in positive + negative
               if not isinstance(w, np.ndarray) and w in store}
    terms = [store.get_vector(w, norm=True) if not isinstance(w, np.ndarray)
             else np.asarray(w, np.float32) for w in positive + negative]
    if not positive:
        raise ValueError("cannot compute similarity with no input")
    q = np.vstack(terms).astype(np.float32)
    tn = np.linalg.norm(q.astype(np.float64), axis=1)
    npos = len(positive)

    def combine(cos: np.ndarray) -> np.ndarray:
        shifted = (1 + cos.astype(np.float64) * tn[:, None]) / 2
        return (np.prod(shifted[:npos], axis=0)
                / (np.prod(shifted[npos:], axis=0) + 0.000001))

    if not topn:
        return combine(_all_scores(store, q, restrict, rescore, threads)).astype(np.float32)
    dists = combine(_all_scores(store, q, restrict, None, threads))
    want = topn + len(exclude)
    c = min(len(dists), want * rescore if rescore else want)
    cand = np.argpartition(-dists, c - 1)[:c] if c < len(dists) else np.arange(len(dists))
    if rescore:
        cand = np.sort(cand)
        # the store's own row reader: a sharded store reads each row from its shard
        x = np.asarray(store.vectors[cand], dtype=np.float64)
        xn = np.linalg.norm(x, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            cos = np.where(xn[None, :] * tn[:, None] > 0,
                           (q.astype(np.float64) @ x.T) / (xn[None, :] * tn[:, None]), 0.0)
        score = combine(cos)
    else:
        score = dists[cand]
    order = np.lexsort((cand, -score))
    out = [(_key_of(store, int(cand[j])), float(score[j])) for j in order
           if int(cand[j]) not in exclude]
    return out[:topn]


def save_word2vec_format(store: AnyStore, fname: str | os.PathLike, fvocab: Any = None,
                         binary: bool = False, total_vec: Any = None, write_header: bool = True,
                         prefix: str = "", append: bool = False,
                         sort_attr: str = "count") -> None:
    """gensim's ``save_word2vec_format`` through :func:`embq._export.export` (dequantized
    rows, in row order; the file is replaced, as gensim does). ``fvocab``, ``total_vec``,
    ``prefix`` and ``append`` are not supported and refused when given."""
    from embq._export import export

    for name, value, default in (("fvocab", fvocab, None), ("total_vec", total_vec, None),
                                 ("prefix", prefix, ""), ("append", append, False)):
        if value != default:
            raise ValueError(f"save_word2vec_format: {name}={value!r} is not supported for "
                             f"an embq store (only {name}={default!r})")
    if binary and not write_header:
        raise ValueError("save_word2vec_format: binary=True needs write_header=True")
    fmt = "word2vec-binary" if binary else ("word2vec" if write_header else "glove")
    export(store, fname, format=fmt, overwrite=True)
