"""Opening input files: gzip/bz2/xz detection, pipes, damaged and trailing data.

Every file embq reads as input (embedding files, ``.npy`` keys files, word-pair and analogy
files) goes through :class:`Input`, so that all of them are decompressed, and refused when
damaged, the same way.

A compressed file is recognised by its whole magic number, never by its name and never by a
prefix a text file may start with (a GloVe key ``BZhang`` is not a bz2 stream):

* gzip: ``1f 8b 08`` (ID1, ID2 and the deflate method, the only one gzip defines);
* xz: ``fd 37 7a 58 5a 00``;
* bz2: ``BZh``, a block-size digit ``1``-``9``, then the 48-bit magic of the first block
  (``31 41 59 26 53 59``) or, for an empty stream, of the end of stream (``17 72 45 38 50 90``).
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import sys
import zlib
from typing import Union

from embq._errors import FormatError

__all__ = [
    "MAGIC_BYTES",
    "DamagedInput",
    "Input",
    "compression_of",
    "new_decompressor",
    "printable",
    "read_all",
]

_GZIP_MAGIC = b"\x1f\x8b\x08"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_BZ2_BLOCK_MAGIC = b"\x31\x41\x59\x26\x53\x59"
_BZ2_EOS_MAGIC = b"\x17\x72\x45\x38\x50\x90"
#: Bytes :func:`compression_of` needs to recognise every compression (bz2's is the longest).
MAGIC_BYTES = 10
_RAW_CHUNK = 1 << 16  # small, so "near byte N" of a decompression error is near
# After a parse error in compressed input, how much more of the file is decompressed to
# see whether damage explains it (gzip checks its CRC only at the very end).
_DRAIN_BYTES = 16 << 20

_Decompressor = Union["zlib._Decompress", bz2.BZ2Decompressor, lzma.LZMADecompressor]


def compression_of(head: bytes) -> str | None:
    """The compression of data starting with ``head``: ``"gzip"``, ``"bz2"``, ``"xz"`` or None.

    ``head`` should hold the first :data:`MAGIC_BYTES` bytes (fewer only when the data is that
    short): only a whole magic number counts.
    """
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_XZ_MAGIC):
        return "xz"
    if (head.startswith(b"BZh") and head[3:4] in b"123456789" and len(head) >= 10
            and head[4:10] in (_BZ2_BLOCK_MAGIC, _BZ2_EOS_MAGIC)):
        return "bz2"
    return None


def new_decompressor(compression: str) -> _Decompressor:
    """A fresh decompressor for one stream of ``compression`` (gzip, bz2 or xz)."""
    if compression == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip header and CRC-32/size trailer
    if compression == "bz2":
        return bz2.BZ2Decompressor()
    if compression == "xz":
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    raise ValueError(f"unknown compression {compression!r}; expected gzip, bz2 or xz")


def printable(b: bytes, n: int = 40) -> str:
    """The first ``n`` bytes of ``b`` as text for a message (undecodable bytes escaped)."""
    s = b[:n].decode("utf8", "backslashreplace")
    return s + ("..." if len(b) > n else "")


class DamagedInput(FormatError):
    """The compressed data itself is bad (damaged, cut short, or followed by other data)."""


class Input(io.RawIOBase):
    """The bytes of one input file, decompressed when it is gzip, bz2 or xz.

    The compression is recognised from the first bytes read, never by seeking back, so pipes
    and other unseekable files (``/dev/stdin``, ``-``) work like regular files. The codecs are
    driven here rather than through ``gzip.GzipFile`` and friends so that all three treat
    damage the same way: every failure is one :class:`DamagedInput` (a :class:`FormatError`)
    naming the file and the byte of the decompressed stream reached, and data after the end
    of the compressed stream is refused for all three (zero bytes, the padding gzip and xz
    allow, excepted; further streams of the same compression, as ``cat a.gz b.gz`` makes,
    are read on); the standard library refuses it for gzip but silently drops it for bz2 and
    xz.

    Parameters
    ----------
    path : str
        The file; ``"-"`` is standard input (a duplicate of its descriptor, so that closing
        this leaves ``sys.stdin`` usable).
    what : str
        What the file should be, for the message when ``path`` is a directory.

    Attributes
    ----------
    path : str
        The file (``"<stdin>"`` for ``"-"``).
    compression : str or None
        ``"gzip"``, ``"bz2"``, ``"xz"`` or None.
    pos : int
        Decompressed bytes delivered so far.
    raw_bytes : int
        Bytes read from the file itself so far.
    """

    def __init__(self, path: str, what: str = "an embedding file") -> None:
        super().__init__()
        self.raw_bytes = 0
        self.pos = 0
        if path == "-":
            self.path = "<stdin>"
            self._raw = open(os.dup(sys.stdin.fileno()), "rb", buffering=0)
        else:
            self.path = path
            if os.path.isdir(path):
                raise IsADirectoryError(21, f"Is a directory (expected {what})", path)
            self._raw = open(path, "rb", buffering=0)  # closed by close()
        try:
            head = b""
            while len(head) < MAGIC_BYTES:
                more = self._read_raw(MAGIC_BYTES - len(head))
                if not more:
                    break
                head += more
        except BaseException:
            self._raw.close()
            raise
        self.compression = compression_of(head)
        self._in = head  # bytes read from the file and not yet consumed
        self._dec = None if self.compression is None else new_decompressor(self.compression)
        self._finished = False

    def readable(self) -> bool:
        return True

    def damage_ahead(self, limit: int = _DRAIN_BYTES) -> DamagedInput | None:
        """Decompress (and drop) up to ``limit`` more bytes of the file: the damage met, if any."""
        if self._dec is None:
            return None
        start = self.raw_bytes
        scratch = bytearray(1 << 20)
        try:
            while self.raw_bytes - start < limit and self.readinto(scratch):
                pass
        except DamagedInput as exc:
            return exc
        return None

    def close(self) -> None:
        if not self.closed:
            try:
                self._raw.close()
            finally:
                super().close()

    def raw_tell(self) -> int | None:
        """The offset in the file itself, when it is seekable."""
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return None

    def _read_raw(self, n: int = _RAW_CHUNK) -> bytes:
        try:
            data = self._raw.read(n)
        except OSError as exc:
            # Say which file: the OSError of a failed read carries no file name.
            raise OSError(exc.errno, exc.strerror or str(exc), self.path) from None
        data = data or b""
        self.raw_bytes += len(data)
        return data

    def readinto(self, b) -> int:
        with memoryview(b) as view:
            want = view.nbytes
            if want == 0:
                return 0
            if self._dec is None:
                if self._in:
                    n = min(want, len(self._in))
                    view[:n] = self._in[:n]
                    self._in = self._in[n:]
                else:
                    try:
                        n = self._raw.readinto(view) or 0
                    except OSError as exc:
                        raise OSError(exc.errno, exc.strerror or str(exc), self.path) from None
                    self.raw_bytes += n
            else:
                out = self._decompress(want)
                n = len(out)
                view[:n] = out
        self.pos += n
        return n

    def read_exact(self, n: int) -> bytes:
        """Read ``n`` bytes, fewer only at the end of the data (pipes return short reads)."""
        buf = bytearray(n)
        got = 0
        with memoryview(buf) as view:
            while got < n:
                k = self.readinto(view[got:])
                if k == 0:
                    break
                got += k
        # a copy of the bytes read, not a resize of buf: a slice of the view handed to a
        # reader may still be alive here (a Dask worker raised BufferError on `del buf[got:]`),
        # and a bytearray with a live export cannot be resized
        return bytes(buf) if got == n else bytes(buf[:got])

    # ------------------------------------------------------------------ decompression

    def _decompress(self, want: int) -> bytes:
        while not self._finished:
            d = self._dec
            if d.eof:
                self._next_stream(d.unused_data + self._in)
                continue
            at_end = False
            if isinstance(d, type(zlib.decompressobj())):
                data = self._in or self._read_raw()
                at_end = not data
                try:
                    out = d.decompress(data, want)
                except zlib.error as exc:
                    raise self._damaged(exc) from None
                self._in = d.unconsumed_tail
            else:
                data = b""
                if d.needs_input:
                    data = self._in or self._read_raw()
                    at_end = not data
                try:
                    out = d.decompress(data, max_length=want)
                except (OSError, EOFError, lzma.LZMAError) as exc:
                    raise self._damaged(exc) from None
                self._in = b""
            if out:
                return out
            if at_end and not d.eof:
                raise DamagedInput(
                    f"cannot decompress the {self.compression} data: it ends before the end of "
                    f"its compressed stream, after byte {self.pos:,} of the decompressed "
                    "stream; the file is truncated", path=self.path)
        return b""

    def _next_stream(self, rest: bytes) -> None:
        """After the end of a compressed stream: the end of the file, or another stream."""
        ended_at = self.raw_bytes - len(rest)
        while True:
            rest = rest.lstrip(b"\0")
            if len(rest) >= MAGIC_BYTES:
                break
            more = self._read_raw()
            if not more:
                break
            rest += more
        if not rest:
            self._finished = True
            self._in = b""
        elif compression_of(rest) == self.compression:  # concatenated streams
            self._dec = new_decompressor(self.compression)
            self._in = rest
        else:
            raise DamagedInput(
                f"data that is not {self.compression} ({printable(rest, 16)!r}) follows the "
                f"end of the compressed stream at byte {ended_at:,} of the file; expected the "
                "end of the file (trailing data is refused, zero-byte padding excepted)",
                path=self.path)

    def _damaged(self, exc: BaseException) -> DamagedInput:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, zlib.error):
            reason = reason.split("decompressing data: ", 1)[-1]
            reason = {"incorrect data check": "CRC check failed",
                      "incorrect length check": "length check failed"}.get(reason, reason)
        return DamagedInput(
            f"compressed data is damaged near byte {self.pos:,} of the decompressed stream "
            f"({self.compression}: {reason})", path=self.path)


def read_all(path: str | os.PathLike, what: str, max_bytes: int) -> tuple[str, bytes]:
    """The whole (decompressed) content of a small input file, such as a word-pair file.

    Parameters
    ----------
    path : str or os.PathLike
        The file; ``"-"`` is standard input.
    what : str
        What the file should be (``"a word-pair file"``), for messages.
    max_bytes : int
        The most decompressed bytes accepted: a larger file (or a compression bomb) is
        refused before it fills the memory.

    Returns
    -------
    path : str
        The file's name for messages (``"<stdin>"`` for ``"-"``).
    data : bytes
        Its content.

    Raises
    ------
    FormatError
        Damaged, cut or trailing compressed data, or more than ``max_bytes``.
    OSError
        When the file cannot be read.
    """
    inp = Input(os.fspath(path), what)
    chunks = []
    total = 0
    try:
        # In chunks, not one buffer of max_bytes: the usual file is a few KB.
        while True:
            chunk = inp.read(min(_RAW_CHUNK * 16, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise FormatError(
                    f"the file holds more than {max_bytes:,} bytes"
                    + (" once decompressed" if inp.compression else "")
                    + f"; expected {what} (a few MB at most)", path=inp.path)
    finally:
        inp.close()
    return inp.path, b"".join(chunks)
