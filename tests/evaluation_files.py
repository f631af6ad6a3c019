"""Files and helpers shared by test_evaluate.py, test_compare.py and test_cli_evaluate.py.

The sample files in ``data/`` need nothing but embq; gensim's test files and KeyedVectors are
reached through :func:`gensim_data` and :func:`keyed_vectors`, which skip the calling test when
gensim is not installed (so only the tests that need it are skipped).
"""

from __future__ import annotations

import os

import pytest

import embq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "data", "sample.w2v.txt")
SAMPLE_PAIRS = os.path.join(ROOT, "data", "sample.pairs.tsv")
SAMPLE_ANALOGIES = os.path.join(ROOT, "data", "sample.analogies.txt")


def gensim_data(name):
    """Path of a file of gensim's test data; the test is skipped without gensim."""
    pytest.importorskip("gensim")
    from gensim.test.utils import datapath

    return datapath(name)


def keyed_vectors():
    """gensim's KeyedVectors class; the test is skipped without gensim."""
    return pytest.importorskip("gensim.models").KeyedVectors


def load_kv(name, kw):
    """gensim KeyedVectors of a word2vec-format file: an absolute path, or one of gensim's."""
    path = name if os.path.isabs(name) else gensim_data(name)
    return keyed_vectors().load_word2vec_format(path, **kw)


def write_file(tmp_path, name, text, mode="w"):
    """Write ``text`` (str as UTF-8, or bytes with ``mode="wb"``) to ``tmp_path/name``."""
    p = tmp_path / name
    if mode == "wb":
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf8")
    return str(p)


def compress_quietly(src, dst, **kw):
    """``embq.compress`` over an existing ``dst``; returns the warnings it gave."""
    warnings = []
    embq.compress(src, dst, overwrite=True, warn=warnings.append, **kw)
    return warnings


def save_sample_store(directory):
    """Save the sample file as a store in ``directory``; returns its path."""
    from embq._readers import load_embeddings

    keys, vectors = load_embeddings(SAMPLE)
    path = os.path.join(str(directory), "sample.embq")
    embq.save(path, vectors, keys)
    return path
