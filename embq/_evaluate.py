"""Measure what compression costs: word-pair correlations, analogies, and a comparison with the
original float vectors.

The word-pair and analogy evaluations follow gensim's ``KeyedVectors.evaluate_word_pairs`` and
``evaluate_word_analogies`` rule for rule (same defaults, same case folding, same treatment of
unknown words, same return shapes), so a store can be dropped into code written for gensim. They
differ in three ways:

* malformed input files are errors naming file and line (gensim logs and skips such lines); blank
  lines and ``#`` comments are still skipped, and words are stripped of surrounding whitespace.
  gensim skips ``#`` lines in pair files only; in an analogy file it raises "Missing section
  header" for one before the first section and otherwise counts it as a question when it has
  four words (``# a b c``), where embq skips every line starting with ``#`` in both kinds of
  file;
* test files compressed with gzip, bz2 or xz are read, as gensim reads them through
  smart_open (embq recognises them by content, gensim by the file extension), through the same
  layer as embedding files (:mod:`embq._input`): damaged or cut compressed data, and data
  after the end of the compressed stream, are refused alike;
* all analogy questions are answered together with batched nearest-neighbour searches instead of
  one ``most_similar`` call per question;
* the same code runs on two kinds of vectors: an embq store (int8 search through
  :mod:`embq._search`) and plain float vectors (numpy), which is how a store is compared with the
  file it was made from.

The vector side is abstracted as a small "backend": unit-normalized rows by index, the keys of the
first rows, and a batched top-k cosine search restricted to the first rows.
"""

from __future__ import annotations

import codecs
import itertools
import math
import os
import time
import weakref
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from embq._errors import FormatError
from embq._input import read_all

__all__ = [
    "evaluate_word_pairs",
    "evaluate_word_analogies",
    "compare_with_original",
    "read_word_pairs",
    "read_analogies",
]

# gensim's most_similar(topn=5) fetches topn + len(query keys) candidates and drops the query
# keys from them; an analogy has three query keys.
_ANALOGY_TOPN = 5
_ANALOGY_K = _ANALOGY_TOPN + 3

# Below this many multiply-adds a batched search runs on one thread (see _StoreVectors.top_k).
_SMALL_SEARCH_MACS = 32_000_000


# --------------------------------------------------------------------------------------------
# File parsers
# --------------------------------------------------------------------------------------------


def _decode(raw: bytes, encoding: str, fspath: str) -> str:
    """Decode a whole file, turning a decoding failure into a FormatError with the line."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise FormatError(
            f"cannot decode byte {raw[exc.start:exc.start + 1]!r} as {encoding} ({exc.reason}); "
            "expected text in that encoding (see the encoding= option)",
            path=fspath,
            line=line,
            offset=exc.start,
        ) from None


# Pair and analogy files are a few MB at most (questions-words.txt: 600 KB); more is refused
# before it fills the memory (a compression bomb, or the wrong file).
_MAX_TEST_FILE_BYTES = 256 << 20


def _read_bytes(path: str | os.PathLike, what: str) -> tuple[str, bytes]:
    """``(name for messages, content)`` of a whole test file, decompressed when it is gzip,
    bz2 or xz; read through :mod:`embq._input` like every input file (damaged, cut or
    trailing compressed data is refused)."""
    return read_all(path, what, _MAX_TEST_FILE_BYTES)


def _read_text(path: str | os.PathLike, encoding: str, what: str) -> tuple[str, str]:
    """Read a whole text file, decompressing it if needed (see :func:`_decode` for decoding
    errors)."""
    fspath, raw = _read_bytes(path, what)
    return fspath, _decode(raw, encoding, fspath)


def _object_array(items: list) -> np.ndarray:
    """A 1-D object array of ``items`` (fancy indexing then gathers them without a Python loop)."""
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def read_word_pairs(
    path: str | os.PathLike, delimiter: str = "\t", encoding: str = "utf8"
) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Read a word-similarity file (``word1<TAB>word2<TAB>score`` lines, ``#`` comments).

    Parameters
    ----------
    path : str or os.PathLike
        The file, e.g. WordSim-353 or SimLex-999 in gensim's test data; it may be gzip, bz2 or
        xz compressed.
    delimiter : str, default "\\t"
        Field separator.
    encoding : str, default "utf8"
        Text encoding of the file.

    Returns
    -------
    words1, words2 : list of str
        The two words of each pair, stripped of surrounding whitespace (case unchanged).
    scores : numpy.ndarray
        float64 human scores.
    lines : numpy.ndarray
        int64 1-based line number of each pair.

    Raises
    ------
    FormatError
        A line that is not three fields, an empty word, a score that is not a finite number, or a
        file without any pair; the message names the file and line.
    """
    if not delimiter:
        raise ValueError("delimiter must be a non-empty string")
    fspath, text = _read_text(path, encoding, "a word-pair file")
    words1: list[str] = []
    words2: list[str] = []
    scores: list[float] = []
    lines: list[int] = []
    for line_no, line in enumerate(text.split("\n"), 1):
        if line.startswith("#") or not line.strip():
            continue
        fields = line.split(delimiter)
        if len(fields) != 3:
            raise FormatError(
                f"expected 3 fields (word1, word2, score) separated by {delimiter!r}, "
                f"got {len(fields)}: {line.strip()!r}",
                path=fspath,
                line=line_no,
            )
        a, b, raw_score = (f.strip() for f in fields)
        if not a or not b:
            raise FormatError(
                f"empty word in pair {line.strip()!r}; expected two non-empty words",
                path=fspath,
                line=line_no,
            )
        try:
            score = float(raw_score)
        except ValueError:
            score = math.nan
            bad = True
        else:
            bad = not math.isfinite(score)
        if bad:
            raise FormatError(
                f"score {raw_score!r} is not a finite number; expected e.g. '6.77'",
                path=fspath,
                line=line_no,
            )
        words1.append(a)
        words2.append(b)
        scores.append(score)
        lines.append(line_no)
    if not scores:
        raise FormatError(
            "no word pairs found (the file is empty or only comments); expected lines "
            f"'word1{delimiter}word2{delimiter}score'".replace("\t", "\\t"),
            path=fspath,
        )
    return words1, words2, np.asarray(scores, np.float64), np.asarray(lines, np.int64)


# Python's str.split() separators outside ASCII. The tokenizer kernel splits at the ASCII ones
# only, so a UTF-8 file holding any of these is parsed by the line-by-line Python code instead.
_NON_ASCII_SPACE = (
    "\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


class _Questions(NamedTuple):
    """A parsed analogy file: questions as ids into the file's distinct words.

    The ~20,000 questions of ``questions-words.txt`` use fewer than a thousand distinct words,
    so words are looked up (and case-folded) once each and questions are handled as an integer
    array.
    """

    names: list[str]  # section names
    lines: list[int]  # 1-based line of each section header
    counts: np.ndarray  # int64 (sections,): questions per section, in file order
    words: list[str]  # distinct words, case as in the file, in order of first appearance
    ids: np.ndarray  # int32 (questions, 4): a, b, c, expected as indices into ``words``


def _bad_count_error(line: str, n_words: int, fspath: str, line_no: int) -> FormatError:
    return FormatError(
        f"expected 4 words (a b c expected) or a ': section' line, got {n_words} "
        f"word{'s' if n_words != 1 else ''}: {line.strip()!r}",
        path=fspath,
        line=line_no,
    )


def _before_section_error(fspath: str, line_no: int) -> FormatError:
    return FormatError(
        "question before the first section line; expected a ': section name' line first",
        path=fspath,
        line=line_no,
    )


def _no_questions_error(fspath: str) -> FormatError:
    return FormatError(
        "no analogy questions found (the file is empty or has only section lines and "
        "comments); "
        "expected ': section' lines followed by 'a b c expected' lines",
        path=fspath,
    )


def _section_name(header: str) -> str:
    # gensim's rule: the name is the header without the leading ': ' characters.
    return header.lstrip(": ").strip()


def _parse_questions_text(text: str, fspath: str) -> _Questions:
    """Line-by-line parser: any encoding, any whitespace ``str.split()`` knows."""
    names: list[str] = []
    lines: list[int] = []
    counts: list[int] = []
    intern: dict[str, int] = {}
    ids: list[int] = []
    for line_no, line in enumerate(text.split("\n"), 1):
        if line.startswith(": "):
            names.append(_section_name(line))
            lines.append(line_no)
            counts.append(0)
            continue
        if line.startswith("#"):
            continue
        parts = line.split()
        if not parts:
            continue
        if not names:
            raise _before_section_error(fspath, line_no)
        if len(parts) != 4:
            raise _bad_count_error(line, len(parts), fspath, line_no)
        ids.extend(intern.setdefault(w, len(intern)) for w in parts)
        counts[-1] += 1
    if not ids:
        raise _no_questions_error(fspath)
    return _Questions(
        names, lines, np.asarray(counts, np.int64), list(intern),
        np.asarray(ids, np.int32).reshape(-1, 4),
    )


def _parse_questions_bytes(raw: bytes, fspath: str) -> _Questions:
    """One pass of the tokenizer kernel over UTF-8 bytes (see :mod:`embq._kernels_eval`)."""
    from embq import _kernels_eval as kern

    res = kern.tokenize_questions(raw)
    if res["status"] != kern.OK:
        line_no = int(res["line"])
        if res["status"] == kern.QUESTION_BEFORE_SECTION:
            raise _before_section_error(fspath, line_no)
        line = raw[res["line_start"] : res["line_end"]].decode("utf-8")
        raise _bad_count_error(line, int(res["n_tokens"]), fspath, line_no)
    ids = res["ids"]
    if ids.shape[0] == 0:
        raise _no_questions_error(fspath)
    n_words = res["n_words"]
    # The distinct words arrive as one newline-terminated blob: two calls decode them all.
    words = res["words"].decode("utf-8").split("\n")[:n_words]
    hs, he = res["header_start"].tolist(), res["header_end"].tolist()
    names = [_section_name(raw[s:e].decode("utf-8")) for s, e in zip(hs, he)]
    first = res["first_question"]
    counts = np.diff(np.append(first, ids.shape[0])).astype(np.int64)
    return _Questions(names, res["header_line"].tolist(), counts, words, ids)


def _parse_analogies(path: str | os.PathLike, encoding: str = "utf8") -> _Questions:
    fspath, raw = _read_bytes(path, "an analogy file")
    if codecs.lookup(encoding).name == "utf-8":
        if raw.isascii():
            return _parse_questions_bytes(raw, fspath)
        text = _decode(raw, encoding, fspath)
        if not any(ch in text for ch in _NON_ASCII_SPACE):
            return _parse_questions_bytes(raw, fspath)
    else:
        text = _decode(raw, encoding, fspath)
    return _parse_questions_text(text, fspath)


def read_analogies(
    path: str | os.PathLike, encoding: str = "utf8"
) -> list[tuple[str, list[str], int]]:
    """Read an analogy file in the ``questions-words.txt`` format.

    Parameters
    ----------
    path : str or os.PathLike
        Lines ``a b c expected`` grouped under ``: section name`` lines.
    encoding : str, default "utf8"
        Text encoding of the file.

    Returns
    -------
    list of (section name, words, first line)
        ``words`` is the flat list of the section's question words, four per question, in file
        order (case unchanged); ``first line`` is the 1-based line of the section's header.

    Raises
    ------
    FormatError
        A question before the first section line, a line that is not 4 words, or a file without
        any question; the message names the file and line.

    Notes
    -----
    Blank lines and lines starting with ``#`` (comments) are skipped anywhere in the file. The
    file may be gzip, bz2 or xz compressed.
    """
    parsed = _parse_analogies(path, encoding)
    words = _object_array(parsed.words)
    out = []
    start = 0
    for name, line, count in zip(parsed.names, parsed.lines, parsed.counts.tolist()):
        out.append((name, words[parsed.ids[start : start + count].ravel()].tolist(), line))
        start += count
    return out


# --------------------------------------------------------------------------------------------
# Vector backends
# --------------------------------------------------------------------------------------------


def _top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest entries of each row of ``scores`` (m, n), best first,
    ties broken by the lower index; returns (m, min(k, n)) int64. ``scores`` has no NaN."""
    m, n = scores.shape
    k = min(k, n)
    if k == 0 or m == 0:
        return np.empty((m, k), np.int64)
    if k < n:
        # argpartition picks arbitrarily among values tied with the k-th largest; keep every
        # larger value and, of the tied ones, those with the lowest indices.
        part = np.argpartition(scores, n - k, axis=1)[:, n - k :]
        pvals = np.take_along_axis(scores, part, axis=1)
        thr = pvals.min(axis=1, keepdims=True)
        n_tied = np.count_nonzero(scores == thr, axis=1)
        bad = np.flatnonzero(n_tied > np.count_nonzero(pvals == thr, axis=1))
        if bad.size:  # rare with real data: only those rows are redone
            sub = scores[bad]
            t = thr[bad]
            tied = sub == t
            need = k - np.count_nonzero(sub > t, axis=1)[:, None]
            mask = (sub > t) | (tied & (np.cumsum(tied, axis=1) <= need))
            part[bad] = np.nonzero(mask)[1].reshape(bad.size, k)
    else:
        part = np.broadcast_to(np.arange(n), scores.shape)
    vals = np.take_along_axis(scores, part, axis=1)
    # Descending score, then ascending index (lexsort's last key is the primary one).
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, axis=1).astype(np.int64, copy=False)


class _FloatVectors:
    """Plain float vectors (the original file, or a gensim KeyedVectors), searched with numpy."""

    kind = "float"

    def __init__(self, keys: Sequence[str] | None, vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-D (n, d), got shape {vectors.shape}")
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.n, self.dim = self.vectors.shape
        if keys is not None and len(keys) != self.n:
            raise ValueError(f"got {len(keys)} keys for {self.n} vectors; expected one per row")
        self._keys = keys
        # float32 norms, as gensim's fill_norms() computes them.
        self.norms = np.linalg.norm(self.vectors, axis=1)

    def keys(self, limit: int) -> list[str]:
        if self._keys is None:
            raise ValueError("these vectors have no keys; word evaluations need keyed vectors")
        return list(self._keys[:limit])

    def raw_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.vectors[np.asarray(rows, np.int64)]

    def unit_rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.vectors[rows] / self.norms[rows, None]

    def top_k(self, queries: np.ndarray, k: int, restrict: int | None) -> np.ndarray:
        """Exact cosine top-k of unit ``queries`` among the first ``restrict`` rows."""
        n = self.n if not restrict else min(restrict, self.n)
        base = self.vectors[:n]
        norms = self.norms[:n]
        queries = np.ascontiguousarray(queries, np.float32)
        out = np.empty((queries.shape[0], min(k, n)), np.int64)
        # Bound the (chunk, n) score block to about 64 MB.
        chunk = max(1, min(queries.shape[0], (16 << 20) // max(n, 1)))
        for s in range(0, queries.shape[0], chunk):
            block = queries[s : s + chunk] @ base.T
            with np.errstate(divide="ignore", invalid="ignore"):
                block /= norms
            # A zero row scores NaN here; rank it last instead of first.
            np.nan_to_num(block, copy=False, nan=-np.inf)
            out[s : s + chunk] = _top_k_rows(block, k)
        return out


# From this many keys on, a store's keys are read in bulk (see _read_keys_bulk); below it the
# cost of opening the file with h5py is more than iterating index_to_key saves.
_BULK_KEYS = 10_000


def _read_keys_bulk(path: str, limit: int) -> list[str] | None:
    """The first ``limit`` keys of a store, decoded in one go from its ``keys/utf8`` blob and
    ``keys/offsets`` (docs/format.md): the blob is copied once with a newline after each key,
    then decoded and split by two C-level calls, about 3x faster than decoding key by key.

    Returns None when that trick does not apply (a key containing a newline), so the caller
    falls back to iterating ``index_to_key``. Offsets that are not a non-decreasing run inside
    the blob are a corrupt store (StoreError).
    """
    import h5py

    from embq._errors import StoreError

    with h5py.File(path, "r") as f:
        offsets = np.asarray(f["keys/offsets"][: limit + 1], np.int64)
        utf8 = f["keys/utf8"]
        size = utf8.shape[0]
        if offsets.shape != (limit + 1,) or offsets[0] != 0 or offsets[-1] > size or (
            np.any(offsets[1:] < offsets[:-1])
        ):
            raise StoreError(
                f"key offsets of the first {limit} keys are not a non-decreasing run from 0 "
                f"within the {size} bytes of 'keys/utf8'",
                path=path,
            )
        blob = utf8[: int(offsets[-1])]
    if np.any(blob == 10):
        return None
    text = np.insert(blob, offsets[1:-1], 10).tobytes().decode("utf-8")
    return text.split("\n") if limit else []


class _StoreVectors:
    """An embq store: dequantized rows for the query words, int8 search for the neighbours."""

    kind = "store"

    def __init__(self, store: Any, rescore: int | None = None, n_threads: int | None = None):
        self.store = store
        self.n, self.dim = int(store.shape[0]), int(store.shape[1])
        self.rescore = rescore
        self.n_threads = n_threads
        self._norms = np.asarray(store.norms, np.float32)

    def keys(self, limit: int) -> list[str]:
        if not self.store.has_keys:
            raise ValueError(
                f"store {self.store.path} has no keys; word evaluations need a keyed store"
            )
        limit = min(limit, self.n)
        if limit >= _BULK_KEYS:
            keys = _read_keys_bulk(self.store.path, limit)
            if keys is not None:
                return keys
        # Iterating decodes the key blob in large chunks, much faster than slicing key by key.
        return list(itertools.islice(iter(self.store.index_to_key), limit))

    def raw_rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        if rows.size == 0:
            return np.empty((0, self.dim), np.float32)
        return np.asarray(self.store[rows.tolist()], np.float32)

    def unit_rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        if rows.size == 0:
            return np.empty((0, self.dim), np.float32)
        uniq, inverse = np.unique(rows, return_inverse=True)
        vec = np.asarray(self.store[uniq.tolist()], np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            vec = vec / self._norms[uniq, None]
        return vec[inverse]

    def top_k(self, queries: np.ndarray, k: int, restrict: int | None) -> np.ndarray:
        from embq._search import search_store

        if queries.shape[0] == 0:
            return np.empty((0, min(k, self.n)), np.int64)
        n_threads = self.n_threads
        rows = self.n if not restrict else min(restrict, self.n)
        if n_threads is None and queries.shape[0] * rows * self.dim < _SMALL_SEARCH_MACS:
            # A few million multiply-adds take about a millisecond on one core; waking an
            # OpenMP team costs more than that when the cores are busy with other work.
            n_threads = 1
        _, idx = search_store(
            self.store,
            np.ascontiguousarray(queries, np.float32),
            k,
            metric="cosine",
            rescore=self.rescore,
            restrict=restrict or None,
            n_threads=n_threads,
        )
        return np.asarray(idx, np.int64).reshape(queries.shape[0], -1)


def _as_backend(obj: Any, rescore: int | None = None, n_threads: int | None = None):
    """Wrap a store, a gensim KeyedVectors, a (keys, vectors) pair or a backend."""
    if isinstance(obj, (_FloatVectors, _StoreVectors)):
        return obj
    if hasattr(obj, "codes") and hasattr(obj, "scales") and hasattr(obj, "norms"):
        return _StoreVectors(obj, rescore=rescore, n_threads=n_threads)
    if hasattr(obj, "index_to_key") and hasattr(obj, "vectors"):  # gensim KeyedVectors
        return _FloatVectors(list(obj.index_to_key), obj.vectors)
    if isinstance(obj, tuple) and len(obj) == 2:
        keys, vectors = obj
        return _FloatVectors(None if keys is None else list(keys), vectors)
    raise TypeError(
        "expected an embq Store, a gensim KeyedVectors or a (keys, vectors) tuple, "
        f"got {type(obj).__name__}"
    )


# Folded vocabularies of open stores, built once per store (a store is read-only, so its keys
# never change); weak keys, so closing and dropping a store frees its entry. One entry per store:
# the restrict_vocab / case_insensitive of the latest call.
_STORE_VOCABULARIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _vocabulary(backend, restrict_vocab: int | None, case_insensitive: bool):
    """gensim's ``ok_vocab``: word -> row over the first ``restrict_vocab`` rows.

    With case folding, each upper-cased form maps to its first (most frequent) row. Also
    returns the folded keys (None without folding), from which :func:`_canonical_rows` maps a
    row to the row of its folded form, so "is this candidate one of the question words"
    becomes an integer comparison. For a store the result is cached (callers must not modify
    it); float vectors can change between calls and are read each time.
    """
    # gensim takes index_to_key[:restrict_vocab]: None means every key and, as in any Python
    # slice, a negative value leaves out that many keys at the end.
    limit = len(range(backend.n)[:restrict_vocab])
    store = backend.store if backend.kind == "store" else None
    settings = (limit, bool(case_insensitive))
    if store is not None:
        hit = _STORE_VOCABULARIES.get(store)
        if hit is not None and hit[0] == settings:
            return hit[1]
    keys = backend.keys(limit)
    if case_insensitive:
        folded = list(map(str.upper, keys))
        # Later assignments win, so iterate from the end: the first occurrence is kept.
        vocab = dict(zip(reversed(folded), range(limit - 1, -1, -1)))
        result = (vocab, folded, limit)
    else:
        result = (dict(zip(keys, range(limit))), None, limit)
    if store is not None:
        try:
            _STORE_VOCABULARIES[store] = (settings, result)
        except TypeError:  # a store-like object that cannot be weakly referenced: no cache
            pass
    return result


def _canonical_rows(rows: np.ndarray, vocab: dict, folded: list[str] | None) -> np.ndarray:
    """For each row (negative = none), the first row with the same folded key."""
    if folded is None:
        return rows.copy()
    uniq, inverse = np.unique(rows, return_inverse=True)
    canon = np.array([vocab[folded[i]] if i >= 0 else -1 for i in uniq.tolist()], np.int64)
    return canon[inverse].reshape(rows.shape)


# --------------------------------------------------------------------------------------------
# Word pairs
# --------------------------------------------------------------------------------------------


def _pair_similarities(backend, rows1: np.ndarray, rows2: np.ndarray) -> np.ndarray:
    """Cosine similarity of each pair of rows, computed as gensim's ``similarity`` does
    (float64 BLAS nrm2 per row, scaled in float64, rounded to float32, float32 dot), so
    float results match gensim's to the bit."""
    from scipy.linalg import blas

    uniq, inverse = np.unique(np.concatenate([rows1, rows2]), return_inverse=True)
    raw = np.asarray(backend.raw_rows(uniq), np.float64)
    nrm2 = blas.get_blas_funcs("nrm2", (raw,))
    lengths = np.array([nrm2(vec) for vec in raw], np.float64) if raw.size else np.zeros(len(raw))
    with np.errstate(divide="ignore"):
        inv = np.where(lengths > 0, 1.0 / lengths, 1.0)
    units = (raw * inv[:, None]).astype(np.float32)
    u1 = units[inverse[: len(rows1)]]
    u2 = units[inverse[len(rows1) :]]
    return np.fromiter(map(np.dot, u1, u2), np.float64, count=len(rows1))


def _evaluate_pairs(
    backend,
    parsed,
    path: str,
    restrict_vocab: int | None,
    case_insensitive: bool,
    dummy4unknown: bool,
    vocab=None,
) -> dict:
    from scipy import stats

    words1, words2, gold, _ = parsed
    if vocab is None:
        vocab = _vocabulary(backend, restrict_vocab, case_insensitive)[0]
    if case_insensitive:
        words1 = [w.upper() for w in words1]
        words2 = [w.upper() for w in words2]
    r1 = np.fromiter((vocab.get(w, -1) for w in words1), np.int64, count=len(words1))
    r2 = np.fromiter((vocab.get(w, -1) for w in words2), np.int64, count=len(words2))
    known = (r1 >= 0) & (r2 >= 0)
    n_oov = int((~known).sum())
    model = np.zeros(len(gold), np.float64)
    model[known] = _pair_similarities(backend, r1[known], r2[known])
    if dummy4unknown:
        used_gold, used_model = gold, model
    else:
        used_gold, used_model = gold[known], model[known]
    if used_gold.size == 0:
        limit = len(range(backend.n)[:restrict_vocab])
        raise ValueError(
            f"No valid similarity judgements found in {path}: each of its {len(gold)} pairs "
            f"has a word outside the {limit:,} keys searched (restrict_vocab={restrict_vocab}); "
            "expected pairs of words the vectors know"
        )
    if used_gold.size < 2:
        raise ValueError(
            f"only {used_gold.size} pair in {path} has both words known; correlations need at "
            "least 2"
        )
    spearman = stats.spearmanr(used_gold, used_model)
    pearson = stats.pearsonr(used_gold, used_model)
    if dummy4unknown:
        oov_ratio = n_oov / used_gold.size * 100
    else:
        oov_ratio = n_oov / (used_gold.size + n_oov) * 100
    return {
        "pearson": pearson,
        "spearman": spearman,
        "oov_ratio": float(oov_ratio),
        "n_pairs": int(len(gold)),
        "n_used": int(used_gold.size),
        "n_oov": n_oov,
    }


def evaluate_word_pairs(
    store: Any,
    pairs: str | os.PathLike,
    delimiter: str = "\t",
    encoding: str = "utf8",
    restrict_vocab: int = 300000,
    case_insensitive: bool = True,
    dummy4unknown: bool = False,
):
    """Correlation of the cosine similarities with human similarity judgements.

    Same meaning, defaults and return shape as gensim's ``KeyedVectors.evaluate_word_pairs``.

    Parameters
    ----------
    store : embq.Store, gensim KeyedVectors or (keys, vectors)
        The vectors to evaluate.
    pairs : str or os.PathLike
        File of ``word1<delimiter>word2<delimiter>score`` lines, ``#`` comments.
    delimiter : str, default "\\t"
        Field separator.
    encoding : str, default "utf8"
        Text encoding of ``pairs``.
    restrict_vocab : int or None, default 300000
        Only the first ``restrict_vocab`` keys count as known words. As in gensim, which
        slices ``index_to_key[:restrict_vocab]``: None means all keys, 0 none, and a negative
        value all but that many keys at the end.
    case_insensitive : bool, default True
        Match words upper-cased; of several keys folding to the same word, the first is used.
    dummy4unknown : bool, default False
        Count pairs with an unknown word with similarity 0 instead of skipping them.

    Returns
    -------
    pearson : scipy PearsonRResult
        ``(statistic, pvalue)``.
    spearman : scipy SignificanceResult
        ``(statistic, pvalue)``.
    oov_ratio : float
        Percentage of pairs with an unknown word.

    Raises
    ------
    FormatError
        Malformed pair file (names file and line).
    ValueError
        No pair has both words known.
    """
    backend = _as_backend(store)
    parsed = read_word_pairs(pairs, delimiter=delimiter, encoding=encoding)
    res = _evaluate_pairs(
        backend, parsed, os.fspath(pairs), restrict_vocab, case_insensitive, dummy4unknown
    )
    return res["pearson"], res["spearman"], res["oov_ratio"]


# --------------------------------------------------------------------------------------------
# Analogies
# --------------------------------------------------------------------------------------------


def _analogy_queries(backend, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """gensim's 3CosAdd query: unit(unit(b) + unit(c) - unit(a)), summed in float32 in that
    order, normalized in float64, returned as float32."""
    # The question words repeat a lot: fetch and normalize each distinct row once.
    uniq, inverse = np.unique(np.concatenate([a, b, c]), return_inverse=True)
    units = backend.unit_rows(uniq)
    m = len(a)
    ua = units[inverse[:m]]
    ub = units[inverse[m : 2 * m]]
    uc = units[inverse[2 * m :]]
    s = (ub + uc) - ua
    s64 = s.astype(np.float64)
    norm = np.sqrt(np.einsum("ij,ij->i", s64, s64))
    norm[norm == 0] = 1.0
    return (s64 / norm[:, None]).astype(np.float32)


def _predict(cand: np.ndarray, cand_canon: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Folded row of gensim's prediction for each question, -1 when there is none.

    ``cand`` (m, 8): nearest rows, best first (-1 = none); ``cand_canon``: their folded rows
    (see :func:`_canonical_rows`); ``q`` (m, 4): folded rows of a, b, c, expected.
    gensim drops the question rows from the 8 candidates, keeps 5, and predicts the first whose
    folded form is not a question word; when all 5 are, the last one stands.
    """
    m = cand.shape[0]
    if cand.shape[1] == 0:
        return np.full(m, -1, np.int64)
    valid = cand >= 0
    c_safe = np.where(valid, cand, 0)
    is_query = (c_safe == q[:, 0:1]) | (c_safe == q[:, 1:2]) | (c_safe == q[:, 2:3])
    keep = valid & ~is_query
    keep &= np.cumsum(keep, axis=1) <= _ANALOGY_TOPN
    folded = cand_canon
    folded_query = (folded == q[:, 0:1]) | (folded == q[:, 1:2]) | (folded == q[:, 2:3])
    good = keep & ~folded_query
    has_good = good.any(axis=1)
    has_any = keep.any(axis=1)
    first_good = good.argmax(axis=1)
    # Position of the last kept candidate: argmax over the reversed row.
    last_kept = keep.shape[1] - 1 - keep[:, ::-1].argmax(axis=1)
    pos = np.where(has_good, first_good, last_kept)
    pred = folded[np.arange(m), pos]
    pred[~has_any] = -1
    return pred


def _evaluate_analogies(
    backend,
    questions: _Questions,
    restrict_vocab: int | None,
    case_insensitive: bool,
    dummy4unknown: bool,
    vocab_canon=None,
) -> dict:
    if vocab_canon is None:
        vocab, folded_keys, limit = _vocabulary(backend, restrict_vocab, case_insensitive)
    else:
        vocab, folded_keys, limit = vocab_canon
    # Each distinct word is folded and looked up once; questions are rows of word ids.
    words = list(map(str.upper, questions.words)) if case_insensitive else questions.words
    word_rows = np.fromiter(
        map(vocab.get, words, itertools.repeat(-1)), np.int64, count=len(words)
    )
    ids = questions.ids
    # A question is known when its 4 words are: gather one byte per word and compare the 4
    # bytes as one uint32 (several times cheaper than gathering rows and reducing them).
    word_ok = (word_rows >= 0).astype(np.uint8)
    known = word_ok[ids].view(np.uint32).ravel() == 0x01010101
    q = word_rows[ids[known]]
    t0 = time.perf_counter()
    pred = np.empty(0, np.int64)
    if q.shape[0]:
        queries = _analogy_queries(backend, q[:, 0], q[:, 1], q[:, 2])
        cand = backend.top_k(queries, _ANALOGY_K, limit if restrict_vocab else None)
        pred = _predict(cand, _canonical_rows(cand, vocab, folded_keys), q)
    search_seconds = time.perf_counter() - t0
    n_questions = ids.shape[0]
    correct = np.zeros(n_questions, bool)
    correct[known] = pred == q[:, 3]

    # gensim's lists hold (a, b, c, expected) tuples of the folded words, per section, correct
    # and incorrect apart, in file order. Order the counted questions by (section, incorrect)
    # with a stable sort and build all tuples in one go; each list is then a slice.
    counts = questions.counts
    n_sec = len(counts)
    section_of = np.repeat(np.arange(n_sec, dtype=np.int64), counts)
    counted = np.flatnonzero(known) if not dummy4unknown else np.arange(n_questions)
    group = 2 * section_of[counted] + ~correct[counted]
    order = counted[np.argsort(group, kind="stable")]
    quads = list(map(tuple, _object_array(words)[ids[order]].tolist()))
    bounds = np.concatenate(([0], np.cumsum(np.bincount(group, minlength=2 * n_sec)))).tolist()
    out_sections = []
    for s, name in enumerate(questions.names):
        out_sections.append({
            "section": name,
            "correct": quads[bounds[2 * s] : bounds[2 * s + 1]],
            "incorrect": quads[bounds[2 * s + 1] : bounds[2 * s + 2]],
        })
    total = {
        "section": "Total accuracy",
        "correct": list(itertools.chain.from_iterable(s["correct"] for s in out_sections)),
        "incorrect": list(itertools.chain.from_iterable(s["incorrect"] for s in out_sections)),
    }
    n_total = len(total["correct"]) + len(total["incorrect"])
    score = len(total["correct"]) / n_total if n_total else 0.0
    out_sections.append(total)
    return {
        "score": score,
        "sections": out_sections,
        "n_questions": int(n_questions),
        "n_oov": int((~known).sum()),
        "search_seconds": search_seconds,
    }


def evaluate_word_analogies(
    store: Any,
    analogies: str | os.PathLike,
    restrict_vocab: int = 300000,
    case_insensitive: bool = True,
    dummy4unknown: bool = False,
    *,
    rescore: int | None = None,
    n_threads: int | None = None,
):
    """Accuracy on an analogy test set (3CosAdd), answered with batched searches.

    Same meaning, defaults and return shape as gensim's ``KeyedVectors.evaluate_word_analogies``:
    for ``a b c expected`` the prediction is the nearest key (among the first
    ``restrict_vocab``) to ``unit(unit(b) + unit(c) - unit(a))`` that is not one of ``a``, ``b``,
    ``c``.

    Parameters
    ----------
    store : embq.Store, gensim KeyedVectors or (keys, vectors)
        The vectors to evaluate.
    analogies : str or os.PathLike
        File in the ``questions-words.txt`` format.
    restrict_vocab : int or None, default 300000
        Questions with a word outside the first ``restrict_vocab`` keys are unknown, and
        predictions are searched among those keys only. Slice semantics, as in gensim: None
        means all keys, 0 none (every question unknown), a negative value all but that many
        keys at the end.
    case_insensitive : bool, default True
        Match words upper-cased (the returned tuples are upper-cased too, as in gensim).
    dummy4unknown : bool, default False
        Count questions with an unknown word as incorrect instead of skipping them.
        (Building gensim's ``(a, b, c, expected)`` tuples for every question is then most
        of the cost on small models.)
    rescore : int, optional
        For a store: re-rank ``8 * rescore`` int8 candidates with float scores (see
        :func:`embq._search.search`).
    n_threads : int, optional
        Threads for the store search (None = all cores).

    Returns
    -------
    score : float
        Overall accuracy (0 when no question was answered).
    sections : list of dict
        One ``{'section': name, 'correct': [...], 'incorrect': [...]}`` per section, lists of
        ``(a, b, c, expected)`` tuples, followed by a ``'Total accuracy'`` section.

    Raises
    ------
    FormatError
        Malformed analogy file (names file and line).

    Notes
    -----
    For a store, the case-folded vocabulary of its first ``restrict_vocab`` keys is built on
    the first call and kept (for the latest settings) while the store object is alive; the
    analogy file is read and parsed on every call.
    """
    backend = _as_backend(store, rescore=rescore, n_threads=n_threads)
    parsed = _parse_analogies(analogies, "utf8")
    res = _evaluate_analogies(backend, parsed, restrict_vocab, case_insensitive, dummy4unknown)
    return res["score"], res["sections"]


# --------------------------------------------------------------------------------------------
# Comparison with the original vectors
# --------------------------------------------------------------------------------------------


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


def _attr_int(attrs: dict, name: str) -> int | None:
    value = attrs.get(name)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        return None
    return int(value)


def _same_file(a: str, b: Any) -> bool:
    if not isinstance(b, str) or not b:
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _load_original(store: Any, shape: tuple[int, int], original: Any, options: dict) -> _Original:
    """The original vectors, read and adjusted the way ``embq compress`` made the store.

    ``options`` holds the user's reader options (``_READER_OPTIONS``; None = not given). What
    the store's attributes record about its source fills in the ones not given: ``limit`` from
    ``source_limit`` always (the store holds only that many rows of its source), and when
    ``original`` is the store's source file (``source_path``), ``format`` from
    ``source_format`` and ``keys`` from ``source_keys_path``, plus ``encoding`` and
    ``unicode_errors`` when the store records them (``source_encoding``,
    ``source_unicode_errors``). Then, as compress did: later duplicates of a key are dropped
    (the first occurrence wins) and, for a store written with ``normalize``, the rows are
    L2-normalized. A keyless original (``.npy`` without a keys file) of the store's shape
    takes the store's keys, since the rows are in the same order.
    """
    attrs = dict(getattr(store, "attrs", None) or {})
    notes: list[str] = []
    used: dict[str, Any] = {}
    limit = options.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer))
                              or limit < 1):
        raise ValueError(f"limit must be a positive number of rows or None, got {limit!r}")
    if limit is None:
        recorded = _attr_int(attrs, "source_limit")
        if recorded is not None and recorded > 0:
            limit = recorded
            notes.append(f"first {limit:,} rows only (the store's source_limit)")
    used["limit"] = None if limit is None else int(limit)

    if isinstance(original, (str, os.PathLike)):
        from embq._readers import FORMATS, detect_format, load_embeddings

        path = os.fspath(original)
        is_source = _same_file(path, attrs.get("source_path"))
        fmt = options.get("format")
        if fmt is None and is_source and attrs.get("source_format") in FORMATS:
            fmt = attrs["source_format"]
            notes.append(f"read as {fmt} (the store's source_format)")
        keys_path = options.get("keys")
        if keys_path is None and is_source and isinstance(attrs.get("source_keys_path"), str):
            if os.path.exists(attrs["source_keys_path"]):
                keys_path = attrs["source_keys_path"]
                notes.append(f"keys from {keys_path} (the store's source_keys_path)")
            else:
                notes.append(f"the store's source_keys_path {attrs['source_keys_path']} no "
                             "longer exists")
        # Not recorded by compress today; used when a store records them.
        encoding = options.get("encoding")
        if encoding is None and is_source and isinstance(attrs.get("source_encoding"), str):
            encoding = attrs["source_encoding"]
            notes.append(f"keys decoded as {encoding} (the store's source_encoding)")
        unicode_errors = options.get("unicode_errors")
        if (unicode_errors is None and is_source
                and isinstance(attrs.get("source_unicode_errors"), str)):
            unicode_errors = attrs["source_unicode_errors"]
            notes.append(f"undecodable key bytes: {unicode_errors} (the store's "
                         "source_unicode_errors)")
        encoding = "utf8" if encoding is None else encoding
        unicode_errors = "strict" if unicode_errors is None else unicode_errors
        keys, vectors = load_embeddings(
            path, format=fmt, limit=limit, encoding=encoding, unicode_errors=unicode_errors,
            keys_path=keys_path,
        )
        used.update(format=fmt if fmt is not None else detect_format(path),
                    keys=None if keys_path is None else os.fspath(keys_path),
                    encoding=encoding, unicode_errors=unicode_errors)
        label = path
    else:
        given = [name for name in ("format", "keys", "encoding", "unicode_errors")
                 if options.get(name) is not None]
        if given:
            raise ValueError(
                f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} when the "
                f"original is a file; got a {type(original).__name__}"
            )
        if hasattr(original, "index_to_key") and hasattr(original, "vectors"):
            keys, vectors, label = list(original.index_to_key), original.vectors, "KeyedVectors"
        elif isinstance(original, tuple) and len(original) == 2:
            keys, vectors = original
            keys = None if keys is None else list(keys)
            label = "array"
        else:
            raise TypeError(
                "original must be a path, a gensim KeyedVectors or a (keys, vectors) tuple, "
                f"got {type(original).__name__}"
            )
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
        keys = None  # filled in by the caller from the store's own key list
        used["keys_from_store"] = True
        notes.append("the original has no keys: the store's keys are used (rows in the same "
                     "order)")
    if vectors.shape != (n, dim):
        hint = "expected the file the store was compressed from"
        dups = _attr_int(attrs, "source_duplicates") or 0
        if keys is None and dups and vectors.shape == (n + dups, dim):
            hint = (f"the store dropped {dups:,} duplicate keys of its source, and this "
                    "original has no keys to find them by; pass its keys file (--keys)")
        raise ValueError(
            f"the original has shape {vectors.shape} but the store has {(n, dim)}"
            + (f" (after: {'; '.join(notes)})" if notes else "") + f"; {hint}"
        )
    used["normalized"] = bool(attrs.get("normalized", False))
    if used["normalized"]:
        # The same arithmetic as compress: the error is measured against the rows that were
        # quantized, bit for bit.
        from embq._compress import l2_normalize_rows

        vectors = l2_normalize_rows(vectors)
        notes.append("rows L2-normalized, as the store's were (normalized=True)")
    return _Original(keys, vectors, label, used, notes)


def _reconstruction(store: Any, vectors: np.ndarray, block: int = 65536) -> dict:
    """Reconstruction error of the store against the original rows, streamed in row blocks."""
    from embq._recon import ReconstructionStats

    acc = ReconstructionStats()
    codes, scales, zps = store.codes, store.scales, store.zero_points
    for s in range(0, vectors.shape[0], block):
        e = s + block
        acc.update(vectors[s:e], np.asarray(codes[s:e]), np.asarray(scales[s:e]),
                   np.asarray(zps[s:e]))
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
    store: Any, original: _FloatVectors, sample: int, k: int, rescore: int | None,
    seed: int, n_threads: int | None,
) -> dict:
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

    from embq._search import search_store

    t0 = time.perf_counter()
    _, found = search_store(store, queries, k, n_threads=n_threads)
    t1 = time.perf_counter()
    out["recall"] = recall_of(np.asarray(found).reshape(rows.size, -1))
    out["search_seconds"] = t1 - t0
    if rescore:
        t0 = time.perf_counter()
        _, found_r = search_store(store, queries, k, rescore=rescore, n_threads=n_threads)
        out["search_rescore_seconds"] = time.perf_counter() - t0
        out["recall_rescore"] = recall_of(np.asarray(found_r).reshape(rows.size, -1))
    else:
        out["recall_rescore"] = None
    return out


def _pair_summary(res: dict) -> dict:
    return {
        "spearman": float(res["spearman"][0]),
        "spearman_pvalue": float(res["spearman"][1]),
        "pearson": float(res["pearson"][0]),
        "pearson_pvalue": float(res["pearson"][1]),
        "pairs": res["n_pairs"],
        "used": res["n_used"],
        "oov": res["n_oov"],
        "oov_ratio": res["oov_ratio"],
    }


def _analogy_summary(res: dict) -> dict:
    sections = []
    for sec in res["sections"]:
        c, i = len(sec["correct"]), len(sec["incorrect"])
        sections.append({
            "section": sec["section"],
            "correct": c,
            "total": c + i,
            "accuracy": c / (c + i) if c + i else None,
        })
    total = sections[-1]
    return {
        "accuracy": res["score"],
        "correct": total["correct"],
        "answered": total["total"],
        "questions": res["n_questions"],
        "oov": res["n_oov"],
        "sections": sections,
    }


def _diff(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)) or (
        isinstance(b, float) and math.isnan(b)
    ):
        return None
    return a - b


def evaluate_store(
    store: Any,
    *,
    original: Any = None,
    pairs: Sequence[str | os.PathLike] = (),
    analogies: str | os.PathLike | None = None,
    sample: int = 1000,
    rescore: int | None = 4,
    k: int = 10,
    restrict_vocab: int = 300000,
    case_insensitive: bool = True,
    seed: int = 0,
    analogy_rescore: int | None = None,
    n_threads: int | None = None,
    format: str | None = None,  # noqa: A002 - embq compress's option name
    keys: str | os.PathLike | None = None,
    limit: int | None = None,
    encoding: str | None = None,
    unicode_errors: str | None = None,
) -> dict:
    """Everything ``embq evaluate`` reports, as a dict (NaN where a figure is undefined).

    Without ``original`` only the store's pair and analogy figures are computed; with it, see
    :func:`compare_with_original`, which documents the parameters.
    """
    if isinstance(pairs, (str, os.PathLike)):
        pairs = [pairs]
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if sample < 0:
        raise ValueError(f"sample must be >= 0, got {sample}")
    reader_options = {"format": format, "keys": keys, "limit": limit, "encoding": encoding,
                      "unicode_errors": unicode_errors}
    if original is None and any(v is not None for v in reader_options.values()):
        given = [name for name, v in reader_options.items() if v is not None]
        raise ValueError(f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} "
                         "to reading the original; no original was given")
    # Parse every input before the (possibly slow) loading of the original file, so a typo
    # in a pair file fails at once.
    parsed_pairs = [(os.fspath(p), read_word_pairs(p)) for p in pairs]
    parsed_analogies = (
        _parse_analogies(analogies, "utf8")
        if analogies is not None
        else None
    )

    sb = _as_backend(store, rescore=analogy_rescore, n_threads=n_threads)
    result: dict[str, Any] = {
        "store": os.fspath(getattr(store, "path", "")) or None,
        "rows": sb.n,
        "dim": sb.dim,
    }
    ob = None
    if original is not None:
        if sample and k >= sb.n:
            raise ValueError(
                f"k={k} is not below the store's {sb.n:,} rows: recall@{k} would count every "
                f"row as a true neighbour; expected k < {sb.n:,} (or sample=0 to skip recall)"
            )
        t0 = time.perf_counter()
        orig = _load_original(store, (sb.n, sb.dim), original, reader_options)
        okeys, ovectors = orig.keys, orig.vectors
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
        ob = _FloatVectors(okeys, ovectors)
        t0 = time.perf_counter()
        result["reconstruction"] = _reconstruction(store, ovectors)
        result["reconstruction_seconds"] = time.perf_counter() - t0
        if sample:
            result["recall"] = _recall(store, ob, sample, k, rescore, seed, n_threads)

    need_words = bool(parsed_pairs) or parsed_analogies is not None
    svocab = _vocabulary(sb, restrict_vocab, case_insensitive) if need_words else None
    ovocab = (
        _vocabulary(ob, restrict_vocab, case_insensitive) if need_words and ob is not None
        else None
    )
    result["pairs"] = []
    for path, parsed in parsed_pairs:
        entry: dict[str, Any] = {"file": path}
        sides = [("store", sb, svocab)] + ([("original", ob, ovocab)] if ob is not None else [])
        for side, backend, voc in sides:
            t0 = time.perf_counter()
            # A file without a known pair raises ValueError, as gensim's evaluate_word_pairs
            # does: there is nothing to report for it.
            res = _evaluate_pairs(
                backend, parsed, path, restrict_vocab, case_insensitive, False, vocab=voc[0]
            )
            entry[side] = _pair_summary(res)
            entry[side]["seconds"] = time.perf_counter() - t0
        if ob is not None:
            entry["diff"] = {
                m: _diff(entry["store"][m], entry["original"][m]) for m in ("spearman", "pearson")
            }
        result["pairs"].append(entry)
    if parsed_analogies is not None:
        entry = {"file": os.fspath(analogies)}
        sides = [("store", sb, svocab)] + ([("original", ob, ovocab)] if ob is not None else [])
        for side, backend, voc in sides:
            t0 = time.perf_counter()
            res = _evaluate_analogies(
                backend, parsed_analogies, restrict_vocab, case_insensitive, False,
                vocab_canon=voc,
            )
            entry[side] = _analogy_summary(res)
            entry[side]["seconds"] = time.perf_counter() - t0
        if ob is not None:
            entry["diff"] = {"accuracy": entry["store"]["accuracy"] - entry["original"]["accuracy"]}
            # Same questions are answered on both sides (same keys), so the sections line up.
            for s_sec, o_sec in zip(entry["store"]["sections"], entry["original"]["sections"]):
                s_sec["original_accuracy"] = o_sec["accuracy"]
        result["analogies"] = entry
    else:
        result["analogies"] = None
    return result


def compare_with_original(
    store: Any,
    original: Any,
    *,
    pairs: Sequence[str | os.PathLike] = (),
    analogies: str | os.PathLike | None = None,
    sample: int = 1000,
    rescore: int | None = 4,
    k: int = 10,
    restrict_vocab: int = 300000,
    case_insensitive: bool = True,
    seed: int = 0,
    n_threads: int | None = None,
    format: str | None = None,  # noqa: A002 - embq compress's option name
    keys: str | os.PathLike | None = None,
    limit: int | None = None,
    encoding: str | None = None,
    unicode_errors: str | None = None,
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
    pairs : sequence of paths, optional
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
        As in :func:`evaluate_word_pairs`.
    seed : int, default 0
        Seed of the query sample.
    n_threads : int, optional
        Threads for the store search.
    format, keys, limit, encoding, unicode_errors : optional
        How to read an ``original`` file, with the names and meaning of
        :func:`embq._compress.compress`'s options. Not given (None), they come from what the
        store records about its source: ``limit`` from ``source_limit``; and when
        ``original`` is the store's source file (``source_path``), ``format`` from
        ``source_format``, ``keys`` from ``source_keys_path``, ``encoding`` and
        ``unicode_errors`` from ``source_encoding`` and ``source_unicode_errors`` where
        recorded; otherwise the format is detected, keys are none, UTF-8, strict. ``limit``
        also applies to in-memory originals; the others only to files.

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
        row count, or a pair file has no pair with both words known.
    FormatError
        A malformed original, pair or analogy file (names file and line).
    """
    return evaluate_store(
        store,
        original=original,
        pairs=pairs,
        analogies=analogies,
        sample=sample,
        rescore=rescore,
        k=k,
        restrict_vocab=restrict_vocab,
        case_insensitive=case_insensitive,
        seed=seed,
        n_threads=n_threads,
        format=format,
        keys=keys,
        limit=limit,
        encoding=encoding,
        unicode_errors=unicode_errors,
    )
