"""Tests for embq._compare (``compare_with_original``) and embq._source (the ``source_*``
attributes): a store measured against the floats it came from, lined up the way compress made
it. Tests that need gensim (its vectors or files) skip without it; the others use the sample
files in ``data/``.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from evaluation_files import (
    SAMPLE,
    SAMPLE_ANALOGIES,
    SAMPLE_PAIRS,
    compress_quietly,
    gensim_data,
    load_kv,
    save_sample_store,
    write_file,
)

import embq
from embq import _compare as cmp
from embq import _source
from embq._readers import load_embeddings


@pytest.fixture(scope="module")
def sample_original():
    """(keys, vectors) of the sample file, as load_embeddings reads it."""
    keys, vectors = load_embeddings(SAMPLE)
    return keys, vectors


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory):
    store = embq.open(save_sample_store(tmp_path_factory.mktemp("cmp")))
    yield store
    store.close()


def test_compare_with_original(sample_store):
    sample_kv = load_kv(SAMPLE, {})
    res = embq.compare_with_original(
        sample_store, SAMPLE, pairs=[SAMPLE_PAIRS, gensim_data("wordsim353.tsv")],
        analogies=SAMPLE_ANALOGIES, sample=200,
    )
    rec = res["reconstruction"]
    assert 0 < rec["error_mean_abs_over_scale"] <= 0.5
    assert 0.49 <= rec["error_max_abs_over_scale"] <= 0.5 + 1e-3
    assert 0 < rec["error_mean_rel_l2"] < 0.02
    assert 0.999 < rec["error_mean_cosine"] <= 1.0
    r = res["recall"]
    assert r["queries"] == 200 and r["k"] == 10 and r["rescore"] == 4
    assert 0.9 <= r["recall"] <= 1.0 and 0.9 <= r["recall_rescore"] <= 1.0
    p0 = res["pairs"][0]
    assert p0["original"]["spearman"] == pytest.approx(
        sample_kv.evaluate_word_pairs(SAMPLE_PAIRS)[1][0], abs=1e-12)
    assert p0["diff"]["spearman"] == pytest.approx(
        p0["store"]["spearman"] - p0["original"]["spearman"])
    assert abs(p0["diff"]["spearman"]) < 0.01
    a = res["analogies"]
    assert a["original"]["accuracy"] == 1.0 and a["store"]["accuracy"] == 1.0
    assert a["diff"]["accuracy"] == 0.0
    assert [s["section"] for s in a["store"]["sections"]] == [
        "capital-world", "gram-plural", "family", "Total accuracy"]
    json.dumps(res)  # JSON-ready


def test_compare_recall_oracle_on_tiny_store(tmp_path):
    # Well separated rows: the int8 search finds exactly the float neighbours.

    x = np.eye(6, dtype=np.float32) * 3 + 0.01
    path = str(tmp_path / "t.embq")
    embq.save(path, x, [f"w{i}" for i in range(6)])
    with embq.open(path) as store:
        res = cmp.compare_with_original(store, ([f"w{i}" for i in range(6)], x), sample=10, k=1)
    assert res["recall"]["queries"] == 6
    assert res["recall"]["recall"] == 1.0 and res["recall"]["recall_rescore"] == 1.0


def test_compare_rejects_other_original(sample_store, sample_original):
    keys, vectors = sample_original
    with pytest.raises(ValueError, match="has shape"):
        cmp.compare_with_original(sample_store, (keys[:10], vectors[:10]))
    swapped = [keys[1], keys[0]] + keys[2:]
    with pytest.raises(ValueError, match="key 0 differs"):
        cmp.compare_with_original(sample_store, (swapped, vectors))


def _recall_oracle(x, rows, found, k):
    """recall@k of ``found`` (m, >= k) against exact float64 cosine top-k of ``x[rows]``."""
    x = np.asarray(x, np.float64)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    truth = np.argsort(-(u[rows] @ u.T), axis=1, kind="stable")[:, :k]
    hits = sum(len(set(t) & set(f[:k])) for t, f in zip(truth.tolist(), np.asarray(found).tolist()))
    return hits / truth.size


def test_recall_against_float_oracle_with_and_without_rescore(tmp_path):
    """On a 10-d real file recall is clearly below 1 and rescoring changes it: both figures
    must be those of the store's search (with and without rescore) measured against exact
    float search, not against the store's own ranking."""

    kv = load_kv("word2vec_pre_kv_c", {})
    path = str(tmp_path / "w.embq")
    embq.save(path, kv.vectors, list(kv.index_to_key))
    with embq.open(path) as store:
        res = cmp.compare_with_original(store, kv, sample=300, seed=3)["recall"]
        rows = np.sort(np.random.default_rng(3).choice(len(store), size=300, replace=False))
        plain = _recall_oracle(kv.vectors, rows, store.search(kv.vectors[rows], k=10)[1], 10)
        rescored = _recall_oracle(
            kv.vectors, rows, store.search(kv.vectors[rows], k=10, rescore=4)[1], 10)
    assert res["queries"] == 300
    assert plain < 0.95 and rescored - plain > 0.005  # the case tells the two apart
    # One tied neighbour may fall either side between float32 and float64 scores.
    assert res["recall"] == pytest.approx(plain, abs=2 / 3000)
    assert res["recall_rescore"] == pytest.approx(rescored, abs=2 / 3000)


def test_compare_refuses_k_not_below_rows(sample_store, sample_original):
    n = len(sample_store)
    with pytest.raises(ValueError, match=f"k={n} is not below the store's 3,162 rows"):
        cmp.compare_with_original(sample_store, sample_original, k=n)
    # Without recall, k does not matter.
    res = cmp.compare_with_original(sample_store, sample_original, k=n, sample=0)
    assert "recall" not in res


def test_compare_normalized_store_normalizes_the_original(tmp_path):
    from embq._quantize import quantize

    path = str(tmp_path / "n.embq")
    compress_quietly(SAMPLE, path, normalize=True)
    with embq.open(path) as store:
        assert store.attrs["normalized"] is True
        res = cmp.compare_with_original(store, SAMPLE, sample=100)
        rec = res["reconstruction"]
        # The figures compress measured on the rows it quantized.
        for name, value in rec.items():
            assert value == pytest.approx(store.attrs[name], rel=1e-9), name
        assert rec["error_max_abs_over_scale"] <= 0.5 + 1e-6
        assert res["original_options"]["normalized"] is True
        assert any("normalized" in note for note in res["original_notes"])
        # Bit for bit the rows compress quantized: the same scales and codes.
        from embq._compress import l2_normalize_rows

        x = l2_normalize_rows(sample_floats())
        q = quantize(x)
        np.testing.assert_array_equal(q.scales, np.asarray(store.scales))
        np.testing.assert_array_equal(q.codes, np.asarray(store.codes))
        # An in-memory original is normalized too.
        rec_kv = cmp.compare_with_original(store, load_embeddings(SAMPLE),
                                           sample=0)["reconstruction"]
        assert rec_kv["error_max_abs_over_scale"] <= 0.5 + 1e-6


def sample_floats():
    return load_embeddings(SAMPLE)[1]


def test_compare_limit_and_duplicates_line_up_with_the_store(tmp_path):
    """compress --limit 3 on a file whose third row repeats the first key: the store holds
    a, b; the original is cut to 3 rows and its later 'a' dropped, as compress did."""

    src = write_file(tmp_path, "d.txt", "4 2\na 1 2\nb 3 -4\na 5 6\nc 7 8\n")
    path = str(tmp_path / "d.embq")
    warnings = compress_quietly(src, path, limit=3)
    assert "1 duplicate key" in warnings[0]
    with embq.open(path) as store:
        assert store.attrs["source_limit"] == 3 and store.attrs["source_duplicates"] == 1
        res = cmp.compare_with_original(store, src, sample=0)
        assert res["original_options"]["limit"] == 3
        assert res["original_options"]["format"] == "word2vec"
        assert res["original_options"]["duplicates_dropped"] == 1
        assert res["reconstruction"]["error_max_abs_over_scale"] <= 0.5 + 1e-6
        # An explicit limit wins: all 4 rows, one duplicate, 3 keys, not the store's 2.
        with pytest.raises(ValueError, match=r"has shape \(3, 2\) but the store has \(2, 2\)"):
            cmp.compare_with_original(store, src, sample=0, limit=4)
    # Duplicates alone (no limit), and the same file as (keys, vectors).
    path2 = str(tmp_path / "d2.embq")
    compress_quietly(src, path2)
    with embq.open(path2) as store:
        assert len(store) == 3
        res = cmp.compare_with_original(store, src, sample=0)
        assert res["original_options"]["duplicates_dropped"] == 1
        assert res["reconstruction"]["error_max_abs_over_scale"] <= 0.5 + 1e-6
        keys = ["a", "b", "a", "c"]
        x = np.array([[1, 2], [3, -4], [5, 6], [7, 8]], np.float32)
        res = cmp.compare_with_original(store, (keys, x), sample=0)
        assert res["reconstruction"]["error_max_abs_over_scale"] <= 0.5 + 1e-6


def test_compare_format_from_the_store_for_its_source_file(tmp_path):
    """A GloVe file whose first line looks like a word2vec header ("100 5") is read as GloVe
    only with format='glove': the store records it, and its source file is read that way."""
    import shutil

    from embq._errors import FormatError

    src = write_file(tmp_path, "g.txt", "100 5\n200 6\n300 -7\n")
    path = str(tmp_path / "g.embq")
    compress_quietly(src, path, format="glove")
    with embq.open(path) as store:
        assert store.attrs["source_format"] == "glove"
        res = cmp.compare_with_original(store, src, sample=0)
        assert res["original_options"]["format"] == "glove"
        assert any("source_format" in note for note in res["original_notes"])
        assert res["reconstruction"]["error_max_abs_over_scale"] <= 0.5 + 1e-6
        # Another file is not the store's source: detected, unless the format is given.
        other = str(tmp_path / "copy.txt")
        shutil.copy(src, other)
        with pytest.raises(FormatError):
            cmp.compare_with_original(store, other, sample=0)
        res = cmp.compare_with_original(store, other, sample=0, format="glove")
        assert res["original_options"]["format"] == "glove"


def test_compare_npy_keys_from_the_store(tmp_path):
    from embq._evaluate import evaluate_word_pairs

    keys, vectors = load_embeddings(SAMPLE)
    keys_file = write_file(tmp_path, "keys.txt", "\n".join(keys) + "\n")
    npy = str(tmp_path / "v.npy")
    np.save(npy, vectors)
    path = str(tmp_path / "npy.embq")
    compress_quietly(npy, path, keys=keys_file)
    with embq.open(path) as store:
        assert store.has_keys
        # The source .npy: its keys file from the store's source_keys_path.
        res = cmp.compare_with_original(store, npy, pairs=[SAMPLE_PAIRS], sample=0)
        assert res["original_options"]["keys"] == os.path.abspath(keys_file)
        assert res["original_options"]["keys_from_store"] is False
        assert res["pairs"][0]["original"]["used"] == 150
        # A copy without keys file: the store's keys, said so.
        copy = str(tmp_path / "copy.npy")
        np.save(copy, vectors)
        res = cmp.compare_with_original(store, copy, pairs=[SAMPLE_PAIRS],
                                       analogies=SAMPLE_ANALOGIES, sample=50)
        assert res["original_options"]["keys_from_store"] is True
        assert any("store's keys" in note for note in res["original_notes"])
        assert res["pairs"][0]["original"]["spearman"] == pytest.approx(
            evaluate_word_pairs((keys, vectors), SAMPLE_PAIRS)[1][0], abs=1e-12)
        assert res["analogies"]["original"]["accuracy"] == 1.0
        # Or given explicitly.
        res = cmp.compare_with_original(store, copy, keys=keys_file, sample=0)
        assert res["original_options"]["keys_from_store"] is False
        assert res["original_options"]["format"] == "npy"
        # The store's keys file gone: said so, and the store's keys are used.
        os.remove(keys_file)
        res = cmp.compare_with_original(store, npy, sample=0)
        assert any("no longer exists" in note for note in res["original_notes"])
        assert res["original_options"]["keys_from_store"] is True
        # A keyless original of another shape is still refused.
        np.save(copy, vectors[:-1])
        with pytest.raises(ValueError, match="has shape"):
            cmp.compare_with_original(store, copy, sample=0)


def test_compare_uses_recorded_encoding_options(tmp_path):
    """compress records how it decoded keys (source_encoding / source_unicode_errors), and
    the source file is read back that way without options."""

    src = write_file(tmp_path, "l.txt", "2 2\ncaf\xe9 1 2\nx\xff 3 4\n".encode("latin-1"),
                 mode="wb")
    path = str(tmp_path / "l.embq")
    compress_quietly(src, path, encoding="latin-1")
    with embq.open(path) as store:
        assert store.attrs["source_encoding"] == "latin-1"
        assert store.attrs["source_unicode_errors"] == "strict"
        res = cmp.compare_with_original(store, src, sample=0)
    assert res["original_options"]["encoding"] == "latin-1"
    assert any("source_encoding" in note for note in res["original_notes"])
    path2 = str(tmp_path / "r.embq")
    compress_quietly(src, path2, unicode_errors="replace")
    with embq.open(path2) as store:
        res = cmp.compare_with_original(store, src, sample=0)
    assert res["original_options"]["unicode_errors"] == "replace"


def test_compare_reader_options_are_checked(sample_store, sample_original):
    with pytest.raises(ValueError, match="format= only applies when the original is a file; "
                       "got a tuple"):
        cmp.compare_with_original(sample_store, sample_original, format="glove")
    with pytest.raises(ValueError, match="format=, encoding= only apply when the original is"):
        cmp.compare_with_original(sample_store, sample_original, format="glove",
                                  encoding="latin-1")
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(ValueError, match=f"limit= must be a positive number of rows, got "
                           f"{bad!r}"):
            cmp.compare_with_original(sample_store, SAMPLE, limit=bad)
    with pytest.raises(ValueError, match="format= must be one of word2vec, glove"):
        cmp.compare_with_original(sample_store, SAMPLE, format="fasttext")
    with pytest.raises(ValueError, match="unicode_errors= must be one of strict, replace, ignore"):
        cmp.compare_with_original(sample_store, SAMPLE, unicode_errors="backslashreplace")
    with pytest.raises(TypeError, match="original must be a path"):
        cmp.compare_with_original(sample_store, None)


def test_reader_option_checks_speak_the_callers_language():
    """One set of checks: the library names options as keywords, the CLI as flags."""
    from embq._cmd_evaluate import flag

    with pytest.raises(ValueError, match=r"^limit= only applies to reading the original; give "
                       "the original with original=$"):
        _source.check_reader_options({"limit": 5}, None)
    with pytest.raises(ValueError, match=r"^--format, --unicode-errors only apply to reading the "
                       "original; give the original with --against ORIGINAL$"):
        _source.check_reader_options({"format": "glove", "unicode_errors": "replace"}, None,
                                     spell=flag)
    with pytest.raises(ValueError, match=r"^--limit must be a positive number of rows, got 0$"):
        _source.check_reader_options({"limit": 0}, "x.txt", spell=flag)
    # Nothing given: nothing to check, with or without an original.
    _source.check_reader_options({}, None)
    _source.check_reader_options(dict.fromkeys(_source.READER_OPTIONS), ("k", "v"))


def test_source_attributes_are_what_compress_writes(tmp_path):
    """compress writes exactly the attributes _source names, with the values it was given."""
    src = write_file(tmp_path, "d.txt", "4 2\na 1 2\nb 3 -4\na 5 6\nc 7 8\n")
    keys_file = write_file(tmp_path, "keys.txt", "a\nb\nc\n")
    path = str(tmp_path / "d.embq")
    compress_quietly(src, path, limit=3, encoding="latin-1")
    with embq.open(path) as store:
        attrs = store.attrs
    source = {name: attrs[name] for name in attrs if name.startswith("source_")}
    # The keys file and the part of a file read (tensor, array, columns) only when used.
    assert set(source) == set(_source.SOURCE_ATTRIBUTES) - {
        _source.SOURCE_KEYS_PATH, _source.SOURCE_TENSOR, _source.SOURCE_ARRAY,
        _source.SOURCE_VECTOR_COLUMN, _source.SOURCE_KEY_COLUMN, _source.SOURCE_RANGE}
    assert source == {
        _source.SOURCE_PATH: os.path.abspath(src), _source.SOURCE_FORMAT: "word2vec",
        _source.SOURCE_COMPRESSION: "none", _source.SOURCE_SIZE: os.path.getsize(src),
        _source.SOURCE_ROWS: 3, _source.SOURCE_DUPLICATES: 1, _source.SOURCE_LIMIT: 3,
        _source.SOURCE_ENCODING: "latin-1", _source.SOURCE_UNICODE_ERRORS: "strict",
    }
    assert attrs[_source.NORMALIZED] is False
    npy = str(tmp_path / "v.npy")
    np.save(npy, np.arange(6, dtype=np.float32).reshape(3, 2))
    compress_quietly(npy, path, keys=keys_file)
    with embq.open(path) as store:
        assert store.attrs[_source.SOURCE_KEYS_PATH] == os.path.abspath(keys_file)
        assert store.attrs[_source.SOURCE_LIMIT] == -1
        assert store.attrs[_source.SOURCE_FORMAT] == "npy"


def test_recorded_reader_options_trust_nothing_of_the_wrong_type(tmp_path):
    """A store from a stranger may hold anything under the source_* names: a value of the
    wrong type (or a format the readers do not have) counts as not recorded."""
    src = write_file(tmp_path, "v.txt", "1 2\na 1 2\n")
    attrs = {_source.SOURCE_PATH: src, _source.SOURCE_FORMAT: "pickle",
             _source.SOURCE_LIMIT: True, _source.SOURCE_KEYS_PATH: 7,
             _source.SOURCE_ENCODING: b"latin-1", _source.SOURCE_UNICODE_ERRORS: "surrogates",
             _source.SOURCE_TENSOR: 3, _source.SOURCE_KEY_COLUMN: ""}
    options, notes = _source.recorded_reader_options(attrs, src, {})
    parts = {"tensor": None, "array": None, "vector_column": None, "key_column": None}
    assert options == {"format": None, "keys": None, "limit": None, "encoding": "utf8",
                       "unicode_errors": "strict", **parts}
    assert notes == []
    # Given options always win over recorded ones.
    attrs = {_source.SOURCE_PATH: src, _source.SOURCE_FORMAT: "glove", _source.SOURCE_LIMIT: 5,
             _source.SOURCE_ENCODING: "latin-1"}
    options, notes = _source.recorded_reader_options(attrs, src, {"format": "word2vec",
                                                                  "limit": 1})
    assert options["format"] == "word2vec" and options["limit"] == 1
    assert options["encoding"] == "latin-1" and len(notes) == 1
    # Another file than the source: only the limit comes from the store.
    other = write_file(tmp_path, "w.txt", "1 2\na 1 2\n")
    options, notes = _source.recorded_reader_options(attrs, other, {})
    assert options == {"format": None, "keys": None, "limit": 5, "encoding": "utf8",
                       "unicode_errors": "strict", **parts}
    assert notes == ["first 5 rows only (the store's source_limit)"]


def test_compare_pair_file_without_known_pair_raises_like_gensim(sample_store, tmp_path):
    sample_kv = load_kv(SAMPLE, {})
    p = write_file(tmp_path, "p.tsv", "zzzz\tyyyy\t1\nqqqq\tcat\t2\n")
    with pytest.raises(ValueError, match=r"No valid similarity judgements found in .*p\.tsv"):
        sample_kv.evaluate_word_pairs(p)
    with pytest.raises(ValueError, match=r"No valid similarity judgements found in .*p\.tsv"):
        cmp.compare_with_original(sample_store, sample_kv, pairs=[p], sample=0)


def test_compare_keyless_store(tmp_path):
    x = np.random.default_rng(3).normal(size=(50, 8)).astype(np.float32)
    path = str(tmp_path / "nokeys.embq")
    embq.save(path, x)
    with embq.open(path) as store:
        res = cmp.compare_with_original(store, (None, x), sample=20)
        assert res["recall"]["queries"] == 20 and res["pairs"] == []
        assert res["analogies"] is None
        assert res["reconstruction"]["error_max_abs_over_scale"] <= 0.5 + 1e-3
