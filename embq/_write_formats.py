"""Write a store's dequantized vectors as Parquet or safetensors, or hand them over as Arrow.

* Parquet: a ``key`` column (strings; absent for a store without keys) and a ``vector`` column
  of ``fixed_size_list<float32>[dim]``, one row group per block of about 16 MB, streamed.
* safetensors: one float32 tensor ``(rows, dim)`` (named ``tensor_name``), its header written
  here and the rows streamed after it; the keys go beside it as ``vocab.txt`` (one per line,
  the layout of a model folder), which ``embq compress --keys`` reads back.
* :func:`to_arrow`: a ``pyarrow.Table`` of the same two columns, or a
  ``pyarrow.RecordBatchReader`` that dequantizes block by block for stores bigger than memory.

Each file goes to a temporary file renamed into place at the end, as for the other export
formats (:mod:`embq._export`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

    from embq._typing import AnyStore

__all__ = ["export_parquet", "export_safetensors", "to_arrow"]

_BLOCK_BYTES = 16 << 20
KEY_COLUMN = "key"
VECTOR_COLUMN = "vector"


def _block_rows(dim: int, rows: int | None = None) -> int:
    return max(1, rows if rows is not None else min(65536, _BLOCK_BYTES // (4 * dim)))


def _schema(dim: int, has_keys: bool):
    import pyarrow as pa

    fields = [pa.field(KEY_COLUMN, pa.string(), nullable=False)] if has_keys else []
    fields.append(pa.field(VECTOR_COLUMN, pa.list_(pa.float32(), dim), nullable=False))
    return pa.schema(fields)


def _batches(st, schema, step: int) -> Iterator:
    """The store's rows as record batches of ``step`` rows (keys, dequantized float32)."""
    import pyarrow as pa

    n, d = st.shape
    has_keys = bool(st.has_keys)
    for start in range(0, n, step):
        stop = min(n, start + step)
        x = np.ascontiguousarray(st[start:stop], dtype=np.float32)
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), d)
        columns = ([pa.array(st.index_to_key[start:stop], pa.string())] if has_keys else [])
        columns.append(vectors)
        yield pa.RecordBatch.from_arrays(columns, schema=schema)
        st._drop_resident_pages()


def _require_pyarrow() -> None:
    from embq._read_arrow import _require_pyarrow as require

    require()


def to_arrow(store: AnyStore, *, stream: bool = False,
             batch_rows: int | None = None) -> pa.Table | pa.RecordBatchReader:
    """The keys and dequantized vectors of a store as Arrow data.

    Parameters
    ----------
    store : embq.Store
        An open store (it must stay open while a stream is read).
    stream : bool
        Return a ``pyarrow.RecordBatchReader`` that dequantizes one batch at a time (for
        stores bigger than memory) instead of a whole ``pyarrow.Table``.
    batch_rows : int, optional
        Rows per record batch (default: about 16 MB of float32 per batch).

    Returns
    -------
    pyarrow.Table or pyarrow.RecordBatchReader
        Columns ``key`` (string; absent for a store without keys) and ``vector``
        (``fixed_size_list<float32>[dim]``), rows in store order.
    """
    _require_pyarrow()
    import pyarrow as pa

    if batch_rows is not None and (isinstance(batch_rows, bool) or not isinstance(
            batch_rows, (int, np.integer)) or batch_rows < 1):
        raise ValueError(f"batch_rows must be a positive number of rows, got {batch_rows!r}")
    d = store.shape[1]
    schema = _schema(d, bool(store.has_keys))
    batches = _batches(store, schema, _block_rows(d, batch_rows))
    if stream:
        return pa.RecordBatchReader.from_batches(schema, batches)
    return pa.Table.from_batches(list(batches), schema=schema)


def export_parquet(st: Any, files: list, out_path: str, overwrite: bool) -> dict[str, Any]:
    """Stream the store into a Parquet file at ``out_path`` (see the module docstring).

    Each :class:`embq._publish.AtomicFile` made is appended to ``files``, so that the caller
    aborts them all on failure and commits them all on success.
    """
    _require_pyarrow()
    import pyarrow.parquet as pq

    from embq._publish import AtomicFile

    d = st.shape[1]
    schema = _schema(d, bool(st.has_keys))
    files.append(AtomicFile(out_path, overwrite, "vectors.parquet"))
    writer = pq.ParquetWriter(files[-1].fh, schema, compression="snappy")
    try:
        for batch in _batches(st, schema, _block_rows(d)):
            writer.write_batch(batch, row_group_size=batch.num_rows)
    finally:
        writer.close()
    return {"keys_path": None}


def default_vocab_path(output: str) -> str:
    """Where the keys of a safetensors export go: ``vocab.txt`` beside the tensor file."""
    return os.path.join(os.path.dirname(os.path.abspath(output)), "vocab.txt")


def safetensors_header(name: str, rows: int, dim: int, dtype: str = "F32") -> bytes:
    """The length-prefixed header of a file holding one tensor ``(rows, dim)`` (F32 or F16)."""
    nbytes = rows * dim * {"F32": 4, "F16": 2}[dtype]
    header = {"__metadata__": {"format": "np", "writer": "embq"},
              name: {"dtype": dtype, "shape": [rows, dim], "data_offsets": [0, nbytes]}}
    raw = json.dumps(header, separators=(",", ":")).encode("utf8")
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as the library writes it
    return len(raw).to_bytes(8, "little") + raw


def export_safetensors(st: Any, files: list, out_path: str, overwrite: bool,
                       tensor_name: str = "embeddings",
                       keys_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Stream the store into one float32 tensor of a safetensors file, keys beside it.

    Arguments as for :func:`export_parquet`; ``tensor_name`` names the tensor, ``keys_path``
    the keys file (default :func:`default_vocab_path`; not written for a store without keys).
    """
    if not isinstance(tensor_name, str) or not tensor_name or tensor_name == "__metadata__":
        raise ValueError(f"tensor_name must be a non-empty name other than '__metadata__', got "
                         f"{tensor_name!r}")
    from embq._export import check_key_lines
    from embq._publish import AtomicFile

    n, d = st.shape
    has_keys = bool(st.has_keys)
    files.append(AtomicFile(out_path, overwrite, "model.safetensors"))
    fh = files[-1].fh
    kfile = None
    if has_keys:
        kp = os.fspath(keys_path) if keys_path is not None else default_vocab_path(out_path)
        files.append(AtomicFile(kp, overwrite, "vocab.txt"))
        kfile = files[-1]
    fh.write(safetensors_header(tensor_name, n, d))
    step = _block_rows(d)
    for start in range(0, n, step):
        stop = min(n, start + step)
        fh.write(np.ascontiguousarray(st[start:stop], dtype="<f4").tobytes())
        if kfile is not None:
            keys = st.index_to_key[start:stop]
            check_key_lines(keys, start)
            kfile.fh.write(("\n".join(keys) + "\n").encode("utf8"))
        st._drop_resident_pages()
    return {"keys_path": kfile.path if kfile is not None else None}
