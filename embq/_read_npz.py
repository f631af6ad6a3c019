"""Read one 2-D array of a ``.npz`` file (``numpy.savez``, ``savez_compressed``) in blocks.

A ``.npz`` is a zip archive of ``.npy`` members; the member is decompressed as it is read,
so memory stays bounded by the block whatever the array's size. Keys come from a keys file or
a tokenizer.json (:mod:`embq._keys`), as for ``.npy``.
"""

from __future__ import annotations

import lzma
import os
import zipfile
import zlib

import numpy as np

from embq._errors import FormatError
from embq._read_common import MatrixReader, file_size, plural, to_float32_rows

__all__ = ["NpzReader"]

# What zipfile raises on damaged archives and members (bz2 and xz members: OSError, LZMAError;
# an encrypted member: RuntimeError; an unknown compression method: NotImplementedError).
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, lzma.LZMAError, OSError,
               RuntimeError, NotImplementedError)


class NpzReader(MatrixReader):
    """A 2-D numeric array of a ``.npz`` file, read in blocks of rows."""

    def __init__(self, path: str, *, array: str | None = None, limit: int | None = None,
                 keys_path: str | None = None, encoding: str = "utf8",
                 unicode_errors: str = "strict", block_rows: int | None = None) -> None:
        from embq._readers import MAX_DIM

        super().__init__(path, "npz", limit, block_rows)
        self._size = file_size(path)
        self._zip: zipfile.ZipFile | None = None
        self._member = None
        try:
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError) as exc:
                raise FormatError(f"not a .npz file (zip: {exc})", path=path) from None
            names = {m.filename[:-4]: m for m in self._zip.infolist()
                     if m.filename.endswith(".npy")}
            if array is None:
                if len(names) != 1:
                    raise FormatError(
                        f"the archive holds {plural(len(names), 'array')}"
                        + (f" ({', '.join(sorted(names)[:12])})" if names else "")
                        + "; pick one with --array NAME", path=path)
                array = next(iter(names))
            elif array not in names:
                raise FormatError(f"no array named {array!r}; the archive holds "
                                  f"{', '.join(sorted(names)[:12]) or 'no arrays'}", path=path)
            self.array = array
            try:
                self._member = self._zip.open(names[array])
            except _ZIP_ERRORS as exc:
                raise FormatError(f"array {array!r} cannot be read from the archive ({exc})",
                                  path=path) from None
            shape, fortran, dtype = self._header()
            what = f"array {array!r}"
            if len(shape) != 2:
                raise FormatError(f"{what} has shape {shape}; expected 2-D (rows, dim)", path=path)
            if dtype.kind not in "fiu" or dtype.hasobject:
                raise FormatError(f"{what} has dtype {dtype}; expected floats or integers",
                                  path=path)
            if not 1 <= shape[1] <= MAX_DIM:
                raise FormatError(f"{what} has shape {shape}; expected 1 to {MAX_DIM:,} columns",
                                  path=path)
            if fortran and shape[0] > 1 and shape[1] > 1:
                raise FormatError(
                    f"{what} is stored in Fortran (column) order, so no row is complete before "
                    "the whole array is read; save it with numpy.ascontiguousarray(x) first",
                    path=path)
            self.count, self.dim = int(shape[0]), int(shape[1])
            self._dtype = dtype
            self._set_block_rows()
            if keys_path is not None:
                from embq._keys import open_keys

                self.keys_path = os.fspath(keys_path)
                self._keys = open_keys(self.keys_path, self.count, f"{what} of {path}",
                                       encoding=encoding, unicode_errors=unicode_errors)
        except BaseException:
            self.close()
            raise

    def _header(self):
        fmt = np.lib.format
        try:
            version = fmt.read_magic(self._member)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(self._member)
            elif version == (2, 0):
                shape, fortran, dtype = fmt.read_array_header_2_0(self._member)
            else:
                raise ValueError(f".npy format version {version[0]}.{version[1]}; expected 1.0 "
                                 "or 2.0")
        except (ValueError, SyntaxError, *_ZIP_ERRORS) as exc:
            raise FormatError(f"array {self.array!r}: bad .npy header ({exc})",
                              path=self.path) from None
        return tuple(shape), bool(fortran), np.dtype(dtype)

    def describe_row(self, row: int) -> str:
        return f"row {row:,} of array {self.array!r}" + (
            f" (line {row + 1:,} of {self.keys_path})" if self.keys_path else "")

    def _rows(self, start: int, stop: int) -> np.ndarray:
        want = (stop - start) * self.dim * self._dtype.itemsize
        try:
            data = self._member.read(want)
        except _ZIP_ERRORS as exc:
            raise FormatError(f"array {self.array!r} is damaged near row {start:,} ({exc})",
                              path=self.path) from None
        if len(data) < want:
            raise FormatError(
                f"array {self.array!r} ends after {start + len(data) // (want // (stop - start)):,}"
                f" of its {plural(self.count, 'row')}; the archive is truncated", path=self.path)
        chunk = np.frombuffer(data, self._dtype).reshape(stop - start, self.dim)
        return to_float32_rows(chunk, start, f"array {self.array!r}", self.path,
                               copy=chunk.dtype != np.float32 or not chunk.flags.writeable)

    def _at_end(self) -> None:
        # Reading past the last row makes zipfile check the member's CRC-32 and size.
        try:
            extra = self._member.read(1)
        except _ZIP_ERRORS as exc:
            raise FormatError(f"array {self.array!r} is damaged ({exc})", path=self.path) from None
        if extra:
            raise FormatError(f"more data follows the {plural(self.count, 'row')} x {self.dim} "
                              f"the header of array {self.array!r} announces; expected its end",
                              path=self.path)

    def _close(self) -> None:
        for f in (self._member, self._zip):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
