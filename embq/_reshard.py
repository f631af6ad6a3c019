"""Split a store into a sharded store (:func:`shard`) and join one into a store (:func:`merge`).

Both copy the quantized rows as they are (codes, scales, zero points and keys) through
:class:`~embq._store.StoreWriter`, which recomputes the norms with the same kernel, so
``merge(shard(s))`` holds the same bytes in every dataset as ``s``, and ``merge`` of a
sharded ``compress`` equals one ``compress`` of the same rows. Memory: one block of rows,
plus the key table of the file being written (about 40 bytes a key, as any store writer).
Outputs appear only when complete (temporary file or directory, then rename).
"""

from __future__ import annotations

import os
import sys
import time
from itertools import islice
from typing import Any

import numpy as np

from embq._errors import DuplicateKeyError, StoreError

__all__ = ["merge", "shard"]

_BLOCK_BYTES = 8 << 20


def _bar(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="rows", unit_scale=True, file=sys.stderr, desc=desc,
                dynamic_ncols=True, leave=False)


def _copy_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    from embq._manifest import SHARD_UUID_ATTR
    from embq._store import _RESERVED_ATTRS

    return {k: v for k, v in attrs.items() if k not in _RESERVED_ATTRS and k != SHARD_UUID_ATTR}


def _copy_rows(store, writer, start: int, stop: int, keys, bar) -> None:
    """Append rows ``start:stop`` of ``store`` to ``writer`` in blocks.

    ``keys`` iterates the store's keys from row ``start`` on (None without keys).
    """
    step = max(1, _BLOCK_BYTES // max(store.dim, 1))
    for a in range(start, stop, step):
        b = min(stop, a + step)
        ks = list(islice(keys, b - a)) if keys is not None else None
        writer.append_quantized(np.asarray(store.codes[a:b]), np.asarray(store.scales[a:b]),
                                np.asarray(store.zero_points[a:b]), ks)
        if bar is not None:
            bar.update(b - a)


def shard(
    store: str | os.PathLike,
    output: str | os.PathLike,
    *,
    shard_rows: int,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Split a store into a sharded store of ``shard_rows`` rows per shard (the last fewer).

    Parameters
    ----------
    store : str or os.PathLike
        A single-file store.
    output : str or os.PathLike
        The sharded store (a directory) to write; its parent must exist.
    shard_rows : int
        Rows per shard.
    overwrite : bool
        Replace an existing sharded store (or file) at ``output``.
    progress : bool
        Show a tqdm progress bar on stderr.

    Returns
    -------
    dict
        ``input``, ``output``, ``rows``, ``dim``, ``shards``, ``output_size``, ``seconds``.

    Raises
    ------
    StoreError
        ``store`` is not a valid store.
    FileExistsError, FileNotFoundError, IsADirectoryError
        As for :func:`embq.compress`.
    """
    from embq._dist_compress import (
        _HASH_DIR,
        _check_output,
        _make_build_dir,
        _remove_tree,
        publish_directory,
    )
    from embq._manifest import (
        SHARD_UUID_ATTR,
        entry_for,
        new_shard_uuid,
        shard_name,
        write_manifest,
    )
    from embq._store import StoreWriter
    from embq._store import open as open_store

    if isinstance(shard_rows, bool) or not isinstance(shard_rows, (int, np.integer)) \
            or shard_rows < 1:
        raise ValueError(f"shard_rows must be a positive number of rows, got {shard_rows!r}")
    shard_rows = int(shard_rows)
    t0 = time.perf_counter()
    out = os.path.abspath(os.fspath(output))
    _check_output(out, overwrite)
    with open_store(store) as st:
        n = len(st)
        if n == 0:
            raise StoreError("the store has no rows; nothing to shard", path=st.path)
        attrs = _copy_attrs(st.attrs)
        keys = iter(st.index_to_key) if st.has_keys else None
        build = _make_build_dir(out)
        bar = _bar(progress, n, os.path.basename(out))
        try:
            entries = []
            for i, a in enumerate(range(0, n, shard_rows)):
                b = min(n, a + shard_rows)
                name = shard_name(i)
                with StoreWriter(os.path.join(build, name), st.dim, has_keys=st.has_keys,
                                 attrs={**attrs, SHARD_UUID_ATTR: new_shard_uuid()}) as w:
                    _copy_rows(st, w, a, b, keys, bar)
                entries.append(entry_for(build, name, rows=b - a, offset=a))
            os.rmdir(os.path.join(build, _HASH_DIR))
            write_manifest(build, dim=st.dim, has_keys=st.has_keys, shards=entries)
            publish_directory(build, out, overwrite)
        except BaseException:
            _remove_tree(build)
            raise
        finally:
            if bar is not None:
                bar.close()
        dim = st.dim
    return {"input": os.fspath(store), "output": out, "rows": n, "dim": dim,
            "shards": len(entries), "output_size": sum(e.bytes for e in entries),
            "seconds": time.perf_counter() - t0}


def merge(
    sharded: str | os.PathLike,
    output: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Join a sharded store into one single-file store.

    The rows, in shard order, keep their codes, scales, zero points, norms and keys, so the
    result equals one :func:`embq.compress` of the same rows; root attributes that every
    shard holds with the same value are kept (``source_*`` facts of a store split by
    :func:`shard`, for example).

    Parameters
    ----------
    sharded : str or os.PathLike
        The sharded store (directory with ``manifest.json``).
    output : str or os.PathLike
        The store file to write.
    overwrite : bool
        Replace an existing file at ``output``.
    progress : bool
        Show a tqdm progress bar on stderr.

    Returns
    -------
    dict
        ``input``, ``output``, ``rows``, ``dim``, ``shards``, ``output_size``, ``seconds``.

    Raises
    ------
    StoreError
        The manifest is bad, a shard is missing, damaged, or not the file the manifest names,
        or a key is in two shards (naming the shards).
    """
    from embq._dist_search import open_shard
    from embq._manifest import read_manifest
    from embq._store import StoreWriter

    t0 = time.perf_counter()
    m = read_manifest(sharded)
    out = os.fspath(output)
    # Check every shard before writing anything, and find the attributes they share.
    common: dict[str, Any] | None = None
    for i in range(len(m.shards)):
        with open_shard(m, i) as st:   # checked against its manifest entry
            attrs = _copy_attrs(st.attrs)
        if common is None:
            common = attrs
        else:
            common = {k: v for k, v in common.items()
                      if k in attrs and _same(v, attrs[k])}
    bar = _bar(progress, m.rows, os.path.basename(out))
    try:
        with StoreWriter(out, m.dim, has_keys=m.has_keys, overwrite=overwrite,
                         attrs=common) as w:
            for i in range(len(m.shards)):
                with open_shard(m, i) as st:
                    try:
                        _copy_rows(st, w, 0, len(st),
                                   iter(st.index_to_key) if st.has_keys else None, bar)
                    except DuplicateKeyError as exc:
                        first, _ = m.locate([exc.first_index])
                        j = int(first[0])
                        raise StoreError(
                            f"key {exc.key!r} is in shard {i} ({m.shards[i].path}, row "
                            f"{exc.index - m.shards[i].offset}) and in shard {j} "
                            f"({m.shards[j].path}, row {exc.first_index - m.shards[j].offset}); "
                            "the keys of a store must be unique", path=m.directory) from None
    finally:
        if bar is not None:
            bar.close()
    return {"input": m.directory, "output": out, "rows": m.rows, "dim": m.dim,
            "shards": len(m.shards), "output_size": os.path.getsize(out),
            "seconds": time.perf_counter() - t0}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    return type(a) is type(b) and a == b
