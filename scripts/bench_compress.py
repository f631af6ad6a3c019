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

With ``--formats``, instead: ``embq compress`` of the same rows (1,000,000 x 300 by default) and
keys as ``.npy`` (keys file), Parquet (``fixed_size_list`` and ``list`` columns), and
safetensors float32 and float16 (keys file), each run in a fresh process: time, MB/s of the
input file, peak memory (the child's maximum RSS) and the time relative to ``.npy``::

    python scripts/bench_compress.py --formats [--rows 1000000] [--dim 300] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)

from _bench import median_time  # noqa: E402  (scripts/ is on sys.path)


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


# The peak is VmHWM, which starts afresh with the new program (ru_maxrss keeps the peak of
# the process that forked it, here the large benchmark process).
_CHILD = """
import sys, time
sys.path.insert(0, {here!r})
from embq._compress import compress
t = time.perf_counter()
compress({src!r}, {out!r}, keys={keys!r}, overwrite=True)
t = time.perf_counter() - t
with open("/proc/self/status") as fh:
    hwm = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
print(t, hwm * 1024)
"""


def generate_formats(data_dir: str, rows: int, dim: int) -> dict[str, tuple[str, str | None]]:
    """The same rows and keys as .npy, Parquet (two column types) and safetensors (two dtypes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from embq._write_formats import safetensors_header

    base = os.path.join(data_dir, f"formats_{rows}x{dim}")
    files = {
        ".npy (keys file)": (base + ".npy", base + ".keys.txt"),
        "Parquet fixed_size_list<float32>": (base + ".fixed.parquet", None),
        "Parquet list<float32>": (base + ".list.parquet", None),
        "safetensors F32 (keys file)": (base + ".f32.safetensors", base + ".keys.txt"),
        "safetensors F16 (keys file)": (base + ".f16.safetensors", base + ".keys.txt"),
    }
    if all(os.path.exists(p) for p, _ in files.values()):
        return files
    print(f"generating {base}.* ...", flush=True)
    rng = np.random.default_rng(0)
    step = 100_000
    x = np.lib.format.open_memmap(base + ".npy", "w+", np.float32, (rows, dim))
    for s in range(0, rows, step):
        x[s:s + step] = rng.standard_normal((min(step, rows - s), dim), np.float32) * 0.3
    x.flush()
    keys = [f"w{i}" for i in range(rows)]
    with open(base + ".keys.txt", "w", encoding="utf8") as fh:
        fh.write("\n".join(keys) + "\n")
    for name, kind in ((".fixed.parquet", "fixed"), (".list.parquet", "list")):
        vtype = pa.list_(pa.float32(), dim) if kind == "fixed" else pa.list_(pa.float32())
        schema = pa.schema([("key", pa.string()), ("vector", vtype)])
        with pq.ParquetWriter(base + name, schema) as w:
            for s in range(0, rows, step):
                e = min(rows, s + step)
                values = pa.array(np.asarray(x[s:e]).reshape(-1))
                vec = (pa.FixedSizeListArray.from_arrays(values, dim) if kind == "fixed" else
                       pa.ListArray.from_arrays(pa.array(np.arange(0, (e - s) * dim + 1, dim,
                                                                   dtype=np.int32)), values))
                w.write_batch(pa.record_batch([pa.array(keys[s:e]), vec], schema=schema),
                              row_group_size=e - s)
    for name, dtype, code in ((".f32.safetensors", np.float32, "F32"),
                              (".f16.safetensors", np.float16, "F16")):
        with open(base + name, "wb") as fh:
            fh.write(safetensors_header("embeddings", rows, dim, code))
            for s in range(0, rows, step):
                fh.write(np.asarray(x[s:s + step], dtype).tobytes())
    return files


def bench_formats(args) -> None:
    import subprocess

    data_dir = os.path.join(HERE, "bench-data")
    os.makedirs(data_dir, exist_ok=True)
    files = generate_formats(data_dir, args.rows, args.dim)
    print(f"{args.rows:,} rows x {args.dim}, the same rows and keys in each format; median of "
          f"{args.repeats}, each run in a fresh process")
    print(f"{'input':<36s} {'MB':>7s} {'seconds':>8s} {'MB/s':>7s} {'peak MB':>8s} "
          f"{'vs .npy':>8s}")
    base_t = None
    with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
        out = os.path.join(tmp, "f.embq")
        for name, (src, keys) in files.items():
            runs = []
            for _ in range(args.repeats):
                code = _CHILD.format(here=HERE, src=src, out=out, keys=keys)
                res = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                     text=True, check=True)
                t, peak = res.stdout.split()
                runs.append((float(t), int(peak)))
            t = statistics.median(r[0] for r in runs)
            peak = max(r[1] for r in runs)
            size = os.path.getsize(src)
            base_t = base_t or t
            print(f"{name:<36s} {size / 1e6:7.0f} {t:8.2f} {size / 1e6 / t:7.0f} "
                  f"{peak / 1e6:8.0f} {t / base_t:7.2f}x", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--formats", action="store_true",
                    help="compare .npy, Parquet and safetensors inputs (see above)")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--dim", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--subset-rows", type=int, default=15_000,
                    help="rows given to gensim and numpy.loadtxt")
    args = ap.parse_args()
    if args.formats:
        args.rows = args.rows or 1_000_000
        bench_formats(args)
        return
    args.rows = args.rows or 150_000

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
            t = median_time(lambda: KeyedVectors.load_word2vec_format(subp),
                            max(1, args.repeats - 1))
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
