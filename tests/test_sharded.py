"""A sharded store read in this process answers exactly as one store with the same rows.

Every comparison is against a single store saved from the same matrix: scores as bits
(``view(np.uint32)``), rows and keys identical.  The single store's own search is tested
against a numpy oracle in test_search.py.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from _sharded_util import assert_same as _same
from _sharded_util import draw_split, tie_boundaries, uneven_sizes, write_sharded
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import embq
from embq import _manifest as mf
from embq._errors import StoreError

N, D = 600, 24
SHARD_COUNTS = (1, 2, 3, 7)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A matrix whose rows are duplicated across every shard boundary, its keys, the single
    store, and sharded stores of 1, 2, 3 and 7 uneven shards (plus one with an empty shard)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((N, D)).astype(np.float32)
    sizes = {p: uneven_sizes(N, p, rng) for p in SHARD_COUNTS}
    sizes["empty"] = [250, 0, 350]
    tie_boundaries(x, sizes.values())
    keys = [f"w{i}" for i in range(N)]
    root = tmp_path_factory.mktemp("sharded")
    embq.save(root / "one.h5", x, keys)
    paths = {p: write_sharded(root / f"s{p}.embq", x, s, keys) for p, s in sizes.items()}
    stores = {p: embq.open(path) for p, path in paths.items()}
    one = embq.open(root / "one.h5")
    yield {"x": x, "keys": keys, "one": one, "stores": stores, "sizes": sizes, "root": root}
    one.close()
    for s in stores.values():
        s.close()


def _queries(data, m=6):
    rng = np.random.default_rng(3)
    q = rng.standard_normal((m, D)).astype(np.float32)
    # Queries equal to duplicated rows: the tied pair is the top answer.
    bounds = np.cumsum(data["sizes"][7])[:-1]
    q[: min(m // 2, len(bounds))] = data["x"][bounds[: m // 2]]
    return q


def test_open_returns_the_right_kind(data):
    assert isinstance(data["stores"][3], embq._sharded.ShardedStore)
    assert type(data["one"]) is embq.Store
    with pytest.raises(ValueError, match="single store file"):
        embq.open(data["root"] / "one.h5", client=object())
    with pytest.raises(IsADirectoryError, match=r"not a store: it has no manifest\.json"):
        embq.open(data["root"])
    with pytest.raises(FileNotFoundError):
        embq.open(data["root"] / "absent.embq")


@pytest.mark.parametrize("parts", [*SHARD_COUNTS, "empty"])
@pytest.mark.parametrize("metric", ["cosine", "dot"])
@pytest.mark.parametrize("rescore", [None, 4])
def test_search_equals_one_store(data, parts, metric, rescore):
    one, st = data["one"], data["stores"][parts]
    q = _queries(data)
    sizes = data["sizes"][parts]
    boundary = int(np.cumsum(sizes)[0])
    biggest = max(sizes)
    for k in (1, 10, biggest + 5):
        # restrict: none, exactly on a shard boundary, one past it, inside the first shard
        for restrict in (None, boundary, boundary + 1, 3, 0):
            want = one.search(q, k, metric=metric, rescore=rescore, restrict=restrict)
            got = st.search(q, k, metric=metric, rescore=rescore, restrict=restrict)
            _same(got, want)
    # one query (1-D) comes back 1-D
    _same(st.search(q[0], 5, metric=metric, rescore=rescore),
          one.search(q[0], 5, metric=metric, rescore=rescore))


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(draw=st.data())
def test_any_split_equals_one_store(tmp_path_factory, draw):
    x, sizes, q = draw_split(draw)
    n = x.shape[0]
    k = draw.draw(st.integers(1, n + 3), label="k")
    restrict = draw.draw(st.none() | st.integers(0, n + 2), label="restrict")
    rescore = draw.draw(st.sampled_from([None, 1, 3]), label="rescore")
    metric = draw.draw(st.sampled_from(["cosine", "dot"]), label="metric")
    root = tmp_path_factory.mktemp("prop")
    embq.save(root / "one.h5", x)
    with embq.open(root / "one.h5") as one, \
            embq.open(write_sharded(root / "s.embq", x, sizes)) as sh:
        kw = {"metric": metric, "rescore": rescore, "restrict": restrict}
        _same(sh.search(q, k, **kw), one.search(q, k, **kw))


@pytest.mark.parametrize("magnitude", [1e-30, 1e30, 3e38])
@pytest.mark.parametrize("rescore", [None, 4])
def test_huge_and_tiny_queries_equal_one_store(data, magnitude, rescore):
    # Queries beyond the int8 scan's safe range are scaled by a power of two; dot scores
    # scaled back over- or underflow (inf, 0), and must still come in the single store's order.
    q = _queries(data)
    q = (q / np.abs(q).max(axis=1, keepdims=True) * np.float32(magnitude)).astype(np.float32)
    q[1] = 0.0
    for metric in ("dot", "cosine"):
        _same(data["stores"][7].search(q, 30, metric=metric, rescore=rescore),
              data["one"].search(q, 30, metric=metric, rescore=rescore))


def test_ties_across_a_boundary_pick_the_lower_row(data):
    st = data["stores"][7]
    b = int(np.cumsum(data["sizes"][7])[0])
    scores, rows = st.search(data["x"][b], 2, metric="dot")
    assert rows.tolist() == [b - 1, b]
    assert scores[0] == scores[1]
    _, top = st.search(data["x"][b], 1, metric="dot")
    assert top.tolist() == [b - 1]


def test_search_arguments_are_checked_like_one_store(data):
    st = data["stores"][3]
    q = _queries(data)
    for kwargs, exc in (({"k": 0}, ValueError), ({"k": 1.5}, TypeError),
                        ({"metric": "euclid"}, ValueError), ({"rescore": 0}, ValueError),
                        ({"restrict": -1}, ValueError)):
        with pytest.raises(exc):
            data["one"].search(q, **{"k": 3, **kwargs})
        with pytest.raises(exc):
            st.search(q, **{"k": 3, **kwargs})
    with pytest.raises(ValueError, match="dimension"):
        st.search(np.ones((2, D + 1)))
    with pytest.raises(ValueError, match="NaN"):
        st.search(np.full(D, np.nan))
    _same(st.search(np.empty((0, D)), 4), data["one"].search(np.empty((0, D)), 4))


@pytest.mark.parametrize("parts", [2, 7])
def test_most_similar_family_equals_one_store(data, parts):
    one, st = data["one"], data["stores"][parts]
    b = int(np.cumsum(data["sizes"][parts])[0])
    boundary_keys = [f"w{b - 1}", f"w{b}"]
    for restrict_vocab in (None, b, b + 1):
        for rescore in (None, 4):
            kw = {"restrict_vocab": restrict_vocab, "rescore": rescore}
            assert st.most_similar(boundary_keys[1], topn=12, **kw) == \
                one.most_similar(boundary_keys[1], topn=12, **kw)
            assert st.most_similar(positive=["w1", "w500"], negative=["w300"], **kw) == \
                one.most_similar(positive=["w1", "w500"], negative=["w300"], **kw)
            assert st.most_similar_batch(boundary_keys + ["w599"], topn=5, **kw) == \
                one.most_similar_batch(boundary_keys + ["w599"], topn=5, **kw)
            assert st.similar_by_vector(data["x"][b], topn=4, **kw) == \
                one.similar_by_vector(data["x"][b], topn=4, **kw)
            assert st.similar_by_key("w42", topn=3, **kw) == \
                one.similar_by_key("w42", topn=3, **kw)
            for a, w in ((st.most_similar("w7", topn=None, **kw),
                          one.most_similar("w7", topn=None, **kw)),
                         (st.most_similar_batch(["w7", f"w{b}"], topn=None, **kw),
                          one.most_similar_batch(["w7", f"w{b}"], topn=None, **kw))):
                np.testing.assert_array_equal(a.view(np.uint32), w.view(np.uint32))
    # the input key's duplicate in the next shard is kept, the key itself left out
    got = st.most_similar(boundary_keys[0], topn=1, rescore=None)
    assert got[0][0] == boundary_keys[1]
    assert st.most_similar("w3", topn=0) == [] and st.most_similar_batch(["w3"], topn=0) == [[]]
    assert st.most_similar_batch([]) == one.most_similar_batch([])


def test_most_similar_errors(data):
    st = data["stores"][3]
    with pytest.raises(KeyError, match="nope"):
        st.most_similar("nope")
    with pytest.raises(KeyError, match="nope"):
        st.most_similar_batch(["w1", "nope"])
    with pytest.raises(TypeError, match="list of keys"):
        st.most_similar_batch("w1")
    with pytest.raises(TypeError, match="bogus"):
        st.most_similar("w1", bogus=3)
    with pytest.raises(ValueError, match="no input"):
        st.most_similar()
    with pytest.raises(ValueError, match="restrict_vocab"):
        st.most_similar("w1", restrict_vocab=-1)
    one = data["one"]
    for call in (lambda s: s.similar_by_key(b"w1"), lambda s: s.similar_by_vector("w1"),
                 lambda s: s.most_similar_batch(["w1", b"w2"]),
                 lambda s: s.most_similar([("w1", "heavy")])):
        with pytest.raises(TypeError) as got:
            call(st)
        with pytest.raises(TypeError) as want:
            call(one)
        assert str(got.value) == str(want.value)


def test_lookups_equal_one_store(data):
    one, st = data["one"], data["stores"][7]
    rng = np.random.default_rng(11)
    picks = rng.integers(0, N, 10_000)
    keys = [data["keys"][i] for i in picks.tolist()]
    np.testing.assert_array_equal(st[keys], one[keys])
    assert [st.get_index(k) for k in keys] == picks.tolist()
    assert [st.key_to_index[k] for k in keys[:500]] == picks[:500].tolist()
    assert all(k in st for k in keys[:500])
    for key in (picks[:50].tolist() + [-1, -N]):
        np.testing.assert_array_equal(st[key], one[key])
    for idx in (slice(None), slice(5, 400, 3), slice(-10, None), [4, 598, 4, 300],
                np.array([599, 0, 0]), np.arange(N) % 3 == 0, ["w5", 7, "w599"], []):
        np.testing.assert_array_equal(st[idx], one[idx])
    for key in ("w0", "w599", 333):
        for norm in (False, True):
            np.testing.assert_array_equal(st.get_vector(key, norm=norm),
                                          one.get_vector(key, norm=norm))
    np.testing.assert_array_equal(st.vectors_for_all(["w9", "w1"]), one[["w9", "w1"]])
    assert st.index_to_key == one.index_to_key
    assert list(st.index_to_key) == data["keys"]
    for sl in (slice(None), slice(100, 300), slice(-3, None), slice(None, None, 7),
               slice(5, 5)):
        assert st.index_to_key[sl] == data["keys"][sl]
    assert st.index_to_key[-1] == "w599" and st.index_to_key.index("w300") == 300
    assert "w300" in st.index_to_key and st.index_to_key.count("nope") == 0
    assert st.key_to_index.get("nope", -5) == -5 and len(st.key_to_index) == N
    assert "w10" in repr(st.index_to_key) or "w0" in repr(st.index_to_key)


def test_a_key_is_hashed_once_across_the_shards(data):
    from embq import _kernels_store as ks

    one, st = data["one"], data["stores"][7]
    rng = np.random.default_rng(12)
    keys = [data["keys"][i] for i in rng.integers(0, N, 3000).tolist()]
    expected = one[keys]
    before = ks.hashes_computed()
    got = st[keys]                               # a batch: hash_keys, then shard by shard
    assert ks.hashes_computed() - before == len(keys)
    np.testing.assert_array_equal(got, expected)
    last = data["keys"][-1]                      # found in the last of 7 shards
    before = ks.hashes_computed()
    assert st.get_index(last) == N - 1
    assert ks.hashes_computed() - before == 1
    expected = one[last]
    before = ks.hashes_computed()
    got = st[last]
    assert ks.hashes_computed() - before == 1
    np.testing.assert_array_equal(got, expected)


def test_hash_keys_and_lookups_by_hash_equal_the_kernels_own(data):
    from embq import _kernels_store as ks

    index = data["one"]._index
    keys = [*data["keys"][::7], "nope", "", "\ud800", "é" * 40, "w5"]
    hashes = ks.hash_keys(keys)
    assert hashes.dtype == np.uint64 and hashes.shape == (len(keys),)
    assert hashes[-3] == 0                       # no UTF-8 form: absent whatever the hash
    for k, h in zip(keys, hashes.tolist()):
        if k != "\ud800":
            assert ks.hash_key(k) == h
            assert index.find_hashed(k, h) == index.find(k)
    assert index.find_hashed("\ud800", 0) == -1
    np.testing.assert_array_equal(index.find_many(keys, hashes), index.find_many(keys))
    assert ks.hash_keys([]).shape == (0,)
    with pytest.raises(TypeError, match="item 1 is int 3"):
        ks.hash_keys(["a", 3])
    with pytest.raises(ValueError, match="uint64 array of 2 values"):
        index.find_many(["a", "b"], hashes[:3])
    with pytest.raises(ValueError, match="got list"):
        index.find_many(["a", "b"], [1, 2])


def test_missing_keys_and_bad_indices(data):
    st = data["stores"][3]
    for get in (lambda: st["nope"], lambda: st[["w1", "nope"]], lambda: st.get_index("nope"),
                lambda: st.key_to_index["nope"], lambda: st.get_vector("nope")):
        with pytest.raises(KeyError, match="Key 'nope' not present"):
            get()
    assert "nope" not in st and st.get_index("nope", -1) == -1
    assert 5 in st and N not in st
    with pytest.raises(IndexError, match="out of range"):
        st[N]
    with pytest.raises(IndexError, match="out of range"):
        st[[0, N]]
    with pytest.raises(IndexError):
        st.index_to_key[N]
    with pytest.raises(TypeError):
        st[1.5]
    with pytest.raises(TypeError):
        st[True]


def test_api_basics(data, tmp_path):
    st = data["stores"][3]
    assert len(st) == N and st.shape == (N, D) and st.dim == D and st.has_keys
    assert st.attrs["format"] == "embq-sharded" and st.attrs["n_rows"] == N
    assert st.attrs["n_shards"] == 3 and st.attrs["scheme"] == data["one"].attrs["scheme"]
    assert st.dtype == np.float32
    assert len(st.shards) == 3 and st.shard(1) is st.shards[1]
    assert st.offsets.tolist() == [0, *np.cumsum(data["sizes"][3]).tolist()]
    np.testing.assert_array_equal(np.concatenate([s.codes for s in st.shards]),
                                  data["one"].codes)
    for name in ("codes", "scales", "zero_points", "norms"):
        with pytest.raises(AttributeError, match=rf"shards\[i\]\.{name}"):
            getattr(st, name)
    assert "ShardedStore" in repr(st) and "shards=3" in repr(st) and "(open)" in repr(st)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(st)
    path = write_sharded(tmp_path / "c.embq", data["x"][:20], [8, 12], data["keys"][:20])
    with embq.open(path) as s2:
        assert s2["w3"].shape == (D,)
    assert s2.closed and "(closed)" in repr(s2)
    s2.close()  # twice is fine
    assert len(s2) == 20 and s2.shape == (20, D)
    for use in (lambda: s2["w1"], lambda: s2[0], lambda: s2.search(data["x"][0]),
                lambda: s2.index_to_key, lambda: s2.shards, lambda: "w1" in s2):
        with pytest.raises(ValueError, match="closed"):
            use()


def test_store_without_keys(data, tmp_path):
    x = data["x"][:50]
    embq.save(tmp_path / "one.h5", x)
    path = write_sharded(tmp_path / "nk.embq", x, [20, 30])
    with embq.open(tmp_path / "one.h5") as one, embq.open(path) as st:
        assert st.index_to_key is None and st.key_to_index is None and not st.has_keys
        assert "w1" not in st
        with pytest.raises(KeyError, match="no keys"):
            st["w1"]
        np.testing.assert_array_equal(st[[49, 0, 20]], one[[49, 0, 20]])
        assert st.most_similar(25, topn=5) == one.most_similar(25, topn=5)
        _same(st.search(x[:3], 7), one.search(x[:3], 7))


def test_a_store_split_by_embq_shard_reads_as_the_store(data, tmp_path):
    from embq._reshard import shard

    out = tmp_path / "split.embq"
    shard(data["root"] / "one.h5", out, shard_rows=97)
    one, q = data["one"], _queries(data)
    with embq.open(out) as st:
        assert len(st.shards) == -(-N // 97)
        for rescore in (None, 4):
            _same(st.search(q, 20, rescore=rescore, restrict=194),
                  one.search(q, 20, rescore=rescore, restrict=194))
        assert st.index_to_key == one.index_to_key
        np.testing.assert_array_equal(st[data["keys"][::-1]], one[data["keys"][::-1]])


def _evaluation_files(tmp_path, keys):
    rng = np.random.default_rng(5)
    pairs = tmp_path / "pairs.txt"
    lines = ["# word pairs"]
    for j in range(60):
        # half the pairs among the first 90 keys, so a small restrict_vocab still knows some
        a, b = rng.choice(90 if j % 2 else len(keys), 2, replace=False)
        lines.append(f"{keys[a].upper()}\t{keys[b]}\t{rng.uniform(0, 10):.2f}")
    lines.append("w1\tunknownword\t3.0")
    pairs.write_text("\n".join(lines) + "\n")
    analogies = tmp_path / "analogies.txt"
    lines = []
    for section in range(2):
        lines.append(f": section-{section}")
        for j in range(40):
            w = rng.choice(90 if j % 2 else len(keys), 4, replace=False)
            lines.append(" ".join(keys[i] for i in w))
    analogies.write_text("\n".join(lines) + "\n")
    return pairs, analogies


def test_evaluations_equal_one_store(data, tmp_path):
    pytest.importorskip("scipy")
    one, st = data["one"], data["stores"][7]
    pairs, analogies = _evaluation_files(tmp_path, data["keys"])
    b = int(np.cumsum(data["sizes"][7])[1])
    for restrict_vocab in (300000, b, 100):
        p1 = one.evaluate_word_pairs(pairs, restrict_vocab=restrict_vocab)
        p2 = st.evaluate_word_pairs(pairs, restrict_vocab=restrict_vocab)
        assert (p1[0][0], p1[1][0], p1[2]) == (p2[0][0], p2[1][0], p2[2])
        a1 = one.evaluate_word_analogies(analogies, restrict_vocab=restrict_vocab)
        a2 = st.evaluate_word_analogies(analogies, restrict_vocab=restrict_vocab)
        assert a1 == a2


def test_to_keyed_vectors(data):
    pytest.importorskip("gensim")
    kv1, kv2 = data["one"].to_keyed_vectors(), data["stores"][7].to_keyed_vectors()
    assert kv1.index_to_key == kv2.index_to_key
    np.testing.assert_array_equal(kv1.vectors, kv2.vectors)


# -- shards that are not what the manifest says -------------------------------------------------

def _copy_sharded(data, tmp_path) -> str:
    sizes = [200, 150, 250]
    return write_sharded(tmp_path / "v.embq", data["x"], sizes, data["keys"])


def test_missing_shard_is_named(data, tmp_path):
    path = _copy_sharded(data, tmp_path)
    os.remove(os.path.join(path, mf.shard_name(1)))
    with pytest.raises(StoreError, match=r"shard 1 \(shards/part-00001\.h5\).*cannot open"):
        embq.open(path)


def test_unreadable_shard_is_named(data, tmp_path):
    path = _copy_sharded(data, tmp_path)
    shard = os.path.join(path, mf.shard_name(2))
    size = os.path.getsize(shard)
    with open(shard, "r+b") as fh:   # same size, not HDF5 any more
        fh.write(b"\0" * 4096)
    assert os.path.getsize(shard) == size
    with pytest.raises(StoreError, match=r"shard 2 \(shards/part-00002\.h5\)"):
        embq.open(path)


def test_replaced_shard_is_named(data, tmp_path):
    path = _copy_sharded(data, tmp_path)
    # the same rows written again: another shard_uuid, so not the file the manifest names
    embq.save(os.path.join(path, mf.shard_name(0)), data["x"][:200], data["keys"][:200],
              overwrite=True, attrs={mf.SHARD_UUID_ATTR: mf.new_shard_uuid()})
    with pytest.raises(StoreError, match=r"shard 0 .*changed since the manifest"):
        embq.open(path)


@pytest.mark.parametrize("what", ["dim", "rows", "keys"])
def test_shard_of_another_shape_is_named(data, tmp_path, what):
    x, keys = data["x"], data["keys"]
    d = tmp_path / "bad.embq"
    os.makedirs(d / mf.SHARD_DIR)
    embq.save(d / mf.shard_name(0), x[:10], keys[:10],
              attrs={mf.SHARD_UUID_ATTR: mf.new_shard_uuid()})
    other = {"dim": (x[10:20, :5], keys[10:20]), "rows": (x[10:21], keys[10:21]),
             "keys": (x[10:20], None)}[what]
    embq.save(d / mf.shard_name(1), other[0], other[1],
              attrs={mf.SHARD_UUID_ATTR: mf.new_shard_uuid()})
    e0 = mf.entry_for(d, mf.shard_name(0), rows=10, offset=0)
    e1 = mf.entry_for(d, mf.shard_name(1), rows=10, offset=10)   # the manifest says 10 rows
    mf.write_manifest(d, dim=D, has_keys=True, shards=[e0, e1])
    message = {"dim": "dimension 5", "rows": "holds 11 rows", "keys": "has_keys"}[what]
    with pytest.raises(StoreError, match=rf"shard 1 .*{message}"):
        embq.open(d)
