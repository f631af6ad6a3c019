"""Streaming readers for embedding files.

Formats, detected from the content (never from the file name):

* ``"word2vec"``: text with a ``count dim`` header line, then ``KEY v1 ... vdim`` per line
  (fastText ``.vec`` files are this format);
* ``"glove"``: the same lines without a header; the dimension comes from the first line;
* ``"word2vec-binary"``: a ``count dim`` header, then per row ``KEY`` + space + ``dim``
  little-endian float32 values, with or without a newline after each vector;
* ``"npy"``: a 2-D numeric numpy array, with keys (one per line) from a separate file, or none.

Any of them may be compressed with gzip, bz2 or xz (recognised by their magic bytes). A native
fastText model (``.bin`` starting with fastText's magic number) is refused with a hint.

Files are read in blocks of rows: memory stays bounded by the block size whatever the file
size. Text is parsed by :mod:`embq._kernels_parse` (values exactly as
``numpy.float32(float(token))``), keys are decoded one ``str`` per row.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import lzma
import mmap
import os
import sys
from typing import IO, Iterator, NamedTuple

import numpy as np

from embq.errors import FormatError

__all__ = [
    "FORMATS",
    "Block",
    "EmbeddingReader",
    "detect_format",
    "load_embeddings",
    "open_embeddings",
]

FORMATS = ("word2vec", "glove", "word2vec-binary", "npy")
UNICODE_ERRORS = ("strict", "replace", "ignore")
FASTTEXT_MAGIC = 0x2F4F16BA
_NPY_MAGIC = b"\x93NUMPY"
_SNIFF_BYTES = 1 << 16
# Bytes that may follow the key on a text line: digits, signs, points, exponents, separators,
# and the letters of inf/nan/infinity (so such files are reported as bad text, not as binary).
_TEXT_VALUE_BYTES = frozenset(b"0123456789+-.eE \t\r\ninfatyINFATY")
_BUFFER_BYTES = 8 << 20
_BLOCK_FLOAT_BYTES = 16 << 20


class Block(NamedTuple):
    """One block of rows read from an embedding file.

    ``keys`` is a list of ``str`` (``None`` for a ``.npy`` without a keys file), ``vectors``
    a float32 array ``(rows, dim)``, ``first_line`` the 1-based line of the block's first row
    (text formats: its line in the file; word2vec binary: the record number plus one for the
    header, the line the C tool would have written it on; ``.npy``: the row number plus one,
    its line in the keys file).
    """

    keys: list[str] | None
    vectors: np.ndarray
    first_line: int


# --------------------------------------------------------------------------------------------
# opening files


def _compression_of(head: bytes) -> str | None:
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    return None


def _open_input(path: str) -> tuple[IO[bytes], IO[bytes], str | None]:
    """Open ``path`` for binary reading; return (stream, raw file, compression or None)."""
    if os.path.isdir(path):
        raise IsADirectoryError(21, "Is a directory (expected an embedding file)", path)
    raw = open(path, "rb")  # noqa: SIM115 - closed by the reader
    try:
        head = raw.read(6)
        raw.seek(0)
        comp = _compression_of(head)
        stream: IO[bytes]
        if comp == "gzip":
            stream = gzip.GzipFile(fileobj=raw, mode="rb")
        elif comp == "bz2":
            stream = bz2.BZ2File(raw, mode="rb")
        elif comp == "xz":
            stream = lzma.LZMAFile(raw, mode="rb")
        else:
            stream = raw
    except BaseException:
        raw.close()
        raise
    return stream, raw, comp


def _read_head(stream: IO[bytes], n: int, path: str) -> bytes:
    try:
        return stream.read(n)
    except (EOFError, OSError, lzma.LZMAError) as exc:
        raise FormatError(f"cannot decompress: {exc}", path=path) from None


def _is_int(tok: bytes) -> bool:
    return tok.isdigit()


def _is_float(tok: bytes) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True


def _header_of(line: bytes) -> tuple[int, int] | None:
    toks = line.split()
    if len(toks) == 2 and _is_int(toks[0]) and _is_int(toks[1]):
        return int(toks[0]), int(toks[1])
    return None


def _looks_binary(rest: bytes, dim: int) -> bool:
    """After a ``count dim`` header: is the first record binary (True) or a text line?"""
    rest = rest.lstrip(b"\r\n")
    sp = rest.find(b" ")
    if sp < 0:
        return False
    nl = rest.find(b"\n")
    toks = (rest if nl < 0 else rest[:nl]).split()
    if len(toks) == dim + 1 and all(_is_float(t) for t in toks[1:]):
        return False
    values = rest[sp + 1 : sp + 1 + 4 * dim]
    # A text line holds only number characters up to its newline; dim float32 values almost
    # never do (a vector starting with byte 0x0a is judged on the whole window).
    cut = values.find(b"\n")
    seg = values if cut <= 0 else values[:cut]
    return not all(b in _TEXT_VALUE_BYTES for b in seg)


def _detect_head(head: bytes, path: str, compression: str | None) -> str:
    where = f" (inside its {compression} compression)" if compression else ""
    if not head:
        raise FormatError(
            f"the file is empty{where}; expected an embedding file (word2vec, GloVe, "
            "word2vec binary or .npy)",
            path=path,
        )
    if head.startswith(_NPY_MAGIC):
        return "npy"
    if len(head) >= 4 and int.from_bytes(head[:4], "little") == FASTTEXT_MAGIC:
        raise FormatError(
            "this is a native fastText model (.bin with the fastText magic number), not a "
            "vector file; export its vectors first, e.g. with fastText's `print-word-vectors` "
            "or gensim (`load_facebook_vectors(...).save_word2vec_format('out.vec')`), and "
            "compress the .vec file",
            path=path,
        )
    if not head.strip():
        raise FormatError(f"the file holds only whitespace{where}; expected an embedding file",
                          path=path)
    nl = head.find(b"\n")
    first = head if nl < 0 else head[:nl]
    header = _header_of(first)
    if header is not None:
        return "word2vec-binary" if _looks_binary(head[nl + 1 :] if nl >= 0 else b"", header[1]) \
            else "word2vec"
    toks = first.split()
    if len(toks) >= 2 and all(
        _is_float(t) for t in toks[1:]
    ):
        return "glove"
    if b"\x00" in head[:1024]:
        raise FormatError(
            f"binary data{where} that is not a word2vec binary file (no 'count dim' header) nor "
            "a .npy array; native fastText/word2vec model files must be exported to a .vec or "
            "word2vec file first",
            path=path,
        )
    raise FormatError(
        f"the first line{where} is neither a 'count dim' header (word2vec) nor a key followed "
        f"by numbers (GloVe): {first[:80]!r}; pass --format if the detection is wrong",
        path=path, line=1,
    )


def detect_format(path: str | os.PathLike) -> str:
    """Say which embedding format a file holds, from its content.

    Parameters
    ----------
    path : str or os.PathLike
        The file (possibly gzip, bz2 or xz compressed).

    Returns
    -------
    str
        One of ``"word2vec"``, ``"glove"``, ``"word2vec-binary"``, ``"npy"``.

    Raises
    ------
    FormatError
        For an empty file, a native fastText model, or content in none of these formats.
    OSError
        When the file cannot be read.
    """
    path = os.fspath(path)
    stream, raw, comp = _open_input(path)
    try:
        head = _read_head(stream, _SNIFF_BYTES, path)
        return _detect_head(head, path, comp)
    finally:
        stream.close()
        raw.close()


# --------------------------------------------------------------------------------------------
# the reader


def _printable(b: bytes, n: int = 40) -> str:
    s = b[:n].decode("utf8", "backslashreplace")
    return s + ("..." if len(b) > n else "")


class EmbeddingReader:
    """An embedding file opened for reading in blocks of rows.

    Iterate to get :class:`Block` objects; use as a context manager (or call :meth:`close`).
    Created by :func:`open_embeddings`, which documents the parameters.

    Attributes
    ----------
    path : str
    format : str
        One of :data:`FORMATS`.
    compression : str or None
        ``"gzip"``, ``"bz2"``, ``"xz"`` or ``None``.
    dim : int
        Values per row.
    count : int or None
        Rows announced by the header (word2vec formats) or the array's row count (``.npy``);
        ``None`` for GloVe.
    size : int
        Bytes of the file on disk.
    rows_read : int
        Rows yielded so far.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        format: str | None = None,  # noqa: A002 - mirrors the CLI option
        limit: int | None = None,
        encoding: str = "utf8",
        unicode_errors: str = "strict",
        keys_path: str | os.PathLike | None = None,
        block_rows: int | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.keys_path = None if keys_path is None else os.fspath(keys_path)
        if format is not None and format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
                raise ValueError(f"limit must be a positive number of rows or None, got {limit!r}")
            limit = int(limit)
        if block_rows is not None and (not isinstance(block_rows, (int, np.integer))
                                       or block_rows < 1):
            raise ValueError(f"block_rows must be a positive number of rows, got {block_rows!r}")
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(f"unknown text encoding {encoding!r}") from None
        if unicode_errors not in UNICODE_ERRORS:
            raise ValueError(
                f"unicode_errors must be one of {', '.join(UNICODE_ERRORS)}, got {unicode_errors!r}"
            )
        self.limit = limit
        self.encoding = encoding
        self.unicode_errors = unicode_errors
        self._block_rows_arg = block_rows
        self.rows_read = 0
        self.count: int | None = None
        self.dim = 0
        self._header_lines = 0
        self._closed = False
        self._iterated = False
        self._keys_stream = None
        self._keys_raw = None
        self._npy = None
        self._mmap: mmap.mmap | None = None
        self.size = os.path.getsize(self.path) if os.path.isfile(self.path) else 0
        self._stream, self._raw, self.compression = _open_input(self.path)
        try:
            head = _read_head(self._stream, _SNIFF_BYTES, self.path)
            detected = _detect_head(head, self.path, self.compression) if format is None else None
            self.format = format if format is not None else detected
            if self.keys_path is not None and self.format != "npy":
                raise ValueError(
                    f"a keys file is only used with .npy input; {self.path} is {self.format}"
                )
            if self.format == "npy":
                self._open_npy(head)
            else:
                self._buf = bytearray(max(_BUFFER_BYTES, len(head) + 1))
                self._buf[: len(head)] = head
                self._len = len(head)
                self._pos = 0
                self._base = 0  # stream offset of _buf[0]
                self._eof = len(head) < _SNIFF_BYTES and self._fill_probe()
                self._read_header()
        except BaseException:
            self.close()
            raise
        if self._block_rows_arg is None:
            self.block_rows = int(max(1, min(8192, _BLOCK_FLOAT_BYTES // (4 * max(self.dim, 1)))))
        else:
            self.block_rows = int(self._block_rows_arg)

    # ---------------------------------------------------------------- generic buffer handling

    def _fill_probe(self) -> bool:
        # A short first read may not mean EOF for pipes or decompressors: ask once more.
        return self._fill() == 0

    def _fill(self) -> int:
        """Move unread bytes to the front of the buffer, read more; return bytes read."""
        if self._pos > 0:
            n = self._len - self._pos
            self._buf[:n] = self._buf[self._pos : self._len]
            self._base += self._pos
            self._pos = 0
            self._len = n
        if self._len == len(self._buf):
            self._buf.extend(bytes(len(self._buf)))  # a line longer than the buffer
        mv = memoryview(self._buf)[self._len :]
        try:
            got = self._stream.readinto(mv)
        except (EOFError, lzma.LZMAError, zlib_error()) as exc:
            raise FormatError(
                f"the {self.compression} data is damaged or cut short: {exc}",
                path=self.path, offset=self._raw_pos(),
            ) from None
        finally:
            mv.release()
        got = got or 0
        self._len += got
        return got

    def _raw_pos(self) -> int | None:
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return None

    @property
    def bytes_read(self) -> int:
        """Bytes of the file on disk consumed so far (compressed bytes for compressed input)."""
        if self._closed:
            return self.size
        if self._npy is not None:
            return int(self.size * self.rows_read / max(self.count or 1, 1))
        pos = self._raw_pos()
        return self.size if pos is None else pos

    def _rest_is_blank(self) -> bool:
        """True when everything from the current position to the end is whitespace."""
        while True:
            if self._buf[self._pos : self._len].strip():
                return False
            self._pos = self._len
            if self._eof or self._fill() == 0:
                self._eof = True
                return True

    def _next_line(self) -> bytes | None:
        """Return the next whole line (without its newline) or None at EOF."""
        while True:
            nl = self._buf.find(b"\n", self._pos, self._len)
            if nl >= 0:
                line = bytes(self._buf[self._pos : nl])
                self._pos = nl + 1
                return line
            if self._eof or self._fill() == 0:
                self._eof = True
                if self._pos < self._len:
                    line = bytes(self._buf[self._pos : self._len])
                    self._pos = self._len
                    return line
                return None

    # ---------------------------------------------------------------- headers

    def _read_header(self) -> None:
        fmt = self.format
        if fmt in ("word2vec", "word2vec-binary"):
            line = self._next_line()
            header = None if line is None else _header_of(line)
            if header is None:
                if line is None or not line.strip():
                    raise FormatError(
                        "the file is empty; expected a 'count dim' header line", path=self.path,
                        line=1,
                    )
                raise FormatError(
                    f"expected a 'count dim' header (two integers), found {_printable(line)!r}"
                    + ("; this looks like GloVe (no header): use --format glove"
                       if len(line.split()) > 2 else ""),
                    path=self.path, line=1,
                )
            self.count, self.dim = header
            if self.dim < 1:
                raise FormatError(f"the header gives dim {self.dim}; expected at least 1",
                                  path=self.path, line=1)
            self._header_lines = 1
        else:  # glove: the dimension is the number of values on the first non-blank line
            line = self._next_line()
            if line is None or not line.strip():
                raise FormatError("empty line; expected 'KEY value value ...'",
                                  path=self.path, line=1)
            # _next_line never compacts the buffer when the line is whole in it, and the
            # first line of a GloVe file always is (the buffer grows for long lines).
            self._pos = 0
            toks = line.split()
            if len(toks) < 2:
                raise FormatError(
                    f"expected a key followed by values, found {_printable(line)!r}",
                    path=self.path, line=1,
                )
            self.dim = len(toks) - 1
            self.count = None
            self._header_lines = 0

    def _open_npy(self, head: bytes) -> None:
        fmt = np.lib.format
        if not head.startswith(_NPY_MAGIC):
            raise FormatError(f"not a .npy file (no {_NPY_MAGIC!r} magic at the start)",
                              path=self.path, offset=0)
        if self.compression is None:
            self._stream.close()
            self._raw.close()
            try:
                arr = np.load(self.path, mmap_mode="r", allow_pickle=False)
            except ValueError as exc:
                raise FormatError(f"cannot read the .npy array: {exc}", path=self.path) from None
            arr = self._own_mapping(arr)
            self._data_offset = None
        else:
            hs = io.BytesIO(head)
            try:
                version = fmt.read_magic(hs)
                if version == (1, 0):
                    shape, fortran, dtype = fmt.read_array_header_1_0(hs)
                elif version == (2, 0):
                    shape, fortran, dtype = fmt.read_array_header_2_0(hs)
                else:
                    shape, fortran, dtype = fmt._read_array_header(hs, version)  # noqa: SLF001
            except ValueError as exc:
                raise FormatError(f"bad .npy header: {exc}", path=self.path) from None
            if fortran and len(shape) == 2 and shape[0] > 1 and shape[1] > 1:
                raise FormatError(
                    f"the compressed .npy array is Fortran-ordered, so its rows cannot be "
                    f"streamed; decompress it ({self.compression}) and pass the .npy file",
                    path=self.path,
                )
            arr = None
            self._npy_shape, self._npy_dtype = tuple(shape), np.dtype(dtype)
            self._data_offset = hs.tell()
            # Position the stream at the start of the data.
            self._stream.close()
            self._raw.close()
            self._stream, self._raw, _ = _open_input(self.path)
            self._stream.read(self._data_offset)
        shape = arr.shape if arr is not None else self._npy_shape
        dtype = arr.dtype if arr is not None else self._npy_dtype
        if len(shape) != 2:
            raise FormatError(f"the array has shape {shape}; expected 2-D (rows, dim)",
                              path=self.path)
        if dtype.kind not in "fiu" or dtype.hasobject:
            raise FormatError(f"the array has dtype {dtype}; expected floats or integers",
                              path=self.path)
        if shape[1] < 1:
            raise FormatError(f"the array has shape {shape}; expected at least one column",
                              path=self.path)
        self._npy = arr
        self._npy_dtype = dtype
        self.count, self.dim = int(shape[0]), int(shape[1])
        if self.keys_path is not None:
            self._keys_stream, self._keys_raw, _ = _open_input(self.keys_path)

    # ---------------------------------------------------------------- iteration

    def __iter__(self) -> Iterator[Block]:
        if self._closed:
            raise ValueError(f"I/O operation on a closed reader ({self.path})")
        if self._iterated:
            raise ValueError("an EmbeddingReader can be iterated only once; open the file again")
        self._iterated = True
        if self.format == "npy":
            return self._iter_npy()
        if self.format == "word2vec-binary":
            return self._iter_binary()
        return self._iter_text()

    def _target_rows(self) -> int | None:
        """Rows to read in all: min(limit, header count), or None when unknown (GloVe)."""
        caps = [c for c in (self.limit, self.count) if c is not None]
        return min(caps) if caps else None

    def line_of_row(self, row: int) -> int:
        """1-based line (see :class:`Block`) of 0-based data row ``row``."""
        return row + 1 + self._header_lines

    def describe_row(self, row: int) -> str:
        """Where row ``row`` lives, for messages: ``"line 17"`` or ``"row 16"``."""
        if self.format in ("word2vec", "glove"):
            return f"line {self.line_of_row(row)}"
        if self.format == "word2vec-binary":
            return f"record {row + 1}"
        return f"row {row}" + (f" (line {row + 1} of {self.keys_path})" if self.keys_path else "")

    def _decode_keys(self, ks, ke, r0, r1, first_row) -> list[str]:
        from embq._kernels_parse import decode_keys

        try:
            keys = decode_keys(self._buf, ks, ke, r0, r1, self.encoding, self.unicode_errors)
        except UnicodeDecodeError:
            for i in range(r0, r1):
                raw = bytes(self._buf[ks[i] : ke[i]])
                try:
                    raw.decode(self.encoding, self.unicode_errors)
                except UnicodeDecodeError as exc:
                    row = first_row + i - r0
                    raise FormatError(
                        f"key bytes {_printable(raw)!r} of {self.describe_row(row)} are not valid "
                        f"{self.encoding} ({exc.reason} at byte {exc.start} of the key); pass "
                        "--unicode-errors replace (or ignore), or the right --encoding",
                        path=self.path, line=self._line_arg(row),
                        offset=self._base + int(ks[i]) + exc.start,
                    ) from None
            raise  # pragma: no cover - the whole-batch decode failed, so one row must fail
        if not all(keys):
            i = keys.index("")
            row = first_row + i
            raise FormatError(
                f"the key of {self.describe_row(row)} is empty after decoding "
                f"{bytes(self._buf[ks[r0 + i] : ke[r0 + i]])!r} with --unicode-errors "
                f"{self.unicode_errors}; expected a non-empty key",
                path=self.path, line=self._line_arg(row), offset=self._base + int(ks[r0 + i]),
            )
        return keys

    def _line_arg(self, row: int) -> int | None:
        return self.line_of_row(row) if self.format in ("word2vec", "glove") else None

    def _count_mismatch(self, rows: int) -> FormatError:
        return FormatError(
            f"the header (line 1) announces {self.count} rows but the file ends after {rows}; "
            f"the file may be truncated (use --limit {rows} to read only the rows present)",
            path=self.path, line=self.line_of_row(rows) if self.format != "word2vec-binary"
            else None, offset=self._base + self._len if self.format == "word2vec-binary" else None,
        )

    def _extra_rows(self) -> FormatError:
        if self.format == "word2vec-binary":
            return FormatError(
                f"the header (line 1) announces {self.count} rows but more data follows record "
                f"{self.count}; fix the header count, or use --limit {self.count} to read only "
                "the announced rows",
                path=self.path, offset=self._base + self._pos,
            )
        return FormatError(
            f"the header (line 1) announces {self.count} rows but the file has more rows; fix "
            f"the header count, or use --limit {self.count} to read only the announced rows",
            path=self.path, line=self.line_of_row(self.count),
        )

    def _text_error(self, status: int, row: int, err_pos: int, err_count: int) -> FormatError:
        from embq import _kernels_parse as kp

        line = self.line_of_row(row)
        dim = self.dim
        hint = ""
        if row == 0 and self.format == "word2vec" and status in (kp.TOO_FEW, kp.TOO_MANY):
            hint = (f" (the header on line 1 gives dim {dim}; is the header right, or is this "
                    "a GloVe file without header? then use --format glove)")
        if status == kp.BLANK:
            return FormatError(
                f"empty line; expected a key followed by {dim} values (blank lines are allowed "
                "only at the end of the file)", path=self.path, line=line)
        if status == kp.EMPTY_KEY:
            return FormatError(
                f"the line starts with a space or tab: expected a key followed by {dim} values",
                path=self.path, line=line)
        if status == kp.TOO_FEW:
            return FormatError(
                f"expected {dim} values after the key, found {err_count}{hint}",
                path=self.path, line=line)
        if status == kp.TOO_MANY:
            return FormatError(
                f"expected {dim} values after the key, found {err_count}{hint}; keys cannot "
                "contain spaces", path=self.path, line=line)
        end = err_pos
        while end < self._len and self._buf[end] not in b" \t\r\n" and end - err_pos < 60:
            end += 1
        tok = _printable(bytes(self._buf[err_pos:end]))
        if status == kp.NONFINITE:
            what = f"value {tok!r} is not finite; NaN and Inf cannot be quantized"
        elif status == kp.OUT_OF_RANGE:
            what = f"value {tok!r} is outside the float32 range (about +-3.4e38)"
        else:
            what = f"value {tok!r} is not a number; expected a decimal like -0.0123 or 1.5e-3"
        return FormatError(what, path=self.path, line=line, offset=self._base + err_pos)

    def _block_size(self, target: int | None) -> int:
        n = self.block_rows
        if target is not None:
            n = min(n, target - self.rows_read)
        return n

    def _iter_text(self) -> Iterator[Block]:
        from embq import _kernels_parse as kp

        target = self._target_rows()
        dim = self.dim
        done = False
        while not done:
            n = self._block_size(target)
            if n <= 0:
                break
            out = np.empty((n, dim), np.float32)
            ks = np.empty(n, np.intp)
            ke = np.empty(n, np.intp)
            keys: list[str] = []
            row = 0
            first_row = self.rows_read
            while row < n:
                end = self._buf.rfind(b"\n", self._pos, self._len) + 1
                if end <= self._pos:
                    if self._eof or self._fill() == 0:
                        self._eof = True
                        if self._pos < self._len:
                            # A last line without a newline: give it one.
                            if self._len == len(self._buf):
                                self._buf.append(10)
                            else:
                                self._buf[self._len] = 10
                            self._len += 1
                            continue
                        done = True
                        break
                    continue
                rows_done, pos, status, err_pos, err_count = kp.parse_text_block(
                    self._buf, self._pos, end, out, row, ks, ke
                )
                keys.extend(self._decode_keys(ks, ke, row, rows_done, first_row + row))
                row = rows_done
                self._pos = pos
                if status == kp.BLANK and self._rest_is_blank():
                    done = True
                    break
                if status != kp.OK:
                    raise self._text_error(status, first_row + row, err_pos, err_count)
            self.rows_read += row
            if row:
                yield Block(keys, out[:row], self.line_of_row(first_row))
        self._check_end(target)

    def _check_end(self, target: int | None) -> None:
        if self.count is None:
            return
        if self.rows_read < target:
            raise self._count_mismatch(self.rows_read)
        if self.limit is not None and self.limit <= self.count:
            return  # a prefix was asked for: the rest is not read
        if not self._rest_is_blank():
            raise self._extra_rows()

    def _iter_binary(self) -> Iterator[Block]:
        from embq import _kernels_parse as kp

        target = self._target_rows()
        dim = self.dim
        while True:
            n = self._block_size(target)
            if n <= 0:
                break
            out = np.empty((n, dim), np.float32)
            ks = np.empty(n, np.intp)
            ke = np.empty(n, np.intp)
            offsets = np.empty(n, np.int64)
            keys: list[str] = []
            row = 0
            first_row = self.rows_read
            at_eof = False
            while row < n:
                rows_done, pos, status = kp.parse_binary_block(
                    self._buf, self._pos, self._len, out, row, ks, ke
                )
                keys.extend(self._decode_keys(ks, ke, row, rows_done, first_row + row))
                offsets[row:rows_done] = ks[row:rows_done] + self._base
                row = rows_done
                self._pos = pos
                if status == kp.OK:
                    continue
                if status == kp.EMPTY_KEY:
                    raise FormatError(
                        f"record {first_row + row + 1} starts with a space: expected a key, a "
                        f"space and {dim} float32 values",
                        path=self.path, offset=self._base + pos)
                if status == kp.KEY_TOO_LONG:
                    raise FormatError(
                        f"record {first_row + row + 1}: no space after the key within 1 MB; "
                        f"expected a key, a space and {4 * dim} bytes of float32 values (is dim "
                        f"{dim} in the header right?)", path=self.path, offset=self._base + pos)
                # NEED_MORE
                if self._eof or self._fill() == 0:
                    self._eof = True
                    at_eof = True
                    break
            if sys.byteorder == "big":
                out[:row].byteswap(inplace=True)
            if row:
                finite = np.isfinite(out[:row]).all(axis=1)
                if not finite.all():
                    i = int(np.argmin(finite))
                    raise FormatError(
                        f"record {first_row + i + 1} (key {keys[i]!r}) holds NaN or Inf; "
                        "expected finite values", path=self.path, offset=int(offsets[i]))
            self.rows_read += row
            if row:
                yield Block(keys, out[:row], self.line_of_row(first_row))
            if at_eof:
                rest = bytes(self._buf[self._pos : self._len])
                if rest.strip(b"\r\n"):
                    sp = rest.find(b" ")
                    key = _printable(rest[:sp]) if 0 < sp < 200 else None
                    have = len(rest) - sp - 1 if sp >= 0 else 0
                    raise FormatError(
                        f"the file ends in the middle of record {self.rows_read + 1}"
                        + (f" (key {key!r})" if key is not None else "")
                        + f": expected {4 * dim} bytes of float32 values, found {max(have, 0)}"
                        + (f"; the header announces {self.count} rows, use --limit "
                           f"{self.rows_read} to read the complete ones"
                           if self.count is not None else ""),
                        path=self.path, offset=self._base + self._pos)
                break
        self._check_end(target)

    def _own_mapping(self, arr: np.ndarray) -> np.ndarray:
        # A map of our own, so the pages of rows already handed out can be dropped from this
        # process (madvise DONTNEED): otherwise every page read stays in the RSS and the peak
        # grows to the size of the file.  Dropped pages stay in the page cache and the data
        # stays valid; a later read of them simply maps them again.
        offset = int(getattr(arr, "offset", 0))
        if arr.size == 0 or not hasattr(mmap, "MADV_DONTNEED"):
            return arr
        with open(self.path, "rb") as f:
            self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        order = "F" if arr.flags.f_contiguous and not arr.flags.c_contiguous else "C"
        return np.ndarray(arr.shape, arr.dtype, buffer=self._mmap, offset=offset, order=order)

    def _drop_mapped_pages(self) -> None:
        if self._mmap is not None:
            try:
                self._mmap.madvise(mmap.MADV_DONTNEED)
            except (OSError, ValueError):  # advice only: never fail a read over it
                pass

    def _iter_npy(self) -> Iterator[Block]:
        target = self._target_rows()
        dim = self.dim
        itemsize = self._npy_dtype.itemsize
        while True:
            n = self._block_size(target)
            if n <= 0:
                break
            r0 = self.rows_read
            if self._npy is not None:
                chunk = self._npy[r0 : r0 + n]
            else:
                want = n * dim * itemsize
                data = self._stream.read(want)
                if len(data) < want:
                    raise FormatError(
                        f"the array data ends after {r0 + len(data) // (dim * itemsize)} of "
                        f"{self.count} rows; the file is truncated",
                        path=self.path, offset=(self._data_offset or 0) + r0 * dim * itemsize
                        + len(data))
                chunk = np.frombuffer(data, dtype=self._npy_dtype).reshape(n, dim)
            with np.errstate(over="ignore", invalid="ignore"):
                vectors = np.ascontiguousarray(chunk, dtype=np.float32)
            finite = np.isfinite(vectors).all(axis=1)
            if not finite.all():
                i = int(np.argmin(finite))
                bad = chunk[i][~np.isfinite(vectors[i])][0]
                raise FormatError(
                    f"row {r0 + i} holds {bad!r}, which is NaN, Inf or outside the float32 "
                    "range; expected finite values", path=self.path)
            if self._mmap is not None and vectors.base is not None:
                vectors = vectors.copy()  # no views of the map escape, so close() can unmap it
            self._drop_mapped_pages()
            keys = self._read_npy_keys(r0, n) if self._keys_stream is not None else None
            self.rows_read += n
            yield Block(keys, vectors, r0 + 1)
        if self._keys_stream is not None and (self.limit is None or self.limit >= self.count):
            line = self.count
            for raw in self._keys_stream:
                line += 1
                if raw.strip():
                    raise FormatError(
                        f"the keys file has more keys than the {self.count} rows of {self.path}",
                        path=self.keys_path, line=line)

    def _read_npy_keys(self, r0: int, n: int) -> list[str]:
        keys = []
        readline = self._keys_stream.readline
        for i in range(n):
            raw = readline()
            line = r0 + i + 1
            if not raw:
                raise FormatError(
                    f"the keys file ends after {line - 1} keys but {self.path} has "
                    f"{self.count} rows; expected one key per row", path=self.keys_path,
                    line=line)
            raw = raw.rstrip(b"\r\n")
            try:
                key = raw.decode(self.encoding, self.unicode_errors)
            except UnicodeDecodeError as exc:
                raise FormatError(
                    f"key bytes {_printable(raw)!r} are not valid {self.encoding} ({exc.reason} "
                    f"at byte {exc.start} of the key); pass --unicode-errors replace (or "
                    "ignore), or the right --encoding",
                    path=self.keys_path, line=line) from None
            if not key:
                raise FormatError("empty key; expected one non-empty key per line",
                                  path=self.keys_path, line=line)
            keys.append(key)
        return keys

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Close the files (calling it twice is fine)."""
        if self._closed:
            return
        self._closed = True
        for f in (self._stream, self._raw, self._keys_stream, self._keys_raw):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self._npy = None
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:  # a caller still holds a view of it; the GC closes it later
                pass
            self._mmap = None

    def __enter__(self) -> "EmbeddingReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"<EmbeddingReader {self.path!r} format={self.format} dim={self.dim} "
                f"count={self.count} ({state})>")


def zlib_error():
    import zlib

    return zlib.error


def open_embeddings(
    path: str | os.PathLike,
    *,
    format: str | None = None,  # noqa: A002
    limit: int | None = None,
    encoding: str = "utf8",
    unicode_errors: str = "strict",
    keys_path: str | os.PathLike | None = None,
    block_rows: int | None = None,
) -> EmbeddingReader:
    """Open an embedding file for reading in blocks of rows.

    Parameters
    ----------
    path : str or os.PathLike
        The embedding file (possibly gzip/bz2/xz compressed).
    format : str, optional
        Force one of :data:`FORMATS` instead of detecting it from the content.
    limit : int, optional
        Read only the first ``limit`` rows (the rest of the file is not read or checked).
    encoding : str
        Text encoding of the keys (default UTF-8).
    unicode_errors : {"strict", "replace", "ignore"}
        What to do with undecodable key bytes; ``"strict"`` raises :class:`FormatError`
        naming the line and byte offset.
    keys_path : str or os.PathLike, optional
        For ``.npy`` input: a text file with one key per line, one line per row.
    block_rows : int, optional
        Rows per yielded block; by default 8192, fewer for wide rows (about 16 MB per block).

    Returns
    -------
    EmbeddingReader
        Iterate it for :class:`Block` objects; close it (or use ``with``).

    Raises
    ------
    FormatError
        When the file is empty, in an unknown format, or its header is bad. Errors in rows are
        raised while iterating, naming the file, the line (or byte offset) and what was expected.
    OSError
        When a file cannot be read.
    """
    return EmbeddingReader(path, format=format, limit=limit, encoding=encoding,
                           unicode_errors=unicode_errors, keys_path=keys_path,
                           block_rows=block_rows)


def load_embeddings(path: str | os.PathLike, **options) -> tuple[list[str] | None, np.ndarray]:
    """Read a whole embedding file into memory.

    Parameters
    ----------
    path : str or os.PathLike
        The embedding file.
    **options
        As for :func:`open_embeddings`.

    Returns
    -------
    keys : list of str or None
        The keys in file order (``None`` for ``.npy`` without keys file).
    vectors : numpy.ndarray
        float32 array ``(rows, dim)``.
    """
    with open_embeddings(path, **options) as reader:
        keys: list[str] | None = None if reader.format == "npy" and reader.keys_path is None \
            else []
        blocks = []
        for block in reader:
            blocks.append(block.vectors)
            if keys is not None:
                keys.extend(block.keys)
        dim = reader.dim
    vectors = np.concatenate(blocks) if blocks else np.empty((0, dim), np.float32)
    return keys, vectors
