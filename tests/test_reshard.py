"""embq.shard / embq.merge and their commands: shard then merge is the identity, bit for bit."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import embq
from embq._errors import StoreError
from embq._manifest import entry_for, read_manifest, shard_name, write_manifest
from embq.cli import main


def _datasets(path) -> dict:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
        out["attrs"] = {k: v for k, v in f.attrs.items() if k != "embq_version"}
    return out


def _assert_identical(a, b) -> None:
    da, db = _datasets(a), _datasets(b)
    assert sorted(da) == sorted(db)
    for name in da:
        if name == "attrs":
            assert da[name].keys() == db[name].keys()
            for k in da[name]:
                assert np.array_equal(da[name][k], db[name][k]), k
        else:
            assert da[name].dtype == db[name].dtype and da[name].shape == db[name].shape
            assert da[name].tobytes() == db[name].tobytes(), name


def _store(path, n, dim=9, keys=True, seed=0, prefix="k"):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, dim)) * rng.uniform(0.01, 5, (n, 1))).astype(np.float32)
    embq.save(path, x, [f"{prefix}{i}" for i in range(n)] if keys else None,
              attrs={"source_path": "/data/x.txt", "note": "kept"})
    return str(path)


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 300), shard_rows=st.integers(1, 400), keys=st.booleans())
def test_shard_then_merge_is_the_identity(tmp_path_factory, n, shard_rows, keys):
    d = tmp_path_factory.mktemp("ident")
    src = _store(d / "s.h5", n, keys=keys, seed=n)
    s = embq.shard(src, d / "sharded", shard_rows=shard_rows)
    assert s["shards"] == -(-n // shard_rows)
    m = read_manifest(d / "sharded")
    assert [e.rows for e in m.shards] == [min(shard_rows, n - a) for a in range(0, n, shard_rows)]
    assert m.has_keys is keys
    embq.merge(d / "sharded", d / "back.h5")
    _assert_identical(src, d / "back.h5")  # every dataset, keys/hash too, and the attributes


def test_merge_of_a_sharded_compress_equals_one_compress(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2500, 7)).astype(np.float32)
    lines = [f"{len(x)} 7"] + [f"w{i} " + " ".join(f"{v:.9g}" for v in row)
                                for i, row in enumerate(x)]
    (tmp_path / "a.txt").write_text("\n".join(lines) + "\n")
    embq.compress(tmp_path / "a.txt", tmp_path / "one.h5")
    embq.compress(tmp_path / "a.txt", tmp_path / "sharded", shard_rows=400)
    assert len(read_manifest(tmp_path / "sharded").shards) > 5
    embq.merge(tmp_path / "sharded", tmp_path / "merged.h5")
    one, merged = _datasets(tmp_path / "one.h5"), _datasets(tmp_path / "merged.h5")
    for name in ("codes", "scales", "zero_points", "norms", "keys/utf8", "keys/offsets",
                 "keys/hash"):
        assert one[name].tobytes() == merged[name].tobytes(), name
    # attributes every shard shares are kept; per-shard figures are not
    assert merged["attrs"]["source_format"] == "word2vec"
    assert "source_range" not in merged["attrs"] and "source_rows" not in merged["attrs"]


def test_merge_names_the_bad_shard(tmp_path):
    src = _store(tmp_path / "s.h5", 100)
    embq.shard(src, tmp_path / "sh", shard_rows=30)
    part2 = tmp_path / "sh" / "shards" / "part-00002.h5"
    other = _store(tmp_path / "other.h5", 30, seed=9)
    os.replace(other, part2)
    with pytest.raises(StoreError, match=r"shard 2 \(shards/part-00002\.h5\) .*changed since"):
        embq.merge(tmp_path / "sh", tmp_path / "m.h5")
    os.unlink(part2)
    with pytest.raises(StoreError,
                       match=r"shard 2 \(shards/part-00002\.h5\) .* cannot open it \(No such"):
        embq.merge(tmp_path / "sh", tmp_path / "m.h5")
    with open(part2, "wb") as f:
        f.write(b"not hdf5")
    with pytest.raises(StoreError, match=r"shard 2 \(shards/part-00002\.h5\)"):
        embq.merge(tmp_path / "sh", tmp_path / "m.h5")
    assert not os.path.exists(tmp_path / "m.h5")
    with open(tmp_path / "sh" / "manifest.json", "w") as f:
        json.dump({"format": "nope"}, f)
    with pytest.raises(StoreError, match="manifest"):
        embq.merge(tmp_path / "sh", tmp_path / "m.h5")
    with pytest.raises(FileNotFoundError):
        embq.merge(tmp_path / "nothing", tmp_path / "m.h5")
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith((".", "m"))) == []


def test_merge_refuses_a_key_in_two_shards(tmp_path):
    d = tmp_path / "hand"
    os.makedirs(d / "shards")
    from embq._manifest import SHARD_UUID_ATTR, new_shard_uuid

    rng = np.random.default_rng(1)
    for i, keys in enumerate((["a", "b", "c"], ["d", "b"])):
        embq.save(d / shard_name(i), rng.standard_normal((len(keys), 4)), keys,
                  attrs={SHARD_UUID_ATTR: new_shard_uuid()})
    write_manifest(d, dim=4, has_keys=True, shards=[entry_for(d, shard_name(0), rows=3, offset=0),
                                                    entry_for(d, shard_name(1), rows=2, offset=3)])
    with pytest.raises(StoreError, match=r"key 'b' is in shard 1 \(shards/part-00001\.h5, row 1\) "
                                         r"and in shard 0 \(shards/part-00000\.h5, row 1\)"):
        embq.merge(d, tmp_path / "m.h5")
    assert not os.path.exists(tmp_path / "m.h5")


def test_shard_output_rules(tmp_path):
    src = _store(tmp_path / "s.h5", 50)
    embq.shard(src, tmp_path / "sh", shard_rows=20)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        embq.shard(src, tmp_path / "sh", shard_rows=20)
    embq.shard(src, tmp_path / "sh", shard_rows=7, overwrite=True)
    assert len(read_manifest(tmp_path / "sh").shards) == 8
    os.mkdir(tmp_path / "plain")
    with pytest.raises(IsADirectoryError, match="not a sharded store"):
        embq.shard(src, tmp_path / "plain", shard_rows=7, overwrite=True)
    with pytest.raises(ValueError, match="shard_rows"):
        embq.shard(src, tmp_path / "x", shard_rows=0)
    with pytest.raises(StoreError):
        embq.shard(_bad(tmp_path), tmp_path / "x", shard_rows=3)
    assert sorted(os.listdir(tmp_path)) == ["bad.h5", "plain", "s.h5", "sh"]


def _bad(tmp_path) -> str:
    p = tmp_path / "bad.h5"
    p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    return str(p)


def test_cli_shard_and_merge(tmp_path, capsys):
    src = _store(tmp_path / "s.h5", 120)
    assert main(["shard", src, str(tmp_path / "sh"), "--shard-rows", "50"]) == 0
    assert "120 rows x 9 in 3 shards" in capsys.readouterr().out
    assert main(["merge", str(tmp_path / "sh"), str(tmp_path / "m.h5")]) == 0
    assert "120 rows x 9 from 3 shards" in capsys.readouterr().out
    _assert_identical(src, tmp_path / "m.h5")
    assert main(["merge", str(tmp_path / "sh"), str(tmp_path / "m.h5")]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "sh"), str(tmp_path / "m.h5"), "--overwrite", "-q"]) == 0
    assert main(["shard", src, str(tmp_path / "sh2"), "--shard-rows", "0"]) == 2
    assert "--shard-rows must be a positive" in capsys.readouterr().err
    os.unlink(tmp_path / "sh" / "shards" / "part-00001.h5")
    assert main(["merge", str(tmp_path / "sh"), str(tmp_path / "m2.h5")]) == 2
    err = capsys.readouterr().err
    assert "shard 1 (shards/part-00001.h5)" in err and err.count("\n") == 1
    assert main(["shard", str(tmp_path / "missing.h5"), str(tmp_path / "sh3"),
                 "--shard-rows", "5"]) == 2
    assert not os.path.exists(tmp_path / "sh3") and not os.path.exists(tmp_path / "m2.h5")
