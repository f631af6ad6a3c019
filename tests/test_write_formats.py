"""Export to Parquet and safetensors, and Store.to_arrow: what is written reads back the same."""

from __future__ import annotations

import os

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from formats_util import assert_same_store, cli_error, compressed, npy_store, rows  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

import embq  # noqa: E402
from embq.cli import main  # noqa: E402


@pytest.fixture
def store(tmp_path):
    x = rows(300, 11)
    return npy_store(tmp_path, x, [f"k{i}" for i in range(300)], name="src"), x


def dequantized(path):
    with embq.open(str(path)) as st:
        return list(st.index_to_key) if st.has_keys else None, np.array(st[:], np.float32)


def test_parquet_export(tmp_path, store):
    src, _ = store
    out = tmp_path / "out.parquet"
    s = embq.export(str(src), str(out), format="parquet")
    assert s["rows"] == 300 and s["size"] == out.stat().st_size and s["keys_path"] is None
    pf = pq.ParquetFile(out)
    assert pf.schema_arrow.field("vector").type == pa.list_(pa.float32(), 11)
    assert pf.schema_arrow.field("key").type == pa.string()
    t = pq.read_table(out)
    keys, x = dequantized(src)
    assert t.column("key").to_pylist() == keys
    got = np.array(t.column("vector").combine_chunks().flatten()).reshape(-1, 11)
    assert got.tobytes() == x.tobytes()
    # Read back, the dequantized rows quantize to the same codes: the same store.
    assert_same_store(compressed(tmp_path, out), src)


def test_safetensors_export(tmp_path, store):
    src, _ = store
    out = tmp_path / "model.safetensors"
    s = embq.export(str(src), str(out), format="safetensors", tensor_name="word_embeddings")
    assert s["keys_path"] == str(tmp_path / "vocab.txt")
    keys, x = dequantized(src)
    loaded = load_file(str(out))
    assert list(loaded) == ["word_embeddings"]
    assert loaded["word_embeddings"].tobytes() == x.tobytes()
    with safe_open(str(out), "numpy") as f:
        assert f.metadata()["writer"] == "embq"
    assert (tmp_path / "vocab.txt").read_text().splitlines() == keys
    assert_same_store(compressed(tmp_path, out, keys=tmp_path / "vocab.txt"), src)
    with pytest.raises(FileExistsError):
        embq.export(str(src), str(tmp_path / "other.safetensors"), format="safetensors")
    assert not (tmp_path / "other.safetensors").exists()  # vocab.txt exists: nothing written


def test_keyless_store(tmp_path):
    x = rows(40, 5)
    src = npy_store(tmp_path, x, name="nokeys")
    out = tmp_path / "nk.parquet"
    embq.export(str(src), str(out), format="parquet")
    assert pq.read_table(out).column_names == ["vector"]
    st_out = tmp_path / "nk.safetensors"
    assert embq.export(str(src), str(st_out), format="safetensors")["keys_path"] is None
    assert not (tmp_path / "vocab.txt").exists()
    assert_same_store(compressed(tmp_path, out, name="a"), src)
    assert_same_store(compressed(tmp_path, st_out, name="b"), src)


def test_failed_export_leaves_no_file(tmp_path):
    src = tmp_path / "nl.embq"
    embq.save(str(src), rows(3, 4), ["a", "b\nc", "d"])
    out = tmp_path / "bad.safetensors"
    with pytest.raises(ValueError, match="cannot be written one per line"):
        embq.export(str(src), str(out), format="safetensors")
    assert os.listdir(tmp_path) == ["nl.embq"]
    with pytest.raises(ValueError, match="tensor_name"):
        embq.export(str(src), str(out), format="safetensors", tensor_name="__metadata__")


def test_to_arrow(tmp_path, store):
    src, _ = store
    keys, x = dequantized(src)
    with embq.open(str(src)) as st:
        t = st.to_arrow(batch_rows=64)
        assert isinstance(t, pa.Table) and t.num_rows == 300
        assert t.column("key").to_pylist() == keys
        assert np.array(t.column("vector").combine_chunks().flatten()).tobytes() == x.tobytes()
        reader = st.to_arrow(stream=True, batch_rows=100)
        sizes = [b.num_rows for b in reader]
        assert sizes == [100, 100, 100]
        with pytest.raises(ValueError, match="batch_rows"):
            st.to_arrow(batch_rows=0)


def test_cli_export(tmp_path, store, capsys):
    src, _ = store
    out = tmp_path / "cli.safetensors"
    assert main(["export", str(src), str(out), "--format", "safetensors", "--tensor-name", "w",
                 "--keys", str(tmp_path / "keys.txt")]) == 0
    assert "as safetensors" in capsys.readouterr().out
    assert list(load_file(str(out))) == ["w"]
    assert "--tensor-name is only used with --format safetensors" in cli_error(
        capsys, "export", src, tmp_path / "x.parquet", "--format", "parquet", "--tensor-name",
        "w")
    assert main(["export", str(src), str(tmp_path / "cli.parquet"), "--format", "parquet",
                 "-q"]) == 0


def test_gensim_vectors_round_trip(tmp_path):
    gensim_utils = pytest.importorskip("gensim.test.utils")
    original = gensim_utils.datapath("word2vec_pre_kv_c")
    ref = compressed(tmp_path, original, name="ref")
    pq_out = tmp_path / "kv.parquet"
    embq.export(str(ref), str(pq_out), format="parquet")
    assert_same_store(compressed(tmp_path, pq_out, name="pq"), ref)
    st_out = tmp_path / "kv.safetensors"
    embq.export(str(ref), str(st_out), format="safetensors")
    assert_same_store(compressed(tmp_path, st_out, name="st", keys=tmp_path / "vocab.txt"), ref)
