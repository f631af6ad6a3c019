"""Tests for embq._evaluate: file parsers, gensim-compatible evaluations, comparison with floats.

The float path is checked against gensim's own ``evaluate_word_pairs`` /
``evaluate_word_analogies`` on gensim's real vector and test files: same sections, same correct
and incorrect questions, same correlations. The store path is checked against the float path on
the dequantized vectors (what the int8 search approximates) and against the original floats.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embq import _evaluate as ev
from embq._errors import FormatError

gensim = pytest.importorskip("gensim")
from gensim.models import KeyedVectors  # noqa: E402
from gensim.test.utils import datapath  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "data", "sample.w2v.txt")
SAMPLE_PAIRS = os.path.join(ROOT, "data", "sample.pairs.tsv")
SAMPLE_ANALOGIES = os.path.join(ROOT, "data", "sample.analogies.txt")
QUESTIONS = datapath("questions-words.txt")
WORDSIM = datapath("wordsim353.tsv")
SIMLEX = datapath("simlex999.txt")

# (file, loader keywords) for gensim's real vector files with some overlap with the test sets.
REAL_VECTORS = [
    ("euclidean_vectors.bin", {"binary": True}),
    ("lee_fasttext.vec", {}),
    ("word2vec_pre_kv_c", {}),
    ("test_glove.txt", {"no_header": True}),
]


def _load(name, kw):
    path = name if os.path.isabs(name) else datapath(name)
    return KeyedVectors.load_word2vec_format(path, **kw)


@pytest.fixture(scope="module")
def sample_kv():
    return _load(SAMPLE, {})


def _write(tmp_path, name, text, mode="w"):
    p = tmp_path / name
    if mode == "wb":
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf8")
    return str(p)


# ------------------------------------------------------------------------------------------
# Parsers
# ------------------------------------------------------------------------------------------


def test_read_word_pairs_real_file():
    w1, w2, scores, lines = ev.read_word_pairs(WORDSIM)
    assert len(w1) == len(w2) == len(scores) == len(lines) == 353
    assert (w1[0], w2[0], scores[0]) == ("love", "sex", 6.77)
    assert lines[0] == 3  # two comment lines first


def test_read_word_pairs_skips_comments_blank_lines_and_crlf(tmp_path):
    p = _write(tmp_path, "p.tsv", "# header\r\n\r\ncat\tdog\t7.5\r\n  \nCat\tfox\t-1e0\r\n")
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
    p = _write(tmp_path, "bad.tsv", text)
    with pytest.raises(FormatError) as info:
        ev.read_word_pairs(p)
    assert info.value.path == p and info.value.line == line
    assert fragment in str(info.value) and p in str(info.value)
    assert f"line {line}" in str(info.value)


@pytest.mark.parametrize("text", ["", "# only a comment\n\n"])
def test_read_word_pairs_empty_file(tmp_path, text):
    p = _write(tmp_path, "empty.tsv", text)
    with pytest.raises(FormatError, match="no word pairs found") as info:
        ev.read_word_pairs(p)
    assert info.value.path == p


def test_read_word_pairs_undecodable(tmp_path):
    p = _write(tmp_path, "latin.tsv", b"cat\tdog\t1\ncaf\xe9\tdog\t2\n", mode="wb")
    with pytest.raises(FormatError, match="cannot decode") as info:
        ev.read_word_pairs(p)
    assert info.value.line == 2
    w1, _, _, _ = ev.read_word_pairs(p, encoding="latin-1")
    assert w1[1] == "café"


def test_read_word_pairs_other_delimiter(tmp_path):
    p = _write(tmp_path, "p.csv", "cat,dog,3\n")
    assert ev.read_word_pairs(p, delimiter=",")[0] == ["cat"]


def test_read_analogies_real_file():
    sections = ev.read_analogies(QUESTIONS)
    assert len(sections) == 14
    assert sections[0][0] == "capital-common-countries"
    assert sections[0][1][:4] == ["Athens", "Greece", "Baghdad", "Iraq"]
    assert sum(len(s[1]) for s in sections) == 4 * 19544
    assert sections[0][2] == 1


def _flat(sections):
    return [(name, words) for name, words, _ in sections]


def test_read_analogies_fast_and_slow_paths_agree(tmp_path):
    text = ": one\na b c d\n\ne f g h\n: two\ni j k l\n"
    clean = ev.read_analogies(_write(tmp_path, "clean.txt", text))
    # Tabs, CR/LF, doubled and trailing spaces force the line-by-line path.
    messy = ev.read_analogies(
        _write(tmp_path, "messy.txt", text.replace("\n", "\r\n").replace("a b", "a\t b  ") + " ")
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
    p = _write(tmp_path, "bad.txt", text)
    with pytest.raises(FormatError) as info:
        ev.read_analogies(p)
    assert info.value.path == p and info.value.line == line, str(info.value)
    assert fragment in str(info.value)


@pytest.mark.parametrize("text", ["", "\n\n", ": only a section\n"])
def test_read_analogies_empty(tmp_path, text):
    with pytest.raises(FormatError, match="no analogy questions"):
        ev.read_analogies(_write(tmp_path, "e.txt", text))


def test_read_analogies_non_ascii(tmp_path):
    p = _write(tmp_path, "u.txt", ": jp\n日本 東京 france paris\n")
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
    for i in range(3000):
        lines.append(" ".join(vocab[j] for j in rng.integers(0, len(vocab), 4)))
    lines.append(" ".join(["p" * 15] * 4))  # 63 bytes
    lines.append(" ".join(["p" * 15] * 3 + ["p" * 16]))  # 64 bytes
    lines.append("a b c d")
    text = "\n".join(lines)
    got = ev.read_analogies(_write(tmp_path, "big.txt", text))
    assert got == _reference_sections(text)
    assert len(ev._parse_analogies(_write(tmp_path, "big.txt", text)).words) == len(
        {w for _, words, _ in got for w in words})


def test_analogies_non_ascii_whitespace_split_like_python(tmp_path):
    # U+3000 and U+00A0 separate words for str.split(): the kernel (ASCII separators only) is
    # not used for such files, and the result is Python's.
    text = ": s\n日本\u3000東京 a\xa0b\n"
    p = _write(tmp_path, "ws.txt", text)
    assert ev.read_analogies(p) == [("s", ["日本", "東京", "a", "b"], 1)]


def test_read_analogies_other_encoding(tmp_path):
    p = _write(tmp_path, "latin.txt", ": s\ncaf\xe9 b c d\n".encode("latin-1"), mode="wb")
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
    assert ev.read_analogies(_write(tmp_path, "c.txt", text)) == [("s", list("abcdefgh"), 2)]


@pytest.mark.parametrize("text", ["# only a comment\n", "# one\n# two\n: s\n# three\n"])
def test_analogies_with_only_comments_have_no_questions(tmp_path, text):
    p = _write(tmp_path, "c.txt", text)
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
    cut = _write(tmp_path, "cut.tsv.gz", data[: len(data) // 2], mode="wb")
    with pytest.raises(FormatError, match="cannot decompress the gzip data") as info:
        ev.read_word_pairs(cut)
    assert info.value.path == cut
    # A text file that merely starts like a bz2 stream's "BZh" is read as text.
    p = _write(tmp_path, "bzh.tsv", "BZh9\tdog\t1\n")
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
    kv = _load(name, kw)
    for questions in (QUESTIONS, SAMPLE_ANALOGIES):
        expected = kv.evaluate_word_analogies(questions, **options)
        got = ev.evaluate_word_analogies(kv, questions, **options)
        assert got[0] == expected[0]
        assert got[1] == expected[1]


@pytest.mark.parametrize("name, kw", REAL_VECTORS[:3] + [(SAMPLE, {})])
@pytest.mark.parametrize("options", OPTIONS)
def test_pairs_equal_gensim(name, kw, options):
    kv = _load(name, kw)
    for pairs in (WORDSIM, SIMLEX, SAMPLE_PAIRS):
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
    kv = KeyedVectors(vector_size=8)
    kv.add_vectors(keys, vectors)
    q = _write(tmp_path, "q.txt", ": caps\nfrance paris italy rome\nitaly rome france PARIS\n")
    pairs = _write(tmp_path, "p.tsv", "paris\tfrance\t9\nrome\titaly\t8\nberlin\tparis\t1\n")
    for options in OPTIONS:
        assert ev.evaluate_word_analogies(kv, q, **options) == kv.evaluate_word_analogies(
            q, **options
        )
        g = kv.evaluate_word_pairs(pairs, **options)
        e = ev.evaluate_word_pairs(kv, pairs, **options)
        assert e[1][0] == pytest.approx(g[1][0]) and e[2] == g[2]


def test_pairs_all_unknown_is_value_error(sample_kv, tmp_path):
    p = _write(tmp_path, "p.tsv", "zzzz\tyyyy\t1\nqqqq\tcat\t2\n")
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
    kv = KeyedVectors(vector_size=8)
    kv.add_vectors(keys, vectors)
    return kv, _write(tmp_path, "q.txt", ": family\nman king woman queen\n")


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
def sample_store(tmp_path_factory, sample_kv):
    import embq

    path = str(tmp_path_factory.mktemp("ev") / "sample.embq")
    embq.save(path, sample_kv.vectors, list(sample_kv.index_to_key))
    store = embq.open(path)
    yield store
    store.close()


@pytest.fixture(scope="module")
def euclid(tmp_path_factory):
    import embq

    kv = _load("euclidean_vectors.bin", {"binary": True})
    path = str(tmp_path_factory.mktemp("ev") / "euclid.embq")
    embq.save(path, kv.vectors, list(kv.index_to_key))
    store = embq.open(path)
    yield kv, store
    store.close()


def _dequantized_kv(store):
    from embq._quantize import dequantize

    kv = KeyedVectors(vector_size=store.dim)
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
    for pairs in (WORDSIM, SIMLEX):
        got = store.evaluate_word_pairs(pairs)
        expected = deq.evaluate_word_pairs(pairs)
        np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(expected[1]))
        np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(expected[0]))
        assert got[2] == expected[2]


def test_store_pairs_close_to_float(euclid, sample_store, sample_kv):
    kv, store = euclid
    for backend, floats, pairs in [
        (store, kv, WORDSIM), (store, kv, SIMLEX), (sample_store, sample_kv, SAMPLE_PAIRS)
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
        (euclid[1], euclid[0], QUESTIONS),
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
    got = ev.evaluate_word_analogies(store, QUESTIONS, rescore=8)
    expected = deq.evaluate_word_analogies(QUESTIONS)
    assert got == expected


def test_store_analogies_options_and_vocabulary_cache(euclid):
    """Every option, in an order that makes the per-store vocabulary cache switch settings
    and come back: always gensim's answers on the dequantized rows."""
    _, store = euclid
    deq = _dequantized_kv(store)
    for options in OPTIONS + OPTIONS[::-1]:
        got = ev.evaluate_word_analogies(store, QUESTIONS, rescore=8, **options)
        assert got == deq.evaluate_word_analogies(QUESTIONS, **options), options


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


def test_store_keys_bulk_read_equals_iteration(tmp_path, monkeypatch):
    import h5py

    import embq
    from embq._errors import StoreError

    keys = ["Paris", "café", "日本", "a b", "x", "東京", "paris"]
    path = str(tmp_path / "k.embq")
    embq.save(path, np.ones((len(keys), 3), np.float32), keys)
    monkeypatch.setattr(ev, "_BULK_KEYS", 0)
    with embq.open(path) as store:
        backend = ev._as_backend(store)
        for limit in range(len(keys) + 2):
            assert backend.keys(limit) == keys[:limit]
            assert ev._read_keys_bulk(path, min(limit, len(keys))) == keys[:limit]
    # A key holding a newline cannot be split out of the blob: iteration takes over.
    nl_keys = ["a", "b\nc", "d"]
    nl_path = str(tmp_path / "nl.embq")
    embq.save(nl_path, np.ones((3, 3), np.float32), nl_keys)
    assert ev._read_keys_bulk(nl_path, 3) is None
    with embq.open(nl_path) as store:
        assert ev._as_backend(store).keys(3) == nl_keys
    # Offsets running backwards inside the file are reported, not followed.
    with h5py.File(path, "r+") as f:
        f["keys/offsets"][2] = 1
    with pytest.raises(StoreError, match="not a non-decreasing run") as info:
        ev._read_keys_bulk(path, len(keys))
    assert info.value.path == path


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


def test_compare_with_original(sample_store, sample_kv):
    import embq

    res = embq.compare_with_original(
        sample_store, SAMPLE, pairs=[SAMPLE_PAIRS, WORDSIM], analogies=SAMPLE_ANALOGIES,
        sample=200,
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
    import embq

    x = np.eye(6, dtype=np.float32) * 3 + 0.01
    path = str(tmp_path / "t.embq")
    embq.save(path, x, [f"w{i}" for i in range(6)])
    with embq.open(path) as store:
        res = ev.compare_with_original(store, ([f"w{i}" for i in range(6)], x), sample=10, k=1)
    assert res["recall"]["queries"] == 6
    assert res["recall"]["recall"] == 1.0 and res["recall"]["recall_rescore"] == 1.0


def test_compare_rejects_other_original(sample_store, sample_kv):
    keys = list(sample_kv.index_to_key)
    with pytest.raises(ValueError, match="has shape"):
        ev.compare_with_original(sample_store, (keys[:10], sample_kv.vectors[:10]))
    swapped = [keys[1], keys[0]] + keys[2:]
    with pytest.raises(ValueError, match="key 0 differs"):
        ev.compare_with_original(sample_store, (swapped, sample_kv.vectors))


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
    import embq

    kv = _load("word2vec_pre_kv_c", {})
    path = str(tmp_path / "w.embq")
    embq.save(path, kv.vectors, list(kv.index_to_key))
    with embq.open(path) as store:
        res = ev.compare_with_original(store, kv, sample=300, seed=3)["recall"]
        rows = np.sort(np.random.default_rng(3).choice(len(store), size=300, replace=False))
        plain = _recall_oracle(kv.vectors, rows, store.search(kv.vectors[rows], k=10)[1], 10)
        rescored = _recall_oracle(
            kv.vectors, rows, store.search(kv.vectors[rows], k=10, rescore=4)[1], 10)
    assert res["queries"] == 300
    assert plain < 0.95 and rescored - plain > 0.005  # the case tells the two apart
    # One tied neighbour may fall either side between float32 and float64 scores.
    assert res["recall"] == pytest.approx(plain, abs=2 / 3000)
    assert res["recall_rescore"] == pytest.approx(rescored, abs=2 / 3000)


def test_compare_refuses_k_not_below_rows(sample_store, sample_kv):
    n = len(sample_store)
    with pytest.raises(ValueError, match=f"k={n} is not below the store's 3,162 rows"):
        ev.compare_with_original(sample_store, sample_kv, k=n)
    # Without recall, k does not matter.
    res = ev.compare_with_original(sample_store, sample_kv, k=n, sample=0)
    assert "recall" not in res


def _compress(src, dst, **kw):
    import embq

    warnings = []
    embq.compress(src, dst, overwrite=True, warn=warnings.append, **kw)
    return warnings


def test_compare_normalized_store_normalizes_the_original(tmp_path):
    import embq
    from embq._quantize import quantize

    path = str(tmp_path / "n.embq")
    _compress(SAMPLE, path, normalize=True)
    with embq.open(path) as store:
        assert store.attrs["normalized"] is True
        res = ev.compare_with_original(store, SAMPLE, sample=100)
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
        rec_kv = ev.compare_with_original(store, _load(SAMPLE, {}), sample=0)["reconstruction"]
        assert rec_kv["error_max_abs_over_scale"] <= 0.5 + 1e-6


def sample_floats():
    from embq._readers import load_embeddings

    return load_embeddings(SAMPLE)[1]


def test_compare_limit_and_duplicates_line_up_with_the_store(tmp_path):
    """compress --limit 3 on a file whose third row repeats the first key: the store holds
    a, b; the original is cut to 3 rows and its later 'a' dropped, as compress did."""
    import embq

    src = _write(tmp_path, "d.txt", "4 2\na 1 2\nb 3 -4\na 5 6\nc 7 8\n")
    path = str(tmp_path / "d.embq")
    warnings = _compress(src, path, limit=3)
    assert "1 duplicate key" in warnings[0]
    with embq.open(path) as store:
        assert store.attrs["source_limit"] == 3 and store.attrs["source_duplicates"] == 1
        res = ev.compare_with_original(store, src, sample=0)
        assert res["original_options"]["limit"] == 3
        assert res["original_options"]["format"] == "word2vec"
        assert res["original_options"]["duplicates_dropped"] == 1
        assert res["reconstruction"]["error_max_abs_over_scale"] <= 0.5 + 1e-6
        # An explicit limit wins: all 4 rows, one duplicate, 3 keys, not the store's 2.
        with pytest.raises(ValueError, match=r"has shape \(3, 2\) but the store has \(2, 2\)"):
            ev.compare_with_original(store, src, sample=0, limit=4)
    # Duplicates alone (no limit), and the same file as (keys, vectors).
    path2 = str(tmp_path / "d2.embq")
    _compress(src, path2)
    with embq.open(path2) as store:
        assert len(store) == 3
        res = ev.compare_with_original(store, src, sample=0)
        assert res["original_options"]["duplicates_dropped"] == 1
        assert res["reconstruction"]["error_max_abs_over_scale"] <= 0.5 + 1e-6
        keys = ["a", "b", "a", "c"]
        x = np.array([[1, 2], [3, -4], [5, 6], [7, 8]], np.float32)
        res = ev.compare_with_original(store, (keys, x), sample=0)
        assert res["reconstruction"]["error_max_abs_over_scale"] <= 0.5 + 1e-6


def test_compare_format_from_the_store_for_its_source_file(tmp_path):
    """A GloVe file whose first line looks like a word2vec header ("100 5") is read as GloVe
    only with format='glove': the store records it, and its source file is read that way."""
    import shutil

    import embq
    from embq._errors import FormatError

    src = _write(tmp_path, "g.txt", "100 5\n200 6\n300 -7\n")
    path = str(tmp_path / "g.embq")
    _compress(src, path, format="glove")
    with embq.open(path) as store:
        assert store.attrs["source_format"] == "glove"
        res = ev.compare_with_original(store, src, sample=0)
        assert res["original_options"]["format"] == "glove"
        assert any("source_format" in note for note in res["original_notes"])
        assert res["reconstruction"]["error_max_abs_over_scale"] <= 0.5 + 1e-6
        # Another file is not the store's source: detected, unless the format is given.
        other = str(tmp_path / "copy.txt")
        shutil.copy(src, other)
        with pytest.raises(FormatError):
            ev.compare_with_original(store, other, sample=0)
        res = ev.compare_with_original(store, other, sample=0, format="glove")
        assert res["original_options"]["format"] == "glove"


def test_compare_npy_keys_from_the_store(tmp_path):
    import embq

    kv = _load(SAMPLE, {})
    keys_file = _write(tmp_path, "keys.txt", "\n".join(kv.index_to_key) + "\n")
    npy = str(tmp_path / "v.npy")
    np.save(npy, kv.vectors)
    path = str(tmp_path / "npy.embq")
    _compress(npy, path, keys=keys_file)
    with embq.open(path) as store:
        assert store.has_keys
        # The source .npy: its keys file from the store's source_keys_path.
        res = ev.compare_with_original(store, npy, pairs=[SAMPLE_PAIRS], sample=0)
        assert res["original_options"]["keys"] == os.path.abspath(keys_file)
        assert res["original_options"]["keys_from_store"] is False
        assert res["pairs"][0]["original"]["used"] == 150
        # A copy without keys file: the store's keys, said so.
        copy = str(tmp_path / "copy.npy")
        np.save(copy, kv.vectors)
        res = ev.compare_with_original(store, copy, pairs=[SAMPLE_PAIRS],
                                       analogies=SAMPLE_ANALOGIES, sample=50)
        assert res["original_options"]["keys_from_store"] is True
        assert any("store's keys" in note for note in res["original_notes"])
        assert res["pairs"][0]["original"]["spearman"] == pytest.approx(
            kv.evaluate_word_pairs(SAMPLE_PAIRS)[1][0], abs=1e-12)
        assert res["analogies"]["original"]["accuracy"] == 1.0
        # Or given explicitly.
        res = ev.compare_with_original(store, copy, keys=keys_file, sample=0)
        assert res["original_options"]["keys_from_store"] is False
        assert res["original_options"]["format"] == "npy"
        # The store's keys file gone: said so, and the store's keys are used.
        os.remove(keys_file)
        res = ev.compare_with_original(store, npy, sample=0)
        assert any("no longer exists" in note for note in res["original_notes"])
        assert res["original_options"]["keys_from_store"] is True
        # A keyless original of another shape is still refused.
        np.save(copy, kv.vectors[:-1])
        with pytest.raises(ValueError, match="has shape"):
            ev.compare_with_original(store, copy, sample=0)


def test_compare_uses_recorded_encoding_options(tmp_path):
    """compress records how it decoded keys (source_encoding / source_unicode_errors), and
    the source file is read back that way without options."""
    import embq

    src = _write(tmp_path, "l.txt", "2 2\ncaf\xe9 1 2\nx\xff 3 4\n".encode("latin-1"),
                 mode="wb")
    path = str(tmp_path / "l.embq")
    _compress(src, path, encoding="latin-1")
    with embq.open(path) as store:
        assert store.attrs["source_encoding"] == "latin-1"
        assert store.attrs["source_unicode_errors"] == "strict"
        res = ev.compare_with_original(store, src, sample=0)
    assert res["original_options"]["encoding"] == "latin-1"
    assert any("source_encoding" in note for note in res["original_notes"])
    path2 = str(tmp_path / "r.embq")
    _compress(src, path2, unicode_errors="replace")
    with embq.open(path2) as store:
        res = ev.compare_with_original(store, src, sample=0)
    assert res["original_options"]["unicode_errors"] == "replace"


def test_compare_reader_options_are_checked(sample_store, sample_kv):
    with pytest.raises(ValueError, match="format only applies when the original is a file"):
        ev.compare_with_original(sample_store, sample_kv, format="glove")
    with pytest.raises(ValueError, match="limit must be a positive number"):
        ev.compare_with_original(sample_store, SAMPLE, limit=0)
    with pytest.raises(ValueError, match="no original was given"):
        ev.evaluate_store(sample_store, limit=5)


def test_compare_pair_file_without_known_pair_raises_like_gensim(sample_store, sample_kv,
                                                                  tmp_path):
    p = _write(tmp_path, "p.tsv", "zzzz\tyyyy\t1\nqqqq\tcat\t2\n")
    with pytest.raises(ValueError, match="No valid similarity judgements found in .*p.tsv"):
        sample_kv.evaluate_word_pairs(p)
    with pytest.raises(ValueError, match="No valid similarity judgements found in .*p.tsv"):
        ev.compare_with_original(sample_store, sample_kv, pairs=[p], sample=0)


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------


def test_cli_table_and_json(sample_store, capsys):
    from embq.cli import main

    argv = ["evaluate", sample_store.path, "--against", SAMPLE, "--pairs", SAMPLE_PAIRS,
            "--analogies", SAMPLE_ANALOGIES, "--sample", "100"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for fragment in ("reconstruction error", "recall@10", "rescore=4", "sample.pairs.tsv spearman",
                     "capital-world", "Total accuracy", "378/378"):
        assert fragment in out, fragment
    assert main(argv + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["analogies"]["store"]["accuracy"] == 1.0
    assert data["recall"]["queries"] == 100
    assert data["pairs"][0]["store"]["used"] == data["pairs"][0]["store"]["pairs"] - \
        data["pairs"][0]["store"]["oov"]


def test_cli_store_only(sample_store, capsys):
    from embq.cli import main

    assert main(["evaluate", sample_store.path, "--pairs", SAMPLE_PAIRS]) == 0
    out = capsys.readouterr().out
    assert "sample.pairs.tsv spearman" in out and "original" not in out


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("cat\tdog\n", "line 1: expected 3 fields"),
        ("cat\tdog\tvery\n", "line 1: score 'very' is not a finite number"),
        ("", "no word pairs found"),
    ],
)
def test_cli_bad_pair_file(sample_store, tmp_path, capsys, content, fragment):
    from embq.cli import main

    bad = _write(tmp_path, "bad.tsv", content)
    assert main(["evaluate", sample_store.path, "--pairs", bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("embq evaluate: error: ") and bad in err and fragment in err
    assert "Traceback" not in err


def test_cli_bad_analogy_file_and_missing_files(sample_store, tmp_path, capsys):
    from embq.cli import main

    bad = _write(tmp_path, "bad.txt", ": s\na b c\n")
    assert main(["evaluate", sample_store.path, "--analogies", bad]) == 2
    assert "line 2: expected 4 words" in capsys.readouterr().err
    assert main(["evaluate", sample_store.path, "--pairs", str(tmp_path / "nope.tsv")]) == 2
    assert "nope.tsv: no such file" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nope.embq")]) == 2
    assert "nope.embq" in capsys.readouterr().err


def test_cli_subprocess(sample_store, run_python):
    proc = run_python("-m", "embq", "evaluate", sample_store.path, "--analogies",
                      SAMPLE_ANALOGIES, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["analogies"]["store"]["answered"] == 378


def test_keyless_store(tmp_path):
    import embq

    x = np.random.default_rng(3).normal(size=(50, 8)).astype(np.float32)
    path = str(tmp_path / "nokeys.embq")
    embq.save(path, x)
    with embq.open(path) as store:
        res = ev.compare_with_original(store, (None, x), sample=20)
        assert res["recall"]["queries"] == 20 and res["pairs"] == []
        assert res["reconstruction"]["error_max_abs_over_scale"] <= 0.5 + 1e-3
        with pytest.raises(ValueError, match="has no keys"):
            ev.evaluate_word_pairs(store, SAMPLE_PAIRS)


def _strict_json(text):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_cli_json_has_null_for_nan(sample_store, tmp_path, capsys):
    """Constant human scores make both correlations NaN (gensim returns NaN too): the JSON
    says null, and strict parsers accept it."""
    from embq.cli import main

    p = _write(tmp_path, "const.tsv", "cat\tdog\t5\nparis\tfrance\t5\ncat\tparis\t5\n")
    assert main(["evaluate", sample_store.path, "--against", SAMPLE, "--pairs", p,
                 "--sample", "20", "--json"]) == 0
    out, err = capsys.readouterr()
    assert "NaN" not in out and "Warning" not in err
    entry = _strict_json(out)["pairs"][0]
    assert entry["store"]["spearman"] is None and entry["original"]["pearson"] is None
    assert entry["diff"]["spearman"] is None
    assert entry["store"]["used"] == 3
    # The table says nan, and why.
    assert main(["evaluate", sample_store.path, "--pairs", p]) == 0
    out, err = capsys.readouterr()
    assert "const.tsv spearman                nan" in out and "undefined" in out
    assert "Warning" not in err
    # The Python API warns and returns NaN, as gensim.
    with pytest.warns(Warning, match="constant"):
        pearson, spearman, _ = ev.evaluate_word_pairs(sample_store, p)
    assert np.isnan(spearman[0]) and np.isnan(pearson[0])


def test_json_ready():
    from embq._cmd_evaluate import json_ready

    got = json_ready({"a": float("nan"), "b": [1.5, float("inf"), {"c": -float("inf")}],
                      "d": (2, "x"), "e": None, "f": True})
    assert got == {"a": None, "b": [1.5, None, {"c": None}], "d": [2, "x"], "e": None,
                   "f": True}
    assert _strict_json(json.dumps(got)) == got


def _cli(capsys, *argv):
    from embq.cli import main

    code = main(["evaluate", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_cli_pair_file_without_known_pair_fails(sample_store, tmp_path, capsys):
    p = _write(tmp_path, "unknown.tsv", "zzzz\tyyyy\t1\nqqqq\tcat\t2\n")
    for extra in ([], ["--against", SAMPLE, "--sample", "0"]):
        code, out, err = _cli(capsys, sample_store.path, "--pairs", p, *extra)
        assert code == 2 and out == ""
        assert err.startswith("embq evaluate: error: No valid similarity judgements found in")
        assert p in err and "2 pairs" in err


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--threads", "0"], "--threads must be a positive count, got 0; use a positive count "
                             "or omit --threads"),
        (["--restrict-vocab", "-5"], "--restrict-vocab must be a positive number of keys, got -5"),
        (["--restrict-vocab", "0"], "--restrict-vocab must be a positive number of keys, got 0"),
        (["--against", SAMPLE, "-k", "5000"], "-k 5000 is not below the store's 3,162 rows"),
        (["--against", SAMPLE, "-k", "3162"], "-k 3162 is not below the store's 3,162 rows"),
        (["--against", SAMPLE, "--limit", "0"], "--limit must be a positive number of rows"),
        (["--limit", "5"], "--limit only applies to reading the original; give it with --against"),
        (["--format", "glove", "--encoding", "latin-1"],
         "--format, --encoding only apply to reading the original"),
        (["--against", SAMPLE, "--keys", "/nonexistent/keys.txt"],
         "/nonexistent/keys.txt: no such file"),
    ],
)
def test_cli_refuses_bad_options(sample_store, capsys, argv, fragment):
    code, out, err = _cli(capsys, sample_store.path, "--pairs", SAMPLE_PAIRS, *argv)
    assert code == 2 and out == ""
    assert err.startswith("embq evaluate: error: ") and fragment in err, err
    assert "None" not in err


def test_cli_k_below_rows_and_without_recall(sample_store, capsys):
    code, out, _ = _cli(capsys, sample_store.path, "--against", SAMPLE, "-k", "3161",
                        "--sample", "2")
    assert code == 0 and "recall@3161" in out
    code, out, _ = _cli(capsys, sample_store.path, "--against", SAMPLE, "-k", "5000",
                        "--sample", "0")
    assert code == 0 and "recall@" not in out


def test_cli_reader_options_and_store_defaults(tmp_path, capsys):
    """--encoding, --unicode-errors, --format, --keys and --limit read the original as
    compress did; the store's source_format and source_limit fill in for its source file."""
    import shutil

    # Latin-1 keys: another file than the store's source, so nothing comes from the store.
    raw = "3 2\ncaf\xe9 1 2\nna\xefve 3 -4\nx 5 6\n".encode("latin-1")
    src = _write(tmp_path, "latin.txt", raw, mode="wb")
    path = str(tmp_path / "latin.embq")
    _compress(src, path, encoding="latin-1")
    other = str(tmp_path / "latin-copy.txt")
    shutil.copy(src, other)
    code, _, err = _cli(capsys, path, "--against", other, "--sample", "0")
    assert code == 2 and f"{other}, line 2" in err and "--encoding" in err
    code, out, _ = _cli(capsys, path, "--against", other, "--sample", "0", "--encoding",
                        "latin-1", "--json")
    data = _strict_json(out)
    assert code == 0 and data["original_options"]["encoding"] == "latin-1"
    assert data["reconstruction"]["error_max_abs_over_scale"] <= 0.5 + 1e-6
    # Undecodable bytes replaced: the keys match the store's only with the same choice.
    path2 = str(tmp_path / "replace.embq")
    _compress(src, path2, unicode_errors="replace")
    code, _, err = _cli(capsys, path2, "--against", other, "--sample", "0")
    assert code == 2 and f"{other}, line 2" in err
    code, out, _ = _cli(capsys, path2, "--against", other, "--sample", "0",
                        "--unicode-errors", "replace", "--json")
    assert code == 0 and _strict_json(out)["original_options"]["unicode_errors"] == "replace"

    # --format: taken from the store for its source file; given for another file.
    glove = _write(tmp_path, "g.txt", "100 5\n200 6\n300 -7\n")
    gpath = str(tmp_path / "g.embq")
    _compress(glove, gpath, format="glove", limit=2)
    code, out, _ = _cli(capsys, gpath, "--against", glove, "--sample", "0")
    assert code == 0
    assert "read as glove (the store's source_format)" in out
    assert "first 2 rows only (the store's source_limit)" in out
    gcopy = str(tmp_path / "g-copy.txt")
    shutil.copy(glove, gcopy)
    code, _, err = _cli(capsys, gpath, "--against", gcopy, "--sample", "0")
    assert code == 2 and gcopy in err
    code, out, _ = _cli(capsys, gpath, "--against", gcopy, "--sample", "0", "--format",
                        "glove", "--json")
    data = _strict_json(out)
    assert code == 0 and data["original_options"]["format"] == "glove"
    assert data["original_options"]["limit"] == 2  # from the store, for any file
    code, _, err = _cli(capsys, gpath, "--against", gcopy, "--sample", "0", "--format",
                        "glove", "--limit", "3")
    assert code == 2 and "has shape (3, 1) but the store has (2, 1)" in err

    # --keys for a .npy; without it a keyless .npy of the store's shape takes its keys.
    npy = str(tmp_path / "v.npy")
    np.save(npy, np.array([[1, 2], [3, -4], [5, 6]], np.float32))
    keys = _write(tmp_path, "keys.txt", "café\nnaïve\nx\n")
    code, out, _ = _cli(capsys, path, "--against", npy, "--keys", keys, "--sample", "0",
                        "--json")
    assert code == 0 and _strict_json(out)["original_options"]["keys"] == keys
    code, out, _ = _cli(capsys, path, "--against", npy, "--sample", "0")
    assert code == 0
    assert "the original has no keys: the store's keys are used (rows in the same order)" in out


def test_cli_reader_choices_are_the_readers():
    from embq import _cmd_evaluate
    from embq import _readers as readers

    assert _cmd_evaluate.FORMATS == readers.FORMATS
    assert _cmd_evaluate.UNICODE_ERRORS == readers.UNICODE_ERRORS


def test_cli_normalized_store(tmp_path, capsys):
    path = str(tmp_path / "n.embq")
    _compress(SAMPLE, path, normalize=True)
    code, out, _ = _cli(capsys, path, "--against", SAMPLE, "--sample", "50", "--json")
    assert code == 0
    rec = _strict_json(out)["reconstruction"]
    assert 0.2 < rec["error_mean_abs_over_scale"] < 0.3
    assert rec["error_max_abs_over_scale"] <= 0.5 + 1e-6
