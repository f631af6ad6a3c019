"""Checks of HDF5 structures that libhdf5 trusts, made on the bytes before libhdf5 parses them.

libhdf5 walks a global heap collection (where variable-length strings, such as h5py's ``str``
attributes, are kept) without checking that each step advances or stays inside the collection:
a free-space object of size 0 makes it loop forever, and an object whose size reaches past
the collection makes it read past its buffer.  No API reads a variable-length attribute's raw
reference (which collection, which object) without resolving it through the heap, and a
hostile file can point that reference anywhere, even into a dataset's bytes; so the check sits
where every collection passes: the file object h5py reads through.  :class:`GuardedFile` is
handed to ``h5py.File`` and looks at every read libhdf5 makes; a read that starts with a
collection's signature is checked, whole, before libhdf5 sees it, and refused with an
``OSError`` (the reason kept in ``refusal``) if libhdf5 would loop on it or read out of it.

libhdf5 reads a collection at the address the reference names, starting with its signature,
first 4096 bytes and then its full size (there is no metadata accumulator for h5py's
file-object driver), so no collection reaches libhdf5 unchecked.
"""

from __future__ import annotations

import io
import os

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
GCOL_SIGNATURE = b"GCOL"

# A collection's object indices are 16-bit, so a sound one has at most 65535 objects, plus its
# free space (at the end; free-space objects elsewhere are tolerated, up to as many).
_MAX_HEAP_STEPS = 2 * 65536


def _superblock_sizes(fd: int, file_size: int) -> tuple[int, int] | None:
    """(size of offsets, size of lengths) from the superblock, or None if none is found."""
    pos = 0
    while pos + 16 <= file_size:
        head = os.pread(fd, 16, pos)
        if head[:8] == _HDF5_SIGNATURE:
            version = head[8]
            if version in (0, 1):
                head = os.pread(fd, 15, pos)
                return (head[13], head[14]) if len(head) == 15 else None
            return head[9], head[10]
        pos = 512 if pos == 0 else pos * 2
    return None


def check_global_heap(data: bytes | memoryview, addr: int, file_size: int,
                      length_size: int) -> str | None:
    """Why libhdf5 must not parse the global heap collection ``data`` (None if it may).

    ``data`` holds the file's bytes from ``addr`` on, at least the whole collection when the
    collection fits in the file.  The walk is libhdf5's (H5HG__cache_heap_deserialize): a
    header (signature, version 1, 3 reserved bytes, collection size), then objects (2-byte
    index, 2-byte reference count, 4 reserved bytes, size, data padded to 8 bytes), index 0
    being free space whose size counts its own header, and a tail too short for an object
    header being free space too.  Refused: a collection past the end of the file, an object
    reaching past the collection, a free-space object smaller than its own header (size 0
    loops forever), a repeated index, more steps than a collection can hold.
    """
    where = f"the global heap collection at byte {addr:,}"
    header = 8 + length_size
    if len(data) < header or addr + header > file_size:
        return f"{where} is cut off by the end of the file"
    if data[4] != 1:
        return f"{where} has version {data[4]}, expected 1"
    size = int.from_bytes(data[8:header], "little")
    if size < header:
        return f"{where} claims {size:,} bytes, less than its own {header}-byte header"
    if addr + size > file_size or len(data) < size:
        return (f"{where} claims {size:,} bytes, reaching byte {addr + size:,} of a "
                f"{file_size:,}-byte file")
    obj_header = 8 + length_size
    p, seen, steps = header, set(), 0
    while p < size:
        if p + obj_header > size:
            break  # a tail too short for an object header: libhdf5 takes it as free space
        steps += 1
        if steps > _MAX_HEAP_STEPS:
            return f"{where} holds more than {_MAX_HEAP_STEPS:,} objects"
        index = int.from_bytes(data[p:p + 2], "little")
        osize = int.from_bytes(data[p + 8:p + obj_header], "little")
        if index == 0:
            need = osize
            if need < obj_header:
                return (f"{where} has a free-space object of {osize:,} bytes at byte "
                        f"{addr + p:,}, smaller than its own {obj_header}-byte header "
                        "(libhdf5 would loop forever on it)")
        else:
            if index in seen:
                return f"{where} holds object {index} twice (again at byte {addr + p:,})"
            seen.add(index)
            need = obj_header + ((osize + 7) & ~7)
        if need > size - p:
            return (f"{where} has object {index} of {osize:,} bytes at byte {addr + p:,}, "
                    f"reaching past the collection's end at byte {addr + size:,}")
        p += need
    return None


class GuardedFile(io.FileIO):
    """A read-only file that checks every global heap collection libhdf5 reads through it.

    Give it to ``h5py.File``.  A read starting with a collection's signature is checked with
    :func:`check_global_heap` on the bytes read (or, for libhdf5's first 4096-byte look at a
    larger collection, on the whole collection read from the file); a collection that fails is
    not handed over: the read raises ``OSError`` and ``refusal`` says why, for the caller to
    report once h5py has turned the failed read into its own exception.
    """

    def __init__(self, fd: int, file_size: int) -> None:
        super().__init__(fd, "rb", closefd=True)
        self.file_size = file_size
        self.refusal: str | None = None
        self._length_size: int | None = None

    def readinto(self, buffer) -> int | None:  # type: ignore[override]
        pos = self.tell()
        n = super().readinto(buffer)
        if n and n >= 4 and bytes(memoryview(buffer)[:4]) == GCOL_SIGNATURE:
            why = self._check_heap(memoryview(buffer)[:n], pos)
            if why is not None:
                self.refusal = why
                raise OSError(why)
        return n

    def _check_heap(self, view: memoryview, pos: int) -> str | None:
        if self._length_size is None:
            sizes = _superblock_sizes(self.fileno(), self.file_size)
            if sizes is None:
                return "a global heap collection is read but the file has no HDF5 superblock"
            self._length_size = sizes[1]
        length_size = self._length_size
        if length_size not in (2, 4, 8, 16, 32):
            return f"the superblock gives lengths {length_size} bytes, expected 2, 4, 8, 16 or 32"
        header = 8 + length_size
        if len(view) >= header:
            size = int.from_bytes(view[8:header], "little")
            if header <= size <= self.file_size - pos and len(view) < size:
                # libhdf5's first look at a larger collection: check all of it now.
                view = memoryview(os.pread(self.fileno(), size, pos))
        return check_global_heap(view, pos, self.file_size, length_size)
