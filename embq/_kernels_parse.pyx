# cython: language_level=3
"""Parsers for embedding files: word2vec/GloVe text lines and word2vec binary records.

Both work on a byte buffer holding whole records and fill a caller's float32 block; they
release the GIL and create no Python object per value. Keys are returned as byte spans
(start, end) into the buffer and decoded by the caller, one ``str`` per row.

Text values are read the way ``numpy.float32(float(token))`` reads them: the decimal string is
first rounded to the nearest double, then the double to the nearest float32. Tokens with at most
19 significant digits and a decimal exponent within +-22 are converted exactly with one double
multiplication or division (both operands exact, so the result is correctly rounded); the rest
go through a locale-independent ``strtod``.
"""

from libc.stdint cimport uint64_t
from libc.string cimport memcpy
from cpython.unicode cimport PyUnicode_Decode, PyUnicode_DecodeUTF8

import numpy as np

from embq._config import _init_kernels, _portable_only

cdef extern from "_parse.h" nogil:
    const double embq_pow10[23]
    int embq_parse_init()
    int embq_parse_uses_strtod_l()
    double embq_strtod_token(const unsigned char *s, size_t length)

embq_parse_init()

# Status codes returned by the parsers (mirrored as Python constants below).
cdef enum:
    ST_OK = 0            # stopped because the block is full or the buffer is used up
    ST_BLANK = 1         # a line with nothing but whitespace
    ST_EMPTY_KEY = 2     # the line starts with a separator: no key
    ST_TOO_FEW = 3       # fewer values than dim; err_count = values found
    ST_TOO_MANY = 4      # more values than dim; err_count = values found
    ST_BAD_NUMBER = 5    # a token that is not a decimal number; err_pos = its start
    ST_NONFINITE = 6     # nan / inf spelled out; err_pos = its start
    ST_OUT_OF_RANGE = 7  # finite decimal that overflows float32; err_pos = its start
    ST_NEED_MORE = 8     # binary: the buffer ends inside a record
    ST_KEY_TOO_LONG = 9  # binary: no space within max_key_len bytes
    ST_BAD_KEY = 10      # binary: a control byte inside the key; err_pos = that byte

OK = ST_OK
BLANK = ST_BLANK
EMPTY_KEY = ST_EMPTY_KEY
TOO_FEW = ST_TOO_FEW
TOO_MANY = ST_TOO_MANY
BAD_NUMBER = ST_BAD_NUMBER
NONFINITE = ST_NONFINITE
OUT_OF_RANGE = ST_OUT_OF_RANGE
NEED_MORE = ST_NEED_MORE
KEY_TOO_LONG = ST_KEY_TOO_LONG
BAD_KEY = ST_BAD_KEY

# 2**128 - 2**103: the smallest double that rounds to float32 infinity.
cdef double FLOAT32_OVERFLOW = 340282356779733661637539395458142568448.0
cdef uint64_t TWO53 = (<uint64_t>1) << 53


# The parse kernel family has one variant (see embq._config).
kernel_variants, selected_kernels, _use_kernel = _portable_only("parse")


def strtod_fallback():
    """Return ``"strtod_l"`` when long or unusual tokens go through a C-locale ``strtod_l``
    (a user's ``setlocale`` cannot change them), else ``"strtod"``."""
    return "strtod_l" if embq_parse_uses_strtod_l() else "strtod"


_init_kernels(kernel_variants(), _use_kernel)


cdef inline bint is_sep(unsigned char c) noexcept nogil:
    return c == 32 or c == 9 or c == 13   # ' ', '\t', '\r'


cdef inline bint is_end(unsigned char c) noexcept nogil:
    return c == 32 or c == 9 or c == 13 or c == 10


cdef inline unsigned char lower(unsigned char c) noexcept nogil:
    if 65 <= c <= 90:
        return c + 32
    return c


cdef inline bint match_word(const unsigned char *p, const char *word, int n) noexcept nogil:
    # Case-insensitive prefix match; stops at the first mismatch, so it never reads past the
    # line's terminating '\n' (which matches no letter).
    cdef int i
    for i in range(n):
        if lower(p[i]) != <unsigned char>word[i]:
            return False
    return True


cdef inline const unsigned char *parse_float(const unsigned char *p, float *out,
                                             int *status) noexcept nogil:
    """Parse one token starting at p (not a separator). Returns the position after it.

    The caller guarantees the line ends with '\\n', and every loop here stops at a byte that
    is not part of a number, so no bounds are needed.
    """
    cdef const unsigned char *s = p
    cdef bint neg = False
    cdef bint any_digit = False
    cdef bint inexact = False
    cdef uint64_t m = 0
    cdef int nd = 0
    cdef long e10 = 0
    cdef long ex = 0
    cdef bint eneg = False
    cdef unsigned int c
    cdef double d
    cdef const unsigned char *q

    if p[0] == 45:      # '-'
        neg = True
        p += 1
    elif p[0] == 43:    # '+'
        p += 1
    # Integer part. Leading zeros are not significant; after 19 significant digits the rest
    # only move the exponent (and make the value inexact unless they are zeros).
    while True:
        c = <unsigned int>p[0] - 48
        if c > 9:
            break
        any_digit = True
        if nd < 19:
            if m != 0 or c != 0:
                m = m * 10 + c
                nd += 1
        else:
            e10 += 1
            if c != 0:
                inexact = True
        p += 1
    if p[0] == 46:      # '.'
        p += 1
        while True:
            c = <unsigned int>p[0] - 48
            if c > 9:
                break
            any_digit = True
            if nd < 19:
                if m != 0 or c != 0:
                    m = m * 10 + c
                    nd += 1
                e10 -= 1
            elif c != 0:
                inexact = True
            p += 1
    if not any_digit:
        q = s
        if q[0] == 45 or q[0] == 43:
            q += 1
        if match_word(q, b"infinity", 8) and is_end(q[8]):
            status[0] = ST_NONFINITE
        elif match_word(q, b"inf", 3) and is_end(q[3]):
            status[0] = ST_NONFINITE
        elif match_word(q, b"nan", 3) and is_end(q[3]):
            status[0] = ST_NONFINITE
        else:
            status[0] = ST_BAD_NUMBER
        return s
    if p[0] == 101 or p[0] == 69:    # 'e' / 'E'
        p += 1
        if p[0] == 45:
            eneg = True
            p += 1
        elif p[0] == 43:
            p += 1
        c = <unsigned int>p[0] - 48
        if c > 9:
            status[0] = ST_BAD_NUMBER
            return s
        while True:
            c = <unsigned int>p[0] - 48
            if c > 9:
                break
            if ex < 100000:
                ex = ex * 10 + c
            p += 1
        e10 += -ex if eneg else ex
    if not is_end(p[0]):
        status[0] = ST_BAD_NUMBER
        return s

    if m == 0:
        d = 0.0
    elif not inexact and m <= TWO53 and -22 <= e10 <= 22:
        d = <double>m
        if e10 < 0:
            d = d / embq_pow10[-e10]
        else:
            d = d * embq_pow10[e10]
    else:
        d = embq_strtod_token(s, <size_t>(p - s))
        if d != d:
            status[0] = ST_BAD_NUMBER
            return s
        if d < 0:
            d = -d
    if d >= FLOAT32_OVERFLOW:
        status[0] = ST_OUT_OF_RANGE
        return s
    out[0] = <float>(-d if neg else d)
    status[0] = ST_OK
    return p


cdef Py_ssize_t _parse_text(const unsigned char *buf, Py_ssize_t start, Py_ssize_t end,
                            float *out, Py_ssize_t dim, Py_ssize_t row0, Py_ssize_t n_rows,
                            Py_ssize_t *kstart, Py_ssize_t *kend, Py_ssize_t *result) noexcept nogil:
    """result = [rows_done, pos, status, err_pos, err_count]."""
    cdef const unsigned char *p = buf + start
    cdef const unsigned char *line = buf + start
    cdef const unsigned char *stop = buf + end
    cdef Py_ssize_t row = row0
    cdef Py_ssize_t j, extra
    cdef int status = ST_OK
    cdef float *orow
    while row < n_rows and p < stop:
        line = p
        while not is_end(p[0]):
            p += 1
        if p == line:
            while is_sep(p[0]):
                p += 1
            if p[0] == 10:
                status = ST_BLANK
            else:
                status = ST_EMPTY_KEY
            result[3] = line - buf
            break
        kstart[row] = line - buf
        kend[row] = p - buf
        orow = out + row * dim
        for j in range(dim):
            while is_sep(p[0]):
                p += 1
            if p[0] == 10:
                status = ST_TOO_FEW
                result[4] = j
                result[3] = p - buf
                break
            p = parse_float(p, orow + j, &status)
            if status != ST_OK:
                result[3] = p - buf
                break
        if status != ST_OK:
            break
        while is_sep(p[0]):
            p += 1
        if p[0] != 10:
            # Count the surplus so the message can say how many values the line holds.
            result[3] = p - buf
            extra = 0
            while p[0] != 10:
                extra += 1
                while not is_end(p[0]):
                    p += 1
                while is_sep(p[0]):
                    p += 1
            status = ST_TOO_MANY
            result[4] = dim + extra
            break
        p += 1
        row += 1
    result[0] = row
    result[1] = (line if status != ST_OK else p) - buf
    result[2] = status
    return row


def parse_text_block(const unsigned char[::1] buf not None, Py_ssize_t start, Py_ssize_t end,
                     float[:, ::1] out not None, Py_ssize_t row0,
                     Py_ssize_t[::1] key_start not None, Py_ssize_t[::1] key_end not None):
    """Parse whole text lines ``buf[start:end]`` into rows ``row0...`` of ``out``.

    Each line is ``KEY VALUE VALUE ...`` with exactly ``out.shape[1]`` values, separated by
    spaces or tabs; ``\\r`` and trailing whitespace are allowed. ``buf[end - 1]`` must be
    ``b'\\n'`` (the caller appends one to a last line without it).

    Parameters
    ----------
    buf : bytes-like
        The buffer.
    start, end : int
        The byte range holding whole lines.
    out : float32 array (rows, dim), C-contiguous
        Receives the values.
    row0 : int
        First row of ``out`` to fill.
    key_start, key_end : intp arrays of at least ``out.shape[0]``
        Receive each row's key span in ``buf``.

    Returns
    -------
    tuple of int
        ``(rows_done, pos, status, err_pos, err_count)``: ``rows_done`` is the index of the
        next free row of ``out``; ``pos`` the start of the first line not consumed; ``status``
        one of the module's status constants; for errors ``err_pos`` is the byte position of
        the offending token or line and ``err_count`` the number of values found.
    """
    cdef Py_ssize_t n = buf.shape[0]
    cdef Py_ssize_t result[5]
    if not (0 <= start <= end <= n):
        raise ValueError(f"byte range [{start}, {end}) is outside the buffer of {n} bytes")
    if end > start and buf[end - 1] != 10:
        raise ValueError("the byte range must end with a newline")
    if out.shape[1] < 1:
        raise ValueError("out must have at least one column")
    if key_start.shape[0] < out.shape[0] or key_end.shape[0] < out.shape[0]:
        raise ValueError(f"key span arrays must hold {out.shape[0]} entries")
    if not (0 <= row0 <= out.shape[0]):
        raise ValueError(f"row0={row0} is outside the block of {out.shape[0]} rows")
    result[0] = row0
    result[1] = start
    result[2] = ST_OK
    result[3] = -1
    result[4] = -1
    if end > start and row0 < out.shape[0]:
        with nogil:
            _parse_text(&buf[0], start, end, &out[0, 0], out.shape[1], row0, out.shape[0],
                        &key_start[0], &key_end[0], result)
    return result[0], result[1], result[2], result[3], result[4]


def parse_binary_block(const unsigned char[::1] buf not None, Py_ssize_t start, Py_ssize_t end,
                       float[:, ::1] out not None, Py_ssize_t row0,
                       Py_ssize_t[::1] key_start not None, Py_ssize_t[::1] key_end not None,
                       Py_ssize_t max_key_len=1 << 20):
    """Parse word2vec binary records ``KEY' '<dim little-endian float32>`` from ``buf``.

    Newlines (and ``\\r``) before a key are skipped: the C tool writes one after each vector,
    other writers do not. Values are copied as stored (little-endian); the caller byte-swaps
    on a big-endian machine and checks finiteness.

    A key holding a control byte (0x00-0x1f other than tab) is refused: word2vec splits words
    on whitespace and never writes one inside a key, so such a "key" means the records are
    not where the header's dim puts them (a wrong dim), not an odd word.

    Returns
    -------
    tuple of int
        ``(rows_done, pos, status, err_pos)``; ``pos`` is where the next record starts (after
        skipped newlines). ``NEED_MORE`` means the buffer ends inside the record at ``pos``;
        ``KEY_TOO_LONG`` that no space follows within ``max_key_len`` bytes; ``EMPTY_KEY``
        that the record at ``pos`` starts with a space; ``BAD_KEY`` that the key of the
        record at ``pos`` holds the control byte at ``err_pos`` (otherwise -1).
    """
    cdef Py_ssize_t n = buf.shape[0]
    cdef Py_ssize_t dim = out.shape[1]
    cdef Py_ssize_t nbytes = dim * 4
    cdef Py_ssize_t row = row0
    cdef Py_ssize_t p, q, lim
    cdef Py_ssize_t bad = -1
    cdef unsigned char c
    cdef int status = ST_OK
    cdef const unsigned char *b
    cdef char *o
    if not (0 <= start <= end <= n):
        raise ValueError(f"byte range [{start}, {end}) is outside the buffer of {n} bytes")
    if key_start.shape[0] < out.shape[0] or key_end.shape[0] < out.shape[0]:
        raise ValueError(f"key span arrays must hold {out.shape[0]} entries")
    if not (0 <= row0 <= out.shape[0]):
        raise ValueError(f"row0={row0} is outside the block of {out.shape[0]} rows")
    if dim < 1:
        raise ValueError("out must have at least one column")
    p = start
    if end == start or row0 == out.shape[0]:
        return row0, start, (ST_NEED_MORE if row0 < out.shape[0] else ST_OK), -1
    b = &buf[0]
    o = <char *>&out[0, 0]
    with nogil:
        while row < out.shape[0]:
            while p < end and (b[p] == 10 or b[p] == 13):
                p += 1
            if p >= end:
                status = ST_NEED_MORE
                break
            if b[p] == 32:
                status = ST_EMPTY_KEY
                break
            q = p
            lim = p + max_key_len
            if lim > end:
                lim = end
            while q < lim:
                c = b[q]
                if c == 32:
                    break
                if c < 32 and c != 9 and bad < 0:
                    bad = q
                q += 1
            if bad >= 0:
                status = ST_BAD_KEY
                break
            if q >= lim:
                status = ST_KEY_TOO_LONG if lim - p >= max_key_len else ST_NEED_MORE
                break
            if end - (q + 1) < nbytes:
                status = ST_NEED_MORE
                break
            key_start[row] = p
            key_end[row] = q
            memcpy(o + row * nbytes, b + q + 1, nbytes)
            p = q + 1 + nbytes
            row += 1
    return row, p, status, bad


def decode_keys(const unsigned char[::1] buf not None, Py_ssize_t[::1] key_start not None,
                Py_ssize_t[::1] key_end not None, Py_ssize_t r0, Py_ssize_t r1,
                str encoding, str errors):
    """Decode the key spans of rows ``r0 <= i < r1`` into a list of ``str``.

    Raises ``UnicodeDecodeError`` like ``bytes.decode`` (the caller locates the row).
    """
    cdef Py_ssize_t n = buf.shape[0]
    cdef Py_ssize_t i, a, b
    cdef const char *base
    cdef bint utf8
    if not (0 <= r0 <= r1 <= key_start.shape[0] and r1 <= key_end.shape[0]):
        raise ValueError(f"rows [{r0}, {r1}) are outside the key span arrays")
    for i in range(r0, r1):
        if not (0 <= key_start[i] <= key_end[i] <= n):
            raise ValueError(f"key span {i} [{key_start[i]}, {key_end[i]}) is outside the buffer")
    keys = []
    if r1 == r0:
        return keys
    base = <const char *>&buf[0]
    utf8 = encoding.lower().replace("-", "").replace("_", "") in ("utf8", "u8")
    enc = encoding.encode("ascii")
    err = errors.encode("ascii")
    for i in range(r0, r1):
        a = key_start[i]
        b = key_end[i]
        if utf8:
            keys.append(PyUnicode_DecodeUTF8(base + a, b - a, err))
        else:
            keys.append(PyUnicode_Decode(base + a, b - a, enc, err))
    return keys

