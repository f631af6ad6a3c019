"""Streaming readers for embedding files.

Formats, detected from the content (never from the file name):

* ``"word2vec"``: text with a ``count dim`` header line, then ``KEY v1 ... vdim`` per line
  (fastText ``.vec`` files are this format);
* ``"glove"``: the same lines without a header; the dimension comes from the first line;
* ``"word2vec-binary"``: a ``count dim`` header, then per row ``KEY`` + space + ``dim``
  little-endian float32 values, with or without a newline after each vector;
* ``"npy"``: a 2-D numeric numpy array, with keys (one per line) from a separate file, or none.

Any of them may be compressed with gzip, bz2 or xz (recognised by their whole magic numbers,
see :mod:`embq._input`, which every input file goes through); damaged or cut compressed data,
and data after the end of the compressed stream, are refused alike for the three. A native
fastText model (``.bin`` starting with fastText's magic number) is refused with a hint. Pipes
work like files (``-`` is standard input), and a UTF-8 byte order mark at the start of a text
file is skipped.

Files are read in blocks of rows: memory stays bounded by the block size whatever the file
size. Text is parsed by :mod:`embq._kernels_parse` (values exactly as
``numpy.float32(float(token))``), keys are decoded one ``str`` per row.
"""

from __future__ import annotations

import ast
import codecs
import mmap
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from embq._errors import FormatError
from embq._formats import MATRIX_FORMATS
from embq._input import DamagedInput, Input, printable

__all__ = [
    "FORMATS",
    "MAX_DIM",
    "Block",
    "EmbeddingReader",
    "detect_format",
    "load_embeddings",
    "open_embeddings",
]

FORMATS = ("word2vec", "glove", "word2vec-binary", "npy", *MATRIX_FORMATS)
UNICODE_ERRORS = ("strict", "replace", "ignore")
FASTTEXT_MAGIC = 0x2F4F16BA
#: The largest number of values per row accepted. Real embeddings have at most a few
#: thousand; a header claiming more is a damaged or misread file, and refusing it keeps the
#: row buffers (4 bytes a value) bounded whatever the header says.
MAX_DIM = 1 << 20
_NPY_MAGIC = b"\x93NUMPY"
_UTF8_BOM = b"\xef\xbb\xbf"
_SNIFF_BYTES = 1 << 16
_BUFFER_BYTES = 8 << 20
_BLOCK_FLOAT_BYTES = 16 << 20
# A text line of MAX_DIM values takes about 16 MB; no valid line gets near this, and the
# buffer never grows past it (a file without newlines would otherwise be read whole).
_MAX_LINE_BYTES = 64 << 20
# During detection, the longest key looked for before a binary record's space.
_DETECT_KEY_BYTES = 1 << 12
# Bytes no text line holds (tab and carriage return are fine); float32 data nearly always does.
_TEXT_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")
# A byte >= 0x80 after the first field of a line: keys may be UTF-8, numbers are ASCII, and
# half the bytes of float32 data are >= 0x80.
_HIGH_IN_VALUES = re.compile(rb"(?m)^[^ \t\r\n]*[ \t\r][^\n]*?[\x80-\xff]")
# Bytes word2vec never writes inside a binary key (it splits words on whitespace).
_KEY_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f]")
_FIELD_SEP = re.compile(rb"[ \t\r]+")
_INT = re.compile(rb"[+-]?[0-9]+")


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


_SCAN_BYTES = 1 << 20  # read size of the newline scans below


def count_newlines(path: str, start: int, stop: int) -> int:
    """Newlines in bytes ``[start, stop)`` of the file ``path``."""
    n = 0
    with open(path, "rb") as f:
        f.seek(start)
        left = stop - start
        while left > 0:
            chunk = f.read(min(_SCAN_BYTES * 8, left))
            if not chunk:
                break
            n += chunk.count(b"\n")
            left -= len(chunk)
    return n


def line_end(path: str, at: int, stop: int) -> int:
    """The offset just past the newline that ends the line holding byte ``at`` of ``path``
    (``stop`` when no newline comes before it)."""
    with open(path, "rb") as f:
        f.seek(at)
        pos = at
        while pos < stop:
            chunk = f.read(min(_SCAN_BYTES, stop - pos))
            if not chunk:
                break
            nl = chunk.find(b"\n")
            if nl >= 0:
                return pos + nl + 1
            pos += len(chunk)
    return stop


class _RangeInput:
    """Bytes ``[start, stop)`` of an uncompressed file, read the way a reader reads its
    :class:`~embq._input.Input` (``raw_bytes`` counts file offsets, as for the whole file)."""

    compression = None
    closed = False

    def __init__(self, path: str, start: int, stop: int) -> None:
        self.path = path
        self._f = open(path, "rb", buffering=0)
        self._f.seek(start)
        self._left = stop - start
        self.raw_bytes = start

    def readinto(self, b) -> int:
        with memoryview(b) as view:
            n = min(view.nbytes, self._left)
            if n <= 0:
                return 0
            got = self._f.readinto(view[:n]) or 0
        self._left -= got
        self.raw_bytes += got
        return got

    def close(self) -> None:
        self.closed = True
        self._f.close()


class Block(NamedTuple):
    """One block of rows read from an embedding file.

    ``keys`` is a list of ``str`` (``None`` for a ``.npy`` without a keys file), ``vectors``
    a float32 array ``(rows, dim)``, ``first_line`` the 1-based line of the block's first row
    (text formats: its line in the file; word2vec binary: the record number plus one for the
    header, the line the C tool would have written it on; ``.npy``: the row number plus one,
    its line in the keys file). ``offsets`` holds the byte offset of each row in the
    (decompressed) file, an int64 array, or ``None`` where a row has no single place (a
    Fortran-ordered ``.npy``).
    """

    keys: list[str] | None
    vectors: np.ndarray
    first_line: int
    offsets: np.ndarray | None = None


# --------------------------------------------------------------------------------------------
# format detection (files are opened by embq._input)


def _is_float(tok: bytes) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True


def _fields(line: bytes) -> list[bytes]:
    """The whitespace-separated fields of a line, split as the text parser splits them."""
    line = line.strip(b" \t\r")
    return _FIELD_SEP.split(line) if line else []


def _header_of(line: bytes) -> tuple[int, int] | None:
    """``(count, dim)`` when the line is two integers (maybe negative, checked later)."""
    toks = _fields(line)
    if len(toks) == 2 and all(_INT.fullmatch(t) for t in toks):
        return int(toks[0]), int(toks[1])
    return None


def _header_problem(line: bytes) -> str | None:
    """What is wrong with a header line, or None when it is a valid ``count dim``."""
    toks = _fields(line)
    header = _header_of(line)
    if header is not None:
        count, dim = header
        if count < 0:
            return f"the header gives count {count}; expected a count >= 0"
        if dim < 1:
            return f"the header gives dim {dim}; expected at least 1"
        if dim > MAX_DIM:
            return (f"the header gives dim {dim:,}; embq reads at most {MAX_DIM:,} values "
                    "per row (is the header right?)")
        return None
    if len(toks) == 2:
        bad = next(t for t in toks if not _INT.fullmatch(t))
        return (f"the header {printable(line)!r} holds {printable(bad)!r}, which is not an "
                "integer; expected 'count dim' (two integers)")
    return (f"expected a 'count dim' header (two integers), found {printable(line)!r} "
            f"({_plural(len(toks), 'field')})")


def _lines_end(data: bytes, n: int) -> int:
    """The offset just past the first ``n`` lines of ``data`` (or its length)."""
    end = 0
    for _ in range(n):
        nl = data.find(b"\n", end)
        if nl < 0:
            return len(data)
        end = nl + 1
    return end


def _first_row_is_text(rest: bytes, dim: int, at_eof: bool) -> bool:
    """Is the first line after a header a text row: a key and ``dim`` fields, no control bytes?

    The fields need not be numbers: a text file with a bad value on its first row is still a
    text file, and the text parser then names the value.
    """
    nl = rest.find(b"\n")
    line = rest if nl < 0 else rest[:nl]
    if _TEXT_CONTROL.search(line):
        return False
    n = len(_fields(line))
    if nl < 0 and not at_eof:  # the line goes on past what was read: consistent so far
        return 1 <= n <= dim + 1
    return n == dim + 1


def _binary_records_consistent(data: bytes, count: int, dim: int, at_eof: bool) -> bool:
    """Do the bytes read look like ``count`` records of key, space and ``4 * dim`` bytes?

    Checks the record structure only (never the value bytes): every key non-empty, free of
    control bytes and ended by a space within a few KB, each record followed by the next one
    (after optional newlines). A record or key that runs past the bytes read is consistent
    so far (a file cut in a record is still a binary file, reported as cut).
    """
    return _binary_chain(data, count, dim, at_eof, cut_record_ok=True)[0]


def _w2v_kind(rest: bytes, count: int, dim: int, at_eof: bool) -> str:
    """After a valid ``count dim`` header: ``"word2vec"`` (text) or ``"word2vec-binary"``.

    Text rows hold no control bytes, and only ASCII after the key. ``4 * dim`` bytes of real
    float32 vectors are never like that (every negative value has a byte >= 0x80, one byte
    in eight is a control byte), so announced rows like that are text, whether or not their
    fields are numbers: a text file with a bad value or a wrong count of values is still text,
    and the text parser names the problem (instead of binary garbage being stored). Other
    data is binary when its record structure is consistent (key, space, ``4 * dim`` bytes,
    chained), whatever the characters of the values.
    """
    if not rest.strip() or count == 0:
        return "word2vec-binary" if _TEXT_CONTROL.search(rest) else "word2vec"
    rows_end = _lines_end(rest, count)
    if not (_TEXT_CONTROL.search(rest, 0, rows_end) or _HIGH_IN_VALUES.search(rest, 0, rows_end)):
        return "word2vec"
    if _binary_records_consistent(rest, count, dim, at_eof):
        return "word2vec-binary"
    if _first_row_is_text(rest, dim, at_eof):
        return "word2vec"  # a text row first, odd bytes further on: the parser names them
    # Neither fits: binary records that do not match the header's dim, or a text row with
    # the wrong number of values. The parser of the likelier one names the problem.
    nl = rest.find(b"\n")
    first = rest if nl < 0 else rest[:nl]
    return ("word2vec-binary" if _TEXT_CONTROL.search(first) or _HIGH_IN_VALUES.search(first)
            else "word2vec")


def _detect_head(head: bytes, path: str, compression: str | None, at_eof: bool = True) -> str:
    """The format of a file from its first bytes (``head``, after any BOM)."""
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
    rest = b"" if nl < 0 else head[nl + 1 :]
    header = _header_of(first)
    if header is not None and _header_problem(first) is None:
        return _w2v_kind(rest, header[0], header[1], at_eof)
    toks = _fields(first)
    # The second line, when it was read whole: GloVe rows all have the same number of fields.
    nl2 = rest.find(b"\n")
    second = rest[:nl2] if nl2 >= 0 else (rest if at_eof and rest.strip() else None)
    # A line with control bytes is no GloVe row, whatever its fields.
    second_toks = None if second is None or _TEXT_CONTROL.search(second) else _fields(second)
    if header is not None:
        # Two integers but a bad header ('-3 3', '3 0', a huge dim), unless the next line is
        # a row of the same shape (GloVe of dim 1 with numeric keys).
        if second_toks is None or len(second_toks) != len(toks):
            raise FormatError(_header_problem(first), path=path, line=1)
    elif (2 <= len(toks) <= 3 and all(_is_float(t) for t in toks)
          and second_toks is not None and len(second_toks) != len(toks)):
        # Only numbers, like a header ('2.0 3', '2 3 4'), and the next line is not a row of
        # the same shape (GloVe with numeric keys): a bad header.
        raise FormatError(
            f"{_header_problem(first)}; line 2 has {_plural(len(second_toks), 'field')}, so "
            "line 1 is not a GloVe row either", path=path, line=1)
    if len(toks) >= 2 and not _TEXT_CONTROL.search(first) and (
        all(_is_float(t) for t in toks[1:])
        or (second_toks is not None and len(second_toks) == len(toks))
    ):
        # A key and numbers, or a key and fields repeated in the same shape on line 2 (a GloVe
        # file with a bad value on line 1, which the parser then names).
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


def _is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")


def _strip_bom(head: bytes, encoding: str) -> int:
    """Bytes of UTF-8 byte order mark at the start of ``head`` to skip (0 or 3)."""
    return len(_UTF8_BOM) if head.startswith(_UTF8_BOM) and _is_utf8(encoding) else 0


def detect_format(path: str | os.PathLike, encoding: str = "utf8") -> str:
    """Say which embedding format a file holds, from its content.

    Parameters
    ----------
    path : str or os.PathLike
        The file (possibly gzip, bz2 or xz compressed); ``"-"`` is standard input.
    encoding : str
        Text encoding of the file; with UTF-8 a leading byte order mark is skipped.

    Returns
    -------
    str
        One of ``"word2vec"``, ``"glove"``, ``"word2vec-binary"``, ``"npy"``.

    Raises
    ------
    FormatError
        For an empty file, a native fastText model, damaged compressed data, a bad header
        line, or content in none of these formats.
    OSError
        When the file cannot be read.
    """
    from embq._formats import sniff_format

    matrix = sniff_format(os.fspath(path))
    if matrix is not None:
        return matrix
    inp = Input(os.fspath(path))
    try:
        head = inp.read_exact(_SNIFF_BYTES)
        skip = _strip_bom(head, encoding)
        return _detect_head(head[skip:], inp.path, inp.compression,
                            at_eof=len(head) < _SNIFF_BYTES)
    finally:
        inp.close()


# --------------------------------------------------------------------------------------------
# the reader


def _guess_binary_dim(data: bytes, count: int, whole: bool, dim: int) -> int | None:
    """The dim, other than ``dim``, whose records best fit the first bytes of binary data.

    ``data`` is the start of the records (right after the header), ``whole`` says it is all
    of them. A dim counts when at least two records (or all ``count``) chain, and, for the
    whole data, end exactly at its end. With short keys, a multiple of the real dim can
    chain too (every record then swallows several), but over fewer records: the dim that
    explains the most records wins, the smallest on a tie. Used only to explain an error.
    """
    need = min(count, 2)
    if need < 1:
        return None
    best = None  # (records, -dim)
    for d in range(1, min(MAX_DIM, max(0, (len(data) - 2 * need) // (4 * need))) + 1):
        if d == dim:
            continue
        ok, n, end = _binary_chain(data, count, d, whole)
        if not ok or n < need or (whole and data[end:].strip(b"\r\n")):
            continue
        if best is None or (n, -d) > best:
            best = (n, -d)
    return None if best is None else -best[1]


def _binary_chain(data: bytes, count: int, dim: int, whole: bool,
                  cut_record_ok: bool = False) -> tuple[bool, int, int]:
    """Follow whole records of dim ``dim`` through ``data``: (consistent, records, end).

    When ``data`` is the whole file, a record cut by its end is inconsistent unless
    ``cut_record_ok`` (format detection: a cut binary file is still binary).
    """
    rec = 4 * dim
    pos = 0
    n = 0
    size = len(data)
    while n < count:
        while pos < size and data[pos] in (10, 13):
            pos += 1
        if pos >= size:
            return True, n, pos
        sp = data.find(b" ", pos, pos + _DETECT_KEY_BYTES + 1)
        if sp < 0:
            return not whole and size - pos <= _DETECT_KEY_BYTES, n, pos
        if sp == pos or _KEY_CONTROL.search(data, pos, sp):
            return False, n, pos
        if sp + 1 + rec > size:
            return cut_record_ok or not whole, n, pos
        pos = sp + 1 + rec
        n += 1
    return True, n, pos


# .npy headers are parsed here, not by numpy: its parser is private API (and fails on hostile
# headers with whatever it meets, AttributeError and tokenize.TokenError included). The format:
# magic, major and minor version bytes, the header length (uint16 little-endian for 1.0,
# uint32 for 2.0 and 3.0), then the header: a Python dict literal, latin-1 (1.0, 2.0) or
# UTF-8 (3.0), padded with spaces and ended by a newline.
_NPY_VERSIONS = {(1, 0): 2, (2, 0): 4, (3, 0): 4}  # version -> bytes of the length field
# numpy writes headers of a few hundred bytes; np.load refuses more than 10,000 by default.
_NPY_MAX_HEADER = 1 << 16
_NPY_KEYS = frozenset({"descr", "fortran_order", "shape"})
# Numeric dtypes whose values convert to float32 without surprise; long double (f16, f12) is
# platform-dependent, complex, bool, datetime, object and structured dtypes are refused.
_NPY_DESCR = re.compile(r"[<>|=]?(?:f[248]|[iu][1248])")
_NPY_EXPECTED = ("expected a .npy header dict {'descr': '<f4', 'fortran_order': False, "
                 "'shape': (rows, dim)}")


def _npy_header_end(head: bytes, path: str) -> int:
    """Bytes from the start of the file to the end of the .npy header (checks the prefix)."""
    if not head.startswith(_NPY_MAGIC):
        raise FormatError(f"not a .npy file (no {_NPY_MAGIC!r} magic at the start)",
                          path=path, offset=0)
    if len(head) < 8:
        raise FormatError("the file ends inside the .npy magic and version; expected a .npy "
                          "header to follow", path=path, offset=len(head))
    version = (head[6], head[7])
    width = _NPY_VERSIONS.get(version)
    if width is None:
        raise FormatError(f".npy format version {version[0]}.{version[1]}; expected 1.0, 2.0 "
                          "or 3.0", path=path, offset=6)
    start = 8 + width
    if len(head) < start:
        raise FormatError(f"the file ends inside the .npy header length (version "
                          f"{version[0]}.{version[1]}); expected {width} bytes there",
                          path=path, offset=len(head))
    size = int.from_bytes(head[8:start], "little")
    if size > _NPY_MAX_HEADER:
        raise FormatError(f"the .npy header length is {size:,} bytes; expected at most "
                          f"{_NPY_MAX_HEADER:,} (a header is a short dict)", path=path, offset=8)
    return start + size


def _parse_npy_header(head: bytes, path: str) -> tuple[tuple[int, int], bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, data offset)`` from the start of a .npy file.

    Every malformed header is a :class:`FormatError` saying what was expected.
    """
    end = _npy_header_end(head, path)
    version = (head[6], head[7])
    start = 8 + _NPY_VERSIONS[version]
    if len(head) < end:
        raise FormatError(f"the file ends inside the .npy header: {end - start:,} bytes of "
                          f"header announced, {len(head) - start:,} present; expected the "
                          "whole header (the file is truncated)", path=path, offset=len(head))
    raw = head[start:end]
    encoding = "utf8" if version == (3, 0) else "latin1"
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise FormatError(f"the .npy header is not valid UTF-8 ({exc.reason}); format 3.0 "
                          "headers are UTF-8", path=path, offset=start + exc.start) from None
    try:
        header = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        reason = type(exc).__name__ + (f": {exc}" if str(exc) else "")
        raise FormatError(f"the .npy header {printable(raw, 60)!r} is not a Python literal "
                          f"({printable(reason.encode(), 80)}); {_NPY_EXPECTED}",
                          path=path, offset=start) from None
    if not isinstance(header, dict):
        raise FormatError(f"the .npy header is a {type(header).__name__}, not a dict; "
                          f"{_NPY_EXPECTED}", path=path, offset=start)
    keys = set(header)
    if keys != _NPY_KEYS:
        have = ", ".join(sorted(map(repr, keys)))
        odd = ", ".join(sorted(map(repr, keys ^ _NPY_KEYS)))
        raise FormatError(f"the .npy header has keys {{{printable(have.encode(), 80)}}} (not "
                          f"matching: {printable(odd.encode(), 80)}); {_NPY_EXPECTED}",
                          path=path, offset=start)
    descr, fortran, shape = header["descr"], header["fortran_order"], header["shape"]
    if not isinstance(descr, str) or not _NPY_DESCR.fullmatch(descr):
        raise FormatError(f"the .npy header gives descr {printable(repr(descr).encode())}; "
                          "expected a float or integer dtype such as '<f4', '<f8', '<f2' or "
                          "'<i2'", path=path, offset=start)
    if not isinstance(fortran, bool):
        raise FormatError(f"the .npy header gives fortran_order "
                          f"{printable(repr(fortran).encode())}; expected True or False",
                          path=path, offset=start)
    if not (isinstance(shape, tuple)
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        raise FormatError(f"the .npy header gives shape {printable(repr(shape).encode())}; "
                          "expected a tuple of non-negative integers", path=path, offset=start)
    if len(shape) != 2:
        raise FormatError(f"the array has shape {shape}; expected 2-D (rows, dim)", path=path)
    return shape, fortran, np.dtype(descr), end


def _range_arg(value, name: str, unit: str) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        a, b = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (start, stop) of {unit}, got {value!r}") \
            from None
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in (a, b)) \
            or not 0 <= a <= b:
        raise ValueError(f"{name} must be a pair (start, stop) of {unit} with "
                         f"0 <= start <= stop, got {value!r}")
    return int(a), int(b)


class EmbeddingReader:
    """An embedding file opened for reading in blocks of rows.

    Iterate to get :class:`Block` objects; use as a context manager (or call :meth:`close`).
    Created by :func:`open_embeddings`, which documents the parameters.

    Attributes
    ----------
    path : str
        The file (``"<stdin>"`` for ``"-"``).
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
        Bytes of the file on disk (for a pipe: the bytes read from it so far, all of them
        once the rows are read).
    rows_read : int
        Rows yielded so far.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        format: str | None = None,  # mirrors the CLI option
        limit: int | None = None,
        encoding: str = "utf8",
        unicode_errors: str = "strict",
        block_rows: int | None = None,
        byte_range: tuple[int, int] | None = None,
        first_line: int | None = None,
        row_range: tuple[int, int] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.keys_path: str | None = None  # keys files are attached by open_embeddings
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
        byte_range = _range_arg(byte_range, "byte_range", "bytes")
        row_range = _range_arg(row_range, "row_range", "rows")
        if first_line is not None and byte_range is None:
            raise ValueError("first_line is the line of the first row of a byte_range; give "
                             "byte_range too")
        if first_line is not None and (isinstance(first_line, bool)
                                       or not isinstance(first_line, (int, np.integer))
                                       or first_line < 1):
            raise ValueError(f"first_line must be a line number (>= 1), got {first_line!r}")
        if limit is not None and (byte_range or row_range):
            raise ValueError("limit cannot be combined with byte_range or row_range (a range "
                             "says which rows to read)")
        if byte_range and row_range:
            raise ValueError("give byte_range (text files) or row_range (.npy), not both")
        self.limit = limit
        self.encoding = encoding
        self.unicode_errors = unicode_errors
        self._block_rows_arg = block_rows
        self.rows_read = 0
        self._stop_row: int | None = None
        self.count: int | None = None
        self.dim = 0
        self._header_lines = 0
        self._closed = False
        self._iterated = False
        self._input: Input | None = None
        self._npy: np.ndarray | None = None
        self._mmap: mmap.mmap | None = None
        self._data_head = b""
        self._data_head_whole = False
        self._regular = self.path != "-" and os.path.isfile(self.path)
        self._size = os.path.getsize(self.path) if self._regular else 0
        self._input = Input(self.path)
        self.path = self._input.path
        self.compression = self._input.compression
        try:
            head = self._input.read_exact(_SNIFF_BYTES)
            at_eof = len(head) < _SNIFF_BYTES
            # A UTF-8 byte order mark (Windows editors write one) is not part of the first
            # key or header; offsets stay those of the file.
            skip = _strip_bom(head, encoding)
            self.format = format if format is not None else _detect_head(
                head[skip:], self.path, self.compression, at_eof)
            if self.format == "npy":
                self._open_npy(head)
            else:
                self._buf = bytearray(max(_BUFFER_BYTES, len(head) + 1))
                self._buf[: len(head)] = head
                self._len = len(head)
                self._pos = skip
                self._base = 0  # stream offset of _buf[0]
                self._eof = at_eof
                self._read_header()
                if self.format == "word2vec-binary":
                    # Kept to explain errors: which dim the first records really have.
                    self._data_head = bytes(self._buf[self._pos : self._len])
                    self._data_head_whole = self._eof
            if byte_range is not None:
                self._seek_byte_range(*byte_range, first_line)
            if row_range is not None:
                self._seek_row_range(*row_range)
        except BaseException:
            self.close()
            raise
        if self._block_rows_arg is None:
            self.block_rows = int(max(1, min(8192, _BLOCK_FLOAT_BYTES // (4 * max(self.dim, 1)))))
        else:
            self.block_rows = int(self._block_rows_arg)

    # ---------------------------------------------------------------- generic buffer handling

    def _fill(self) -> int:
        """Move unread bytes to the front of the buffer, read more; return bytes read."""
        if self._pos > 0:
            n = self._len - self._pos
            self._buf[:n] = self._buf[self._pos : self._len]
            self._base += self._pos
            self._pos = 0
            self._len = n
        if self._len == len(self._buf):
            # A line (or record) longer than the buffer: grow it, but not without bound, or a
            # file without newlines would be read into memory whole.
            if len(self._buf) >= _MAX_LINE_BYTES:
                what = ("a record longer than" if self.format == "word2vec-binary"
                        else "no end of line within")
                raise FormatError(
                    f"{what} {_MAX_LINE_BYTES >> 20} MB from here; no row of an embedding file "
                    f"is that long (at most {MAX_DIM:,} values)", path=self.path,
                    offset=self._base)
            self._buf.extend(bytes(min(len(self._buf), _MAX_LINE_BYTES - len(self._buf))))
        with memoryview(self._buf) as view:
            got = self._input.readinto(view[self._len :])
        self._len += got
        return got

    @property
    def size(self) -> int:  # documented with the class attributes
        if self._regular or self._input is None:
            return self._size
        return self._input.raw_bytes

    @property
    def has_keys(self) -> bool:
        """Whether the blocks carry keys (all formats but ``.npy`` without a keys file)."""
        return self.format != "npy"

    @property
    def bytes_read(self) -> int:
        """Bytes of the file on disk consumed so far (compressed bytes for compressed input)."""
        if self._closed:
            return self.size
        if self._npy is not None:
            return int(self.size * self.rows_read / max(self.count or 1, 1))
        return self._input.raw_bytes

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
            if line is None or not line.strip():
                raise FormatError(
                    "the file is empty; expected a 'count dim' header line", path=self.path,
                    line=1,
                )
            problem = _header_problem(line)
            if problem is not None:
                raise FormatError(
                    problem + ("; this looks like GloVe (no header): use --format glove"
                               if len(_fields(line)) > 2 else ""),
                    path=self.path, line=1,
                )
            self.count, self.dim = _header_of(line)
            self._header_lines = 1
        else:  # glove: the dimension is the number of values on the first line
            start = self._base + self._pos  # reading the line may move the buffer
            line = self._next_line()
            if line is None or not line.strip():
                raise FormatError("empty line; expected 'KEY value value ...'",
                                  path=self.path, line=1)
            self._pos = start - self._base
            toks = _fields(line)
            if len(toks) < 2:
                raise FormatError(
                    f"expected a key followed by values, found {printable(line)!r}",
                    path=self.path, line=1,
                )
            if len(toks) - 1 > MAX_DIM:
                raise FormatError(
                    f"the line holds {len(toks) - 1:,} values; embq reads at most {MAX_DIM:,} "
                    "values per row", path=self.path, line=1)
            self.dim = len(toks) - 1
            self.count = None
            self._header_lines = 0

    def _seek_byte_range(self, start: int, stop: int, first_line: int | None) -> None:
        """Read only the lines that start in bytes ``[start, stop)`` (after the header) of an
        uncompressed text file; rows, lines and offsets stay those of the whole file."""
        if self.format not in ("word2vec", "glove") or self.compression is not None \
                or not self._regular:
            raise ValueError(f"byte_range reads part of an uncompressed word2vec or GloVe "
                             f"text file; {self.path} is a {self._kind()} input")
        data_start = self._base + self._pos
        start, stop = max(start, data_start), min(stop, self._size)
        if start > data_start and self._byte_at(start - 1) != b"\n":
            start = line_end(self.path, start, self._size)   # the next line's start
        if stop > start and self._byte_at(stop - 1) != b"\n":
            stop = line_end(self.path, stop - 1, self._size)   # the last line read whole
        stop = max(start, stop)
        if first_line is None:
            first_line = self._header_lines + 1 + count_newlines(self.path, data_start, start)
        self._input.close()
        self._input = _RangeInput(self.path, start, stop)
        self._pos = self._len = 0
        self._base = start
        self._eof = False
        self.count = None   # a part of the file: the header's count is for the whole file
        self.rows_read = first_line - 1 - self._header_lines

    def _kind(self) -> str:
        """``"gzip-compressed word2vec"``, ``"npy stream"``...: what this input is."""
        return ((f"{self.compression}-compressed " if self.compression else "") + self.format
                + ("" if self._regular else " stream"))

    def _byte_at(self, offset: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(1)

    def _seek_row_range(self, start: int, stop: int) -> None:
        """Read only rows ``[start, stop)`` of an uncompressed .npy file (row numbers and
        offsets stay those of the whole array)."""
        if self.format != "npy" or self._npy is None:
            raise ValueError(f"row_range reads part of an uncompressed .npy file; {self.path} "
                             f"is a {self._kind()} input")
        if stop > self.count:
            raise ValueError(f"row_range ({start}, {stop}) reaches past the "
                             f"{_plural(self.count, 'row')} of {self.path}")
        self.rows_read = start
        self._stop_row = stop

    def _open_npy(self, head: bytes) -> None:
        need = _npy_header_end(head, self.path)
        if len(head) < need:  # a header longer than the detection read (or a cut file)
            head += self._input.read_exact(need - len(head))
        shape, fortran, dtype, data_offset = _parse_npy_header(head, self.path)
        if shape[1] < 1:
            raise FormatError(f"the array has shape {shape}; expected at least one column",
                              path=self.path)
        if shape[1] > MAX_DIM:
            raise FormatError(f"the array has shape {shape}; expected at most {MAX_DIM:,} "
                              "values per row (embq's limit; is the header right?)",
                              path=self.path)
        n, d = shape
        self.count, self.dim = n, d
        self._npy_dtype = dtype
        self._data_offset = data_offset
        self._row_bytes = d * dtype.itemsize
        self._npy_fortran = bool(fortran) and n > 1 and d > 1
        total = n * self._row_bytes
        order = "F" if self._npy_fortran else "C"
        if self._regular and self.compression is None:
            have = self._size - self._data_offset
            if have != total:
                raise FormatError(
                    f"the header announces {_plural(n, 'row')} x {d} of {dtype} "
                    f"({total:,} bytes of data) but {have:,} bytes follow it"
                    + (f" ({_plural(have // self._row_bytes, 'complete row')}); the file is "
                       "truncated" if have < total else "; expected the end of the file there"),
                    path=self.path, offset=self.size if have < total else self._data_offset + total)
            self._input.close()
            self._npy = self._map(self.path, self._data_offset, shape, dtype, order)
        else:
            self._pending = head[self._data_offset :]  # data already read with the header
            if self._npy_fortran:
                self._npy = self._spool_fortran(shape, dtype, total)

    def _map(self, path_or_fd, offset: int, shape, dtype, order: str) -> np.ndarray:
        # A map of our own, so the pages of rows already handed out can be dropped from this
        # process (madvise DONTNEED): otherwise every page read stays in the RSS and the peak
        # grows to the size of the file.  Dropped pages stay in the page cache and the data
        # stays valid; a later read of them simply maps them again.
        if shape[0] * shape[1] == 0:
            return np.empty(shape, dtype)
        if isinstance(path_or_fd, int):
            self._mmap = mmap.mmap(path_or_fd, 0, access=mmap.ACCESS_READ)
        else:
            with open(path_or_fd, "rb") as f:
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return np.ndarray(shape, dtype, buffer=self._mmap, offset=offset, order=order)

    def _spool_fortran(self, shape, dtype, total: int) -> np.ndarray:
        # A Fortran-ordered array stores columns, so no row is complete before the last
        # column arrives. Unpacked into an anonymous temporary file (never visible, removed by
        # the system however the process ends) and mapped, so memory stays bounded.
        with tempfile.TemporaryFile(prefix="embq-npy-") as spool:
            done = 0
            while done < total:
                data = self._read_npy_data(min(_BLOCK_FLOAT_BYTES, total - done))
                if not data:
                    raise FormatError(
                        f"the array data ends after {done:,} of {total:,} bytes (a "
                        f"Fortran-ordered array of {_plural(shape[0], 'row')} x {shape[1]}); "
                        "the file is truncated", path=self.path, offset=self._data_offset + done)
                spool.write(data)
                done += len(data)
            self._check_npy_end()
            spool.flush()
            return self._map(spool.fileno(), 0, shape, dtype, "F")

    def _read_npy_data(self, n: int) -> bytes:
        """Up to ``n`` bytes of a streamed array's data (fewer only at the end)."""
        if self._pending:
            data, self._pending = self._pending[:n], self._pending[n:]
            if len(data) < n:
                data += self._input.read_exact(n - len(data))
            return data
        return self._input.read_exact(n)

    def _check_npy_end(self) -> None:
        if self._read_npy_data(1):
            raise FormatError(
                f"more data follows the {_plural(self.count, 'row')} x {self.dim} the .npy "
                "header announces; expected the end of the file",
                path=self.path, offset=self._data_offset + self.count * self._row_bytes)

    # ---------------------------------------------------------------- iteration

    def __iter__(self) -> Iterator[Block]:
        if self._closed:
            raise ValueError(f"I/O operation on a closed reader ({self.path})")
        if self._iterated:
            raise ValueError("an EmbeddingReader can be iterated only once; open the file again")
        self._iterated = True
        if self.format == "npy":
            blocks = self._iter_npy()
        elif self.format == "word2vec-binary":
            blocks = self._iter_binary()
        else:
            blocks = self._iter_text()
        return blocks if self.compression is None else self._explain_by_damage(blocks)

    def _explain_by_damage(self, blocks: Iterator[Block]) -> Iterator[Block]:
        # Damaged deflate data often decompresses to garbage that the parser trips over before
        # the CRC at the end of the stream is checked: the damage is the news, so look ahead.
        try:
            yield from blocks
        except DamagedInput:
            raise
        except FormatError as exc:
            damage = self._input.damage_ahead() if not self._input.closed else None
            if damage is None:
                raise
            found = str(exc)
            if found.startswith((self.path + ", ", self.path + ": ")):
                found = found[len(self.path) + 2 :]
            inner = str(damage)[len(self.path) + 2 :]
            raise DamagedInput(f"{inner}, which explains the error met first ({found})",
                                path=self.path) from None

    def _target_rows(self) -> int | None:
        """Rows to read in all: min(limit, header count), or None when unknown (GloVe); the
        end of a row_range."""
        caps = [c for c in (self.limit, self.count, self._stop_row) if c is not None]
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
        return f"row {row}"

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
                    # Misaligned binary records make garbage keys: then the dim is the advice.
                    advice = self._dim_hint() or ("; pass --unicode-errors replace (or "
                                                  "ignore), or the right --encoding")
                    raise FormatError(
                        f"key bytes {printable(raw)!r} of {self.describe_row(row)} are not valid "
                        f"{self.encoding} ({exc.reason} at byte {exc.start} of the key)" + advice,
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

    def _dim_hint(self) -> str:
        """For binary errors: name the dim the records seem to have, when it is not the header's."""
        if self.format != "word2vec-binary" or not self._data_head:
            return ""
        guess = _guess_binary_dim(self._data_head, self.count, self._data_head_whole, self.dim)
        if guess is None:
            return ""
        return (f"; the records look like dim {guess}, not the header's dim {self.dim}: is the "
                "header right?")

    def _count_mismatch(self, rows: int) -> FormatError:
        binary = self.format == "word2vec-binary"
        if rows == 0:
            what = (f"the header (line 1) announces {_plural(self.count, 'row')} but the file "
                    f"has no complete {'record' if binary else 'row'} after it; the file is "
                    "truncated or holds only its header")
        else:
            what = (f"the header (line 1) announces {_plural(self.count, 'row')} but the file "
                    f"ends after {rows:,}; the file may be truncated (use --limit {rows} to "
                    "read only the rows present)")
        return FormatError(
            what + (self._dim_hint() if binary else ""),
            path=self.path, line=None if binary else self.line_of_row(rows),
            offset=self._base + self._len if binary else None,
        )

    def _extra_rows(self) -> FormatError:
        if self.format == "word2vec-binary":
            return FormatError(
                f"the header (line 1) announces {_plural(self.count, 'row')} but more data "
                f"follows record {self.count:,}; fix the header count, or use --limit "
                f"{self.count} to read only the announced rows" + self._dim_hint(),
                path=self.path, offset=self._base + self._pos,
            )
        return FormatError(
            f"the header (line 1) announces {_plural(self.count, 'row')} but the file has more "
            f"rows; fix the header count, or use --limit {self.count} to read only the "
            "announced rows",
            path=self.path, line=self.line_of_row(self.count),
        )

    def _text_error(self, status: int, row: int, err_pos: int, err_count: int) -> FormatError:
        from embq import _kernels_parse as kp

        line = self.line_of_row(row)
        dim = self.dim
        values = _plural(dim, "value")
        hint = ""
        if row == 0 and self.format == "word2vec" and status in (kp.TOO_FEW, kp.TOO_MANY):
            hint = (f" (the header on line 1 gives dim {dim}; is the header right, or is this "
                    "a GloVe file without header? then use --format glove)")
        if status == kp.BLANK:
            return FormatError(
                f"empty line; expected a key followed by {values} (blank lines are allowed "
                "only at the end of the file)", path=self.path, line=line)
        if status == kp.EMPTY_KEY:
            return FormatError(
                f"the line starts with a space or tab: expected a key followed by {values}",
                path=self.path, line=line)
        if status == kp.TOO_FEW:
            return FormatError(
                f"expected {values} after the key, found {err_count}{hint}",
                path=self.path, line=line)
        if status == kp.TOO_MANY:
            return FormatError(
                f"expected {values} after the key, found {err_count}{hint}; keys cannot "
                "contain spaces", path=self.path, line=line)
        end = err_pos
        while end < self._len and self._buf[end] not in b" \t\r\n" and end - err_pos < 60:
            end += 1
        tok = printable(bytes(self._buf[err_pos:end]))
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
            offsets = np.empty(n, np.int64)
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
                offsets[row:rows_done] = ks[row:rows_done] + self._base
                row = rows_done
                self._pos = pos
                if status == kp.BLANK and self._rest_is_blank():
                    done = True
                    break
                if status != kp.OK:
                    raise self._text_error(status, first_row + row, err_pos, err_count)
            self.rows_read += row
            if row:
                yield Block(keys, out[:row], self.line_of_row(first_row), offsets[:row])
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
                rows_done, pos, status, bad = kp.parse_binary_block(
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
                        f"record {first_row + row + 1:,} starts with a space: expected a key, a "
                        f"space and {_plural(dim, 'float32 value')}" + self._dim_hint(),
                        path=self.path, offset=self._base + pos)
                if status == kp.KEY_TOO_LONG:
                    raise FormatError(
                        f"record {first_row + row + 1:,}: no space after the key within 1 MB; "
                        f"expected a key, a space and {4 * dim:,} bytes of float32 values (is dim "
                        f"{dim} in the header right?)", path=self.path, offset=self._base + pos)
                if status == kp.BAD_KEY:
                    raise self._bad_key(first_row + row, pos, bad)
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
                        f"record {first_row + i + 1:,} (key {keys[i]!r}) holds NaN or Inf; "
                        "expected finite values" + self._dim_hint(), path=self.path,
                        offset=int(offsets[i]))
            self.rows_read += row
            if row:
                yield Block(keys, out[:row], self.line_of_row(first_row), offsets[:row])
            if at_eof:
                rest = bytes(self._buf[self._pos : self._len])
                if rest.strip(b"\r\n"):
                    raise self._cut_record(rest)
                break
        self._check_end(target)

    def _bad_key(self, row: int, pos: int, bad: int) -> FormatError:
        key = bytes(self._buf[pos:bad + 1])
        byte = self._buf[bad]
        name = "a newline" if byte == 10 else f"the control byte 0x{byte:02x}"
        guess = self._dim_hint()
        return FormatError(
            f"the key of record {row + 1:,} ({key[-30:]!r}) holds {name}, which "
            "word2vec never writes inside a key: the records are not where the header's dim "
            f"puts them (key, space, then {4 * self.dim:,} bytes for dim {self.dim})"
            + (guess if guess else "; is the dim in the header (line 1) right?"),
            path=self.path, offset=self._base + bad)

    def _cut_record(self, rest: bytes) -> FormatError:
        dim = self.dim
        sp = rest.find(b" ")
        key = printable(rest[:sp]) if 0 < sp < 200 else None
        have = len(rest) - sp - 1 if sp >= 0 else 0
        if self.count is None:
            advice = ""
        elif self.rows_read == 0:
            advice = "; the file has no complete record"
        else:
            advice = (f"; the header announces {_plural(self.count, 'row')}, use --limit "
                      f"{self.rows_read} to read the complete ones")
        return FormatError(
            f"the file ends in the middle of record {self.rows_read + 1:,}"
            + (f" (key {key!r})" if key is not None else "")
            + f": expected {4 * dim:,} bytes of float32 values, found {max(have, 0):,}"
            + advice + self._dim_hint(),
            path=self.path, offset=self._base + self._pos)

    def _drop_mapped_pages(self) -> None:
        if self._mmap is not None and hasattr(mmap, "MADV_DONTNEED"):
            try:
                self._mmap.madvise(mmap.MADV_DONTNEED)
            except (OSError, ValueError):  # advice only: never fail a read over it
                pass

    def _iter_npy(self) -> Iterator[Block]:
        target = self._target_rows()
        dim = self.dim
        dtype = self._npy_dtype
        row_bytes = self._row_bytes
        while True:
            n = self._block_size(target)
            if n <= 0:
                break
            r0 = self.rows_read
            if self._npy is not None:
                chunk = self._npy[r0 : r0 + n]
            else:
                want = n * row_bytes
                data = self._read_npy_data(want)
                if len(data) < want:
                    raise FormatError(
                        f"the array data ends after {r0 + len(data) // row_bytes:,} of the "
                        f"{_plural(self.count, 'row')} its header announces; the file is "
                        "truncated", path=self.path,
                        offset=self._data_offset + r0 * row_bytes + len(data))
                chunk = np.frombuffer(data, dtype=dtype).reshape(n, dim)
            with np.errstate(over="ignore", invalid="ignore"):
                vectors = np.ascontiguousarray(chunk, dtype=np.float32)
            offsets = (None if self._npy_fortran else
                       self._data_offset + (r0 + np.arange(n, dtype=np.int64)) * row_bytes)
            finite = np.isfinite(vectors).all(axis=1)
            if not finite.all():
                i = int(np.argmin(finite))
                bad = float(chunk[i][~np.isfinite(vectors[i])][0])
                raise FormatError(
                    f"row {r0 + i:,} holds {bad!r}, which is NaN, Inf or outside the float32 "
                    "range; expected finite values", path=self.path,
                    offset=None if offsets is None else int(offsets[i]))
            if self._mmap is not None and vectors.base is not None:
                vectors = vectors.copy()  # no views of the map escape, so close() can unmap it
            self._drop_mapped_pages()
            self.rows_read += n
            yield Block(None, vectors, r0 + 1, offsets)
        if (self.limit is None or self.limit >= self.count) and self._npy is None:
            self._check_npy_end()

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Close the files (calling it twice is fine)."""
        if self._closed:
            return
        self._closed = True
        if self._input is not None:
            try:
                self._input.close()
            except OSError:
                pass
        self._npy = None
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:  # a caller still holds a view of it; the GC closes it later
                pass
            self._mmap = None

    def __enter__(self) -> EmbeddingReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"<EmbeddingReader {self.path!r} format={self.format} dim={self.dim} "
                f"count={self.count} ({state})>")


def open_embeddings(
    path: str | os.PathLike,
    *,
    format: str | None = None,
    limit: int | None = None,
    encoding: str = "utf8",
    unicode_errors: str = "strict",
    keys_path: str | os.PathLike | None = None,
    block_rows: int | None = None,
    tensor: str | None = None,
    array: str | None = None,
    vector_column: str | None = None,
    key_column: str | None = None,
    byte_range: tuple[int, int] | None = None,
    first_line: int | None = None,
    row_range: tuple[int, int] | None = None,
) -> EmbeddingReader:
    """Open an embedding file for reading in blocks of rows.

    Parameters
    ----------
    path : str or os.PathLike
        The embedding file (possibly gzip/bz2/xz compressed); a pipe works too, and ``"-"``
        reads standard input.
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
        For ``.npy``, ``.npz`` and safetensors input: a text file with one key per line, one
        line per row, or a Hugging Face ``tokenizer.json`` (see :mod:`embq._keys`).
    block_rows : int, optional
        Rows per yielded block; by default 8192, fewer for wide rows (about 16 MB per block).
    tensor : str, optional
        safetensors: the 2-D tensor to read (default: the only 2-D floating one).
    array : str, optional
        ``.npz``: the array to read (default: the only one).
    vector_column, key_column : str, optional
        Parquet and Arrow: the column of vectors (default: the only list-of-floats column)
        and of keys (default: the only string column, or none).
    byte_range : (int, int), optional
        Uncompressed word2vec or GloVe text: read only the lines that start in bytes
        ``[start, stop)`` of the file after its header (a line that begins before ``stop``
        is read whole), so that consecutive ranges read every line once.  The header is
        read for the dimension; its count is not checked (``count`` is None).  Line numbers,
        rows and byte offsets in blocks and errors are those of the whole file.
    first_line : int, optional
        With ``byte_range``: the 1-based line number of the range's first line, when the
        caller knows it; otherwise it is found by counting the lines before ``start``.
    row_range : (int, int), optional
        Uncompressed ``.npy``: read only rows ``[start, stop)`` (row numbers stay those of
        the whole array); with ``keys_path``, the keys from its line ``start + 1`` on.

    Returns
    -------
    EmbeddingReader
        Iterate it for :class:`Block` objects; close it (or use ``with``). The matrix and
        columnar formats (:data:`embq._formats.MATRIX_FORMATS`) get readers with the same
        interface.

    Raises
    ------
    FormatError
        When the file is empty, in an unknown format, its compressed data is damaged, or its
        header is bad (a dim above :data:`MAX_DIM` included). Errors in rows are raised while
        iterating, naming the file, the line (or byte offset) and what was expected.
    OSError
        When a file cannot be read.
    """
    from embq._formats import KeysAttached, check_options, open_matrix, sniff_format

    where = os.fspath(path)
    fmt = format if format is not None else sniff_format(where)
    options = {"tensor": tensor, "array": array, "vector_column": vector_column,
               "key_column": key_column}
    if fmt in MATRIX_FORMATS:
        if byte_range is not None or row_range is not None:
            name = "byte_range" if byte_range is not None else "row_range"
            raise ValueError(f"{name} reads part of an uncompressed text or .npy file; "
                             f"{where} is {fmt} input")
        return open_matrix(where, fmt, limit=limit, block_rows=block_rows, encoding=encoding,
                           unicode_errors=unicode_errors, keys_path=keys_path, **options)
    reader = EmbeddingReader(path, format=format, limit=limit, encoding=encoding,
                             unicode_errors=unicode_errors, block_rows=block_rows,
                             byte_range=byte_range, first_line=first_line,
                             row_range=row_range)
    try:
        check_options(reader.format, reader.path, {**options, "keys_path": keys_path})
        if keys_path is not None:
            attached = KeysAttached(reader, os.fspath(keys_path), encoding=encoding,
                                    unicode_errors=unicode_errors)
            if row_range is not None and reader.rows_read:
                attached.skip_keys(reader.rows_read)
            return attached
    except BaseException:
        reader.close()
        raise
    return reader


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
        keys: list[str] | None = [] if reader.has_keys else None
        blocks = []
        for block in reader:
            blocks.append(block.vectors)
            if keys is not None:
                keys.extend(block.keys)
        dim = reader.dim
    vectors = np.concatenate(blocks) if blocks else np.empty((0, dim), np.float32)
    return keys, vectors
