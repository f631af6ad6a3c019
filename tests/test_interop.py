"""Tests for embq._interop: stores from gensim KeyedVectors and back, on gensim's real files.

Every test that needs gensim skips without it; the one that checks the error a missing gensim
gives runs either way.
"""

from __future__ import annotations

import builtins
import os

import numpy as np
import pytest

import embq
from embq import _interop as interop
from embq._quantize import dequantize
from embq._search import most_similar
from embq._source import FROM_KEYED_VECTORS, SOURCE_ATTRIBUTES, SOURCE_FORMAT


def _keyed_vectors():
    """gensim's KeyedVectors class; the test is skipped without gensim."""
    return pytest.importorskip("gensim.models").KeyedVectors

# Every embedding file in gensim/test/test_data, with how gensim loads it.
W2V = {}
W2V_BIN = {"binary": True}
VECTOR_FILES = [
    ("EN.1-10.cbow1_wind5_hs0_neg10_size300_smpl1e-05.txt", "w2v", W2V),
    ("IT.1-10.cbow1_wind5_hs0_neg10_size300_smpl1e-05.txt", "w2v", W2V),
    ("crime-and-punishment.vec", "w2v", W2V),
    ("euclidean_vectors.bin", "w2v", W2V_BIN),
    ("high_precision.kv.bin", "w2v", W2V_BIN),
    ("high_precision.kv.txt", "w2v", W2V),
    ("lee_fasttext.vec", "w2v", W2V),
    # Its first bytes are not UTF-8; "replace" keeps every key non-empty (stores refuse "").
    ("pang_lee_polarity_fasttext.vec", "w2v", {"unicode_errors": "replace"}),
    ("poincare_vectors.bin", "w2v", W2V_BIN),
    ("test_glove.txt", "w2v", {"no_header": True}),
    ("toy-model.vec", "w2v", W2V),
    ("word2vec_pre_kv_c", "w2v", W2V),
    ("cp852_fasttext.bin", "fasttext", {}),
    ("crime-and-punishment.bin", "fasttext", {}),
    ("lee_fasttext.bin", "fasttext", {}),
    ("lee_fasttext_new.bin", "fasttext", {}),
    ("non_ascii_fasttext.bin", "fasttext", {}),
    ("toy-model.bin", "fasttext", {}),
    ("toy-model-pretrained.bin", "fasttext", {}),
]


def _most_similar(store, word, topn):
    """What ``store.most_similar`` delegates to (``embq._search.most_similar``)."""
    return most_similar(store, positive=[word], topn=topn)


def _load(name, how, kw):
    KeyedVectors = _keyed_vectors()
    from gensim.models.fasttext import load_facebook_vectors
    from gensim.test.utils import datapath

    if how == "fasttext":
        return load_facebook_vectors(datapath(name))
    return KeyedVectors.load_word2vec_format(datapath(name), **kw)


def _without_empty_keys(kv):
    """toy-model-pretrained.bin holds the empty string as a key, which a store cannot; keep
    the other vectors (as a plain KeyedVectors)."""
    keep = [i for i, k in enumerate(kv.index_to_key) if k]
    if len(keep) == len(kv.index_to_key):
        return kv
    out = _keyed_vectors()(vector_size=kv.vector_size)
    out.add_vectors([kv.index_to_key[i] for i in keep], kv.vectors[keep])
    return out


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """(kv, store) for every vector file, stores written with from_keyed_vectors."""
    out = {}
    d = tmp_path_factory.mktemp("stores")
    for name, how, kw in VECTOR_FILES:
        kv = _without_empty_keys(_load(name, how, kw))
        path = str(d / (name + ".embq"))
        interop.from_keyed_vectors(kv, path)
        out[name] = (kv, embq.open(path))
    yield out
    for _, store in out.values():
        store.close()


@pytest.mark.parametrize("name", [f[0] for f in VECTOR_FILES])
def test_from_keyed_vectors_keys_and_values(stores, name):
    kv, store = stores[name]
    assert store.shape == kv.vectors.shape
    assert list(store.index_to_key) == list(kv.index_to_key)
    x = kv.vectors.astype(np.float32)
    xh = store[np.arange(len(store)).tolist()] if len(store) else np.empty_like(x)
    scales = np.asarray(store.scales, np.float64)
    # Round-to-nearest: every element within half a step (plus float32 rounding).
    assert np.all(np.abs(xh.astype(np.float64) - x) <= scales[:, None] * 0.5 * (1 + 1e-5) + 1e-30)
    # the one source_* attribute a store from gensim has, under the name compress uses
    assert store.attrs.get(SOURCE_FORMAT) == FROM_KEYED_VECTORS == "gensim-keyedvectors"
    assert [a for a in store.attrs if a in SOURCE_ATTRIBUTES] == [SOURCE_FORMAT]


@pytest.mark.parametrize("name", [f[0] for f in VECTOR_FILES])
def test_most_similar_agrees_with_gensim_within_quantization_error(stores, name):
    """store.most_similar(w, topn=5) agrees with gensim's float most_similar.

    Tolerance, from the scales: row i's dequantized vector is within ``scale_i / 2`` of the
    original in every element, so ``||x_i - x_hat_i|| <= eps_i * ||x_i||`` with
    ``eps_i = sqrt(d) * scale_i / (2 ||x_i||)``, and its unit vector moves by at most
    ``2 * eps_i``. A cosine between the query word q and a row r therefore moves by at most
    ``tol = 2 * eps_q + 2 * max_r eps_r`` (the query is a dequantized row, which the int8
    search re-quantizes exactly). So:

    * every neighbour the store returns has a float cosine >= gensim's 5th cosine - 2 * tol;
    * every gensim neighbour whose cosine beats gensim's 6th by more than 2 * tol (clear of
      the quantization error) is among the store's 5;
    * the store's reported scores are within tol of the float cosines of the same keys.
    Where gensim's neighbours are closer together than that, either order is accepted.
    """
    kv, store = stores[name]
    n, d = kv.vectors.shape
    assert n >= 2
    x = kv.vectors.astype(np.float64)
    norms = np.linalg.norm(x, axis=1)
    scales = np.asarray(store.scales, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = np.where(norms > 0, np.sqrt(d) * scales / (2 * norms), np.inf)
    eps_max = float(np.max(eps[norms > 0]))
    rng = np.random.default_rng(0)
    words = list(kv.index_to_key[:10]) + [
        kv.index_to_key[i] for i in rng.choice(n, size=min(n, 10), replace=False)
    ]
    unit = x / np.where(norms > 0, norms, 1)[:, None]
    checked = 0
    for w in dict.fromkeys(words):
        qi = kv.key_to_index[w]
        if norms[qi] == 0:
            continue
        tol = 2 * eps[qi] + 2 * eps_max
        expected = kv.most_similar(w, topn=6)
        got = _most_similar(store, w, 5)
        assert len(got) == min(5, n - 1)
        exp_scores = [s for _, s in expected]
        fifth = exp_scores[min(4, len(exp_scores) - 1)]
        sixth = exp_scores[5] if len(exp_scores) > 5 else -np.inf
        float_cos = {k: float(unit[qi] @ unit[kv.key_to_index[k]]) for k, _ in got}
        for key, score in got:
            assert key != w
            assert float_cos[key] >= fifth - 2 * tol, (w, key, float_cos[key], fifth, tol)
            assert abs(score - float_cos[key]) <= tol + 1e-6, (w, key, score, float_cos[key])
        got_keys = {k for k, _ in got}
        for key, score in expected[:5]:
            if score > sixth + 2 * tol:
                assert key in got_keys, (w, key, score, sixth, tol)
        checked += 1
    assert checked > 0


def test_most_similar_mostly_identical_on_real_file(stores):
    """On a 100-d real file the quantization error is small: most lists are identical."""
    kv, store = stores["pang_lee_polarity_fasttext.vec"]
    words = kv.index_to_key[:50]
    same = sum(
        [k for k, _ in kv.most_similar(w, topn=5)] == [k for k, _ in _most_similar(store, w, 5)]
        for w in words
    )
    assert same >= 40


@pytest.mark.parametrize("name", ["lee_fasttext.vec", "test_glove.txt", "toy-model.bin"])
def test_to_keyed_vectors_round_trip(stores, name):
    kv, store = stores[name]
    back = store.to_keyed_vectors()
    assert isinstance(back, _keyed_vectors())
    assert back.index_to_key == list(kv.index_to_key)
    assert back.key_to_index == {k: i for i, k in enumerate(kv.index_to_key)}
    expect = dequantize(np.asarray(store.codes), np.asarray(store.scales),
                        np.asarray(store.zero_points))
    np.testing.assert_array_equal(back.vectors, expect)
    assert back.vectors.dtype == np.float32
    w = kv.index_to_key[0]
    np.testing.assert_array_equal(back[w], store[w])
    # gensim computes on it like on any KeyedVectors (norms are filled lazily).
    assert back.most_similar(w, topn=3)


def test_to_keyed_vectors_without_keys(tmp_path):
    pytest.importorskip("gensim")
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    path = str(tmp_path / "nokeys.embq")
    embq.save(path, x)
    with embq.open(path) as store:
        kv = store.to_keyed_vectors()
    assert kv.index_to_key == [0, 1, 2, 3, 4]
    assert np.abs(kv[2] - x[2]).max() < 0.05


def test_from_keyed_vectors_refuses_existing_file_unless_overwrite(stores, tmp_path):
    kv, _ = stores["toy-model.vec"]
    path = str(tmp_path / "t.embq")
    interop.from_keyed_vectors(kv, path)
    with pytest.raises(FileExistsError):
        interop.from_keyed_vectors(kv, path)
    interop.from_keyed_vectors(kv, path, overwrite=True)
    assert embq.from_keyed_vectors is interop.from_keyed_vectors


def test_from_keyed_vectors_rejects_non_string_keys(tmp_path):
    kv = _keyed_vectors()(vector_size=3)
    kv.add_vectors([7, 8], np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match="key 0 is int 7"):
        interop.from_keyed_vectors(kv, str(tmp_path / "x.embq"))
    assert not os.path.exists(tmp_path / "x.embq")


def test_from_keyed_vectors_rejects_other_objects(tmp_path):
    pytest.importorskip("gensim")
    with pytest.raises(TypeError, match="expected a gensim KeyedVectors"):
        interop.from_keyed_vectors(np.ones((2, 2)), str(tmp_path / "x.embq"))


def test_missing_gensim_is_a_clear_import_error(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "gensim" or name.startswith("gensim."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match="pip install gensim"):
        interop.to_keyed_vectors(None)
    with pytest.raises(ImportError, match="pip install gensim"):
        interop.from_keyed_vectors(None, str(tmp_path / "x.embq"))


def test_from_keyed_vectors_rejects_empty_key(tmp_path):
    kv = _load("toy-model-pretrained.bin", "fasttext", {})
    assert "" in kv.key_to_index
    with pytest.raises(ValueError, match=r"key 22 is the empty string"):
        interop.from_keyed_vectors(kv, str(tmp_path / "x.embq"))
    assert not os.path.exists(tmp_path / "x.embq")


def test_from_keyed_vectors_rejects_empty_vectors(tmp_path):
    # As the docstring says, and as embq compress refuses an empty file.
    kv = _keyed_vectors()(vector_size=4)
    with pytest.raises(ValueError, match=r"KeyedVectors holds no vectors \(shape \(0, 4\)\)"):
        interop.from_keyed_vectors(kv, str(tmp_path / "x.embq"))
    assert not os.path.exists(tmp_path / "x.embq")
