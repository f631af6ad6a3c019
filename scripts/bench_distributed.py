"""Benchmark embq on a Dask cluster against one process, section by section.

    python scripts/bench_distributed.py                    # every section, 1,000,000 x 300
    python scripts/bench_distributed.py search --rows 100000   # one section, smaller

Sections
--------
search
    The rows (clustered synthetic vectors, as in bench_search.py, cached under bench-data/)
    saved as one store and as a sharded store of ``--shards`` shards.  1,000 queries, top-10
    cosine, are searched (a) in one process on the single store with ``--threads`` threads,
    (b) in one process on the sharded store, (c) on a LocalCluster of ``--workers`` worker
    processes with one thread each (``embq.open(path, client=client)``).  Prints the median
    times, the cluster / one-process ratio (target <= 1.3), whether the top-10 rows and
    score bits are identical, the workers' peak resident memory (psutil, sampled every
    20 ms) against the bytes of the shards each worker maps, and this (client) process's peak
    Python allocations during the cluster search (tracemalloc) against the m x k result.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import tracemalloc

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from bench_search import make_data, make_queries, timed  # noqa: E402

import embq  # noqa: E402
from embq import _manifest as mf  # noqa: E402
from embq._utils import human_bytes  # noqa: E402

K = 10
CACHE = os.path.join(ROOT, "bench-data")


class PeakRSS:
    """Peak resident memory of some processes, sampled in a background thread."""

    def __init__(self, pids, interval: float = 0.02) -> None:
        import psutil

        self.procs = {pid: psutil.Process(pid) for pid in pids}
        self.peak = {pid: 0 for pid in pids}
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid, p in self.procs.items():
                try:
                    self.peak[pid] = max(self.peak[pid], p.memory_info().rss)
                except Exception:  # a process that just exited: keep its last peak
                    pass
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def write_stores(x: np.ndarray, shards: int) -> tuple[str, str]:
    """The single store and the sharded store of ``x`` (cached under bench-data/)."""
    n, d = x.shape
    single = os.path.join(CACHE, f"dist-single-{n}x{d}.h5")
    sharded = os.path.join(CACHE, f"dist-sharded-{n}x{d}-{shards}.embq")
    step = 100_000
    if not os.path.exists(single):
        with embq.StoreWriter(single, d, has_keys=False) as w:
            for a in range(0, n, step):
                w.append(np.asarray(x[a:a + step]))
    if not mf.is_sharded(sharded):
        os.makedirs(os.path.join(sharded, mf.SHARD_DIR), exist_ok=True)
        bounds = np.linspace(0, n, shards + 1).astype(int)
        entries = []
        for i in range(shards):
            rel = mf.shard_name(i)
            with embq.StoreWriter(os.path.join(sharded, rel), d, has_keys=False,
                                  overwrite=True,
                                  attrs={mf.SHARD_UUID_ATTR: mf.new_shard_uuid()}) as w:
                for a in range(bounds[i], bounds[i + 1], step):
                    w.append(np.asarray(x[a:min(a + step, bounds[i + 1])]))
            entries.append(mf.entry_for(sharded, rel, rows=int(bounds[i + 1] - bounds[i]),
                                        offset=int(bounds[i])))
        mf.write_manifest(sharded, dim=d, has_keys=False, shards=entries)
    return single, sharded


# --------------------------------------------------------------------------------------------
# search
# --------------------------------------------------------------------------------------------

def bench_search(args) -> None:
    from distributed import Client, LocalCluster

    x = make_data(args.rows, args.dim)
    q = make_queries(x, args.queries)
    single, sharded = write_stores(x, args.shards)
    mflop = args.rows * args.dim * args.queries / 1e9
    print(f"search: {args.rows:,} x {args.dim}, {args.shards} shards, {args.queries:,} queries, "
          f"top-{K} cosine ({mflop:,.0f} G multiply-adds per search)")

    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    client = Client(cluster)
    times: dict[str, list[float]] = {"one": [], "local": [], "dask": []}
    client_peak = 0
    try:
        client.wait_for_workers(args.workers)
        pids = client.run(os.getpid)
        with embq.open(single) as one, embq.open(sharded) as local, \
                embq.open(sharded, client=client) as st:
            # warm the page cache, and let the workers open and cache their shards
            want = one.search(q, K, n_threads=args.threads)
            got_local = local.search(q[:10], K, n_threads=args.threads)
            st.search(q[:10], K)
            base = dict(client.run(_rss))
            per_worker = _shard_bytes_per_worker(st, sorted(pids))
            # The three runs alternate, so load from other processes falls on all of them.
            with PeakRSS(pids.values()) as peak:
                for _ in range(args.repeats):
                    t, _ = timed(lambda: one.search(q, K, n_threads=args.threads), 1)
                    times["one"].append(t)
                    t, got_local = timed(lambda: local.search(q, K, n_threads=args.threads), 1)
                    times["local"].append(t)
                    tracemalloc.start()
                    t, got = timed(lambda: st.search(q, K), 1)
                    client_peak = max(client_peak, tracemalloc.get_traced_memory()[1])
                    tracemalloc.stop()
                    times["dask"].append(t)
    finally:
        client.close()
        cluster.close()
    t_one, t_local, t_dask = (statistics.median(times[k]) for k in ("one", "local", "dask"))
    ratios = [d / o for d, o in zip(times["dask"], times["one"])]
    print(f"  one store, one process, {args.threads} threads:      {t_one:8.3f} s")
    print(f"  sharded, one process, {args.threads} threads:        {t_local:8.3f} s")
    print(f"  sharded, LocalCluster {args.workers} workers x 1 thread: {t_dask:8.3f} s"
          f"   ratio to one store: {t_dask / t_one:.2f}x (target <= 1.3; per run: "
          f"{', '.join(f'{r:.2f}' for r in ratios)})")
    same = (np.array_equal(got[1], want[1]) and np.array_equal(got[0].view(np.uint32),
                                                                 want[0].view(np.uint32))
            and np.array_equal(got_local[1], want[1]))
    print(f"  top-{K} rows and score bits identical to the one store: {same}")
    for w in sorted(pids):
        print(f"  worker {w}: peak RSS {human_bytes(peak.peak[pids[w]])} (before the search "
              f"{human_bytes(base[w])}), shards it searches: {human_bytes(per_worker[w])}")
    result = args.queries * K * (4 + 8)
    print(f"  client: peak Python allocations during a cluster search "
          f"{human_bytes(client_peak)} (the m x k result: {human_bytes(result)}; the "
          f"queries: {human_bytes(q.nbytes)})")
    rate = args.rows * args.dim * args.queries / t_dask / args.workers / 1e9
    print(f"  per worker thread: {rate:.1f} G multiply-adds/s")


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _shard_bytes_per_worker(st, workers: list[str]) -> dict[str, int]:
    """Bytes of the shard files each worker searches (shard i -> sorted workers[i % n])."""
    out = {w: 0 for w in workers}
    for i, e in enumerate(st.manifest.shards):
        out[workers[i % len(workers)]] += e.bytes
    return out


SECTIONS = {"search": bench_search}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("sections", nargs="*", metavar="SECTION",
                   help=f"sections to run: {', '.join(SECTIONS)} (default: all)")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=300)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="threads of the one-process runs")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        p.error(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    for name in args.sections or SECTIONS:
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
