"""Tests for embq._evaluate: test-file parsers and the gensim-compatible evaluations.

The float path is checked against gensim's own ``evaluate_word_pairs`` /
``evaluate_word_analogies`` on gensim's real vector and test files: same sections, same correct
and incorrect questions, same correlations. The store path is checked against the float path on
the dequantized vectors (what the int8 search approximates) and against the original floats.
Tests that need gensim (its vectors, its test files or its answers) skip without it; the rest
run on the sample files in ``data/``. The comparison with the original floats is tested in
test_compare.py, ``embq evaluate`` in test_cli_evaluate.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from evaluation_files import (
    SAMPLE,
    SAMPLE_ANALOGIES,
    SAMPLE_PAIRS,
    gensim_data,
    keyed_vectors,
    load_kv,
    save_sample_store,
    write_file,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from embq import _evaluate as ev
from embq._errors import FormatError

# (file, loader keywords) for gensim's real vector files with some overlap with the test sets.
REAL_VECTORS = [
    ("euclidean_vectors.bin", {"binary": True}),
    ("lee_fasttext.vec", {}),
    ("word2vec_pre_kv_c", {}),
    ("test_glove.txt", {"no_header": True}),
]


def _questions():
    return gensim_data("questions-words.txt")


def _wordsim():
    return gensim_data("wordsim353.tsv")


def _simlex():
    return gensim_data("simlex999.txt")


@pytest.fixture(scope="module")
def sample_kv():
    return load_kv(SAMPLE, {})


# ------------------------------------------------------------------------------------------
# Parsers
# ------------------------------------------------------------------------------------------


def test_read_word_pairs_real_file():
    w1, w2, scores, lines = ev.read_word_pairs(_wordsim())
    assert len(w1) == len(w2) == len(scores) == len(lines) == 353
    assert (w1[0], w2[0], scores[0]) == ("love", "sex", 6.77)
    assert lines[0] == 3  # two comment lines first


def test_read_word_pairs_skips_comments_blank_lines_and_crlf(tmp_path):
    p = write_file(tmp_path, "p.tsv", "# header\r\n\r\ncat\tdog\t7.5\r\n  \nCat\tfox\t-1e0\r\n")
    w1, w2, scores, lines = ev.read_word_pairs(p)
    assert w1 == ["cat", "Cat"] and w2 == ["dog", "fox"]
    assert scores.tolist() == [7.5, -1.0]
    assert lines.tolist() == [3, 5]


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("cat\tdog\t1\ncat\tdog\n", 2, "expected 3 fields"),
        ("cat\tdog\t1\tx\n", 1, "got 4"),
        ("cat dog 1\n", 1, "got 1"),
        ("# c\ncat\tdog\tsimilar\n", 2, "'similar' is not a finite number"),
        ("cat\tdog\tnan\n", 1, "not a finite number"),
        ("cat\t\t3\n", 1, "empty word"),
    ],
)
def test_read_word_pairs_errors_name_file_and_line(tmp_path, text, line, fragment):
    p = write_file(tmp_path, "bad.tsv", text)
    with pytest.raises(FormatError) as info:
        ev.read_word_pairs(p)
    assert info.value.path == p and info.value.line == line
    assert fragment in str(info.value) and p in str(info.value)
    assert f"line {line}" in str(info.value)


@pytest.mark.parametrize("text", ["", "# only a comment\n\n"])
def test_read_word_pairs_empty_file(tmp_path, text):
    p = write_file(tmp_path, "empty.tsv", text)
    with pytest.raises(FormatError, match="no word pairs found") as info:
        ev.read_word_pairs(p)
    assert info.value.path == p


def test_read_word_pairs_undecodable(tmp_path):
    p = write_file(tmp_path, "latin.tsv", b"cat\tdog\t1\ncaf\xe9\tdog\t2\n", mode="wb")
    with pytest.raises(FormatError, match="cannot decode") as info:
        ev.read_word_pairs(p)
    assert info.value.line == 2
    w1, _, _, _ = ev.read_word_pairs(p, encoding="latin-1")
    assert w1[1] == "café"


def test_read_word_pairs_other_delimiter(tmp_path):
    p = write_file(tmp_path, "p.csv", "cat,dog,3\n")
    assert ev.read_word_pairs(p, delimiter=",")[0] == ["cat"]


def test_read_analogies_real_file():
    sections = ev.read_analogies(_questions())
    assert len(sections) == 14
    assert sections[0][0] == "capital-common-countries"
    assert sections[0][1][:4] == ["Athens", "Greece", "Baghdad", "Iraq"]
    assert sum(len(s[1]) for s in sections) == 4 * 19544
    assert sections[0][2] == 1


def _flat(sections):
    return [(name, words) for name, words, _ in sections]


def test_read_analogies_fast_and_slow_paths_agree(tmp_path):
    text = ": one\na b c d\n\ne f g h\n: two\ni j k l\n"
    clean = ev.read_analogies(write_file(tmp_path, "clean.txt", text))
    # Tabs, CR/LF, doubled and trailing spaces force the line-by-line path.
    messy = ev.read_analogies(
        write_file(tmp_path, "messy.txt",
                   text.replace("\n", "\r\n").replace("a b", "a\t b  ") + " ")
    )
    assert _flat(clean) == _flat(messy) == [
        ("one", list("abcdefgh")), ("two", list("ijkl"))
    ]
    assert [s[2] for s in clean] == [1, 5]


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        (": s\na b c d\na b c\n", 3, "got 3 words"),
        (": s\na b c d e\n", 2, "got 5 words"),
        (": s\na b c d\n: t\nx\n", 4, "got 1 word"),
        # one line short and one line long must not cancel out
        (": s\n a b c\na b c d\te\n", 2, "got 3 words"),
        (": s\na  b c\na b c d e\n", 2, "got 3 words"),
        ("a b c d\n: s\na b c d\n", 1, "before the first section"),
    ],
)
def test_read_analogies_errors_name_file_and_line(tmp_path, text, line, fragment):
    p = write_file(tmp_path, "bad.txt", text)
    with pytest.raises(FormatError) as info:
        ev.read_analogies(p)
    assert info.value.path == p and info.value.line == line, str(info.value)
    assert fragment in str(info.value)


@pytest.mark.parametrize("text", ["", "\n\n", ": only a section\n"])
def test_read_analogies_empty(tmp_path, text):
    with pytest.raises(FormatError, match="no analogy questions"):
        ev.read_analogies(write_file(tmp_path, "e.txt", text))


def test_read_analogies_non_ascii(tmp_path):
    p = write_file(tmp_path, "u.txt", ": jp\n日本 東京 france paris\n")
    assert _flat(ev.read_analogies(p)) == [("jp", ["日本", "東京", "france", "paris"])]


# The analogy tokenizer kernel against an independent line-by-line reference (gensim's rules:
# lines end at "\n", ": " starts a section, str.split() finds the words; and embq's: a line
# starting with "#" is a comment).


def _reference_sections(text):
    sections = []
    for line_no, line in enumerate(text.split("\n"), 1):
        if line.startswith(": "):
            sections.append((line.lstrip(": ").strip(), [], line_no))
            continue
        if line[:1] == "#":
            continue
        parts = line.split()
        if not parts:
            continue
        if not sections or len(parts) != 4:
            return ("error", line_no)
        sections[-1][1].extend(parts)
    if not any(words for _, words, _ in sections):
        return ("error", None)
    return sections


def _sections_of(parsed):
    assert len(set(parsed.words)) == len(parsed.words)  # interned: each word once
    assert parsed.ids.dtype == np.int32 and parsed.ids.shape[1:] == (4,)
    out, start = [], 0
    for name, line, count in zip(parsed.names, parsed.lines, parsed.counts.tolist()):
        out.append((name, [parsed.words[i] for i in parsed.ids[start:start + count].ravel()],
                    line))
        start += count
    assert start == parsed.ids.shape[0]
    return out


def _parse_or_error(parse, data):
    try:
        return _sections_of(parse(data, "q.txt"))
    except FormatError as exc:
        return ("error", exc.line)


_TOKENS = st.sampled_from([
    "a", "Athens", "Greece", "baghdad", "12345678", "exactly16bytes!!", "seventeen_bytes_x",
    "a" * 40, "café", "日本", "東京", "x\x01y", ":", ":x", "ß", "İstanbul", "q" * 9,
    "#", "#x", "a#",
])
_SEPARATORS = st.sampled_from([" ", " ", " ", "  ", "\t", "\r", "\x0b", "\x0c", "\x1c", "\x1f",
                               " \t "])


@st.composite
def _analogy_texts(draw):
    lines = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["header", "question", "question", "question", "other",
                                     "comment"]))
        if kind == "header":
            lines.append(": " + draw(st.sampled_from(["capital", " spaced  name ", "", "x\r"])))
            continue
        if kind == "comment":
            lines.append(draw(st.sampled_from(["#", "# a b c", "#a b c d", "## x", "#\t"])))
            continue
        n = 4 if kind == "question" else draw(st.integers(0, 6))
        words = draw(st.lists(_TOKENS, min_size=n, max_size=n))
        seps = draw(st.lists(_SEPARATORS, min_size=n + 1, max_size=n + 1))
        lead = seps[0] if draw(st.booleans()) else ""
        trail = seps[-1] if draw(st.booleans()) else ""
        body = words[0] + "".join(s + w for s, w in zip(seps[1:], words[1:])) if words else ""
        lines.append(lead + body + trail)
    if draw(st.booleans()):
        lines.insert(0, ": first")
    return "\n".join(lines) + ("\n" if draw(st.booleans()) else "")


@settings(max_examples=400, deadline=None)
@given(_analogy_texts())
def test_analogy_tokenizer_matches_reference(text):
    expected = _reference_sections(text)
    # The kernel handles every text without non-ASCII whitespace (all of these).
    assert _parse_or_error(ev._parse_questions_bytes, text.encode("utf8")) == expected
    assert _parse_or_error(ev._parse_questions_text, text) == expected


def test_analogy_tokenizer_long_lines_many_words_and_file_end(tmp_path):
    # Lines of 63/64+ bytes, words longer than 16 bytes, more distinct words than the kernel's
    # first intern table holds, and a last line without newline shorter than 8 bytes.
    rng = np.random.default_rng(5)
    vocab = [f"w{i}" + "x" * int(rng.integers(0, 30)) for i in range(6000)]
    lines = [": big"]
    for _ in range(3000):
        lines.append(" ".join(vocab[j] for j in rng.integers(0, len(vocab), 4)))
    lines.append(" ".join(["p" * 15] * 4))  # 63 bytes
    lines.append(" ".join(["p" * 15] * 3 + ["p" * 16]))  # 64 bytes
    lines.append("a b c d")
    text = "\n".join(lines)
    got = ev.read_analogies(write_file(tmp_path, "big.txt", text))
    assert got == _reference_sections(text)
    assert len(ev._parse_analogies(write_file(tmp_path, "big.txt", text)).words) == len(
        {w for _, words, _ in got for w in words})


def test_analogies_non_ascii_whitespace_split_like_python(tmp_path):
    # U+3000 and U+00A0 separate words for str.split(): the kernel (ASCII separators only) is
    # not used for such files, and the result is Python's.
    text = ": s\n日本\u3000東京 a\xa0b\n"
    p = write_file(tmp_path, "ws.txt", text)
    assert ev.read_analogies(p) == [("s", ["日本", "東京", "a", "b"], 1)]


def test_read_analogies_other_encoding(tmp_path):
    p = write_file(tmp_path, "latin.txt", ": s\ncaf\xe9 b c d\n".encode("latin-1"), mode="wb")
    with pytest.raises(FormatError, match="cannot decode") as info:
        ev.read_analogies(p)
    assert info.value.line == 2
    assert ev.read_analogies(p, encoding="latin-1") == [("s", ["café", "b", "c", "d"], 1)]


def test_analogy_comments_are_skipped(tmp_path):
    # Before the first section (where gensim raises "Missing section header"), between
    # questions, and with four words ("# a b c", a question for gensim): comments all.
    text = "# generated\n: s\na b c d\n# a b c\n#x y z w\ne f g h\n"
    for parse in (lambda t: ev._parse_questions_bytes(t.encode(), "q.txt"),
                  lambda t: ev._parse_questions_text(t, "q.txt")):
        assert _sections_of(parse(text)) == [("s", list("abcdefgh"), 2)]
    assert ev.read_analogies(write_file(tmp_path, "c.txt", text)) == [("s", list("abcdefgh"), 2)]


@pytest.mark.parametrize("text", ["# only a comment\n", "# one\n# two\n: s\n# three\n"])
def test_analogies_with_only_comments_have_no_questions(tmp_path, text):
    p = write_file(tmp_path, "c.txt", text)
    with pytest.raises(FormatError, match="no analogy questions found") as info:
        ev.read_analogies(p)
    assert info.value.path == p and "before the first section" not in str(info.value)


def _compressed_copy(src, dst, kind):
    import bz2
    import gzip
    import lzma

    opener = {"gz": gzip.open, "bz2": bz2.open, "xz": lzma.open}[kind]
    with open(src, "rb") as fin, opener(dst, "wb") as fout:
        fout.write(fin.read())
    return dst


@pytest.mark.parametrize("kind", ["gz", "bz2", "xz"])
def test_compressed_pair_and_analogy_files(tmp_path, sample_kv, kind):
    pairs = _compressed_copy(SAMPLE_PAIRS, str(tmp_path / f"p.tsv.{kind}"), kind)
    questions = _compressed_copy(SAMPLE_ANALOGIES, str(tmp_path / f"q.txt.{kind}"), kind)
    assert ev.read_word_pairs(pairs)[0] == ev.read_word_pairs(SAMPLE_PAIRS)[0]
    assert ev.read_analogies(questions) == ev.read_analogies(SAMPLE_ANALOGIES)
    # gensim reads the same files through smart_open (by extension): same results.
    assert ev.evaluate_word_analogies(sample_kv, questions) == \
        sample_kv.evaluate_word_analogies(questions)
    got, expected = ev.evaluate_word_pairs(sample_kv, pairs), sample_kv.evaluate_word_pairs(pairs)
    assert got[1][0] == expected[1][0] and got[2] == expected[2]


def test_compressed_file_without_extension_and_truncated(tmp_path):
    # Recognised by content, not by name.
    plain = _compressed_copy(SAMPLE_PAIRS, str(tmp_path / "pairs.tsv"), "gz")
    assert len(ev.read_word_pairs(plain)[0]) == len(ev.read_word_pairs(SAMPLE_PAIRS)[0])
    data = open(plain, "rb").read()
    cut = write_file(tmp_path, "cut.tsv.gz", data[: len(data) // 2], mode="wb")
    with pytest.raises(FormatError, match="cannot decompress the gzip data") as info:
        ev.read_word_pairs(cut)
    assert info.value.path == cut
    # A text file that merely starts like a bz2 stream's "BZh" is read as text.
    p = write_file(tmp_path, "bzh.tsv", "BZh9\tdog\t1\n")
    assert ev.read_word_pairs(p)[0] == ["BZh9"]


# ------------------------------------------------------------------------------------------
# Float path == gensim
# ------------------------------------------------------------------------------------------

OPTIONS = [
    {},
    {"case_insensitive": False},
    {"restrict_vocab": 500},
    {"dummy4unknown": True},
]


@pytest.mark.parametrize("restrict_vocab", [-1, -300, 0, None, 10**9])
def test_restrict_vocab_slices_like_gensim(sample_kv, restrict_vocab):
    """gensim slices index_to_key[:restrict_vocab]: negative leaves out keys at the end, 0
    knows no word, None all of them. The sample's analogy words are among its first keys, so
    -300 changes only the search range, and a large negative value the known words."""
    for r in (restrict_vocab, -len(sample_kv) + 50):
        expected = sample_kv.evaluate_word_analogies(SAMPLE_ANALOGIES, restrict_vocab=r)
        assert ev.evaluate_word_analogies(sample_kv, SAMPLE_ANALOGIES, restrict_vocab=r) == expected
        try:
            expected = sample_kv.evaluate_word_pairs(SAMPLE_PAIRS, restrict_vocab=r)
        except ValueError:
            with pytest.raises(ValueError, match="No valid similarity judgements"):
                ev.evaluate_word_pairs(sample_kv, SAMPLE_PAIRS, restrict_vocab=r)
            continue
        got = ev.evaluate_word_pairs(sample_kv, SAMPLE_PAIRS, restrict_vocab=r)
        assert got[1][0] == expected[1][0] and got[2] == expected[2]
    vocab, _, limit = ev._vocabulary(ev._as_backend(sample_kv), restrict_vocab, True)
    assert limit == len(sample_kv.index_to_key[:restrict_vocab]) == len(vocab)


@pytest.mark.parametrize("name, kw", REAL_VECTORS + [(SAMPLE, {})])
@pytest.mark.parametrize("options", OPTIONS)
def test_analogies_equal_gensim(name, kw, options):
    kv = load_kv(name, kw)
    for questions in (_questions(), SAMPLE_ANALOGIES):
        expected = kv.evaluate_word_analogies(questions, **options)
        got = ev.evaluate_word_analogies(kv, questions, **options)
        assert got[0] == expected[0]
        assert got[1] == expected[1]


@pytest.mark.parametrize("name, kw", REAL_VECTORS[:3] + [(SAMPLE, {})])
@pytest.mark.parametrize("options", OPTIONS)
def test_pairs_equal_gensim(name, kw, options):
    kv = load_kv(name, kw)
    for pairs in (_wordsim(), _simlex(), SAMPLE_PAIRS):
        try:
            expected = kv.evaluate_word_pairs(pairs, **options)
        except ValueError:
            with pytest.raises(ValueError):
                ev.evaluate_word_pairs(kv, pairs, **options)
            continue
        got = ev.evaluate_word_pairs(kv, pairs, **options)
        # Same float32 arithmetic as gensim, so the same numbers (NaN when a side is constant).
        np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(expected[0]))
        np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(expected[1]))
        assert got[2] == expected[2]


def test_case_folding_keeps_first_variant(tmp_path):
    # "Paris" (row 0) and "paris" (row 3) fold to the same word; gensim uses the first.
    keys = ["Paris", "france", "rome", "paris", "italy", "berlin"]
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(6, 8)).astype(np.float32)
    kv = keyed_vectors()(vector_size=8)
    kv.add_vectors(keys, vectors)
    q = write_file(tmp_path, "q.txt", ": caps\nfrance paris italy rome\nitaly rome france PARIS\n")
    pairs = write_file(tmp_path, "p.tsv", "paris\tfrance\t9\nrome\titaly\t8\nberlin\tparis\t1\n")
    for options in OPTIONS:
        assert ev.evaluate_word_analogies(kv, q, **options) == kv.evaluate_word_analogies(
            q, **options
        )
        g = kv.evaluate_word_pairs(pairs, **options)
        e = ev.evaluate_word_pairs(kv, pairs, **options)
        assert e[1][0] == pytest.approx(g[1][0]) and e[2] == g[2]


def test_pairs_all_unknown_is_value_error(sample_kv, tmp_path):
    p = write_file(tmp_path, "p.tsv", "zzzz\tyyyy\t1\nqqqq\tcat\t2\n")
    with pytest.raises(ValueError, match="No valid similarity judgements"):
        ev.evaluate_word_pairs(sample_kv, p)


def test_keys_tuple_backend_matches_keyed_vectors(sample_kv):
    as_tuple = (list(sample_kv.index_to_key), sample_kv.vectors)
    assert ev.evaluate_word_analogies(as_tuple, SAMPLE_ANALOGIES) == ev.evaluate_word_analogies(
        sample_kv, SAMPLE_ANALOGIES
    )


def test_top_k_rows_matches_sort_oracle():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(7, 40)).astype(np.float32)  # many ties
    for k in (1, 3, 40, 50):
        got = ev._top_k_rows(scores, k)
        for row, idx in zip(scores, got):
            oracle = sorted(range(len(row)), key=lambda j: (-row[j], j))[: min(k, len(row))]
            assert idx.tolist() == oracle


def test_predict_follows_gensim_exclusion_rule():
    # canon folds row 9 onto row 2 (same word, other case).
    canon = np.arange(12)
    canon[9] = 2
    q = np.array([[0, 1, 2, 5]])
    # nearest: the question rows 1 and 0, then row 9 (folds to question word 2), then row 5.
    cand = np.array([[1, 0, 9, 5, 6, 7, 8, 10]])
    assert ev._predict(cand, canon[cand], q).tolist() == [5]
    # All five kept candidates fold to question words: the last one stands (gensim's loop).
    cand = np.array([[0, 9, 9, 9, 9, 9, 5, 6]])
    assert ev._predict(cand, canon[cand], q).tolist() == [2]
    # No candidate at all.
    none = np.empty((1, 0), np.int64)
    assert ev._predict(none, none, q).tolist() == [-1]
    # The question rows are dropped *before* five candidates are kept: of the 8 nearest, the
    # five left are 9, 9, 5, 6, 7; 9 folds onto question word 2, so 5 is the answer (keeping
    # the first five, 0, 1, 2, 9, 9, would leave only question words and answer 2).
    cand = np.array([[0, 1, 2, 9, 9, 5, 6, 7]])
    assert ev._predict(cand, canon[cand], q).tolist() == [5]


def _case_variant_analogy(tmp_path):
    """man : king :: woman : queen, where four case variants of the question words (King,
    KING, Woman, WOMAN) are nearer to the query than queen. gensim asks most_similar for
    topn=5, which fetches topn + 3 = 8 candidates, drops the rows of man, king and woman, and
    keeps 5: King, KING, Woman, WOMAN, queen. Folded, the variants are question words, so
    queen is the answer. Fetching only 5 candidates would leave King, KING, Woman: no answer
    but a question word."""
    e = np.eye(8, dtype=np.float32)
    keys = ["man", "king", "woman", "queen", "King", "KING", "Woman", "WOMAN", "f1", "f2"]
    # Cosines with the query e1 + e2 - e0: king, woman .577; King .566; KING .553;
    # Woman .536; WOMAN .516; queen .471; the rest 0 or less.
    vectors = np.array([e[0], e[1], e[2], e[1] + e[2] + 2 * e[5], e[1] + 0.2 * e[3],
                        e[1] + 0.3 * e[4], e[2] + 0.4 * e[3], e[2] + 0.5 * e[4], e[6], e[7]])
    kv = keyed_vectors()(vector_size=8)
    kv.add_vectors(keys, vectors)
    return kv, write_file(tmp_path, "q.txt", ": family\nman king woman queen\n")


def test_analogy_fetches_topn_plus_three_candidates_like_gensim(tmp_path):
    import embq

    kv, q = _case_variant_analogy(tmp_path)
    for options in OPTIONS:
        assert ev.evaluate_word_analogies(kv, q, **options) == kv.evaluate_word_analogies(
            q, **options), options
    assert ev.evaluate_word_analogies(kv, q)[0] == 1.0
    # Case-sensitive, the variants are other words: King is the (wrong) answer.
    assert ev.evaluate_word_analogies(kv, q, case_insensitive=False)[0] == 0.0
    path = str(tmp_path / "v.embq")
    embq.save(path, kv.vectors, list(kv.index_to_key))
    with embq.open(path) as store:
        assert ev.evaluate_word_analogies(store, q) == kv.evaluate_word_analogies(q)


def test_canonical_rows():
    keys = ["Paris", "france", "paris", "PARIS", "rome"]
    vocab, folded, limit = ev._vocabulary(ev._FloatVectors(keys, np.eye(5, 3)), None, True)
    assert limit == 5 and vocab == {"PARIS": 0, "FRANCE": 1, "ROME": 4}
    rows = np.array([[3, 2, -1], [4, 0, 1]])
    assert ev._canonical_rows(rows, vocab, folded).tolist() == [[0, 0, -1], [4, 0, 1]]
    vocab, folded, _ = ev._vocabulary(ev._FloatVectors(keys, np.eye(5, 3)), None, False)
    assert folded is None and ev._canonical_rows(rows, vocab, folded).tolist() == rows.tolist()


# ------------------------------------------------------------------------------------------
# Store path
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory):
    import embq

    store = embq.open(save_sample_store(tmp_path_factory.mktemp("ev")))
    yield store
    store.close()


@pytest.fixture(scope="module")
def euclid(tmp_path_factory):
    import embq

    kv = load_kv("euclidean_vectors.bin", {"binary": True})
    path = str(tmp_path_factory.mktemp("ev") / "euclid.embq")
    embq.save(path, kv.vectors, list(kv.index_to_key))
    store = embq.open(path)
    yield kv, store
    store.close()


def _dequantized_kv(store):
    from embq._quantize import dequantize

    kv = keyed_vectors()(vector_size=store.dim)
    kv.add_vectors(
        list(store.index_to_key),
        dequantize(np.asarray(store.codes), np.asarray(store.scales),
                   np.asarray(store.zero_points)),
    )
    return kv


def test_store_pairs_equal_gensim_on_dequantized_vectors(euclid):
    # Pair similarities use the dequantized rows with gensim's arithmetic: identical results.
    _, store = euclid
    deq = _dequantized_kv(store)
    for pairs in (_wordsim(), _simlex()):
        got = store.evaluate_word_pairs(pairs)
        expected = deq.evaluate_word_pairs(pairs)
        np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(expected[1]))
        np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(expected[0]))
        assert got[2] == expected[2]


def test_store_pairs_close_to_float(euclid, sample_store, sample_kv):
    kv, store = euclid
    for backend, floats, pairs in [
        (store, kv, _wordsim()), (store, kv, _simlex()), (sample_store, sample_kv, SAMPLE_PAIRS)
    ]:
        got = ev.evaluate_word_pairs(backend, pairs)
        expected = floats.evaluate_word_pairs(pairs)
        assert abs(got[1][0] - expected[1][0]) < 0.01, (pairs, got[1], expected[1])
        assert got[2] == expected[2]


def test_store_analogies_match_float(sample_store, sample_kv, euclid):
    # Same sections and questions; predictions may differ only where the int8 scores reorder
    # near-ties, which on these files they do not.
    for store, kv, questions in [
        (sample_store, sample_kv, SAMPLE_ANALOGIES),
        (euclid[1], euclid[0], _questions()),
    ]:
        got = ev.evaluate_word_analogies(store, questions)
        expected = kv.evaluate_word_analogies(questions)
        assert [s["section"] for s in got[1]] == [s["section"] for s in expected[1]]
        assert [len(s["correct"]) + len(s["incorrect"]) for s in got[1]] == [
            len(s["correct"]) + len(s["incorrect"]) for s in expected[1]
        ]
        assert abs(got[0] - expected[0]) <= 0.005
    score, sections = sample_store.evaluate_word_analogies(SAMPLE_ANALOGIES)
    assert score == 1.0 and sections[-1]["section"] == "Total accuracy"


def test_store_analogies_answer_like_the_dequantized_float_search(euclid):
    """With a generous rescore, the int8 candidates are re-ranked with float scores on the
    dequantized rows: exactly gensim's answers on those rows."""
    _, store = euclid
    deq = _dequantized_kv(store)
    got = ev.evaluate_word_analogies(store, _questions(), rescore=8)
    expected = deq.evaluate_word_analogies(_questions())
    assert got == expected


def test_store_analogies_options_and_vocabulary_cache(euclid):
    """Every option, in an order that makes the per-store vocabulary cache switch settings
    and come back: always gensim's answers on the dequantized rows."""
    _, store = euclid
    deq = _dequantized_kv(store)
    for options in OPTIONS + OPTIONS[::-1]:
        got = ev.evaluate_word_analogies(store, _questions(), rescore=8, **options)
        assert got == deq.evaluate_word_analogies(_questions(), **options), options


def test_vocabulary_cache_per_store(tmp_path, monkeypatch):
    import gc

    import embq

    keys = ["Paris", "france", "paris", "rome"]
    path = str(tmp_path / "c.embq")
    embq.save(path, np.eye(4, 3, dtype=np.float32) + 0.1, keys)
    store = embq.open(path)
    reads = []
    real_keys = ev._StoreVectors.keys
    monkeypatch.setattr(ev._StoreVectors, "keys",
                        lambda self, limit: reads.append(limit) or real_keys(self, limit))
    first = ev._vocabulary(ev._as_backend(store), 300000, True)
    assert first[0] == {"PARIS": 0, "FRANCE": 1, "ROME": 3} and first[2] == 4
    assert ev._vocabulary(ev._as_backend(store), 300000, True) is first
    assert reads == [4]
    # Other settings are read again (and replace the entry).
    assert ev._vocabulary(ev._as_backend(store), 2, True)[0] == {"PARIS": 0, "FRANCE": 1}
    assert ev._vocabulary(ev._as_backend(store), 300000, False)[0] == {
        "Paris": 0, "france": 1, "paris": 2, "rome": 3}
    assert reads == [4, 2, 4]
    # Another store object of the same file has its own entry; a dropped store frees its own.
    other = embq.open(path)
    ev._vocabulary(ev._as_backend(other), 300000, True)
    assert reads == [4, 2, 4, 4]
    assert store in ev._STORE_VOCABULARIES and other in ev._STORE_VOCABULARIES
    n = len(ev._STORE_VOCABULARIES)
    other.close()
    del other
    gc.collect()
    assert len(ev._STORE_VOCABULARIES) == n - 1
    # A closed store is refused, cache or not.
    store.close()
    with pytest.raises(ValueError):
        ev.evaluate_word_analogies(store, SAMPLE_ANALOGIES)


def test_store_keys_come_from_index_to_key(tmp_path):
    """The keys of a store backend are its index_to_key, any prefix of them, whatever the
    characters (a newline inside a key included)."""
    import embq

    keys = ["Paris", "café", "日本", "a b", "x", "東京", "paris", "b\nc"]
    path = str(tmp_path / "k.embq")
    embq.save(path, np.ones((len(keys), 3), np.float32), keys)
    with embq.open(path) as store:
        backend = ev._as_backend(store)
        for limit in range(len(keys) + 2):
            assert backend.keys(limit) == keys[:limit]
    x = np.ones((3, 3), np.float32)
    embq.save(str(tmp_path / "nokeys.embq"), x)
    with embq.open(str(tmp_path / "nokeys.embq")) as store:
        with pytest.raises(ValueError, match="has no keys; word evaluations need a keyed store"):
            ev._as_backend(store).keys(3)


def test_evaluate_store_report(sample_store):
    """What ``embq evaluate STORE`` reports without --against: the store's figures, equal to
    the gensim-shaped functions' own."""
    res = ev.evaluate_store(sample_store, pairs=SAMPLE_PAIRS, analogies=SAMPLE_ANALOGIES)
    assert res["store"] == sample_store.path and res["rows"] == len(sample_store)
    assert res["dim"] == sample_store.dim
    (entry,) = res["pairs"]
    assert entry["file"] == SAMPLE_PAIRS and set(entry) == {"file", "store"}
    pearson, spearman, oov = ev.evaluate_word_pairs(sample_store, SAMPLE_PAIRS)
    assert entry["store"]["spearman"] == spearman[0] and entry["store"]["pearson"] == pearson[0]
    assert entry["store"]["oov_ratio"] == oov
    assert entry["store"]["used"] == entry["store"]["pairs"] - entry["store"]["oov"]
    ana = res["analogies"]
    assert ana["file"] == SAMPLE_ANALOGIES and set(ana) == {"file", "store"}
    score, sections = ev.evaluate_word_analogies(sample_store, SAMPLE_ANALOGIES)
    assert ana["store"]["accuracy"] == score
    assert [s["section"] for s in ana["store"]["sections"]] == [s["section"] for s in sections]
    assert [s["correct"] for s in ana["store"]["sections"]] == [
        len(s["correct"]) for s in sections]
    empty = ev.evaluate_store(sample_store)
    assert empty["pairs"] == [] and empty["analogies"] is None


def test_evaluate_store_parses_every_file_first(sample_store, tmp_path, monkeypatch):
    """A malformed analogy file fails before any pair file is evaluated."""
    bad = write_file(tmp_path, "bad.txt", ": s\na b c\n")
    calls = []
    monkeypatch.setattr(ev, "_evaluate_pairs", lambda *a, **k: calls.append(a))
    with pytest.raises(FormatError, match="expected 4 words"):
        ev.evaluate_store(sample_store, pairs=[SAMPLE_PAIRS], analogies=bad)
    assert calls == []


def test_keyless_store_has_no_word_evaluations(tmp_path):
    import embq

    path = str(tmp_path / "nokeys.embq")
    embq.save(path, np.random.default_rng(3).normal(size=(50, 8)).astype(np.float32))
    with embq.open(path) as store:
        with pytest.raises(ValueError, match="has no keys"):
            ev.evaluate_word_pairs(store, SAMPLE_PAIRS)
        with pytest.raises(ValueError, match="has no keys"):
            ev.evaluate_store(store, analogies=SAMPLE_ANALOGIES)


def test_store_analogies_batched_not_one_query_at_a_time(sample_store, monkeypatch):
    calls = []
    import embq._search as search_mod

    real = search_mod.search_store

    def counting(store, queries, *args, **kwargs):
        calls.append(np.asarray(queries).shape)
        return real(store, queries, *args, **kwargs)

    monkeypatch.setattr(search_mod, "search_store", counting)
    ev.evaluate_word_analogies(sample_store, SAMPLE_ANALOGIES)
    assert calls == [(378, sample_store.dim)]
