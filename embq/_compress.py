"""Compress an embedding file into a store, streaming: read a block, quantize it, append it.

Memory stays bounded by the block size (never the whole float matrix), and a failure at any
point leaves no file at the output path (an existing one is untouched): the store is written
to a temporary file renamed into place at the end (see :class:`embq._store.StoreWriter`).
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from embq._errors import DuplicateKeyError, FormatError
from embq._source import NORMALIZED, source_attributes

__all__ = ["compress"]

ON_DUPLICATE = ("warn", "error")


@dataclass(frozen=True)
class CompressOptions:
    """The options every compress takes, one store or sharded (:func:`compress` documents
    them), checked once, here.  The sharded path (:mod:`embq._dist_compress`) receives them
    as this object."""

    format: str | None
    keys: str | os.PathLike | None
    limit: int | None
    encoding: str
    unicode_errors: str
    on_duplicate: str
    normalize: bool
    overwrite: bool
    block_rows: int | None
    progress: bool
    n_threads: int | None
    warn: Callable[[str], None]
    sketch: bool

    def __post_init__(self) -> None:
        if self.on_duplicate not in ON_DUPLICATE:
            raise ValueError(f"on_duplicate must be 'warn' or 'error', got "
                             f"{self.on_duplicate!r}")
        limit = self.limit
        if limit is not None and (isinstance(limit, bool) or
                                  not isinstance(limit, (int, np.integer)) or limit < 1):
            raise ValueError(f"limit must be a positive number of rows or None, got {limit!r}")


def l2_normalize_rows(x: np.ndarray) -> np.ndarray:
    """What ``--normalize`` does to a block of rows before quantizing: float64 norms of the
    float32 rows, each nonzero row divided in float64 and rounded to float32 (zero rows stay
    zero).  ``embq evaluate --against`` applies it to the original too, bit for bit."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    nz = norms > 0
    out = x.astype(np.float32, copy=True)
    out[nz] = (x[nz] / norms[nz, None]).astype(np.float32)
    return out


def _progress_bar(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total or None, unit="B", unit_scale=True, unit_divisor=1000,
                file=sys.stderr, desc=desc, dynamic_ncols=True, leave=False)


def compress(
    input: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    shard_rows: int | None = None,
    client: Any = None,
    format: str | None = None,
    keys: str | os.PathLike | None = None,
    limit: int | None = None,
    encoding: str = "utf8",
    unicode_errors: str = "strict",
    on_duplicate: str = "warn",
    normalize: bool = False,
    overwrite: bool = False,
    block_rows: int | None = None,
    progress: bool = False,
    n_threads: int | None = None,
    warn: Callable[[str], None] | None = None,
    tensor: str | None = None,
    array: str | None = None,
    vector_column: str | None = None,
    key_column: str | None = None,
    sketch: bool = True,
) -> dict[str, Any]:
    """Read an embedding file (or several) and write a quantized store.

    Parameters
    ----------
    input : str or os.PathLike, or a sequence of them
        Embedding file: word2vec text or binary, GloVe, fastText ``.vec``, ``.npy``, possibly
        gzip/bz2/xz compressed (see :mod:`embq._readers`). Pipes work (``/dev/stdin``, or
        ``"-"`` for standard input). Several files (formats may differ, the dimension may
        not) make a sharded store of their rows in input order, then file order; so do
        ``shard_rows`` and ``client`` (see :mod:`embq._dist_compress`).
    output : str or os.PathLike
        Store to write: a file, or for a sharded store a directory (``shards/`` and
        ``manifest.json``). Its parent directory must exist.
    shard_rows : int, optional
        Write a sharded store whose shards hold at most this many rows; uncompressed text
        and ``.npy`` inputs larger than that are split at row boundaries and read in
        parallel. Without it, each input is one shard.
    client : distributed.Client, optional
        Run the sharded build on this Dask cluster (every worker must see the input and
        output paths). Without it the same tasks run in this process, one after the other.
    format : str, optional
        Force the input format instead of detecting it.
    keys : str or os.PathLike, optional
        For ``.npy``, ``.npz`` and safetensors input: a file with one key per line, or a
        Hugging Face ``tokenizer.json``.
    limit : int, optional
        Compress only the first ``limit`` rows.
    encoding, unicode_errors : str
        How keys are decoded (see :func:`embq._readers.open_embeddings`).
    on_duplicate : {"warn", "error"}
        A repeated key: keep the first occurrence and warn once with the count (``"warn"``),
        or fail naming the key and both lines (``"error"``).
    normalize : bool
        L2-normalize every nonzero row before quantizing.
    overwrite : bool
        Replace an existing ``output``.
    block_rows : int, optional
        Rows per block (default: up to 8192, about 16 MB of floats).
    progress : bool
        Show a tqdm progress bar on stderr.
    n_threads : int, optional
        Threads for quantization.
    warn : callable, optional
        Receives warning messages; by default they are issued with :func:`warnings.warn`.
    tensor, array, vector_column, key_column : str, optional
        Which tensor of a safetensors file, array of a ``.npz``, and columns of Parquet or
        Arrow input to read (see :func:`embq._readers.open_embeddings`).
    sketch : bool, default True
        Write the sign-bit sketch for ``prefilter="sketch"`` searches (``ceil(dim/8)`` bytes
        per row, computed after the last row in two passes over the written codes). A sharded
        store gets the sketch of all its rows: one center over every shard, then each
        shard's bits (see "Sharded store" in docs/format.md).

    Returns
    -------
    dict
        Summary: ``rows``, ``dim``, ``input_size``, ``output_size``, ``ratio``,
        ``ratio_vs_float32``, ``seconds``, ``duplicates``, ``first_duplicate``, the
        reconstruction figures of :class:`embq._recon.ReconstructionStats`, and more.

    Raises
    ------
    FormatError
        Bad input, naming the file, line (or byte offset) and what was expected.
    embq._errors.OutputExistsError
        Output exists and ``overwrite`` is false (a ``FileExistsError``; checked before the
        input is read and again when the finished store is moved into place).
    FileNotFoundError, IsADirectoryError, OSError
        The output's directory is missing, the output is a directory, or the input is
        unreadable.
    """
    if warn is None:
        def warn(msg: str) -> None:
            warnings.warn(msg, UserWarning, stacklevel=4)

    opts = CompressOptions(
        format=format, keys=keys, limit=limit, encoding=encoding, unicode_errors=unicode_errors,
        on_duplicate=on_duplicate, normalize=normalize, overwrite=overwrite,
        block_rows=block_rows, progress=progress, n_threads=n_threads, warn=warn, sketch=sketch)
    if shard_rows is not None or client is not None or not isinstance(input, (str, os.PathLike)):
        parts = {"tensor": tensor, "array": array, "vector_column": vector_column,
                 "key_column": key_column}
        given = [f"{name}=" for name, value in parts.items() if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} pick{'s' if len(given) == 1 else ''} a part of "
                             "one input; a sharded compress (several inputs, shard_rows or "
                             "client) reads each input's default part")
        paths = [os.fspath(p) for p in input] if not isinstance(input, (str, os.PathLike)) \
            else [os.fspath(input)]
        if not paths:
            raise ValueError("no input given; pass one embedding file or a list of them")
        if len(paths) > 1 or shard_rows is not None or client is not None:
            from embq._dist_compress import compress_sharded

            return compress_sharded(paths, output, opts, shard_rows=shard_rows, client=client)
        input = paths[0]   # a list of one input, without shard_rows or client: one store
    return _compress_one(input, output, opts, tensor=tensor, array=array,
                         vector_column=vector_column, key_column=key_column)


def _compress_one(input: str | os.PathLike, output: str | os.PathLike, opts: CompressOptions,
                  **parts: str | None) -> dict[str, Any]:
    """:func:`compress` of one input into one store file."""
    from embq._publish import check_destination
    from embq._quantize import quantize
    from embq._readers import open_embeddings
    from embq._recon import ReconstructionStats
    from embq._sketch import sketch_nbytes
    from embq._store import StoreWriter

    in_path = os.fspath(input)
    out_path = os.fspath(output)
    t0 = time.perf_counter()
    # The same check the store writer makes, done here before the input is even opened.
    check_destination(out_path, opts.overwrite)
    stats = ReconstructionStats()
    duplicates = 0
    first_dup: tuple[str, str] | None = None
    with open_embeddings(in_path, format=opts.format, limit=opts.limit, encoding=opts.encoding,
                         unicode_errors=opts.unicode_errors, keys_path=opts.keys,
                         block_rows=opts.block_rows, **parts) as reader:
        has_keys = reader.has_keys
        bar = _progress_bar(opts.progress, reader.size, os.path.basename(in_path))
        done_bytes = 0
        try:
            with StoreWriter(out_path, reader.dim, has_keys=has_keys, overwrite=opts.overwrite,
                             n_threads=opts.n_threads, sketch=opts.sketch) as writer:
                for block in reader:
                    x = block.vectors
                    if opts.normalize:
                        x = l2_normalize_rows(x)
                    q = quantize(x, n_threads=opts.n_threads)
                    try:
                        mask = writer.append_quantized(
                            q.codes, q.scales, q.zero_points, block.keys,
                            on_duplicate="error" if opts.on_duplicate == "error" else "skip",
                        )
                    except DuplicateKeyError as exc:
                        # No row was ever skipped in this mode, so store rows are file rows.
                        file_row = exc.index
                        in_block = file_row - (reader.rows_read - len(x))
                        offset = (int(block.offsets[in_block])
                                  if block.offsets is not None and 0 <= in_block < len(x)
                                  else None)
                        raise FormatError(
                            f"duplicate key {exc.key!r} on {reader.describe_row(file_row)}, "
                            f"first seen on {reader.describe_row(exc.first_index)}; keys must "
                            "be unique (use --on-duplicate warn to keep the first occurrence)",
                            path=reader.path, line=(reader.line_of_row(file_row)
                                                    if reader.format in ("word2vec", "glove")
                                                    else None),
                            offset=offset,
                        ) from None
                    if mask.all():
                        stats.update(x, q.codes, q.scales, q.zero_points)
                    else:
                        dropped = np.flatnonzero(~mask)
                        if first_dup is None:
                            i = int(dropped[0])
                            first_dup = (block.keys[i],
                                         reader.describe_row(reader.rows_read - len(x) + i))
                        duplicates += len(dropped)
                        stats.update(x[mask], q.codes[mask], q.scales[mask], q.zero_points[mask])
                    if bar is not None:
                        now = reader.bytes_read
                        bar.update(now - done_bytes)
                        done_bytes = now
                        el = max(time.perf_counter() - t0, 1e-9)
                        bar.set_postfix_str(f"{writer.n_rows:,} rows, {writer.n_rows / el:,.0f} "
                                            "rows/s", refresh=False)
                if writer.n_rows == 0:
                    raise FormatError(
                        "the file holds no rows (the header announces 0); nothing to compress"
                        if reader.format in ("word2vec", "glove", "word2vec-binary")
                        else "the array has no rows; nothing to compress", path=reader.path)
                rows, dim = writer.n_rows, writer.dim
                figures = stats.result()
                writer.attrs.update(source_attributes(
                    reader, in_path, keys=opts.keys, limit=opts.limit, encoding=opts.encoding,
                    unicode_errors=opts.unicode_errors, duplicates=duplicates))
                writer.attrs[NORMALIZED] = np.bool_(opts.normalize)
                writer.attrs.update({k: np.float64(v) for k, v in figures.items()})
        finally:
            if bar is not None:
                bar.close()
        input_size = reader.size
        rows_read = reader.rows_read
        fmt = reader.format
        src = reader.path
    seconds = time.perf_counter() - t0
    output_size = os.path.getsize(out_path)
    if duplicates:
        key, where = first_dup
        opts.warn(f"{duplicates:,} duplicate key{'s' if duplicates != 1 else ''} in {src}; kept "
             f"the first occurrence of each (the first duplicate is {key!r} on {where}; use "
             "--on-duplicate error to fail instead)")
    float_bytes = rows * dim * 4
    return {
        "input": in_path,
        "output": out_path,
        "format": fmt,
        "rows": rows,
        "rows_read": rows_read,
        "dim": dim,
        "input_size": input_size,
        "output_size": output_size,
        "ratio": input_size / output_size if output_size else math.nan,
        "ratio_vs_float32": float_bytes / output_size if output_size else math.nan,
        "seconds": seconds,
        "duplicates": duplicates,
        "first_duplicate": first_dup,
        "normalized": bool(opts.normalize),
        "sketch_bytes": sketch_nbytes(rows, dim) if opts.sketch else 0,
        **figures,
    }
