"""Read embeddings from Parquet, Arrow IPC (files, Feather v2, streams) and Hugging Face datasets.

One column holds the vectors (a ``list``, ``large_list`` or ``fixed_size_list`` of float16,
float32 or float64), another, optionally, the keys (strings, or integers written as their
decimal strings). The input is one file, a directory of Parquet files, a glob of Parquet
files (read in name order as one input), or a folder written by ``datasets``'
``save_to_disk`` (``state.json`` lists its ``.arrow`` files, which are Arrow streams).

Parquet is read row group by row group through ``ParquetFile.iter_batches`` (buffered column
reads, so not even one row group's column sits in memory whole); Arrow files are mapped and
read one record batch at a time, the pages of rows already handed out dropped from the process
(``madvise``) as for ``.npy``. Memory stays bounded by the block whatever the input's size.

A null vector, a null inside a vector, a row of the wrong length in a variable-length list
column, a non-finite value, a null or empty key: each an error naming the row (and its file
when the input has several) and the column.
"""

from __future__ import annotations

import bisect
import glob
import json
import mmap
import os
from collections.abc import Iterator

import numpy as np

from embq._errors import FormatError
from embq._read_common import MatrixReader, file_size, plural, to_float32_rows

__all__ = ["ARROW_FORMATS", "ArrowReader", "arrow_format_of", "resolve_parts"]

ARROW_FORMATS = ("parquet", "arrow", "arrow-stream", "hf-dataset")
PARQUET_MAGIC = b"PAR1"
ARROW_FILE_MAGIC = b"ARROW1"
ARROW_STREAM_MAGIC = b"\xff\xff\xff\xff"
_GLOB_CHARS = "*?["
# Bytes read per column chunk at a time from Parquet: pages stream through this buffer.
_PARQUET_BUFFER = 1 << 20


def _require_pyarrow():
    try:
        import pyarrow  # noqa: F401
    except ImportError:  # pragma: no cover - pyarrow is in the test extra
        raise ImportError("reading Parquet and Arrow needs pyarrow: pip install 'embq[arrow]'"
                          ) from None


def arrow_format_of(head: bytes) -> str | None:
    """``"parquet"``, ``"arrow"`` or ``"arrow-stream"`` from a file's first bytes, else None."""
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    if head.startswith(ARROW_FILE_MAGIC):
        return "arrow"
    if head.startswith(ARROW_STREAM_MAGIC) and len(head) >= 8:
        return "arrow-stream"
    return None


def is_dataset_dir(path: str) -> bool:
    """A directory written by ``datasets.Dataset.save_to_disk`` (or one of Parquet files)."""
    if not os.path.isdir(path):
        return False
    names = os.listdir(path)
    return (any(n in names for n in ("state.json", "dataset_info.json", "dataset_dict.json"))
            or any(n.endswith(".parquet") for n in names))


def _head(path: str, n: int = 8) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def _hf_files(path: str) -> list[str]:
    state_path = os.path.join(path, "state.json")
    if os.path.exists(state_path):
        try:
            with open(state_path, "rb") as fh:
                state = json.load(fh)
            files = [entry["filename"] for entry in state["_data_files"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise FormatError(f"state.json does not list the data files ({type(exc).__name__}: "
                              f"{exc}); expected '_data_files': [{{'filename': ...}}]",
                              path=state_path) from None
        for name in files:
            if not isinstance(name, str) or os.path.basename(name) != name:
                raise FormatError(f"state.json lists the data file {name!r}; expected a file "
                                  "name inside the folder", path=state_path)
        return [os.path.join(path, name) for name in files]
    files = sorted(n for n in os.listdir(path) if n.endswith(".arrow"))
    if not files:
        raise FormatError("a dataset folder (dataset_info.json) without state.json nor .arrow "
                          "files; expected what datasets' save_to_disk writes", path=path)
    return [os.path.join(path, n) for n in files]


def resolve_parts(path: str, fmt: str | None = None) -> tuple[str, list[tuple[str, str]]]:
    """The format of an input and its files, each with its own format, in reading order."""
    if os.path.isdir(path):
        names = os.listdir(path)
        if "dataset_dict.json" in names:
            splits = sorted(n for n in names if os.path.isdir(os.path.join(path, n)))
            raise FormatError(
                "a DatasetDict folder (dataset_dict.json); expected one split's folder: "
                + ", ".join(os.path.join(path, s) for s in splits[:8]), path=path)
        if fmt == "hf-dataset" or (fmt is None and ("state.json" in names
                                                    or "dataset_info.json" in names)):
            files = _hf_files(path)
            for f in files:
                if not os.path.isfile(f):
                    raise FormatError("the data file listed in state.json is missing",
                                      path=f)
            return "hf-dataset", [(f, arrow_format_of(_head(f)) or "arrow-stream")
                                  for f in files]
        parquet = sorted(n for n in names if n.endswith(".parquet"))
        if not parquet:
            raise FormatError("the directory holds no .parquet files nor a Hugging Face dataset "
                              "(state.json, dataset_info.json)", path=path)
        return "parquet", [(os.path.join(path, n), "parquet") for n in parquet]
    if any(c in path for c in _GLOB_CHARS) and not os.path.exists(path):
        files = sorted(f for f in glob.glob(path) if os.path.isfile(f))
        if not files:
            raise FormatError("no file matches the pattern", path=path)
        return "parquet", [(f, "parquet") for f in files]
    if fmt in ("parquet", "arrow", "arrow-stream"):
        return fmt, [(path, fmt)]
    kind = arrow_format_of(_head(path))
    if kind is None:
        raise FormatError("not Parquet (no 'PAR1' at the start) nor Arrow IPC", path=path)
    return kind, [(path, kind)]


def _type_text(t) -> str:
    return str(t).replace("element: ", "").replace("item: ", "")


def _is_vector_type(t) -> bool:
    import pyarrow as pa

    return ((pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))
            and pa.types.is_floating(t.value_type))


def _is_key_type(t, explicit: bool) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return True
    return explicit and pa.types.is_integer(t)


class _Part:
    """One file of the input: its rows as record batches of the columns read."""

    def __init__(self, path: str, kind: str, first_row: int) -> None:
        import pyarrow as pa

        self.path = path
        self.kind = kind
        self.first_row = first_row
        self._mmap: mmap.mmap | None = None
        self._pf = None
        if kind == "parquet":
            import pyarrow.parquet as pq

            self._pf = pq.ParquetFile(path, buffer_size=_PARQUET_BUFFER, pre_buffer=False)
            self.schema = self._pf.schema_arrow
            self.rows = self._pf.metadata.num_rows
            return
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                raise FormatError("the file is empty; expected Arrow IPC data", path=path)
            self._mmap = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        self._buf = pa.py_buffer(self._mmap)
        if kind == "arrow":
            reader = pa.ipc.open_file(self._buf)
            self.schema = reader.schema
            self.rows = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
        else:
            reader = pa.ipc.open_stream(self._buf)
            self.schema = reader.schema
            # Counting reads the batches' metadata only: their data stays in the map unread.
            self.rows = sum(batch.num_rows for batch in reader)
        del reader

    def batches(self, columns: list[str], batch_rows: int) -> Iterator:
        """Record batches of ``columns``, at most ``batch_rows`` rows each, validated.

        Arrow does not check the offsets and lengths of the data it reads (an IPC file is
        used in place, zero-copy): a damaged file would make it read outside its buffers.
        Every batch is validated in full (offsets, lengths, UTF-8) before it is used, which
        raises ``ArrowInvalid`` instead.
        """
        import pyarrow as pa

        if self._pf is not None:
            for batch in self._pf.iter_batches(batch_size=batch_rows, columns=columns,
                                               use_threads=False):
                batch.validate(full=True)
                yield batch
            return
        if self.kind == "arrow":
            reader = pa.ipc.open_file(self._buf)
            source = (reader.get_batch(i) for i in range(reader.num_record_batches))
        else:
            source = pa.ipc.open_stream(self._buf)
        for batch in source:
            batch = batch.select(columns)
            batch.validate(full=True)
            for s in range(0, batch.num_rows, batch_rows):
                yield batch.slice(s, batch_rows)

    def drop_pages(self) -> None:
        if self._mmap is not None and hasattr(mmap, "MADV_DONTNEED"):
            try:
                self._mmap.madvise(mmap.MADV_DONTNEED)
            except (OSError, ValueError):  # advice only
                pass

    def close(self) -> None:
        self._pf = None
        self._buf = None
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:  # an Arrow buffer still refers to it; the GC unmaps it
                pass
            self._mmap = None


class ArrowReader(MatrixReader):
    """A vector column (and maybe a key column) of Parquet or Arrow data, read in blocks."""

    def __init__(self, path: str, *, format: str | None = None,
                 vector_column: str | None = None, key_column: str | None = None,
                 limit: int | None = None, block_rows: int | None = None) -> None:
        _require_pyarrow()
        import pyarrow as pa

        super().__init__(path, format or "parquet", limit, block_rows)
        self._parts: list[_Part] = []
        try:
            self.format, files = resolve_parts(path, format)
            first = 0
            for f, kind in files:
                try:
                    part = _Part(f, kind, first)
                except pa.ArrowException as exc:
                    what = {"parquet": "a Parquet file", "arrow": "an Arrow IPC file",
                            "arrow-stream": "an Arrow IPC stream"}[kind]
                    raise FormatError(f"not {what} ({exc})", path=f) from None
                self._parts.append(part)
                first += part.rows
            self.count = first
            self._size = sum(file_size(p.path) for p in self._parts)
            self._starts = [p.first_row for p in self._parts]
            schema = self._parts[0].schema
            self.vector_column = self._pick_vector(schema, vector_column)
            self.key_column = self._pick_key(schema, key_column)
            for part in self._parts[1:]:
                self._check_schema(part)
            self._vtype = schema.field(self.vector_column).type
            self.dim = self._dim_of()
            self._set_block_rows()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ columns

    def _columns_text(self, schema) -> str:
        return ", ".join(f"{f.name!r} ({_type_text(f.type)})" for f in schema) or "no columns"

    def _pick_vector(self, schema, name: str | None) -> str:
        if name is not None:
            if name not in schema.names:
                raise FormatError(f"no column {name!r}; the columns are "
                                  f"{self._columns_text(schema)}", path=self.path)
            t = schema.field(name).type
            if not _is_vector_type(t):
                raise FormatError(
                    f"column {name!r} holds {_type_text(t)}; expected vectors: a list, "
                    "large_list or fixed_size_list of float16, float32 or float64",
                    path=self.path)
            return name
        found = [f.name for f in schema if _is_vector_type(f.type)]
        if len(found) == 1:
            return found[0]
        what = ("no column of vectors (a list, large_list or fixed_size_list of floats)"
                if not found else f"{len(found)} columns of vectors: pick one with "
                "--vector-column NAME")
        raise FormatError(f"{what}; the columns are {self._columns_text(schema)}",
                          path=self.path)

    def _pick_key(self, schema, name: str | None) -> str | None:
        if name is not None:
            if name not in schema.names:
                raise FormatError(f"no column {name!r}; the columns are "
                                  f"{self._columns_text(schema)}", path=self.path)
            t = schema.field(name).type
            if not _is_key_type(t, explicit=True):
                raise FormatError(f"key column {name!r} holds {_type_text(t)}; expected "
                                  "strings or integers", path=self.path)
            return name
        found = [f.name for f in schema if _is_key_type(f.type, explicit=False)]
        if len(found) > 1:
            raise FormatError(
                f"{len(found)} string columns ({', '.join(map(repr, found))}) could hold the "
                "keys: pick one with --key-column NAME", path=self.path)
        return found[0] if found else None

    def _check_schema(self, part: _Part) -> None:
        for name in (self.vector_column, self.key_column):
            if name is None:
                continue
            want = self._parts[0].schema.field(name).type
            if name not in part.schema.names:
                raise FormatError(f"no column {name!r} (the first file has it); the columns "
                                  f"are {self._columns_text(part.schema)}", path=part.path)
            got = part.schema.field(name).type
            ok = (_is_vector_type(got) if name == self.vector_column
                  else _is_key_type(got, explicit=True))
            if not ok:
                raise FormatError(f"column {name!r} holds {_type_text(got)}; the first file's "
                                  f"holds {_type_text(want)}", path=part.path)

    def _dim_of(self) -> int:
        import pyarrow as pa

        from embq._readers import MAX_DIM

        t = self._vtype
        if pa.types.is_fixed_size_list(t):
            dim = t.list_size
        else:
            if self.count == 0:
                raise FormatError(f"the input holds no rows (column {self.vector_column!r} is "
                                  "empty); nothing to read", path=self.path)
            part = next(p for p in self._parts if p.rows)
            arr = next(b for b in part.batches([self.vector_column], 1) if b.num_rows).column(0)
            if arr.null_count:
                raise FormatError(f"{self.describe_row(part.first_row)}: the vector (column "
                                  f"{self.vector_column!r}) is null; expected a list of floats",
                                  path=self.path)
            dim = len(arr[0].values)
        if not 1 <= dim <= MAX_DIM:
            raise FormatError(f"the vectors of column {self.vector_column!r} have {dim:,} values;"
                              f" expected 1 to {MAX_DIM:,}", path=self.path)
        return dim

    # ------------------------------------------------------------------ rows

    @property
    def has_keys(self) -> bool:
        return self.key_column is not None

    def _part_of(self, row: int) -> _Part:
        return self._parts[max(0, bisect.bisect_right(self._starts, row) - 1)]

    def describe_row(self, row: int) -> str:
        if len(self._parts) <= 1:
            return f"row {row:,}"
        part = self._part_of(row)
        return f"row {row:,} (row {row - part.first_row:,} of {os.path.basename(part.path)})"

    def _bad_row(self, row: int, what: str) -> FormatError:
        return FormatError(f"{self.describe_row(row)}: {what}", path=self.path)

    def _vectors(self, arr, first_row: int) -> np.ndarray:
        import pyarrow as pa

        col = self.vector_column
        n, dim = len(arr), self.dim
        if arr.null_count:
            i = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
            raise self._bad_row(first_row + i, f"the vector (column {col!r}) is null; expected "
                                f"{plural(dim, 'value')}")
        if not pa.types.is_fixed_size_list(arr.type):
            lengths = np.diff(arr.offsets.to_numpy())
            bad = np.flatnonzero(lengths != dim)
            if bad.size:
                i = int(bad[0])
                raise self._bad_row(first_row + i, f"the vector (column {col!r}) has "
                                    f"{plural(int(lengths[i]), 'value')}; expected {dim} (the "
                                    "length of the first row)")
        values = arr.flatten()
        if values.null_count:
            j = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
            raise self._bad_row(first_row + j // dim, f"value {j % dim} of the vector (column "
                                f"{col!r}) is null; expected a number")
        chunk = values.to_numpy(zero_copy_only=False).reshape(n, dim)
        return to_float32_rows(chunk, first_row, f"column {col!r}", self.path,
                               describe=self.describe_row)

    def _key_list(self, arr, first_row: int) -> list[str]:
        import pyarrow as pa

        col = self.key_column
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        if arr.null_count:
            i = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
            raise self._bad_row(first_row + i, f"the key (column {col!r}) is null; expected a "
                                "key for every row")
        if pa.types.is_integer(arr.type):
            return arr.to_numpy().astype(str).tolist()
        keys = arr.to_pylist()
        if "" in keys:
            raise self._bad_row(first_row + keys.index(""), f"the key (column {col!r}) is "
                                "empty; expected a non-empty key")
        return keys

    def _blocks(self) -> Iterator:
        import pyarrow as pa

        from embq._readers import Block

        target = self._target_rows()
        columns = [self.vector_column] + ([self.key_column] if self.key_column else [])
        for part in self._parts:
            if self.rows_read >= target:
                break
            try:
                for batch in part.batches(columns, self.block_rows):
                    n = min(batch.num_rows, target - self.rows_read)
                    if n <= 0:
                        break
                    r0 = self.rows_read
                    vectors = self._vectors(batch.column(0).slice(0, n), r0)
                    keys = (self._key_list(batch.column(1).slice(0, n), r0)
                            if self.key_column else None)
                    del batch
                    part.drop_pages()
                    self.rows_read += n
                    yield Block(keys, vectors, r0 + 1, None)
            except pa.ArrowException as exc:
                raise FormatError(f"{part.kind} data is damaged near row "
                                  f"{self.rows_read - part.first_row:,}: {exc}",
                                  path=part.path) from None

    def _close(self) -> None:
        for part in self._parts:
            part.close()
        self._parts = []
