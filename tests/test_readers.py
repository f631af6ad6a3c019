"""Tests for embq.readers and the Cython parsers in embq._kernels_parse."""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embq import _kernels_parse as kp
from embq.errors import FormatError
from embq.readers import (
    FASTTEXT_MAGIC,
    detect_format,
    load_embeddings,
    open_embeddings,
)

# --------------------------------------------------------------------------------------------
# helpers


def parse_line_values(tokens: list[str]) -> tuple[tuple, np.ndarray]:
    buf = ("k " + " ".join(tokens) + "\n").encode()
    out = np.zeros((1, len(tokens)), np.float32)
    ks = np.zeros(1, np.intp)
    ke = np.zeros(1, np.intp)
    res = kp.parse_text_block(buf, 0, len(buf), out, 0, ks, ke)
    return res, out[0]


def expected_f32(tok: str) -> np.float32:
    with np.errstate(over="ignore"):
        return np.float32(float(tok))


def write(path, data: bytes | str):
    path.write_bytes(data.encode("utf8") if isinstance(data, str) else data)
    return str(path)


def w2v_text(keys, X, header=True, fmt="%.6f", sep=" ", eol="\n") -> str:
    lines = [f"{len(keys)} {X.shape[1]}"] if header else []
    for k, row in zip(keys, X):
        lines.append(k + sep + sep.join(fmt % v for v in row))
    return eol.join(lines) + eol


def w2v_binary(keys, X, newline=True, count=None) -> bytes:
    parts = [f"{len(keys) if count is None else count} {X.shape[1]}\n".encode()]
    for k, row in zip(keys, X):
        parts.append(k.encode() + b" " + row.astype("<f4").tobytes() + (b"\n" if newline else b""))
    return b"".join(parts)


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    keys = [f"w{i}" for i in range(50)] + ["café", "日本", "123", "-1.5", "東京"]
    X = rng.standard_normal((len(keys), 6)).astype(np.float32)
    return keys, X


def err(fn, *args, **kw) -> FormatError:
    with pytest.raises(FormatError) as info:
        fn(*args, **kw)
    return info.value


# --------------------------------------------------------------------------------------------
# the float parser


FIXED_TOKENS = [
    "0", "-0", "+0", "0.0", "-0.0", "1", "-1", "+1.5", ".5", "-.5", "5.", "1e5", "1E5", "1e+05",
    "1e-05", "-2.5E-3", "3.4028234663852886e38", "3.4028235e38", "1.17549435e-38", "1e-45",
    "1.4e-45", "7e-46", "1e-50", "0.000000000000000000000000000001234", "123456789012345678901234",
    "1.00000005960464477539062500000000001", "1.000000059604644775390625",
    "0.1", "0.2", "0.3", "16777217", "16777216.5", "9007199254740993", "2.5e-324", "1e-400",
    "-0.0000001", "00012.5000", "1" + "0" * 30, "0." + "0" * 40 + "1", "123.456e-2",
    "3.4028235677973362e38", "-0.070707", "0.780362",
]


def test_parser_fixed_tokens_match_python():
    res, got = parse_line_values(FIXED_TOKENS)
    assert res[2] == kp.OK, res
    exp = np.array([expected_f32(t) for t in FIXED_TOKENS], np.float32)
    assert np.array_equal(got.view(np.uint32), exp.view(np.uint32)), [
        (t, g, e) for t, g, e in zip(FIXED_TOKENS, got, exp) if g.tobytes() != e.tobytes()
    ]


decimal_tokens = st.builds(
    lambda sign, ip, fp, exp: sign + ip + ("." + fp if fp is not None else "") + exp,
    st.sampled_from(["", "-", "+"]),
    st.text("0123456789", min_size=1, max_size=25),
    st.one_of(st.none(), st.text("0123456789", min_size=0, max_size=25)),
    st.one_of(st.just(""), st.builds(lambda e, s, d: e + s + str(d), st.sampled_from("eE"),
                                     st.sampled_from(["", "-", "+"]),
                                     st.integers(0, 60))),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(decimal_tokens, min_size=1, max_size=40))
def test_parser_random_decimals_match_python(tokens):
    exp = np.array([expected_f32(t) for t in tokens], np.float32)
    finite = np.isfinite(exp)
    tokens = [t for t, f in zip(tokens, finite) if f]
    if not tokens:
        return
    res, got = parse_line_values(tokens)
    assert res[2] == kp.OK
    assert np.array_equal(got.view(np.uint32), exp[finite].view(np.uint32))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1,
                max_size=50))
def test_parser_float32_repr_roundtrip(values):
    tokens = [repr(float(v)) for v in values] + ["%.9g" % v for v in values]
    res, got = parse_line_values(tokens)
    assert res[2] == kp.OK
    exp = np.array([expected_f32(t) for t in tokens], np.float32)
    assert np.array_equal(got.view(np.uint32), exp.view(np.uint32))


@pytest.mark.parametrize("tok,status", [
    ("nan", kp.NONFINITE), ("NaN", kp.NONFINITE), ("-inf", kp.NONFINITE), ("+Inf", kp.NONFINITE),
    ("infinity", kp.NONFINITE), ("1e39", kp.OUT_OF_RANGE), ("-3.5e38", kp.OUT_OF_RANGE),
    ("1e400", kp.OUT_OF_RANGE), ("abc", kp.BAD_NUMBER), ("1.2.3", kp.BAD_NUMBER),
    ("1,5", kp.BAD_NUMBER), ("1e", kp.BAD_NUMBER), ("1e+", kp.BAD_NUMBER), ("-", kp.BAD_NUMBER),
    (".", kp.BAD_NUMBER), ("0x10", kp.BAD_NUMBER), ("1_000", kp.BAD_NUMBER), ("infx", kp.BAD_NUMBER),
    ("--1", kp.BAD_NUMBER), ("1e5.5", kp.BAD_NUMBER),
])
def test_parser_rejects(tok, status):
    res, _ = parse_line_values(["0.5", tok, "1"])
    assert res[2] == status
    assert res[3] == 6  # "k 0.5 " precedes the bad token


def test_parser_bounds_checked():
    out = np.zeros((2, 3), np.float32)
    ks = np.zeros(2, np.intp)
    with pytest.raises(ValueError, match="newline"):
        kp.parse_text_block(b"a 1 2 3", 0, 7, out, 0, ks, ks)
    with pytest.raises(ValueError, match="outside"):
        kp.parse_text_block(b"a 1 2 3\n", 0, 99, out, 0, ks, ks)
    with pytest.raises(ValueError, match="key span"):
        kp.parse_text_block(b"a 1 2 3\n", 0, 8, out, 0, ks[:1], ks[:1])
    with pytest.raises(ValueError, match="outside"):
        kp.parse_binary_block(b"a 1234", 0, 99, out, 0, ks, ks)


def test_selected_kernels():
    assert "parse_text" in kp.selected_kernels()


# --------------------------------------------------------------------------------------------
# formats


def check(keys, X, got_keys, got_X):
    assert got_keys == keys
    assert got_X.dtype == np.float32
    assert np.array_equal(got_X, X)


def test_word2vec_text(tmp_path, data):
    keys, X = data
    p = write(tmp_path / "a.txt", w2v_text(keys, X))
    assert detect_format(p) == "word2vec"
    X6 = np.array([[np.float32(float("%.6f" % v)) for v in r] for r in X], np.float32)
    check(keys, X6, *load_embeddings(p))


def test_glove(tmp_path, data):
    keys, X = data
    p = write(tmp_path / "a.txt", w2v_text(keys, X, header=False, fmt="%.9g"))
    assert detect_format(p) == "glove"
    check(keys, X, *load_embeddings(p))
    with open_embeddings(p) as r:
        assert r.format == "glove" and r.count is None and r.dim == 6


@pytest.mark.parametrize("newline", [True, False])
def test_word2vec_binary(tmp_path, data, newline):
    keys, X = data
    p = write(tmp_path / "a.bin", w2v_binary(keys, X, newline=newline))
    assert detect_format(p) == "word2vec-binary"
    check(keys, X, *load_embeddings(p))
    check(keys, X, *load_embeddings(p, block_rows=7))


def test_binary_vector_bytes_that_look_like_newlines_and_spaces(tmp_path):
    # Values whose bytes contain 0x0a and 0x20 must not confuse record boundaries.
    X = np.frombuffer(b"\n\n\n\x3f" + b"    " + b" \n \x3f" + b"\x20\x0a\x20\x40", "<f4").reshape(1, 4)
    X = np.repeat(X, 3, axis=0).astype(np.float32)
    keys = ["a", "b", "c"]
    p = write(tmp_path / "a.bin", w2v_binary(keys, X, newline=False))
    check(keys, X, *load_embeddings(p, format="word2vec-binary"))


@pytest.mark.parametrize("comp", ["gzip", "bz2", "xz"])
@pytest.mark.parametrize("kind", ["text", "binary", "glove"])
def test_compressed(tmp_path, data, comp, kind):
    keys, X = data
    raw = {"text": w2v_text(keys, X, fmt="%.9g").encode(),
           "glove": w2v_text(keys, X, header=False, fmt="%.9g").encode(),
           "binary": w2v_binary(keys, X)}[kind]
    packed = {"gzip": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[comp](raw)
    p = write(tmp_path / "a.any", packed)
    assert detect_format(p) == {"text": "word2vec", "glove": "glove",
                                "binary": "word2vec-binary"}[kind]
    check(keys, X, *load_embeddings(p, block_rows=5))
    with open_embeddings(p) as r:
        assert r.compression == comp
        list(r)
        assert r.bytes_read == len(packed)


def test_npy_plain_and_compressed(tmp_path, data):
    keys, X = data
    np.save(tmp_path / "a.npy", X.astype(np.float64))
    (tmp_path / "keys.txt").write_text("\n".join(keys) + "\n", encoding="utf8")
    p = str(tmp_path / "a.npy")
    assert detect_format(p) == "npy"
    got_keys, got = load_embeddings(p)
    assert got_keys is None and np.array_equal(got, X)
    check(keys, X, *load_embeddings(p, keys_path=str(tmp_path / "keys.txt"), block_rows=4))
    gz = write(tmp_path / "a.npy.gz", gzip.compress((tmp_path / "a.npy").read_bytes()))
    assert detect_format(gz) == "npy"
    check(keys, X, *load_embeddings(gz, keys_path=str(tmp_path / "keys.txt"), block_rows=4))
    # Fortran order is fine when not compressed (memory-mapped).
    np.save(tmp_path / "f.npy", np.asfortranarray(X))
    assert np.array_equal(load_embeddings(str(tmp_path / "f.npy"))[1], X)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_npy_blocks_are_copies_and_close_unmaps(tmp_path, data, order, dtype):
    # The reader drops the pages of rows it has handed out (bounded RSS on big arrays), so
    # the blocks must own their data and stay valid after the reader is closed.
    _, X = data
    np.save(tmp_path / "a.npy", np.asarray(X, dtype=dtype, order=order))
    blocks = []
    with open_embeddings(str(tmp_path / "a.npy"), block_rows=3) as r:
        for block in r:
            assert block.vectors.flags.owndata and block.vectors.flags.c_contiguous
            blocks.append(block.vectors)
    assert r._mmap is None
    np.testing.assert_array_equal(np.concatenate(blocks), X.astype(dtype).astype(np.float32))


def test_npy_problems(tmp_path, data):
    keys, X = data
    np.save(tmp_path / "a.npy", X)
    p = str(tmp_path / "a.npy")
    write(tmp_path / "few.txt", "\n".join(keys[:-1]) + "\n")
    e = err(load_embeddings, p, keys_path=str(tmp_path / "few.txt"))
    assert "keys file ends after" in str(e) and e.line == len(keys)
    write(tmp_path / "many.txt", "\n".join(keys + ["extra"]) + "\n")
    e = err(load_embeddings, p, keys_path=str(tmp_path / "many.txt"))
    assert "more keys" in str(e) and e.line == len(keys) + 1
    write(tmp_path / "empty_key.txt", "\n".join(keys[:3] + [""] + keys[4:]) + "\n")
    assert err(load_embeddings, p, keys_path=str(tmp_path / "empty_key.txt")).line == 4
    Y = X.copy()
    Y[3, 2] = np.nan
    np.save(tmp_path / "nan.npy", Y)
    assert "row 3" in str(err(load_embeddings, str(tmp_path / "nan.npy")))
    np.save(tmp_path / "big.npy", np.array([[1.0, 1e300]]))
    assert "float32 range" in str(err(load_embeddings, str(tmp_path / "big.npy")))
    np.save(tmp_path / "one.npy", np.zeros(5))
    assert "2-D" in str(err(load_embeddings, str(tmp_path / "one.npy")))
    full = (tmp_path / "a.npy").read_bytes()
    cut = write(tmp_path / "cut.npy.gz", gzip.compress(full[:-10]))
    assert "truncated" in str(err(load_embeddings, cut))


def test_keys_path_only_for_npy(tmp_path, data):
    keys, X = data
    p = write(tmp_path / "a.txt", w2v_text(keys, X))
    with pytest.raises(ValueError, match="only used with .npy"):
        open_embeddings(p, keys_path=p)


# --------------------------------------------------------------------------------------------
# valid oddities


def test_text_oddities_are_valid(tmp_path):
    text = ("4 3\r\n"
            "a 1 2 3   \r\n"
            "123\t4\t5\t6\n"
            "ü  -1.5e2 +.5 7.\t\n"
            "1.5 0 0 0")  # a numeric key, and no newline at the end
    p = write(tmp_path / "a.txt", text)
    keys, X = load_embeddings(p)
    assert keys == ["a", "123", "ü", "1.5"]
    assert X.tolist() == [[1, 2, 3], [4, 5, 6], [-150, 0.5, 7], [0, 0, 0]]


def test_trailing_blank_lines_ok(tmp_path, data):
    keys, X = data
    p = write(tmp_path / "a.txt", w2v_text(keys, X) + "\n  \n\r\n")
    assert load_embeddings(p)[0] == keys


def test_blocks_and_first_line(tmp_path, data):
    keys, X = data
    p = write(tmp_path / "a.txt", w2v_text(keys, X))
    with open_embeddings(p, block_rows=8) as r:
        blocks = list(r)
    assert [b.first_line for b in blocks] == list(range(2, len(keys) + 2, 8))
    assert sum(len(b.keys) for b in blocks) == len(keys)
    assert all(b.vectors.shape[1] == 6 and b.vectors.flags.c_contiguous for b in blocks)


def test_small_buffer_many_refills(tmp_path, data, monkeypatch):
    import embq.readers as readers

    keys, X = data
    monkeypatch.setattr(readers, "_BUFFER_BYTES", 64)
    monkeypatch.setattr(readers, "_SNIFF_BYTES", 64)
    for text in (w2v_text(keys, X, fmt="%.9g"), w2v_text(keys, X, header=False, fmt="%.9g")):
        p = write(tmp_path / "a.txt", text)
        check(keys, X, *load_embeddings(p, block_rows=3))
    p = write(tmp_path / "a.bin", w2v_binary(keys, X))
    check(keys, X, *load_embeddings(p, block_rows=3))


def test_limit(tmp_path, data):
    keys, X = data
    for p in (write(tmp_path / "a.txt", w2v_text(keys, X, fmt="%.9g")),
              write(tmp_path / "a.bin", w2v_binary(keys, X))):
        k, x = load_embeddings(p, limit=10)
        check(keys[:10], X[:10], k, x)
        assert load_embeddings(p, limit=1000)[0] == keys
    with pytest.raises(ValueError, match="limit"):
        open_embeddings(p, limit=0)


def test_limit_reads_prefix_of_truncated_or_longer_file(tmp_path, data):
    keys, X = data
    p = write(tmp_path / "a.txt", w2v_text(keys, X).replace(f"{len(keys)} 6", "1000 6", 1))
    assert len(load_embeddings(p, limit=len(keys))[0]) == len(keys)
    q = write(tmp_path / "b.txt", w2v_text(keys, X).replace(f"{len(keys)} 6", "5 6", 1))
    assert len(load_embeddings(q, limit=5)[0]) == 5


def test_unicode_errors(tmp_path):
    raw = b"2 2\nab\xe3\x81 1 2\nok 3 4\n"
    p = write(tmp_path / "a.txt", raw)
    e = err(load_embeddings, p)
    assert e.line == 2 and e.offset == 6 and "--unicode-errors" in str(e)
    assert load_embeddings(p, unicode_errors="replace")[0] == ["ab\ufffd", "ok"]
    assert load_embeddings(p, unicode_errors="ignore")[0] == ["ab", "ok"]
    q = write(tmp_path / "b.txt", b"2 2\n\xff 1 2\nok 3 4\n")
    e = err(load_embeddings, q, unicode_errors="ignore")
    assert "empty after decoding" in str(e) and e.line == 2
    assert load_embeddings(write(tmp_path / "c.txt", "1 1\n\xe9t\xe9 1\n".encode("latin-1")),
                           encoding="latin-1")[0] == ["été"]
    with pytest.raises(ValueError, match="encoding"):
        open_embeddings(p, encoding="no-such-codec")
    with pytest.raises(ValueError, match="unicode_errors"):
        open_embeddings(p, unicode_errors="surrogateescape")


def test_unicode_error_in_binary_names_offset(tmp_path):
    X = np.ones((2, 2), np.float32)
    raw = b"2 2\n" + b"\xff\xfe " + X[0].tobytes() + b"\nok " + X[1].tobytes()
    e = err(load_embeddings, write(tmp_path / "a.bin", raw))
    assert e.offset == 4 and "record 1" in str(e)


# --------------------------------------------------------------------------------------------
# bad input


BAD_TEXT = [
    # (content, line, fragment of the message)
    ("2 3\na 1 2\nb 1 2 3\n", 2, "expected 3 values after the key, found 2"),
    ("2 3\na 1 2 3\nb 1 2 3 4 5\n", 3, "expected 3 values after the key, found 5"),
    ("2 3\na 1 2 3\nb 1 x 3\n", 3, "'x' is not a number"),
    ("2 3\na 1 2 3\nb 1 nan 3\n", 3, "not finite"),
    ("2 3\na 1 2 3\nb 1 -Inf 3\n", 3, "not finite"),
    ("2 3\na 1 2 3\nb 1 1e39 3\n", 3, "float32 range"),
    ("3 3\na 1 2 3\nb 1 2 3\n", 4, "announces 3 rows but the file ends after 2"),
    ("1 3\na 1 2 3\nb 1 2 3\n", 3, "announces 1 rows but the file has more rows"),
    ("2 4\na 1 2 3\nb 1 2 3\n", 2, "the header on line 1 gives dim 4"),
    ("2 3\na 1 2 3\n\nb 1 2 3\n", 3, "empty line"),
    ("2 3\na 1 2 3\n 1 2 3\n", 3, "starts with a space"),
    ("a 1 2 3\nb 1 2\n", 2, "expected 3 values after the key, found 2"),
    ("a 1 2 3\nb\n", 2, "found 0"),
    ("2 x\na 1 2 3\n", 1, "neither"),
]


@pytest.mark.parametrize("content,line,fragment", BAD_TEXT)
def test_bad_text(tmp_path, content, line, fragment):
    p = write(tmp_path / "bad.txt", content)
    e = err(load_embeddings, p)
    assert fragment in str(e)
    assert str(p) in str(e)
    assert e.line == line


def test_truncated_suggests_limit(tmp_path):
    p = write(tmp_path / "a.txt", "5 2\na 1 2\nb 3 4\n")
    assert "--limit 2" in str(err(load_embeddings, p))


def test_forced_format_errors(tmp_path):
    p = write(tmp_path / "a.txt", "a 1 2 3\n")
    e = err(load_embeddings, p, format="word2vec")
    assert "'count dim' header" in str(e) and "--format glove" in str(e)


def test_empty_and_whitespace_files(tmp_path):
    assert "empty" in str(err(load_embeddings, write(tmp_path / "e.txt", b"")))
    assert "whitespace" in str(err(load_embeddings, write(tmp_path / "w.txt", b" \n\n")))
    assert "empty" in str(err(load_embeddings, write(tmp_path / "e.gz", gzip.compress(b""))))


def test_missing_and_unreadable(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_embeddings(str(tmp_path / "nope.txt"))
    with pytest.raises(IsADirectoryError):
        load_embeddings(str(tmp_path))


def test_binary_cut_mid_vector(tmp_path, data):
    keys, X = data
    raw = w2v_binary(keys, X)
    e = err(load_embeddings, write(tmp_path / "cut.bin", raw[:-7]))
    assert "middle of record" in str(e) and f"record {len(keys)}" in str(e)
    assert "expected 24 bytes" in str(e) and e.offset is not None
    e = err(load_embeddings, write(tmp_path / "short.bin", w2v_binary(keys, X, count=99)))
    assert "announces 99 rows" in str(e) and f"--limit {len(keys)}" in str(e)
    e = err(load_embeddings, write(tmp_path / "long.bin", w2v_binary(keys, X, count=10)))
    assert "more data follows record 10" in str(e)


def test_binary_nan(tmp_path, data):
    keys, X = data
    Y = X.copy()
    Y[4, 1] = np.inf
    e = err(load_embeddings, write(tmp_path / "a.bin", w2v_binary(keys, Y)))
    assert "record 5" in str(e) and "NaN or Inf" in str(e)


def test_fasttext_model_refused(tmp_path):
    p = write(tmp_path / "model.bin", struct.pack("<ii", FASTTEXT_MAGIC, 12) + b"\0" * 100)
    e = err(detect_format, p)
    assert "fastText" in str(e) and ".vec" in str(e)


def test_unknown_binary_refused(tmp_path):
    p = write(tmp_path / "x.bin", b"\x0a\x00\x00\x00\x05\x00" + b"\x00" * 100)
    assert "binary data" in str(err(detect_format, p))


# --------------------------------------------------------------------------------------------
# gensim's real files

GENSIM_FILES = [
    ("lee_fasttext.vec", {}, {}),
    ("test_glove.txt", {"no_header": True}, {}),
    ("euclidean_vectors.bin", {"binary": True}, {}),
    ("pang_lee_polarity_fasttext.vec", {"unicode_errors": "replace"},
     {"unicode_errors": "replace"}),  # line 150 holds the undecodable key b'\x97'
    ("crime-and-punishment.vec", {}, {}),
    ("toy-model.vec", {}, {}),
    ("high_precision.kv.txt", {}, {}),
    ("high_precision.kv.bin", {"binary": True}, {}),  # binary without newlines
    ("poincare_vectors.bin", {"binary": True}, {}),
    ("EN.1-10.cbow1_wind5_hs0_neg10_size300_smpl1e-05.txt", {}, {}),  # 17-digit values
    ("IT.1-10.cbow1_wind5_hs0_neg10_size300_smpl1e-05.txt", {}, {}),
    ("word2vec_pre_kv_c", {}, {}),
    ("w2v_keyedvectors_load_test.modeldata", {"unicode_errors": "replace"},
     {"unicode_errors": "replace"}),  # keys cut in the middle of a UTF-8 sequence
]


@pytest.mark.parametrize("name,gensim_kw,embq_kw", GENSIM_FILES)
def test_gensim_files_load_identically(name, gensim_kw, embq_kw):
    gensim = pytest.importorskip("gensim")
    from gensim.models import KeyedVectors
    from gensim.test.utils import datapath

    del gensim
    kv = KeyedVectors.load_word2vec_format(datapath(name), **gensim_kw)
    keys, X = load_embeddings(datapath(name), **embq_kw)
    assert keys == list(kv.index_to_key)
    assert np.array_equal(X, kv.vectors)


def test_gensim_oddities():
    pytest.importorskip("gensim")
    from gensim.test.utils import datapath

    # Undecodable key under strict: named by line and byte offset.
    e = err(load_embeddings, datapath("pang_lee_polarity_fasttext.vec"))
    assert e.line == 150 and e.offset is not None
    # pretrained.vec announces 3 rows and holds 1: a truncated file, readable with --limit.
    e = err(load_embeddings, datapath("pretrained.vec"))
    assert "--limit 1" in str(e)
    assert load_embeddings(datapath("pretrained.vec"), limit=1)[0] == ["dummy"]
    # Native fastText models, with and without magic number, are refused.
    assert "fastText" in str(err(detect_format, datapath("crime-and-punishment.bin")))
    err(detect_format, datapath("lee_fasttext.bin"))
