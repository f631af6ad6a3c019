"""Word-pair correlations and analogy accuracy of a store or of float vectors, as gensim
measures them (the comparison of a store with its original floats is :mod:`embq._compare`).

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
  :mod:`embq._search`) and plain float vectors (numpy), which is how :mod:`embq._compare`
  measures a store against the file it was made from.

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
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from embq._errors import FormatError
from embq._input import read_all

if TYPE_CHECKING:
    from embq._typing import AnyStore, Vectors

__all__ = [
    "evaluate_store",
    "evaluate_word_analogies",
    "evaluate_word_pairs",
    "read_analogies",
    "read_word_pairs",
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


class _StoreVectors:
    """An embq store: dequantized rows for the query words, int8 search for the neighbours."""

    kind = "store"

    def __init__(self, store: AnyStore, rescore: int | None = None, n_threads: int | None = None):
        self.store = store
        self.n, self.dim = int(store.shape[0]), int(store.shape[1])
        self.rescore = rescore
        self.n_threads = n_threads
        # A sharded store has its norms per shard (store.shards[i].norms), in row order.
        shards = getattr(store, "shards", None)
        self._norms = np.asarray(store.norms if shards is None
                                 else np.concatenate([sh.norms for sh in shards]), np.float32)

    def keys(self, limit: int) -> list[str]:
        if not self.store.has_keys:
            raise ValueError(
                f"store {self.store.path} has no keys; word evaluations need a keyed store"
            )
        keys = self.store.index_to_key
        return list(keys) if limit >= self.n else keys[:limit]

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
        if queries.shape[0] == 0:
            return np.empty((0, min(k, self.n)), np.int64)
        n_threads = self.n_threads
        rows = self.n if not restrict else min(restrict, self.n)
        if n_threads is None and queries.shape[0] * rows * self.dim < _SMALL_SEARCH_MACS:
            # A few million multiply-adds take about a millisecond on one core; waking an
            # OpenMP team costs more than that when the cores are busy with other work.
            n_threads = 1
        _, idx = self.store.search(
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
    if hasattr(obj, "shards") or (hasattr(obj, "codes") and hasattr(obj, "scales")
                                  and hasattr(obj, "norms")):  # a sharded or single store
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
        "n_pairs": len(gold),
        "n_used": int(used_gold.size),
        "n_oov": n_oov,
    }


def evaluate_word_pairs(
    store: Vectors,
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
    store: Vectors,
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
# The report of ``embq evaluate``
# --------------------------------------------------------------------------------------------


class ParsedTests(NamedTuple):
    """Pair and analogy files, parsed."""

    pairs: list[tuple[str, tuple]]  # (path, what read_word_pairs returns), in order
    analogies: tuple[str, _Questions] | None  # (path, parsed questions)


def parse_test_files(
    pairs: Sequence[str | os.PathLike] | str | os.PathLike = (),
    analogies: str | os.PathLike | None = None,
) -> ParsedTests:
    """Read every pair and analogy file, so that a typo in one fails before any slow work."""
    if isinstance(pairs, (str, os.PathLike)):
        pairs = [pairs]
    parsed_pairs = [(os.fspath(p), read_word_pairs(p)) for p in pairs]
    parsed_analogies = (
        (os.fspath(analogies), _parse_analogies(analogies, "utf8"))
        if analogies is not None else None
    )
    return ParsedTests(parsed_pairs, parsed_analogies)


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


def figures_of(
    backend: Any, tests: ParsedTests, restrict_vocab: int | None, case_insensitive: bool
) -> tuple[list[dict], dict | None]:
    """The figures of one set of vectors on parsed test files, with the seconds each took.

    Returns one summary per pair file (Spearman, Pearson, p-values, pair counts), in order,
    and the analogy summary (accuracy overall and per section), or None without an analogy
    file. The vocabulary is built once for both kinds of test.
    """
    if not tests.pairs and tests.analogies is None:
        return [], None
    vocab = _vocabulary(backend, restrict_vocab, case_insensitive)
    pair_figures = []
    for path, parsed in tests.pairs:
        t0 = time.perf_counter()
        # A file without a known pair raises ValueError, as gensim's evaluate_word_pairs
        # does: there is nothing to report for it.
        res = _evaluate_pairs(
            backend, parsed, path, restrict_vocab, case_insensitive, False, vocab=vocab[0]
        )
        summary = _pair_summary(res)
        summary["seconds"] = time.perf_counter() - t0
        pair_figures.append(summary)
    analogy_figures = None
    if tests.analogies is not None:
        t0 = time.perf_counter()
        res = _evaluate_analogies(
            backend, tests.analogies[1], restrict_vocab, case_insensitive, False,
            vocab_canon=vocab,
        )
        analogy_figures = _analogy_summary(res)
        analogy_figures["seconds"] = time.perf_counter() - t0
    return pair_figures, analogy_figures


def evaluate_store(
    store: AnyStore,
    *,
    pairs: Sequence[str | os.PathLike] | str | os.PathLike = (),
    analogies: str | os.PathLike | None = None,
    restrict_vocab: int | None = 300000,
    case_insensitive: bool = True,
    rescore: int | None = None,
    n_threads: int | None = None,
) -> dict:
    """What ``embq evaluate STORE`` reports without ``--against``, as a dict.

    Parameters
    ----------
    store : embq.Store, gensim KeyedVectors or (keys, vectors)
        The vectors to evaluate.
    pairs : path or sequence of paths, optional
        Word-similarity files (see :func:`evaluate_word_pairs`).
    analogies : path, optional
        Analogy file (see :func:`evaluate_word_analogies`).
    restrict_vocab, case_insensitive
        As in :func:`evaluate_word_pairs`.
    rescore, n_threads
        As in :func:`evaluate_word_analogies`.

    Returns
    -------
    dict
        ``store`` (its path), ``rows``, ``dim``; ``pairs``: one ``{"file", "store"}`` entry
        per pair file, ``"store"`` holding ``spearman``, ``pearson``, their p-values,
        ``pairs``, ``used``, ``oov``, ``oov_ratio`` and ``seconds``; ``analogies``: None, or
        ``{"file", "store"}`` with ``accuracy``, ``correct``, ``answered``, ``questions``,
        ``oov``, ``sections`` and ``seconds``. A correlation that is undefined (constant
        similarities) is NaN, as gensim returns it.

    Raises
    ------
    FormatError
        A malformed pair or analogy file (names file and line).
    ValueError
        A pair file without any pair whose two words are known.
    """
    tests = parse_test_files(pairs, analogies)
    backend = _as_backend(store, rescore=rescore, n_threads=n_threads)
    pair_figures, analogy_figures = figures_of(backend, tests, restrict_vocab,
                                                 case_insensitive)
    return {
        "store": os.fspath(getattr(store, "path", "") or "") or None,
        "rows": backend.n,
        "dim": backend.dim,
        "pairs": [{"file": path, "store": fig}
                  for (path, _), fig in zip(tests.pairs, pair_figures)],
        "analogies": (None if analogy_figures is None
                      else {"file": tests.analogies[0], "store": analogy_figures}),
    }
