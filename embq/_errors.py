"""Exceptions raised by embq.

All are thin subclasses of built-in exceptions, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

import errno
import os


class FormatError(ValueError):
    """An input file (embedding file, store, pair or analogy file) is not in the expected format.

    ``path``, ``line`` and ``offset`` say where, when known; the message says what was found
    and what was expected.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.offset = offset
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if offset is not None:
            where.append(f"byte {offset}")
        super().__init__(f"{': '.join([', '.join(where), message]) if where else message}")


class StoreError(FormatError):
    """A file opened as a store is not a valid embq store, or cannot be trusted as one.

    Raised for a wrong format, version or layout (a dataset missing, of another shape or
    dtype, not contiguous, reaching past the end of the file), for objects a store never holds
    (soft, external or looping links, external raw storage, virtual datasets, a group where a
    dataset belongs), for damaged HDF5 metadata, for a path that is not a regular file, and
    for key offsets or a key hash table found inconsistent.  ``path`` names the file and the
    message the dataset; see "What embq trusts and what it verifies" in docs/format.md.
    """


class OutputExistsError(FileExistsError):
    """An output file exists and overwriting was not asked for (or it appeared meanwhile).

    ``path`` is the output and ``reason`` says what happened (``"already exists"`` or
    ``"appeared while the output was being written"``).  The message speaks in API terms
    (``overwrite=True``); the command line formats its own, naming ``--overwrite``, from
    ``path`` and ``reason``.
    """

    def __init__(self, path: str | os.PathLike, *, appeared: bool = False) -> None:
        self.path = os.fspath(path)
        self.reason = ("appeared while the output was being written" if appeared
                       else "already exists")
        super().__init__(errno.EEXIST, f"{self.reason}; pass overwrite=True to replace it",
                         self.path)


class DuplicateKeyError(ValueError):
    """A key was added to a store twice.

    ``key`` is the duplicate, ``first_index`` the row that holds it (or, for a key repeated
    within one batch, the row its first occurrence would have taken), ``index`` the row the
    duplicate would have taken: both count rows of the whole store, not of the batch.
    """

    def __init__(self, key: str, first_index: int, index: int) -> None:
        self.key = key
        self.first_index = first_index
        self.index = index
        super().__init__(
            f"duplicate key {key!r} at row {index}: first seen at row {first_index}; "
            "keys must be unique"
        )
