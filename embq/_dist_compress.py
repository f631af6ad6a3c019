"""Compress several inputs, or one input split at row boundaries, into a sharded store.

The layout of a sharded store is that of :mod:`embq._manifest`. The work runs in three
rounds of tasks; each task is a plain function over paths (no open file or store crosses a
process), so the same functions run on a Dask cluster (``client``) or one after the other in
this process:

1. :func:`read_piece`, one per *piece* of input, in input order. A piece is a whole file
   (compressed files, word2vec binary, GloVe after a ``limit``), a range of rows of an
   uncompressed ``.npy`` or a byte range of an uncompressed text file that starts and ends
   at line starts. It reads its rows with the ordinary reader, quantizes them with the same
   kernels as :func:`embq.compress` and writes shards of at most ``shard_rows`` rows (one
   per piece when ``shard_rows`` is None), dropping keys repeated *within* a shard as
   ``compress`` does. Next to each shard it writes the 64-bit hashes of its keys, sorted.
2. :func:`find_duplicates`, one per hash bucket (a range of hash values): the global pass
   over keys. It reads the slice of every shard's sorted hashes that falls in its range,
   sorts them by (hash, shard, row) and compares the keys of equal hashes; every
   occurrence of a key after its first one (in input order) is a row to drop.
3. :func:`rewrite_shard`, for the shards that lost rows (duplicates of an earlier shard's
   key, or rows past ``limit``): a copy without those rows. Codes, scales and zero points
   are copied; norms are recomputed by the same kernel, so they are bit for bit the same.

Memory. The client holds the plan and the results: O(pieces + shards) plus 24 bytes and the
key of every *duplicate* row (drop lists); never anything per row. A ``read_piece`` task holds
one block of floats, the key table of the shard it writes (about 40 bytes a key, as
``compress``) and 8 bytes of hash per key. A ``find_duplicates`` task holds at most about
``_BUCKET_ROWS`` hashes (20 bytes each with their shard and row, plus the sort: about 250 MB);
the number of buckets grows with the rows. On disk the hashes take 16 bytes a row until the
build ends.

Nothing is visible at ``output`` before the end: everything is built in a temporary sibling
directory, the manifest is written last into it, and the directory is renamed into place.
"""

from __future__ import annotations

import errno
import math
import os
import secrets
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from embq._errors import FormatError
from embq._readers import line_end

if TYPE_CHECKING:
    from embq._compress import CompressOptions

__all__ = ["compress_sharded", "find_duplicates", "read_piece", "rewrite_shard"]

_HASH_DIR = "hashes"
# Hashes per duplicate-finding task: 20 bytes each with shard and row, about twice that
# while sorting.
_BUCKET_ROWS = 8 << 20
# A text byte range is cut to hold about this share of shard_rows rows, so that the usual
# spread of line lengths rarely overflows into a small extra shard.
_SPLIT_FILL = 0.9
_SCAN_BYTES = 1 << 20


@dataclass(frozen=True)
class Piece:
    """One task's share of the input (see the module docstring)."""

    index: int                # position in the plan: input order, then file order
    input_index: int
    path: str
    format: str
    kind: str                 # "file", "bytes" or "rows"
    start: int = 0            # first byte ("bytes") or row ("rows")
    stop: int = 0             # end byte or row
    limit: int | None = None  # "file": rows to read at most
    keys_path: str | None = None
    data_start: int = 0       # "bytes": where the rows of the file begin (after its header)


@dataclass(frozen=True)
class Options:
    """What every task needs to know besides its piece."""

    dim: int
    has_keys: bool
    shard_rows: int | None
    encoding: str
    unicode_errors: str
    normalize: bool
    block_rows: int | None
    n_threads: int | None
    limit: int | None


@dataclass
class _Input:
    path: str
    format: str
    compression: str | None
    size: int
    dim: int
    count: int | None
    header_lines: int
    keys_path: str | None
    has_keys: bool


# --------------------------------------------------------------------------------------------
# reading a piece


def _open_piece(piece: Piece, opts: Options, first_line: int | None = None):
    """An :class:`~embq._readers.EmbeddingReader` of the rows of ``piece``.

    ``first_line``: the file line of a byte range's first row.  Counting the lines before a
    range means reading the file up to it, so a piece is first read without it (placeholder
    line numbers: the range's first line counts as the first data line) and only a failure
    is read again with the exact number (see :func:`read_piece`).
    """
    from embq._readers import open_embeddings

    common = {"format": piece.format, "encoding": opts.encoding,
              "unicode_errors": opts.unicode_errors, "block_rows": opts.block_rows,
              "keys_path": piece.keys_path}
    if piece.kind == "file":
        return open_embeddings(piece.path, limit=piece.limit, **common)
    if piece.kind == "rows":
        return open_embeddings(piece.path, row_range=(piece.start, piece.stop), **common)
    if first_line is None:
        first_line = 1 if piece.format == "glove" else 2
    return open_embeddings(piece.path, byte_range=(piece.start, piece.stop),
                           first_line=first_line, **common)


def _exact_first_line(piece: Piece) -> int:
    from embq._readers import count_newlines

    header = 0 if piece.format == "glove" else 1
    return header + 1 + count_newlines(piece.path, piece.data_start, piece.start)


def _source_attrs(piece: Piece, reader, opts: Options) -> dict[str, Any]:
    """The ``source_*`` attributes of the shards of ``piece`` (rows and duplicates are set
    per shard when it is finished)."""
    from embq._source import NORMALIZED, SOURCE_RANGE, source_attributes

    attrs = source_attributes(reader, piece.path, keys=piece.keys_path, limit=opts.limit,
                              encoding=opts.encoding, unicode_errors=opts.unicode_errors,
                              duplicates=0)
    attrs[NORMALIZED] = np.bool_(opts.normalize)
    if piece.kind != "file":
        attrs[SOURCE_RANGE] = f"{piece.kind} {piece.start}-{piece.stop}"
    return attrs


class _ShardBuilder:
    """One shard being written by :func:`read_piece`, with what the driver needs about it."""

    def __init__(self, build_dir: str, relpath: str, opts: Options, attrs: dict) -> None:
        from embq._manifest import SHARD_UUID_ATTR, new_shard_uuid
        from embq._recon import ReconstructionStats
        from embq._store import StoreWriter

        self.build_dir = build_dir
        self.relpath = relpath
        self.uuid = new_shard_uuid()
        self.attrs = attrs
        self.writer = StoreWriter(os.path.join(build_dir, relpath), opts.dim,
                                  has_keys=opts.has_keys, attrs={SHARD_UUID_ATTR: self.uuid},
                                  n_threads=opts.n_threads)
        self.input_rows = 0
        self.drops: list[np.ndarray] = []
        self.first_dup: tuple[str, int] | None = None
        self.stats = ReconstructionStats()
        self.hashes: list[np.ndarray] = []

    def add(self, x, codes, scales, zero_points, keys) -> None:
        from embq._kernels_store import hash_key

        mask = self.writer.append_quantized(codes, scales, zero_points, keys,
                                            on_duplicate="skip")
        if keys is not None:
            if not mask.all():
                dropped = np.flatnonzero(~mask)
                self.drops.append(dropped + self.input_rows)
                if self.first_dup is None:
                    self.first_dup = (keys[int(dropped[0])], self.input_rows + int(dropped[0]))
                keys = [k for k, keep in zip(keys, mask.tolist()) if keep]
                x, codes, scales, zero_points = x[mask], codes[mask], scales[mask], \
                    zero_points[mask]
            self.hashes.append(np.fromiter(map(hash_key, keys), np.uint64, len(keys)))
        self.stats.update(x, codes, scales, zero_points)
        self.input_rows += len(mask)

    def abort(self) -> None:
        self.writer.abort()

    def finish(self) -> dict[str, Any]:
        from embq._source import SOURCE_DUPLICATES, SOURCE_ROWS
        from embq._store import open as open_store

        drops = np.concatenate(self.drops) if self.drops else np.empty(0, np.int64)
        self.writer.attrs.update(self.attrs)
        self.writer.attrs.update({
            SOURCE_ROWS: np.int64(self.input_rows),
            SOURCE_DUPLICATES: np.int64(len(drops)),
            **{k: np.float64(v) for k, v in self.stats.result().items()},
        })
        self.writer.close()
        first_dup = None
        if self.first_dup is not None:
            key, dup_row = self.first_dup
            with open_store(os.path.join(self.build_dir, self.relpath)) as st:
                first_row = _input_row(st.get_index(key), drops)
            first_dup = (key, dup_row, first_row)
        hash_stem = None
        if self.writer.has_keys:
            h = np.concatenate(self.hashes) if self.hashes else np.empty(0, np.uint64)
            order = np.argsort(h, kind="stable")
            hash_stem = f"{_HASH_DIR}/{os.path.basename(self.relpath)[:-3]}"
            base = os.path.join(self.build_dir, hash_stem)
            np.save(base + ".h.npy", h[order])
            np.save(base + ".r.npy", order.astype(np.int64))
        return {"path": self.relpath, "uuid": self.uuid, "rows": self.writer.n_rows,
                "input_rows": self.input_rows, "drops": drops, "first_dup": first_dup,
                "stats": self.stats, "hashes": hash_stem}


def _input_row(store_row: int, drops: np.ndarray) -> int:
    """The input row (within its shard) of stored row ``store_row``, given the dropped ones."""
    x = store_row
    while True:
        nxt = store_row + int(np.searchsorted(drops, x, side="right"))
        if nxt == x:
            return x
        x = nxt


def read_piece(piece: Piece, opts: Options, build_dir: str) -> dict[str, Any]:
    """Task of round 1: read ``piece``, quantize it, write its shards under ``build_dir``.

    Returns
    -------
    dict
        ``index``, ``rows_read`` (input rows), ``blank_tail`` (a byte range that ends in
        blank lines), ``format``, ``compression``, ``size`` and ``shards``: per shard its
        relative ``path``, ``uuid``, ``rows``, ``input_rows``, ``drops`` (input rows of the
        shard dropped as repeats of a key earlier in it), ``first_dup`` (key, its input row,
        the input row of its first occurrence) and ``stats``.

    Raises
    ------
    FormatError
        Bad input, naming the file and the line (or row, record, byte offset).
    """
    if not os.path.isdir(build_dir):
        raise FileNotFoundError(errno.ENOENT, "the build directory is gone (the build was "
                                "stopped)", build_dir)
    try:
        return _read_piece(piece, opts, build_dir)
    except FormatError as exc:
        if piece.kind != "bytes" or exc.line is None or piece.start <= piece.data_start:
            raise
        # The line numbers of a byte range are only known relative to its start: count the
        # lines before it (only now, on this rare path) and read again for the true message.
        try:
            with _open_piece(piece, opts, _exact_first_line(piece)) as reader:
                for _ in reader:
                    pass
        except FormatError as exact:
            raise exact from None
        raise


def _read_piece(piece: Piece, opts: Options, build_dir: str) -> dict[str, Any]:
    from embq._compress import l2_normalize_rows
    from embq._manifest import SHARD_DIR
    from embq._quantize import quantize

    shards: list[dict[str, Any]] = []
    builder: _ShardBuilder | None = None
    rows_in = 0
    last_offset = None
    reader = _open_piece(piece, opts)
    try:
        with reader:
            attrs = _source_attrs(piece, reader, opts)
            for block in reader:
                x = block.vectors
                if opts.normalize:
                    x = l2_normalize_rows(x)
                q = quantize(x, n_threads=opts.n_threads)
                if block.offsets is not None and len(x):
                    last_offset = int(block.offsets[-1])
                i = 0
                while i < len(x):
                    if builder is None:
                        rel = f"{SHARD_DIR}/tmp-{piece.index:06d}-{len(shards):05d}.h5"
                        builder = _ShardBuilder(build_dir, rel, opts, attrs)
                    take = len(x) - i
                    if opts.shard_rows is not None:
                        take = min(take, opts.shard_rows - builder.input_rows)
                    sl = slice(i, i + take)
                    builder.add(x[sl], q.codes[sl], q.scales[sl], q.zero_points[sl],
                                None if block.keys is None else block.keys[sl])
                    i += take
                    rows_in += take
                    if opts.shard_rows is not None and builder.input_rows >= opts.shard_rows:
                        shards.append(builder.finish())
                        builder = None
            if builder is not None:
                shards.append(builder.finish())
                builder = None
            fmt, compression, size = reader.format, reader.compression, reader.size
    except BaseException:
        if builder is not None:
            builder.abort()
        raise
    blank_tail = False
    if piece.kind == "bytes":
        end = (piece.start if last_offset is None
               else line_end(piece.path, last_offset, piece.stop))
        blank_tail = end < piece.stop
    return {"index": piece.index, "rows_read": rows_in, "blank_tail": blank_tail,
            "format": fmt, "compression": compression, "size": size, "shards": shards}


# --------------------------------------------------------------------------------------------
# the global pass over keys


def find_duplicates(build_dir: str, shards: Sequence[tuple[str, str, int]], lo: int,
                    hi: int | None) -> list[tuple[int, int, int, int, str]]:
    """Task of round 2: the duplicate keys whose hash is in ``[lo, hi)`` (``hi`` None: no end).

    Parameters
    ----------
    build_dir : str
    shards : sequence of (hash stem, shard path, rows)
        Every shard in input order: its sorted hashes, its file (relative to ``build_dir``)
        and how many of its stored rows count (the rest are past ``limit``).
    lo, hi : int
        The bucket's range of 64-bit hash values.

    Returns
    -------
    list of (shard, row, first shard, first row, key)
        Every occurrence of a key after its first one, with where the first one is.
    """
    from embq._store import open as open_store

    hs, ss, rs = [], [], []
    lo64 = np.uint64(lo)
    for i, (stem, _rel, cutoff) in enumerate(shards):
        base = os.path.join(build_dir, stem)
        h = np.load(base + ".h.npy", mmap_mode="r")
        a = int(np.searchsorted(h, lo64, side="left"))
        z = len(h) if hi is None else int(np.searchsorted(h, np.uint64(hi), side="left"))
        if z <= a:
            continue
        hh = np.array(h[a:z])
        rr = np.array(np.load(base + ".r.npy", mmap_mode="r")[a:z])
        keep = rr < cutoff
        hs.append(hh[keep])
        rs.append(rr[keep])
        ss.append(np.full(int(keep.sum()), i, np.int64))
    if not hs:
        return []
    h = np.concatenate(hs)
    s = np.concatenate(ss)
    r = np.concatenate(rs)
    del hs, ss, rs
    order = np.lexsort((r, s, h))
    h, s, r = h[order], s[order], r[order]
    same = h[1:] == h[:-1]
    if not same.any():
        return []
    # Runs of equal hashes: the keys themselves decide (a 64-bit hash collision is not a
    # duplicate). Within a run, (shard, row) order is input order, so the first wins.
    starts = np.flatnonzero(np.concatenate(([True], ~same)))
    ends = np.concatenate((starts[1:], [len(h)]))
    runs = [(a, b) for a, b in zip(starts.tolist(), ends.tolist()) if b - a > 1]
    need: dict[int, set[int]] = {}
    for a, b in runs:
        for j in range(a, b):
            need.setdefault(int(s[j]), set()).add(int(r[j]))
    keys: dict[tuple[int, int], str] = {}
    for shard, rows in need.items():
        with open_store(os.path.join(build_dir, shards[shard][1])) as st:
            itk = st.index_to_key
            for row in rows:
                keys[shard, row] = itk[row]
    drops = []
    for a, b in runs:
        first: dict[str, tuple[int, int]] = {}
        for j in range(a, b):
            where = (int(s[j]), int(r[j]))
            k = keys[where]
            if k in first:
                drops.append((*where, *first[k], k))
            else:
                first[k] = where
    return drops


def rewrite_shard(build_dir: str, relpath: str, drop_rows: np.ndarray, rows: int,
                  extra_attrs: dict[str, Any], n_threads: int | None) -> dict[str, Any]:
    """Task of round 3: rewrite a shard without ``drop_rows`` and without its rows from ``rows``.

    Returns the new ``uuid`` and ``rows``.
    """
    from embq._manifest import SHARD_UUID_ATTR, new_shard_uuid
    from embq._store import _RESERVED_ATTRS, StoreWriter
    from embq._store import open as open_store

    src = os.path.join(build_dir, relpath)
    dst = src[:-3] + "-rewritten.h5"
    uid = new_shard_uuid()
    with open_store(src) as st:
        keep = np.ones(min(rows, len(st)), np.bool_)
        drop_rows = np.asarray(drop_rows, np.int64)
        keep[drop_rows[drop_rows < len(keep)]] = False
        attrs = {k: v for k, v in st.attrs.items() if k not in _RESERVED_ATTRS}
        attrs.update(extra_attrs)
        attrs[SHARD_UUID_ATTR] = uid
        step = max(1, (8 << 20) // max(st.dim, 1))
        keys = iter(st.index_to_key) if st.has_keys else None
        with StoreWriter(dst, st.dim, has_keys=st.has_keys, attrs=attrs,
                         n_threads=n_threads) as w:
            for a in range(0, len(keep), step):
                b = min(len(keep), a + step)
                m = keep[a:b]
                ks = None
                if keys is not None:
                    ks = [k for k, t in zip(islice(keys, b - a), m.tolist()) if t]
                w.append_quantized(np.asarray(st.codes[a:b])[m], np.asarray(st.scales[a:b])[m],
                                   np.asarray(st.zero_points[a:b])[m], ks)
            n = w.n_rows
    os.replace(dst, src)
    return {"path": relpath, "uuid": uid, "rows": n}


# --------------------------------------------------------------------------------------------
# running tasks


class _Runner:
    """Runs a round of tasks on the Dask client, or here one after the other."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def run(self, fn: Callable, jobs: Sequence[tuple], on_result: Callable | None = None
            ) -> list:
        results: list = [None] * len(jobs)
        if self.client is None:
            for i, args in enumerate(jobs):
                results[i] = fn(*args)
                if on_result is not None:
                    on_result(results[i])
            return results
        from concurrent.futures import CancelledError

        from distributed import KilledWorker, as_completed

        futures = [self.client.submit(fn, *args, pure=False) for args in jobs]
        where = {f.key: i for i, f in enumerate(futures)}
        try:
            for fut in as_completed(futures):
                i = where[fut.key]
                try:
                    results[i] = fut.result()
                except (KilledWorker, CancelledError) as exc:
                    # Not the input's fault: say which task the cluster lost, in one line.
                    raise ChildProcessError(
                        f"the Dask cluster lost the task {fn.__name__}{_brief(jobs[i])} "
                        f"({type(exc).__name__}: {exc})") from None
                if on_result is not None:
                    on_result(results[i])
        except BaseException:
            self.client.cancel(futures)
            raise
        finally:
            del futures
        return results


def _brief(args: tuple) -> str:
    """The task's input, for a message: the piece's file and range, or the bucket."""
    head = args[0]
    if isinstance(head, Piece):
        where = "" if head.kind == "file" else f" {head.kind} {head.start}-{head.stop}"
        return f" for {head.path}{where}"
    return ""


# --------------------------------------------------------------------------------------------
# planning


def _data_start(path: str, fmt: str, encoding: str) -> int:
    """Where the rows of an uncompressed text file begin: after the BOM and the header."""
    from embq._readers import _strip_bom

    with open(path, "rb") as f:
        skip = _strip_bom(f.read(3), encoding)
    if fmt == "glove":
        return skip
    return line_end(path, skip, os.path.getsize(path))


def _split_text(info: _Input, data_start: int, shard_rows: int) -> list[tuple[int, int]]:
    """Byte ranges of about ``_SPLIT_FILL * shard_rows`` rows, each starting at a line start."""
    size = info.size
    if info.count is not None:
        est = info.count
    else:
        with open(info.path, "rb") as f:
            f.seek(data_start)
            sample = f.read(_SCAN_BYTES)
        lines = max(1, sample.count(b"\n"))
        est = (size - data_start) * lines / max(1, len(sample))
    n = max(1, math.ceil(est / (_SPLIT_FILL * shard_rows)))
    cuts = [data_start]
    for k in range(1, n):
        target = data_start + (size - data_start) * k // n
        cut = line_end(info.path, max(target - 1, cuts[-1]), size)
        if cut >= size:
            break
        if cut > cuts[-1]:
            cuts.append(cut)
    cuts.append(size)
    return list(zip(cuts[:-1], cuts[1:]))


def _plan(paths: list[str], *, format: str | None, keys: str | None,
          limit: int | None, encoding: str, unicode_errors: str, shard_rows: int | None,
          block_rows: int | None) -> tuple[list[Piece], list[_Input]]:
    from embq._readers import open_embeddings

    pieces: list[Piece] = []
    infos: list[_Input] = []
    remaining = limit  # rows still wanted (an upper bound once a count is unknown)
    exact = True
    for i, path in enumerate(paths):
        if remaining is not None and remaining <= 0:
            break  # the rows before this input are enough, whatever a GloVe one holds
        if path != "-" and not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        if path == "-" or not os.path.isfile(path):
            raise FormatError("not a regular file: a sharded store is built from files that "
                              "every worker can open (pipes and standard input cannot be "
                              "split or shared)", path=path)
        with open_embeddings(path, format=format, encoding=encoding,
                             unicode_errors=unicode_errors, keys_path=keys,
                             block_rows=block_rows) as r:
            info = _Input(path, r.format, r.compression, r.size, r.dim, r.count,
                          r.line_of_row(0) - 1 if r.format in ("word2vec", "glove") else 0,
                          keys, r.has_keys)
        if infos:
            first = infos[0]
            if info.dim != first.dim:
                raise FormatError(
                    f"rows of {info.dim} values, but {first.path} (the first input) has "
                    f"{first.dim}; every input of one store must have the same dimension",
                    path=path)
            if info.has_keys != first.has_keys:
                keyless = first if info.has_keys else info
                what = ("a .npy array" if keyless.format == "npy"
                        else f"{keyless.format} input")
                raise FormatError(
                    f"{what} without keys cannot be mixed with inputs that have keys "
                    f"({first.path if first.has_keys else path} has keys)", path=path)
        infos.append(info)
        whole = remaining is None or (info.count is not None and remaining >= info.count)
        # Absolute: a task may run in another process, started in another directory.
        kw = {"input_index": i, "path": os.path.abspath(path), "format": info.format,
              "keys_path": os.path.abspath(keys) if keys else None}
        if (shard_rows is not None and whole and exact and info.compression is None
                and info.format == "npy" and info.count > shard_rows):
            for a in range(0, info.count, shard_rows):
                pieces.append(Piece(len(pieces), kind="rows", start=a,
                                    stop=min(info.count, a + shard_rows), **kw))
        elif (shard_rows is not None and whole and exact and info.compression is None
              and info.format in ("word2vec", "glove")):
            start = _data_start(path, info.format, encoding)
            for a, b in _split_text(info, start, shard_rows):
                pieces.append(Piece(len(pieces), kind="bytes", start=a, stop=b,
                                    data_start=start, **kw))
        else:
            pieces.append(Piece(len(pieces), kind="file", limit=remaining, **kw))
        if remaining is not None:
            if info.count is None:
                exact = False
            else:
                remaining -= min(remaining, info.count)
    return pieces, infos


# --------------------------------------------------------------------------------------------
# the driver


def _make_build_dir(output: str) -> str:
    from embq._manifest import SHARD_DIR

    stem = os.path.join(os.path.dirname(output), f".{os.path.basename(output)}.embq-tmp-")
    for _ in range(100):
        d = stem + secrets.token_hex(4)
        try:
            os.mkdir(d, 0o755)
        except FileExistsError:
            continue
        os.mkdir(os.path.join(d, SHARD_DIR))
        os.mkdir(os.path.join(d, _HASH_DIR))
        return d
    raise FileExistsError(errno.EEXIST, "no free temporary name", stem + "*")


def _remove_tree(path: str) -> None:
    # A task cancelled on a worker may still be finishing a file in it: try a few times.
    for _ in range(20):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            return
        time.sleep(0.1)


def _check_output(output: str, overwrite: bool) -> None:
    from embq._manifest import is_sharded

    parent = os.path.dirname(output)
    if not os.path.isdir(parent):
        raise FileNotFoundError(errno.ENOENT, f"the output directory {parent!r} does not exist",
                                output)
    if os.path.lexists(output):
        if not overwrite:
            raise FileExistsError(errno.EEXIST, f"{output!r} already exists; pass "
                                  "overwrite=True to replace it", output)
        if os.path.isdir(output) and not is_sharded(output):
            raise IsADirectoryError(errno.EISDIR, "is a directory that is not a sharded "
                                    "store; it is never replaced, even with overwrite=True",
                                    output)


def publish_directory(build_dir: str, output: str, overwrite: bool) -> None:
    """Rename the finished ``build_dir`` to ``output`` (replacing it when ``overwrite``)."""
    _check_output(output, overwrite)
    old = None
    if os.path.lexists(output):
        old = output + f".embq-old-{secrets.token_hex(4)}"
        os.rename(output, old)
    try:
        os.rename(build_dir, output)
    except BaseException:
        if old is not None:
            os.rename(old, output)
        raise
    if old is not None:
        if os.path.isdir(old) and not os.path.islink(old):
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.unlink(old)
    fd = os.open(os.path.dirname(output), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _merge_stats(parts: Sequence[Any]):
    """One :class:`~embq._recon.ReconstructionStats` adding up those of the shards."""
    from embq._recon import ReconstructionStats

    total = ReconstructionStats()
    for p in parts:
        total.merge(p)
    return total


def _describe(infos: list[_Input], i: int, file_row: int) -> str:
    """Where row ``file_row`` of input ``i`` is, for messages: ``"line 17 of a.txt"``."""
    info = infos[i]
    path = info.path
    if sum(x.path == path for x in infos) > 1:
        path += f" (input {i + 1})"
    if info.format in ("word2vec", "glove"):
        return f"line {file_row + 1 + info.header_lines} of {path}"
    if info.format == "word2vec-binary":
        return f"record {file_row + 1} of {path}"
    return f"row {file_row} of {path}" + (
        f" (line {file_row + 1} of {info.keys_path})" if info.keys_path else "")


def _check_files(pieces: list[Piece], infos: list[_Input], results: list[dict],
                 file_row0: list[int]) -> None:
    """What one reader checks at the end of a file, for the files read in several pieces."""
    by_input: dict[int, list[int]] = {}
    for p in pieces:
        if p.kind == "bytes":
            by_input.setdefault(p.input_index, []).append(p.index)
    for i, idx in by_input.items():
        info = infos[i]
        for k, j in enumerate(idx):
            if results[j]["blank_tail"] and any(results[m]["rows_read"] for m in idx[k + 1:]):
                row = file_row0[j] + results[j]["rows_read"]
                raise FormatError(
                    f"empty line; expected a key followed by {info.dim:,} values (blank lines "
                    "are allowed only at the end of the file)", path=info.path,
                    line=row + 1 + info.header_lines)
        total = sum(results[j]["rows_read"] for j in idx)
        if info.count is not None and total != info.count:
            if total < info.count:
                raise FormatError(
                    f"the header (line 1) announces {info.count:,} rows but the file ends "
                    f"after {total:,}; the file may be truncated (use --limit {total} to read "
                    "only the rows present)", path=info.path, line=total + 2)
            raise FormatError(
                f"the header (line 1) announces {info.count:,} rows but the file has more "
                f"rows; fix the header count, or use --limit {info.count} to read only the "
                "announced rows", path=info.path, line=info.count + 2)


def compress_sharded(
    paths: Sequence[str],
    output: str | os.PathLike,
    options: CompressOptions,
    *,
    shard_rows: int | None = None,
    client: Any = None,
) -> dict[str, Any]:
    """The sharded path of :func:`embq.compress` (which documents the parameters and checks
    ``options``): ``paths`` are the inputs, in order (at least one)."""
    from embq._manifest import entry_for, shard_name, write_manifest
    from embq._reshard import sharded_sketch_nbytes

    if shard_rows is not None and (isinstance(shard_rows, bool) or
                                   not isinstance(shard_rows, (int, np.integer))
                                   or shard_rows < 1):
        raise ValueError(f"shard_rows must be a positive number of rows or None, got "
                         f"{shard_rows!r}")
    if options.keys is not None and len(paths) > 1:
        raise ValueError("keys= names the keys of one .npy input; with several inputs, "
                         "give each .npy array its own store or a text file with keys")
    out = os.path.abspath(os.fspath(output))
    _check_output(out, options.overwrite)
    t0 = time.perf_counter()
    keys = None if options.keys is None else os.fspath(options.keys)
    pieces, infos = _plan(paths, format=options.format, keys=keys, limit=options.limit,
                          encoding=options.encoding, unicode_errors=options.unicode_errors,
                          shard_rows=None if shard_rows is None else int(shard_rows),
                          block_rows=options.block_rows)
    dim = infos[0].dim
    has_keys = infos[0].has_keys
    opts = Options(dim=dim, has_keys=has_keys,
                   shard_rows=None if shard_rows is None else int(shard_rows),
                   encoding=options.encoding, unicode_errors=options.unicode_errors,
                   normalize=bool(options.normalize), block_rows=options.block_rows,
                   n_threads=(options.n_threads if options.n_threads is not None or client is None
                              else 1),
                   limit=options.limit)
    runner = _Runner(client)
    build = _make_build_dir(out)
    bar = None
    try:
        known = [x.count for x in infos]
        total = None if None in known else sum(known)
        if total is not None and options.limit is not None:
            total = min(total, options.limit)
        if options.progress:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="rows", unit_scale=True, file=sys.stderr,
                       desc=os.path.basename(out), dynamic_ncols=True, leave=False)

        def advance(res: dict) -> None:
            if bar is not None:
                bar.update(res["rows_read"])

        results = runner.run(read_piece, [(p, opts, build) for p in pieces], advance)
        summary = _finish(pieces, infos, results, opts, build, runner, options.limit,
                          options.on_duplicate)
        if summary["rows"] == 0:
            raise FormatError("the inputs hold no rows; nothing to compress", path=paths[0])
        final = summary.pop("final")
        names = [shard_name(i) for i in range(len(final))]
        for name, (rel, _rows) in zip(names, final):
            os.rename(os.path.join(build, rel), os.path.join(build, name))
        if options.sketch:
            _sketch_shards(build, names, runner, opts.n_threads)
        entries = []
        offset = 0
        for name, (_rel, rows) in zip(names, final):
            entries.append(entry_for(build, name, rows=rows, offset=offset))
            offset += rows
        shutil.rmtree(os.path.join(build, _HASH_DIR))
        write_manifest(build, dim=dim, has_keys=has_keys, shards=entries,
                       sketch=bool(options.sketch))
        output_size = sum(e.bytes for e in entries)
        publish_directory(build, out, options.overwrite)
    except BaseException:
        _remove_tree(build)
        raise
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    dups = summary["duplicates"]
    if dups:
        key, where, first = summary["first_duplicate"]
        options.warn(f"{dups:,} duplicate key{'s' if dups != 1 else ''} in the inputs; kept the "
                     f"first occurrence of each (the first duplicate is {key!r} on {where}, "
                     f"first seen on {first}; use --on-duplicate error to fail instead)")
    input_size = sum(x.size for x in infos)
    formats = sorted({x.format for x in infos})
    rows = summary["rows"]
    return {
        "input": paths,
        "output": out,
        "format": formats[0] if len(formats) == 1 else "+".join(formats),
        "rows": rows,
        "rows_read": summary["rows_read"],
        "dim": dim,
        "shards": len(entries),
        "input_size": input_size,
        "output_size": output_size,
        "ratio": input_size / output_size if output_size else math.nan,
        "ratio_vs_float32": rows * dim * 4 / output_size if output_size else math.nan,
        "seconds": seconds,
        "duplicates": dups,
        "first_duplicate": (summary["first_duplicate"][:2] if dups else None),
        "normalized": bool(options.normalize),
        "sketch_bytes": (sharded_sketch_nbytes([e.rows for e in entries], dim)
                         if options.sketch else 0),
        **summary["figures"],
    }


def _sketch_shards(build: str, names: list[str], runner: _Runner,
                   n_threads: int | None) -> None:
    """Give every finished shard the sketch of the whole store: the center over all the
    shards' rows (read here, block by block, as one store's writer reads its rows), then one
    task per shard writing its rows' bits against it."""
    from embq._reshard import global_center, write_shard_sketch
    from embq._store import open as open_store

    paths = [os.path.join(build, name) for name in names]
    stores = []
    try:
        for path in paths:
            stores.append(open_store(path))
        center = global_center(stores, n_threads=n_threads)
    finally:
        for st in stores:
            st.close()
    runner.run(write_shard_sketch, [(path, center, n_threads) for path in paths])


def _finish(pieces: list[Piece], infos: list[_Input], results: list[dict], opts: Options,
            build: str, runner: _Runner, limit: int | None, on_duplicate: str
            ) -> dict[str, Any]:
    """Rounds 2 and 3: checks over whole files, the limit, duplicates, rewrites."""
    from embq._source import SOURCE_DUPLICATES, SOURCE_ROWS

    file_row0 = []
    seen: dict[int, int] = {}
    for p, res in zip(pieces, results):
        start = p.start if p.kind == "rows" else seen.get(p.input_index, 0)
        file_row0.append(start)
        seen[p.input_index] = start + res["rows_read"]
    _check_files(pieces, infos, results, file_row0)

    # Every shard in input order: (piece, file row of its first input row, result).
    shards = []
    for p, res, row0 in zip(pieces, results, file_row0):
        for sh in res["shards"]:
            shards.append((p, row0, sh))
            row0 += sh["input_rows"]
    # The limit counts input rows, duplicates included, as one compress does.
    cut_input, left = [], limit
    for _p, _row0, sh in shards:
        n = sh["input_rows"] if left is None else min(left, sh["input_rows"])
        cut_input.append(n)
        if left is not None:
            left -= n
    cut_rows = [n - int(np.searchsorted(sh["drops"], n)) for n, (_, _, sh)
                in zip(cut_input, shards)]

    cross: dict[int, list[tuple[int, int, int, str]]] = {}
    if opts.has_keys and len(shards) > 1:
        total = sum(cut_rows)
        n_buckets = max(1, math.ceil(total / _BUCKET_ROWS))
        bounds = [(b << 64) // n_buckets for b in range(n_buckets)] + [None]
        spec = [(sh["hashes"], sh["path"], c) for (_, _, sh), c in zip(shards, cut_rows)]
        found = runner.run(find_duplicates, [(build, spec, bounds[b], bounds[b + 1])
                                             for b in range(n_buckets)])
        for drops in found:
            for s, r, fs, fr, k in drops:
                cross.setdefault(s, []).append((r, fs, fr, k))

    def where(s: int, local_input_row: int) -> str:
        p, row0, _sh = shards[s]
        return _describe(infos, p.input_index, row0 + local_input_row)

    # The first duplicate in input order: within a shard, or of a key of an earlier shard.
    first = None  # (shard, input row, key, first shard, first input row)
    dups = 0
    for s, (_p, _row0, sh) in enumerate(shards):
        within = sh["drops"][sh["drops"] < cut_input[s]]
        dups += len(within)
        cand = []
        if len(within):
            key, row, first_row = sh["first_dup"]
            cand.append((row, key, s, first_row))
        for r, fs, fr, k in cross.get(s, []):
            dups += 1
            cand.append((_input_row(r, sh["drops"]), k, fs,
                         _input_row(fr, shards[fs][2]["drops"])))
        if cand and first is None:
            row, key, fs, fr = min(cand)
            first = (s, row, key, fs, fr)
    if first is not None and on_duplicate == "error":
        s, row, key, fs, fr = first
        p, row0, _sh = shards[s]
        info = infos[p.input_index]
        line = row0 + row + 1 + info.header_lines if info.format in ("word2vec", "glove") \
            else None
        raise FormatError(
            f"duplicate key {key!r} on {where(s, row)}, first seen on {where(fs, fr)}; keys "
            "must be unique (use --on-duplicate warn to keep the first occurrence)",
            path=info.path, line=line)

    jobs, final_rows = [], []
    for s, (_p, _row0, sh) in enumerate(shards):
        drop = sorted(r for r, *_ in cross.get(s, []))
        rows = cut_rows[s] - len(drop)
        final_rows.append(rows)
        if rows and (drop or cut_rows[s] < sh["rows"]):
            extra = {SOURCE_ROWS: np.int64(cut_input[s]),
                     SOURCE_DUPLICATES: np.int64(
                         int((sh["drops"] < cut_input[s]).sum()) + len(drop))}
            jobs.append((build, sh["path"], np.asarray(drop, np.int64), cut_rows[s], extra,
                         opts.n_threads))
        elif not rows:
            os.unlink(os.path.join(build, sh["path"]))
    if jobs:
        runner.run(rewrite_shard, jobs)
    figures = _merge_stats([sh["stats"] for _, _, sh in shards]).result()
    return {
        "final": [(sh["path"], n) for (_, _, sh), n in zip(shards, final_rows) if n],
        "rows": sum(final_rows),
        "rows_read": sum(cut_input),
        "duplicates": dups,
        "first_duplicate": (None if first is None else
                            (first[2], where(first[0], first[1]), where(first[3], first[4]))),
        "figures": figures,
    }
