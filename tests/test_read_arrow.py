"""Reading Parquet, Arrow IPC files/streams, Feather, HF dataset folders, directories, globs."""

from __future__ import annotations

import json

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
feather = pytest.importorskip("pyarrow.feather")

from formats_util import (  # noqa: E402
    assert_same_store,
    cli_error,
    compressed,
    npy_store,
    rows,
    store_arrays,
)

import embq  # noqa: E402
from embq import FormatError, detect_format, load_embeddings, open_embeddings  # noqa: E402

N, D = 157, 9


def vector_array(x: np.ndarray, kind: str, value_type=None):
    value_type = value_type or pa.from_numpy_dtype(x.dtype)
    values = pa.array(x.reshape(-1), value_type)
    if kind == "fixed":
        return pa.FixedSizeListArray.from_arrays(values, x.shape[1])
    offsets = pa.array(np.arange(0, x.size + 1, x.shape[1]), pa.int32())
    if kind == "large":
        return pa.LargeListArray.from_arrays(pa.array(np.arange(0, x.size + 1, x.shape[1]),
                                                      pa.int64()), values)
    return pa.ListArray.from_arrays(offsets, values)


def table(x, keys=None, kind="fixed", **extra):
    cols = {}
    if keys is not None:
        cols["word"] = pa.array(keys)
    cols["emb"] = vector_array(x, kind)
    cols.update(extra)
    return pa.table(cols)


def keys_of(n, start=0):
    return [f"w{i}" for i in range(start, start + n)]


@pytest.mark.parametrize(("kind", "dtype"), [("fixed", "float32"), ("list", "float32"),
                                             ("large", "float16"), ("list", "float64")])
def test_parquet_same_store_as_npy(tmp_path, kind, dtype):
    x = rows(N, D).astype(dtype)
    keys = keys_of(N)
    p = tmp_path / "emb.parquet"
    pq.write_table(table(x, keys, kind, n=pa.array(np.arange(N))), p, row_group_size=40)
    assert detect_format(p) == "parquet"
    got = compressed(tmp_path, p, block_rows=25)
    assert_same_store(got, npy_store(tmp_path, x, keys))
    attrs = store_arrays(got)["attrs"]
    assert (attrs["source_format"], attrs["source_vector_column"], attrs["source_key_column"]) \
        == ("parquet", "emb", "word")
    assert attrs["source_size"] == p.stat().st_size


def test_limit_normalize_and_keyless(tmp_path):
    x = rows(N, D)
    p = tmp_path / "emb.parquet"
    pq.write_table(table(x), p, row_group_size=50)
    got = compressed(tmp_path, p, limit=120, normalize=True, block_rows=32)
    assert_same_store(got, npy_store(tmp_path, x, limit=120, normalize=True))
    assert store_arrays(got)["keys"] is None


def test_integer_keys_become_decimal_strings(tmp_path):
    x = rows(20, 3)
    ids = np.arange(1000, 1020, dtype=np.int64)
    p = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"id": ids, "text": [f"t{i}" for i in range(20)],
                             "emb": vector_array(x, "list")}), p)
    keys, v = load_embeddings(p, key_column="id")
    assert keys == [str(i) for i in ids] and v.tobytes() == x.tobytes()
    keys, _ = load_embeddings(p)  # default: the only string column
    assert keys[:2] == ["t0", "t1"]


def test_arrow_file_feather_and_stream(tmp_path):
    x = rows(N, D).astype(np.float16)
    keys = keys_of(N)
    t = table(x, keys)
    ref = npy_store(tmp_path, x, keys)
    ipc = tmp_path / "emb.arrow"
    with pa.OSFile(str(ipc), "wb") as f, pa.ipc.new_file(f, t.schema) as w:
        w.write_table(t, max_chunksize=60)
    fea = tmp_path / "emb.feather"
    feather.write_feather(t, str(fea), chunksize=70)
    stream = tmp_path / "emb.stream"
    with pa.OSFile(str(stream), "wb") as f, pa.ipc.new_stream(f, t.schema) as w:
        w.write_table(t, max_chunksize=33)
    for path, fmt in ((ipc, "arrow"), (fea, "arrow"), (stream, "arrow-stream")):
        assert detect_format(path) == fmt
        assert_same_store(compressed(tmp_path, path, name=fmt, block_rows=50), ref)
    with open_embeddings(stream, limit=100, block_rows=40) as r:
        assert r.count == N and r.dim == D and r.has_keys
        assert [len(b.vectors) for b in r] == [33, 33, 33, 1]


def write_hf_dataset(folder, tables: list) -> None:
    """What ``datasets.Dataset.save_to_disk`` writes: Arrow stream shards plus two JSON files."""
    folder.mkdir()
    names = []
    for i, t in enumerate(tables):
        name = f"data-{i:05d}-of-{len(tables):05d}.arrow"
        with pa.OSFile(str(folder / name), "wb") as f, pa.ipc.new_stream(f, t.schema) as w:
            w.write_table(t, max_chunksize=1000)
        names.append(name)
    (folder / "state.json").write_text(json.dumps({
        "_data_files": [{"filename": n} for n in names], "_fingerprint": "x",
        "_format_columns": None, "_format_kwargs": {}, "_format_type": None,
        "_output_all_columns": False, "_split": None}))
    (folder / "dataset_info.json").write_text(json.dumps({
        "features": {"sentence": {"dtype": "string", "_type": "Value"},
                     "embedding": {"feature": {"dtype": "float32", "_type": "Value"},
                                   "_type": "Sequence"}}}))


def test_hf_dataset_folder(tmp_path, capsys):
    x = rows(N, D)
    keys = [f"sentence {i}" for i in range(N)]
    parts = [pa.table({"sentence": keys[a:b], "embedding": vector_array(x[a:b], "list")})
             for a, b in ((0, 100), (100, N))]
    folder = tmp_path / "ds"
    write_hf_dataset(folder, parts)
    assert detect_format(folder) == "hf-dataset"
    got = compressed(tmp_path, folder, block_rows=64)
    assert_same_store(got, npy_store(tmp_path, x, keys))
    with open_embeddings(folder) as r:
        assert r.describe_row(120) == "row 120 (row 20 of data-00001-of-00002.arrow)"
    dd = tmp_path / "dd"
    dd.mkdir()
    (dd / "dataset_dict.json").write_text('{"splits": ["train"]}')
    (dd / "train").mkdir()
    line = cli_error(capsys, "compress", dd, tmp_path / "o.embq")
    assert "DatasetDict" in line and "train" in line


def test_directory_and_glob_of_parquet(tmp_path):
    x = rows(N, D)
    keys = keys_of(N)
    d = tmp_path / "parts"
    d.mkdir()
    bounds = [(0, 50), (50, 51), (51, N)]
    for i, (a, b) in enumerate(bounds):
        pq.write_table(table(x[a:b], keys[a:b]), d / f"part-{i}.parquet")
    ref = npy_store(tmp_path, x, keys)
    assert detect_format(d) == "parquet"
    assert_same_store(compressed(tmp_path, d, name="dir", block_rows=20), ref)
    assert_same_store(compressed(tmp_path, str(d / "part-*.parquet"), name="glob"), ref)
    keys2, v = load_embeddings(str(d / "part-*.parquet"), limit=60)
    assert keys2 == keys[:60] and v.tobytes() == x[:60].tobytes()
    # evaluate --against takes the glob too, and lines it up with the store exactly.
    from embq.cli import main

    store = compressed(tmp_path, str(d / "part-*.parquet"), name="glob2")
    assert main(["evaluate", str(store), "--against", str(d / "part-*.parquet"), "--json",
                 "--sample", "20"]) == 0
    assert main(["evaluate", str(store), "--against", str(d / "nothing-*.parquet")]) == 2


def test_bad_columns(tmp_path, capsys):
    x = rows(10, 4)
    out = tmp_path / "o.embq"
    p = tmp_path / "s.parquet"
    pq.write_table(pa.table({"word": keys_of(10), "emb": [str(v) for v in x.tolist()]}), p)
    line = cli_error(capsys, "compress", p, out)
    assert "no column of vectors" in line and "'emb' (string)" in line
    line = cli_error(capsys, "compress", p, out, "--vector-column", "emb")
    assert "column 'emb' holds string; expected vectors" in line
    line = cli_error(capsys, "compress", p, out, "--vector-column", "nope")
    assert "no column 'nope'" in line
    two = tmp_path / "two.parquet"
    pq.write_table(pa.table({"a": vector_array(x, "list"), "b": vector_array(x, "fixed")}), two)
    assert "2 columns of vectors: pick one with --vector-column" in cli_error(
        capsys, "compress", two, out)
    keys, v = load_embeddings(two, vector_column="b")
    assert keys is None and v.tobytes() == x.tobytes()
    strs = tmp_path / "strs.parquet"
    pq.write_table(pa.table({"a": ["x"] * 10, "b": ["y"] * 10, "v": vector_array(x, "list")}),
                   strs)
    assert "could hold the keys: pick one with --key-column" in cli_error(
        capsys, "compress", strs, out)
    line = cli_error(capsys, "compress", strs, out, "--key-column", "v")
    assert "key column 'v' holds list<float>; expected strings or integers" in line
    line = cli_error(capsys, "compress", strs, out, "--tensor", "w")
    assert "--tensor" in line and "is parquet" in line
    assert not out.exists()


def test_bad_rows(tmp_path, capsys):
    out = tmp_path / "o.embq"
    ragged = tmp_path / "ragged.parquet"
    pq.write_table(pa.table({"w": keys_of(5), "v": [[1.0, 2.0]] * 3 + [[1.0]] + [[1.0, 2.0]]}),
                   ragged)
    line = cli_error(capsys, "compress", ragged, out, "--block-rows", "2")
    assert "row 3: the vector (column 'v') has 1 value; expected 2" in line
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"w": keys_of(4), "v": [[1.0, 2.0], [3.0, 4.0], None, [1.0, 1.0]]}),
                   nulls)
    assert "row 2: the vector (column 'v') is null" in cli_error(capsys, "compress", nulls, out)
    inner = tmp_path / "inner.parquet"
    pq.write_table(pa.table({"v": pa.array([[1.0, 2.0], [3.0, None]],
                                           pa.list_(pa.float32(), 2))}), inner)
    assert "row 1: value 1 of the vector (column 'v') is null" in cli_error(
        capsys, "compress", inner, out)
    nan = tmp_path / "nan.parquet"
    pq.write_table(pa.table({"v": pa.array([[1.0, 2.0], [3.0, 4.0], [np.nan, 1.0]],
                                           pa.list_(pa.float16()))}), nan)
    line = cli_error(capsys, "compress", nan, out)
    assert "row 2 of column 'v' holds nan" in line and "expected finite values" in line
    nullkey = tmp_path / "nullkey.parquet"
    pq.write_table(pa.table({"w": ["a", None, "c"], "v": [[1.0], [2.0], [3.0]]}), nullkey)
    assert "row 1: the key (column 'w') is null" in cli_error(capsys, "compress", nullkey, out)
    first_null = tmp_path / "first_null.parquet"
    pq.write_table(pa.table({"v": pa.array([None, [1.0]], pa.list_(pa.float32()))}), first_null)
    assert "row 0: the vector (column 'v') is null" in cli_error(capsys, "compress", first_null,
                                                                 out)
    assert not out.exists()


def test_duplicate_keys(tmp_path):
    x = rows(6, 3)
    p = tmp_path / "dup.parquet"
    pq.write_table(table(x, ["a", "b", "c", "b", "d", "e"]), p)
    warned = []
    s = embq.compress(str(p), str(tmp_path / "o.embq"), warn=warned.append)
    assert s["duplicates"] == 1 and s["rows"] == 5 and "'b' on row 3" in warned[0]
    with pytest.raises(FormatError, match="duplicate key 'b' on row 3, first seen on row 1"):
        embq.compress(str(p), str(tmp_path / "e.embq"), on_duplicate="error")


def test_not_parquet(tmp_path, capsys):
    txt = tmp_path / "words.txt"
    txt.write_text("a 1 2\nb 3 4\n")
    line = cli_error(capsys, "compress", txt, tmp_path / "o.embq", "--format", "parquet")
    assert "not a Parquet file" in line and str(txt) in line
    cut = tmp_path / "cut.parquet"
    pq.write_table(table(rows(50, 4)), cut)
    cut.write_bytes(cut.read_bytes()[:-30])
    assert "not a Parquet file" in cli_error(capsys, "compress", cut, tmp_path / "o.embq")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "state.json").write_text("{}")
    assert "state.json does not list the data files" in cli_error(
        capsys, "compress", empty, tmp_path / "o.embq")
    assert "no file matches" in cli_error(capsys, "compress", str(tmp_path / "none-*.parquet"),
                                          tmp_path / "o.embq")


def test_progress_bar_and_summary_line(tmp_path, capsys):
    from embq.cli import main

    x = rows(N, D)
    p = tmp_path / "emb.parquet"
    pq.write_table(table(x, keys_of(N)), p, row_group_size=50)
    seen = []
    with open_embeddings(p, block_rows=40) as r:
        for _ in r:
            seen.append(r.bytes_read)
    assert seen == sorted(seen) and seen[-1] == p.stat().st_size
    assert main(["compress", str(p), str(tmp_path / "o.embq"), "--progress"]) == 0
    out, err = capsys.readouterr()
    assert f"{N:,} rows x {D} from parquet" in out and "emb.parquet" in err


_DAMAGE = r'''
import os, random, sys
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
from safetensors.numpy import save_file
from embq import FormatError, load_embeddings

x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
keys = pa.array([f"k{i}" for i in range(64)])
t = pa.table({"k": keys, "v": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 8)})
pq.write_table(t, "a.parquet", row_group_size=20)
pq.write_table(pa.table({"k": keys, "v": pa.array(x.tolist(), pa.list_(pa.float16()))}),
               "b.parquet", row_group_size=20)
with pa.OSFile("a.arrow", "wb") as f, pa.ipc.new_file(f, t.schema) as w:
    w.write_table(t, max_chunksize=16)
with pa.OSFile("a.stream", "wb") as f, pa.ipc.new_stream(f, t.schema) as w:
    w.write_table(t, max_chunksize=16)
save_file({"w": x.astype(np.float16), "b": np.zeros(3, np.float32)}, "a.safetensors")
np.savez_compressed("a.npz", v=x)
np.savez("b.npz", v=x)
rng = random.Random(int(sys.argv[1]))
sources = ["a.parquet", "b.parquet", "a.arrow", "a.stream", "a.safetensors", "a.npz", "b.npz"]
for it in range(int(sys.argv[2])):
    src = sources[it % len(sources)]
    data = bytearray(open(src, "rb").read())
    op = rng.randrange(3)
    if op == 0:
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif op == 1:
        del data[rng.randrange(len(data)):]
    else:
        i = rng.randrange(len(data))
        data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20)))
    path = "damaged" + os.path.splitext(src)[1]
    with open(path, "wb") as fh:
        fh.write(data)
    try:
        load_embeddings(path, block_rows=7)
    except (FormatError, OSError):
        pass
print("ok")
'''


def test_damaged_files_never_crash(run_python):
    # Arrow uses IPC data in place without checking its offsets: a damaged file crashed the
    # process (segmentation fault) before every batch was validated. Only a result or a
    # FormatError (or OSError) is allowed, for every reader of this issue.
    res = run_python("-c", _DAMAGE, "1", "420", timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_evaluate_reads_the_original_as_compress_did(tmp_path, capsys):
    from embq.cli import main

    x = rows(300, 8).astype(np.float16)
    p = tmp_path / "e.parquet"
    pq.write_table(pa.table({"id": np.arange(300), "text": [f"s{i}" for i in range(300)],
                             "v": vector_array(x, "fixed")}), p)
    out = tmp_path / "e.embq"
    assert main(["compress", str(p), str(out), "--key-column", "id", "-q"]) == 0
    # The key column compress read is recorded (source_key_column) and read again: not the
    # string column the default would pick.
    assert main(["evaluate", str(out), "--against", str(p), "--sample", "20"]) == 0
    assert "key_column 'id' (the store's source_key_column)" in capsys.readouterr().out
    with embq.open(str(out)) as st:
        report = embq.compare_with_original(st, str(p), sample=0)
        assert report["original_options"]["key_column"] == "id"
        assert report["reconstruction"]["error_max_abs_over_scale"] <= 0.5 + 1e-6
        # Given options win over recorded ones: other keys, refused.
        with pytest.raises(ValueError, match="key 0 differs: store has '0', original has 's0'"):
            embq.compare_with_original(st, str(p), sample=0, key_column="text")


def test_sharded_compress_of_parquet_and_safetensors(tmp_path):
    from safetensors.numpy import save_file

    x = rows(N, D)
    keys = keys_of(N)
    ref = npy_store(tmp_path, x, keys)
    parts = []
    for i, (a, b) in enumerate(((0, 90), (90, N))):
        parts.append(tmp_path / f"p{i}.parquet")
        pq.write_table(table(x[a:b], keys[a:b]), parts[-1])
    embq.compress([str(p) for p in parts], str(tmp_path / "sharded"), shard_rows=40)
    embq.merge(str(tmp_path / "sharded"), str(tmp_path / "merged.embq"))
    assert_same_store(tmp_path / "merged.embq", ref)
    st = tmp_path / "m.safetensors"
    save_file({"w": x}, str(st))
    kp = tmp_path / "vocab.txt"
    kp.write_text("".join(k + "\n" for k in keys))
    embq.compress([str(st)], str(tmp_path / "sharded2"), keys=str(kp), shard_rows=40)
    embq.merge(str(tmp_path / "sharded2"), str(tmp_path / "merged2.embq"))
    assert_same_store(tmp_path / "merged2.embq", ref)
    with pytest.raises(ValueError, match="key_column= picks a part of one input"):
        embq.compress([str(p) for p in parts], str(tmp_path / "s3"), key_column="word")
