"""A sharded store's allow-lists, l2, range search and sketch prefilter equal one store's.

Every comparison is against a single store holding the same rows (scores as bits, rows and
their order identical); the single store's own options are tested against numpy oracles in
test_search.py and test_sketch.py.  The sharded stores have 1, 2, 3 and 7 uneven shards and
one with an empty shard; the first row of every shard repeats the last row of the shard
before it, so ties straddle the boundaries.  The same searches on a Dask cluster are in
test_dist_search.py.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from _sharded_util import assert_same as _same
from _sharded_util import draw_split, tie_boundaries, uneven_sizes, write_sharded
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import embq
from embq import _manifest as mf
from embq._errors import StoreError
from embq._reshard import global_center, merge, shard, sketch_sharded
from embq._sketch import add_sketch, compute_sketch

N, D = 600, 24
PARTS = (1, 2, 3, 7, "empty")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(11)
    # an offset so that the column means (the sketch's center) are not all near 0
    x = (rng.standard_normal((N, D)) + 0.2).astype(np.float32)
    sizes = {p: uneven_sizes(N, p, rng) for p in PARTS if p != "empty"}
    sizes["empty"] = [250, 0, 350]
    tie_boundaries(x, sizes.values())
    keys = [f"w{i}" for i in range(N)]
    root = tmp_path_factory.mktemp("options")
    one_path = str(root / "one.h5")
    embq.save(one_path, x, keys, n_threads=1)
    add_sketch(one_path)
    paths = {}
    for p, s in sizes.items():
        paths[p] = write_sharded(root / f"s{p}.embq", x, s, keys)
        sketch_sharded(paths[p], n_threads=1)
    stores = {p: embq.open(path) for p, path in paths.items()}
    one = embq.open(one_path)
    q = rng.standard_normal((6, D)).astype(np.float32)
    bounds = np.cumsum(sizes[7])[:-1]
    q[:3] = x[bounds[:3]]   # the tied pair across a boundary is the top answer
    yield {"x": x, "keys": keys, "one": one, "stores": stores, "paths": paths,
           "sizes": sizes, "q": q, "root": root}
    one.close()
    for s in stores.values():
        s.close()


def _allows(data):
    rng = np.random.default_rng(5)
    mask = rng.random(N) < 0.3
    rows = np.flatnonzero(mask)
    shuffled = np.concatenate([rows, rows[:5]])[rng.permutation(rows.size + 5)]
    return [mask, rows, shuffled, [data["keys"][i] for i in rows[::2]], np.array([7]),
            np.empty(0, np.int64), np.ones(N, bool)]


@pytest.mark.parametrize("parts", PARTS)
def test_allow_equals_one_store(data, parts):
    one, sh, q = data["one"], data["stores"][parts], data["q"]
    boundary = int(np.cumsum(data["sizes"][parts])[0])
    for allow in _allows(data):
        for metric, rescore in (("cosine", None), ("dot", 3), ("l2", None)):
            for k in (1, 10, N + 5):
                for restrict in (None, boundary, 3):
                    kw = {"allow": allow, "metric": metric, "rescore": rescore,
                          "restrict": restrict}
                    _same(sh.search(q, k, **kw), one.search(q, k, **kw))
        _same(sh.search(q[0], 4, allow=allow), one.search(q[0], 4, allow=allow))
        # checked once (an AllowList): the same answers, and refused by a store of other size
        token = sh.allow_list(allow)
        for kw in ({}, {"metric": "l2", "restrict": boundary}, {"metric": "dot", "rescore": 3}):
            _same(sh.search(q, 10, allow=token, **kw), one.search(q, 10, allow=allow, **kw))
            _same(sh.search(q[0], 10, allow=token, **kw), one.search(q[0], 10, allow=allow, **kw))
        assert sh.most_similar("w3", topn=5, allow=token) == one.most_similar(
            "w3", topn=5, allow=allow)


@pytest.mark.parametrize("parts", PARTS)
@pytest.mark.parametrize("rescore", [None, 1, 4])
def test_l2_equals_one_store(data, parts, rescore):
    one, sh, q = data["one"], data["stores"][parts], data["q"]
    for k in (1, 10, N + 5):
        for restrict in (None, 100, 0):
            kw = {"metric": "l2", "rescore": rescore, "restrict": restrict}
            got = sh.search(q, k, **kw)
            _same(got, one.search(q, k, **kw))
            assert (np.diff(got[0], axis=1) >= 0).all()   # smallest distance first
    # a query far outside the safe range of the cosine/dot rescue: l2 is never rescaled
    big = q * np.float32(2.0 ** 70)
    _same(sh.search(big, 5, metric="l2"), one.search(big, 5, metric="l2"))


@pytest.mark.parametrize("parts", PARTS)
def test_range_search_equals_one_store(data, parts):
    one, sh, q = data["one"], data["stores"][parts], data["q"]
    cases = [("cosine", 0.3), ("cosine", -2.0), ("dot", 5.0), ("l2", 30.0), ("l2", -1.0)]
    allow = _allows(data)[0]
    for metric, t in cases:
        for max_results in (None, 1, 7):
            for kw in ({}, {"allow": allow}, {"restrict": 250}, {"allow": allow,
                                                                  "restrict": 300}):
                kw = {**kw, "metric": metric, "threshold": t, "max_results": max_results}
                got = sh.search(q, **kw)
                _same(got, one.search(q, **kw))
                _same(sh.search(q[1], **kw), one.search(q[1], **kw))
    # every row passes: each query gets all of them, in the single store's order
    got = sh.search(q, threshold=-2.0)
    assert all(len(r) == N for r in got[1])


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(draw=st.data())
def test_any_split_and_options_equal_one_store(tmp_path_factory, draw):
    x, sizes, q = draw_split(draw)
    n = x.shape[0]
    metric = draw.draw(st.sampled_from(["cosine", "dot", "l2"]), label="metric")
    allow = draw.draw(st.none() | st.lists(st.integers(0, n - 1), max_size=n), label="allow")
    restrict = draw.draw(st.none() | st.integers(0, n + 2), label="restrict")
    kw = {"metric": metric, "restrict": restrict,
          "allow": None if allow is None else np.array(allow, np.int64)}
    if draw.draw(st.booleans(), label="range"):
        kw["threshold"] = draw.draw(st.sampled_from([-1.0, 0.0, 0.5, 4.0]), label="t")
        kw["max_results"] = draw.draw(st.none() | st.integers(1, 4), label="max_results")
        k = 1
    else:
        kw["rescore"] = draw.draw(st.sampled_from([None, 1, 3]), label="rescore")
        k = draw.draw(st.integers(1, n + 3), label="k")
    root = tmp_path_factory.mktemp("split")
    embq.save(root / "one.h5", x, n_threads=1)
    write_sharded(root / "s.embq", x, sizes)
    with embq.open(root / "one.h5") as one, embq.open(root / "s.embq") as sh:
        _same(sh.search(q, k, **kw), one.search(q, k, **kw))


# -- the sketch prefilter ------------------------------------------------------------------------

@pytest.mark.parametrize("parts", PARTS)
def test_sketch_prefilter_equals_one_store(data, parts):
    one, sh, q = data["one"], data["stores"][parts], data["q"]
    assert sh.manifest.sketch and sh.attrs["sketch"]
    assert sh.sketch_center.tobytes() == one.sketch_center.tobytes()
    for oversample in (1, 3, 40):
        for k in (1, 5, 20):
            for kw in ({}, {"rescore": 2}, {"metric": "dot"}, {"restrict": 222},
                       {"metric": "dot", "rescore": 1, "restrict": 401}):
                kw = {**kw, "prefilter": "sketch", "oversample": oversample}
                got = sh.search(q, k, **kw)
                _same(got, one.search(q, k, **kw))
    _same(sh.search(q[2], 3, prefilter="sketch"), one.search(q[2], 3, prefilter="sketch"))
    # queries beyond the safe range: their dot scores overflow to equal infinities, which
    # one store ranks by the scaled query's scores
    for e in (124, -120):
        far = q * np.float32(2.0 ** e)
        for kw in ({"metric": "dot"}, {"metric": "dot", "rescore": 2}, {}):
            kw = {**kw, "prefilter": "sketch", "oversample": 4}
            _same(sh.search(far, 6, **kw), one.search(far, 6, **kw))
    assert np.isinf(one.search(q * np.float32(2.0 ** 124), 6, metric="dot")[0]).any()
    # with few candidates the prefilter misses neighbours, exactly as one store does
    plain = sh.search(q, 10)
    pre = sh.search(q, 10, prefilter="sketch", oversample=1)
    assert not np.array_equal(plain[1], pre[1])


def test_hamming_and_query_sketch_against_numpy(monkeypatch):
    from embq._kernels_sketch import sign_bits  # the query sketches the shards use

    from embq import _dist_search as ds

    rng = np.random.default_rng(8)
    for d in (1, 7, 8, 29):
        x = rng.standard_normal((50, d)).astype(np.float32)
        center = rng.standard_normal(d).astype(np.float32)
        center[0] = x[3, 0]   # equal values give a 0 bit
        bits = sign_bits(x, center)
        want = np.packbits(x > center, axis=1, bitorder="little")
        assert bits.tobytes() == want.tobytes()
        q = sign_bits(x[:4], np.zeros(d, np.float32))
        rows = rng.integers(0, 50, (4, 9))
        oracle = np.unpackbits(bits[rows] ^ q[:, None, :], axis=2).sum(axis=2)
        for block in (1, 1 << 22):   # a block of one query, and all at once
            monkeypatch.setattr(ds, "_HAMMING_BLOCK", block)
            got = ds.hamming(bits, rows, q)
            assert got.dtype == np.int32
            np.testing.assert_array_equal(got, oracle)


def test_global_center_is_the_single_stores(data):
    one = data["one"]
    for p in PARTS:
        with embq.open(data["paths"][p]) as sh:
            c = global_center(list(sh.shards), n_threads=1)
            assert c.tobytes() == one.sketch_center.tobytes()
            for s in sh.shards:
                assert s.sketch_center.tobytes() == c.tobytes()
            bits = np.concatenate([np.asarray(s.sketch) for s in sh.shards])
            assert bits.tobytes() == np.asarray(one.sketch).tobytes()


def test_prefilter_errors(data, tmp_path):
    sh, q = data["stores"][3], data["q"]
    plain = write_sharded(tmp_path / "plain.embq", data["x"], [300, 300], data["keys"])
    with embq.open(plain) as old:
        assert not old.manifest.sketch and old.sketch_center is None
        with pytest.raises(ValueError, match=r"has no sketch of all its shards; add one with "
                                             r"`embq sketch .*plain\.embq`"):
            old.search(q, 3, prefilter="sketch")
        _same(old.search(q, 3), data["one"].search(q, 3))   # plain search unaffected
    # with an allow-list the sketch answers as a store of the allowed rows, sharded or not
    allow = np.arange(0, len(data["keys"]), 3)
    _same(sh.search(q, 3, prefilter="sketch", oversample=2, allow=allow),
          data["one"].search(q, 3, prefilter="sketch", oversample=2, allow=allow))
    for kw, msg in (({"threshold": 0.5}, "ranks rows by angle"),
                    ({"metric": "l2"}, "ranks rows by angle"),
                    ({"prefilter": "bits"}, "prefilter must be None or 'sketch'"),
                    ({"oversample": 0}, "oversample must be >= 1")):
        kw = {"prefilter": "sketch", **kw}
        with pytest.raises(ValueError, match=msg):
            sh.search(q, 3, **kw)
        with pytest.raises(ValueError, match=msg):
            data["one"].search(q, 3, **kw)
    with pytest.raises(ValueError, match="oversample is only used with prefilter"):
        sh.search(q, 3, oversample=4)
    with pytest.raises(AttributeError, match=r"shards\[i\]\.sketch"):
        sh.sketch   # noqa: B018


def test_option_errors_match_one_store(data):
    one, sh, q = data["one"], data["stores"][2], data["q"]
    cases = [
        ({"allow": np.ones(N - 1, bool)}, ValueError, "one entry per row"),
        ({"allow": [N]}, ValueError, r"allow\[0\] = 600 is not a row number"),
        ({"allow": [-1]}, ValueError, "is not a row number"),
        ({"allow": ["w1", "nope"]}, KeyError, "nope"),
        ({"allow": "w1"}, TypeError, "pass \\['w1'\\]"),
        ({"allow": np.array([0.5])}, TypeError, "boolean mask or integer row numbers"),
        ({"metric": "l1"}, ValueError, "metric must be 'cosine', 'dot' or 'l2'"),
        ({"threshold": float("nan")}, ValueError, "threshold must be finite"),
        ({"threshold": "0.3"}, TypeError, "threshold must be a real number"),
        ({"threshold": 0.3, "rescore": 2}, ValueError, "rescore applies to top-k"),
        ({"max_results": 3}, ValueError, "give threshold= too"),
        ({"threshold": 0.3, "max_results": 0}, ValueError, "max_results must be >= 1"),
    ]
    for kw, exc, msg in cases:
        for store in (one, sh):
            with pytest.raises(exc, match=msg):
                store.search(q, 3, **kw)


# -- writing and carrying the sketch -------------------------------------------------------------

def test_sketch_sharded_replaces_shards_atomically(data, tmp_path):
    x, keys = data["x"], data["keys"]
    path = write_sharded(tmp_path / "s.embq", x, [200, 0, 400], keys)
    # a shard sketched on its own has its own center: replaced by the whole store's
    add_sketch(os.path.join(path, "shards", "part-00002.h5"))
    m0 = mf.read_manifest(path)
    # a manifest must be rewritten for the new size: until then the shard is refused
    with pytest.raises(StoreError, match="changed since the manifest was written"):
        embq.open(path)
    entry = mf.entry_for(path, m0.shards[2].path, rows=400, offset=200)
    mf.write_manifest(path, dim=D, has_keys=True, shards=[*m0.shards[:2], entry])
    s = sketch_sharded(path, n_threads=1)
    assert s["added"] and s["rows"] == N and s["shards"] == 3
    assert s["sketch_bytes"] == sum(n * 3 + 4 * D for n in (200, 0, 400))
    m = mf.read_manifest(path)
    assert m.sketch and [e.rows for e in m.shards] == [200, 0, 400]
    # the old shard files are gone, the new ones are those the manifest names
    assert sorted(os.listdir(os.path.join(path, "shards"))) == sorted(
        e.path.split("/")[1] for e in m.shards)
    with embq.open(path) as sh:
        assert sh.sketch_center.tobytes() == data["one"].sketch_center.tobytes()
        _same(sh.search(data["q"], 7, prefilter="sketch", oversample=2),
              data["one"].search(data["q"], 7, prefilter="sketch", oversample=2))
    again = sketch_sharded(path)
    assert not again["added"] and sorted(os.listdir(os.path.join(path, "shards"))) == sorted(
        e.path.split("/")[1] for e in m.shards)


def test_sketch_sharded_failure_leaves_the_store(data, tmp_path, monkeypatch):
    from embq import _reshard

    path = write_sharded(tmp_path / "s.embq", data["x"], [300, 300], data["keys"])
    before = sorted(os.listdir(os.path.join(path, "shards")))
    manifest = open(os.path.join(path, "manifest.json"), "rb").read()
    calls = []

    def boom(p, center, n_threads=None):
        calls.append(p)
        if len(calls) == 2:
            raise OSError("disk full")
        real(p, center, n_threads)

    real = _reshard.write_shard_sketch
    monkeypatch.setattr(_reshard, "write_shard_sketch", boom)
    with pytest.raises(OSError, match="disk full"):
        sketch_sharded(path)
    assert sorted(os.listdir(os.path.join(path, "shards"))) == before
    assert open(os.path.join(path, "manifest.json"), "rb").read() == manifest
    with embq.open(path) as sh:
        assert not sh.manifest.sketch


def test_manifest_sketch_field_is_checked(data, tmp_path):
    path = write_sharded(tmp_path / "s.embq", data["x"], [300, 300], data["keys"])
    mpath = os.path.join(path, "manifest.json")
    doc = json.loads(open(mpath).read())
    assert doc["sketch"] is False
    for bad in (1, "true", None):
        doc["sketch"] = bad
        with open(mpath, "w") as fh:
            json.dump(doc, fh)
        with pytest.raises(StoreError, match=r"'sketch' is .*, expected true or false"):
            embq.open(path)
    del doc["sketch"]   # a manifest from before sharded sketches
    with open(mpath, "w") as fh:
        json.dump(doc, fh)
    with embq.open(path) as sh:
        assert not sh.manifest.sketch


def test_shard_with_a_different_center_is_refused(data, tmp_path):
    import h5py

    path = write_sharded(tmp_path / "s.embq", data["x"], [300, 300], data["keys"])
    sketch_sharded(path)
    m = mf.read_manifest(path)
    p1 = m.shard_path(1)
    with h5py.File(p1, "r+") as f:
        f["sketch_center"][0] = f["sketch_center"][0] + 1
    with pytest.raises(StoreError, match=r"shard 1 \(shards/part-00001-s\w+\.h5\).*"
                                         r"sketch_center differs"):
        embq.open(path)
    # a shard without the sketch the manifest promises
    with h5py.File(p1, "r+") as f:
        del f["sketch"], f["sketch_center"]
    entry = mf.entry_for(path, m.shards[1].path, rows=300, offset=300)
    mf.write_manifest(path, dim=D, has_keys=True, shards=[m.shards[0], entry], sketch=True)
    with pytest.raises(StoreError, match=r"shard 1 .*has no sketch, but the manifest says"):
        embq.open(path)


def test_shard_and_merge_carry_the_sketch(data, tmp_path):
    one = data["one"]
    out = tmp_path / "split.embq"
    shard(one.path, out, shard_rows=170)
    with embq.open(out) as sh:
        assert sh.manifest.sketch
        bits = np.concatenate([np.asarray(s.sketch) for s in sh.shards])
        assert bits.tobytes() == np.asarray(one.sketch).tobytes()
        for s in sh.shards:
            assert s.sketch_center.tobytes() == one.sketch_center.tobytes()
        _same(sh.search(data["q"], 6, prefilter="sketch", oversample=2),
              one.search(data["q"], 6, prefilter="sketch", oversample=2))
    back = tmp_path / "back.h5"
    merge(out, back)
    with embq.open(back) as m:
        assert np.asarray(m.sketch).tobytes() == np.asarray(one.sketch).tobytes()
        want, center = compute_sketch(m.codes, m.scales, m.zero_points)
        assert np.asarray(m.sketch).tobytes() == want.tobytes()
        assert m.sketch_center.tobytes() == center.tobytes()
    # a sharded store with no sketch merges into a store with none
    merge(data["paths"][2], tmp_path / "m2.h5")
    plain = write_sharded(tmp_path / "p.embq", data["x"], [300, 300], data["keys"])
    merge(plain, tmp_path / "m3.h5")
    with embq.open(tmp_path / "m2.h5") as a, embq.open(tmp_path / "m3.h5") as b:
        assert a.sketch is not None and b.sketch is None
    # and a store without one splits into shards without one
    embq.save(tmp_path / "nos.h5", data["x"][:50], n_threads=1)
    shard(tmp_path / "nos.h5", tmp_path / "nos.embq", shard_rows=20)
    with embq.open(tmp_path / "nos.embq") as sh:
        assert not sh.manifest.sketch and all(s.sketch is None for s in sh.shards)


# -- the gensim surface ------------------------------------------------------------------------

def test_every_store_method_exists_on_a_sharded_store(data):
    sh = data["stores"][3]
    public = [n for n in dir(embq.Store) if not n.startswith("_")]
    missing = [n for n in public if not hasattr(type(sh), n)]
    assert missing == []


def test_gensim_methods_equal_one_store(data):
    one, sh = data["one"], data["stores"][7]
    keys = data["keys"]
    assert sh.closer_than("w5", "w80") == one.closer_than("w5", "w80")
    assert sh.words_closer_than("w5", "w80") == one.words_closer_than("w5", "w80")
    assert sh.rank("w5", "w80") == one.rank("w5", "w80") > 1
    assert sh.similarity("w1", "w2") == one.similarity("w1", "w2")
    assert sh.distance("w1", "w2") == one.distance("w1", "w2")
    assert sh.n_similarity(["w1", "w9"], ["w3"]) == one.n_similarity(["w1", "w9"], ["w3"])
    np.testing.assert_array_equal(sh.distances("w4"), one.distances("w4"))
    np.testing.assert_array_equal(sh.distances("w4", ["w1", "w7"]),
                                  one.distances("w4", ["w1", "w7"]))
    np.testing.assert_array_equal(sh.get_mean_vector(["w1", "w500"]),
                                  one.get_mean_vector(["w1", "w500"]))
    assert sh.doesnt_match(["w1", "w2", "w3"]) == one.doesnt_match(["w1", "w2", "w3"])
    assert sh.rank_by_centrality(["w1", "w2"]) == one.rank_by_centrality(["w1", "w2"])
    assert sh.relative_cosine_similarity("w1", "w2") == one.relative_cosine_similarity("w1",
                                                                                          "w2")
    assert sh.vector_size == D
    v = np.arange(D, dtype=np.float32)
    np.testing.assert_array_equal(sh.cosine_similarities(v, one.vectors[:3]),
                                  one.cosine_similarities(v, one.vectors[:3]))
    for normed in (False, True):
        a = sh.get_normed_vectors() if normed else sh.vectors
        b = one.get_normed_vectors() if normed else one.vectors
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_array_equal(a[[599, 0, 300]], b[[599, 0, 300]])
        np.testing.assert_array_equal(a[-1], b[-1])
    allow = keys[::3]
    assert sh.most_similar("w3", topn=5, allow=allow) == one.most_similar("w3", topn=5,
                                                                         allow=allow)
    assert sh.most_similar_batch(["w3", "w4"], topn=4, allow=allow) == \
        one.most_similar_batch(["w3", "w4"], topn=4, allow=allow)
    assert sh.similar_by_vector(v, topn=4, allow=np.arange(N) % 2 == 0) == \
        one.similar_by_vector(v, topn=4, allow=np.arange(N) % 2 == 0)
    assert sh.most_similar_cosmul(["w1", "w2"], ["w3"], topn=5, rescore=None) == \
        one.most_similar_cosmul(["w1", "w2"], ["w3"], topn=5, rescore=None)
    np.testing.assert_array_equal(sh.most_similar_cosmul(["w1"], topn=None),
                                  one.most_similar_cosmul(["w1"], topn=None))
    assert sh.most_similar_cosmul(["w1", "w2"], ["w3"], topn=5) == \
        one.most_similar_cosmul(["w1", "w2"], ["w3"], topn=5)
    assert sh.rank("w1", "w7") == one.rank("w1", "w7")
    assert sh.closer_than("w1", "w7") == one.closer_than("w1", "w7")
    for name in ("add_vector", "add_vectors", "sort_by_descending_frequency"):
        with pytest.raises(TypeError, match=name):
            getattr(sh, name)("x", v)
    with pytest.raises(TypeError, match="read-only"):
        sh["w1"] = v


def test_save_word2vec_format_equals_one_store(data, tmp_path):
    data["stores"][3].save_word2vec_format(tmp_path / "a.txt")
    data["one"].save_word2vec_format(tmp_path / "b.txt")
    assert (tmp_path / "a.txt").read_bytes() == (tmp_path / "b.txt").read_bytes()


# -- compress --------------------------------------------------------------------------------

def test_sharded_compress_sketch_on_and_off(data, tmp_path):
    from embq._cmd_compress import summary_line
    from embq.cli import main

    np.save(tmp_path / "x.npy", data["x"])
    s = embq.compress(str(tmp_path / "x.npy"), tmp_path / "on.embq", shard_rows=250)
    assert s["sketch_bytes"] == sum(n * 3 + 4 * D for n in (250, 250, 100))
    assert "; sketch " in summary_line(s)
    with embq.open(tmp_path / "on.embq") as sh:
        assert sh.manifest.sketch
        assert sh.sketch_center.tobytes() == global_center(list(sh.shards)).tobytes()
    s = embq.compress(str(tmp_path / "x.npy"), tmp_path / "off.embq", shard_rows=250,
                      sketch=False)
    assert s["sketch_bytes"] == 0
    with embq.open(tmp_path / "off.embq") as sh:
        assert not sh.manifest.sketch and all(x.sketch is None for x in sh.shards)
    assert main(["compress", str(tmp_path / "x.npy"), str(tmp_path / "cli.embq"),
                 "--shard-rows", "300", "--no-sketch", "-q"]) == 0
    with embq.open(tmp_path / "cli.embq") as sh:
        assert not sh.manifest.sketch and all(x.sketch is None for x in sh.shards)
    assert json.loads(open(tmp_path / "cli.embq" / "manifest.json").read())["sketch"] is False


@pytest.mark.parametrize("sharded", [False, True])
def test_compress_options_are_checked_once_for_both_paths(data, tmp_path, sharded):
    np.save(tmp_path / "x.npy", data["x"][:20])
    kw = {"shard_rows": 10} if sharded else {}
    with pytest.raises(ValueError, match="on_duplicate must be 'warn' or 'error'"):
        embq.compress(str(tmp_path / "x.npy"), tmp_path / "o", on_duplicate="skip", **kw)
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="limit must be a positive number of rows"):
            embq.compress(str(tmp_path / "x.npy"), tmp_path / "o", limit=bad, **kw)
    assert not os.path.exists(tmp_path / "o")
