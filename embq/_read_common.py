"""What the readers of matrix-shaped formats share: the reader interface, blocks, widening.

The readers of safetensors (:mod:`embq._read_safetensors`), ``.npz``
(:mod:`embq._read_npz`) and Parquet/Arrow (:mod:`embq._read_arrow`) behave towards
:func:`embq._compress.compress` and ``embq evaluate`` exactly like
:class:`embq._readers.EmbeddingReader`: the same attributes (``path``, ``format``,
``compression``, ``dim``, ``count``, ``size``, ``rows_read``, ``limit``, ``keys_path``,
``bytes_read``), the same :class:`~embq._readers.Block` objects, ``describe_row`` and
``line_of_row`` for messages, ``close()`` and the context manager. Every block holds float32
rows: float16 and bfloat16 are widened exactly, float64 and integers rounded to float32 as for
``.npy`` (a value outside the float32 range is an error, like NaN and Inf).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from embq._errors import FormatError

__all__ = ["MatrixReader", "check_limit", "plural", "to_float32_rows", "widen_bfloat16"]

#: Bytes of float32 per block when the caller does not choose the rows per block (as for the
#: text and .npy readers: about 16 MB).
BLOCK_FLOAT_BYTES = 16 << 20


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def check_limit(limit: int | None, block_rows: int | None) -> int | None:
    """Validate ``limit`` and ``block_rows`` as :func:`embq._readers.open_embeddings` does."""
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
            raise ValueError(f"limit must be a positive number of rows or None, got {limit!r}")
        limit = int(limit)
    if block_rows is not None and (isinstance(block_rows, bool)
                                   or not isinstance(block_rows, (int, np.integer))
                                   or block_rows < 1):
        raise ValueError(f"block_rows must be a positive number of rows, got {block_rows!r}")
    return limit


def widen_bfloat16(bits: np.ndarray) -> np.ndarray:
    """bfloat16 values (their raw ``uint16`` bits) as float32, exactly.

    bfloat16 is the upper half of a float32, so shifting the bits 16 places left gives the
    same number; no rounding happens.
    """
    out = bits.astype(np.uint32)
    out <<= 16
    return out.view(np.float32)


def to_float32_rows(chunk: np.ndarray, first_row: int, where: str, path: str,
                    describe=None, copy: bool = True) -> np.ndarray:
    """``chunk`` (rows of any float or integer dtype) as a C-contiguous float32 array.

    With ``copy`` (the default) the result never shares memory with ``chunk`` (which may be
    a view of a mapped file); ``copy=False`` is for a chunk already owned by the caller.

    A row holding NaN, Inf or a value outside the float32 range is a :class:`FormatError`
    naming the row (``describe(row)``, default ``"row N"``) and ``where`` (the tensor or the
    column).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        vectors = (np.array(chunk, dtype=np.float32, order="C", copy=True) if copy
                   else np.ascontiguousarray(chunk, dtype=np.float32))
    finite = np.isfinite(vectors).all(axis=1) if vectors.size else np.ones(len(vectors), bool)
    if not finite.all():
        i = int(np.argmin(finite))
        bad = chunk[i][~np.isfinite(vectors[i])][0]
        bad = float(bad) if chunk.dtype.kind == "f" else int(bad)
        row = first_row + i
        name = describe(row) if describe is not None else f"row {row:,}"
        raise FormatError(
            f"{name} of {where} holds {bad!r}, which is NaN, Inf or outside the float32 range; "
            "expected finite values", path=path)
    return vectors


class MatrixReader:
    """Common part of the readers of matrix-shaped inputs; subclasses provide ``_rows()``.

    ``_rows(start, stop)`` returns the float32 rows ``start:stop`` (and may raise
    :class:`FormatError` naming a row). Keys come from ``self._keys`` (an object with
    ``take(first_row, n)`` and ``finish(rows_read, whole)``, see :mod:`embq._keys`) or from
    the subclass overriding ``_blocks()``.
    """

    compression: str | None = None

    def __init__(self, path: str, fmt: str, limit: int | None, block_rows: int | None) -> None:
        self.path = path
        self.format = fmt
        self.limit = check_limit(limit, block_rows)
        self._block_rows_arg = block_rows
        self.rows_read = 0
        self.count: int | None = None
        self.dim = 0
        self.keys_path: str | None = None
        self._keys = None
        self._closed = False
        self._iterated = False
        self._size = 0

    def _set_block_rows(self) -> None:
        if self._block_rows_arg is None:
            self.block_rows = int(max(1, min(8192, BLOCK_FLOAT_BYTES // (4 * max(self.dim, 1)))))
        else:
            self.block_rows = int(self._block_rows_arg)

    @property
    def has_keys(self) -> bool:
        """Whether the blocks carry keys (a keys file or a key column)."""
        return self._keys is not None

    @property
    def size(self) -> int:
        """Bytes of the input on disk (all its files)."""
        return self._size

    @property
    def bytes_read(self) -> int:
        """Bytes of the input consumed so far, in proportion to the rows read."""
        if self._closed or not self.count:
            return self.size
        return int(self.size * min(1.0, self.rows_read / self.count))

    def line_of_row(self, row: int) -> int:
        """1-based line of row ``row`` in the keys file (the row number plus one)."""
        return row + 1

    def describe_row(self, row: int) -> str:
        """Where row ``row`` lives, for messages."""
        return f"row {row:,}" + (f" (line {row + 1:,} of {self.keys_path})"
                                 if self.keys_path else "")

    def _target_rows(self) -> int:
        return self.count if self.limit is None else min(self.limit, self.count)

    def __iter__(self) -> Iterator:
        if self._closed:
            raise ValueError(f"I/O operation on a closed reader ({self.path})")
        if self._iterated:
            raise ValueError("a reader can be iterated only once; open the file again")
        self._iterated = True
        return self._blocks()

    def _blocks(self) -> Iterator:
        from embq._readers import Block

        target = self._target_rows()
        while self.rows_read < target:
            r0 = self.rows_read
            n = min(self.block_rows, target - r0)
            vectors = self._rows(r0, r0 + n)
            keys = self._keys.take(r0, n) if self._keys is not None else None
            self.rows_read += n
            yield Block(keys, vectors, r0 + 1, None)
        if self.rows_read == self.count:
            self._at_end()
        if self._keys is not None:
            self._keys.finish(self.rows_read, whole=self.rows_read == self.count)

    def _at_end(self) -> None:
        """Checks once every row was read (nothing to check by default)."""

    def _rows(self, start: int, stop: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _close(self) -> None:
        """Release what the subclass holds (called once)."""

    def close(self) -> None:
        """Close the files (calling it twice is fine)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._close()
        finally:
            if self._keys is not None:
                self._keys.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"<{type(self).__name__} {self.path!r} format={self.format} dim={self.dim} "
                f"count={self.count} ({state})>")


def file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
