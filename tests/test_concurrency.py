"""Many threads on one open store: every answer equals the one a single thread gets.

The kernels release the GIL, so threads really do run lookups, gathers and searches on the same
memory maps at once; nothing in a Store may be shared mutable state that a second thread can
see half-updated.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import embq

N_THREADS = 8


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3000, 48)).astype(np.float32)
    x[1500] = x[20]                      # a tie across the store
    keys = [f"w{i}" for i in range(len(x))]
    path = tmp_path_factory.mktemp("conc") / "s.h5"
    embq.save(path, x, keys)
    with embq.open(path) as st:
        yield st


def _work(st, seed: int):
    """A mixed batch of reads; returns everything it saw, to compare across threads."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(st), 300)
    keys = [f"w{r}" for r in rows]
    q = rng.standard_normal((7, st.dim)).astype(np.float32)
    return [
        st[keys],
        st[rows],
        st[int(rows[0]):int(rows[0]) + 50],
        np.array([st.get_index(k) for k in keys[:50]]),
        np.array(st.index_to_key[100:400]),
        *st.search(q, k=10),
        *st.search(q, k=5, metric="dot", rescore=4, n_threads=2),
        np.array([s for _, s in st.most_similar(keys[1], topn=5)]),
        np.array([k for k, _ in st.most_similar(keys[2], topn=5)]),
        ("nope" in st, keys[3] in st),
    ]


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    return a == b


def test_threads_agree_with_one_thread(store):
    expected = {seed: _work(store, seed) for seed in range(N_THREADS)}
    results: dict[int, list] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(N_THREADS)

    def run(seed: int) -> None:
        try:
            start.wait()
            for _ in range(5):
                got = _work(store, seed)
                assert all(_same(a, b) for a, b in zip(got, expected[seed]))
            results[seed] = got
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[0]
    assert sorted(results) == list(range(N_THREADS))


def test_close_while_other_threads_read_is_an_error_not_a_crash(tmp_path):
    """Closing under readers: each read either answers right or raises ValueError (closed)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2000, 32)).astype(np.float32)
    path = tmp_path / "c.h5"
    embq.save(path, x, [f"k{i}" for i in range(2000)])
    st = embq.open(path)
    want = st[np.arange(0, 2000, 7)]
    outcomes: list[str] = []
    lock = threading.Lock()

    def read() -> None:
        for _ in range(200):
            try:
                got = st[np.arange(0, 2000, 7)]
            except ValueError:
                with lock:
                    outcomes.append("closed")
                return
            except BaseException as exc:
                with lock:
                    outcomes.append(f"error: {exc!r}")
                return
            with lock:
                outcomes.append("ok" if got.tobytes() == want.tobytes() else "wrong")

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    st.close()
    for t in threads:
        t.join(60)
    assert [o for o in outcomes if o not in ("ok", "closed")] == []
