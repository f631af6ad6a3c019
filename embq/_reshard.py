"""Split a store into a sharded store (:func:`shard`) and join one into a store (:func:`merge`).

Both copy the quantized rows as they are (codes, scales, zero points and keys) through
:class:`~embq._store.StoreWriter`, which recomputes the norms with the same kernel, so
``merge(shard(s))`` holds the same bytes in every dataset as ``s``, and ``merge`` of a
sharded ``compress`` equals one ``compress`` of the same rows. Memory: one block of rows,
plus the key table of the file being written (about 40 bytes a key, as any store writer).
Outputs appear only when complete (temporary file or directory, then rename).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from itertools import islice
from typing import Any

import numpy as np

from embq._errors import DuplicateKeyError, StoreError

__all__ = ["global_center", "merge", "shard", "sketch_sharded", "write_shard_sketch"]

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


def _copy_sketch(store, path: str, start: int, stop: int) -> None:
    """Give the shard file at ``path`` (rows ``start:stop`` of ``store``) the store's sketch
    of those rows and its center: a row's bits depend only on the row and the center, and
    the store's center is that of all the rows, so the shards hold the sketch of the whole
    store (docs/format.md, "Sharded store")."""
    import h5py

    step = max(1, _BLOCK_BYTES // max(store.sketch.shape[1], 1))
    with h5py.File(path, "r+") as f:
        ds = f.create_dataset("sketch", shape=(stop - start, store.sketch.shape[1]),
                              dtype=np.uint8)
        for a in range(start, stop, step):
            b = min(stop, a + step)
            ds[a - start:b - start] = store.sketch[a:b]
        f.create_dataset("sketch_center", data=np.asarray(store.sketch_center, np.float32))


def shard(
    store: str | os.PathLike,
    output: str | os.PathLike,
    *,
    shard_rows: int,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Split a store into a sharded store of ``shard_rows`` rows per shard (the last fewer).

    A sketch is carried over: every shard gets its rows' bits and the store's center.

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
                if st.sketch is not None:
                    _copy_sketch(st, os.path.join(build, name), a, b)
                entries.append(entry_for(build, name, rows=b - a, offset=a))
            os.rmdir(os.path.join(build, _HASH_DIR))
            write_manifest(build, dim=st.dim, has_keys=st.has_keys, shards=entries,
                           sketch=st.sketch is not None)
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
    result equals one :func:`embq.compress` of the same rows (with its sketch when the
    sharded store has one); root attributes that every
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
        # A sketch of all the shards is computed afresh by the writer, from the merged
        # rows: the same center (the same rows in the same blocks) and so the same bits.
        with StoreWriter(out, m.dim, has_keys=m.has_keys, overwrite=overwrite,
                         attrs=common, sketch=m.sketch) as w:
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


# -- the sketch of a sharded store -----------------------------------------------------------------
#
# Every shard of a sharded store with a sketch holds the sketch of the whole store: the same
# sketch_center, the column mean of all its rows as one store holding them computes it (same
# blocks of rows, across shard boundaries), and its own rows' bits against that center. Then a
# row's bits and a query's sketch are those of the single store, and so are the Hamming
# distances that choose the prefilter's candidates.


class _Rows:
    """The shards' per-row array ``name`` as one read-only array-like of consecutive rows:
    ``obj[a:b]`` reads rows ``a:b`` from the shards they lie in, so a block of rows crosses
    shard boundaries as it would in one store."""

    def __init__(self, parts: list, name: str) -> None:
        self._parts = [getattr(p, name) for p in parts]
        self._offsets = np.cumsum([0] + [len(p) for p in self._parts])
        self.shape = (int(self._offsets[-1]), *self._parts[0].shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError(f"rows are read by slices here, got {type(key).__name__}")
        start, stop, step = key.indices(self.shape[0])
        if step != 1:
            raise ValueError(f"rows are read in order here, got step {step}")
        pieces = [np.asarray(p[max(start - off, 0):min(stop - off, len(p))])
                  for p, off in zip(self._parts, self._offsets[:-1].tolist())
                  if start < off + len(p) and off < stop]
        if not pieces:
            return np.asarray(self._parts[0][:0])
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def global_center(stores: list, *, n_threads: int | None = None) -> np.ndarray:
    """The sketch center of the rows of ``stores`` (open stores, or anything with ``codes``,
    ``scales`` and ``zero_points``) in order, bit for bit the one a single store holding them
    has: :func:`embq._sketch.sketch_center` over their rows read block by block (only codes,
    scales and zero points are read; memory stays at one block)."""
    from embq._sketch import sketch_center

    return sketch_center(_Rows(stores, "codes"), _Rows(stores, "scales"),
                         _Rows(stores, "zero_points"), n_threads=n_threads)


def write_shard_sketch(path: str, center: np.ndarray, n_threads: int | None = None) -> None:
    """Add the sketch of a finished shard file's rows against ``center`` (the whole store's)
    to the file, in place: ``sketch`` and ``sketch_center`` (both replaced if present).

    For shards not yet published (in a build directory, or a temporary copy): the file is
    modified where it is. A task function (runs on a Dask worker).
    """
    import h5py

    from embq._sketch import sketch_blocks

    with h5py.File(path, "r+") as f:
        for name in ("sketch", "sketch_center"):
            if name in f:
                del f[name]
        codes = f["codes"]
        n, d = codes.shape
        ds = f.create_dataset("sketch", shape=(n, (d + 7) // 8), dtype=np.uint8)
        for a, bits in sketch_blocks(codes, f["scales"], f["zero_points"], center,
                                     n_threads=n_threads):
            ds[a:a + bits.shape[0]] = bits
        f.create_dataset("sketch_center", data=np.asarray(center, np.float32))


def sketch_sharded(path: str | os.PathLike, *, n_threads: int | None = None) -> dict[str, Any]:
    """Add the sketch of the whole store to every shard of the sharded store at ``path``.

    The center is computed over all shards' rows (:func:`global_center`); each shard is
    copied to a temporary file next to it, sketched there and renamed to a new shard name
    (with a new ``shard_uuid``); the new manifest, written atomically, is the commit point,
    after which the old shard files are removed. An interruption before it leaves the store
    as it was (the new files are removed).

    Returns
    -------
    dict
        ``output`` (the directory), ``rows``, ``dim``, ``shards``, ``sketch_bytes``,
        ``seconds`` and ``added`` (False when the store already had a sketch: nothing done).

    Raises
    ------
    StoreError
        The manifest is bad, or a shard is missing, damaged or not the file it names.
    """
    import builtins
    import secrets
    import shutil

    import h5py

    from embq._dist_search import open_shard
    from embq._manifest import (
        SHARD_DIR,
        SHARD_UUID_ATTR,
        entry_for,
        new_shard_uuid,
        read_manifest,
        write_manifest,
    )
    from embq._publish import AtomicFile

    t0 = time.perf_counter()
    m = read_manifest(path)
    result = {"output": m.directory, "rows": m.rows, "dim": m.dim, "shards": len(m.shards),
              "sketch_bytes": sharded_sketch_nbytes([e.rows for e in m.shards], m.dim),
              "added": not m.sketch}
    if m.sketch:
        result["seconds"] = time.perf_counter() - t0
        return result
    stores = []
    made: list[str] = []
    committed = False
    try:
        for i in range(len(m.shards)):
            stores.append(open_shard(m, i))
        center = global_center(stores, n_threads=n_threads)
        token = secrets.token_hex(4)
        entries = []
        for i, e in enumerate(m.shards):
            rel = f"{SHARD_DIR}/part-{i:05d}-s{token}.h5"
            out = AtomicFile(os.path.join(m.directory, *rel.split("/")), overwrite=False)
            try:
                with builtins.open(m.shard_path(i), "rb") as fh:
                    shutil.copyfileobj(fh, out.fh, 1 << 22)
                out.fh.close()
                with h5py.File(out.tmp, "r+") as f:
                    f.attrs[SHARD_UUID_ATTR] = new_shard_uuid()
                write_shard_sketch(out.tmp, center, n_threads)
                out.commit()
            except BaseException:
                out.abort()
                raise
            made.append(rel)
            entries.append(entry_for(m.directory, rel, rows=e.rows, offset=e.offset))
        write_manifest(m.directory, dim=m.dim, has_keys=m.has_keys, shards=entries, sketch=True)
        committed = True
    finally:
        for st in stores:
            st.close()
        if not committed:
            for rel in made:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(m.directory, *rel.split("/")))
    for e in m.shards:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(m.directory, *e.path.split("/")))
    result["seconds"] = time.perf_counter() - t0
    return result


def sharded_sketch_nbytes(rows: list[int], dim: int) -> int:
    """Bytes the sketch adds to a sharded store with shards of ``rows`` rows: each shard's
    :func:`embq._sketch.sketch_nbytes` (its bits and its copy of the center)."""
    from embq._sketch import sketch_nbytes

    return sum(sketch_nbytes(n, dim) for n in rows)
