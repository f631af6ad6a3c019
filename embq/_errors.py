"""Exceptions raised by embq.

All are thin subclasses of built-in exceptions, so ``except ValueError`` keeps working.
"""

from __future__ import annotations


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
    """A file opened as a store is not a valid embq store (wrong format, version or layout)."""


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
