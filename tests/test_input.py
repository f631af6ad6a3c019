"""Tests for embq._input, the one layer every input file is read through: compression by
whole magic number, pipes, damaged, cut and trailing compressed data; and that the embedding
readers and the pair/analogy readers of embq._evaluate treat those alike."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import sys

import numpy as np
import pytest

from embq import _evaluate as ev
from embq import _input
from embq._errors import FormatError
from embq._input import Input, compression_of, read_all
from embq._readers import detect_format, load_embeddings

PACK = {"gzip": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}
PAIRS = b"# word pairs\ncat\tdog\t7.5\nsun\tmoon\t3\n"
QUESTIONS = b": capitals\nathens greece paris france\nparis france rome italy\n"


def write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def error(fn, *args, **kw) -> FormatError:
    with pytest.raises(FormatError) as info:
        fn(*args, **kw)
    return info.value


# --------------------------------------------------------------------------------------------
# recognising a compression: the whole magic number, nothing less


def test_each_compression_is_recognised_by_its_whole_magic():
    for name, pack in PACK.items():
        assert compression_of(pack(b"1 2\na 3 4\n")[:_input.MAGIC_BYTES]) == name
        assert compression_of(pack(b"")[:_input.MAGIC_BYTES]) == name  # an empty stream
    # bz2: level digit, then the block magic (data) or the end-of-stream magic (empty).
    assert bz2.compress(b"x")[4:10] == b"1AY&SY" and bz2.compress(b"")[4:10] == b"\x17rE8P\x90"
    for head in (b"BZh", b"BZh9", b"BZhang 0.1", b"BZh91AY&S", b"BZh0" + b"1AY&SY",
                 b"BZh9" + b"1AY&SX", b"\x1f\x8b", b"\x1f\x8b\x00" + bytes(7),
                 b"\xfd7zXZ", b"\xfd7zXZ\x01" + bytes(4), b"", b"1 2\na 3 4\n"):
        assert compression_of(head) is None, head


def test_glove_key_starting_like_bz2_is_text(tmp_path):
    # "BZh" then a letter: the old three-byte check refused this file as damaged bz2.
    p = write(tmp_path / "g.txt", b"BZhang 0.1 0.2 0.3\nzhou 1 2 3\n")
    assert detect_format(p) == "glove"
    keys, X = load_embeddings(p)
    assert keys == ["BZhang", "zhou"]
    np.testing.assert_array_equal(X, np.float32([[0.1, 0.2, 0.3], [1, 2, 3]]))
    # "BZh" and a level digit, still no block magic: text too.
    p = write(tmp_path / "h.txt", b"BZh9x 1 2\n")
    assert load_embeddings(p)[0] == ["BZh9x"]
    # The same first bytes in a word-pair and an analogy file.
    assert ev.read_word_pairs(write(tmp_path / "p.tsv", b"BZh9\tdog\t1\n"))[0] == ["BZh9"]
    q = write(tmp_path / "q.txt", b": BZh9\nBZhang b c d\n")
    assert ev.read_analogies(q) == [("BZh9", ["BZhang", "b", "c", "d"], 1)]


@pytest.mark.parametrize("comp", list(PACK))
def test_empty_compressed_stream_is_an_empty_file(tmp_path, comp):
    p = write(tmp_path / "e", PACK[comp](b""))
    assert f"the file is empty (inside its {comp} compression)" in str(error(load_embeddings, p))
    assert "no word pairs found" in str(error(ev.read_word_pairs, p))


# --------------------------------------------------------------------------------------------
# one layer: evaluate's files are read exactly as the embedding files


@pytest.mark.parametrize("comp", list(PACK))
def test_pair_and_analogy_files_refuse_trailing_data_like_compress(tmp_path, comp):
    # The standard library's bz2/lzma decompress drop data after the end of the stream;
    # evaluate used them, and read such files silently. Now refused as compress refuses it.
    vectors = PACK[comp](b"2 2\na 1 2\nb 3 4\n")
    msg = str(error(load_embeddings, write(tmp_path / "v", vectors + b"junk")))
    for data, reader in ((PAIRS, ev.read_word_pairs), (QUESTIONS, ev.read_analogies)):
        packed = PACK[comp](data)
        p = write(tmp_path / "t", packed + b"junk")
        e = error(reader, p)
        assert e.path == p
        assert str(e).startswith(f"{p}: data that is not {comp} ('junk') follows the end of the "
                                 f"compressed stream at byte {len(packed):,} of the file")
        assert str(e)[len(p):].endswith(msg[msg.index("; expected"):])
        # Zero-byte padding and concatenated streams are fine, as for compress.
        plain = reader(write(tmp_path / "plain", data))
        padded = reader(write(tmp_path / "z", packed + bytes(9)))
        half = data.index(b"\n", len(data) // 2) + 1
        cat = reader(write(tmp_path / "c", PACK[comp](data[:half]) + PACK[comp](data[half:])))
        for got in (padded, cat):
            if reader is ev.read_word_pairs:
                assert got[:2] == plain[:2] and np.array_equal(got[2], plain[2])
            else:
                assert got == plain


@pytest.mark.parametrize("comp", list(PACK))
def test_pair_files_cut_or_damaged_like_embedding_files(tmp_path, comp):
    data = b"".join(b"w%d\tv%d\t%d\n" % (i, i, i % 10) for i in range(20000))
    packed = PACK[comp](data)
    cut = write(tmp_path / "cut", packed[: len(packed) // 2])
    e = error(ev.read_word_pairs, cut)
    assert f"cannot decompress the {comp} data: it ends before the end of its compressed " \
        "stream" in str(e) and "the file is truncated" in str(e)
    broken = bytearray(packed)
    broken[len(broken) // 2] ^= 0x55
    p = write(tmp_path / "bad", bytes(broken))
    try:
        ev.read_word_pairs(p)
    except FormatError as exc:
        assert exc.path == p
        assert "compressed data is damaged" in str(exc) or "cannot decompress" in str(exc)
    else:  # pragma: no cover - every codec here checks a CRC of the data
        pytest.fail("a damaged stream was read without an error")


def test_evaluate_has_no_reader_of_its_own():
    # The drifted copies are gone: compression is recognised in one place.
    assert not hasattr(ev, "_compression_of")
    assert ev._read_bytes.__module__ == "embq._evaluate"
    assert "read_all" in ev._read_bytes.__code__.co_names


def test_test_files_from_standard_input(tmp_path, monkeypatch):
    src = write(tmp_path / "p.gz", gzip.compress(PAIRS))
    with open(src, "rb") as f:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(f))
        assert ev.read_word_pairs("-")[:2] == (["cat", "sun"], ["dog", "moon"])
    with open(write(tmp_path / "bad", PAIRS + b"x\ty\n"), "rb") as f:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(f))
        assert error(ev.read_word_pairs, "-").path == "<stdin>"


# --------------------------------------------------------------------------------------------
# Input and read_all themselves


def test_read_all_bounds_the_decompressed_size(tmp_path):
    bomb = write(tmp_path / "bomb.gz", gzip.compress(bytes(1 << 20)))
    e = error(read_all, bomb, "a word-pair file", 1000)
    assert "more than 1,000 bytes once decompressed; expected a word-pair file" in str(e)
    assert read_all(write(tmp_path / "ok", b"x" * 1000), "a file", 1000)[1] == b"x" * 1000
    e = error(read_all, write(tmp_path / "big", b"x" * 1001), "a file", 1000)
    assert "once decompressed" not in str(e)


def test_a_directory_says_what_was_expected(tmp_path):
    with pytest.raises(IsADirectoryError, match="expected a word-pair file"):
        ev.read_word_pairs(tmp_path)
    with pytest.raises(IsADirectoryError, match="expected an embedding file"):
        load_embeddings(tmp_path)


def test_input_reads_a_pipe_with_short_reads(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("needs named pipes")
    import threading

    content = bz2.compress(b"abc" * 50_000) + bz2.compress(b"def")
    fifo = str(tmp_path / "pipe")
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "wb") as f:
            for i in range(0, len(content), 7):  # tiny writes: short reads on the other side
                f.write(content[i : i + 7])
                f.flush()

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    inp = Input(fifo)
    try:
        assert inp.compression == "bz2"
        assert inp.read_exact(1 << 20) == b"abc" * 50_000 + b"def"
        assert inp.raw_bytes == len(content) and inp.raw_tell() is None
    finally:
        inp.close()
    t.join(5)
    inp.close()  # twice is fine


def test_unknown_compression_name_is_refused():
    with pytest.raises(ValueError, match="expected gzip, bz2 or xz"):
        _input.new_decompressor("zip")
