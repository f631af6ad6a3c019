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
from collections.abc import Iterator

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
GCOL_SIGNATURE = b"GCOL"

# A collection's object indices are 16-bit, so a sound one has at most 65535 objects, plus its
# free space (at the end; free-space objects elsewhere are tolerated, up to as many).
_MAX_HEAP_STEPS = 2 * 65536


def superblock_offset(fd: int, file_size: int) -> int | None:
    """Where the HDF5 signature is (byte 0, 512, 1024, 2048, ...: a user block may precede
    it), or None if the file has none."""
    pos = 0
    while pos + 8 <= file_size:
        if os.pread(fd, 8, pos) == _HDF5_SIGNATURE:
            return pos
        pos = 512 if pos == 0 else pos * 2
    return None


def _superblock_sizes(fd: int, file_size: int) -> tuple[int, int] | None:
    """(size of offsets, size of lengths) from the superblock, or None if none is found."""
    pos = superblock_offset(fd, file_size)
    if pos is None:
        return None
    head = os.pread(fd, 16, pos)
    if len(head) < 16:
        return None
    if head[8] in (0, 1):  # superblock versions 0 and 1 put the sizes at bytes 13 and 14
        return head[13], head[14]
    return head[9], head[10]


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

    def seek(self, pos: int, whence: int = 0) -> int:
        # libhdf5 takes addresses from the file; one past 2**63 is no file offset (h5py's
        # driver would fail with an OverflowError that names nothing).
        if whence == 0 and pos >= 1 << 63:
            self.refusal = f"libhdf5 was sent to byte {pos:,}, past any file"
            raise OSError(self.refusal)
        return super().seek(pos, whence)

    def readinto(self, buffer) -> int | None:  # type: ignore[override]
        pos = self.tell()
        n = super().readinto(buffer)
        if n and n >= 4 and bytes(memoryview(buffer)[:4]) == GCOL_SIGNATURE:
            why = self._check_heap(memoryview(buffer)[:n], pos)
            if why is not None:
                self.refusal = why + "; refused before libhdf5 parsed it"
                raise OSError(self.refusal)
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


# Object header messages (HDF5 file format specification, section IV.A).
_MSG_ATTRIBUTE = 0x0C
_MSG_CONTINUATION = 0x10
_MSG_ATTRIBUTE_INFO = 0x15
_MSG_FLAG_SHARED = 0x02
# An object header is a handful of chunks; more is a loop or a hostile file.
_MAX_HEADER_CHUNKS = 64


class HeaderError(ValueError):
    """An object header that cannot be parsed as the specification lays it out."""


def _uint(data: bytes, pos: int, size: int) -> int:
    return int.from_bytes(data[pos:pos + size], "little")


def _header_messages(fd: int, file_size: int, addr: int,
                     sizeof_addr: int, sizeof_size: int) -> Iterator[tuple[int, int, bytes]]:
    """(type, flags, body) of every message of the object header at ``addr``.

    Version 1 headers (what h5py writes by default) and version 2 ("OHDR") are read,
    continuation chunks followed; each chunk must lie inside the file and be visited once.
    """
    def chunk(start: int, length: int) -> bytes:
        if start < 0 or length < 0 or start + length > file_size:
            raise HeaderError(f"an object header chunk at byte {start:,} of {length:,} bytes "
                              f"reaches past the end of the {file_size:,}-byte file")
        return os.pread(fd, length, start)

    head = chunk(addr, min(16, file_size - addr))
    if head[:1] == b"\x01":
        version, body = 1, chunk(addr + 16, _uint(head, 8, 4))
        pending = [("chunk 0", body)]
    elif head[:4] == b"OHDR" and len(head) >= 6 and head[4] == 2:
        flags = head[5]
        pos = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
        width = 1 << (flags & 3)
        size = _uint(chunk(addr + pos, width), 0, width)
        version, creation_order = 2, bool(flags & 0x04)
        pending = [("chunk 0", chunk(addr + pos + width, size))]
    else:
        raise HeaderError(f"no object header (version 1 or 'OHDR') at byte {addr:,}")
    seen = {addr}
    chunks = 0
    while pending:
        chunks += 1
        if chunks > _MAX_HEADER_CHUNKS:
            raise HeaderError(f"the object header at byte {addr:,} has more than "
                              f"{_MAX_HEADER_CHUNKS} chunks")
        kind, data = pending.pop()
        p = 0
        if version == 1:
            while p + 8 <= len(data):
                mtype, msize, mflags = _uint(data, p, 2), _uint(data, p + 2, 2), data[p + 4]
                p += 8
                if p + msize > len(data):
                    raise HeaderError(f"a message of the object header at byte {addr:,} "
                                      "reaches past its chunk")
                yield mtype, mflags, data[p:p + msize]
                if mtype == _MSG_CONTINUATION:
                    pending.append(_continuation(data[p:p + msize], seen, sizeof_addr,
                                                 sizeof_size, chunk, 1))
                p += msize
        else:
            # Chunk 0's size counts its messages only; a continuation chunk's counts its
            # signature and checksum too.
            end = len(data)
            if kind == "continuation":
                p, end = 4, len(data) - 4
            hsize = 6 if creation_order else 4
            while p + hsize <= end:
                mtype, msize, mflags = data[p], _uint(data, p + 1, 2), data[p + 3]
                p += hsize
                if p + msize > end:
                    raise HeaderError(f"a message of the object header at byte {addr:,} "
                                      "reaches past its chunk")
                yield mtype, mflags, data[p:p + msize]
                if mtype == _MSG_CONTINUATION:
                    pending.append(_continuation(data[p:p + msize], seen, sizeof_addr,
                                                 sizeof_size, chunk, 2))
                p += msize


def _continuation(body: bytes, seen: set[int], sizeof_addr: int, sizeof_size: int,
                  chunk, version: int) -> tuple[str, bytes]:
    if len(body) < sizeof_addr + sizeof_size:
        raise HeaderError("an object header continuation message is too short")
    start, length = _uint(body, 0, sizeof_addr), _uint(body, sizeof_addr, sizeof_size)
    if start in seen:
        raise HeaderError(f"object header continuation chunks loop (byte {start:,} again)")
    seen.add(start)
    data = chunk(start, length)
    if version == 2 and data[:4] != b"OCHK":
        raise HeaderError(f"no continuation chunk signature 'OCHK' at byte {start:,}")
    return "continuation", data


def _check_vlen_type(dtype: bytes, name: str, sizeof_addr: int) -> int:
    """Refuse a variable-length datatype message libhdf5 would misuse.

    libhdf5 takes the sequence/string nibble as it is and later calls through function
    pointers only set for the two known kinds (a crash otherwise); padding and character set
    are checked the same way.  The stored element size must be a reference's (length,
    collection address, index): libhdf5 keeps the attribute's data at the size the message
    says but converts each element as a full reference, reading past the data (and taking
    whatever follows as a length to allocate) when the size is smaller.  Returns the size of
    the base type (what one unit of an element's length costs).
    """
    if len(dtype) < 8 or dtype[0] & 0x0F != 9:
        raise HeaderError(f"attribute {name!r} is read as variable-length but its datatype "
                          "message says otherwise")
    size = _uint(dtype, 4, 4)
    if size != 8 + sizeof_addr:
        raise HeaderError(f"attribute {name!r} has a variable-length datatype of {size} "
                          f"bytes, expected {8 + sizeof_addr} (length, address, index)")
    kind, padding, charset = dtype[1] & 0x0F, dtype[1] >> 4, dtype[2] & 0x0F
    if kind not in (0, 1):
        raise HeaderError(f"attribute {name!r} has a variable-length datatype of kind {kind}, "
                          "expected 0 (sequence) or 1 (string)")
    if kind == 1 and (padding > 2 or charset > 1):
        raise HeaderError(f"attribute {name!r} has a variable-length string of padding "
                          f"{padding} and character set {charset}, expected 0-2 and 0-1")
    if len(dtype) < 16:
        raise HeaderError(f"attribute {name!r} has a variable-length datatype without its "
                          "base type")
    return _uint(dtype, 12, 4)


def _padded(n: int, version: int) -> int:
    return (n + 7) & ~7 if version == 1 else n


class AttributeMessages:
    """The attribute messages of one object header, read raw (parsed once per object).

    libhdf5 allocates (and clears) what each element of a variable-length attribute says its
    length is before it looks into the global heap, so :meth:`vlen_nbytes` reads those
    lengths from the attribute message itself, without libhdf5.  Raises :class:`HeaderError`
    when the header cannot be read.
    """

    def __init__(self, fd: int, file_size: int, header_addr: int,
                 sizeof_addr: int, sizeof_size: int) -> None:
        self.header_addr = header_addr
        self.sizeof_addr = sizeof_addr
        self.dense = False
        self.messages: dict[bytes, tuple[int, bytes, int]] = {}
        for mtype, mflags, body in _header_messages(fd, file_size, header_addr,
                                                    sizeof_addr, sizeof_size):
            if mtype == _MSG_ATTRIBUTE_INFO:
                # version, flags, [max creation index], fractal heap address, ...
                at = 2 + (2 if len(body) > 1 and body[1] & 0x01 else 0)
                self.dense = _uint(body, at, sizeof_addr) != (1 << 8 * sizeof_addr) - 1
            if mtype != _MSG_ATTRIBUTE:
                continue
            if len(body) < 8:
                raise HeaderError("an attribute message shorter than its 8-byte header")
            name_size = _uint(body, 2, 2)
            at = 9 if body[0] == 3 else 8
            self.messages.setdefault(body[at:at + name_size].rstrip(b"\x00"),
                                     (mflags, body, at))

    def vlen_nbytes(self, name: str, count: int) -> list[int]:
        """The bytes the ``count`` elements of variable-length attribute ``name`` claim.

        Each element is stored as a length (4 bytes, in units of the base type, whose size
        the datatype message gives), a collection address and an object index (4 bytes).
        Raises :class:`HeaderError` when the message is missing (or kept in dense storage),
        shared (kept elsewhere), not variable-length, or too short.
        """
        found = self.messages.get(name.encode("utf-8"))
        if found is None:
            if self.dense:
                raise HeaderError(
                    f"attribute {name!r} is kept in dense attribute storage (a fractal heap: "
                    "more than 8 attributes in a file written with libver='latest'), whose "
                    "values embq cannot check before libhdf5 reads them; re-create the store "
                    "with embq, which keeps attributes in the object header")
            raise HeaderError(f"attribute {name!r} is not in the object header at byte "
                              f"{self.header_addr:,}")
        mflags, body, p = found
        version = body[0]
        if version not in (1, 2, 3):
            raise HeaderError(f"attribute {name!r} has a message of version {version}, "
                              "expected 1, 2 or 3")
        if mflags & _MSG_FLAG_SHARED:
            raise HeaderError(f"attribute {name!r} is a shared message, kept outside the header")
        if version > 1 and body[1] & 0x01:
            raise HeaderError(f"attribute {name!r} has a shared (committed) datatype")
        name_size, type_size, space_size = _uint(body, 2, 2), _uint(body, 4, 2), _uint(body, 6, 2)
        p += _padded(name_size, version)
        base = _check_vlen_type(body[p:p + type_size], name, self.sizeof_addr)
        p += _padded(type_size, version) + _padded(space_size, version)
        element = 8 + self.sizeof_addr
        data = body[p:p + count * element]
        if len(data) < count * element:
            raise HeaderError(f"attribute {name!r} holds {max(0, len(body) - p)} bytes of data, "
                              f"expected {count} references of {element} bytes")
        return [_uint(data, i * element, 4) * base for i in range(count)]
