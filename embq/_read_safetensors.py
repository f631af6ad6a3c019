"""Read one 2-D tensor of a safetensors file (``model.safetensors``) block by block.

The file: an 8-byte little-endian header length ``N``, ``N`` bytes of JSON mapping each tensor
name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets into the data that
follows the header; ``"__metadata__"`` holds strings), then the data. The header is checked
here before the file is handed to the ``safetensors`` library, so that a damaged or foreign
file gets one message naming the tensor and what was expected (the library's own messages
say "invalid offset" or "file not fully covered").

Rows are read through the library's slicing (``safe_open(...).get_slice(name)[a:b]``), never
the whole tensor. The library maps the file, and every page touched stays in the process's
memory until the map goes: the file is reopened every ~64 MB of rows, so memory stays bounded
whatever the tensor's size. bfloat16 has no numpy dtype and the library cannot slice it into
numpy: those rows are read from our own map of the file (at the offsets checked here) and
widened exactly (:func:`embq._read_common.widen_bfloat16`).
"""

from __future__ import annotations

import json
import math
import mmap
import os

import numpy as np

from embq._errors import FormatError
from embq._read_common import MatrixReader, file_size, plural, to_float32_rows, widen_bfloat16

__all__ = ["SafetensorsReader", "looks_like_safetensors", "read_header"]

# Itemsize of every dtype the format defines (the library refuses others).
_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
             "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
             "C64": 8}
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")
_NUMPY = {"F32": np.float32, "F16": np.float16, "F64": np.float64}
# The library's own ceiling on the header: no real header is near it.
MAX_HEADER = 100 << 20
# Bytes of rows read through one opening of the file before it is reopened (see above).
_REOPEN_BYTES = 64 << 20


def looks_like_safetensors(head: bytes) -> bool:
    """An 8-byte header length (at most :data:`MAX_HEADER`) followed by ``{``."""
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= MAX_HEADER and head[8:9] == b"{"


def _shape_text(shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def read_header(path: str) -> tuple[dict, int]:
    """The tensors of a safetensors file (name -> entry) and the offset of its data.

    Checks what makes the file readable: the header fits in the file and is a JSON object,
    each entry has a known dtype, a shape of sizes >= 0 and ``data_offsets`` that match the
    shape; the tensors neither overlap nor leave holes, and the data ends with the last one.
    Each failure is one :class:`FormatError` naming the tensor and what was expected.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise FormatError(f"the file holds {plural(size, 'byte')}; a safetensors file starts "
                              "with an 8-byte header length", path=path)
        n = int.from_bytes(head, "little")
        if n > size - 8:
            raise FormatError(
                f"the header length is {n:,} bytes but only {size - 8:,} follow it; the file is "
                "truncated or not safetensors", path=path, offset=0)
        if n > MAX_HEADER:
            raise FormatError(f"the header length is {n:,} bytes; safetensors headers are at "
                              f"most {MAX_HEADER:,}", path=path, offset=0)
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf8"))
    except UnicodeDecodeError as exc:
        raise FormatError(f"the header is not UTF-8 ({exc.reason} at byte {8 + exc.start}); "
                          "expected a JSON object", path=path) from None
    except json.JSONDecodeError as exc:
        raise FormatError(f"the header is not JSON ({exc.msg} at byte {8 + exc.pos}); "
                          "expected a JSON object", path=path) from None
    if not isinstance(header, dict):
        raise FormatError(f"the header is a JSON {type(header).__name__}; expected an object",
                          path=path)
    data_start = 8 + n
    data_size = size - data_start
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        what = f"tensor {name!r}"
        if not isinstance(entry, dict):
            raise FormatError(f"{what} is described by {entry!r}; expected an object with "
                              "dtype, shape and data_offsets", path=path)
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in _ITEMSIZE:
            raise FormatError(f"{what} has dtype {dtype!r}; expected one of "
                              f"{', '.join(_ITEMSIZE)}", path=path)
        if not (isinstance(shape, list) and all(isinstance(s, int) and not isinstance(s, bool)
                                                and s >= 0 for s in shape)):
            raise FormatError(f"{what} has shape {shape!r}; expected a list of sizes >= 0",
                              path=path)
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise FormatError(f"{what} has data_offsets {offsets!r}; expected [begin, end] "
                              "with 0 <= begin <= end", path=path)
        begin, end = offsets
        want = math.prod(shape) * _ITEMSIZE[dtype]
        if end - begin != want:
            raise FormatError(
                f"{what} ({dtype} {_shape_text(shape)}) needs {want:,} bytes but its "
                f"data_offsets [{begin}, {end}] hold {end - begin:,}", path=path)
        if end > data_size:
            raise FormatError(
                f"{what} ends at byte {end:,} of the data but the data holds {data_size:,} bytes; "
                "the file is truncated", path=path, offset=data_start + min(begin, data_size))
        tensors[name] = {"dtype": dtype, "shape": shape, "data_offsets": (begin, end)}
    pos, prev = 0, None
    for name, entry in sorted(tensors.items(), key=lambda kv: kv[1]["data_offsets"]):
        begin, end = entry["data_offsets"]
        if begin < pos:
            raise FormatError(f"tensor {name!r} (bytes {begin:,}..{end:,} of the data) overlaps "
                              f"tensor {prev!r} (which ends at {pos:,}); expected tensors side "
                              "by side", path=path)
        if begin > pos:
            raise FormatError(f"{begin - pos:,} bytes of the data before tensor {name!r} belong "
                              "to no tensor; expected tensors side by side", path=path,
                              offset=data_start + pos)
        pos, prev = end, name
    if pos != data_size:
        raise FormatError(f"{data_size - pos:,} bytes follow the last tensor's data; expected "
                          "the end of the file", path=path, offset=data_start + pos)
    return tensors, data_start


def _listing(tensors: dict) -> str:
    items = [f"{name} {_shape_text(t['shape'])} {t['dtype']}" for name, t in tensors.items()]
    return ", ".join(items[:12]) + (f", and {len(items) - 12:,} more" if len(items) > 12 else "")


class SafetensorsReader(MatrixReader):
    """A 2-D floating tensor of a safetensors file, read in blocks of rows."""

    def __init__(self, path: str, *, tensor: str | None = None, limit: int | None = None,
                 keys_path: str | None = None, encoding: str = "utf8",
                 unicode_errors: str = "strict", block_rows: int | None = None) -> None:
        from embq._readers import MAX_DIM

        super().__init__(path, "safetensors", limit, block_rows)
        self._size = file_size(path)
        self._open_file = None
        self._slice = None
        self._mmap: mmap.mmap | None = None
        self._bytes_since_open = 0
        try:
            tensors, self._data_start = read_header(path)
            self.tensor = self._pick(tensors, tensor)
            entry = tensors[self.tensor]
            self.dtype = entry["dtype"]
            rows, dim = entry["shape"]
            if dim < 1:
                raise FormatError(f"tensor {self.tensor!r} has shape {_shape_text([rows, dim])}; "
                                  "expected at least one column", path=path)
            if dim > MAX_DIM:
                raise FormatError(f"tensor {self.tensor!r} has {dim:,} columns; embq reads at "
                                  f"most {MAX_DIM:,} values per row", path=path)
            self.count, self.dim = rows, dim
            self._begin = entry["data_offsets"][0]
            self._set_block_rows()
            if self.dtype != "BF16":
                self._reopen()  # the library's own checks, once, before any row is read
            if keys_path is not None:
                from embq._keys import open_keys

                self.keys_path = os.fspath(keys_path)
                self._keys = open_keys(self.keys_path, rows,
                                       f"tensor {self.tensor!r} of {path}",
                                       encoding=encoding, unicode_errors=unicode_errors)
        except BaseException:
            self.close()
            raise

    def _pick(self, tensors: dict, name: str | None) -> str:
        where = self.path
        if name is not None:
            if name not in tensors:
                raise FormatError(f"no tensor named {name!r}; the file holds "
                                  f"{_listing(tensors) or 'no tensors'}", path=where)
            t = tensors[name]
            if len(t["shape"]) != 2:
                raise FormatError(f"tensor {name!r} has shape {_shape_text(t['shape'])} "
                                  f"({len(t['shape'])}-D); expected a 2-D tensor (rows, dim)",
                                  path=where)
            if t["dtype"] not in FLOAT_DTYPES:
                raise FormatError(f"tensor {name!r} has dtype {t['dtype']}; expected floats "
                                  f"({', '.join(FLOAT_DTYPES)})", path=where)
            return name
        two_d = {k: t for k, t in tensors.items() if len(t["shape"]) == 2}
        floats = [k for k, t in two_d.items() if t["dtype"] in FLOAT_DTYPES]
        if len(floats) == 1:
            return floats[0]
        if not floats:
            found = (f"its 2-D tensors are {_listing(two_d)}" if two_d
                     else f"it holds {_listing(tensors)}" if tensors else "it holds no tensors")
            raise FormatError(f"the file has no 2-D floating tensor ({', '.join(FLOAT_DTYPES)}); "
                              f"{found}", path=where)
        raise FormatError(
            f"the file holds {len(floats)} 2-D floating tensors "
            f"({_listing({k: two_d[k] for k in floats})}); pick one with --tensor NAME",
            path=where)

    def describe_row(self, row: int) -> str:
        return f"row {row:,} of tensor {self.tensor!r}" + (
            f" (line {row + 1:,} of {self.keys_path})" if self.keys_path else "")

    def _reopen(self) -> None:
        from safetensors import SafetensorError, safe_open

        self._slice = None
        self._open_file = None  # unmaps the pages read so far
        try:
            self._open_file = safe_open(self.path, framework="numpy")
            self._slice = self._open_file.get_slice(self.tensor)
        except SafetensorError as exc:
            raise FormatError(f"safetensors refuses the file: {exc}", path=self.path) from None
        self._bytes_since_open = 0

    def _rows(self, start: int, stop: int) -> np.ndarray:
        if self.dtype == "BF16":
            return self._bf16_rows(start, stop)
        if self._bytes_since_open >= _REOPEN_BYTES:
            self._reopen()
        chunk = self._slice[start:stop]
        self._bytes_since_open += chunk.nbytes
        return to_float32_rows(chunk, start, f"tensor {self.tensor!r}", self.path,
                               copy=chunk.dtype != np.float32)

    def _bf16_rows(self, start: int, stop: int) -> np.ndarray:
        if self._mmap is None:
            with open(self.path, "rb") as fh:
                self._mmap = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        row_bytes = 2 * self.dim
        at = self._data_start + self._begin + start * row_bytes
        bits = np.frombuffer(self._mmap, "<u2", count=(stop - start) * self.dim, offset=at)
        x = widen_bfloat16(bits).reshape(stop - start, self.dim)
        del bits
        if hasattr(mmap, "MADV_DONTNEED"):
            try:  # the pages read leave this process (they stay in the page cache)
                self._mmap.madvise(mmap.MADV_DONTNEED)
            except (OSError, ValueError):
                pass
        return to_float32_rows(x, start, f"tensor {self.tensor!r}", self.path, copy=False)

    def _close(self) -> None:
        self._slice = None
        self._open_file = None
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:  # a view still alive; the garbage collector unmaps it
                pass
            self._mmap = None
