"""Benchmark the sharded compress: N input files on a local Dask cluster vs one after the other.

Generates (once, reused afterwards) FILES word2vec text files of ROWS x DIM under bench-data/
and times, as the median of REPEATS runs:

* ``sequential``: ``embq.compress(files, out)`` without a client (the same tasks, in this
  process, one after the other; quantization uses every core as in one compress);
* ``cluster``: the same call with a ``LocalCluster(n_workers=WORKERS, threads_per_worker=1,
  processes=True)`` started beforehand (its start-up is printed separately); the two are
  run alternately, so that changes in the machine's load hit both alike;
* ``cli --workers``: ``embq compress FILES... OUT --workers WORKERS`` in a fresh process, wall
  time including the cluster's start-up and shutdown.

It checks that both outputs hold the same codes. Usage::

    python scripts/bench_dist_compress.py [--files 8] [--rows 20000] [--dim 300]
        [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)


def generate(path: str, rows: int, dim: int, start: int, seed: int) -> None:
    """A word2vec text file with ``%.6f`` values, keys ``w{start}..``, rows from a pool."""
    rng = np.random.default_rng(seed)
    pool_n = min(4096, rows)
    pool = rng.standard_normal((pool_n, dim)).astype(np.float32) * 0.3
    texts = [" ".join(f"{v:.6f}" for v in row) for row in pool]
    tmp = path + ".part"
    with open(tmp, "w", encoding="utf8") as fh:
        fh.write(f"{rows} {dim}\n")
        for a in range(0, rows, 10000):
            fh.write("".join(f"w{start + i} {texts[(i * 2654435761) % pool_n]}\n"
                             for i in range(a, min(rows, a + 10000))))
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--rows", type=int, default=20000, help="rows per file")
    ap.add_argument("--dim", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import distributed

    import embq
    from embq._manifest import read_manifest

    data = os.path.join(HERE, "bench-data")
    os.makedirs(data, exist_ok=True)
    files = []
    for i in range(args.files):
        p = os.path.join(data, f"dist-{args.rows}x{args.dim}-{i}.txt")
        if not os.path.exists(p):
            generate(p, args.rows, args.dim, i * args.rows, seed=i)
        files.append(p)
    size = sum(os.path.getsize(p) for p in files)
    rows = args.files * args.rows
    print(f"{args.files} files, {rows:,} rows x {args.dim}, {size / 1e6:.0f} MB of text, "
          f"{os.cpu_count()} cores")

    work = tempfile.mkdtemp(prefix="embq-bench-", dir=data)
    try:
        t = time.perf_counter()
        cluster = distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                           processes=True, dashboard_address=":0")
        client = distributed.Client(cluster)
        startup = time.perf_counter() - t
        out_seq, out_par = os.path.join(work, "seq"), os.path.join(work, "par")
        seqs, pars = [], []
        try:
            embq.compress(files[:1], out_par, client=client, overwrite=True)  # workers warm up
            # Alternated, so that a change in the machine's load hits both alike.
            for _ in range(args.repeats):
                for times, out, c in ((seqs, out_seq, None), (pars, out_par, client)):
                    t = time.perf_counter()
                    embq.compress(files, out, client=c, overwrite=True)
                    times.append(time.perf_counter() - t)
        finally:
            client.close()
            cluster.close()
        seq, par = statistics.median(seqs), statistics.median(pars)
        print("runs (s): sequential " + " ".join(f"{t:.2f}" for t in seqs) + "; cluster "
              + " ".join(f"{t:.2f}" for t in pars))
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "embq", "compress", *files,
                        os.path.join(work, "cli"), "--workers", str(args.workers), "-q"],
                       check=True, env={**os.environ, "PYTHONPATH": HERE})
        cli = time.perf_counter() - t

        def codes(path):
            m = read_manifest(path)
            return [np.array(embq.open(m.shard_path(i)).codes) for i in range(len(m.shards))]

        same = all(np.array_equal(a, b) for a, b in zip(codes(out_seq), codes(out_par)))
        print(f"sequential (this process)      {seq:7.2f} s  {rows / seq:10,.0f} rows/s")
        print(f"cluster of {args.workers} workers             {par:7.2f} s  "
              f"{rows / par:10,.0f} rows/s  speed-up {seq / par:.2f}x "
              f"(cluster start-up {startup:.1f} s not included)")
        print(f"cli --workers {args.workers} (fresh process)   {cli:7.2f} s  "
              f"speed-up {seq / cli:.2f}x (start-up and shutdown included)")
        print(f"same codes: {same}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
