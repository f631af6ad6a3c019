"""The embq store: quantized embedding rows and their keys in one HDF5 file.

Writing goes through :class:`StoreWriter` (streaming, bounded memory) or :func:`save` (a whole
matrix).  Reading goes through :func:`open`, which returns a read-only :class:`Store` that reads
only metadata at open and memory-maps everything else, so opening a store of any size is
instant and costs no memory.  The file layout is specified in ``docs/format.md``.
"""

from __future__ import annotations

import builtins
import errno
import mmap
import operator
import os
import secrets
import shutil
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from embq._version import __version__
from embq._errors import DuplicateKeyError, StoreError

__all__ = ["save", "open", "Store", "StoreWriter", "FORMAT", "FORMAT_VERSION", "SCHEME"]

FORMAT = "embq"
FORMAT_VERSION = 1
SCHEME = "uint8-per-row-symmetric"
HASH_FUNCTION = "fnv1a64+fmix64"
PROBING = "linear"

# Root attributes the writer owns; user attrs may not replace them.
_RESERVED_ATTRS = frozenset(
    {"format", "format_version", "scheme", "dim", "n_rows", "embq_version", "has_keys"}
)

# Rows per block when copying spooled arrays into the HDF5 file (bounded memory).
_COPY_BLOCK_BYTES = 8 << 20

_ON_DUPLICATE = ("error", "skip")


def _kernels():
    from embq import _kernels_store

    return _kernels_store


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _check_destination(path: str, overwrite: bool) -> None:
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            errno.ENOENT,
            f"cannot write store {path!r}: directory {directory!r} does not exist",
            path,
        )
    if os.path.isdir(path):
        raise IsADirectoryError(
            errno.EISDIR, f"cannot write store {path!r}: it is a directory", path
        )
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(
            errno.EEXIST,
            f"{path!r} already exists; pass overwrite=True to replace it",
            path,
        )


def _as_key_list(keys: Any, n: int) -> list:
    if isinstance(keys, (str, bytes)):
        raise TypeError(
            f"keys must be a sequence of str (one per row), got a single {type(keys).__name__}"
        )
    if isinstance(keys, np.ndarray):
        if keys.ndim != 1:
            raise ValueError(f"keys must be 1-D, got an array of shape {keys.shape}")
        keys = keys.tolist()
    elif not isinstance(keys, list):
        keys = list(keys)
    if len(keys) != n:
        raise ValueError(f"got {len(keys)} keys for {n} rows; pass exactly one key per row")
    return keys


class StoreWriter:
    """Write a store row batch by row batch, without knowing the row count in advance.

    Rows are quantized per batch and spooled to raw files in a temporary directory next to
    ``path``; :meth:`close` copies them, block by block, into contiguous (memory-mappable)
    datasets of a temporary HDF5 file, writes the key hash table and renames the file into
    place.  Memory stays bounded by the batch size plus the key index needed to detect
    duplicates: the key bytes, an 8-byte offset and 8 to 16 bytes of int32 hash table per key
    (about 40 bytes per English word, with room to grow).

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.  Its directory must exist.
    dim : int
        Number of columns of every row.
    has_keys : bool, default True
        Whether every row has a key (a str).  ``False`` stores a matrix without vocabulary.
    overwrite : bool, default False
        Replace an existing file at ``path`` (only once :meth:`close` succeeds).
    attrs : dict, optional
        Extra root attributes, merged at close (see :attr:`attrs`).
    n_threads : int, optional
        Threads for quantization (None = all cores).

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    FileNotFoundError
        The directory of ``path`` does not exist.

    Notes
    -----
    Used as a context manager, a normal exit calls :meth:`close` and an exception (including
    ``KeyboardInterrupt``) calls :meth:`abort`: no file is left at ``path`` and an existing
    file there is untouched.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        dim: int,
        *,
        has_keys: bool = True,
        overwrite: bool = False,
        attrs: Mapping[str, Any] | None = None,
        n_threads: int | None = None,
        _max_load: float = 0.5,
    ) -> None:
        self._state = "failed"  # so __del__ is quiet if __init__ raises
        self.path = os.path.abspath(os.fspath(path))
        try:
            dim = operator.index(dim)
        except TypeError:
            raise TypeError(f"dim must be an int, got {type(dim).__name__}") from None
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self.has_keys = bool(has_keys)
        self.overwrite = bool(overwrite)
        self.attrs: dict[str, Any] = dict(attrs or {})
        _check_attr_names(self.attrs)
        self.n_threads = n_threads
        self.n_rows = 0
        _check_destination(self.path, self.overwrite)
        self._spool: dict[str, Any] = {}
        try:
            self._make_tmpdir()
            for name in ("codes", "scales", "zero_points", "norms"):
                self._spool[name] = builtins.open(os.path.join(self._tmpdir, name + ".raw"), "wb")
            self._keys = _kernels().KeyTableBuilder(_max_load) if self.has_keys else None
        except BaseException:
            self._cleanup()
            raise
        self._state = "open"

    def _make_tmpdir(self) -> None:
        # Not tempfile.mkdtemp: a Ctrl-C between its mkdir and the assignment of its result
        # would leave a directory nobody knows about.  Here the name is recorded before the
        # directory exists, so _cleanup can always remove it.
        stem = os.path.join(os.path.dirname(self.path),
                            f".{os.path.basename(self.path)}.embq-tmp-")
        for _ in range(100):
            self._tmpdir = stem + secrets.token_hex(4)
            try:
                os.mkdir(self._tmpdir, 0o700)
                return
            except FileExistsError:
                continue
        self._tmpdir = None
        raise FileExistsError(errno.EEXIST, "no free temporary name", stem + "*")

    # -- context manager ----------------------------------------------------------------------
    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __repr__(self) -> str:
        return (
            f"<embq.StoreWriter {self.path!r} rows={self.n_rows} dim={self.dim} "
            f"{self._state}>"
        )

    def __del__(self) -> None:
        if getattr(self, "_state", "failed") == "open":
            warnings.warn(
                f"StoreWriter for {self.path!r} was neither closed nor aborted; "
                "discarding its data",
                ResourceWarning,
                stacklevel=2,
            )
            self._cleanup()

    # -- appending ----------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._state != "open":
            raise ValueError(f"cannot write to {self.path!r}: the store writer is {self._state}")

    def append(self, matrix: Any, keys: Any = None, *, on_duplicate: str = "error") -> np.ndarray:
        """Quantize a batch of rows and append it.

        Parameters
        ----------
        matrix : array_like, shape (b, dim)
            Float rows (float32 or float64; NaN and Inf are refused).
        keys : sequence of str, optional
            One key per row; required when the writer has keys, refused otherwise.
        on_duplicate : {"error", "skip"}
            A key already stored (or repeated in this batch): ``"error"`` raises
            :class:`~embq._errors.DuplicateKeyError` and appends nothing of the batch;
            ``"skip"`` keeps the first occurrence and drops the row.

        Returns
        -------
        numpy.ndarray of bool, shape (b,)
            True for each row that was appended.
        """
        from embq._quantize import quantize

        self._check_open()
        x = np.asarray(matrix)
        self._check_batch_shape(x, "matrix")
        # Quantize first: a bad row (NaN) must fail before any key is recorded.
        q = quantize(x, n_threads=self.n_threads)
        return self._append(q.codes, q.scales, q.zero_points, keys, on_duplicate)

    def append_quantized(
        self,
        codes: Any,
        scales: Any,
        zero_points: Any = None,
        keys: Any = None,
        *,
        on_duplicate: str = "error",
    ) -> np.ndarray:
        """Append rows that are already quantized (see :meth:`append` for keys and the result).

        Parameters
        ----------
        codes : numpy.ndarray of uint8, shape (b, dim)
        scales : array_like of float32, shape (b,)
            Finite and >= 0.
        zero_points : array_like of uint8, shape (b,), optional
            Defaults to 128 for every row.
        """
        self._check_open()
        codes = np.asarray(codes)
        self._check_batch_shape(codes, "codes")
        if codes.dtype != np.uint8:
            raise TypeError(f"codes must be uint8, got {codes.dtype}")
        b = codes.shape[0]
        scales = np.asarray(scales)
        if scales.dtype.kind != "f":
            raise TypeError(f"scales must be float32, got {scales.dtype}")
        scales = scales.astype(np.float32, copy=False)
        if scales.shape != (b,):
            raise ValueError(f"scales must have shape ({b},) to match codes, got {scales.shape}")
        if b and not (np.isfinite(scales).all() and (scales >= 0).all()):
            bad = int(np.argmin(np.isfinite(scales) & (scales >= 0)))
            raise ValueError(f"scales must be finite and >= 0; row {bad} has {scales[bad]!r}")
        if zero_points is None:
            zero_points = np.full(b, 128, np.uint8)
        zero_points = np.asarray(zero_points)
        if zero_points.dtype != np.uint8:
            raise TypeError(f"zero_points must be uint8, got {zero_points.dtype}")
        if zero_points.shape != (b,):
            raise ValueError(
                f"zero_points must have shape ({b},) to match codes, got {zero_points.shape}"
            )
        return self._append(codes, scales, zero_points, keys, on_duplicate)

    def _check_batch_shape(self, x: np.ndarray, what: str) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"{what} must have shape (rows, {self.dim}) for this store, got {x.shape}"
            )

    def _append(self, codes, scales, zero_points, keys, on_duplicate) -> np.ndarray:
        from embq._quantize import row_norms

        if on_duplicate not in _ON_DUPLICATE:
            raise ValueError(f"on_duplicate must be 'error' or 'skip', got {on_duplicate!r}")
        b = codes.shape[0]
        if self.has_keys:
            if keys is None:
                raise ValueError(
                    "this store has keys (has_keys=True): pass keys= with one str per row"
                )
            keys = _as_key_list(keys, b)
            mask, pos, first = self._keys.add(keys, on_duplicate == "skip")
            if mask is None:
                raise DuplicateKeyError(keys[pos], first_index=int(first),
                                        index=self.n_rows + int(pos))
        else:
            if keys is not None:
                raise ValueError("this store has no keys (has_keys=False) but keys were given")
            mask = np.ones(b, np.bool_)
        if not mask.all():
            codes, scales, zero_points = codes[mask], scales[mask], zero_points[mask]
        codes = np.ascontiguousarray(codes)
        scales = np.ascontiguousarray(scales, dtype=np.float32)
        zero_points = np.ascontiguousarray(zero_points, dtype=np.uint8)
        norms = np.ascontiguousarray(
            row_norms(codes, scales, zero_points, n_threads=self.n_threads), dtype=np.float32
        )
        try:
            for name, arr in (
                ("codes", codes),
                ("scales", scales),
                ("zero_points", zero_points),
                ("norms", norms),
            ):
                if arr.size:
                    self._spool[name].write(arr.reshape(-1).view(np.uint8).data)
        except BaseException:
            # Spool files and key table disagree now: the writer cannot continue.
            self.abort()
            raise
        self.n_rows += int(codes.shape[0])
        return mask

    # -- finishing ----------------------------------------------------------------------------
    def close(self) -> None:
        """Finish the store and rename it into place.  Calling it again does nothing.

        Raises
        ------
        FileExistsError
            A file appeared at ``path`` meanwhile and ``overwrite`` is false (the data is
            discarded, the other file is untouched).
        ValueError
            The writer was aborted.
        """
        if self._state == "closed":
            return
        if self._state != "open":
            raise ValueError(f"cannot close the store writer for {self.path!r}: it was {self._state}")
        try:
            self._finish()
        except BaseException:
            self.abort()
            raise
        self._state = "closed"

    def abort(self) -> None:
        """Discard everything written so far; ``path`` is left as it was.  Safe to repeat."""
        if self._state in ("closed",):
            return
        self._cleanup()
        self._state = "aborted"

    def _cleanup(self) -> None:
        for fh in getattr(self, "_spool", {}).values():
            try:
                fh.close()
            except OSError:
                pass
        self._keys = None
        tmpdir = getattr(self, "_tmpdir", None)
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
            self._tmpdir = None

    def _finish(self) -> None:
        import h5py

        for fh in self._spool.values():
            fh.close()
        user_attrs = dict(self.attrs)
        _check_attr_names(user_attrs)
        n, d = self.n_rows, self.dim
        tmp = os.path.join(self._tmpdir, "store.h5")
        with h5py.File(tmp, "w") as f:
            a = f.attrs
            a["format"] = FORMAT
            a["format_version"] = np.int64(FORMAT_VERSION)
            a["scheme"] = SCHEME
            a["dim"] = np.int64(d)
            a["n_rows"] = np.int64(n)
            a["embq_version"] = __version__
            a["has_keys"] = np.bool_(self.has_keys)
            for name, value in user_attrs.items():
                try:
                    a[name] = value
                except (TypeError, ValueError) as exc:
                    raise TypeError(
                        f"attribute {name!r}: cannot store a {type(value).__name__} value "
                        f"{value!r} as an HDF5 attribute ({exc})"
                    ) from None
            for name, dtype, shape in (
                ("codes", np.uint8, (n, d)),
                ("scales", np.float32, (n,)),
                ("zero_points", np.uint8, (n,)),
                ("norms", np.float32, (n,)),
            ):
                # Contiguous, uncompressed: this is what makes the store memory-mappable.
                ds = f.create_dataset(name, shape=shape, dtype=dtype)
                self._copy_spool(os.path.join(self._tmpdir, name + ".raw"), ds, dtype, shape)
            if self.has_keys:
                utf8, offsets, table = self._keys.arrays()
                g = f.create_group("keys")
                g.create_dataset("utf8", data=utf8)
                g.create_dataset("offsets", data=offsets)
                # The builder's table is int32; widen it to the on-disk int64 a block at a time.
                t = g.create_dataset("hash", shape=table.shape, dtype=np.int64)
                step = _COPY_BLOCK_BYTES // 8
                for start in range(0, table.shape[0], step):
                    t[start : start + step] = table[start : start + step]
                t.attrs["hash_function"] = HASH_FUNCTION
                t.attrs["probing"] = PROBING
        with builtins.open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        self._move_into_place(tmp)
        self._cleanup()

    def _copy_spool(self, raw: str, ds, dtype, shape) -> None:
        n = shape[0]
        if ds.size == 0:
            return
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
        step = max(1, _COPY_BLOCK_BYTES // row_bytes)
        with builtins.open(raw, "rb") as fh:
            for start in range(0, n, step):
                stop = min(n, start + step)
                block = np.fromfile(fh, dtype=dtype, count=(stop - start) * (row_bytes // np.dtype(dtype).itemsize))
                if block.size * np.dtype(dtype).itemsize != (stop - start) * row_bytes:
                    raise OSError(f"spool file {raw!r} is shorter than expected")
                ds[start:stop] = block.reshape((stop - start,) + tuple(shape[1:]))

    def _move_into_place(self, tmp: str) -> None:
        if self.overwrite:
            os.replace(tmp, self.path)
            return
        # link() fails if the destination exists, so a file that appeared since __init__ is
        # never replaced; fall back to a checked rename where hard links are unsupported.
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            raise FileExistsError(
                errno.EEXIST,
                f"{self.path!r} appeared while the store was being written; pass "
                "overwrite=True to replace it",
                self.path,
            ) from None
        except OSError:
            if os.path.lexists(self.path):
                raise FileExistsError(
                    errno.EEXIST, f"{self.path!r} already exists; pass overwrite=True", self.path
                ) from None
            os.rename(tmp, self.path)
        else:
            os.unlink(tmp)


def _check_attr_names(attrs: Mapping[str, Any]) -> None:
    for name in attrs:
        if not isinstance(name, str) or not name:
            raise TypeError(f"attribute names must be non-empty str, got {name!r}")
        if name in _RESERVED_ATTRS:
            raise ValueError(
                f"attribute {name!r} is set by embq itself and cannot be given in attrs "
                f"(reserved: {', '.join(sorted(_RESERVED_ATTRS))})"
            )


def save(
    path: str | os.PathLike,
    matrix: Any,
    keys: Any = None,
    *,
    overwrite: bool = False,
    attrs: Mapping[str, Any] | None = None,
    n_threads: int | None = None,
) -> None:
    """Quantize a matrix and write it, with its keys, as a store.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file; written to a temporary file and renamed into place on success.
    matrix : array_like, shape (n, d)
        Float rows, d >= 1.
    keys : sequence of str, optional
        One unique, non-empty key per row.  Without keys the store is a plain matrix.
    overwrite : bool, default False
        Replace an existing file.
    attrs : dict, optional
        Extra root attributes.
    n_threads : int, optional
        Threads for quantization.

    Raises
    ------
    FileExistsError, FileNotFoundError
        See :class:`StoreWriter`.
    DuplicateKeyError
        A key appears twice.
    """
    x = np.asarray(matrix)
    if x.ndim != 2:
        raise ValueError(f"matrix must be 2-D (rows, dim), got shape {x.shape}")
    if keys is not None:
        keys = _as_key_list(keys, x.shape[0])
    with StoreWriter(
        path,
        x.shape[1],
        has_keys=keys is not None,
        overwrite=overwrite,
        attrs=attrs,
        n_threads=n_threads,
    ) as w:
        w.append(x, keys)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _attr_value(v: Any) -> Any:
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            return v
    if isinstance(v, np.generic):
        return v.item()
    return v


class _Array:
    """Where a dataset's bytes are: a file offset to map, or an in-memory copy."""

    __slots__ = ("offset", "data")

    def __init__(self, offset: int | None, data: np.ndarray | None) -> None:
        self.offset = offset
        self.data = data


def _locate(ds, path: str, file_size: int, name: str) -> _Array:
    import h5py

    if ds.size == 0:
        return _Array(None, None)
    plist = ds.id.get_create_plist()
    offset = None
    if plist.get_layout() == h5py.h5d.CONTIGUOUS and plist.get_nfilters() == 0 \
            and plist.get_external_count() == 0:
        offset = ds.id.get_offset()
    if offset is None:
        # Chunked, compressed or never written: not mappable, so read it (only stores made by
        # other tools end up here; embq writes contiguous datasets).
        data = ds[()]
        data.flags.writeable = False
        return _Array(None, data)
    nbytes = ds.size * ds.dtype.itemsize
    if offset + nbytes > file_size:
        raise StoreError(
            f"dataset {name!r} ends at byte {offset + nbytes} but the file has only "
            f"{file_size} bytes (truncated file?)",
            path=path,
        )
    return _Array(int(offset), None)


def _read_layout(path: str) -> dict[str, Any]:
    """Validate the metadata of the store at ``path`` and say where its arrays are."""
    import h5py

    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, f"no such store file: {path!r}", path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"{path!r} is a directory, not a store", path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        try:
            is_hdf5 = h5py.is_hdf5(path)
        except OSError:
            is_hdf5 = False
        if not is_hdf5:
            raise StoreError(
                "not an HDF5 file (an embq store is an HDF5 file with format='embq')", path=path
            ) from None
        raise StoreError(f"cannot open the HDF5 file: {exc}", path=path) from exc
    file_size = os.path.getsize(path)
    with f:
        attrs = {k: _attr_value(v) for k, v in f.attrs.items()}
        fmt = attrs.get("format")
        if fmt != FORMAT:
            raise StoreError(
                f"not an embq store: root attribute 'format' is {fmt!r}, expected {FORMAT!r}",
                path=path,
            )
        version = attrs.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version != FORMAT_VERSION:
            raise StoreError(
                f"unsupported store format_version {version!r}: embq {__version__} reads "
                f"format_version {FORMAT_VERSION}",
                path=path,
            )
        if attrs.get("scheme") != SCHEME:
            raise StoreError(
                f"unsupported quantization scheme {attrs.get('scheme')!r}, expected {SCHEME!r}",
                path=path,
            )
        for name in ("dim", "n_rows"):
            v = attrs.get(name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise StoreError(
                    f"root attribute {name!r} is {v!r}, expected a non-negative integer",
                    path=path,
                )
        n, d = attrs["n_rows"], attrs["dim"]
        has_keys = attrs.get("has_keys")
        if not isinstance(has_keys, bool):
            raise StoreError(f"root attribute 'has_keys' is {has_keys!r}, expected a boolean",
                             path=path)
        expected = [
            ("codes", np.uint8, (n, d)),
            ("scales", np.float32, (n,)),
            ("zero_points", np.uint8, (n,)),
            ("norms", np.float32, (n,)),
        ]
        if has_keys:
            if not isinstance(f.get("keys"), h5py.Group):
                raise StoreError("has_keys is true but the group 'keys' is missing", path=path)
            expected += [
                ("keys/utf8", np.uint8, None),
                ("keys/offsets", np.int64, (n + 1,)),
                ("keys/hash", np.int64, None),
            ]
        where: dict[str, tuple[_Array, tuple[int, ...], np.dtype]] = {}
        for name, dtype, shape in expected:
            obj = f.get(name)
            if obj is None:
                raise StoreError(f"missing dataset {name!r}", path=path)
            if not isinstance(obj, h5py.Dataset):
                raise StoreError(f"{name!r} is a {type(obj).__name__}, expected a dataset",
                                 path=path)
            if obj.dtype != np.dtype(dtype):
                raise StoreError(
                    f"dataset {name!r} has dtype {obj.dtype.str} ({obj.dtype}), expected "
                    f"{np.dtype(dtype).str} ({np.dtype(dtype)})",
                    path=path,
                )
            if shape is None:
                if obj.ndim != 1:
                    raise StoreError(f"dataset {name!r} has shape {obj.shape}, expected 1-D",
                                     path=path)
            elif obj.shape != shape:
                raise StoreError(
                    f"dataset {name!r} has shape {obj.shape}, expected {shape} "
                    f"(n_rows={n}, dim={d})",
                    path=path,
                )
            if name == "keys/hash":
                size = obj.shape[0]
                if size <= n or size & (size - 1):
                    raise StoreError(
                        f"dataset 'keys/hash' has {size} slots, expected a power of two "
                        f"larger than n_rows={n}",
                        path=path,
                    )
                hf = _attr_value(obj.attrs.get("hash_function"))
                pr = _attr_value(obj.attrs.get("probing"))
                if hf != HASH_FUNCTION or pr != PROBING:
                    raise StoreError(
                        f"key hash table uses hash_function={hf!r}, probing={pr!r}; this embq "
                        f"reads hash_function={HASH_FUNCTION!r}, probing={PROBING!r}",
                        path=path,
                    )
            where[name] = (_locate(obj, path, file_size, name), obj.shape, np.dtype(dtype))
    return {"attrs": attrs, "n": n, "dim": d, "has_keys": has_keys, "where": where}


def _map(path: str, spec: tuple[_Array, tuple[int, ...], np.dtype]) -> np.ndarray:
    loc, shape, dtype = spec
    if loc.data is not None:
        return loc.data
    if loc.offset is None:
        arr = np.zeros(shape, dtype)
        arr.flags.writeable = False
        return arr
    return np.memmap(path, dtype=dtype, mode="r", offset=loc.offset, shape=shape)


def open(path: str | os.PathLike) -> Store:  # noqa: A001 - mirrors h5py.File / io.open
    """Open a store read-only.  Reads only metadata; rows and keys are memory-mapped.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    Store

    Raises
    ------
    FileNotFoundError
        No such file.
    StoreError
        The file is not HDF5, not an embq store, of an unsupported version, or its datasets
        are missing or disagree in shape or dtype.
    """
    return Store(path)


class _IndexToKey(Sequence):
    """``store.index_to_key``: the keys in row order, decoded on demand (nothing loaded)."""

    # Keys decoded per block while iterating (bounded memory, few Python calls per key).
    _ITER_BLOCK = 65536

    def __init__(self, store: Store) -> None:
        self._store = store

    def __len__(self) -> int:
        return self._store._n

    def _arrays(self):
        s = self._store
        s._check_open()
        return s._utf8, s._offsets

    def __getitem__(self, i):
        utf8, offsets = self._arrays()
        n = len(self)
        if isinstance(i, slice):
            return [self._decode(utf8, offsets, j) for j in range(*i.indices(n))]
        try:
            j = operator.index(i)
        except TypeError:
            raise TypeError(
                f"index_to_key indices must be int or slice, got {type(i).__name__}"
            ) from None
        if j < 0:
            j += n
        if not 0 <= j < n:
            raise IndexError(f"index {i} out of range for {n} keys")
        return self._decode(utf8, offsets, j)

    def _decode(self, utf8, offsets, j: int) -> str:
        a, b = int(offsets[j]), int(offsets[j + 1])
        if not 0 <= a <= b <= utf8.shape[0]:
            raise self._damaged(j, f"its offsets run from {a} to {b}")
        try:
            return bytes(utf8[a:b]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self._damaged(j, f"its bytes are not UTF-8 ({exc.reason})") from None

    def _damaged(self, j: int, what: str) -> StoreError:
        return StoreError(
            f"key of row {j} is damaged: {what}; expected non-decreasing offsets within the "
            f"{self._store._utf8.shape[0]} bytes of 'keys/utf8' and UTF-8 bytes",
            path=self._store.path,
        )

    def __iter__(self) -> Iterator[str]:
        utf8, offsets = self._arrays()
        n = len(self)
        step = self._ITER_BLOCK
        for start in range(0, n, step):
            stop = min(n, start + step)
            raw = np.asarray(offsets[start : stop + 1])
            bad = (raw[:-1] < 0) | (raw[1:] < raw[:-1]) | (raw[1:] > utf8.shape[0])
            if bad.any():
                j = start + int(np.argmax(bad))
                raise self._damaged(j, f"its offsets run from {offsets[j]} to {offsets[j + 1]}")
            blob = bytes(utf8[int(raw[0]) : int(raw[-1])])
            ol = (raw - raw[0]).tolist()
            for j in range(stop - start):
                try:
                    yield blob[ol[j] : ol[j + 1]].decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise self._damaged(start + j, f"its bytes are not UTF-8 ({exc.reason})") from None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._store._index.find(key) >= 0

    def index(self, key, start: int = 0, stop: int | None = None) -> int:
        i = self._store.get_index(key, -1) if isinstance(key, str) else -1
        if i < 0 or i < start or (stop is not None and i >= stop):
            raise ValueError(f"{key!r} is not in index_to_key")
        return i

    def count(self, key) -> int:
        return int(key in self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, tuple, _IndexToKey)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        n = len(self)
        if self._store.closed:
            return f"<index_to_key of a closed store, {n} keys>"
        head = ", ".join(repr(k) for k in self[:5])
        return f"<index_to_key [{head}{', ...' if n > 5 else ''}] ({n} keys)>"


class _KeyToIndex(Mapping):
    """``store.key_to_index``: a read-only mapping answered by the on-disk hash table."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getitem__(self, key: str) -> int:
        if not isinstance(key, str):
            raise KeyError(key)
        return self._store.get_index(key)

    def get(self, key, default=None):
        if not isinstance(key, str):
            return default
        i = self._store._checked_index().find(key)
        return default if i < 0 else int(i)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._store._checked_index().find(key) >= 0

    def __len__(self) -> int:
        return self._store._n

    def __iter__(self) -> Iterator[str]:
        return iter(self._store.index_to_key)

    def __repr__(self) -> str:
        return f"<key_to_index of {len(self)} keys>"


class Store:
    """A read-only embq store (see :func:`open`).

    Lookups follow gensim's ``KeyedVectors`` (``store["word"]``, ``store[["a", "b"]]``,
    ``get_index``, ``get_vector``, ``key_to_index``, ``index_to_key``) and row indexing follows
    numpy (``store[3]``, ``store[-1]``, ``store[2:10]``, ``store[[4, 1]]``); every lookup
    returns dequantized float32 rows.  ``codes``, ``scales``, ``zero_points`` and ``norms`` are
    the raw read-only memory maps.  Metadata (``path``, ``shape``, ``dim``, ``attrs``, ``len``)
    stays available after :meth:`close`; data access raises ``ValueError``.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, path: str | os.PathLike) -> None:
        self._index = None
        self._closed = True
        self.path = os.fspath(path)
        layout = _read_layout(self.path)
        self._n: int = layout["n"]
        self.dim: int = layout["dim"]
        self.attrs: dict[str, Any] = layout["attrs"]
        self.has_keys: bool = layout["has_keys"]
        w = layout["where"]
        self._codes = _map(self.path, w["codes"])
        self._scales = _map(self.path, w["scales"])
        self._zero_points = _map(self.path, w["zero_points"])
        self._norms = _map(self.path, w["norms"])
        if self.has_keys:
            self._utf8 = _map(self.path, w["keys/utf8"])
            self._offsets = _map(self.path, w["keys/offsets"])
            self._table = _map(self.path, w["keys/hash"])
            self._check_offsets()
        else:
            self._utf8 = self._offsets = self._table = None
        # Gathers run on one thread: a lookup batch is a few MB, and waking OpenMP workers on a
        # busy machine costs more than it saves.
        self._threads = 1
        self._index = _kernels().StoreIndex(
            self._codes,
            self._scales,
            self._zero_points,
            self._utf8,
            self._offsets,
            self._table,
            self.path,
        )
        self._closed = False

    def _check_offsets(self) -> None:
        # O(1) checks only (first and last); the kernel checks each offset pair it uses.
        first, last = int(self._offsets[0]), int(self._offsets[-1])
        if first != 0 or last != self._utf8.shape[0]:
            raise StoreError(
                f"key offsets run from {first} to {last}, expected 0 to "
                f"{self._utf8.shape[0]} (the length of 'keys/utf8')",
                path=self.path,
            )

    # -- basics -------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """``(n_rows, dim)``."""
        return (self._n, self.dim)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        keys = "keys" if self.has_keys else "no keys"
        return f"<embq.Store {self.path!r} shape={self.shape} {keys} ({state})>"

    def close(self) -> None:
        """Release the memory maps.  Safe to call more than once.

        Arrays obtained earlier from ``codes`` etc. stay valid (they keep their mapping).
        """
        self._closed = True
        self._index = None
        self._codes = self._scales = self._zero_points = self._norms = None
        self._utf8 = self._offsets = self._table = None

    def _drop_resident_pages(self) -> None:
        """Drop this process's resident pages of the row arrays (they stay in the page cache).

        A scan over every row (export, evaluation) would otherwise leave the whole codes
        array counted in the process's resident memory.  Data stays valid: a later read maps
        the pages back in.  Advice only, so failures are ignored.
        """
        for arr in (self._codes, self._scales, self._zero_points, self._norms):
            m = getattr(arr, "_mmap", None)
            if m is not None and hasattr(m, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
                try:
                    m.madvise(mmap.MADV_DONTNEED)
                except (OSError, ValueError):
                    pass

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self):
        raise TypeError(
            "embq.Store objects cannot be pickled: they hold memory maps of an open file; "
            "pickle the path and call embq.open(path) in the other process"
        )

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"I/O operation on {self.path!r}: the store is closed")

    def _checked_index(self):
        index = self._index
        if index is None:
            self._check_open()
        return index

    # -- raw arrays ---------------------------------------------------------------------------
    @property
    def codes(self) -> np.ndarray:
        """uint8 (n, dim) codes, memory-mapped read-only."""
        self._check_open()
        return self._codes

    @property
    def scales(self) -> np.ndarray:
        """float32 (n,) per-row scales, memory-mapped read-only."""
        self._check_open()
        return self._scales

    @property
    def zero_points(self) -> np.ndarray:
        """uint8 (n,) per-row zero points, memory-mapped read-only."""
        self._check_open()
        return self._zero_points

    @property
    def norms(self) -> np.ndarray:
        """float32 (n,) L2 norms of the dequantized rows, memory-mapped read-only."""
        self._check_open()
        return self._norms

    # -- keys ---------------------------------------------------------------------------------
    @property
    def index_to_key(self) -> Sequence[str] | None:
        """Keys in row order (a lazy sequence), or None for a store without keys."""
        self._check_open()
        return _IndexToKey(self) if self.has_keys else None

    @property
    def key_to_index(self) -> Mapping[str, int] | None:
        """Key -> row (a lazy mapping over the on-disk hash table), or None without keys."""
        self._check_open()
        return _KeyToIndex(self) if self.has_keys else None

    def __contains__(self, key: object) -> bool:
        index = self._checked_index()
        if isinstance(key, str):
            return index.find(key) >= 0
        # gensim's rule: an integer in range counts as present.
        if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
            return 0 <= key < self._n
        return False

    def has_index_for(self, key: object) -> bool:
        """gensim's name for ``key in store``."""
        return key in self

    def get_index(self, key: Any, default: int | None = None) -> int:
        """Row of ``key`` (an int in range is returned as is, as in gensim).

        Returns ``default`` when the key is absent and a default is given, otherwise raises
        ``KeyError("Key '...' not present")``.
        """
        index = self._checked_index()
        if isinstance(key, str):
            i = index.find(key)
            if i >= 0:
                return int(i)
        elif isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
            if 0 <= key < self._n:
                return int(key)
        if default is not None:
            return default
        if isinstance(key, str) and not self.has_keys:
            raise KeyError(
                f"Key '{key}' not present: this store has no keys (a matrix without "
                "vocabulary); index it by row number"
            )
        raise KeyError(f"Key '{key}' not present")

    def get_vector(self, key: Any, norm: bool = False) -> np.ndarray:
        """Dequantized float32 vector of a key (or row number).

        Parameters
        ----------
        key : str or int
        norm : bool, default False
            Divide by the row's stored L2 norm (a zero row stays zero).
        """
        i = self.get_index(key)
        vec = self._index.row_vector(i)
        if norm:
            nv = self._norms[i]
            if nv > 0:
                vec /= nv
        return vec

    # -- indexing -----------------------------------------------------------------------------
    def __getitem__(self, key: Any) -> np.ndarray:
        if type(key) is str:
            index = self._index
            if index is not None:
                return index.key_vector(key)
        return self._getitem(key)

    def _getitem(self, key: Any) -> np.ndarray:
        index = self._checked_index()
        if isinstance(key, str):
            return index.key_vector(key)
        if isinstance(key, (bool, np.bool_)):
            raise TypeError("store indices must be int, slice, str or a sequence of them, not bool")
        if isinstance(key, (int, np.integer)):
            return index.row_vector(self._check_row(int(key)))
        if isinstance(key, slice):
            return index.gather(self._threads, np.arange(self._n, dtype=np.int64)[key])
        if isinstance(key, np.ndarray):
            return self._getitem_array(key)
        if isinstance(key, (list, tuple)):
            return self._getitem_list(list(key))
        raise TypeError(
            "store indices must be int, slice, str, a list of int or str, or an integer "
            f"array; got {type(key).__name__}"
        )

    def _check_row(self, i: int) -> int:
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"row {i if i >= 0 else i - self._n} out of range for a store of "
                             f"{self._n} rows")
        return i

    def _rows_from_ints(self, rows: np.ndarray) -> np.ndarray:
        rows = rows.astype(np.int64, copy=True)
        neg = rows < 0
        if neg.any():
            rows[neg] += self._n
        bad = (rows < 0) | (rows >= self._n)
        if bad.any():
            j = int(np.argmax(bad))
            orig = rows[j] - self._n if neg[j] else rows[j]
            raise IndexError(
                f"row {int(orig)} (item {j}) out of range for a store of {self._n} rows"
            )
        return rows

    def _getitem_array(self, arr: np.ndarray) -> np.ndarray:
        if arr.ndim == 0:
            return self._getitem(arr.item())
        if arr.ndim != 1:
            raise IndexError(f"index arrays must be 1-D, got shape {arr.shape}")
        kind = arr.dtype.kind
        if kind in "iu":
            return self._index.gather(self._threads, self._rows_from_ints(arr))
        if kind == "b":
            if arr.shape[0] != self._n:
                raise IndexError(
                    f"boolean index has length {arr.shape[0]}, expected {self._n} (one per row)"
                )
            return self._index.gather(self._threads, np.flatnonzero(arr).astype(np.int64))
        if kind in "UO":
            return self._getitem_list(arr.tolist())
        raise TypeError(f"index arrays must hold integers or str, got dtype {arr.dtype}")

    def _getitem_list(self, items: list) -> np.ndarray:
        index = self._index
        if not items:
            return np.empty((0, self.dim), np.float32)
        first = items[0]
        if isinstance(first, str):
            try:
                rows = index.find_many(items)
            except TypeError:
                # Keys mixed with row numbers (gensim allows it): resolve one by one; a bad item
                # raises TypeError naming its position.
                rows = np.array([self._resolve(v, j) for j, v in enumerate(items)], np.int64)
                return index.gather(self._threads, rows)
            missing = rows < 0
            if missing.any():
                key = items[int(np.argmax(missing))]
                raise _missing_key_error(self, key)
            return index.gather(self._threads, rows)
        try:
            rows = np.array([operator.index(v) for v in items], dtype=np.int64)
        except TypeError:
            rows = np.array([self._resolve(v, j) for j, v in enumerate(items)], np.int64)
            return index.gather(self._threads, rows)
        if any(isinstance(v, (bool, np.bool_)) for v in items):
            raise TypeError("store indices must be int or str, not bool")
        return index.gather(self._threads, self._rows_from_ints(rows))

    def _resolve(self, v: Any, j: int) -> int:
        if isinstance(v, str):
            return self.get_index(v)
        if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
            return self._check_row(int(v))
        raise TypeError(
            f"store indices must be int or str; item {j} is {type(v).__name__} {v!r}"
        )

    def vectors_for_all(self, keys: Iterable[str]) -> np.ndarray:
        """Vectors of many keys (gensim's batch lookup): same as ``store[list(keys)]``."""
        return self[list(keys)]

    # -- delegation to the search, evaluate and interop modules -------------------------------
    def search(self, queries, k: int = 10, *, metric: str = "cosine", rescore=None,
               restrict=None, n_threads=None):
        """Top-k rows for each query; see :func:`embq._search.search_store`."""
        from embq._search import search_store

        return search_store(self, queries, k, metric=metric, rescore=rescore,
                            restrict=restrict, n_threads=n_threads)

    # The gensim-style wrappers take embq._search's keyword-only options (``rescore``, default
    # 4, and ``n_threads``) as **options and forward only those given, so the defaults are
    # defined once, in embq._search; an unknown option is its TypeError naming the keyword.
    def most_similar(self, positive=None, negative=None, topn: int | None = 10,
                     restrict_vocab=None, **options):
        """gensim's ``most_similar`` (``topn=None``: every row's score); see
        :func:`embq._search.most_similar` (options ``rescore=4``, ``n_threads=None``)."""
        from embq._search import most_similar

        return most_similar(self, positive=positive, negative=negative, topn=topn,
                            restrict_vocab=restrict_vocab, **options)

    def most_similar_batch(self, keys, topn: int | None = 10, restrict_vocab=None, **options):
        """``most_similar`` for a list of keys at once; see
        :func:`embq._search.most_similar_batch` (options ``rescore=4``, ``n_threads=None``)."""
        from embq._search import most_similar_batch

        return most_similar_batch(self, keys, topn=topn, restrict_vocab=restrict_vocab,
                                  **options)

    def similar_by_vector(self, vector, topn: int | None = 10, restrict_vocab=None, **options):
        """Nearest keys to a vector; see :func:`embq._search.similar_by_vector` (options
        ``rescore=4``, ``n_threads=None``)."""
        from embq._search import similar_by_vector

        return similar_by_vector(self, vector, topn=topn, restrict_vocab=restrict_vocab,
                                 **options)

    def similar_by_key(self, key, topn: int | None = 10, restrict_vocab=None, **options):
        """Nearest keys to a key, the key itself left out: ``most_similar(positive=[key])``
        (options ``rescore=4``, ``n_threads=None``)."""
        from embq._search import most_similar

        return most_similar(self, positive=[key], topn=topn, restrict_vocab=restrict_vocab,
                            **options)

    similar_by_word = similar_by_key

    def evaluate_word_pairs(self, pairs, delimiter: str = "\t", encoding: str = "utf8",
                            restrict_vocab: int = 300000, case_insensitive: bool = True,
                            dummy4unknown: bool = False):
        """gensim's ``evaluate_word_pairs``; see :func:`embq._evaluate.evaluate_word_pairs`."""
        from embq._evaluate import evaluate_word_pairs

        return evaluate_word_pairs(
            self, pairs, delimiter=delimiter, encoding=encoding, restrict_vocab=restrict_vocab,
            case_insensitive=case_insensitive, dummy4unknown=dummy4unknown)

    def evaluate_word_analogies(self, analogies, restrict_vocab: int = 300000,
                                case_insensitive: bool = True, dummy4unknown: bool = False):
        """gensim's ``evaluate_word_analogies``; see :func:`embq._evaluate.evaluate_word_analogies`."""
        from embq._evaluate import evaluate_word_analogies

        return evaluate_word_analogies(
            self, analogies, restrict_vocab=restrict_vocab, case_insensitive=case_insensitive,
            dummy4unknown=dummy4unknown)

    def to_arrow(self, *, stream: bool = False, batch_rows: int | None = None):
        """Keys and dequantized rows as Arrow data: see :func:`embq._write_formats.to_arrow`."""
        from embq._write_formats import to_arrow
        return to_arrow(self, stream=stream, batch_rows=batch_rows)

    def to_keyed_vectors(self):
        """A gensim ``KeyedVectors`` holding the dequantized rows; see :mod:`embq._interop`."""
        from embq._interop import to_keyed_vectors

        return to_keyed_vectors(self)


def _missing_key_error(store: Store, key: str) -> KeyError:
    if not store.has_keys:
        return KeyError(
            f"Key '{key}' not present: this store has no keys (a matrix without vocabulary); "
            "index it by row number"
        )
    return KeyError(f"Key '{key}' not present")
