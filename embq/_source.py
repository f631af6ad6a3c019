"""What a store records about the file it was compressed from: the ``source_*`` attributes.

This module names those attributes once. :func:`source_attributes` builds them for
``embq compress`` from the reader that read the file; :func:`recorded_reader_options` turns a
store's attributes back into the reader options that read that file the same way (used by
``compare_with_original``). It also defines, once, the reader options both take
(:data:`READER_OPTIONS`) and their checks (:func:`check_reader_options`), which the Python API
and the ``embq evaluate`` command line share, each speaking its own vocabulary.

All attributes are optional: a store written by :func:`embq.save` or from gensim vectors has
few or none of them, and a store from a stranger may hold anything under these names, so a
value of the wrong type counts as not recorded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

# -- the attribute names ---------------------------------------------------------------------

#: Absolute path of the input file ("<stdin>" for a pipe).
SOURCE_PATH = "source_path"
#: The reader format the file was read as (one of :data:`embq._readers.FORMATS`), or
#: :data:`FROM_KEYED_VECTORS`.
SOURCE_FORMAT = "source_format"
#: The source_format of a store written by :func:`embq.from_keyed_vectors`.
FROM_KEYED_VECTORS = "gensim-keyedvectors"
#: "gzip", "bz2", "xz" or "none".
SOURCE_COMPRESSION = "source_compression"
#: Size of the input in bytes (as read, before decompression).
SOURCE_SIZE = "source_size"
#: Rows read from the input (duplicates included, at most ``source_limit``).
SOURCE_ROWS = "source_rows"
#: Rows dropped because their key repeated an earlier one (the first occurrence is kept).
SOURCE_DUPLICATES = "source_duplicates"
#: The ``limit`` compress was given, -1 for none.
SOURCE_LIMIT = "source_limit"
#: Absolute path of the keys file (or tokenizer.json) of a ``.npy``, ``.npz`` or safetensors
#: input; absent without one.
SOURCE_KEYS_PATH = "source_keys_path"
#: Which part of a file holding several was read: the tensor of a safetensors file, the array
#: of a ``.npz``, the vector and key columns of Parquet or Arrow; absent when not used.
SOURCE_TENSOR = "source_tensor"
SOURCE_ARRAY = "source_array"
SOURCE_VECTOR_COLUMN = "source_vector_column"
SOURCE_KEY_COLUMN = "source_key_column"
#: How the keys were decoded.
SOURCE_ENCODING = "source_encoding"
SOURCE_UNICODE_ERRORS = "source_unicode_errors"
#: Which part of the input a shard of a sharded compress holds: "bytes A-B" or "rows A-B".
SOURCE_RANGE = "source_range"
#: Not a source_* name, but written with them: True when compress L2-normalized the rows.
NORMALIZED = "normalized"

SOURCE_ATTRIBUTES = (
    SOURCE_PATH, SOURCE_FORMAT, SOURCE_COMPRESSION, SOURCE_SIZE, SOURCE_ROWS,
    SOURCE_DUPLICATES, SOURCE_LIMIT, SOURCE_KEYS_PATH, SOURCE_ENCODING, SOURCE_UNICODE_ERRORS,
    SOURCE_TENSOR, SOURCE_ARRAY, SOURCE_VECTOR_COLUMN, SOURCE_KEY_COLUMN, SOURCE_RANGE,
)
#: The reader options that pick a part of the file, by name: the reader attribute that says
#: what was read is the option's name too (``reader.tensor``), recorded as the attribute.
_PART_OPTIONS = {"tensor": SOURCE_TENSOR, "array": SOURCE_ARRAY,
                 "vector_column": SOURCE_VECTOR_COLUMN, "key_column": SOURCE_KEY_COLUMN}

# -- the reader options ----------------------------------------------------------------------


class ReaderOption(NamedTuple):
    """One of compress's reader options, as ``compare_with_original`` takes it too."""

    attribute: str  # the source_* attribute that records it
    default: Any  # used when neither given nor recorded
    help: str  # what it does, for the API docs and the command line's --help


#: compress's reader options, by their Python name (the command line spells ``unicode_errors``
#: as ``--unicode-errors``), in compress's order.
READER_OPTIONS: dict[str, ReaderOption] = {
    "format": ReaderOption(SOURCE_FORMAT, None, "format of the original (default: detected "
                           "from the content)"),
    "keys": ReaderOption(SOURCE_KEYS_PATH, None, "for a .npy, .npz or safetensors original: "
                         "text file with one key per line, or a Hugging Face tokenizer.json "
                         "(without it, a .npy of the store's shape takes the store's keys)"),
    "limit": ReaderOption(SOURCE_LIMIT, None, "read only the first N rows of the original"),
    "encoding": ReaderOption(SOURCE_ENCODING, "utf8", "text encoding of the original's keys "
                             "(default utf8)"),
    "unicode_errors": ReaderOption(SOURCE_UNICODE_ERRORS, "strict", "undecodable key bytes "
                                   "in the original: fail (default), replace, or drop"),
    "tensor": ReaderOption(SOURCE_TENSOR, None, "safetensors original: the 2-D tensor to read "
                           "(default: the only 2-D floating one)"),
    "array": ReaderOption(SOURCE_ARRAY, None, ".npz original: the array to read (default: the "
                          "only one)"),
    "vector_column": ReaderOption(SOURCE_VECTOR_COLUMN, None, "Parquet/Arrow original: the "
                                  "column of vectors (default: the only list-of-floats "
                                  "column)"),
    "key_column": ReaderOption(SOURCE_KEY_COLUMN, None, "Parquet/Arrow original: the column "
                               "of keys (default: the only string column, or none)"),
}


def api_spelling(name: str) -> str:
    """How the Python API names an option in its messages (``limit=``)."""
    return f"{name}="


def _is_row_count(value: Any) -> bool:
    return (isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
            and value >= 1)


def check_reader_options(options: Mapping[str, Any], original: Any,
                         spell: Callable[[str], str] = api_spelling) -> None:
    """Refuse reader options that cannot apply, before anything is read.

    ``options`` maps :data:`READER_OPTIONS` names to the values given (None = not given);
    ``original`` is what they would read (None when there is none). ``spell`` says how the
    caller's user writes an option (and ``"original"``): :func:`api_spelling` for the
    library, flags for the command line, so one set of checks speaks both vocabularies.

    Raises
    ------
    ValueError
        Options given without an original, file-reading options for in-memory vectors, a
        ``limit`` that is not a positive number of rows, or a format or ``unicode_errors``
        the readers do not have.
    """
    from embq._readers import FORMATS, UNICODE_ERRORS

    given = [name for name in READER_OPTIONS if options.get(name) is not None]
    if given and original is None:
        raise ValueError(
            f"{', '.join(map(spell, given))} only appl{'ies' if len(given) == 1 else 'y'} to "
            f"reading the original; give the original with {spell('original')}")
    file_only = [name for name in given if name != "limit"]
    if file_only and not isinstance(original, (str, os.PathLike)):
        raise ValueError(
            f"{', '.join(map(spell, file_only))} only appl{'ies' if len(file_only) == 1 else 'y'}"
            f" when the original is a file; got a {type(original).__name__}")
    limit = options.get("limit")
    if limit is not None and not _is_row_count(limit):
        raise ValueError(f"{spell('limit')} must be a positive number of rows, got {limit!r}")
    for name, choices in (("format", FORMATS), ("unicode_errors", UNICODE_ERRORS)):
        value = options.get(name)
        if value is not None and value not in choices:
            raise ValueError(f"{spell(name)} must be one of {', '.join(choices)}, got {value!r}")


# -- writing ---------------------------------------------------------------------------------


def source_attributes(reader: Any, input_path: str, *, keys: str | os.PathLike | None,
                      limit: int | None, encoding: str, unicode_errors: str,
                      duplicates: int) -> dict[str, Any]:
    """The ``source_*`` attributes of a store compressed from ``reader``'s file.

    ``reader`` is the :class:`embq._readers.EmbeddingReader` that read it (after its last
    block); the other arguments are compress's options and the duplicates it dropped.
    """
    attrs: dict[str, Any] = {
        SOURCE_PATH: reader.path if reader.path == "<stdin>" else os.path.abspath(input_path),
        SOURCE_FORMAT: reader.format,
        SOURCE_COMPRESSION: reader.compression or "none",
        SOURCE_SIZE: np.int64(reader.size),
        SOURCE_ROWS: np.int64(reader.rows_read),
        SOURCE_DUPLICATES: np.int64(duplicates),
        SOURCE_LIMIT: np.int64(limit if limit is not None else -1),
        SOURCE_ENCODING: encoding,
        SOURCE_UNICODE_ERRORS: unicode_errors,
    }
    if keys is not None:
        attrs[SOURCE_KEYS_PATH] = os.path.abspath(os.fspath(keys))
    for name, attribute in _PART_OPTIONS.items():
        value = getattr(reader, name, None)
        if isinstance(value, str):
            attrs[attribute] = value
    return attrs


# -- reading back ----------------------------------------------------------------------------


def recorded_int(attrs: Mapping[str, Any], name: str) -> int | None:
    """An integer attribute, or None when it is absent or not an integer."""
    value = attrs.get(name)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        return None
    return int(value)


def _recorded_str(attrs: Mapping[str, Any], name: str) -> str | None:
    value = attrs.get(name)
    return value if isinstance(value, str) and value else None


def _same_file(a: str, b: str | None) -> bool:
    if b is None:
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def recorded_reader_options(attrs: Mapping[str, Any], original: Any,
                            options: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The reader options that read ``original`` the way compress read the store's source.

    ``options`` holds the ones given (None = not given); they always win. The store's
    attributes fill in the others: ``limit`` from ``source_limit`` always (the store holds
    only that many rows of its source, whatever the original is); and when ``original`` is
    the store's source file (``source_path``, compared with :func:`os.path.samefile`),
    ``format``, ``keys``, ``encoding`` and ``unicode_errors`` from ``source_format``,
    ``source_keys_path`` (when that file still exists), ``source_encoding`` and
    ``source_unicode_errors``, and ``tensor``, ``array``, ``vector_column`` and
    ``key_column`` from the attributes of the same names. What is neither given nor recorded
    takes the
    :data:`READER_OPTIONS` default (``format`` None: detected).

    Returns the options, by :data:`READER_OPTIONS` name, and one note in words for each
    value taken from the store (or recorded but not usable).
    """
    from embq._readers import FORMATS, UNICODE_ERRORS

    notes: list[str] = []
    out = {name: options.get(name) for name in READER_OPTIONS}
    if out["limit"] is None:
        recorded = recorded_int(attrs, SOURCE_LIMIT)
        if recorded is not None and recorded > 0:
            out["limit"] = recorded
            notes.append(f"first {recorded:,} rows only (the store's {SOURCE_LIMIT})")
    is_source = (isinstance(original, (str, os.PathLike))
                 and _same_file(os.fspath(original), _recorded_str(attrs, SOURCE_PATH)))
    if is_source:
        fmt = _recorded_str(attrs, SOURCE_FORMAT)
        if out["format"] is None and fmt in FORMATS:
            out["format"] = fmt
            notes.append(f"read as {fmt} (the store's {SOURCE_FORMAT})")
        keys_path = _recorded_str(attrs, SOURCE_KEYS_PATH)
        if out["keys"] is None and keys_path is not None:
            if os.path.exists(keys_path):
                out["keys"] = keys_path
                notes.append(f"keys from {keys_path} (the store's {SOURCE_KEYS_PATH})")
            else:
                notes.append(f"the store's {SOURCE_KEYS_PATH} {keys_path} no longer exists")
        encoding = _recorded_str(attrs, SOURCE_ENCODING)
        if out["encoding"] is None and encoding is not None:
            out["encoding"] = encoding
            notes.append(f"keys decoded as {encoding} (the store's {SOURCE_ENCODING})")
        errors = _recorded_str(attrs, SOURCE_UNICODE_ERRORS)
        if out["unicode_errors"] is None and errors in UNICODE_ERRORS:
            out["unicode_errors"] = errors
            notes.append(f"undecodable key bytes: {errors} (the store's "
                         f"{SOURCE_UNICODE_ERRORS})")
        for name, attribute in _PART_OPTIONS.items():
            value = _recorded_str(attrs, attribute)
            if out[name] is None and value is not None:
                out[name] = value
                notes.append(f"{name} {value!r} (the store's {attribute})")
    for name, option in READER_OPTIONS.items():
        if out[name] is None:
            out[name] = option.default
    return out, notes
