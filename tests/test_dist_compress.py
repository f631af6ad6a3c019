"""Sharded compress: several inputs, or one input split at row boundaries, on a Dask cluster
or in this process, equal one compress of the concatenated input bit for bit."""

from __future__ import annotations

import bz2
import gzip
import os

import numpy as np
import pytest

import embq
from embq import _dist_compress
from embq._errors import FormatError
from embq._manifest import check_shard, read_manifest
from embq.cli import main

distributed = pytest.importorskip("distributed")

DIM = 12


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0")
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def _rows(n: int, seed: int, start: int = 0, prefix: str = "w"):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, DIM)) * rng.uniform(0.1, 10, (n, 1))).astype(np.float32)
    x[rng.integers(0, n)] = 0.0  # a zero row: scale 0
    return [f"{prefix}{i}" for i in range(start, start + n)], x


def _text(keys, x, header=True) -> bytes:
    lines = [f"{len(keys)} {x.shape[1]}"] if header else []
    lines += [k + " " + " ".join(f"{v:.9g}" for v in row) for k, row in zip(keys, x)]
    return ("\n".join(lines) + "\n").encode()


def _binary(keys, x) -> bytes:
    out = [f"{len(keys)} {x.shape[1]}\n".encode()]
    for k, row in zip(keys, x):
        out.append(k.encode() + b" " + row.astype("<f4").tobytes() + b"\n")
    return b"".join(out)


def _write(path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def _arrays(path) -> dict:
    """codes, scales, zero points, norms and keys of a store or of a sharded store's shards,
    concatenated in manifest order."""
    if os.path.isdir(path):
        m = read_manifest(path)
        parts = [_arrays(m.shard_path(i)) for i in range(len(m.shards))]
        out = {k: ([key for p in parts for key in p[k]] if k == "keys"
                   else np.concatenate([p[k] for p in parts]))
               for k in parts[0] if k != "sketch_center"}
        if "sketch_center" in parts[0]:
            # one center, the whole store's, in every shard
            assert m.sketch
            for p in parts[1:]:
                assert p["sketch_center"].tobytes() == parts[0]["sketch_center"].tobytes()
            out["sketch_center"] = parts[0]["sketch_center"]
        else:
            assert not m.sketch
        return out
    with embq.open(path) as st:
        out = {"codes": np.array(st.codes), "scales": np.array(st.scales),
               "zero_points": np.array(st.zero_points), "norms": np.array(st.norms),
               "keys": list(st.index_to_key) if st.has_keys else []}
        if st.sketch is not None:
            out.update(sketch=np.array(st.sketch), sketch_center=np.array(st.sketch_center))
        return out


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if k == "keys":
            assert a[k] == b[k]
        else:
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
            assert a[k].tobytes() == b[k].tobytes(), k


def _check_manifest(path, shard_rows=None) -> None:
    m = read_manifest(path)
    assert m.rows == sum(s.rows for s in m.shards)
    for i, e in enumerate(m.shards):
        with embq.open(m.shard_path(i)) as st:
            check_shard(m, i, rows=len(st), dim=st.dim, has_keys=st.has_keys,
                        uuid=st.attrs.get("shard_uuid"), size=os.path.getsize(m.shard_path(i)),
                        has_sketch=st.sketch is not None)
        assert e.rows >= 1
        if shard_rows is not None:
            assert e.rows <= shard_rows
    assert sorted(os.listdir(path)) == ["manifest.json", "shards"]
    assert sorted(os.listdir(os.path.join(path, "shards"))) == \
        [f"part-{i:05d}.h5" for i in range(len(m.shards))]


def _leftovers(directory) -> list[str]:
    return [n for n in os.listdir(directory) if "embq-tmp" in n or n.startswith("out")]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Four inputs of four kinds (word2vec text, GloVe gzip, word2vec binary, word2vec bz2)
    and the word2vec text of all their rows."""
    d = tmp_path_factory.mktemp("mixed")
    parts = [_rows(700, 1, 0), _rows(450, 2, 700), _rows(600, 3, 1150), _rows(250, 4, 1750)]
    files = [
        _write(d / "a.txt", _text(*parts[0])),
        _write(d / "b.glove.gz", gzip.compress(_text(*parts[1], header=False))),
        _write(d / "c.bin", _binary(*parts[2])),
        _write(d / "d.txt.bz2", bz2.compress(_text(*parts[3]))),
    ]
    keys = [k for p in parts for k in p[0]]
    x = np.concatenate([p[1] for p in parts])
    whole = _write(d / "all.txt", _text(keys, x))
    one = str(d / "one.h5")
    embq.compress(whole, one)
    return files, whole, one


@pytest.mark.parametrize("use_client", [False, True])
@pytest.mark.parametrize("shard_rows", [None, 256])
def test_mixed_inputs_equal_one_compress(mixed, tmp_path, client, use_client, shard_rows):
    files, _whole, one = mixed
    out = tmp_path / "out.embq"
    s = embq.compress(files, out, shard_rows=shard_rows, client=client if use_client else None)
    _assert_same(_arrays(out), _arrays(one))
    _check_manifest(out, shard_rows)
    assert s["rows"] == s["rows_read"] == 2000 and s["duplicates"] == 0
    assert s["format"] == "glove+word2vec+word2vec-binary"
    if shard_rows is None:
        assert s["shards"] == 4  # one per input
    else:
        assert s["shards"] >= 8
    with embq.open(read_manifest(out).shard_path(0)) as st:
        assert st.attrs["source_path"] == files[0]
        assert st.attrs["source_format"] == "word2vec"


@pytest.fixture(scope="module")
def big_text(tmp_path_factory):
    d = tmp_path_factory.mktemp("big")
    keys, x = _rows(5000, 7)
    path = _write(d / "big.vec", _text(keys, x))
    glove = _write(d / "big.glove", b"\xef\xbb\xbf" + _text(keys, x, header=False))
    one = str(d / "one.h5")
    embq.compress(path, one)
    return path, glove, one


@pytest.mark.parametrize("use_client", [False, True])
@pytest.mark.parametrize("which", ["word2vec", "glove"])
def test_one_text_file_split_by_byte_ranges(big_text, tmp_path, client, use_client, which):
    path, glove, one = big_text
    src = path if which == "word2vec" else glove
    pieces, _ = _dist_compress._plan([src], format=None, keys=None, limit=None,
                                     encoding="utf8", unicode_errors="strict", shard_rows=600,
                                     block_rows=None)
    assert len(pieces) >= 8 and {p.kind for p in pieces} == {"bytes"}
    with open(src, "rb") as f:
        data = f.read()
    for p in pieces[1:]:
        assert data[p.start - 1 : p.start] == b"\n"  # every range starts at a line start
    out = tmp_path / "out.embq"
    s = embq.compress(src, out, shard_rows=600, client=client if use_client else None,
                      block_rows=97)
    _assert_same(_arrays(out), _arrays(one))
    _check_manifest(out, 600)
    assert s["rows"] == 5000 and s["shards"] >= 8


def test_npy_split_by_rows_with_keys(tmp_path, client):
    keys, x = _rows(3000, 11)
    np.save(tmp_path / "x.npy", x)
    _write(tmp_path / "x.keys", ("\n".join(keys) + "\n").encode())
    one = tmp_path / "one.h5"
    embq.compress(tmp_path / "x.npy", one, keys=tmp_path / "x.keys")
    out = tmp_path / "out.embq"
    s = embq.compress(tmp_path / "x.npy", out, keys=tmp_path / "x.keys", shard_rows=700,
                      client=client)
    assert s["shards"] == 5
    _assert_same(_arrays(out), _arrays(one))
    _check_manifest(out, 700)


def test_npy_inputs_without_keys(tmp_path):
    _, x = _rows(900, 12)
    np.save(tmp_path / "a.npy", x[:400])
    np.save(tmp_path / "b.npy", x[400:].astype(np.float64))
    np.save(tmp_path / "all.npy", x)
    embq.compress(tmp_path / "all.npy", tmp_path / "one.h5")
    out = tmp_path / "out.embq"
    embq.compress([tmp_path / "a.npy", tmp_path / "b.npy"], out, shard_rows=150)
    _assert_same(_arrays(out), _arrays(tmp_path / "one.h5"))
    assert read_manifest(out).has_keys is False


@pytest.mark.parametrize("use_client", [False, True])
def test_duplicate_keys_across_inputs_first_wins(tmp_path, client, use_client):
    k1, x1 = _rows(800, 21)
    k2, x2 = _rows(800, 22, start=500)  # w500..w799 repeat keys of the first file
    k2[100] = "w3"                       # and one more, far back
    k2[700] = k2[650]                    # a repeat within the second file
    a = _write(tmp_path / "a.txt", _text(k1, x1))
    b = _write(tmp_path / "b.txt", _text(k2, x2, header=False))
    whole = _write(tmp_path / "all.txt", _text(k1 + k2, np.concatenate([x1, x2])))
    with pytest.warns(UserWarning, match="duplicate") as w1:
        ref = embq.compress(whole, tmp_path / "one.h5")
    out = tmp_path / "out.embq"
    got_warnings = []
    s = embq.compress([a, b], out, shard_rows=300, client=client if use_client else None,
                      warn=got_warnings.append)
    assert s["duplicates"] == ref["duplicates"] == 301
    _assert_same(_arrays(out), _arrays(tmp_path / "one.h5"))
    m = read_manifest(out)
    recorded = [embq.open(m.shard_path(i)).attrs for i in range(len(m.shards))]
    for a_, e in zip(recorded, m.shards):  # each shard: rows read, minus those dropped
        assert int(a_["source_rows"]) - int(a_["source_duplicates"]) == e.rows
    _check_manifest(out, 300)
    assert len(got_warnings) == 1 and "301 duplicate keys" in got_warnings[0]
    # the first repeat in input order is w500 on line 1 of b.txt, first on line 502 of a.txt
    assert "'w500' on line 1 of " + b in got_warnings[0]
    assert "line 502 of " + a in got_warnings[0]
    assert s["first_duplicate"][0] == ref["first_duplicate"][0] == "w500"
    assert "301" in str(w1[0].message)

    with pytest.raises(FormatError) as one_err:
        embq.compress(whole, tmp_path / "one-err.h5", on_duplicate="error")
    with pytest.raises(FormatError) as err:
        embq.compress([a, b], tmp_path / "out-err", shard_rows=300, on_duplicate="error",
                      client=client if use_client else None)
    assert "'w500'" in str(one_err.value) and "'w500'" in str(err.value)
    assert str(err.value).startswith(f"{b}, line 1: duplicate key 'w500' on line 1 of {b}, "
                                     f"first seen on line 502 of {a}")
    assert not _leftovers(tmp_path) or _leftovers(tmp_path) == ["out.embq"]


def test_duplicate_within_one_shard_and_same_file_twice(tmp_path):
    keys, x = _rows(300, 31)
    a = _write(tmp_path / "a.txt", _text(keys, x))
    with pytest.raises(FormatError, match=r"first seen on line 2 of .*a\.txt \(input 1\)"):
        embq.compress([a, a], tmp_path / "out", on_duplicate="error")
    s = embq.compress([a, a], tmp_path / "out", warn=lambda m: None)
    assert s["rows"] == 300 and s["duplicates"] == 300
    assert read_manifest(tmp_path / "out").shards[0].rows == 300


def test_limit_counts_rows_in_input_order(mixed, tmp_path):
    files, whole, _one = mixed
    embq.compress(whole, tmp_path / "one.h5", limit=1000)
    out = tmp_path / "out.embq"
    s = embq.compress(files, out, limit=1000, shard_rows=256)
    assert s["rows"] == 1000
    _assert_same(_arrays(out), _arrays(tmp_path / "one.h5"))
    # a GloVe file (no count in its header) first: later rows are cut after reading
    out2 = tmp_path / "out2.embq"
    embq.compress([files[1], files[0]], out2, limit=500)
    keys = _arrays(out2)["keys"]
    assert keys[:450] == [f"w{i}" for i in range(700, 1150)]
    assert keys[450:] == [f"w{i}" for i in range(50)]


@pytest.mark.parametrize("use_client", [False, True])
def test_bad_row_in_a_later_byte_range_names_the_true_line(big_text, tmp_path, client,
                                                          use_client):
    path, _glove, _one = big_text
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    lines[4321] = lines[4321].replace(b" ", b" x", 1)  # 'xVALUE' is not a number
    bad = _write(tmp_path / "bad.vec", b"\n".join(lines))
    with pytest.raises(FormatError) as one:
        embq.compress(bad, tmp_path / "one.h5")
    with pytest.raises(FormatError) as got:
        embq.compress(bad, tmp_path / "out", shard_rows=600,
                      client=client if use_client else None)
    assert "line 4322" in str(one.value)
    assert str(got.value) == str(one.value)
    assert os.listdir(tmp_path) == ["bad.vec"]  # nothing left behind


@pytest.mark.parametrize("line", [2, 1500, 2703, 4999])
def test_blank_line_inside_a_split_file(big_text, tmp_path, line):
    path, _glove, _one = big_text
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    lines[line - 1] = b""
    bad = _write(tmp_path / "blank.vec", b"\n".join(lines))
    with pytest.raises(FormatError) as one:
        embq.compress(bad, tmp_path / "one.h5")
    with pytest.raises(FormatError) as got:
        embq.compress(bad, tmp_path / "out", shard_rows=300)
    assert f"line {line}" in str(one.value) and "empty line" in str(one.value)
    assert str(got.value) == str(one.value)


def test_header_count_checked_over_all_ranges(big_text, tmp_path):
    path, _glove, _one = big_text
    with open(path, "rb") as f:
        data = f.read()
    for header in (b"5003 12", b"4990 12"):
        bad = _write(tmp_path / "count.vec", header + data[data.index(b"\n"):])
        with pytest.raises(FormatError) as one:
            embq.compress(bad, tmp_path / "one.h5")
        with pytest.raises(FormatError) as got:
            embq.compress(bad, tmp_path / "out", shard_rows=600)
        assert str(got.value) == str(one.value)


def test_interrupted_build_leaves_nothing(mixed, tmp_path, monkeypatch):
    files, _whole, _one = mixed
    real = _dist_compress.read_piece
    calls = []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(_dist_compress, "read_piece", interrupted)
    with pytest.raises(KeyboardInterrupt):
        embq.compress(files, tmp_path / "out.embq", shard_rows=256)
    assert os.listdir(tmp_path) == []


def test_bad_input_on_the_cluster_leaves_nothing(mixed, tmp_path, client):
    files, _whole, _one = mixed
    bad = _write(tmp_path / "bad.txt", b"2 12\nw1 " + b"0.5 " * 12 + b"\nw2 0.5 nope\n")
    with pytest.raises(FormatError, match=r"bad\.txt, line 3, byte 64: value 'nope' is not"):
        embq.compress([*files, bad], tmp_path / "out.embq", client=client)
    assert os.listdir(tmp_path) == ["bad.txt"]


def test_inputs_must_agree(tmp_path):
    a = _write(tmp_path / "a.txt", _text(*_rows(10, 1)))
    k, x = _rows(10, 2)
    b = _write(tmp_path / "b.txt", _text(k, x[:, :5]))
    np.save(tmp_path / "c.npy", x)
    with pytest.raises(FormatError, match=r"b\.txt: rows of 5 values, but .*a\.txt"):
        embq.compress([a, b], tmp_path / "out")
    with pytest.raises(FormatError, match=r"c\.npy: a \.npy array without keys"):
        embq.compress([a, str(tmp_path / "c.npy")], tmp_path / "out")
    with pytest.raises(FileNotFoundError):
        embq.compress([a, str(tmp_path / "missing.txt")], tmp_path / "out")
    with pytest.raises(ValueError, match="shard_rows"):
        embq.compress([a, a], tmp_path / "out", shard_rows=0)
    with pytest.raises(FormatError, match="-: not a regular file"):
        embq.compress([a, "-"], tmp_path / "out")
    embq.compress([a], tmp_path / "single.h5")  # one input, no sharding: a plain store
    assert os.path.isfile(tmp_path / "single.h5")
    os.mkdir(tmp_path / "dir")
    with pytest.raises(IsADirectoryError, match="not a sharded store"):
        embq.compress([a, a], tmp_path / "dir", overwrite=True, warn=lambda m: None)
    assert sorted(n for n in os.listdir(tmp_path) if "embq-tmp" in n) == []


def test_overwrite_replaces_a_sharded_store(tmp_path):
    a = _write(tmp_path / "a.txt", _text(*_rows(50, 1)))
    b = _write(tmp_path / "b.txt", _text(*_rows(50, 2, start=50)))
    out = tmp_path / "out"
    embq.compress([a, b], out)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        embq.compress([a, b], out)
    s = embq.compress([b, a], out, overwrite=True, progress=True)
    assert s["rows"] == 100 and _arrays(out)["keys"][0] == "w50"
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.txt", "out"]


def test_cli_several_inputs_and_scheduler(mixed, tmp_path, client, capsys, monkeypatch):
    files, _whole, one = mixed
    out = tmp_path / "out.embq"
    code = main(["compress", *files, str(out), "--shard-rows", "400", "--scheduler",
                 client.scheduler.address])
    assert code == 0
    line = capsys.readouterr().out
    assert "2,000 rows x 12 in" in line and "shards from" in line
    _assert_same(_arrays(out), _arrays(one))
    assert main(["compress", *files, str(out)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    bad = _write(tmp_path / "bad.txt", b"oops\n")
    assert main(["compress", files[0], bad, str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.txt" in err and "Traceback" not in err
    assert main(["compress", files[0], str(tmp_path / "o3"), "--shard-rows", "0"]) == 2
    assert main(["compress", files[0], files[1], str(tmp_path / "o4"), "--keys", "k"]) == 2
    monkeypatch.setattr("embq._cmd_compress._CONNECT_SECONDS", 1)
    assert main(["compress", files[0], str(tmp_path / "o5"), "--scheduler",
                 "tcp://127.0.0.1:1"]) == 2
    assert "cannot connect" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["bad.txt", "out.embq"]


def test_cli_workers_runs_a_local_cluster(tmp_path, capsys, run_python):
    a = _write(tmp_path / "a.txt", _text(*_rows(300, 1)))
    b = _write(tmp_path / "b.txt", _text(*_rows(300, 2, start=300)))
    res = run_python("-m", "embq", "compress", a, b, str(tmp_path / "out"), "--workers", "2",
                     "--shard-rows", "100")
    assert res.returncode == 0, res.stderr
    assert "600 rows x 12 in" in res.stdout
    assert read_manifest(tmp_path / "out").rows == 600


def test_relative_paths_on_the_cluster(tmp_path, client, monkeypatch):
    keys, x = _rows(400, 41)
    _write(tmp_path / "a.txt", _text(keys[:150], x[:150]))
    np.save(tmp_path / "b.npy", x[150:])
    _write(tmp_path / "b.keys", ("\n".join(keys[150:]) + "\n").encode())
    _write(tmp_path / "all.txt", _text(keys, x))
    monkeypatch.chdir(tmp_path)
    embq.compress("all.txt", "one.h5")
    embq.compress("b.npy", "b.h5", keys="b.keys")
    embq.compress("b.npy", "out-b", keys="b.keys", shard_rows=100, client=client)
    _assert_same(_arrays("out-b"), _arrays("b.h5"))
    embq.compress(["a.txt", "a.txt"], "out", shard_rows=100, client=client,
                  warn=lambda m: None)
    assert _arrays("out")["keys"] == keys[:150]


@pytest.mark.parametrize("how", ["many buckets", "every hash equal"])
def test_global_key_pass_buckets_and_hash_collisions(tmp_path, monkeypatch, how):
    k1, x1 = _rows(500, 51)
    k2, x2 = _rows(500, 52, start=300)
    a = _write(tmp_path / "a.txt", _text(k1, x1))
    b = _write(tmp_path / "b.txt", _text(k2, x2))
    whole = _write(tmp_path / "all.txt", _text(k1 + k2, np.concatenate([x1, x2])))
    ref = embq.compress(whole, tmp_path / "one.h5", warn=lambda m: None)
    if how == "many buckets":
        monkeypatch.setattr(_dist_compress, "_BUCKET_ROWS", 37)
    else:  # only the keys themselves can tell rows apart
        import embq._kernels_store as ks

        monkeypatch.setattr(ks, "hash_key", lambda key: 12345)
    s = embq.compress([a, b], tmp_path / "out", shard_rows=128, warn=lambda m: None)
    assert s["duplicates"] == ref["duplicates"] == 200
    _assert_same(_arrays(tmp_path / "out"), _arrays(tmp_path / "one.h5"))


def test_interrupted_after_the_cluster_wrote_shards_leaves_nothing(mixed, tmp_path, client,
                                                                  monkeypatch):
    files, _whole, _one = mixed

    def interrupted(*args, **kwargs):
        assert os.listdir(os.path.join(args[4], "shards"))  # the workers wrote shards
        raise KeyboardInterrupt

    monkeypatch.setattr(_dist_compress, "_finish", interrupted)
    with pytest.raises(KeyboardInterrupt):
        embq.compress(files, tmp_path / "out.embq", shard_rows=300, client=client)
    assert os.listdir(tmp_path) == []
