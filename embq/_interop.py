"""gensim interop: stores from ``KeyedVectors`` and back.

gensim is an optional dependency: it is imported only inside these functions.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from gensim.models import KeyedVectors

    from embq._typing import AnyStore

__all__ = ["from_keyed_vectors", "to_keyed_vectors"]


def _import_keyed_vectors():
    try:
        from gensim.models import KeyedVectors
    except ImportError as exc:
        raise ImportError(
            f"gensim is needed for KeyedVectors interop but cannot be imported ({exc}); "
            "install it with: pip install gensim"
        ) from exc
    return KeyedVectors


def from_keyed_vectors(
    kv: KeyedVectors,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    attrs: dict | None = None,
    n_threads: int | None = None,
) -> None:
    """Write a store from a gensim ``KeyedVectors`` (keys in ``kv.index_to_key`` order).

    Parameters
    ----------
    kv : gensim.models.KeyedVectors
        The vectors; word2vec, fastText (``model.wv``) and GloVe vectors loaded by gensim all
        qualify. Only the full-word vectors are stored (no fastText n-grams).
    path : str or os.PathLike
        Destination store.
    overwrite : bool, default False
        Replace an existing file.
    attrs : dict, optional
        Extra root attributes for the store.
    n_threads : int, optional
        Threads for quantization.

    Raises
    ------
    TypeError
        ``kv`` is not a KeyedVectors, or a key is not a string.
    ValueError
        The vectors are not 2-D with one row per key, a key is the empty string, or there are
        no vectors at all (``embq compress`` refuses an empty file alike: a store holds at
        least one row).
    """
    _import_keyed_vectors()
    from embq._source import FROM_KEYED_VECTORS, SOURCE_FORMAT
    from embq._store import save

    if not (hasattr(kv, "index_to_key") and hasattr(kv, "vectors")):
        raise TypeError(
            "expected a gensim KeyedVectors (with index_to_key and vectors), got "
            f"{type(kv).__name__}"
        )
    keys = list(kv.index_to_key)
    vectors = np.asarray(kv.vectors)
    if vectors.ndim != 2 or vectors.shape[0] != len(keys):
        raise ValueError(
            f"KeyedVectors has {len(keys)} keys but vectors of shape {vectors.shape}; "
            "expected one row per key"
        )
    if not keys:
        raise ValueError(
            f"KeyedVectors holds no vectors (shape {vectors.shape}); expected at least one "
            "key and vector to store"
        )
    for i, key in enumerate(keys):
        if not isinstance(key, str):
            raise TypeError(
                f"key {i} is {type(key).__name__} {key!r}; stores hold string keys "
                "(convert e.g. Doc2Vec integer tags with str())"
            )
        if not key:
            raise ValueError(
                f"key {i} is the empty string; stores hold non-empty keys (drop or rename "
                "that vector first)"
            )
    meta = {SOURCE_FORMAT: FROM_KEYED_VECTORS}
    meta.update(attrs or {})
    save(path, vectors, keys, overwrite=overwrite, attrs=meta, n_threads=n_threads)


def to_keyed_vectors(store: AnyStore, *, n_threads: int | None = None) -> KeyedVectors:
    """A gensim ``KeyedVectors`` holding the store's dequantized rows.

    Parameters
    ----------
    store : embq.Store
        An open store. Without keys, the keys are the row numbers (ints), as gensim does for
        vectors added without keys.
    n_threads : int, optional
        Threads for dequantization.

    Returns
    -------
    gensim.models.KeyedVectors
        float32 vectors, keys in row order.
    """
    KeyedVectors = _import_keyed_vectors()
    from embq._quantize import dequantize

    n, dim = store.shape
    kv = KeyedVectors(vector_size=int(dim), count=0, dtype=np.float32)
    vectors = dequantize(store.codes, store.scales, store.zero_points, n_threads=n_threads)
    keys = list(store.index_to_key) if store.has_keys else list(range(n))
    kv.index_to_key = keys
    kv.key_to_index = {k: i for i, k in enumerate(keys)}
    kv.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    kv.norms = None
    return kv
