"""The exception types carry where the problem is and read well."""

import pytest

from embq._errors import DuplicateKeyError, FormatError, StoreError


def test_format_error_names_file_line_and_offset():
    err = FormatError("expected 3 values, found 2", path="vec.txt", line=7, offset=120)
    assert str(err) == "vec.txt, line 7, byte 120: expected 3 values, found 2"
    assert (err.path, err.line, err.offset) == ("vec.txt", 7, 120)
    assert isinstance(err, ValueError)


def test_format_error_without_location_is_just_the_message():
    assert str(FormatError("empty file")) == "empty file"


def test_store_error_is_a_format_error():
    err = StoreError("not an embq store", path="x.h5")
    assert isinstance(err, FormatError)
    assert str(err) == "x.h5: not an embq store"


def test_duplicate_key_error_names_key_and_rows():
    err = DuplicateKeyError("cat", first_index=3, index=9)
    assert isinstance(err, ValueError)
    assert (err.key, err.first_index, err.index) == ("cat", 3, 9)
    assert "'cat'" in str(err) and "row 9" in str(err) and "row 3" in str(err)
    with pytest.raises(ValueError):
        raise err
