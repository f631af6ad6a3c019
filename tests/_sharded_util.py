"""Build sharded stores for tests: a matrix split into parts, each saved as a shard."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import embq
from embq import _manifest as mf


def write_sharded(directory: str | os.PathLike, matrix: np.ndarray,
                  sizes: Sequence[int], keys: Sequence[str] | None = None) -> str:
    """Save ``matrix`` (and ``keys``) as consecutive shards of ``sizes`` rows under
    ``directory`` and commit them with a manifest; return the directory."""
    directory = os.fspath(directory)
    assert sum(sizes) == matrix.shape[0], (sizes, matrix.shape)
    os.makedirs(os.path.join(directory, mf.SHARD_DIR), exist_ok=True)
    entries, offset = [], 0
    for i, n in enumerate(sizes):
        rel = mf.shard_name(i)
        part_keys = None if keys is None else list(keys[offset:offset + n])
        embq.save(os.path.join(directory, rel), matrix[offset:offset + n], part_keys,
                  attrs={mf.SHARD_UUID_ATTR: mf.new_shard_uuid()}, n_threads=1)
        entries.append(mf.entry_for(directory, rel, rows=n, offset=offset))
        offset += n
    mf.write_manifest(directory, dim=matrix.shape[1], has_keys=keys is not None,
                      shards=entries)
    return directory


def tie_boundaries(x: np.ndarray, splits: Sequence[Sequence[int]]) -> None:
    """Make the first row of every shard of every split repeat the last row of the shard
    before it (in place), so equal scores straddle each boundary: the lower row must win,
    as in one store."""
    n = x.shape[0]
    for sizes in splits:
        for b in np.cumsum(sizes)[:-1]:
            if 0 < b < n:
                x[b] = x[b - 1]


def uneven_sizes(n: int, parts: int, rng: np.random.Generator) -> list[int]:
    """``parts`` sizes summing to ``n``, uneven (random cut points), each >= 1 when n allows."""
    if parts == 1:
        return [n]
    cuts = np.sort(rng.choice(np.arange(1, n), size=parts - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [n]])).astype(int).tolist()


# Few distinct values: many rows repeat, so ties (also across shards) are the common case.
TIE_VALUES = st.sampled_from([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0])


def draw_split(draw: st.DataObject) -> tuple[np.ndarray, list[int], np.ndarray]:
    """A small matrix of few distinct values, its split into shards (empty ones allowed) and
    1 to 3 queries of the same values: ``(x, sizes, queries)``."""
    n = draw.draw(st.integers(1, 30), label="n")
    d = draw.draw(st.integers(1, 5), label="d")
    x = draw.draw(arrays(np.float32, (n, d), elements=TIE_VALUES), label="x")
    cuts = sorted(draw.draw(st.lists(st.integers(0, n), max_size=4), label="cuts"))
    sizes = np.diff([0, *cuts, n]).tolist()
    q = draw.draw(arrays(np.float32, (draw.draw(st.integers(1, 3)), d), elements=TIE_VALUES),
                  label="queries")
    return x, sizes, q


def assert_same(got, want) -> None:
    """Two search results are identical: rows equal, scores equal bit for bit (also the lists
    of arrays a range search returns for (m, d) queries)."""
    if isinstance(want[0], list):
        assert isinstance(got[0], list) and len(got[0]) == len(want[0])
        for g, w in zip(zip(*got), zip(*want)):
            assert_same(g, w)
        return
    assert got[1].dtype == want[1].dtype == np.int64
    assert got[0].dtype == want[0].dtype == np.float32
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0].view(np.uint32), want[0].view(np.uint32))
