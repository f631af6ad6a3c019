"""Measure a store against the float vectors it came from: what compression lost.

:func:`compare_with_original` lines the original up with the store row for row, the way
``embq compress`` made the store (the reader options and adjustments its ``source_*``
attributes record, see :mod:`embq._source`), then reports the reconstruction error, recall@k of
the int8 search against exact float search, and the word-pair and analogy figures of
:mod:`embq._evaluate` on both sides with their differences.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from embq._evaluate import _as_backend, _FloatVectors, figures_of, parse_test_files
from embq._source import (
    NORMALIZED,
    SOURCE_DUPLICATES,
    check_reader_options,
    recorded_int,
    recorded_reader_options,
)

if TYPE_CHECKING:
    from embq._typing import AnyStore, PathLike, Vectors

__all__ = ["compare_with_original"]


class _Original(NamedTuple):
    """The original vectors, lined up row for row with the store (see :func:`_load_original`)."""

    keys: list[str] | None
    vectors: np.ndarray  # float32 (n, d)
    label: str
    options: dict  # the reader options used and the adjustments made, for the report
    notes: list[str]  # the same in words, one line each


def _first_occurrences(keys: list[str]) -> np.ndarray | None:
    """Rows of the first occurrence of each key, in order; None when every key is unique."""
    if len(set(keys)) == len(keys):
        return None
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    return np.fromiter(first.values(), np.int64, count=len(first))


def _in_memory(original: Any) -> tuple[list[str] | None, Any, str]:
    """Keys, vectors and label of a KeyedVectors or a (keys, vectors) tuple."""
    if hasattr(original, "index_to_key") and hasattr(original, "vectors"):
        return list(original.index_to_key), original.vectors, "KeyedVectors"
    if isinstance(original, tuple) and len(original) == 2:
        keys, vectors = original
        return (None if keys is None else list(keys)), vectors, "array"
    raise TypeError(
        "original must be a path, a gensim KeyedVectors or a (keys, vectors) tuple, "
        f"got {type(original).__name__}"
    )


def _load_original(store: AnyStore, shape: tuple[int, int], original: Any,
                   options: dict) -> _Original:
    """The original vectors, read and adjusted the way ``embq compress`` made the store.

    ``options`` holds the reader options given (None = not given, already checked by
    :func:`embq._source.check_reader_options`); :func:`embq._source.recorded_reader_options`
    fills in the others from the store's attributes. Then, as compress did: later duplicates
    of a key are dropped (the first occurrence wins) and, for a store written with
    ``normalize``, the rows are L2-normalized. A keyless original (``.npy`` without a keys
    file) of the store's shape takes the store's keys, since the rows are in the same order.
    """
    attrs = dict(getattr(store, "attrs", None) or {})
    resolved, notes = recorded_reader_options(attrs, original, options)
    limit = resolved["limit"]
    used: dict[str, Any] = {"limit": None if limit is None else int(limit)}

    if isinstance(original, (str, os.PathLike)):
        from embq._readers import detect_format, load_embeddings

        path = os.fspath(original)
        parts = {name: resolved[name] for name in ("tensor", "array", "vector_column",
                                                    "key_column")}
        keys, vectors = load_embeddings(
            path, format=resolved["format"], limit=limit, encoding=resolved["encoding"],
            unicode_errors=resolved["unicode_errors"], keys_path=resolved["keys"], **parts,
        )
        used.update(
            format=(resolved["format"] if resolved["format"] is not None
                    else detect_format(path, resolved["encoding"])),
            keys=None if resolved["keys"] is None else os.fspath(resolved["keys"]),
            encoding=resolved["encoding"], unicode_errors=resolved["unicode_errors"],
            **{name: value for name, value in parts.items() if value is not None},
        )
        label = path
    else:
        keys, vectors, label = _in_memory(original)
        vectors = np.asarray(vectors)
        if vectors.ndim != 2:
            raise ValueError(f"the original vectors must be 2-D (n, d), got shape {vectors.shape}")
        if keys is not None and len(keys) != vectors.shape[0]:
            raise ValueError(
                f"the original has {len(keys)} keys for {vectors.shape[0]} vectors; expected "
                "one key per row"
            )
        if limit is not None:
            vectors = vectors[:limit]
            keys = None if keys is None else keys[:limit]
    vectors = np.asarray(vectors, np.float32)

    used["duplicates_dropped"] = 0
    if keys is not None:
        first = _first_occurrences(keys)
        if first is not None:
            dropped = len(keys) - len(first)
            keys = [keys[i] for i in first.tolist()]
            vectors = vectors[first]
            used["duplicates_dropped"] = dropped
            notes.append(f"{dropped:,} later duplicate key{'s' if dropped != 1 else ''} dropped, "
                         "the first occurrence kept (as compress does)")

    n, dim = shape
    used["keys_from_store"] = False
    if keys is None and getattr(store, "has_keys", False) and vectors.shape == (n, dim):
        used["keys_from_store"] = True  # the caller takes the store's own key list
        notes.append("the original has no keys: the store's keys are used (rows in the same "
                     "order)")
    if vectors.shape != (n, dim):
        hint = "expected the file the store was compressed from"
        dups = recorded_int(attrs, SOURCE_DUPLICATES) or 0
        if keys is None and dups and vectors.shape == (n + dups, dim):
            hint = (f"the store dropped {dups:,} duplicate keys of its source, and this "
                    "original has no keys to find them by; give its keys file as the keys option")
        raise ValueError(
            f"the original has shape {vectors.shape} but the store has {(n, dim)}"
            + (f" (after: {'; '.join(notes)})" if notes else "") + f"; {hint}"
        )
    flag = attrs.get(NORMALIZED)
    used["normalized"] = isinstance(flag, (bool, np.bool_)) and bool(flag)
    if used["normalized"]:
        # The same arithmetic as compress: the error is measured against the rows that were
        # quantized, bit for bit.
        from embq._compress import l2_normalize_rows

        vectors = l2_normalize_rows(vectors)
        notes.append(f"rows L2-normalized, as the store's were ({NORMALIZED}=True)")
    return _Original(keys, vectors, label, used, notes)


def _reconstruction(store: AnyStore, vectors: np.ndarray, block: int = 65536) -> dict:
    """Reconstruction error of the store against the original rows, streamed in row blocks."""
    from embq._recon import ReconstructionStats

    acc = ReconstructionStats()
    start = 0
    # A sharded store's arrays are its shards' (global rows follow one another).
    for part in getattr(store, "shards", None) or (store,):
        codes, scales, zps = part.codes, part.scales, part.zero_points
        for s in range(0, codes.shape[0], block):
            e = min(s + block, codes.shape[0])
            acc.update(vectors[start + s:start + e], np.asarray(codes[s:e]),
                       np.asarray(scales[s:e]), np.asarray(zps[s:e]))
        start += codes.shape[0]
    res = acc.result()
    return {
        name: float(res[name])
        for name in (
            "error_mean_abs_over_scale",
            "error_max_abs_over_scale",
            "error_mean_rel_l2",
            "error_mean_cosine",
        )
    }


def _recall(
    store: AnyStore, original: _FloatVectors, sample: int, k: int, rescore: int | None,
    seed: int, n_threads: int | None,
) -> dict:
    """recall@k of the store's search, with and without rescore, against exact float search
    on ``sample`` original rows chosen at random as queries."""
    n = original.n
    m = min(int(sample), n)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
    # Zero rows have no direction; they cannot be cosine queries.
    rows = rows[original.norms[rows] > 0]
    out: dict[str, Any] = {"k": k, "queries": int(rows.size), "rescore": rescore}
    if rows.size == 0:
        out.update(recall=None, recall_rescore=None)
        return out
    queries = original.vectors[rows]
    truth = original.top_k(original.unit_rows(rows), k, None)

    def recall_of(found: np.ndarray) -> float:
        kk = truth.shape[1]
        hits = sum(
            len(np.intersect1d(t, f[:kk], assume_unique=True)) for t, f in zip(truth, found)
        )
        return hits / (kk * truth.shape[0])

    t0 = time.perf_counter()
    _, found = store.search(queries, k, n_threads=n_threads)
    t1 = time.perf_counter()
    out["recall"] = recall_of(np.asarray(found).reshape(rows.size, -1))
    out["search_seconds"] = t1 - t0
    if rescore:
        t0 = time.perf_counter()
        _, found_r = store.search(queries, k, rescore=rescore, n_threads=n_threads)
        out["search_rescore_seconds"] = time.perf_counter() - t0
        out["recall_rescore"] = recall_of(np.asarray(found_r).reshape(rows.size, -1))
    else:
        out["recall_rescore"] = None
    return out


def _diff(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)) or (
        isinstance(b, float) and math.isnan(b)
    ):
        return None
    return a - b


def compare_with_original(
    store: AnyStore,
    original: PathLike | Vectors,
    *,
    pairs: Sequence[str | os.PathLike] | str | os.PathLike = (),
    analogies: str | os.PathLike | None = None,
    sample: int = 1000,
    rescore: int | None = 4,
    k: int = 10,
    restrict_vocab: int | None = 300000,
    case_insensitive: bool = True,
    seed: int = 0,
    n_threads: int | None = None,
    format: str | None = None,  # compress's option name
    keys: str | os.PathLike | None = None,
    limit: int | None = None,
    encoding: str | None = None,
    unicode_errors: str | None = None,
    tensor: str | None = None,
    array: str | None = None,
    vector_column: str | None = None,
    key_column: str | None = None,
) -> dict:
    """What compression lost: the store side by side with the float vectors it came from.

    The original is lined up with the store the way ``embq compress`` made it: only its first
    ``limit`` rows, later duplicates of a key dropped (the first occurrence kept), and rows
    L2-normalized when the store was written with ``normalize`` (its ``normalized``
    attribute). ``result["original_notes"]`` says what was done.

    Parameters
    ----------
    store : embq.Store
        The compressed store.
    original : str, os.PathLike, gensim KeyedVectors or (keys, vectors)
        The original vectors: any file ``embq compress`` reads, or the vectors themselves.
        After the adjustments above it must have the store's shape and, when both have keys,
        the same keys in the same order. Without keys (``.npy`` without a keys file,
        ``(None, vectors)``) and with the store's shape, it takes the store's keys.
    pairs : path or sequence of paths, optional
        Word-similarity files; Spearman/Pearson on both sides and their differences.
    analogies : path, optional
        Analogy file; accuracy per section and overall on both sides.
    sample : int, default 1000
        Number of rows (chosen at random with ``seed``) used as queries for recall@k; 0 skips it.
    rescore : int or None, default 4
        Also measure recall with ``store.search(..., rescore=rescore)``; None skips that.
    k : int, default 10
        The k of recall@k; must be below the store's row count when recall is measured.
    restrict_vocab, case_insensitive
        As in :func:`embq._evaluate.evaluate_word_pairs`.
    seed : int, default 0
        Seed of the query sample.
    n_threads : int, optional
        Threads for the store search.
    format, keys, limit, encoding, unicode_errors, tensor, array, vector_column, key_column
        How to read an ``original`` file: compress's reader options, same names and meaning
        (:data:`embq._source.READER_OPTIONS`). Not given (None), they come from what the
        store records about its source: ``limit`` from ``source_limit``; and when
        ``original`` is the store's source file (``source_path``), ``format``, ``keys``,
        ``encoding`` and ``unicode_errors`` from ``source_format``, ``source_keys_path``,
        ``source_encoding`` and ``source_unicode_errors``, the tensor, array and columns
        from ``source_tensor``, ``source_array``, ``source_vector_column`` and
        ``source_key_column``; otherwise the format is detected, keys are none, UTF-8,
        strict, and the parts read are the readers' defaults. ``limit`` also applies to
        in-memory originals; the others only to files.

    Returns
    -------
    dict
        ``reconstruction`` (``error_mean_abs_over_scale``, ``error_max_abs_over_scale``,
        ``error_mean_rel_l2``, ``error_mean_cosine``), ``recall`` (``recall``,
        ``recall_rescore`` of the store's top-k among the exact float cosine top-k),
        ``pairs`` (one entry per file with ``store``, ``original`` and ``diff``), and
        ``analogies`` (``store``, ``original``, ``diff``), ``original_options`` (the reader
        options used, ``duplicates_dropped``, ``keys_from_store``, ``normalized``) and
        ``original_notes``, plus sizes and timings. A figure that is undefined (a correlation
        of constant similarities) is NaN, as gensim returns it.

    Raises
    ------
    ValueError
        The original does not line up with the store (shape or keys), ``k`` is not below the
        row count, a reader option does not apply or is out of range, or a pair file has no
        pair with both words known.
    FormatError
        A malformed original, pair or analogy file (names file and line).
    """
    if original is None:
        raise TypeError("original must be a path, a gensim KeyedVectors or a (keys, vectors) "
                        "tuple, got None")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if sample < 0:
        raise ValueError(f"sample must be >= 0, got {sample}")
    reader_options = {"format": format, "keys": keys, "limit": limit, "encoding": encoding,
                      "unicode_errors": unicode_errors, "tensor": tensor, "array": array,
                      "vector_column": vector_column, "key_column": key_column}
    check_reader_options(reader_options, original)
    # Parse every test file before the (possibly slow) loading of the original, so a typo
    # in a pair file fails at once.
    tests = parse_test_files(pairs, analogies)

    sb = _as_backend(store, n_threads=n_threads)
    if sample and k >= sb.n:
        raise ValueError(
            f"k={k} is not below the store's {sb.n:,} rows: recall@{k} would count every "
            f"row as a true neighbour; expected k < {sb.n:,} (or sample=0 to skip recall)"
        )
    result: dict[str, Any] = {
        "store": os.fspath(getattr(store, "path", "") or "") or None,
        "rows": sb.n,
        "dim": sb.dim,
    }
    t0 = time.perf_counter()
    orig = _load_original(store, (sb.n, sb.dim), original, reader_options)
    okeys = orig.keys
    result["original"] = orig.label
    result["original_options"] = orig.options
    result["original_notes"] = orig.notes
    result["load_seconds"] = time.perf_counter() - t0
    if orig.options["keys_from_store"]:
        okeys = sb.keys(sb.n)
    elif okeys is not None and sb.kind == "store" and getattr(store, "has_keys", False):
        skeys = sb.keys(sb.n)
        if skeys != okeys:
            first = next(i for i, (x, y) in enumerate(zip(skeys, okeys)) if x != y)
            raise ValueError(
                f"key {first} differs: store has {skeys[first]!r}, original has "
                f"{okeys[first]!r}; expected the file the store was compressed from"
            )
    ob = _FloatVectors(okeys, orig.vectors)
    t0 = time.perf_counter()
    result["reconstruction"] = _reconstruction(store, orig.vectors)
    result["reconstruction_seconds"] = time.perf_counter() - t0
    if sample:
        result["recall"] = _recall(store, ob, sample, k, rescore, seed, n_threads)

    store_pairs, store_analogies = figures_of(sb, tests, restrict_vocab, case_insensitive)
    orig_pairs, orig_analogies = figures_of(ob, tests, restrict_vocab, case_insensitive)
    result["pairs"] = [
        {"file": path, "store": s, "original": o,
         "diff": {m: _diff(s[m], o[m]) for m in ("spearman", "pearson")}}
        for (path, _), s, o in zip(tests.pairs, store_pairs, orig_pairs)
    ]
    if tests.analogies is None:
        result["analogies"] = None
    else:
        # The same questions are answered on both sides (same keys): the sections line up.
        for s_sec, o_sec in zip(store_analogies["sections"], orig_analogies["sections"]):
            s_sec["original_accuracy"] = o_sec["accuracy"]
        result["analogies"] = {
            "file": tests.analogies[0], "store": store_analogies, "original": orig_analogies,
            "diff": {"accuracy": store_analogies["accuracy"] - orig_analogies["accuracy"]},
        }
    return result
