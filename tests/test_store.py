"""Tests for the embq HDF5 store: writing, reading, lookups, validation."""

from __future__ import annotations

import numpy as np
import pytest

import embq
from embq.quantize import dequantize, quantize


def _data(n=50, d=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), [f"w{i}" for i in range(n)]


def test_round_trip_basic(tmp_path):
    x, keys = _data()
    p = tmp_path / "s.h5"
    embq.save(p, x, keys)
    ref = dequantize(*quantize(x))
    with embq.open(p) as s:
        assert s.shape == x.shape
        assert list(s.index_to_key) == keys
        np.testing.assert_array_equal(s["w3"], ref[3])
        np.testing.assert_array_equal(s[["w1", "w0"]], ref[[1, 0]])
        np.testing.assert_array_equal(s[:], ref)
