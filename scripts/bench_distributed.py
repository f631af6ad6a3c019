"""Benchmark embq on a Dask cluster against one process, section by section.

    python scripts/bench_distributed.py                    # every section, 1,000,000 x 300
    python scripts/bench_distributed.py search --rows 100000   # one section, smaller
    python scripts/bench_distributed.py compress --files 8 --file-rows 20000

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
compress
    ``--files`` word2vec text files of ``--file-rows`` x ``--dim`` (generated once under
    bench-data/) compressed into a sharded store by ``embq.compress(files, out)`` (a) in this
    process, the pieces one after the other, and (b) with a LocalCluster of ``--workers``
    worker processes x 1 thread (started beforehand; its start-up is printed apart), run
    alternately; then (c) ``embq compress FILES... OUT --workers N`` in a fresh process, wall
    time with the cluster's start-up.  Prints the medians, the speed-up (target >= 1.5x),
    whether both outputs hold the same codes, each worker's peak resident memory against the
    largest shard written plus 200 MB, and this (client) process's peak allocations during a
    cluster compress (tracemalloc) at ``--file-rows`` and at a quarter of it: flat in the
    row count means about equal.
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
                           dashboard_address=":0")
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


# --------------------------------------------------------------------------------------------
# compress
# --------------------------------------------------------------------------------------------

def _text_files(files: int, rows: int, dim: int) -> list[str]:
    """``files`` word2vec text files of ``rows`` x ``dim`` (``%.6f`` values, keys unique
    across files, rows drawn from a pool), generated once under bench-data/."""
    os.makedirs(CACHE, exist_ok=True)
    paths = []
    for i in range(files):
        path = os.path.join(CACHE, f"dist-{rows}x{dim}-{i}.txt")
        if not os.path.exists(path):
            rng = np.random.default_rng(i)
            pool_n = min(4096, rows)
            pool = rng.standard_normal((pool_n, dim)).astype(np.float32) * 0.3
            texts = [" ".join(f"{v:.6f}" for v in row) for row in pool]
            with open(path + ".part", "w", encoding="utf8") as fh:
                fh.write(f"{rows} {dim}\n")
                for a in range(0, rows, 10000):
                    fh.write("".join(f"w{i * rows + j} {texts[(j * 2654435761) % pool_n]}\n"
                                     for j in range(a, min(rows, a + 10000))))
            os.replace(path + ".part", path)
        paths.append(path)
    return paths


def _shard_codes(path: str) -> list[np.ndarray]:
    m = mf.read_manifest(path)
    out = []
    for i in range(len(m.shards)):
        with embq.open(m.shard_path(i)) as st:
            out.append(np.array(st.codes))
    return out


def _client_peak(client, files: list[str], out: str) -> int:
    """Peak allocations (tracemalloc) of this process during a cluster compress."""
    tracemalloc.start()
    try:
        embq.compress(files, out, client=client, overwrite=True)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def bench_compress(args) -> None:
    import shutil
    import subprocess
    import tempfile
    import time

    from distributed import Client, LocalCluster

    files = _text_files(args.files, args.file_rows, args.dim)
    small = _text_files(args.files, max(1, args.file_rows // 4), args.dim)
    rows = args.files * args.file_rows
    size = sum(os.path.getsize(p) for p in files)
    print(f"compress: {args.files} word2vec text files, {rows:,} rows x {args.dim} in all, "
          f"{human_bytes(size)}, {os.cpu_count()} cores")
    work = tempfile.mkdtemp(prefix="embq-bench-", dir=CACHE)
    try:
        out_seq, out_par = os.path.join(work, "seq.embq"), os.path.join(work, "par.embq")
        t0 = time.perf_counter()
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0")
        client = Client(cluster)
        client.wait_for_workers(args.workers)
        startup = time.perf_counter() - t0
        seqs: list[float] = []
        pars: list[float] = []
        try:
            pids = client.run(os.getpid)
            embq.compress(files[:1], out_par, client=client, overwrite=True)  # warm workers
            base = dict(client.run(_rss))
            with PeakRSS(pids.values()) as peak:
                # Alternated, so that a change in the machine's load hits both alike.
                for _ in range(args.repeats):
                    for times, out, c in ((seqs, out_seq, None), (pars, out_par, client)):
                        t0 = time.perf_counter()
                        embq.compress(files, out, client=c, overwrite=True)
                        times.append(time.perf_counter() - t0)
            peaks = {"full": _client_peak(client, files, os.path.join(work, "c1.embq")),
                     "quarter": _client_peak(client, small, os.path.join(work, "c2.embq"))}
        finally:
            client.close()
            cluster.close()
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "embq", "compress", *files,
                        os.path.join(work, "cli.embq"), "--workers", str(args.workers), "-q"],
                       check=True, env={**os.environ, "PYTHONPATH": ROOT})
        cli = time.perf_counter() - t0
        seq, par = statistics.median(seqs), statistics.median(pars)
        same = all(np.array_equal(a, b)
                   for a, b in zip(_shard_codes(out_seq), _shard_codes(out_par)))
        largest = max(e.bytes for e in mf.read_manifest(out_par).shards)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"  one after the other, this process:    {seq:8.2f} s  {rows / seq:10,.0f} rows/s "
          f"(runs {', '.join(f'{t:.2f}' for t in seqs)})")
    print(f"  LocalCluster {args.workers} workers x 1 thread:     {par:8.2f} s  "
          f"{rows / par:10,.0f} rows/s  speed-up {seq / par:.2f}x (target >= 1.5; runs "
          f"{', '.join(f'{t:.2f}' for t in pars)}; cluster start-up {startup:.1f} s apart)")
    print(f"  embq compress --workers {args.workers} (fresh process): {cli:8.2f} s  speed-up "
          f"{seq / cli:.2f}x (start-up and shutdown included)")
    print(f"  same codes in both outputs: {same}")
    limit = largest + (200 << 20)
    for w in sorted(pids):
        print(f"  worker {w}: peak RSS {human_bytes(peak.peak[pids[w]])} (before "
              f"{human_bytes(base[w])}); largest shard {human_bytes(largest)} + 200 MB = "
              f"{human_bytes(limit)}: {'within' if peak.peak[pids[w]] <= limit else 'OVER'}")
    print(f"  client: peak allocations during a cluster compress {human_bytes(peaks['full'])} "
          f"at {rows:,} rows, {human_bytes(peaks['quarter'])} at "
          f"{args.files * max(1, args.file_rows // 4):,} rows")


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _shard_bytes_per_worker(st, workers: list[str]) -> dict[str, int]:
    """Bytes of the shard files each worker searches (shard i -> sorted workers[i % n])."""
    out = {w: 0 for w in workers}
    for i, e in enumerate(st.manifest.shards):
        out[workers[i % len(workers)]] += e.bytes
    return out


SECTIONS = {"search": bench_search, "compress": bench_compress}


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
    p.add_argument("--files", type=int, default=8, help="compress: input files")
    p.add_argument("--file-rows", type=int, default=20000, help="compress: rows per file")
    args = p.parse_args()
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        p.error(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    for name in args.sections or SECTIONS:
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
