"""The manifest of a sharded store: the one file that says which shards make the store.

A sharded store is a directory::

    vecs.embq/
      manifest.json          written last, atomically: the commit point
      shards/part-00000.h5   each a complete single-file store (docs/format.md)
      shards/part-00001.h5

Shards hold consecutive global rows in manifest order (global row = shard offset + local row).
A reader trusts nothing the manifest does not name: the shard paths are relative, inside the
directory, and every shard is checked against its entry (size, ``shard_uuid``, rows, dim, keys)
when it is opened, so a shard replaced or truncated after the manifest was written is named
instead of being read.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from embq._errors import StoreError
from embq._version import __version__

MANIFEST_NAME = "manifest.json"
SHARD_DIR = "shards"
SHARD_UUID_ATTR = "shard_uuid"
FORMAT = "embq-sharded"
FORMAT_VERSION = 1
STORE_FORMAT_VERSION = 1
# A manifest names one entry per shard (about 150 bytes each); 64 MiB is room for ~400,000
# shards and keeps a hostile file from making the reader allocate what it likes.
_MAX_MANIFEST_BYTES = 64 << 20

__all__ = [
    "MANIFEST_NAME",
    "SHARD_DIR",
    "SHARD_UUID_ATTR",
    "Manifest",
    "ShardEntry",
    "check_shard",
    "entry_for",
    "is_sharded",
    "new_shard_uuid",
    "read_manifest",
    "shard_name",
    "write_manifest",
]


def shard_name(i: int) -> str:
    """The relative path of shard ``i``: ``shards/part-00000.h5``."""
    return f"{SHARD_DIR}/part-{i:05d}.h5"


def new_shard_uuid() -> str:
    """A fresh identifier for a shard file, recorded in it and in the manifest."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class ShardEntry:
    """One shard as the manifest records it.

    Attributes
    ----------
    path : str
        Relative to the store directory, with ``/`` separators.
    rows : int
        Rows in the shard.
    offset : int
        Global row of the shard's first row.
    bytes : int
        The shard file's size when the manifest was written.
    uuid : str
        The shard file's ``shard_uuid`` root attribute.
    """

    path: str
    rows: int
    offset: int
    bytes: int
    uuid: str


@dataclass(frozen=True)
class Manifest:
    """A validated manifest (see :func:`read_manifest`)."""

    directory: str
    dim: int
    rows: int
    has_keys: bool
    shards: tuple[ShardEntry, ...]
    # Every shard holds the sketch of the whole store: the same sketch_center (the column mean
    # over all shards' rows) and its rows' bits against it (docs/format.md, "Sharded store").
    sketch: bool = False

    @property
    def path(self) -> str:
        """The manifest file."""
        return os.path.join(self.directory, MANIFEST_NAME)

    def shard_path(self, i: int) -> str:
        """The absolute path of shard ``i``."""
        return os.path.join(self.directory, *self.shards[i].path.split("/"))

    @property
    def offsets(self) -> np.ndarray:
        """int64 ``(n_shards + 1,)``: shard ``i`` holds global rows ``offsets[i]:offsets[i+1]``."""
        out = np.zeros(len(self.shards) + 1, np.int64)
        out[1:] = np.cumsum([s.rows for s in self.shards], dtype=np.int64)
        return out

    def locate(self, rows: Any) -> tuple[np.ndarray, np.ndarray]:
        """Map global rows to ``(shard index, local row)`` arrays.

        Parameters
        ----------
        rows : array_like of int
            Global rows in ``[0, self.rows)`` (the caller has checked the range).

        Returns
        -------
        shard, local : numpy.ndarray of int64
        """
        rows = np.asarray(rows, dtype=np.int64)
        offsets = self.offsets
        # searchsorted on the ends, so empty shards (rows == 0) are never chosen.
        shard = np.searchsorted(offsets[1:], rows, side="right").astype(np.int64)
        return shard, rows - offsets[shard]


def is_sharded(path: str | os.PathLike) -> bool:
    """True when ``path`` is a directory holding a ``manifest.json``."""
    p = os.fspath(path)
    return os.path.isdir(p) and os.path.isfile(os.path.join(p, MANIFEST_NAME))


def _bad(path: str, what: str) -> StoreError:
    return StoreError(f"bad sharded-store manifest: {what}", path=path)


def _int_field(obj: dict, name: str, where: str, path: str) -> int:
    v = obj.get(name)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise _bad(path, f"{where}{name!r} is {v!r}, expected a non-negative integer")
    return v


def _check_relpath(rel: Any, where: str, path: str) -> str:
    if not isinstance(rel, str) or not rel:
        raise _bad(path, f"{where}'path' is {rel!r}, expected a relative file path")
    norm = posixpath.normpath(rel)
    if (rel.startswith("/") or "\\" in rel or "\x00" in rel or norm != rel
            or norm == "." or norm.split("/")[0] == ".." or os.path.isabs(rel)):
        raise _bad(path, f"{where}'path' is {rel!r}, expected a normalized relative path "
                         "inside the store directory (no '..', no leading '/')")
    return rel


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read and validate the manifest of the sharded store at ``path`` (its directory).

    Only the manifest is read; the shards are checked when they are opened
    (:func:`check_shard`).

    Raises
    ------
    FileNotFoundError
        ``path`` is not a directory with a ``manifest.json``.
    StoreError
        The manifest is not JSON, of another format or version, or its fields are missing,
        of the wrong type, or inconsistent (offsets not contiguous, rows not their sum,
        paths outside the directory or repeated), naming the field and the shard.
    """
    directory = os.path.abspath(os.fspath(path))
    mpath = os.path.join(directory, MANIFEST_NAME)
    if not os.path.isdir(directory):
        raise FileNotFoundError(errno.ENOENT, f"no such sharded store directory: {directory!r}",
                                directory)
    try:
        fd = os.open(mpath, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT, f"{directory!r} has no {MANIFEST_NAME}: not a sharded store, or its "
            "build did not finish", mpath) from None
    with os.fdopen(fd, "rb") as fh:
        import stat

        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise _bad(mpath, "not a regular file")
        raw = fh.read(_MAX_MANIFEST_BYTES + 1)
    if len(raw) > _MAX_MANIFEST_BYTES:
        raise _bad(mpath, f"larger than {_MAX_MANIFEST_BYTES} bytes")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _bad(mpath, f"not valid UTF-8 JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise _bad(mpath, f"expected a JSON object, got {type(obj).__name__}")
    if obj.get("format") != FORMAT:
        raise _bad(mpath, f"'format' is {obj.get('format')!r}, expected {FORMAT!r}")
    version = obj.get("format_version")
    if isinstance(version, bool) or version != FORMAT_VERSION:
        raise _bad(mpath, f"'format_version' is {version!r}; embq {__version__} reads "
                          f"format_version {FORMAT_VERSION}")
    sversion = obj.get("store_format_version")
    if isinstance(sversion, bool) or sversion != STORE_FORMAT_VERSION:
        raise _bad(mpath, f"'store_format_version' is {sversion!r}, expected "
                          f"{STORE_FORMAT_VERSION}")
    dim = _int_field(obj, "dim", "", mpath)
    rows = _int_field(obj, "rows", "", mpath)
    has_keys = obj.get("has_keys")
    if not isinstance(has_keys, bool):
        raise _bad(mpath, f"'has_keys' is {has_keys!r}, expected true or false")
    shards_obj = obj.get("shards")
    if not isinstance(shards_obj, list) or not shards_obj:
        raise _bad(mpath, f"'shards' is {type(shards_obj).__name__}, expected a non-empty list")
    entries: list[ShardEntry] = []
    seen: set[str] = set()
    offset = 0
    for i, s in enumerate(shards_obj):
        where = f"shard {i}: "
        if not isinstance(s, dict):
            raise _bad(mpath, f"{where}expected an object, got {type(s).__name__}")
        rel = _check_relpath(s.get("path"), where, mpath)
        if rel in seen:
            raise _bad(mpath, f"{where}path {rel!r} is listed twice")
        seen.add(rel)
        n_i = _int_field(s, "rows", where, mpath)
        off = _int_field(s, "offset", where, mpath)
        if off != offset:
            raise _bad(mpath, f"{where}'offset' is {off}, expected {offset} (the rows of the "
                              "shards before it)")
        size = _int_field(s, "bytes", where, mpath)
        uid = s.get("uuid")
        if not isinstance(uid, str) or not uid:
            raise _bad(mpath, f"{where}'uuid' is {uid!r}, expected a non-empty string")
        entries.append(ShardEntry(rel, n_i, off, size, uid))
        offset += n_i
    if offset != rows:
        raise _bad(mpath, f"'rows' is {rows}, but the shards hold {offset}")
    sketch = obj.get("sketch", False)   # absent in stores written before sharded sketches
    if not isinstance(sketch, bool):
        raise _bad(mpath, f"'sketch' is {sketch!r}, expected true or false")
    return Manifest(directory, dim, rows, has_keys, tuple(entries), sketch)


def write_manifest(
    directory: str | os.PathLike,
    *,
    dim: int,
    has_keys: bool,
    shards: Sequence[ShardEntry],
    sketch: bool = False,
) -> str:
    """Write ``manifest.json`` into ``directory`` atomically; this commits the sharded store.

    Parameters
    ----------
    directory : str or os.PathLike
        The store directory; the shard files must already be there, complete.
    dim : int
    has_keys : bool
    shards : sequence of ShardEntry
        In row order, offsets contiguous from 0.
    sketch : bool, default False
        Every shard holds the sketch of the whole store (one ``sketch_center``, the column
        mean over all shards' rows); only then may the store be searched with
        ``prefilter="sketch"``.

    Returns
    -------
    str
        The manifest's path.

    Raises
    ------
    ValueError
        The entries are inconsistent (the same checks :func:`read_manifest` makes).
    """
    directory = os.path.abspath(os.fspath(directory))
    offset = 0
    for i, s in enumerate(shards):
        _check_relpath(s.path, f"shard {i}: ", directory)
        if s.offset != offset:
            raise ValueError(f"shard {i} has offset {s.offset}, expected {offset}")
        offset += s.rows
    if not shards:
        raise ValueError("a sharded store needs at least one shard")
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "store_format_version": STORE_FORMAT_VERSION,
        "dim": int(dim),
        "rows": int(offset),
        "has_keys": bool(has_keys),
        "sketch": bool(sketch),
        "shards": [
            {"path": s.path, "rows": int(s.rows), "offset": int(s.offset),
             "bytes": int(s.bytes), "uuid": s.uuid}
            for s in shards
        ],
        "created_by": f"embq {__version__}",
    }
    data = (json.dumps(doc, indent=1) + "\n").encode("utf-8")
    mpath = os.path.join(directory, MANIFEST_NAME)
    from embq._publish import AtomicFile

    out = AtomicFile(mpath, overwrite=True)
    try:
        out.fh.write(data)
        out.commit()
    finally:
        out.abort()
    return mpath


def entry_for(directory: str | os.PathLike, relpath: str, *, rows: int, offset: int) -> ShardEntry:
    """Build the manifest entry of a finished shard file: its size and ``shard_uuid``."""
    import h5py

    full = os.path.join(os.fspath(directory), *relpath.split("/"))
    with h5py.File(full, "r") as f:
        uid = f.attrs.get(SHARD_UUID_ATTR)
    if isinstance(uid, bytes):
        uid = uid.decode("utf-8", "replace")
    if not isinstance(uid, str) or not uid:
        raise StoreError(f"shard has no {SHARD_UUID_ATTR!r} attribute; write it when "
                         "building the shard", path=full)
    return ShardEntry(relpath, int(rows), int(offset), os.path.getsize(full), uid)


def check_shard(manifest: Manifest, i: int, *, rows: int, dim: int, has_keys: bool,
                uuid: Any, size: int, has_sketch: bool = False) -> None:
    """Raise :class:`StoreError` naming shard ``i`` if it is not the file the manifest names.

    Parameters
    ----------
    manifest : Manifest
    i : int
        Shard index.
    rows, dim, has_keys
        What the opened shard says of itself.
    uuid : object
        Its ``shard_uuid`` root attribute (None when missing).
    size : int
        Its file size in bytes.
    has_sketch : bool
        Whether it holds a sketch (required when the manifest says the store has one).
    """
    e = manifest.shards[i]
    where = f"shard {i} ({e.path}) of {manifest.directory}"

    def bad(what: str) -> StoreError:
        return StoreError(f"{where}: {what}", path=manifest.shard_path(i))

    if uuid != e.uuid or size != e.bytes:
        raise bad(f"changed since the manifest was written (size {size} bytes, shard_uuid "
                  f"{uuid!r}; the manifest says {e.bytes} bytes, {e.uuid!r})")
    if rows != e.rows:
        raise bad(f"holds {rows} rows, the manifest says {e.rows}")
    if dim != manifest.dim:
        raise bad(f"has dimension {dim}, the store has {manifest.dim}")
    if has_keys != manifest.has_keys:
        raise bad(f"has_keys is {has_keys}, the store's is {manifest.has_keys}")
    if manifest.sketch and not has_sketch:
        raise bad("has no sketch, but the manifest says every shard holds one")
