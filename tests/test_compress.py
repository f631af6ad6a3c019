"""Tests for embq._compress and embq._recon."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

import embq
from embq._compress import compress
from embq._errors import FormatError
from embq._quantize import dequantize, quantize
from embq._recon import ReconstructionStats


def w2v(keys, X, header=True) -> str:
    lines = [f"{len(keys)} {X.shape[1]}"] if header else []
    lines += [k + " " + " ".join(f"{v:.9g}" for v in row) for k, row in zip(keys, X)]
    return "\n".join(lines) + "\n"


@pytest.fixture
def sample(tmp_path):
    rng = np.random.default_rng(3)
    keys = [f"k{i}" for i in range(300)] + ["café", "日本"]
    X = rng.standard_normal((len(keys), 16)).astype(np.float32) * 3
    X[5] = 0  # an all-zero row
    p = tmp_path / "in.txt"
    p.write_text(w2v(keys, X), encoding="utf8")
    return str(p), keys, X


def test_recon_stats_match_definition():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 33)).astype(np.float32)
    x[3] = 0
    q = quantize(x)
    s = ReconstructionStats()
    s.update(x[:20], q.codes[:20], q.scales[:20], q.zero_points[:20])
    s.update(x[20:], q.codes[20:], q.scales[20:], q.zero_points[20:])
    r = s.result()
    xh = dequantize(q.codes, q.scales, q.zero_points).astype(np.float64)
    pos = q.scales > 0
    rel = np.abs(x[pos] - xh[pos]) / q.scales[pos, None]
    assert r["error_mean_abs_over_scale"] == pytest.approx(rel.mean(), rel=1e-12)
    assert r["error_max_abs_over_scale"] == pytest.approx(rel.max(), rel=1e-12)
    nz = np.linalg.norm(x, axis=1) > 0
    l2 = np.linalg.norm(x[nz] - xh[nz], axis=1) / np.linalg.norm(x[nz].astype(np.float64), axis=1)
    assert r["error_mean_rel_l2"] == pytest.approx(l2.mean(), rel=1e-9)
    cos = (x[nz] * xh[nz]).sum(1) / (np.linalg.norm(x[nz].astype(np.float64), axis=1)
                                     * np.linalg.norm(xh[nz], axis=1))
    assert r["error_mean_cosine"] == pytest.approx(cos.mean(), rel=1e-9)
    assert r["error_max_abs_over_scale"] <= 0.5 + 1e-5
    assert np.isnan(ReconstructionStats().result()["error_mean_rel_l2"])


def test_compress_roundtrip_and_attrs(tmp_path, sample):
    path, keys, X = sample
    out = str(tmp_path / "s.embq")
    s = compress(path, out, block_rows=64)
    assert (s["rows"], s["dim"], s["format"]) == (len(keys), 16, "word2vec")
    assert s["error_max_abs_over_scale"] <= 0.5 + 1e-5
    assert s["output_size"] == os.path.getsize(out)
    with embq.open(out) as st:
        assert list(st.index_to_key) == keys
        q = quantize(X)
        assert np.array_equal(np.asarray(st.codes), q.codes)
        assert np.array_equal(np.asarray(st.scales), q.scales)
        a = st.attrs
        assert a["source_format"] == "word2vec"
        assert a["source_path"] == os.path.abspath(path)
        assert int(a["source_size"]) == os.path.getsize(path)
        for k in ("error_mean_abs_over_scale", "error_max_abs_over_scale", "error_mean_rel_l2"):
            assert a[k] == pytest.approx(s[k])


def test_compress_limit_normalize_compressed(tmp_path, sample):
    path, _, _ = sample
    gz = tmp_path / "in.txt.gz"
    gz.write_bytes(gzip.compress(open(path, "rb").read()))
    out = str(tmp_path / "n.embq")
    s = compress(str(gz), out, limit=100, normalize=True)
    assert s["rows"] == 100
    with embq.open(out) as st:
        v = st[0:100]
        n = np.linalg.norm(v, axis=1)
        assert np.allclose(n[n > 0], 1, atol=0.02)
        assert st.attrs["source_compression"] == "gzip"
        assert bool(st.attrs["normalized"])


def test_npy_without_keys(tmp_path, sample):
    _, _, X = sample
    np.save(tmp_path / "x.npy", X)
    out = str(tmp_path / "x.embq")
    compress(str(tmp_path / "x.npy"), out)
    with embq.open(out) as st:
        assert not st.has_keys and st.shape == X.shape


def test_duplicates_warn_and_error(tmp_path):
    text = "4 2\na 1 2\nb 3 4\na 5 6\nb 7 8\n"
    p = tmp_path / "d.txt"
    p.write_text(text)
    msgs = []
    s = compress(str(p), str(tmp_path / "w.embq"), warn=msgs.append)
    assert s["rows"] == 2 and s["duplicates"] == 2
    assert len(msgs) == 1 and "2 duplicate keys" in msgs[0] and "'a' on line 4" in msgs[0]
    with embq.open(str(tmp_path / "w.embq")) as st:
        assert np.allclose(st["a"], [1, 2], atol=0.01)
    with pytest.warns(UserWarning, match="duplicate"):
        compress(str(p), str(tmp_path / "w2.embq"))
    with pytest.raises(FormatError) as info:
        compress(str(p), str(tmp_path / "e.embq"), on_duplicate="error", block_rows=1)
    assert "'a' on line 4, first seen on line 2" in str(info.value)
    assert not os.path.exists(tmp_path / "e.embq")


def test_failure_leaves_no_output_and_keeps_existing(tmp_path, sample):
    path, keys, X = sample
    bad = tmp_path / "bad.txt"
    bad.write_text(w2v(keys, X).replace(keys[250] + " ", keys[250] + " nan ", 1))
    out = tmp_path / "o.embq"
    with pytest.raises(FormatError, match="line 252"):
        compress(str(bad), str(out), block_rows=16)
    assert not out.exists()
    assert [f for f in os.listdir(tmp_path) if "tmp" in f] == []
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        compress(path, str(out))
    with pytest.raises(FormatError):
        compress(str(bad), str(out), overwrite=True)
    assert out.read_bytes() == b"precious"
    with pytest.raises(FileNotFoundError, match="directory"):
        compress(path, str(tmp_path / "missing" / "o.embq"))


def test_header_count_zero(tmp_path):
    p = tmp_path / "z.txt"
    p.write_text("0 5\n")
    with pytest.raises(FormatError, match="no rows"):
        compress(str(p), str(tmp_path / "z.embq"))
    assert not (tmp_path / "z.embq").exists()


GENSIM = [("lee_fasttext.vec", {}, {}), ("test_glove.txt", {"no_header": True}, {}),
          ("euclidean_vectors.bin", {"binary": True}, {}),
          ("pang_lee_polarity_fasttext.vec", {"unicode_errors": "replace"},
           {"unicode_errors": "replace"}),
          ("crime-and-punishment.vec", {}, {}), ("toy-model.vec", {}, {}),
          ("high_precision.kv.bin", {"binary": True}, {}),
          ("high_precision.kv.txt", {}, {}),
          ("poincare_vectors.bin", {"binary": True}, {}),
          ("EN.1-10.cbow1_wind5_hs0_neg10_size300_smpl1e-05.txt", {}, {}),
          ("IT.1-10.cbow1_wind5_hs0_neg10_size300_smpl1e-05.txt", {}, {}),
          ("word2vec_pre_kv_c", {}, {}),
          # keys cut in the middle of a UTF-8 sequence
          ("w2v_keyedvectors_load_test.modeldata", {"unicode_errors": "replace"},
           {"unicode_errors": "replace"}),
          # announces 3 rows, holds 1: read with a limit
          ("pretrained.vec", {"limit": 1}, {"limit": 1})]


@pytest.mark.parametrize("name,gkw,ekw", GENSIM)
def test_gensim_files_within_half_scale(tmp_path, name, gkw, ekw):
    pytest.importorskip("gensim")
    from gensim.models import KeyedVectors
    from gensim.test.utils import datapath

    kv = KeyedVectors.load_word2vec_format(datapath(name), **gkw)
    out = str(tmp_path / "g.embq")
    compress(datapath(name), out, **ekw)
    with embq.open(out) as st:
        assert list(st.index_to_key) == list(kv.index_to_key)
        xh = st[0:len(st)]
        scales = np.asarray(st.scales)
        tol = scales[:, None] / 2 + 4 * np.spacing(np.abs(kv.vectors)) + 1e-30
        assert np.all(np.abs(xh - kv.vectors) <= tol)


def test_duplicate_errors_name_the_byte_offset(tmp_path):
    v = np.ones(2, "<f4").tobytes()
    raw = b"3 2\n" + b"a " + v + b"\nb " + v + b"\na " + v + b"\n"
    p = tmp_path / "d.bin"
    p.write_bytes(raw)
    with pytest.raises(FormatError) as info:
        compress(str(p), str(tmp_path / "d.embq"), on_duplicate="error")
    e = info.value
    assert "'a' on record 3, first seen on record 1" in str(e)
    assert e.offset == raw.rindex(b"a ") and e.line is None
    np.save(tmp_path / "x.npy", np.ones((3, 2), np.float32))
    (tmp_path / "k.txt").write_text("a\nb\na\n")
    with pytest.raises(FormatError) as info:
        compress(str(tmp_path / "x.npy"), str(tmp_path / "x.embq"), keys=str(tmp_path / "k.txt"),
                 on_duplicate="error", block_rows=2)
    assert "'a' on row 2 (line 3 of" in str(info.value)
    assert info.value.offset == 128 + 2 * 2 * 4
    p = tmp_path / "d.txt"
    p.write_text("2 2\na 1 2\na 3 4\n")
    with pytest.raises(FormatError) as info:
        compress(str(p), str(tmp_path / "t.embq"), on_duplicate="error")
    assert (info.value.line, info.value.offset) == (3, 10)


def test_output_that_is_a_directory(tmp_path, sample):
    path, _, _ = sample
    (tmp_path / "out.h5").mkdir()
    for overwrite in (False, True):
        with pytest.raises(IsADirectoryError, match="is a directory") as info:
            compress(path, str(tmp_path / "out.h5"), overwrite=overwrite)
        assert "--overwrite" not in str(info.value)
    assert os.listdir(tmp_path / "out.h5") == []


def test_standard_input(tmp_path, sample, monkeypatch):
    import io
    import sys

    path, keys, X = sample
    packed = gzip.compress(open(path, "rb").read())
    (tmp_path / "in.gz").write_bytes(packed)
    out = str(tmp_path / "stdin.embq")
    with open(tmp_path / "in.gz", "rb") as f:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(f))
        s = compress("-", out)
    assert s["rows"] == len(keys) and s["input_size"] == len(packed)
    with embq.open(out) as st:
        assert st.attrs["source_path"] == "<stdin>"
        assert int(st.attrs["source_size"]) == len(packed)
        assert np.array_equal(np.asarray(st.codes), quantize(X).codes)
