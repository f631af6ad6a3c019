"""Tests for embq._readers and the Cython parsers in embq._kernels_parse."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import struct
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embq import _kernels_parse as kp
from embq._errors import FormatError
from embq._readers import (
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
    tokens = [repr(float(v)) for v in values] + [f"{v:.9g}" for v in values]
    res, got = parse_line_values(tokens)
    assert res[2] == kp.OK
    exp = np.array([expected_f32(t) for t in tokens], np.float32)
    assert np.array_equal(got.view(np.uint32), exp.view(np.uint32))


@pytest.mark.parametrize("tok,status", [
    ("nan", kp.NONFINITE), ("NaN", kp.NONFINITE), ("-inf", kp.NONFINITE), ("+Inf", kp.NONFINITE),
    ("infinity", kp.NONFINITE), ("1e39", kp.OUT_OF_RANGE), ("-3.5e38", kp.OUT_OF_RANGE),
    ("1e400", kp.OUT_OF_RANGE), ("abc", kp.BAD_NUMBER), ("1.2.3", kp.BAD_NUMBER),
    ("1,5", kp.BAD_NUMBER), ("1e", kp.BAD_NUMBER), ("1e+", kp.BAD_NUMBER), ("-", kp.BAD_NUMBER),
    (".", kp.BAD_NUMBER), ("0x10", kp.BAD_NUMBER), ("1_000", kp.BAD_NUMBER),
    ("infx", kp.BAD_NUMBER), ("--1", kp.BAD_NUMBER), ("1e5.5", kp.BAD_NUMBER),
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
    assert kp.selected_kernels() == {"parse": "portable"}


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
    X6 = np.array([[np.float32(float(f"{v:.6f}")) for v in r] for r in X], np.float32)
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
    X = np.frombuffer(b"\n\n\n\x3f" + b"    " + b" \n \x3f" + b"\x20\x0a\x20\x40",
                      "<f4").reshape(1, 4)
    X = np.repeat(X, 3, axis=0).astype(np.float32)
    keys = ["a", "b", "c"]
    p = write(tmp_path / "a.bin", w2v_binary(keys, X, newline=False))
    check(keys, X, *load_embeddings(p, format="word2vec-binary"))


def file_bytes(kind, keys, X):
    """The bytes of a file of ``kind`` (word2vec text, GloVe or word2vec binary)."""
    if kind in ("text", "word2vec"):
        return w2v_text(keys, X, fmt="%.9g").encode()
    if kind == "glove":
        return w2v_text(keys, X, header=False, fmt="%.9g").encode()
    return w2v_binary(keys, X)


@pytest.mark.parametrize("comp", ["gzip", "bz2", "xz"])
@pytest.mark.parametrize("kind", ["text", "binary", "glove"])
def test_compressed(tmp_path, data, comp, kind):
    keys, X = data
    raw = file_bytes(kind, keys, X)
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
    with pytest.raises(ValueError, match=r"only used with \.npy"):
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
    import embq._readers as readers

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
    ("1 3\na 1 2 3\nb 1 2 3\n", 3, "announces 1 row but the file has more rows"),
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


# --------------------------------------------------------------------------------------------
# detection: text by the shape of its rows, binary by its record structure


FIRST_ROW_BAD = [
    # (content, line, byte offset of the bad value, fragment of the message)
    (b"2 2\nab 1,5 2,5\ncd 3,5 4,5\n", 2, 7, "value '1,5' is not a number"),
    (b"2 1\na null\nbb 2.0\n", 2, 6, "value 'null' is not a number"),
    (b"2 3\nk 1 x 3\nl 1 2 3\n", 2, 8, "value 'x' is not a number"),
    (b"2 2\nab 1 2,5\ncd 3 4\n", 2, 9, "value '2,5' is not a number"),
]


@pytest.mark.parametrize("comp", [None, "gzip"])
@pytest.mark.parametrize("content,line,offset,fragment", FIRST_ROW_BAD)
def test_bad_value_on_the_first_row_is_still_text(tmp_path, comp, content, line, offset,
                                                  fragment):
    p = write(tmp_path / "a.vec", gzip.compress(content) if comp else content)
    assert detect_format(p) == "word2vec"
    e = err(load_embeddings, p)
    assert fragment in str(e) and "expected a decimal" in str(e)
    assert (e.line, e.offset) == (line, offset)


def test_glove_with_a_bad_value_on_line_1(tmp_path):
    p = write(tmp_path / "g.txt", b"ab 1,5 2\ncd 3 4\n")
    assert detect_format(p) == "glove"
    e = err(load_embeddings, p)
    assert "'1,5' is not a number" in str(e) and (e.line, e.offset) == (1, 3)


def test_binary_detected_by_record_structure_not_by_characters(tmp_path, data):
    # The first vector's bytes are all digits, points and exponent letters, so nothing in its
    # characters says binary; the record structure (key, space, 4 * dim bytes) does.
    keys, X = data
    X = X.copy()
    X[0] = np.frombuffer(b"0.5e1234" b"1.0e5678" b"2.5E-3+1", "<f4")
    for newline in (True, False):
        p = write(tmp_path / "p.bin", w2v_binary(keys, X, newline=newline))
        assert detect_format(p) == "word2vec-binary"
        check(keys, X, *load_embeddings(p))


def test_printable_rows_are_text_even_with_the_wrong_count(tmp_path):
    # "a 1 2" chains as a binary record of dim 1 ("1 2\n" as its 4 bytes); as text it is a
    # row with one value too many, which is what is wrong with it.
    for content, fragment in ((b"1 1\na 1 2\n", "expected 1 value after the key, found 2"),
                              (b"2 3\na 1 2\nb 1 2 3\n", "expected 3 values after the key")):
        p = write(tmp_path / "t.vec", content)
        assert detect_format(p) == "word2vec"
        e = err(load_embeddings, p)
        assert fragment in str(e) and e.line == 2


def binary_with_header_dim(X, header_dim, newline):
    raw = w2v_binary([f"w{i}" for i in range(len(X))], X, newline=newline)
    return raw.replace(f" {X.shape[1]}\n".encode(), f" {header_dim}\n".encode(), 1)


@pytest.mark.parametrize("newline", [True, False])
@pytest.mark.parametrize("header_dim", [3, 5])
def test_binary_dim_mismatch_names_the_dim(tmp_path, newline, header_dim):
    X = np.random.default_rng(1).standard_normal((30, 4)).astype(np.float32)
    p = write(tmp_path / "m.bin", binary_with_header_dim(X, header_dim, newline))
    assert detect_format(p) == "word2vec-binary"
    e = err(load_embeddings, p)
    assert f"look like dim 4, not the header's dim {header_dim}" in str(e)
    assert "--unicode-errors" not in str(e)  # the keys are garbage because of the dim
    # Replacing undecodable bytes must not turn misaligned records into keys.
    e = err(load_embeddings, p, unicode_errors="replace", limit=20)
    assert "dim" in str(e) and e.offset is not None


def test_binary_key_with_a_newline_is_refused(tmp_path):
    v = np.ones(2, "<f4").tobytes()
    p = write(tmp_path / "k.bin", b"2 2\n" + b"a\nb " + v + b"c " + v)
    e = err(load_embeddings, p, format="word2vec-binary", unicode_errors="replace")
    assert "holds a newline" in str(e) and "record 1" in str(e) and e.offset == 5
    p = write(tmp_path / "t.bin", b"1 2\n" + b"a\x01b " + v)
    assert "control byte 0x01" in str(err(load_embeddings, p, format="word2vec-binary"))
    # A tab is not a control byte here (gensim writes whatever its keys hold).
    p = write(tmp_path / "tab.bin", b"1 2\n" + b"a\tb " + v)
    assert load_embeddings(p, format="word2vec-binary")[0] == ["a\tb"]


def test_block_offsets_point_at_each_row(tmp_path, data):
    keys, X = data
    for name, raw in (("a.txt", w2v_text(keys, X).encode()), ("a.bin", w2v_binary(keys, X)),
                      ("n.bin", w2v_binary(keys, X, newline=False))):
        p = write(tmp_path / name, raw)
        with open_embeddings(p, block_rows=7) as r:
            offsets = np.concatenate([b.offsets for b in r])
        assert [raw[o:].split(b" ", 1)[0].decode() for o in offsets] == keys


# --------------------------------------------------------------------------------------------
# headers


@pytest.mark.parametrize("header,fragment", [
    ("-3 3", "count -3; expected a count >= 0"),
    ("3 -3", "dim -3; expected at least 1"),
    ("3 0", "dim 0; expected at least 1"),
    ("2.0 3", "'2.0', which is not an integer"),
    ("2 3 4", "found '2 3 4' (3 fields)"),
])
def test_bad_header_is_reported_on_line_1(tmp_path, header, fragment):
    p = write(tmp_path / "h.vec", f"{header}\na 1 2 3\nb 1 2 3\n")
    e = err(load_embeddings, p)
    assert fragment in str(e) and e.line == 1
    assert err(detect_format, p).line == 1
    e = err(load_embeddings, p, format="word2vec")
    assert e.line == 1


def test_numeric_glove_rows_are_not_headers(tmp_path):
    # Lines of only numbers with the same shape are GloVe rows with numeric keys.
    for text, keys in (("-3 3\n-2 5\n", ["-3", "-2"]), ("2.0 3\n4.0 5\n", ["2.0", "4.0"]),
                       ("2 3 4\n5 6 7\n", ["2", "5"])):
        p = write(tmp_path / "n.txt", text)
        assert detect_format(p) == "glove"
        assert load_embeddings(p)[0] == keys


@pytest.mark.parametrize("content,forced", [
    (b"1 99999999999\na 1 2 3\n", None),
    (b"1 99999999999\na " + b"\0" * 12, None),
    (b"1 99999999999\na 1 2 3\n", "word2vec-binary"),
    (b"1 99999999999\na 1 2 3\n", "word2vec"),
    (b"1 1048577\na 1 2 3\n", None),
])
def test_implausible_dim_refused_on_line_1(tmp_path, content, forced):
    p = write(tmp_path / "d.vec", content)
    e = err(load_embeddings, p, format=forced)
    assert e.line == 1 and "at most 1,048,576 values per row" in str(e)


def test_blocks_stay_bounded_at_the_largest_dim(tmp_path):
    from embq._readers import MAX_DIM

    p = write(tmp_path / "d.vec", f"1 {MAX_DIM}\na".encode() + b" 0" * MAX_DIM + b"\n")
    with open_embeddings(p) as r:
        assert r.block_rows * r.dim * 4 <= 16 << 20
        (block,) = list(r)
    assert block.vectors.shape == (1, MAX_DIM)
    p = write(tmp_path / "g.txt", b"a" + b" 0" * (MAX_DIM + 1) + b"\n")
    assert "at most 1,048,576 values" in str(err(load_embeddings, p))


def test_lines_longer_than_the_cap_are_refused(tmp_path, monkeypatch):
    import embq._readers as readers

    monkeypatch.setattr(readers, "_BUFFER_BYTES", 1 << 16)
    monkeypatch.setattr(readers, "_MAX_LINE_BYTES", 1 << 18)
    p = write(tmp_path / "long.txt", b"a" + b" 1" * 300_000)  # 600 KB, no newline
    e = err(load_embeddings, p)
    assert "no end of line within" in str(e)
    p = write(tmp_path / "long.vec", b"1 300000\na" + b" 1" * 300_000 + b"\n")
    assert "no end of line within" in str(err(load_embeddings, p))


BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("encoding", ["utf8", "utf-8-sig", "UTF-8"])
@pytest.mark.parametrize("kind", ["word2vec", "glove", "word2vec-binary"])
def test_utf8_bom_is_skipped(tmp_path, data, encoding, kind):
    keys, X = data
    raw = file_bytes(kind, keys, X)
    for name, content in (("b.vec", BOM + raw), ("b.vec.gz", gzip.compress(BOM + raw))):
        p = write(tmp_path / name, content)
        assert detect_format(p, encoding=encoding) == kind
        check(keys, X, *load_embeddings(p, encoding=encoding))
        with open_embeddings(p, encoding=encoding, block_rows=4) as r:
            first = next(iter(r))
        assert raw[first.offsets[0] - 3 :].startswith(keys[0].encode())  # file offsets


def test_bom_is_kept_for_other_encodings(tmp_path):
    p = write(tmp_path / "l.txt", BOM + b"a 1 2\nb 3 4\n")
    assert load_embeddings(p, encoding="latin-1")[0][0] == "\xef\xbb\xbfa"


# --------------------------------------------------------------------------------------------
# no complete row: no --limit 0 advice


def test_no_complete_row_does_not_suggest_limit_0(tmp_path, data):
    keys, X = data
    p = write(tmp_path / "h.vec", "5 3\n")
    e = err(load_embeddings, p)
    assert "no complete row" in str(e) and "--limit" not in str(e)
    raw = w2v_binary(keys, X)
    p = write(tmp_path / "cut.bin", raw[: raw.index(b"\n") + len("w0 ") + 9])  # in record 1
    e = err(load_embeddings, p)
    assert "middle of record 1 " in str(e) and "no complete record" in str(e)
    assert "--limit" not in str(e)
    e = err(load_embeddings, write(tmp_path / "two.bin", raw[: len(raw) - 30]))
    assert f"--limit {len(keys) - 1}" in str(e)  # the last record is cut in its key


def test_singular_counts(tmp_path):
    e = err(load_embeddings, write(tmp_path / "a.txt", "1 1\na 1\nb 2\n"))
    assert "announces 1 row but" in str(e)
    e = err(load_embeddings, write(tmp_path / "b.txt", "1 1\na 1 2\n"))
    assert "expected 1 value after the key, found 2" in str(e)


# --------------------------------------------------------------------------------------------
# damaged compressed input


def text_file(rows: int = 4000, dim: int = 20) -> bytes:
    rng = np.random.default_rng(5)
    X = rng.standard_normal((rows, dim)).astype(np.float32)
    return w2v_text([f"w{i}" for i in range(rows)], X, fmt="%.7g").encode()


PACK = {"gzip": gzip.compress, "bz2": lambda b: bz2.compress(b, 1), "xz": lzma.compress}


@pytest.mark.parametrize("comp", ["gzip", "bz2", "xz"])
@pytest.mark.parametrize("where", ["early", "late"])
def test_damaged_compressed_data(tmp_path, comp, where):
    raw = text_file()
    assert len(raw) > 4 * (1 << 16)  # "late" damage is met after the detection read
    packed = bytearray(PACK[comp](raw))
    at = 40 if where == "early" else len(packed) * 3 // 4
    packed[at] ^= 0x55
    p = write(tmp_path / "d.vec", bytes(packed))
    e = err(load_embeddings, p)
    msg = str(e)
    assert msg.startswith(f"{p}: compressed data is damaged near byte ")
    assert f"of the decompressed stream ({comp}: " in msg


def test_gzip_crc_mismatch(tmp_path):
    packed = bytearray(gzip.compress(text_file()))
    packed[-6] ^= 0x01  # inside the CRC-32 of the trailer
    e = err(load_embeddings, write(tmp_path / "c.vec.gz", bytes(packed)))
    assert "(gzip: CRC check failed)" in str(e)


@pytest.mark.parametrize("comp", ["gzip", "bz2", "xz"])
def test_truncated_compressed_data(tmp_path, comp):
    packed = PACK[comp](text_file())
    p = write(tmp_path / "t.vec", packed[: len(packed) - 100])
    e = err(load_embeddings, p)
    assert f"cannot decompress the {comp} data: it ends before the end of its compressed " \
        "stream" in str(e)
    assert str(p) in str(e)


@pytest.mark.parametrize("comp", ["gzip", "bz2", "xz"])
def test_trailing_data_after_the_stream(tmp_path, comp, data):
    keys, X = data
    raw = w2v_text(keys, X, fmt="%.9g").encode()
    packed = PACK[comp](raw)
    # Refused alike for the three codecs (the standard library drops it for bz2 and xz).
    e = err(load_embeddings, write(tmp_path / "j.vec", packed + b"junk"))
    assert f"data that is not {comp}" in str(e) and f"byte {len(packed):,}" in str(e)
    # Zero-byte padding and concatenated streams are fine.
    check(keys, X, *load_embeddings(write(tmp_path / "z.vec", packed + b"\0" * 7)))
    half = raw.index(b"\n", len(raw) // 2) + 1
    cat = PACK[comp](raw[:half]) + PACK[comp](raw[half:])
    check(keys, X, *load_embeddings(write(tmp_path / "c.vec", cat)))


def test_damage_inside_the_detection_read_of_gzip(tmp_path):
    packed = bytearray(gzip.compress(b"3 2\na 1 2\nb 3 4\nc 5 6\n" * 10))
    packed[12] ^= 0xFF
    p = write(tmp_path / "e.gz", bytes(packed))
    assert "compressed data is damaged" in str(err(detect_format, p))


# --------------------------------------------------------------------------------------------
# pipes


def feed_fifo(path, content: bytes):
    import threading

    def run():
        with open(path, "wb") as f:
            f.write(content)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
@pytest.mark.parametrize("kind", ["text", "gzip", "binary", "npy"])
def test_pipe_input(tmp_path, data, kind):
    keys, X = data
    if kind == "npy":
        buf = io.BytesIO()
        np.save(buf, X)
        content = buf.getvalue()
    else:
        raw = w2v_binary(keys, X) if kind == "binary" else w2v_text(keys, X, fmt="%.9g").encode()
        content = gzip.compress(raw) if kind == "gzip" else raw
    fifo = str(tmp_path / "pipe")
    os.mkfifo(fifo)
    t = feed_fifo(fifo, content)
    with open_embeddings(fifo, block_rows=9) as r:
        got = [b for b in r]
        assert r.size == len(content)
    t.join(5)
    assert np.array_equal(np.concatenate([b.vectors for b in got]), X)
    if kind != "npy":
        assert [k for b in got for k in b.keys] == keys


def test_dash_reads_standard_input(tmp_path, data, monkeypatch):
    keys, X = data
    src = write(tmp_path / "a.txt.gz", gzip.compress(w2v_text(keys, X, fmt="%.9g").encode()))
    with open(src, "rb") as f:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(f))
        with open_embeddings("-") as r:
            assert r.path == "<stdin>" and r.compression == "gzip"
            got = list(r)
    check(keys, X, got[0].keys, got[0].vectors)


# --------------------------------------------------------------------------------------------
# .npy details


def test_npy_truncated_or_longer_names_rows_and_bytes(tmp_path, data):
    _, X = data
    np.save(tmp_path / "a.npy", X)
    full = (tmp_path / "a.npy").read_bytes()
    e = err(load_embeddings, write(tmp_path / "cut.npy", full[:-30]))
    assert f"announces {len(X)} rows x 6 of float32 ({X.nbytes:,} bytes of data)" in str(e)
    assert f"but {X.nbytes - 30:,} bytes follow it ({len(X) - 2} complete rows)" in str(e)
    assert "mmap" not in str(e)
    e = err(load_embeddings, write(tmp_path / "long.npy", full + b"xx"))
    assert "expected the end of the file" in str(e)
    e = err(load_embeddings, write(tmp_path / "long.npy.gz", gzip.compress(full + b"xx")))
    assert "more data follows" in str(e)


def test_npy_nan_shown_plainly_with_offset(tmp_path, data):
    _, X = data
    Y = X.astype(np.float64)
    Y[3, 2] = np.nan
    np.save(tmp_path / "nan.npy", Y)
    e = err(load_embeddings, str(tmp_path / "nan.npy"))
    assert "row 3 holds nan," in str(e) and "np.float" not in str(e)
    assert e.offset == 128 + 3 * 6 * 8


def test_compressed_fortran_npy_is_read(tmp_path, data):
    keys, X = data
    np.save(tmp_path / "f.npy", np.asfortranarray(X))
    gz = write(tmp_path / "f.npy.gz", gzip.compress((tmp_path / "f.npy").read_bytes()))
    (tmp_path / "keys.txt").write_text("\n".join(keys) + "\n", encoding="utf8")
    check(keys, X, *load_embeddings(gz, keys_path=str(tmp_path / "keys.txt"), block_rows=4))
    cut = write(tmp_path / "c.npy.gz", gzip.compress((tmp_path / "f.npy").read_bytes()[:-9]))
    assert "truncated" in str(err(load_embeddings, cut))


# --------------------------------------------------------------------------------------------
# .npy headers, parsed by embq (numpy's parser is private and fails on hostile headers with
# AttributeError or tokenize.TokenError)


def npy_bytes(header: str | bytes, version=(1, 0), data: bytes = b"", pad=True) -> bytes:
    """A .npy file written by hand: magic, version, header length, header, data."""
    raw = header.encode("utf8") if isinstance(header, str) else header
    width = 2 if version[0] == 1 else 4
    if pad:  # numpy pads to a multiple of 64 and ends the header with a newline
        total = 6 + 2 + width + len(raw) + 1
        raw += b" " * (-total % 64) + b"\n"
    return b"\x93NUMPY" + bytes(version) + len(raw).to_bytes(width, "little") + raw + data


HEADER = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }"


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
@pytest.mark.parametrize("comp", [None, "gzip"])
def test_npy_versions_written_by_hand_are_read(tmp_path, version, comp):
    X = np.arange(6, dtype="<f4").reshape(3, 2) / 7
    raw = npy_bytes(HEADER, version, X.tobytes())
    p = write(tmp_path / "v.npy", raw if comp is None else gzip.compress(raw))
    assert detect_format(p) == "npy"
    keys, got = load_embeddings(p)
    assert keys is None and np.array_equal(got, X)
    # numpy reads the same bytes to the same array.
    if comp is None:
        np.testing.assert_array_equal(np.load(p), X)


def test_npy_version_3_header_is_utf8(tmp_path):
    # Format 3.0 exists for UTF-8 headers; a key order and spacing of our own, big-endian data.
    X = np.float64([[1.5, -2.0], [3.25, 4.0]])
    header = "{'shape': (2, 2), 'fortran_order': True, 'descr': '>f8'}"
    p = write(tmp_path / "u.npy", npy_bytes(header, (3, 0), X.astype(">f8").T.tobytes()))
    np.testing.assert_array_equal(load_embeddings(p)[1], X.astype(np.float32))
    bad = npy_bytes(b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1)} \xff", (3, 0))
    e = err(load_embeddings, write(tmp_path / "b.npy", bad + bytes(4)))
    assert "not valid UTF-8" in str(e) and e.offset == bad.index(b"\xff")


NPY_BAD_HEADERS = [
    # (file bytes, fragment of the message)
    (npy_bytes(HEADER, (4, 0)), ".npy format version 4.0; expected 1.0, 2.0 or 3.0"),
    (npy_bytes(HEADER, (1, 1)), ".npy format version 1.1; expected 1.0, 2.0 or 3.0"),
    (b"\x93NUMPY\x01", "the file ends inside the .npy magic and version"),
    (b"\x93NUMPY\x02\x00\x10\x00", "the file ends inside the .npy header length"),
    (b"\x93NUMPY\x02\x00" + (1 << 30).to_bytes(4, "little"),
     "header length is 1,073,741,824 bytes; expected at most 65,536"),
    (npy_bytes(HEADER)[:40], "the file ends inside the .npy header: 118 bytes of header "
                             "announced, 30 present"),
    # did not tokenize (numpy: tokenize.TokenError)
    (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2)", pad=False),
     "is not a Python literal"),
    (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), 'x': 1 +}"),
     "is not a Python literal"),
    (npy_bytes("(" * 5000 + ")" * 5000), "is not a Python literal"),
    (npy_bytes("{'descr': __import__('os')}"), "is not a Python literal"),
    (npy_bytes("[1, 2]"), "the .npy header is a list, not a dict"),
    (npy_bytes("{'descr': '<f4', 'shape': (3, 2)}"),
     "has keys {'descr', 'shape'} (not matching: 'fortran_order')"),
    (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), 'extra': 1}"),
     "(not matching: 'extra')"),
    (npy_bytes("{'descr': '<c8', 'fortran_order': False, 'shape': (3, 2)}"),
     "gives descr '<c8'; expected a float or integer dtype"),
    (npy_bytes("{'descr': '|O', 'fortran_order': False, 'shape': (3, 2)}"), "descr '|O'"),
    (npy_bytes("{'descr': '<f16', 'fortran_order': False, 'shape': (3, 2)}"), "descr '<f16'"),
    (npy_bytes("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3, 2)}"),
     "descr [('a', '<f4')]"),
    (npy_bytes("{'descr': '<f4', 'fortran_order': 0, 'shape': (3, 2)}"),
     "gives fortran_order 0; expected True or False"),
    (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': [3, 2]}"),
     "gives shape [3, 2]; expected a tuple of non-negative integers"),
    (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (3, -2)}"), "shape (3, -2)"),
    (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (True, 2)}"),
     "shape (True, 2)"),
    (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (3.0, 2)}"), "shape (3.0, 2)"),
    (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (6,)}"),
     "the array has shape (6,); expected 2-D (rows, dim)"),
    (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3)}"), "expected 2-D"),
    (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 0)}"),
     "expected at least one column"),
    (npy_bytes(f"{{'descr': '<f4', 'fortran_order': False, 'shape': (1, {1 << 30})}}"),
     "expected at most 1,048,576 values per row"),
]


@pytest.mark.parametrize("comp", [None, "gzip"])
@pytest.mark.parametrize(("content", "fragment"), NPY_BAD_HEADERS)
def test_npy_bad_headers_are_format_errors(tmp_path, content, fragment, comp):
    p = write(tmp_path / "bad.npy", content if comp is None else gzip.compress(content))
    for fn, kw in ((load_embeddings, {}), (open_embeddings, {}),
                   (load_embeddings, {"format": "npy"})):
        e = err(fn, p, **kw)
        assert e.path == p and fragment in str(e), str(e)
        assert "expected" in str(e)


def test_npy_header_longer_than_the_detection_read(tmp_path, monkeypatch):
    import embq._readers as readers

    monkeypatch.setattr(readers, "_SNIFF_BYTES", 16)
    X = np.ones((2, 3), np.float32)
    p = write(tmp_path / "a.npy", npy_bytes(HEADER.replace("(3, 2)", "(2, 3)"), (2, 0),
                                            X.tobytes()))
    np.testing.assert_array_equal(load_embeddings(p)[1], X)
    gz = write(tmp_path / "a.npy.gz", gzip.compress((tmp_path / "a.npy").read_bytes()))
    np.testing.assert_array_equal(load_embeddings(gz)[1], X)


def test_npy_reader_does_not_call_numpy_header_helpers(tmp_path, data, monkeypatch):
    _, X = data
    np.save(tmp_path / "a.npy", X)

    def refuse(*args, **kwargs):
        raise AssertionError("numpy's header parser was called")

    for name in ("read_magic", "read_array_header_1_0", "read_array_header_2_0",
                 "_read_array_header"):
        monkeypatch.setattr(np.lib.format, name, refuse, raising=False)
    np.testing.assert_array_equal(load_embeddings(str(tmp_path / "a.npy"))[1], X)


# -- byte_range and row_range: part of a file, numbered as in the whole file -----------------


def _read_all(reader) -> tuple[list | None, np.ndarray, np.ndarray | None, list[int]]:
    """Keys, vectors, offsets and the blocks' first lines of everything ``reader`` yields."""
    keys, vecs, offs, lines = [], [], [], []
    with reader:
        for block in reader:
            if block.keys is not None:
                keys += block.keys
            vecs.append(block.vectors)
            if block.offsets is not None:
                offs.append(block.offsets)
            lines.append(block.first_line)
        dim = reader.dim
    return (keys, np.concatenate(vecs) if vecs else np.empty((0, dim), np.float32),
            np.concatenate(offs) if offs else None, lines)


def _text_file(tmp_path, fmt: str, n: int = 300, d: int = 5, header_count: int | None = None):
    rng = np.random.default_rng(3)
    lines = [f"k{i}{'é' * (i % 3)} " + " ".join(f"{v:.6g}" for v in rng.standard_normal(d))
             for i in range(n)]
    head = "" if fmt == "glove" else f"{n if header_count is None else header_count} {d}\n"
    path = tmp_path / f"t.{fmt}.txt"
    path.write_bytes(("\ufeff" + head + "\n".join(lines) + "\n").encode("utf8"))
    return str(path)


@pytest.mark.parametrize("fmt", ["word2vec", "glove"])
def test_byte_ranges_read_every_row_once_as_the_whole_file(tmp_path, fmt):
    path = _text_file(tmp_path, fmt)
    whole_keys, whole, whole_offs, _ = _read_all(open_embeddings(path, format=fmt))
    size = os.path.getsize(path)
    rng = np.random.default_rng(5)
    for parts in (1, 2, 7):
        # arbitrary cut points, most of them inside a line (and one inside the header)
        cuts = [0, *sorted(rng.integers(1, size, parts - 1).tolist()), size]
        if parts == 7:
            cuts[1] = 3
        keys, rows, offs = [], [], []
        for a, b in zip(cuts[:-1], cuts[1:]):
            k, v, o, lines = _read_all(open_embeddings(path, format=fmt, byte_range=(a, b),
                                                       block_rows=16))
            if len(v):
                # a block's first line is its first row's line in the whole file
                row0 = whole_keys.index(k[0])
                assert lines[0] == row0 + 1 + (fmt != "glove")
                assert o[0] == whole_offs[row0]
            keys += k
            rows.append(v)
            if o is not None:
                offs.append(o)
        assert keys == whole_keys
        np.testing.assert_array_equal(np.concatenate(rows), whole)
        np.testing.assert_array_equal(np.concatenate(offs), whole_offs)


def test_byte_range_does_not_check_the_header_count(tmp_path):
    path = _text_file(tmp_path, "word2vec", n=50, header_count=9999)
    with open_embeddings(path, byte_range=(0, os.path.getsize(path))) as reader:
        assert reader.count is None
        assert sum(len(b.vectors) for b in reader) == 50


@pytest.mark.parametrize("given_line", [False, True])
@pytest.mark.parametrize("fmt", ["word2vec", "glove"])
def test_an_error_in_a_byte_range_names_the_files_line(tmp_path, fmt, given_line):
    path = _text_file(tmp_path, fmt, n=120)
    data = open(path, "rb").read()
    header = 0 if fmt == "glove" else 1
    bad_row = 77
    starts = [i + 1 for i, c in enumerate(data) if c == ord("\n")]   # line starts
    line_start = starts[header + bad_row - 1]
    end = data.index(b"\n", line_start)
    broken = data[:end] + b" oops" + data[end:]
    with open(path, "wb") as f:
        f.write(broken)
    a = starts[header + 40 - 1]           # the range starts at row 40
    first = header + 40 + 1 if given_line else None
    with pytest.raises(FormatError) as info:
        _read_all(open_embeddings(path, format=fmt, byte_range=(a, len(broken)),
                                  first_line=first, block_rows=8))
    assert info.value.line == header + bad_row + 1
    assert f"line {header + bad_row + 1}" in str(info.value)
    assert path in str(info.value)


def test_byte_range_and_row_range_are_checked(tmp_path):
    path = _text_file(tmp_path, "word2vec", n=10)
    gz = str(tmp_path / "t.txt.gz")
    with open(path, "rb") as src, gzip.open(gz, "wb") as dst:
        dst.write(src.read())
    npy = str(tmp_path / "a.npy")
    np.save(npy, np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match="gzip-compressed"):
        open_embeddings(gz, byte_range=(0, 10))
    with pytest.raises(ValueError, match="byte_range reads part of an uncompressed"):
        open_embeddings(npy, byte_range=(0, 10))
    with pytest.raises(ValueError, match=r"row_range reads part of an uncompressed \.npy"):
        open_embeddings(path, row_range=(0, 2))
    with pytest.raises(ValueError, match="limit cannot be combined"):
        open_embeddings(path, byte_range=(0, 10), limit=3)
    with pytest.raises(ValueError, match="0 <= start <= stop"):
        open_embeddings(path, byte_range=(10, 5))
    with pytest.raises(ValueError, match="pair"):
        open_embeddings(npy, row_range=3)
    with pytest.raises(ValueError, match="first_line"):
        open_embeddings(path, first_line=4)
    with pytest.raises(ValueError, match="reaches past the 4 rows"):
        open_embeddings(npy, row_range=(2, 5))


@pytest.mark.parametrize("fortran", [False, True])
def test_row_ranges_read_the_rows_of_the_whole_array(tmp_path, fortran):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((103, 6)).astype(np.float32)
    npy = str(tmp_path / "a.npy")
    np.save(npy, np.asfortranarray(x) if fortran else x)
    keys_path = tmp_path / "a.keys.txt"
    keys_path.write_text("".join(f"key{i}\n" for i in range(103)))
    whole_keys, whole, whole_offs, _ = _read_all(open_embeddings(npy, keys_path=keys_path))
    for a, b in ((0, 103), (0, 1), (17, 60), (60, 103), (50, 50)):
        for kp_ in (None, keys_path):
            keys, rows, offs, lines = _read_all(open_embeddings(
                npy, row_range=(a, b), keys_path=kp_, block_rows=16))
            np.testing.assert_array_equal(rows, whole[a:b])
            if kp_ is not None:
                assert keys == whole_keys[a:b]
            if b > a:
                assert lines[0] == a + 1
                if not fortran:
                    np.testing.assert_array_equal(offs, whole_offs[a:b])


def test_an_error_in_a_row_range_names_the_arrays_row(tmp_path):
    x = np.ones((50, 4), np.float32)
    x[37, 2] = np.nan
    npy = str(tmp_path / "a.npy")
    np.save(npy, x)
    with pytest.raises(FormatError, match="row 37 holds nan"):
        _read_all(open_embeddings(npy, row_range=(30, 45), block_rows=4))
    _read_all(open_embeddings(npy, row_range=(38, 50)))   # past the bad row: fine
