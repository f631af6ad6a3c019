"""A sharded store searched on a Dask cluster answers exactly as one store in one process.

One LocalCluster (2 worker processes, 1 thread each) serves the whole module.  Results are
compared with a single store saved from the same matrix (scores as bits) and with the same
sharded store searched without a client.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from _sharded_util import assert_same as _same
from _sharded_util import tie_boundaries, uneven_sizes, write_sharded

import embq
from embq import _manifest as mf
from embq._errors import StoreError

distributed = pytest.importorskip("distributed")

N, D = 500, 16


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0")
    c = distributed.Client(cluster)
    c.wait_for_workers(2, timeout=60)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(21)
    x = rng.standard_normal((N, D)).astype(np.float32)
    sizes = {p: uneven_sizes(N, p, rng) for p in (1, 2, 3, 7)}
    tie_boundaries(x, sizes.values())   # ties between shards
    keys = [f"k{i}" for i in range(N)]
    root = tmp_path_factory.mktemp("dist")
    embq.save(root / "one.h5", x, keys)
    paths = {p: write_sharded(root / f"s{p}.embq", x, s, keys) for p, s in sizes.items()}
    q = rng.standard_normal((5, D)).astype(np.float32)
    q[:2] = x[np.cumsum(sizes[7])[:2]]
    one = embq.open(root / "one.h5")
    yield {"x": x, "keys": keys, "one": one, "paths": paths, "sizes": sizes, "q": q}
    one.close()


@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_cluster_equals_local_equals_one_store(client, data, parts):
    one = data["one"]
    sizes = data["sizes"][parts]
    boundary = int(np.cumsum(sizes)[0])
    with embq.open(data["paths"][parts], client=client) as remote, \
            embq.open(data["paths"][parts]) as local:
        assert remote.client is client and "Dask" in repr(remote)
        for metric in ("cosine", "dot"):
            for rescore in (None, 4):
                for k in (1, 10, max(sizes) + 3):
                    for restrict in (None, boundary):
                        kw = {"metric": metric, "rescore": rescore, "restrict": restrict}
                        want = one.search(data["q"], k, **kw)
                        _same(remote.search(data["q"], k, **kw), want)
                        _same(local.search(data["q"], k, **kw), want)
        # explicit threads per task give the same answer
        _same(remote.search(data["q"], 7, n_threads=2), one.search(data["q"], 7))
        _same(remote.search(data["q"][0], 3), one.search(data["q"][0], 3))


@pytest.mark.parametrize("parts", [1, 3, 7])
def test_options_on_a_cluster_equal_one_store(client, data, parts, tmp_path):
    """allow=, l2, range search and the sketch prefilter: tasks get only their shard's
    allowed local rows, and the merged answers are one store's, bit for bit."""
    from embq._reshard import sketch_sharded
    from embq._sketch import add_sketch

    one_path = str(tmp_path / "one.h5")
    embq.save(one_path, data["x"], data["keys"], n_threads=1)
    add_sketch(one_path)
    path = write_sharded(tmp_path / "s.embq", data["x"], data["sizes"][parts], data["keys"])
    sketch_sharded(path)
    q = data["q"]
    mask = np.random.default_rng(4).random(N) < 0.2
    keys = [data["keys"][i] for i in np.flatnonzero(mask)]
    cases = [
        (10, {"allow": mask}), (10, {"allow": keys, "metric": "dot", "rescore": 2}),
        (3, {"allow": np.flatnonzero(mask)[:2]}), (5, {"allow": []}),
        (10, {"metric": "l2"}), (N + 3, {"metric": "l2", "rescore": 3, "restrict": 260}),
        (1, {"threshold": 0.4}), (1, {"threshold": 40.0, "metric": "l2", "max_results": 6}),
        (1, {"threshold": 2.0, "metric": "dot", "allow": mask}),
        (7, {"prefilter": "sketch", "oversample": 3}),
        (4, {"prefilter": "sketch", "oversample": 2, "rescore": 2, "restrict": 300}),
    ]
    with embq.open(one_path) as one, embq.open(path, client=client) as remote:
        for k, kw in cases:
            want = one.search(q, k, **kw)
            _same(remote.search(q, k, **kw), want)
            _same(remote.search(q, k, n_threads=2, **kw), want)
        assert remote.closer_than("k3", "k40") == one.closer_than("k3", "k40")
        assert remote.most_similar("k3", topn=5, allow=keys) == one.most_similar(
            "k3", topn=5, allow=keys)
        # an AllowList checked once on the client: the tasks get their slices of it
        for allow in (keys, mask):
            token = remote.allow_list(allow)
            for kw in ({}, {"metric": "l2"}, {"restrict": 260}):
                _same(remote.search(q, 10, allow=token, **kw), one.search(q, 10, allow=allow,
                                                                           **kw))
                _same(remote.search(q[0], 10, allow=token, **kw),
                      one.search(q[0], 10, allow=allow, **kw))


def test_tasks_receive_local_allowed_rows_only(data):
    from embq import _dist_search as ds

    path = data["paths"][7]
    m = mf.read_manifest(path)
    allow = np.array([0, 5, int(m.offsets[3]), int(m.offsets[3]) + 1, N - 1], np.int64)
    jobs = ds.shard_jobs(m, None, allow)
    got = {i: a.tolist() for i, _r, a in jobs}
    want: dict = {}
    for g in allow.tolist():
        s, loc = m.locate([g])
        want.setdefault(int(s[0]), []).append(int(loc[0]))
    assert got == want   # shards without allowed rows get no task at all


def test_tasks_receive_their_slice_of_a_mask(data):
    # A mask stays a mask: a shard searched whole gets its slice (a byte per row), a shard
    # cut by restrict its local row numbers, a shard with nothing allowed no task
    from embq import _dist_search as ds
    from embq import _kernels_search as ks

    path = data["paths"][7]
    m = mf.read_manifest(path)
    off = [int(o) for o in m.offsets]
    mask = np.zeros(N, bool)
    mask[off[0] + 1] = mask[off[3]:off[4]:2] = mask[N - 2] = True
    restrict = off[-2] + 3                      # cuts the last shard
    assert m.shards[-1].rows > 3
    mask[off[-2] + 1] = True
    for r, cut in ((None, None), (restrict, len(m.shards) - 1)):
        n_eff = N if r is None else r
        jobs = ds.shard_jobs(m, r, ks.allow_mask(mask, n_eff))
        want = sorted({int(s) for s in m.locate(np.flatnonzero(mask[:n_eff]))[0]})
        assert [i for i, _r, _a in jobs] == want
        for i, _r, local in jobs:
            part = mask[off[i]:off[i + 1]][:n_eff - off[i]]
            if i == cut:
                np.testing.assert_array_equal(local, np.flatnonzero(part))
            else:
                assert local.dtype == np.bool_ and local.shape == (m.shards[i].rows,)
                np.testing.assert_array_equal(local, part)


def test_most_similar_and_lookups_on_a_cluster(client, data):
    one = data["one"]
    with embq.open(data["paths"][7], client=client) as st:
        b = int(np.cumsum(data["sizes"][7])[0])
        for kw in ({}, {"rescore": None}, {"restrict_vocab": b}):
            assert st.most_similar(f"k{b}", topn=8, **kw) == one.most_similar(f"k{b}", topn=8,
                                                                               **kw)
            assert st.most_similar_batch(["k1", f"k{b - 1}"], topn=4, **kw) == \
                one.most_similar_batch(["k1", f"k{b - 1}"], topn=4, **kw)
        rng = np.random.default_rng(2)
        keys = [data["keys"][i] for i in rng.integers(0, N, 10_000).tolist()]
        np.testing.assert_array_equal(st[keys], one[keys])
        with pytest.raises(KeyError, match="Key 'absent' not present"):
            st["absent"]


def test_shard_replaced_after_open_fails_the_search(client, data, tmp_path):
    path = write_sharded(tmp_path / "r.embq", data["x"], [100, 150, 250], data["keys"])
    with embq.open(path, client=client) as st:
        _same(st.search(data["q"], 5), data["one"].search(data["q"], 5))   # workers cache it
        embq.save(os.path.join(path, mf.shard_name(1)), data["x"][100:250],
                  data["keys"][100:250], overwrite=True,
                  attrs={mf.SHARD_UUID_ATTR: mf.new_shard_uuid()})
        with pytest.raises(StoreError, match=r"shard 1 \(shards/part-00001\.h5\).*changed"):
            st.search(data["q"], 5)
        # searching only the first shard does not touch the replaced one
        _same(st.search(data["q"], 5, restrict=100),
              data["one"].search(data["q"], 5, restrict=100))


def test_shard_deleted_after_open_fails_the_search(client, data, tmp_path):
    path = write_sharded(tmp_path / "d.embq", data["x"], [100, 150, 250], data["keys"])
    with embq.open(path, client=client) as st:
        os.remove(os.path.join(path, mf.shard_name(2)))
        with pytest.raises(StoreError, match=r"shard 2 \(shards/part-00002\.h5\).*cannot open"):
            st.search(data["q"], 5)


def test_worker_lost_mid_search_never_gives_a_wrong_answer(client, tmp_path):
    # Four shards of 20,000 rows and 4,000 queries: each task scans for about half a second
    # on one thread, long enough to kill the worker running it.
    rng = np.random.default_rng(5)
    x = rng.standard_normal((80_000, 64)).astype(np.float32)
    q = rng.standard_normal((4_000, 64)).astype(np.float32)
    path = write_sharded(tmp_path / "big.embq", x, [20_000] * 4)
    with embq.open(path) as local:
        want = local.search(q, 5, n_threads=2)
    pids = client.run(os.getpid)
    outcome: dict = {}

    def run() -> None:
        try:
            with embq.open(path, client=client) as st:
                outcome["result"] = st.search(q, 5)
        except Exception as exc:  # any clear error is acceptable; a wrong answer is not
            outcome["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    victim = None
    deadline = time.monotonic() + 30
    while victim is None and time.monotonic() < deadline and t.is_alive():
        busy = {w: ks for w, ks in client.processing().items()
                if any(str(k).startswith("embq-search") for k in ks)}
        victim = next(iter(busy), None)
        time.sleep(0.02)
    assert victim is not None, "no search task was seen running"
    os.kill(pids[victim], signal.SIGKILL)
    t.join(120)
    assert not t.is_alive()
    if "result" in outcome:
        _same(outcome["result"], want)
    else:
        assert isinstance(outcome["error"], Exception)
    client.wait_for_workers(2, timeout=60)
    assert pids[victim] not in client.run(os.getpid).values()   # it really was killed
