"""gensim's KeyedVectors surface on a store, against gensim on the float vectors of its own
test files, within the quantization tolerance README "gensim interop" derives:

row i is within ``scale_i / 2`` per element of the float row, so its unit vector moves by at
most ``2 * eps_i`` with ``eps_i = sqrt(d) * scale_i / (2 * ||x_i||)``, and a cosine between rows
q and r by at most ``2 * eps_q + 2 * eps_r``.
"""

from __future__ import annotations

import numpy as np
import pytest

import embq

FILES = [
    ("lee_fasttext.vec", {}),
    ("pang_lee_polarity_fasttext.vec", {"unicode_errors": "replace"}),
    ("EN.1-10.cbow1_wind5_hs0_neg10_size300_smpl1e-05.txt", {}),
    ("crime-and-punishment.vec", {}),
]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """name -> (gensim KeyedVectors on the floats, store, eps per row)."""
    gensim = pytest.importorskip("gensim")
    from gensim.test.utils import datapath

    out = {}
    d = tmp_path_factory.mktemp("kv")
    for name, kw in FILES:
        kv = gensim.models.KeyedVectors.load_word2vec_format(datapath(name), **kw)
        path = d / (name + ".embq")
        embq.save(path, kv.vectors, list(kv.index_to_key))
        store = embq.open(path)
        x = kv.vectors.astype(np.float64)
        nrm = np.linalg.norm(x, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            eps = np.where(nrm > 0, np.sqrt(x.shape[1]) * np.asarray(store.scales, np.float64)
                           / (2 * nrm), np.inf)
        out[name] = (kv, store, eps)
    yield out
    for _, store, _ in out.values():
        store.close()


def _words(kv, count=8, seed=0):
    rng = np.random.default_rng(seed)
    n = len(kv.index_to_key)
    rows = list(range(min(n, count))) + list(rng.choice(n, min(n, count), replace=False))
    return [kv.index_to_key[int(r)] for r in dict.fromkeys(rows)]


NAMES = [f[0] for f in FILES]


@pytest.mark.parametrize("name", NAMES)
def test_similarity_distance_and_n_similarity(pairs, name):
    kv, store, eps = pairs[name]
    words = _words(kv)
    for a, b in zip(words, words[1:]):
        tol = 2 * eps[kv.key_to_index[a]] + 2 * eps[kv.key_to_index[b]] + 1e-6
        ours = store.similarity(a, b)
        assert isinstance(ours, np.floating)
        assert abs(ours - kv.similarity(a, b)) <= tol
        assert abs(store.distance(a, b) - kv.distance(a, b)) <= tol
    s1, s2 = words[:3], words[3:6]
    # a mean of rows is within max(scale)/2 per element of the float mean
    x = kv.vectors.astype(np.float64)
    scale = float(np.max(np.asarray(store.scales)))
    e = [np.sqrt(x.shape[1]) * scale / (2 * np.linalg.norm(x[[kv.key_to_index[w] for w in s]]
                                                          .mean(0))) for s in (s1, s2)]
    assert abs(store.n_similarity(s1, s2) - kv.n_similarity(s1, s2)) <= 2 * e[0] + 2 * e[1] + 1e-6
    with pytest.raises(ZeroDivisionError):
        store.n_similarity([], s2)


@pytest.mark.parametrize("name", NAMES)
def test_distances_of_every_row_run_on_the_kernel_within_tolerance(pairs, name):
    kv, store, eps = pairs[name]
    finite = np.isfinite(eps)
    emax = float(eps[finite].max())
    for w in _words(kv, 4):
        qi = kv.key_to_index[w]
        ours = store.distances(w)
        theirs = kv.distances(w)
        assert ours.shape == theirs.shape and ours.dtype == np.float32
        ok = finite & np.isfinite(theirs)
        assert np.all(np.abs(ours[ok] - theirs[ok]) <= 2 * eps[qi] + 2 * emax + 1e-5)
        others = _words(kv, 3, seed=5)
        np.testing.assert_allclose(store.distances(w, others), kv.distances(w, others),
                                   atol=2 * eps[qi] + 2 * emax + 1e-6)
    v = kv.vectors[0]
    np.testing.assert_array_equal(store.cosine_similarities(v, kv.vectors[:5]),
                                  kv.cosine_similarities(v, kv.vectors[:5]))


def test_distances_use_the_kernel_not_a_python_loop(pairs, monkeypatch):
    from embq import _kernels_search

    kv, store, _ = pairs["lee_fasttext.vec"]
    calls = []
    real = _kernels_search.all_scores
    monkeypatch.setattr(_kernels_search, "all_scores",
                        lambda *a: calls.append(a[5].shape) or real(*a))
    store.distances(kv.index_to_key[3])
    assert calls and calls[0][0] == 1


@pytest.mark.parametrize("name", NAMES)
def test_closer_than_and_rank_agree_with_gensim_outside_the_tolerance(pairs, name):
    kv, store, eps = pairs[name]
    x = kv.vectors.astype(np.float64)
    nrm = np.linalg.norm(x, axis=1)
    unit = x / np.where(nrm > 0, nrm, 1)[:, None]
    emax = float(eps[np.isfinite(eps)].max())
    words = _words(kv, 4)
    for a, b in zip(words, words[::-1]):
        if a == b:
            continue
        ia, ib = kv.key_to_index[a], kv.key_to_index[b]
        tol = 2 * eps[ia] + 2 * emax
        cos = unit @ unit[ia]
        ours = store.closer_than(a, b)
        assert ours == sorted(ours, key=store.get_index)      # row order, like gensim
        theirs = kv.closer_than(a, b)
        clear = {kv.index_to_key[r] for r in np.flatnonzero(cos > cos[ib] + 2 * tol) if r != ia}
        near = {kv.index_to_key[r] for r in np.flatnonzero(cos > cos[ib] - 2 * tol) if r != ia}
        assert clear <= set(theirs) and clear <= set(ours) <= near
        assert abs(store.rank(a, b) - kv.rank(a, b)) <= len(near - clear)
        assert store.words_closer_than(a, b) == ours


@pytest.mark.parametrize("name", NAMES)
def test_most_similar_cosmul_agrees_with_gensim(pairs, name):
    kv, store, eps = pairs[name]
    emax = float(eps[np.isfinite(eps)].max())
    words = _words(kv, 6)
    for a, b in zip(words, words[1:]):
        ia, ib = kv.key_to_index[a], kv.key_to_index[b]
        # each shifted cosine (1 + cos) / 2 moves by at most half the cosine tolerance; a
        # product of two factors in [0, 1] by at most the sum
        tol = (eps[ia] + emax) + (eps[ib] + emax) + 1e-6
        theirs = kv.most_similar_cosmul(positive=[a, b], topn=6)
        ours = store.most_similar_cosmul(positive=[a, b], topn=5)
        t_scores = dict(theirs)
        full = kv.most_similar_cosmul(positive=[a, b], topn=None)
        assert len(ours) == min(5, len(kv.index_to_key) - 2)
        fifth = theirs[min(4, len(theirs) - 1)][1]
        sixth = theirs[5][1] if len(theirs) > 5 else -np.inf
        for key, score in ours:
            assert key not in (a, b)
            g = float(full[kv.key_to_index[key]])
            assert g >= fifth - 2 * tol and abs(score - g) <= tol
        for key, score in theirs[:5]:
            if score > sixth + 2 * tol:
                assert key in dict(ours)
        assert t_scores  # gensim answered
    allv = store.most_similar_cosmul(positive=[words[0]], topn=None)
    assert allv.shape == (len(store),)
    assert store.most_similar_cosmul(positive=[words[0]], topn=0) == []


def test_most_similar_cosmul_restrict_vocab_negative_and_vectors(pairs):
    kv, store, _ = pairs["pang_lee_polarity_fasttext.vec"]
    a, b, c = kv.index_to_key[10], kv.index_to_key[20], kv.index_to_key[30]
    got = store.most_similar_cosmul(positive=[a, b], negative=[c], topn=5, restrict_vocab=200)
    assert all(store.get_index(k) < 200 for k, _ in got) and len(got) == 5
    theirs = kv.most_similar_cosmul(positive=[a, b], negative=[c], topn=5)
    # the 100-d file quantizes finely: the lists are the same
    assert [k for k, _ in store.most_similar_cosmul(positive=[a, b], negative=[c], topn=5)] \
        == [k for k, _ in theirs]
    vec = kv[a] * 3.0   # a vector term is used as given (its length counts), as in gensim
    ours = store.most_similar_cosmul(positive=[vec], topn=3)
    np.testing.assert_allclose([s for _, s in ours],
                               [s for _, s in kv.most_similar_cosmul(positive=[vec], topn=3)],
                               atol=0.02)
    with pytest.raises(ValueError, match="no input"):
        store.most_similar_cosmul(negative=[a])


@pytest.mark.parametrize("name", NAMES)
def test_mean_vector_centrality_doesnt_match_relative_cosine(pairs, name):
    kv, store, eps = pairs[name]
    words = _words(kv, 5)[:5]
    scale = float(np.max(np.asarray(store.scales)))
    np.testing.assert_allclose(store.get_mean_vector(words, pre_normalize=False),
                               kv.get_mean_vector(words, pre_normalize=False),
                               atol=scale / 2 + 1e-6)
    w = [1.0, -2.0, 0.5, 3.0, 1.0]
    for post in (False, True):
        ours = store.get_mean_vector(words, weights=w, post_normalize=post)
        theirs = kv.get_mean_vector(words, weights=w, post_normalize=post)
        assert ours.dtype == theirs.dtype == np.float32
        # unit rows move by 2 eps each: the weighted mean by at most the weighted sum
        bound = sum(abs(wi) * 2 * eps[kv.key_to_index[k]] for wi, k in zip(w, words)) / sum(
            abs(wi) for wi in w)
        if post:
            bound = 2 * bound / max(np.linalg.norm(kv.get_mean_vector(words, weights=w)), 1e-9)
        assert np.linalg.norm(ours - theirs) <= bound + 1e-6
    assert store.get_mean_vector(words + ["not-a-key-xyz"]).shape == (store.dim,)
    with pytest.raises(KeyError, match="not-a-key-xyz"):
        store.get_mean_vector(words + ["not-a-key-xyz"], ignore_missing=False)
    with pytest.raises(ValueError, match="same number"):
        store.get_mean_vector(words, weights=[1.0])
    with pytest.raises(ValueError, match="no input"):
        store.get_mean_vector([])

    emax = float(np.max([eps[kv.key_to_index[k]] for k in words]))
    ours = store.rank_by_centrality(words)
    theirs = kv.rank_by_centrality(words)
    t = dict((k, v) for v, k in theirs)
    for v, k in ours:
        assert abs(v - t[k]) <= 8 * emax + 1e-6
    margin = theirs[-2][0] - theirs[-1][0]
    if margin > 16 * emax:
        assert store.doesnt_match(words) == kv.doesnt_match(words)
    assert store.doesnt_match(words) in words

    a, b = words[0], words[1]
    sims = kv.similar_by_word(a, topn=10)
    total = sum(s for _, s in sims)
    tol = (2 * eps[kv.key_to_index[a]] + 2 * float(eps[np.isfinite(eps)].max())) * 11 / total
    assert abs(store.relative_cosine_similarity(a, b) - kv.relative_cosine_similarity(a, b)) \
        <= tol + 1e-6
    assert store.similar_by_word(a, topn=3) == store.similar_by_key(a, topn=3)


@pytest.mark.parametrize("name", NAMES)
def test_vectors_and_normed_vectors_dequantize_lazily(pairs, name):
    kv, store, _ = pairs[name]
    vec = store.vectors
    assert vec.shape == kv.vectors.shape and vec.dtype == np.float32 and len(vec) == len(kv)
    full = np.asarray(vec)
    np.testing.assert_array_equal(full, store[:])
    scale = np.asarray(store.scales)[:, None]
    assert np.all(np.abs(full - kv.vectors) <= scale * 0.5 * (1 + 1e-5) + 1e-30)
    np.testing.assert_array_equal(vec[3], full[3])
    np.testing.assert_array_equal(vec[2:7], full[2:7])
    np.testing.assert_array_equal(vec[[5, 1, -1]], full[[5, 1, -1]])
    normed = np.asarray(store.get_normed_vectors())
    nrm = np.asarray(store.norms)[:, None]
    np.testing.assert_allclose(normed, full / np.where(nrm > 0, nrm, 1), rtol=1e-6)
    np.testing.assert_allclose(normed, kv.get_normed_vectors(), atol=0.05)
    assert store.vector_size == kv.vector_size
    with pytest.raises(IndexError):
        vec[len(kv)]
    with pytest.raises(TypeError, match="read-only"):
        vec[0] = 1.0


def test_save_word2vec_format_round_trips_through_gensim(pairs, tmp_path):
    gensim = pytest.importorskip("gensim")
    _, store, _ = pairs["lee_fasttext.vec"]
    for binary in (False, True):
        out = tmp_path / f"out{int(binary)}.w2v"
        store.save_word2vec_format(str(out), binary=binary)
        back = gensim.models.KeyedVectors.load_word2vec_format(str(out), binary=binary)
        assert back.index_to_key == list(store.index_to_key)
        np.testing.assert_allclose(back.vectors, store[:], rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="prefix"):
        store.save_word2vec_format(str(tmp_path / "x"), prefix="x_")


def test_mutating_methods_say_read_only_and_how_to_write(pairs):
    kv, store, _ = pairs["lee_fasttext.vec"]
    for call in (lambda: store.add_vectors(["a"], np.zeros((1, store.dim))),
                 lambda: store.add_vector("a", np.zeros(store.dim)),
                 lambda: store.sort_by_descending_frequency(),
                 lambda: store.fill_norms(force=True),
                 lambda: store.__setitem__("a", np.zeros(store.dim))):
        with pytest.raises(TypeError, match=r"read-only.*embq\.save"):
            call()
    store.fill_norms()   # gensim code calls it before searching: the norms are stored
    assert kv.index_to_key[0] in store and len(store) == len(kv)
    assert store.has_index_for(kv.index_to_key[0]) and not store.has_index_for("no-such-key")
