"""The sharded-store manifest: written atomically, read back, every inconsistency named."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import embq
from embq import _manifest as mf


def _write_shards(directory, parts, keys=None):
    """Write each matrix of ``parts`` as a shard; return the manifest entries."""
    os.makedirs(directory / mf.SHARD_DIR, exist_ok=True)
    entries, offset = [], 0
    for i, x in enumerate(parts):
        rel = mf.shard_name(i)
        k = None if keys is None else keys[offset:offset + len(x)]
        embq.save(directory / rel, x, keys=k, attrs={mf.SHARD_UUID_ATTR: mf.new_shard_uuid()})
        entries.append(mf.entry_for(directory, rel, rows=len(x), offset=offset))
        offset += len(x)
    return entries


@pytest.fixture
def sharded(tmp_path):
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((n, 8)).astype(np.float32) for n in (5, 0, 7)]
    keys = [f"k{i}" for i in range(12)]
    d = tmp_path / "vecs.embq"
    entries = _write_shards(d, parts, keys)
    mf.write_manifest(d, dim=8, has_keys=True, shards=entries)
    return d


def test_round_trip(sharded):
    assert mf.is_sharded(sharded)
    m = mf.read_manifest(sharded)
    assert (m.dim, m.rows, m.has_keys) == (8, 12, True)
    assert [s.rows for s in m.shards] == [5, 0, 7]
    assert [s.offset for s in m.shards] == [0, 5, 5]
    assert m.offsets.tolist() == [0, 5, 5, 12]
    for i, s in enumerate(m.shards):
        assert os.path.getsize(m.shard_path(i)) == s.bytes
    shard, local = m.locate([0, 4, 5, 11])
    # The empty shard 1 is never chosen for row 5.
    assert shard.tolist() == [0, 0, 2, 2]
    assert local.tolist() == [0, 4, 0, 6]
    assert not [p for p in os.listdir(sharded) if p.endswith(".embq-tmp")]


def test_not_sharded(tmp_path):
    assert not mf.is_sharded(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"manifest\.json"):
        mf.read_manifest(tmp_path)


def _edit(sharded, fn):
    path = sharded / mf.MANIFEST_NAME
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(format="other"), "'format' is 'other'"),
    (lambda d: d.update(format_version=2), "format_version"),
    (lambda d: d.update(format_version=True), "format_version"),
    (lambda d: d.update(dim=-1), "'dim' is -1"),
    (lambda d: d.update(rows=13), "'rows' is 13, but the shards hold 12"),
    (lambda d: d.update(has_keys="yes"), "'has_keys'"),
    (lambda d: d.update(shards=[]), "'shards'"),
    (lambda d: d["shards"][2].update(offset=4), "shard 2: 'offset' is 4, expected 5"),
    (lambda d: d["shards"][0].update(path="../x.h5"), "shard 0: 'path'"),
    (lambda d: d["shards"][0].update(path="/etc/passwd"), "shard 0: 'path'"),
    (lambda d: d["shards"][0].update(path="shards/./part-00000.h5"), "shard 0: 'path'"),
    (lambda d: d["shards"][1].update(path=d["shards"][0]["path"]), "listed twice"),
    (lambda d: d["shards"][1].update(uuid=""), "shard 1: 'uuid'"),
    (lambda d: d["shards"][1].update(rows=1.5), "shard 1: 'rows'"),
])
def test_bad_manifest(sharded, edit, message):
    _edit(sharded, edit)
    with pytest.raises(embq.StoreError, match=message) as info:
        mf.read_manifest(sharded)
    assert "manifest.json" in str(info.value)


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"\xff\xfe", b"1" * 10, b"[" * 100000])
def test_manifest_not_json(sharded, raw):
    (sharded / mf.MANIFEST_NAME).write_bytes(raw)
    with pytest.raises(embq.StoreError, match="manifest"):
        mf.read_manifest(sharded)


def test_check_shard_names_what_changed(sharded):
    m = mf.read_manifest(sharded)
    e = m.shards[2]
    ok = dict(rows=e.rows, dim=8, has_keys=True, uuid=e.uuid, size=e.bytes)
    mf.check_shard(m, 2, **ok)
    for change, message in [
        ({"uuid": "other"}, "changed since the manifest"),
        ({"size": e.bytes + 1}, "changed since the manifest"),
        ({"rows": 3}, "holds 3 rows"),
        ({"dim": 9}, "dimension 9"),
        ({"has_keys": False}, "has_keys"),
    ]:
        with pytest.raises(embq.StoreError, match=message) as info:
            mf.check_shard(m, 2, **{**ok, **change})
        assert "part-00002.h5" in str(info.value)


def test_write_manifest_refuses_gaps(tmp_path):
    e = [mf.ShardEntry("shards/part-00000.h5", 3, 0, 10, "a"),
         mf.ShardEntry("shards/part-00001.h5", 3, 4, 10, "b")]
    with pytest.raises(ValueError, match="offset 4, expected 3"):
        mf.write_manifest(tmp_path, dim=2, has_keys=False, shards=e)
    with pytest.raises(ValueError, match="at least one shard"):
        mf.write_manifest(tmp_path, dim=2, has_keys=False, shards=[])
    assert not os.listdir(tmp_path)


def test_entry_for_needs_uuid(tmp_path):
    embq.save(tmp_path / "s.h5", np.ones((2, 3), np.float32))
    with pytest.raises(embq.StoreError, match="shard_uuid"):
        mf.entry_for(tmp_path, "s.h5", rows=2, offset=0)
