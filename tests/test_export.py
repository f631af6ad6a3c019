"""Tests for embq._export: every format round-trips through compress with identical codes."""

from __future__ import annotations

import os

import numpy as np
import pytest

import embq
from embq._compress import compress
from embq._export import default_keys_path, export
from embq._readers import detect_format, load_embeddings


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(11)
    keys = [f"w{i}" for i in range(500)] + ["café", "日本", "42"]
    X = (rng.standard_normal((len(keys), 24)) * 10.0 ** rng.integers(-5, 5, (len(keys), 1)))
    X[7] = 0
    p = tmp_path / "in.txt"
    p.write_text(f"{len(keys)} 24\n" + "".join(
        k + " " + " ".join(f"{v:.9g}" for v in row) + "\n" for k, row in zip(keys, X)),
        encoding="utf8")
    out = str(tmp_path / "a.embq")
    compress(str(p), out)
    return out, keys


@pytest.mark.parametrize("fmt", ["word2vec", "word2vec-binary", "glove", "npy"])
def test_roundtrip_identical_codes(tmp_path, store, fmt):
    src, keys = store
    out = str(tmp_path / f"out.{fmt}")
    s = export(src, out, format=fmt)
    assert s["rows"] == len(keys)
    assert detect_format(out) == fmt
    again = str(tmp_path / "b.embq")
    compress(out, again, keys=s["keys_path"])
    with embq.open(src) as a, embq.open(again) as b:
        assert np.array_equal(np.asarray(a.codes), np.asarray(b.codes))
        assert list(b.index_to_key) == keys
        # The exported floats are exactly the dequantized rows.
        _, x = load_embeddings(out, keys_path=s["keys_path"])
        assert np.array_equal(x, a[0:len(a)])


def test_gensim_reads_exports(tmp_path, store):
    pytest.importorskip("gensim")
    from gensim.models import KeyedVectors

    src, keys = store
    with embq.open(src) as a:
        ref = a[0:len(a)]
    for fmt, kw in (("word2vec", {}), ("word2vec-binary", {"binary": True}),
                    ("glove", {"no_header": True})):
        out = str(tmp_path / f"g.{fmt}")
        export(src, out, format=fmt)
        kv = KeyedVectors.load_word2vec_format(out, **kw)
        assert list(kv.index_to_key) == keys and np.array_equal(kv.vectors, ref)


def test_export_refuses_and_is_atomic(tmp_path, store):
    src, _ = store
    out = tmp_path / "x.txt"
    out.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        export(src, str(out), format="word2vec")
    assert out.read_bytes() == b"keep"
    export(src, str(out), format="word2vec", overwrite=True)
    assert out.read_bytes().startswith(b"503 24\n")
    with pytest.raises(FileNotFoundError, match="directory"):
        export(src, str(tmp_path / "no" / "x.txt"), format="glove")
    with pytest.raises(ValueError, match="unknown export format"):
        export(src, str(tmp_path / "y"), format="csv")
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".embq-tmp")]


def test_key_with_space_refused_for_text(tmp_path):
    embq.save(str(tmp_path / "s.embq"), np.ones((2, 3), np.float32), keys=["a b", "c"])
    with pytest.raises(ValueError, match="whitespace"):
        export(str(tmp_path / "s.embq"), str(tmp_path / "o.txt"), format="word2vec")
    assert not (tmp_path / "o.txt").exists()
    s = export(str(tmp_path / "s.embq"), str(tmp_path / "o.npy"), format="npy")
    assert s["keys_path"] == default_keys_path(str(tmp_path / "o.npy"))
    assert open(s["keys_path"], encoding="utf8").read() == "a b\nc\n"


def test_store_without_keys(tmp_path):
    embq.save(str(tmp_path / "s.embq"), np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="no keys"):
        export(str(tmp_path / "s.embq"), str(tmp_path / "o.txt"), format="glove")
    s = export(str(tmp_path / "s.embq"), str(tmp_path / "o.npy"), format="npy")
    assert s["keys_path"] is None and np.load(tmp_path / "o.npy").shape == (2, 3)


def test_output_that_is_a_directory(tmp_path, store):
    src, _ = store
    (tmp_path / "d").mkdir()
    for overwrite in (False, True):
        with pytest.raises(IsADirectoryError, match="is a directory"):
            export(src, str(tmp_path / "d"), format="word2vec", overwrite=overwrite)
        with pytest.raises(IsADirectoryError, match="is a directory"):
            export(src, str(tmp_path / "x.npy"), format="npy", keys_path=str(tmp_path / "d"),
                   overwrite=overwrite)
    assert sorted(os.listdir(tmp_path)) == ["a.embq", "d", "in.txt"]


def test_interrupt_while_creating_the_temporary_file_leaves_none(tmp_path, store,
                                                                 monkeypatch):
    src, _ = store

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fdopen", interrupted)  # right after mkstemp made the file
    with pytest.raises(KeyboardInterrupt):
        export(src, str(tmp_path / "o.txt"), format="word2vec")
    assert sorted(os.listdir(tmp_path)) == ["a.embq", "in.txt"]


# ------------------------------------------------------------------------------------------
# publishing: one atomic step shared with the store writer and compress
# ------------------------------------------------------------------------------------------


def _small_store(tmp_path):
    import embq

    p = tmp_path / "s.h5"
    embq.save(p, np.ones((3, 2), np.float32), ["a", "b", "c"])
    return p


def test_existing_output_wording_library_and_cli(tmp_path, capsys):
    from embq._errors import OutputExistsError
    from embq.cli import main

    src = _small_store(tmp_path)
    out = tmp_path / "o.txt"
    out.write_text("old")
    with pytest.raises(OutputExistsError) as info:
        export(src, out, format="glove")
    assert isinstance(info.value, FileExistsError) and info.value.path == str(out)
    assert "overwrite=True" in str(info.value) and "--overwrite" not in str(info.value)
    assert main(["export", str(src), str(out), "--format", "glove"]) == 2
    err = capsys.readouterr().err
    assert err == f"embq export: error: {out}: already exists; pass --overwrite to replace it\n"
    assert out.read_text() == "old"


@pytest.mark.parametrize("links", [True, False])
def test_output_appearing_meanwhile_is_not_replaced(tmp_path, monkeypatch, links):
    # Between the first check and the rename another process creates the output: it is kept,
    # whether the file system has hard links (link-then-unlink) or not (re-checked rename).
    import embq._publish as publish
    from embq._errors import OutputExistsError

    src = _small_store(tmp_path)
    out = tmp_path / "o.txt"
    real_publish = publish.publish

    def racing_publish(tmp, path, *, overwrite):
        out.write_text("theirs")
        return real_publish(tmp, path, overwrite=overwrite)

    if not links:
        def no_link(a, b):
            raise PermissionError(1, "hard links not supported here")
        monkeypatch.setattr(os, "link", no_link)
    monkeypatch.setattr(publish, "publish", racing_publish)
    with pytest.raises(OutputExistsError, match="appeared while the output was being written"):
        export(src, out, format="glove")
    assert out.read_text() == "theirs"
    assert [p for p in os.listdir(tmp_path) if "embq-tmp" in p] == []
    # With overwrite=True the finished file replaces it.
    export(src, out, format="glove", overwrite=True)
    assert out.read_text().split("\n")[0].startswith("a ")


def test_publish_syncs_file_and_directory(tmp_path, monkeypatch):
    import stat

    src = _small_store(tmp_path)
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    export(src, tmp_path / "o.npy", format="npy")
    # The array and the keys file, each followed by its directory entry.
    assert synced == [False, True, False, True]


def test_compress_checks_the_output_with_the_writers_helper(tmp_path, monkeypatch):
    # compress refuses an existing output before it even opens the input, with the check the
    # store writer makes (one helper, one message).
    import embq._publish as publish
    from embq import compress
    from embq._errors import OutputExistsError

    calls = []
    real = publish.check_destination
    monkeypatch.setattr(publish, "check_destination",
                        lambda path, overwrite: calls.append(path) or real(path, overwrite))
    out = tmp_path / "o.h5"
    out.write_bytes(b"x")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        compress(tmp_path / "no-such-input.vec", out)
    assert calls == [str(out)] and out.read_bytes() == b"x"
