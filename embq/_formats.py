"""The matrix and columnar input formats: detection from the content, and opening them.

:func:`embq._readers.open_embeddings` hands these formats here:

* ``"safetensors"``: an 8-byte little-endian header length, then ``{`` (:mod:`._read_safetensors`);
* ``"npz"``: a zip archive (``PK``) of ``.npy`` members (:mod:`._read_npz`);
* ``"parquet"`` (``PAR1``), ``"arrow"`` (an Arrow IPC file or Feather v2, ``ARROW1``),
  ``"arrow-stream"`` (``0xFFFFFFFF`` then a length), ``"hf-dataset"`` (a folder written by
  ``datasets``' ``save_to_disk``); a directory or a glob of Parquet files is ``"parquet"``
  (:mod:`._read_arrow`).

Which options apply where: ``tensor`` (safetensors), ``array`` (npz), ``keys_path`` (safetensors
and npz, and ``.npy`` in :mod:`._readers`; a tokenizer.json is accepted, see :mod:`._keys`),
``vector_column`` and ``key_column`` (Parquet and Arrow). An option given for a format that
does not use it is an error, never silently ignored.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator

from embq._errors import FormatError
from embq._read_common import MatrixReader

__all__ = ["MATRIX_FORMATS", "OPTION_FORMATS", "KeysAttached", "open_matrix", "sniff_format"]

MATRIX_FORMATS = ("safetensors", "npz", "parquet", "arrow", "arrow-stream", "hf-dataset")
_ARROW = ("parquet", "arrow", "arrow-stream", "hf-dataset")
#: The formats each option applies to (``keys_path`` also to ``npy``, read elsewhere).
OPTION_FORMATS = {
    "tensor": ("safetensors",),
    "array": ("npz",),
    "keys_path": ("npy", "npz", "safetensors"),
    "vector_column": _ARROW,
    "key_column": _ARROW,
}
_FLAGS = {"tensor": "--tensor", "array": "--array", "keys_path": "--keys",
          "vector_column": "--vector-column", "key_column": "--key-column"}
_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"


def sniff_format(path: str) -> str | None:
    """The format of ``path`` when it is one of :data:`MATRIX_FORMATS`, else None.

    Only regular files, directories and globs are looked at (never a pipe, which could not be
    read again).
    """
    from embq._read_arrow import arrow_format_of, is_dataset_dir, resolve_parts
    from embq._read_safetensors import looks_like_safetensors

    if path == "-":
        return None
    if os.path.isdir(path):
        return resolve_parts(path)[0] if is_dataset_dir(path) else None
    if not os.path.exists(path) and any(c in path for c in "*?["):
        # A pattern: Parquet files when it matches some, or names them (else: no such file).
        return "parquet" if glob.glob(path) or path.endswith(".parquet") else None
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as fh:
        head = fh.read(16)
    kind = arrow_format_of(head)
    if kind is not None:
        return kind
    if head.startswith((_ZIP_MAGIC, _EMPTY_ZIP_MAGIC)):
        return "npz"
    if looks_like_safetensors(head):
        return "safetensors"
    return None


def check_options(fmt: str, path: str, options: dict) -> None:
    """A :class:`FormatError` naming ``path`` for an option given that ``fmt`` does not use.

    A content problem (the file is not what the option expects), so it names the file like
    every other.
    """
    for name, value in options.items():
        if value is not None and fmt not in OPTION_FORMATS[name]:
            users = ", ".join("." + f if f in ("npy", "npz") else f for f in OPTION_FORMATS[name])
            what = "a keys file" if name == "keys_path" else name
            hint = ("; the keys come from a column: pass key_column (--key-column)"
                    if name == "keys_path" and fmt in _ARROW else "")
            raise FormatError(f"{what} ({_FLAGS[name]}) is only used with {users} input; this "
                              f"file is {fmt}{hint}", path=path)


def open_matrix(path: str, fmt: str, *, limit: int | None = None,
                block_rows: int | None = None, encoding: str = "utf8",
                unicode_errors: str = "strict", keys_path: str | None = None,
                tensor: str | None = None, array: str | None = None,
                vector_column: str | None = None,
                key_column: str | None = None) -> MatrixReader:
    """Open ``path`` as ``fmt`` (one of :data:`MATRIX_FORMATS`) for reading in blocks."""
    check_options(fmt, path, {"tensor": tensor, "array": array, "keys_path": keys_path,
                              "vector_column": vector_column, "key_column": key_column})
    if path == "-":
        raise ValueError(f"{fmt} input must be a file (it is read out of order), not standard "
                         "input")
    if fmt == "safetensors":
        from embq._read_safetensors import SafetensorsReader

        return SafetensorsReader(path, tensor=tensor, limit=limit, keys_path=keys_path,
                                 encoding=encoding, unicode_errors=unicode_errors,
                                 block_rows=block_rows)
    if fmt == "npz":
        from embq._read_npz import NpzReader

        return NpzReader(path, array=array, limit=limit, keys_path=keys_path,
                         encoding=encoding, unicode_errors=unicode_errors,
                         block_rows=block_rows)
    from embq._read_arrow import ArrowReader

    return ArrowReader(path, format=fmt, vector_column=vector_column, key_column=key_column,
                       limit=limit, block_rows=block_rows)


class KeysAttached:
    """A reader of keyless rows (a ``.npy``) with the keys of :mod:`embq._keys` attached.

    Everything but the keys is the inner reader's: attributes are looked up there.
    """

    def __init__(self, inner, keys_path: str, *, encoding: str = "utf8",
                 unicode_errors: str = "strict") -> None:
        from embq._keys import open_keys

        self._inner = inner
        self.keys_path = os.fspath(keys_path)
        try:
            self._keys = open_keys(self.keys_path, inner.count, inner.path, encoding=encoding,
                                   unicode_errors=unicode_errors)
        except BaseException:
            inner.close()
            raise

    has_keys = True

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    @property
    def rows_read(self) -> int:
        """Rows yielded so far (the inner reader's count)."""
        return self._inner.rows_read

    @rows_read.setter
    def rows_read(self, row: int) -> None:
        # A sharded compress starts a reader at a row of a mapped .npy (embq._dist_compress).
        self._inner.rows_read = row

    def skip_keys(self, n: int) -> None:
        """Pass over the keys of the first ``n`` rows (with ``rows_read = n``)."""
        self._keys.skip(n)

    def describe_row(self, row: int) -> str:
        return f"row {row} (line {row + 1} of {self.keys_path})"

    def __iter__(self) -> Iterator:
        inner = self._inner
        for block in inner:
            r0 = inner.rows_read - len(block.vectors)
            yield block._replace(keys=self._keys.take(r0, len(block.vectors)))
        self._keys.finish(inner.rows_read, whole=inner.rows_read == inner.count)

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._keys.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
