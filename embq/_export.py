"""Write a store's dequantized vectors back out as word2vec text/binary, GloVe or .npy.

Rows are streamed block by block, into a temporary file next to the output that is renamed into
place at the end: a failure leaves no partial file, and an existing output is only replaced
with ``overwrite=True``. Text values are written with 9 significant digits (``%.9g``), enough
for every float32 to read back bit for bit, so compress -> export -> compress gives the same
codes.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from embq._publish import AtomicFile

if TYPE_CHECKING:
    from embq._typing import StoreOrPath

__all__ = ["EXPORT_FORMATS", "export"]

EXPORT_FORMATS = ("word2vec", "word2vec-binary", "glove", "npy", "parquet", "safetensors")
_BLOCK_BYTES = 16 << 20


def default_keys_path(output: str) -> str:
    """Where ``export(..., format="npy")`` writes the keys.

    ``vectors.npy`` -> ``vectors.keys.txt``; any other name gets ``.keys.txt`` appended.
    """
    root, ext = os.path.splitext(output)
    return (root if ext.lower() == ".npy" else output) + ".keys.txt"


def check_key_lines(keys: list[str], start: int) -> None:
    """Refuse a key that a keys file (one key per line) cannot hold; ``start`` is its row."""
    for i, k in enumerate(keys):
        if not k or "\n" in k or "\r" in k:
            raise ValueError(f"key {k!r} of row {start + i} cannot be written one per line")


def _check_key(key: str, row: int, fmt: str) -> None:
    if not key or any(c in key for c in " \t\n\r"):
        raise ValueError(
            f"key {key!r} of row {row} contains whitespace, which the {fmt} format cannot "
            "represent (keys end at the first space); export to npy instead, which writes "
            "keys one per line"
            if key else f"row {row} has an empty key; the {fmt} format cannot represent it"
        )


def export(
    store: StoreOrPath,
    output: str | os.PathLike,
    *,
    format: str,
    overwrite: bool = False,
    keys_path: str | os.PathLike | None = None,
    tensor_name: str = "embeddings",
) -> dict[str, Any]:
    """Write the dequantized rows of a store to an embedding file.

    Parameters
    ----------
    store : str, os.PathLike, Store or ShardedStore
        The store (a path, of a store file or a sharded store's directory, is opened and
        closed here).
    output : str or os.PathLike
        File to write.
    format : {"word2vec", "word2vec-binary", "glove", "npy", "parquet", "safetensors"}
        Output format. word2vec text has a ``count dim`` header and one ``KEY v1 ... vd`` line
        per row; glove the same lines without header; word2vec-binary the header then
        ``KEY`` + space + ``d`` little-endian float32 + newline per row; npy a float32 array;
        parquet a ``key`` column and a ``vector`` column of ``fixed_size_list<float32>``;
        safetensors one float32 tensor, the keys one per line beside it (see
        :mod:`embq._write_formats`).
    overwrite : bool
        Replace existing output files.
    keys_path : str or os.PathLike, optional
        For npy: where to write the keys, one per line (default: ``default_keys_path(output)``);
        for safetensors the same, default ``vocab.txt`` in the output's directory. Ignored for
        stores without keys.
    tensor_name : str
        For safetensors: the name of the tensor (default ``"embeddings"``).

    Returns
    -------
    dict
        ``rows``, ``dim``, ``format``, ``output``, ``keys_path`` (npy with keys), ``size``.

    Raises
    ------
    ValueError
        Unknown format, or a key the text formats cannot hold (whitespace).
    embq._errors.OutputExistsError
        An output file exists and ``overwrite`` is false (a ``FileExistsError``), checked
        before anything is written and again when the finished file is moved into place.
    FileNotFoundError, IsADirectoryError
        The directory of an output is missing, or an output is a directory.
    embq._errors.StoreError
        The store is damaged or not a store (see :func:`embq.open`).
    """
    from embq._sharded import open as open_store

    if format not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {format!r}; expected one of "
                         f"{', '.join(EXPORT_FORMATS)}")
    out_path = os.fspath(output)
    owned = isinstance(store, (str, os.PathLike))
    st = open_store(store) if owned else store
    files: list[AtomicFile] = []
    try:
        n, d = st.shape
        has_keys = bool(st.has_keys)
        if format in ("parquet", "safetensors"):
            from embq import _write_formats as wf

            if format == "parquet":
                if keys_path is not None:
                    raise ValueError("keys_path is not used with the parquet format (the keys "
                                     "are its 'key' column)")
                extra = wf.export_parquet(st, files, out_path, overwrite)
            else:
                extra = wf.export_safetensors(st, files, out_path, overwrite,
                                              tensor_name=tensor_name, keys_path=keys_path)
            for f in files:
                f.commit()
            files = []
            return {"rows": n, "dim": d, "format": format, "output": out_path,
                    "size": os.path.getsize(out_path), **extra}
        if format != "npy" and not has_keys:
            raise ValueError(
                f"the store {st.path} has no keys; the {format} format needs one per row "
                "(export to npy instead)")
        files.append(AtomicFile(out_path, overwrite,
                                "vectors.npy" if format == "npy" else "vectors.txt"))
        main = files[-1]
        kfile = None
        if format == "npy" and has_keys:
            kp = os.fspath(keys_path) if keys_path is not None else default_keys_path(out_path)
            files.append(AtomicFile(kp, overwrite, "vectors.keys.txt"))
            kfile = files[-1]
        # Text rows become Python floats and strings: smaller blocks keep those few MB.
        # max(d, 1): a store of dimension 0 (which embq never writes, but may be given) has
        # rows of no values, and its keys still go out in blocks.
        step = max(1, min(8192 if format in ("npy", "word2vec-binary") else 1024,
                          _BLOCK_BYTES // (4 * max(d, 1))))
        fh = main.fh
        if format == "npy":
            np.lib.format.write_array_header_1_0(
                fh, {"descr": "<f4", "fortran_order": False, "shape": (n, d)})
        elif format in ("word2vec", "word2vec-binary"):
            fh.write(f"{n} {d}\n".encode("ascii"))
        fmt_value = "%.9g".__mod__
        for start in range(0, n, step):
            stop = min(n, start + step)
            x = np.ascontiguousarray(st[start:stop], dtype=np.float32)
            keys = st.index_to_key[start:stop] if has_keys else None
            if format == "npy":
                fh.write(x.astype("<f4", copy=False).tobytes())
                if kfile is not None:
                    check_key_lines(keys, start)
                    kfile.fh.write(("\n".join(keys) + "\n").encode("utf8"))
            elif format == "word2vec-binary":
                xb = x.astype("<f4", copy=False)
                parts = []
                for i, k in enumerate(keys):
                    _check_key(k, start + i, format)
                    parts.append(k.encode("utf8") + b" " + xb[i].tobytes() + b"\n")
                fh.write(b"".join(parts))
            else:
                lines = []
                rows = x.tolist()
                for i, k in enumerate(keys):
                    _check_key(k, start + i, format)
                    lines.append(" ".join([k, *map(fmt_value, rows[i])]))
                fh.write(("\n".join(lines) + "\n").encode("utf8"))
            st._drop_resident_pages()
        for f in files:
            f.commit()
        files = []
    finally:
        for f in files:
            f.abort()
        if owned:
            st.close()
    return {
        "rows": n, "dim": d, "format": format, "output": out_path,
        "keys_path": kfile.path if kfile is not None else None,
        "size": os.path.getsize(out_path),
    }
