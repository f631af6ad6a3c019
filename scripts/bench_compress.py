"""Benchmark reading word2vec text: embq's parser and `embq compress` against gensim and numpy.

Generates (once, reused afterwards) a word2vec text file of ROWS x DIM under bench-data/ and
prints MB/s and rows/s for:

* embq parse: iterating ``embq._readers.open_embeddings`` (values and keys, no quantization);
* embq compress: the whole ``embq._compress.compress`` (parse, quantize, write the store);
* embq parse of the same rows as word2vec binary;
* gensim ``KeyedVectors.load_word2vec_format`` and ``numpy.loadtxt`` on a prefix of the file
  (they are slow; the prefix is parsed the same way, so rates are comparable).

Each figure is the median of several repeats. Usage::

    python scripts/bench_compress.py [--rows 150000] [--dim 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)


def generate(path: str, rows: int, dim: int, seed: int = 0) -> None:
    """A word2vec text file with ``%.6f`` values; row text is drawn from a pool of 4096."""
    rng = np.random.default_rng(seed)
    pool_n = min(4096, rows)
    pool = rng.standard_normal((pool_n, dim)).astype(np.float32) * 0.3
    texts = [" ".join(f"{v:.6f}" for v in row) for row in pool]
    tmp = path + ".part"
    with open(tmp, "w", encoding="utf8") as fh:
        fh.write(f"{rows} {dim}\n")
        for start in range(0, rows, 10000):
            fh.write("".join(f"w{i} {texts[(i * 2654435761) % pool_n]}\n"
                             for i in range(start, min(rows, start + 10000))))
    os.replace(tmp, path)


def prefix_file(path: str, rows: int, dim: int, out: str, header: bool) -> int:
    with open(path, "rb") as src, open(out, "wb") as dst:
        src.readline()
        if header:
            dst.write(f"{rows} {dim}\n".encode())
        for _ in range(rows):
            dst.write(src.readline())
    return os.path.getsize(out)


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=150_000)
    ap.add_argument("--dim", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--subset-rows", type=int, default=15_000,
                    help="rows given to gensim and numpy.loadtxt")
    args = ap.parse_args()

    from embq._compress import compress
    from embq._readers import open_embeddings

    data_dir = os.path.join(HERE, "bench-data")
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, f"bench_{args.rows}x{args.dim}.w2v.txt")
    if not os.path.exists(path):
        print(f"generating {path} ...", flush=True)
        generate(path, args.rows, args.dim)
    size = os.path.getsize(path)
    print(f"input: {path}: {args.rows:,} rows x {args.dim}, {size / 1e6:.0f} MB "
          f"(median of {args.repeats})")

    results = []

    def parse_all(p, **kw):
        n = 0
        with open_embeddings(p, **kw) as r:
            for b in r:
                n += len(b.vectors)
        return n

    t = median_time(lambda: parse_all(path), args.repeats)
    results.append(("embq parse (text)", size / t, args.rows / t))

    with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
        out = os.path.join(tmp, "b.embq")
        t = median_time(lambda: compress(path, out, overwrite=True), args.repeats)
        results.append(("embq compress (text)", size / t, args.rows / t))

        binp = os.path.join(tmp, "b.bin")
        from embq._export import export

        export(out, binp, format="word2vec-binary")
        bsize = os.path.getsize(binp)
        t = median_time(lambda: parse_all(binp), args.repeats)
        results.append(("embq parse (binary)", bsize / t, args.rows / t))

        sub = min(args.subset_rows, args.rows)
        subp = os.path.join(tmp, "sub.txt")
        ssize = prefix_file(path, sub, args.dim, subp, header=True)
        try:
            from gensim.models import KeyedVectors
        except ImportError:
            print("gensim not installed: skipped")
        else:
            t = median_time(lambda: KeyedVectors.load_word2vec_format(subp), max(1, args.repeats - 1))
            results.append((f"gensim load_word2vec_format ({sub:,} rows)", ssize / t, sub / t))
        t = median_time(lambda: np.loadtxt(subp, skiprows=1, usecols=range(1, args.dim + 1),
                                           dtype=np.float32, comments=None, delimiter=" "),
                        max(1, args.repeats - 1))
        results.append((f"numpy.loadtxt ({sub:,} rows)", ssize / t, sub / t))

    base = results[0][1]
    print(f"{'reader':<44s} {'MB/s':>9s} {'rows/s':>12s} {'embq parse is':>14s}")
    for name, bps, rps in results:
        print(f"{name:<44s} {bps / 1e6:9.1f} {rps:12,.0f} {base / bps:13.1f}x")


if __name__ == "__main__":
    main()
