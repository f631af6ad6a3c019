"""Build sharded stores for tests: a matrix split into parts, each saved as a shard."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

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


def uneven_sizes(n: int, parts: int, rng: np.random.Generator) -> list[int]:
    """``parts`` sizes summing to ``n``, uneven (random cut points), each >= 1 when n allows."""
    if parts == 1:
        return [n]
    cuts = np.sort(rng.choice(np.arange(1, n), size=parts - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [n]])).astype(int).tolist()
