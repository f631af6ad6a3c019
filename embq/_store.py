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
import shutil
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from embq._errors import DuplicateKeyError, StoreError
from embq._publish import check_destination, publish
from embq._version import __version__

if TYPE_CHECKING:
    from embq._typing import ArrayLike, KeyOrRow

__all__ = ["FORMAT", "FORMAT_VERSION", "SCHEME", "Store", "StoreWriter", "open", "save"]

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
    sketch : bool, default False
        Also write the sign-bit sketch (``sketch`` and ``sketch_center``, docs/format.md),
        computed at :meth:`close` in two passes over the spooled codes.

    Raises
    ------
    embq._errors.OutputExistsError
        ``path`` exists and ``overwrite`` is false (a ``FileExistsError``).
    FileNotFoundError
        The directory of ``path`` does not exist.
    IsADirectoryError
        ``path`` is a directory.

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
        sketch: bool = False,
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
        self.sketch = bool(sketch)
        self.n_rows = 0
        check_destination(self.path, self.overwrite)
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
        import secrets  # several ms to import (hmac, random): only writers pay for it

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

    def append(self, matrix: ArrayLike, keys: Sequence[str] | None = None, *,
               on_duplicate: str = "error") -> np.ndarray:
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
        codes: ArrayLike,
        scales: ArrayLike,
        zero_points: ArrayLike | None = None,
        keys: Sequence[str] | None = None,
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
        embq._errors.OutputExistsError
            A file appeared at ``path`` meanwhile and ``overwrite`` is false (the data is
            discarded, the other file is untouched).
        ValueError
            The writer was aborted.
        """
        if self._state == "closed":
            return
        if self._state != "open":
            raise ValueError(
                f"cannot close the store writer for {self.path!r}: it was {self._state}")
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
            if self.sketch:
                self._write_sketch(f, n, d)
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
        publish(tmp, self.path, overwrite=self.overwrite)
        self._cleanup()

    def _write_sketch(self, f, n: int, d: int) -> None:
        """The sketch datasets, from the spooled codes memory-mapped (two passes, one block
        of rows in memory at a time)."""
        from embq._sketch import write_sketch

        def spool(name, dtype, shape):
            if n == 0:
                return np.zeros(shape, dtype)
            return np.memmap(os.path.join(self._tmpdir, name + ".raw"), dtype=dtype, mode="r",
                             shape=shape)

        write_sketch(f, spool("codes", np.uint8, (n, d)), spool("scales", np.float32, (n,)),
                     spool("zero_points", np.uint8, (n,)), n_threads=self.n_threads)

    def _copy_spool(self, raw: str, ds, dtype, shape) -> None:
        n = shape[0]
        if ds.size == 0:
            return
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
        step = max(1, _COPY_BLOCK_BYTES // row_bytes)
        with builtins.open(raw, "rb") as fh:
            for start in range(0, n, step):
                stop = min(n, start + step)
                count = (stop - start) * (row_bytes // np.dtype(dtype).itemsize)
                block = np.fromfile(fh, dtype=dtype, count=count)
                if block.size * np.dtype(dtype).itemsize != (stop - start) * row_bytes:
                    raise OSError(f"spool file {raw!r} is shorter than expected")
                ds[start:stop] = block.reshape((stop - start,) + tuple(shape[1:]))


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
    matrix: ArrayLike,
    keys: Sequence[str] | None = None,
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


# An attribute is metadata: one claiming more than this is refused before it is read, since
# reading allocates what its dataspace claims.
_MAX_ATTR_BYTES = 1 << 20

# What a store's datasets may be: (name, dtype, shape or None for "any 1-D").
_ROW_DATASETS = ("codes", "scales", "zero_points", "norms")
_KEY_DATASETS = ("keys/utf8", "keys/offsets", "keys/hash")


def _one_line(exc: BaseException) -> str:
    # str() of a KeyError is the repr of its argument: take the message itself.
    raw = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    text = " ".join(str(raw).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _check_vlen_attr(aid, name: str, messages, path: str, where: str) -> None:
    """Refuse a variable-length attribute whose elements claim more than an attribute holds.

    libhdf5 allocates and clears what each element's stored length claims (up to 4 GB each)
    before it reads the global heap, so the lengths are read raw from the object header
    (embq._hdf5_check) first; the heap itself is checked by the guarded file when read.
    """
    import h5py

    from embq._hdf5_check import HeaderError

    htype = aid.get_type()
    if not ((isinstance(htype, h5py.h5t.TypeStringID) and htype.is_variable_str())
            or (isinstance(htype, h5py.h5t.TypeVlenID)  # no references, no vlen in vlen:
                and not htype.get_super().dtype.hasobject)):
        raise StoreError(
            f"attribute {name!r} of {where} has type {aid.dtype} (references or "
            "variable-length members inside it); a store's attributes are numbers, strings "
            "and arrays of them",
            path=path,
        )
    count = 1
    for s in aid.shape or ():
        count *= int(s)
    try:
        claimed = messages().vlen_nbytes(name, count)
    except HeaderError as exc:
        raise StoreError(f"cannot read attribute {name!r} of {where} safely: {exc}",
                         path=path) from None
    nbytes = sum(claimed)
    if nbytes > _MAX_ATTR_BYTES:
        raise StoreError(
            f"attribute {name!r} of {where} claims {nbytes:,} bytes of variable-length data "
            f"(up to {max(claimed):,} in one value); an attribute holds at most "
            f"{_MAX_ATTR_BYTES:,} bytes in a store",
            path=path,
        )


def _read_attrs(obj, path: str, where: str, reading: list[str] | None = None,
                guard=None) -> dict[str, Any]:
    """Every attribute of an HDF5 object, each checked for size before it is read.

    ``reading[0]`` (when given) names the attribute being read, for the message on damaged
    metadata, and is restored afterwards.  ``guard`` (the :class:`embq._hdf5_check.GuardedFile`
    h5py reads through) lets variable-length values be checked before libhdf5 reads them.
    """
    import h5py

    out: dict[str, Any] = {}
    parsed: list = []

    def messages():
        # The object header's attribute messages, parsed once, when a string first needs them.
        if not parsed:
            from embq._hdf5_check import AttributeMessages

            sizes = h5py.h5i.get_file_id(obj.id).get_create_plist().get_sizes()
            parsed.append(AttributeMessages(guard.fileno(), guard.file_size,
                                            h5py.h5o.get_info(obj.id).addr, *sizes))
        return parsed[0]

    before = reading[0] if reading else None
    listing = f"the attribute names of {where}"
    if reading:
        reading[0] = listing
    for name in obj.attrs:
        if reading:
            reading[0] = f"attribute {name!r} of {where}"
        aid = h5py.h5a.open(obj.id, name.encode("utf-8"))
        shape = aid.shape or ()
        count = 1
        for s in shape:
            count *= int(s)
        nbytes = count * aid.dtype.itemsize
        if nbytes > _MAX_ATTR_BYTES:
            raise StoreError(
                f"attribute {name!r} of {where} claims {count:,} values ({nbytes:,} bytes); "
                f"an attribute holds at most {_MAX_ATTR_BYTES:,} bytes in a store",
                path=path,
            )
        if guard is not None and aid.dtype.hasobject:
            _check_vlen_attr(aid, name, messages, path, where)
        out[name] = _attr_value(obj.attrs[name])
        if reading:
            reading[0] = listing
    if reading:
        reading[0] = before
    return out


def _hard_object(f, name: str, path: str):
    """The HDF5 object id at ``name`` (None if absent), reached by a hard link only.

    The link is checked before the object is dereferenced: soft links can loop and external
    links open other files, and a store holds its objects directly.  (Low-level calls: the
    high-level ``f.get`` costs several times more, and open() makes eight of these.)
    """
    import h5py

    bname = name.encode("utf-8")
    links = f.id.links
    if not links.exists(bname):
        return None
    if links.get_info(bname).type != h5py.h5l.TYPE_HARD:
        link = f.get(name, getlink=True)
        if isinstance(link, h5py.SoftLink):
            kind = f"a soft link to {link.path!r}"
        elif isinstance(link, h5py.ExternalLink):
            kind = f"an external link to {link.path!r} in {link.filename!r}"
        else:
            kind = f"a {type(link).__name__}"
        raise StoreError(
            f"{name!r} is {kind}; a store holds its datasets directly (hard links only)",
            path=path,
        )
    return h5py.h5o.open(f.id, bname)


def _kind(oid) -> str:
    import h5py

    if isinstance(oid, h5py.h5g.GroupID):
        return "Group"
    if isinstance(oid, h5py.h5d.DatasetID):
        return "Dataset"
    return "Datatype" if isinstance(oid, h5py.h5t.TypeID) else type(oid).__name__


class _Array:
    """Where a dataset's bytes are in the file (``offset`` None for an empty dataset)."""

    __slots__ = ("nbytes", "offset")

    def __init__(self, offset: int | None, nbytes: int) -> None:
        self.offset = offset
        self.nbytes = nbytes


def _locate(dsid, path: str, file_size: int, name: str) -> _Array:
    """Check that dataset ``dsid`` is stored as one run of bytes inside the file; say where.

    Nothing of the dataset is read: a dataset that is chunked, filtered, compact, virtual,
    stored in external files or never written is refused, as is one that reaches past the end
    of the file, so no header can make embq allocate or read what the file does not hold.
    """
    import h5py

    count = 1
    for extent in dsid.shape:
        count *= int(extent)
    nbytes = count * dsid.dtype.itemsize
    plist = dsid.get_create_plist()
    layout = plist.get_layout()
    if plist.get_external_count() > 0:
        raise StoreError(
            f"dataset {name!r} keeps its data in external files; refused, since reading it "
            "would read other files of this machine (a store holds its data itself)",
            path=path,
        )
    if layout != h5py.h5d.CONTIGUOUS:
        kinds = {h5py.h5d.CHUNKED: "chunked", h5py.h5d.COMPACT: "compact"}
        virtual = getattr(h5py.h5d, "VIRTUAL", None)
        if virtual is not None:
            kinds[virtual] = "virtual (its data comes from other datasets or files)"
        kind = kinds.get(layout, f"of HDF5 layout {layout}")
        raise StoreError(
            f"dataset {name!r} is {kind}; a store's datasets must be contiguous and "
            "unfiltered so they can be memory-mapped, as embq writes them (rewrite the file "
            "with `h5repack -l CONTI` or re-create it with embq)",
            path=path,
        )
    if plist.get_nfilters() != 0:
        raise StoreError(
            f"dataset {name!r} has filters (compression or checksums); a store's datasets "
            "must be unfiltered so they can be memory-mapped",
            path=path,
        )
    if nbytes == 0:
        return _Array(None, 0)
    offset = dsid.get_offset()
    if offset is None or dsid.get_storage_size() != nbytes:
        raise StoreError(
            f"dataset {name!r} claims {nbytes:,} bytes but has no storage allocated in the file "
            "(never written)",
            path=path,
        )
    if offset + nbytes > file_size:
        raise StoreError(
            f"dataset {name!r} ends at byte {offset + nbytes:,} but the file has only "
            f"{file_size:,} bytes (truncated file?)",
            path=path,
        )
    return _Array(int(offset), nbytes)


def _check_no_overlap(where: dict[str, tuple[_Array, tuple[int, ...], np.dtype]],
                      path: str) -> None:
    runs = sorted((loc.offset, loc.offset + loc.nbytes, name)
                  for name, (loc, _, _) in where.items() if loc.offset is not None)
    for (_, end, a), (start, _, b) in zip(runs, runs[1:]):
        if start < end:
            raise StoreError(
                f"datasets {a!r} and {b!r} share bytes of the file (byte {start:,}); each "
                "dataset of a store has its own run of bytes",
                path=path,
            )


def _open_regular(path: str) -> int:
    """A read-only descriptor of ``path``, refusing anything but a regular file at once.

    O_NONBLOCK keeps a FIFO from blocking the open; the type is checked on the descriptor, so
    the file checked is the file read even if the path is replaced meanwhile.
    """
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"no such store file: {path!r}", path) from None
    except IsADirectoryError:
        raise IsADirectoryError(errno.EISDIR, f"{path!r} is a directory, not a store",
                                path) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, f"{path!r} is a directory, not a store", path)
        if not stat.S_ISREG(mode):
            kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode)
                    else "a character device" if stat.S_ISCHR(mode)
                    else "a block device" if stat.S_ISBLK(mode)
                    else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
            raise StoreError(f"{kind}, not a store file; a store is a regular HDF5 file",
                             path=path)
    except BaseException:
        os.close(fd)
        raise
    return fd



def _has_hdf5_signature(fh, file_size: int) -> bool:
    from embq._hdf5_check import superblock_offset

    return superblock_offset(fh.fileno(), file_size) is not None


def _raise_if_heap_refused(fh, path: str, reading: str) -> None:
    """Raise the StoreError for a read the guarded file refused (a bad global heap collection).

    h5py turns the refused read into an exception of its own (which one depends on the
    call); the reason kept by the guard is the one worth reporting.
    """
    if fh.refusal is not None:
        raise StoreError(f"damaged HDF5 metadata while reading {reading}: {fh.refusal}",
                         path=path)


def _read_layout(path: str) -> dict[str, Any]:
    """Validate the metadata of the store at ``path`` and map the file.

    Returns the attributes, shape, whether there are keys, where each dataset is, and
    ``mmap``: a read-only map of the whole file (None when every dataset is empty).
    """
    import h5py

    from embq._hdf5_check import GuardedFile

    fd = _open_regular(path)
    try:
        file_size = os.fstat(fd).st_size
        # h5py reads the metadata through this descriptor, not through the path again, and
        # every global heap collection libhdf5 reads is checked first (see _hdf5_check).
        with GuardedFile(os.dup(fd), file_size) as fh:
            try:
                f = h5py.File(fh, "r")
            except (OSError, RuntimeError, ValueError, KeyError, OverflowError) as exc:
                # OverflowError: h5py's file-object driver seeking to an address past 2**63.
                _raise_if_heap_refused(fh, path, "the superblock")
                if not _has_hdf5_signature(fh, file_size):
                    raise StoreError(
                        "not an HDF5 file (an embq store is an HDF5 file with format='embq')",
                        path=path,
                    ) from None
                raise StoreError(f"cannot open the HDF5 file: {_one_line(exc)}",
                                 path=path) from None
            reading = ["the root attributes"]
            with f:
                try:
                    layout = _validate(f, path, file_size, reading, guard=fh)
                except StoreError:
                    raise
                except (OSError, RuntimeError, KeyError, ValueError, TypeError,
                        AttributeError, IndexError, OverflowError, MemoryError) as exc:
                    # h5py reports damaged object headers, heaps and B-trees with any of these.
                    _raise_if_heap_refused(fh, path, reading[0])
                    raise StoreError(
                        f"damaged HDF5 metadata while reading {reading[0]}: {_one_line(exc)}",
                        path=path,
                    ) from None
        mapped = any(loc.offset is not None for loc, _, _ in layout["where"].values())
        try:
            layout["mmap"] = mmap.mmap(fd, 0, access=mmap.ACCESS_READ) if mapped else None
        except OSError as exc:  # address space exhausted (ulimit -v), or no mmap here
            raise OSError(exc.errno, f"cannot memory-map the store: {exc.strerror}",
                          path) from None
    finally:
        os.close(fd)
    return layout


def _validate(f, path: str, file_size: int, reading: list[str],
              guard=None) -> dict[str, Any]:
    """The checks of :func:`_read_layout` on the open HDF5 file ``f``.

    ``reading[0]`` is kept up to date with the object being read, for the message when h5py
    fails on damaged metadata.
    """
    import h5py

    attrs = _read_attrs(f, path, "the root group", reading, guard)
    fmt = attrs.get("format")
    if not isinstance(fmt, str) or fmt != FORMAT:  # an array would compare element-wise
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
    if not isinstance(attrs.get("scheme"), str) or attrs.get("scheme") != SCHEME:
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
    # the optional sketch (docs/format.md, "Sketch"): both datasets or neither
    if _hard_object(f, "sketch", path) is not None or \
            _hard_object(f, "sketch_center", path) is not None:
        expected += [("sketch", np.uint8, (n, (d + 7) // 8)), ("sketch_center", np.float32, (d,))]
    if has_keys:
        reading[0] = "the group 'keys'"
        group = _hard_object(f, "keys", path)
        if group is None:
            raise StoreError("has_keys is true but the group 'keys' is missing", path=path)
        if not isinstance(group, h5py.h5g.GroupID):
            raise StoreError(f"'keys' is a {_kind(group)}, expected a group", path=path)
        expected += [
            ("keys/utf8", np.uint8, None),
            ("keys/offsets", np.int64, (n + 1,)),
            ("keys/hash", np.int64, None),
        ]
    where: dict[str, tuple[_Array, tuple[int, ...], np.dtype]] = {}
    for name, dtype, shape in expected:
        reading[0] = f"dataset {name!r}"
        obj = _hard_object(f, name, path)
        if obj is None:
            raise StoreError(f"missing dataset {name!r}", path=path)
        if not isinstance(obj, h5py.h5d.DatasetID):
            raise StoreError(f"{name!r} is a {_kind(obj)}, expected a dataset", path=path)
        if obj.dtype != np.dtype(dtype) or obj.dtype.str != np.dtype(dtype).str:
            raise StoreError(
                f"dataset {name!r} has dtype {obj.dtype.str} ({obj.dtype}), expected "
                f"{np.dtype(dtype).str} ({np.dtype(dtype)})",
                path=path,
            )
        if shape is None:
            if len(obj.shape) != 1:
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
            table_attrs = _read_attrs(h5py.Dataset(obj), path, "dataset 'keys/hash'",
                                      reading, guard)
            hf, pr = table_attrs.get("hash_function"), table_attrs.get("probing")
            if hf != HASH_FUNCTION or pr != PROBING:
                raise StoreError(
                    f"key hash table uses hash_function={hf!r}, probing={pr!r}; this embq "
                    f"reads hash_function={HASH_FUNCTION!r}, probing={PROBING!r}",
                    path=path,
                )
        where[name] = (_locate(obj, path, file_size, name), obj.shape, np.dtype(dtype))
    _check_no_overlap(where, path)
    return {"attrs": attrs, "n": n, "dim": d, "has_keys": has_keys, "where": where}


def _map(mm: mmap.mmap | None,
         spec: tuple[_Array, tuple[int, ...], np.dtype]) -> np.ndarray:
    loc, shape, dtype = spec
    if loc.offset is None:
        arr = np.zeros(shape, dtype)  # an empty dataset (a dimension is 0): nothing to map
    else:
        arr = np.ndarray(shape, dtype, buffer=mm, offset=loc.offset)
    arr.flags.writeable = False
    return arr


def open(path: str | os.PathLike) -> Store:
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
    IsADirectoryError
        ``path`` is a directory.
    StoreError
        The file is not HDF5, not an embq store, of an unsupported version, or its datasets
        are missing or disagree in shape or dtype; or it cannot be trusted as a store: not a
        regular file (a FIFO or a device), damaged HDF5 metadata, an object reached by a soft,
        external or user-defined link, a dataset that is not contiguous and unfiltered (chunked,
        compressed, compact, virtual, external raw storage, never written), reaches past the
        end of the file or shares bytes with another, an attribute of more than 1 MB (string
        values included, their lengths read from the object header before libhdf5 allocates
        them), a global heap collection (where string values are kept) that libhdf5 would loop
        on or read out of, string attributes kept in dense attribute storage, key
        offsets that do not span the key bytes, or a key hash table that does not find the
        first keys.  The message names the file and the dataset, attribute or row; see "What
        embq trusts and what it verifies" in docs/format.md, which also lists what is checked
        later, on use (each key's offsets and bytes, each hash-table slot followed).
    OSError
        The file cannot be read or memory-mapped.
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
            start, stop, step = i.indices(n)
            if step == 1:
                out: list[str] = []
                for a in range(start, stop, self._ITER_BLOCK):
                    out += self._decode_block(utf8, offsets, a, min(stop, a + self._ITER_BLOCK))
                return out
            return [self._decode(utf8, offsets, j) for j in range(start, stop, step)]
        try:
            j = operator.index(i)
        except TypeError:
            raise TypeError(
                f"index_to_key indices must be int or slice, got {type(i).__name__}"
            ) from None
        if j < 0:
            j += n
        if not 0 <= j < n:
            raise IndexError(f"index {i} out of range for {n} keys (valid: {-n} to {n - 1})")
        return self._decode(utf8, offsets, j)

    def _decode(self, utf8, offsets, j: int) -> str:
        a, b = int(offsets[j]), int(offsets[j + 1])
        if not 0 <= a <= b <= utf8.shape[0]:
            raise self._damaged(j, f"its offsets run from {a} to {b}")
        try:
            return bytes(utf8[a:b]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self._damaged(j, f"its bytes are not UTF-8 ({exc.reason})") from None

    def _decode_block(self, utf8, offsets, start: int, stop: int) -> list[str]:
        """Keys ``start:stop`` decoded straight from the memory maps, offsets checked once.

        The key bytes are copied once with a newline after each key, then decoded and split
        by two C-level calls, several times faster than decoding key by key.  A newline inside
        a key (legal, if odd) makes that split ambiguous: such a block is decoded key by key.
        A key that is not UTF-8 fails the whole decode, since the newlines end any multi-byte
        sequence a key leaves open; the key-by-key decode then names its row.
        """
        if stop <= start:
            return []
        raw = offsets[start : stop + 1]
        bad = (raw[:-1] < 0) | (raw[1:] < raw[:-1]) | (raw[1:] > utf8.shape[0])
        if bad.any():
            j = start + int(np.argmax(bad))
            raise self._damaged(j, f"its offsets run from {offsets[j]} to {offsets[j + 1]}")
        first = int(raw[0])
        blob = utf8[first : int(raw[-1])]
        if np.count_nonzero(blob == 10) == 0:
            spread = np.empty(blob.shape[0] + (stop - start), np.uint8)
            # Key j ends at raw[j + 1] - first, and j newlines precede it in the spread copy.
            ends = raw[1:] - first + np.arange(stop - start)
            keep = np.ones(spread.shape[0], np.bool_)
            keep[ends] = False
            spread[keep] = blob
            spread[ends] = 10
            try:
                return spread[:-1].tobytes().decode("utf-8").split("\n")
            except UnicodeDecodeError:
                pass  # found below, row by row
        return [self._decode(utf8, offsets, j) for j in range(start, stop)]

    def _damaged(self, j: int, what: str) -> StoreError:
        return StoreError(
            f"key of row {j} is damaged: {what}; expected non-decreasing offsets within the "
            f"{self._store._utf8.shape[0]} bytes of 'keys/utf8' and UTF-8 bytes",
            path=self._store.path,
        )

    def __iter__(self) -> Iterator[str]:
        utf8, offsets = self._arrays()
        n = len(self)
        for start in range(0, n, self._ITER_BLOCK):
            yield from self._decode_block(utf8, offsets, start,
                                          min(n, start + self._ITER_BLOCK))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._store._find(key) >= 0

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
        i = self._store._find(key)
        return default if i < 0 else int(i)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._store._find(key) >= 0

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
        mm = layout["mmap"]
        self._mm = mm
        self._codes = _map(mm, w["codes"])
        self._scales = _map(mm, w["scales"])
        self._zero_points = _map(mm, w["zero_points"])
        self._norms = _map(mm, w["norms"])
        self._sketch = _map(mm, w["sketch"]) if "sketch" in w else None
        self._sketch_center = _map(mm, w["sketch_center"]) if "sketch" in w else None
        if self._sketch_center is not None and not np.isfinite(self._sketch_center).all():
            bad = int(np.flatnonzero(~np.isfinite(self._sketch_center))[0])
            raise StoreError(f"dataset 'sketch_center' holds {self._sketch_center[bad]} at "
                             f"column {bad}, expected finite values", path=self.path)
        if self.has_keys:
            self._utf8 = _map(mm, w["keys/utf8"])
            self._utf8_offset = w["keys/utf8"][0].offset  # None when there are no key bytes
            self._offsets = _map(mm, w["keys/offsets"])
            self._table = _map(mm, w["keys/hash"])
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
        if self.has_keys:
            try:
                self._check_table_sample()
            except BaseException:
                self.close()
                raise

    def _check_offsets(self) -> None:
        # O(1) checks only (first and last); the kernel checks each offset pair it uses.
        first, last = int(self._offsets[0]), int(self._offsets[-1])
        if first != 0 or last != self._utf8.shape[0]:
            raise StoreError(
                f"key offsets run from {first} to {last}, expected 0 to "
                f"{self._utf8.shape[0]} (the length of 'keys/utf8')",
                path=self.path,
            )

    # Rows whose keys are looked up at open: their offsets and bytes share a page or two, and
    # a table that does not match the keys (rotated, shuffled, from another store) fails this
    # with near certainty, at the cost of a few table reads.
    _SAMPLE_ROWS = 8

    # Keys longer than this are left out of checks that would copy them: a sparse file can
    # hold a "key" of gigabytes without storing it, and opening must not allocate that.
    _CHECK_MAX_KEY_BYTES = 1 << 16

    def _check_table_sample(self) -> None:
        m = min(self._n, self._SAMPLE_ROWS)
        if m == 0:
            return
        # The leading rows with keys of sensible length (damaged offsets fail in the decode).
        too_long = np.diff(self._offsets[: m + 1]) > self._CHECK_MAX_KEY_BYTES
        if too_long.any():
            m = int(np.argmax(too_long))
            if m == 0:
                return
        keys = self.index_to_key[:m]
        rows = self._index.find_many(keys)
        bad = rows != np.arange(m)
        if bad.any():
            j = int(np.argmax(bad))
            got = "finds no row" if rows[j] < 0 else f"finds row {int(rows[j])}"
            raise StoreError(
                f"the key hash table 'keys/hash' does not match the keys: a lookup of the key "
                f"of row {j} ({keys[j]!r}) {got}",
                path=self.path,
            )

    def _rows_of_keys(self, keys: list) -> np.ndarray:
        """Rows of a list of str keys, looked up as one batch; -1 for an absent key, the
        first such miss checked against the table (see _verify_miss). A TypeError names the
        first item that is not a str."""
        rows = self._checked_index().find_many(keys)
        missing = np.flatnonzero(rows < 0)
        if missing.size and self.has_keys:
            self._verify_miss(keys[int(missing[0])])
        return rows

    def _find(self, key: Any) -> int:
        """Row of a str key or -1, with a miss checked against the table (see _verify_miss)."""
        i = self._checked_index().find(key)
        if i < 0 and self.has_keys:
            self._verify_miss(key)
        return i

    def _verify_miss(self, key: str, key_hash: int | None = None) -> None:
        """Check the probe sequence that just reported ``key`` absent (``key_hash``: its
        ``hash_key``, when the caller has it already).

        In a linear-probing table built as docs/format.md says, every row sits in an occupied
        run of slots starting at its home slot (its hash).  A row seen on the probe whose home
        slot cannot reach its slot without crossing an empty one means the table does not
        match the keys: then "absent" may be wrong, and a StoreError says so instead.  Only
        misses pay for this; hits are proven by the key bytes themselves.
        """
        bad = self._checked_index().check_miss(key, key_hash, self._CHECK_MAX_KEY_BYTES)
        if bad is not None:
            slot, row, home, empty = bad
            raise StoreError(
                f"the key hash table 'keys/hash' does not match the keys: slot {slot} holds "
                f"row {row}, whose key hashes to slot {home}, but slot {empty} between them "
                f"is empty; a lookup of {key!r} cannot be answered",
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
        self._sketch = self._sketch_center = None
        self._utf8 = self._offsets = self._table = None
        self._mm = None  # unmapped once no array obtained from the store refers to it

    def _drop_resident_pages(self) -> None:
        """Drop this process's resident pages of the row arrays (they stay in the page cache).

        A scan over every row (export, evaluation) would otherwise leave the whole codes
        array counted in the process's resident memory.  Data stays valid: a later read maps
        the pages back in.  Advice only, so failures are ignored.
        """
        m = self._mm
        if m is not None and hasattr(mmap, "MADV_DONTNEED"):
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

    @property
    def sketch(self) -> np.ndarray | None:
        """uint8 (n, ceil(dim/8)) sign-bit sketch of the rows, memory-mapped read-only, or None
        when the store has none (docs/format.md, "Sketch")."""
        self._check_open()
        return self._sketch

    @property
    def sketch_center(self) -> np.ndarray | None:
        """float32 (dim,) column mean of the dequantized rows the sketch is taken against."""
        self._check_open()
        return self._sketch_center

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
        if isinstance(key, str):
            index = self._index
            if index is None:
                self._check_open()
            if index.find(key) >= 0:
                return True
            if self.has_keys:
                self._verify_miss(key)
            return False
        self._check_open()
        # gensim's rule: an integer in range counts as present.
        if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
            return 0 <= key < self._n
        return False

    def has_index_for(self, key: object) -> bool:
        """gensim's name for ``key in store``."""
        return key in self

    def get_index(self, key: KeyOrRow, default: int | None = None) -> int:
        """Row of ``key`` (an int in range is returned as is, as in gensim).

        Returns ``default`` when the key is absent and a default is given, otherwise raises
        ``KeyError("Key '...' not present")``.  Every lookup by key (this one, ``store[key]``,
        ``key in store``, ``key_to_index``...) raises :class:`~embq._errors.StoreError`
        instead when the hash table is found not to match the keys on the way, rather than
        answer "absent" wrongly (docs/format.md, "What embq trusts and what it verifies").
        """
        self._check_open()
        if isinstance(key, str):
            i = self._find(key)
            if i >= 0:
                return int(i)
        elif (isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_))
              and 0 <= key < self._n):
            return int(key)
        if default is not None:
            return default
        if isinstance(key, str) and not self.has_keys:
            raise KeyError(
                f"Key '{key}' not present: this store has no keys (a matrix without "
                "vocabulary); index it by row number"
            )
        raise KeyError(f"Key '{key}' not present")

    def get_vector(self, key: KeyOrRow, norm: bool = False) -> np.ndarray:
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
    def __getitem__(self, key: KeyOrRow | slice | Sequence[KeyOrRow] | ArrayLike) -> np.ndarray:
        if type(key) is str:
            index = self._index
            if index is not None:
                try:
                    return index.key_vector(key)
                except KeyError:
                    if self.has_keys:
                        self._verify_miss(key)
                    raise
        return self._getitem(key)

    def _getitem(self, key: Any) -> np.ndarray:
        index = self._checked_index()
        if isinstance(key, str):
            i = self.get_index(key)
            return index.row_vector(i)
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

    def _range_text(self) -> str:
        n = self._n
        return (f"this store has {n} rows (valid rows: {-n} to {n - 1})" if n
                else "this store has no rows")

    def _check_row(self, i: int) -> int:
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"row {i if i >= 0 else i - self._n} out of range: "
                             f"{self._range_text()}")
        return i

    def _rows_from_ints(self, rows: np.ndarray) -> np.ndarray:
        if rows.dtype.kind == "u" and rows.size and int(rows.max()) >= self._n:
            # Checked before the cast to int64, which would wrap values of 2**63 and more.
            j = int(np.argmax(rows >= self._n))
            raise IndexError(f"row {int(rows[j])} (item {j}) out of range: {self._range_text()}")
        rows = rows.astype(np.int64, copy=True)
        neg = rows < 0
        if neg.any():
            rows[neg] += self._n
        bad = (rows < 0) | (rows >= self._n)
        if bad.any():
            j = int(np.argmax(bad))
            orig = rows[j] - self._n if neg[j] else rows[j]
            raise IndexError(f"row {int(orig)} (item {j}) out of range: {self._range_text()}")
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
                rows = self._rows_of_keys(items)
            except TypeError:
                # Keys mixed with row numbers (gensim allows it): resolve one by one; a bad item
                # raises TypeError naming its position.
                rows = np.array([self._resolve(v, j) for j, v in enumerate(items)], np.int64)
                return index.gather(self._threads, rows)
            missing = rows < 0
            if missing.any():
                raise _missing_key_error(self, items[int(np.argmax(missing))])
            return index.gather(self._threads, rows)
        try:
            rows = np.array([operator.index(v) for v in items], dtype=np.int64)
        except TypeError:
            rows = np.array([self._resolve(v, j) for j, v in enumerate(items)], np.int64)
            return index.gather(self._threads, rows)
        except OverflowError:
            # An integer beyond int64 is out of range of any store: name it like any other.
            rows = np.array([self._resolve(v, j) for j, v in enumerate(items)], np.int64)
        if any(isinstance(v, (bool, np.bool_)) for v in items):
            raise TypeError("store indices must be int or str, not bool")
        return index.gather(self._threads, self._rows_from_ints(rows))

    def _resolve(self, v: Any, j: int) -> int:
        if isinstance(v, str):
            return self.get_index(v)
        if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
            try:
                return self._check_row(int(v))
            except IndexError:
                raise IndexError(f"row {int(v)} (item {j}) out of range: "
                                 f"{self._range_text()}") from None
        raise TypeError(
            f"store indices must be int or str; item {j} is {type(v).__name__} {v!r}"
        )

    def vectors_for_all(self, keys: Iterable[str]) -> np.ndarray:
        """Vectors of many keys (gensim's batch lookup): same as ``store[list(keys)]``."""
        return self[list(keys)]

    # -- delegation to the search, evaluate and interop modules -------------------------------
    def search(self, queries, k: int = 10, **options):
        """Top-k rows for each query; see :func:`embq._search.search_store` (options
        ``metric``, ``rescore``, ``restrict``, ``n_threads``, ``allow`` (keys, a mask or row
        numbers), ``threshold`` and ``max_results`` for a range search, ``prefilter`` and
        ``oversample`` for the sketch). Only the options given are forwarded, so their
        defaults live in one place."""
        from embq._search import search_store

        return search_store(self, queries, k, **options)

    def allow_list(self, allow):
        """Check an allow-list once for any number of searches of this store: keys (str), a
        boolean mask over its rows, or row numbers, as an :class:`embq.AllowList` that
        ``search``, ``most_similar``, ``most_similar_batch`` and ``similar_by_vector`` take as
        ``allow=`` without checking it again (see :func:`embq.allow_list`). Keys are looked
        up once here, as one batch."""
        from embq._search import _store_allow, allow_list

        return allow_list(_store_allow(self, allow), len(self))

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
        from embq._search import similar_by_key

        return similar_by_key(self, key, topn=topn, restrict_vocab=restrict_vocab, **options)

    similar_by_word = similar_by_key

    # -- the rest of gensim's KeyedVectors (embq._keyedvectors) -------------------------------
    @property
    def vector_size(self) -> int:
        """gensim's name for ``dim``."""
        return self.dim

    @property
    def vectors(self):
        """Read-only array-like of the dequantized rows (dequantized on access, block by
        block; ``numpy.asarray(store.vectors)`` is the full float32 copy)."""
        from embq._keyedvectors import LazyVectors

        return LazyVectors(self, normed=False)

    def get_normed_vectors(self):
        """Read-only array-like of the unit rows (see ``vectors``)."""
        from embq._keyedvectors import LazyVectors

        return LazyVectors(self, normed=True)

    def similarity(self, w1, w2):
        """gensim's ``similarity``; see :func:`embq._keyedvectors.similarity`."""
        from embq._keyedvectors import similarity

        return similarity(self, w1, w2)

    def distance(self, w1, w2):
        """gensim's ``distance`` (``1 - similarity``)."""
        from embq._keyedvectors import distance

        return distance(self, w1, w2)

    def n_similarity(self, ws1, ws2):
        """gensim's ``n_similarity``; see :func:`embq._keyedvectors.n_similarity`."""
        from embq._keyedvectors import n_similarity

        return n_similarity(self, ws1, ws2)

    def distances(self, word_or_vector, other_words=(), **options):
        """gensim's ``distances``; see :func:`embq._keyedvectors.distances`."""
        from embq._keyedvectors import distances

        return distances(self, word_or_vector, other_words, **options)

    @staticmethod
    def cosine_similarities(vector_1, vectors_all):
        """gensim's static ``cosine_similarities`` on plain arrays."""
        from embq._keyedvectors import cosine_similarities

        return cosine_similarities(vector_1, vectors_all)

    def get_mean_vector(self, keys, weights=None, pre_normalize: bool = True,
                        post_normalize: bool = False, ignore_missing: bool = True):
        """gensim's ``get_mean_vector``; see :func:`embq._keyedvectors.get_mean_vector`."""
        from embq._keyedvectors import get_mean_vector

        return get_mean_vector(self, keys, weights, pre_normalize, post_normalize,
                               ignore_missing)

    def most_similar_cosmul(self, positive=None, negative=None, topn=10, restrict_vocab=None,
                            **options):
        """gensim's ``most_similar_cosmul``; see
        :func:`embq._keyedvectors.most_similar_cosmul` (options ``rescore=4``,
        ``n_threads``)."""
        from embq._keyedvectors import most_similar_cosmul

        return most_similar_cosmul(self, positive, negative, topn, restrict_vocab, **options)

    def doesnt_match(self, words):
        """gensim's ``doesnt_match``."""
        from embq._keyedvectors import doesnt_match

        return doesnt_match(self, words)

    def rank_by_centrality(self, words, use_norm: bool = True):
        """gensim's ``rank_by_centrality``."""
        from embq._keyedvectors import rank_by_centrality

        return rank_by_centrality(self, words, use_norm)

    def relative_cosine_similarity(self, wa, wb, topn: int = 10):
        """gensim's ``relative_cosine_similarity``."""
        from embq._keyedvectors import relative_cosine_similarity

        return relative_cosine_similarity(self, wa, wb, topn)

    def closer_than(self, key1, key2, **options):
        """gensim's ``closer_than`` (one range search); see
        :func:`embq._keyedvectors.closer_than`."""
        from embq._keyedvectors import closer_than

        return closer_than(self, key1, key2, **options)

    words_closer_than = closer_than

    def rank(self, key1, key2, **options):
        """gensim's ``rank`` (``len(closer_than(key1, key2)) + 1``)."""
        from embq._keyedvectors import rank

        return rank(self, key1, key2, **options)

    def save_word2vec_format(self, fname, fvocab=None, binary: bool = False, total_vec=None,
                             write_header: bool = True, prefix: str = "",
                             append: bool = False, sort_attr: str = "count"):
        """gensim's ``save_word2vec_format`` through ``embq export``; see
        :func:`embq._keyedvectors.save_word2vec_format`."""
        from embq._keyedvectors import save_word2vec_format

        return save_word2vec_format(self, fname, fvocab, binary, total_vec, write_header,
                                    prefix, append, sort_attr)

    def fill_norms(self, force: bool = False) -> None:
        """Nothing to do: a store's norms are stored. ``force=True`` (recompute, a mutation)
        raises."""
        if force:
            from embq._keyedvectors import read_only_error

            raise read_only_error("fill_norms(force=True)")

    def add_vectors(self, *args, **kwargs):
        """Refused: a store is read-only."""
        from embq._keyedvectors import read_only_error

        raise read_only_error("add_vectors")

    def add_vector(self, *args, **kwargs):
        """Refused: a store is read-only."""
        from embq._keyedvectors import read_only_error

        raise read_only_error("add_vector")

    def sort_by_descending_frequency(self, *args, **kwargs):
        """Refused: a store is read-only."""
        from embq._keyedvectors import read_only_error

        raise read_only_error("sort_by_descending_frequency")

    def __setitem__(self, key, value):
        from embq._keyedvectors import read_only_error

        raise read_only_error("store[key] = vector")

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
        """gensim's ``evaluate_word_analogies``; see
        :func:`embq._evaluate.evaluate_word_analogies`."""
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
