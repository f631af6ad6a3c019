"""Benchmark the embq store against gensim KeyedVectors on the same data.

Measures, for a store of N keys x D (default 1,000,000 x 300):

* open + first key lookup in a fresh subprocess, twice: with the libraries imported before the
  clock starts (the cost of the open itself, and the process RSS growth it causes), and from
  the first line of the process, so the figure includes importing numpy, h5py and embq (or
  gensim), which a fresh process pays on its first ``embq.open`` (or ``KeyedVectors.load``);
  for ``embq.open`` and for gensim's ``KeyedVectors.load(path, mmap='r')``;
* one key lookup, ``store["word"]`` vs ``kv["word"]`` (in-memory gensim), in microseconds, for
  a present key and for an absent one (``key in store``, which checks the probe on a miss);
* 10,000 random keys in one call, ``store[keys]`` vs ``kv[keys]``;
* every key in row order: ``store.index_to_key[:n]`` (the bulk decoder over the memory maps)
  against the h5py path ``embq._evaluate._read_keys_bulk`` used to take, and gensim's
  ``list(kv.index_to_key)``.

Every figure is the median of several repeats.  The files are generated once under
``bench-data/`` (gitignored) and reused; since they were just written or read, the OS page cache
is warm for the open timings (the script says so).

Run: ``python scripts/bench_store.py [--rows 1000000] [--dim 300] [--repeats 7]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from _bench import median_time  # noqa: E402  (scripts/ is on sys.path)

import embq  # noqa: E402


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _keys(n: int) -> list[str]:
    # Word-like keys of varied length, some non-ASCII, all unique.
    syll = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "zé", "东", "po"]
    out = []
    for i in range(n):
        j, parts = i, []
        while True:
            parts.append(syll[j % 10])
            j //= 10
            if j == 0:
                break
        out.append("".join(parts) + str(i % 7))
    return out


def _generate(args) -> tuple[str, str, list[str]]:
    os.makedirs(args.data_dir, exist_ok=True)
    tag = f"{args.rows}x{args.dim}"
    store_path = os.path.join(args.data_dir, f"store-{tag}.h5")
    kv_path = os.path.join(args.data_dir, f"gensim-{tag}.kv")
    keys = _keys(args.rows)
    if os.path.exists(store_path) and os.path.exists(kv_path):
        return store_path, kv_path, keys
    from gensim.models import KeyedVectors

    rng = np.random.default_rng(0)
    x = np.empty((args.rows, args.dim), np.float32)
    for start in range(0, args.rows, 100_000):
        stop = min(args.rows, start + 100_000)
        x[start:stop] = rng.standard_normal((stop - start, args.dim), dtype=np.float32)
    t = time.perf_counter()
    with embq.StoreWriter(store_path, args.dim, overwrite=True) as w:
        for start in range(0, args.rows, 100_000):
            w.append(x[start : start + 100_000], keys[start : start + 100_000])
    print(f"wrote {store_path} in {time.perf_counter() - t:.2f} s "
          f"({os.path.getsize(store_path) / 1e6:.0f} MB)")
    kv = KeyedVectors(args.dim)
    kv.add_vectors(keys, x)
    kv.save(kv_path)
    print(f"wrote {kv_path} (+ .vectors.npy)")
    return store_path, kv_path, keys


def _child(kind: str, path: str, key: str) -> None:
    # Imports happen before the clock: the figure is open + first lookup.
    if kind == "gensim":
        from gensim.models import KeyedVectors

        opener = lambda p: KeyedVectors.load(p, mmap="r")  # noqa: E731
    else:
        import h5py  # noqa: F401  (embq.open imports it; keep that out of the timing)

        from embq import _kernels_store, _utils  # noqa: F401

        _utils.effective_n_threads(None)
        opener = embq.open
    rss0 = _rss_bytes()
    t0 = time.perf_counter()
    obj = opener(path)
    vec = obj[key]
    t1 = time.perf_counter()
    rss1 = _rss_bytes()
    assert vec.shape[0] > 0
    print(json.dumps({"seconds": t1 - t0, "rss_delta": rss1 - rss0}))


# The same, with the clock started on the first line of a fresh interpreter: imports included.
_COLD_CHILD = {
    "embq": "import embq\nobj = embq.open(path)\n",
    "gensim": "from gensim.models import KeyedVectors\nobj = KeyedVectors.load(path, mmap='r')\n",
}


def _cold_child_code(kind: str, path: str, key: str) -> str:
    return (
        "import time\nt0 = time.perf_counter()\n"
        f"path, key = {path!r}, {key!r}\n"
        + _COLD_CHILD[kind]
        + "vec = obj[key]\nt1 = time.perf_counter()\nassert vec.shape[0] > 0\n"
        "print(t1 - t0)\n"
    )


def _open_times(kind: str, path: str, key: str, repeats: int) -> tuple[float, float, float]:
    secs, rss, cold = [], [], []
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # An installed package has its bytecode cached; without it the figure with imports would
    # count compiling embq's sources in every process (the first child writes the cache).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", kind, path, key],
            check=True, capture_output=True, text=True,
        ).stdout
        res = json.loads(out.strip().splitlines()[-1])
        secs.append(res["seconds"])
        rss.append(res["rss_delta"])
        out = subprocess.run([sys.executable, "-c", _cold_child_code(kind, path, key)],
                             check=True, capture_output=True, text=True, env=env).stdout
        cold.append(float(out.strip().splitlines()[-1]))
    return statistics.median(secs), statistics.median(rss), statistics.median(cold)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--data-dir", default=os.path.join(ROOT, "bench-data"))
    ap.add_argument("--child", nargs=3, metavar=("KIND", "PATH", "KEY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(*args.child)
        return

    store_path, kv_path, keys = _generate(args)
    rng = np.random.default_rng(1)
    probe = keys[int(rng.integers(len(keys)))]
    print(f"\nstore: {args.rows:,} keys x {args.dim}; page cache warm (files just written/read)")

    e_open, e_rss, e_cold = _open_times("embq", store_path, probe, args.repeats)
    g_open, g_rss, g_cold = _open_times("gensim", kv_path, probe, args.repeats)

    from gensim.models import KeyedVectors

    kv = KeyedVectors.load(kv_path)  # in memory, the usual way to use gensim
    store = embq.open(store_path)
    # Correctness guard: the two answer the same key with vectors within one quantization step.
    assert np.abs(store[probe] - kv[probe]).max() <= store.scales[store.get_index(probe)] * 0.51

    sample = [keys[i] for i in rng.integers(0, len(keys), 2000)]

    def loop_embq():
        for k in sample:
            store[k]

    def loop_gensim():
        for k in sample:
            kv[k]

    for _ in range(2):  # touch the pages both sides will read
        loop_embq()
        loop_gensim()
    e_one = median_time(loop_embq, args.repeats) / len(sample)
    g_one = median_time(loop_gensim, args.repeats) / len(sample)

    absent = [k + "-absent" for k in sample]
    assert not any(k in store for k in absent) and not any(k in kv for k in absent)
    e_miss = median_time(lambda: [k in store for k in absent], args.repeats) / len(absent)
    g_miss = median_time(lambda: [k in kv for k in absent], args.repeats) / len(absent)

    batch = [keys[i] for i in rng.integers(0, len(keys), 10_000)]
    store[batch]
    kv[batch]
    e_batch = median_time(lambda: store[batch], args.repeats)
    g_batch = median_time(lambda: kv[batch], args.repeats)
    assert np.abs(store[batch] - kv[batch]).max() <= float(store.scales[:].max()) * 0.51

    n_keys = len(store)
    all_keys = store.index_to_key[:n_keys]
    assert all_keys == _keys_with_h5py(store_path) == kv.index_to_key
    e_keys = median_time(lambda: store.index_to_key[:n_keys], args.repeats)
    h_keys = median_time(lambda: _keys_with_h5py(store_path), args.repeats)
    g_keys = median_time(lambda: list(kv.index_to_key), args.repeats)

    rows = [
        ("open + first lookup (ms)", e_open * 1e3, g_open * 1e3, g_open / e_open),
        ("  same, imports incl. (ms)", e_cold * 1e3, g_cold * 1e3, g_cold / e_cold),
        ("RSS growth at open (MB)", e_rss / 1e6, g_rss / 1e6, None),
        ("single key lookup (us)", e_one * 1e6, g_one * 1e6, g_one / e_one),
        ("absent key, `in` (us)", e_miss * 1e6, g_miss * 1e6, g_miss / e_miss),
        ("10,000 random keys (ms)", e_batch * 1e3, g_batch * 1e3, g_batch / e_batch),
    ]
    print(f"\n{'':28s}{'embq':>12s}{'gensim':>12s}{'gensim/embq':>14s}")
    for name, e, g, r in rows:
        ratio = f"{r:13.1f}x" if r is not None else f"{'':14s}"
        print(f"{name:28s}{e:12.3f}{g:12.3f}{ratio}")
    print(f"{'all keys in row order (ms)':28s}{e_keys * 1e3:12.3f}{g_keys * 1e3:12.3f}"
          f"{g_keys / e_keys:13.1f}x   (plain h5py, docs/format.md's recipe: "
          f"{h_keys * 1e3:.3f} ms)")
    print(f"\n(median of {args.repeats} repeats; open figures in fresh subprocesses, with imports "
          "done before the clock, then with the clock started on the process's first line; "
          "gensim lookups on the in-memory KeyedVectors; gensim's keys are a Python list "
          "already, copied here)")
    store.close()


def _keys_with_h5py(path: str) -> list[str]:
    """All keys the way docs/format.md tells a reader without embq to get them."""
    import h5py

    with h5py.File(path, "r") as f:
        utf8 = f["keys/utf8"][:].tobytes()
        offsets = f["keys/offsets"][:]
    return [utf8[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(),
                                                        offsets[1:].tolist())]


if __name__ == "__main__":
    main()
