"""Kernel behind embq._evaluate: one pass over an analogy file (``questions-words.txt`` format).

An analogy file has tens of thousands of question words but only about a thousand distinct
ones, so the tokenizer interns every word as it goes: each question becomes four small integer
ids into a table of distinct words, and Python only ever sees the distinct words (to fold their
case and look them up in the vocabulary once each).

The splitting rules are Python's, so the result is the one ``line.split()`` over the lines of
the file would give: lines end at ``\\n`` only; a line starting with ``": "`` is a section
header; a line starting with ``#`` is a comment, skipped like a blank line; any other line is
split at runs of the ASCII whitespace characters that ``str.split()`` recognises
(``\\t \\n \\v \\f \\r``, ``\\x1c``-``\\x1f`` and space). Bytes >= 0x80 are never
separators, which makes this exact for ASCII text and for UTF-8 text without non-ASCII
whitespace characters (the caller checks that).

Speed: a line of up to 63 bytes separated by single spaces (all of them in practice) is scanned
8 bytes at a time into a bit mask of its spaces; its words are then found with bit operations,
not byte-by-byte loops whose exits the branch predictor keeps missing. Words of up to 16 bytes are hashed and compared
as two masked 64-bit words.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memchr, memcpy

import numpy as np

cimport numpy as cnp

from embq._config import _init_kernels, _portable_only

cnp.import_array()

# Status codes of the tokenizer (the Python side turns them into FormatError).
OK = 0
QUESTION_BEFORE_SECTION = 1
BAD_WORD_COUNT = 2
cdef enum:
    _OK = 0
    _BEFORE_SECTION = 1
    _BAD_COUNT = 2
    _NO_MEMORY = 3
    _FIRST_TABLE = 4096  # initial slots of the intern table (power of two)
    _SHORT_LINE = 63     # longest line scanned into a 64-bit mask (bit 63 stays clear)

cdef extern from *:
    """
    /* 1 for the ASCII characters str.isspace() accepts, except the line end; 0 otherwise. */
    static const unsigned char embq_eval_space[256] = {
        0,0,0,0,0,0,0,0,0,1,0,1,1,1,0,0, 0,0,0,0,0,0,0,0,0,0,0,0,1,1,1,1,
        1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
        0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
        0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
        0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
        0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
        0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
        0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0
    };
    #if defined(__GNUC__) || defined(__clang__)
    #define embq_eval_ctz(x) __builtin_ctzll(x)
    #else
    static int embq_eval_ctz(unsigned long long x) {  /* x != 0 */
        int n = 0;
        while (!(x & 1)) { x >>= 1; n++; }
        return n;
    }
    #endif
    /* Bit count without the POPCNT instruction (no -m flags are used; the builtin would be a
       libgcc call). */
    static inline int embq_eval_popcount(unsigned long long x) {
        x = x - ((x >> 1) & 0x5555555555555555ULL);
        x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
        x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
        return (int)((x * 0x0101010101010101ULL) >> 56);
    }
    """
    const unsigned char* _SPACE "embq_eval_space"
    int _ctz "embq_eval_ctz"(uint64_t x) noexcept nogil
    int _popcount "embq_eval_popcount"(uint64_t x) noexcept nogil


# The eval kernel family has one variant (see embq._config).
kernel_variants, selected_kernels, _use_kernel = _portable_only("eval")
_init_kernels(kernel_variants(), _use_kernel)


cdef inline uint64_t _load(const uint8_t* s, int64_t n, const uint8_t* end) noexcept nogil:
    """The ``n`` (0..8) bytes at ``s`` as a little-endian word, zero-padded; reads stay before
    ``end``. One 8-byte load and a mask when the buffer has room (copying byte by byte into a
    word stalls on store forwarding); byte by byte only at the very end of the file."""
    cdef uint64_t v = 0
    cdef int64_t i
    if n <= 0:
        return 0
    if end - s >= 8:
        memcpy(&v, s, 8)
        if n >= 8:
            return v
        return v & ((<uint64_t>1 << (8 * n)) - 1)
    for i in range(n if n < 8 else 8):
        v |= <uint64_t>s[i] << (8 * i)
    return v


cdef inline uint64_t _mix(uint64_t h) noexcept nogil:
    h ^= h >> 33
    h *= 0xff51afd7ed558ccdULL
    h ^= h >> 33
    h *= 0xc4ceb9fe1a85ec53ULL
    h ^= h >> 33
    return h


# Byte-parallel tests on a 64-bit word (exact per byte: no carry crosses a byte), and the
# gather of their per-byte flags (bit 7 of each byte) into an 8-bit mask, bit j = byte j.
cdef inline uint64_t _eq_bytes(uint64_t x, uint64_t pattern) noexcept nogil:
    cdef uint64_t y = x ^ pattern
    cdef uint64_t t = (y & 0x7F7F7F7F7F7F7F7FULL) + 0x7F7F7F7F7F7F7F7FULL
    return ~(t | y) & 0x8080808080808080ULL


cdef inline uint64_t _le_0x20(uint64_t x) noexcept nogil:
    cdef uint64_t t = (x & 0x7F7F7F7F7F7F7F7FULL) + 0x5F5F5F5F5F5F5F5FULL
    return ~(t | x) & 0x8080808080808080ULL


cdef inline uint64_t _movemask(uint64_t flags) noexcept nogil:
    return (flags * 0x02040810204081ULL) >> 56


cdef struct _Interner:
    int32_t* slots        # table of word ids, -1 = empty; size is a power of two
    uint64_t mask
    int64_t* start        # first occurrence of each distinct word: byte offset ...
    int32_t* length       # ... length ...
    uint64_t* hashes      # ... hash (growing the table never rehashes bytes) ...
    uint64_t* head        # ... and its first 16 bytes, zero-padded (compared without memcmp)
    int32_t n             # distinct words so far (the arrays above hold room for all words)


cdef int _grow(_Interner* t) noexcept nogil:
    """Double the slot table; returns -1 when out of memory (the old table stays valid)."""
    cdef uint64_t size = (t.mask + 1) * 2
    cdef int32_t* slots = <int32_t*>malloc(size * sizeof(int32_t))
    cdef uint64_t i, slot
    cdef int32_t w
    if slots == NULL:
        return -1
    for i in range(size):
        slots[i] = -1
    for w in range(t.n):
        slot = t.hashes[w] & (size - 1)
        while slots[slot] >= 0:
            slot = (slot + 1) & (size - 1)
        slots[slot] = w
    free(t.slots)
    t.slots = slots
    t.mask = size - 1
    return 0


cdef inline bint _same_tail(const uint8_t* a, const uint8_t* b, int64_t n) noexcept nogil:
    """Whether the n bytes at a and b are equal (words longer than 16 bytes are rare)."""
    cdef int64_t i
    for i in range(n):
        if a[i] != b[i]:
            return False
    return True


cdef inline int32_t _intern(_Interner* t, const uint8_t* base, const uint8_t* end, int64_t s,
                            int32_t n) noexcept nogil:
    """Id of the word ``base[s:s+n]``, added when new; -1 when out of memory."""
    cdef const uint8_t* p = base + s
    cdef uint64_t w0 = _load(p, n, end)
    cdef uint64_t w1 = _load(p + 8, n - 8, end) if n > 8 else 0
    cdef uint64_t h = _mix((w0 * 0x9e3779b97f4a7c15ULL) ^ w1 ^ (<uint64_t>n << 56))
    cdef uint64_t slot
    cdef int32_t w
    if n > 16:  # rare: fold the rest in 8 bytes at a time
        for slot in range(16, <uint64_t>n, 8):
            h = _mix(h ^ _load(p + slot, n - <int64_t>slot, end))
    slot = h & t.mask
    while True:
        w = t.slots[slot]
        if w < 0:
            break
        if (t.hashes[w] == h and t.length[w] == n and t.head[2 * w] == w0
                and t.head[2 * w + 1] == w1
                and (n <= 16 or _same_tail(base + t.start[w] + 16, p + 16, n - 16))):
            return w
        slot = (slot + 1) & t.mask
    w = t.n
    t.start[w] = s
    t.length[w] = n
    t.hashes[w] = h
    t.head[2 * w] = w0
    t.head[2 * w + 1] = w1
    t.slots[slot] = w
    t.n += 1
    # Keep the load factor at or below 1/4 so probe runs stay short.
    if <uint64_t>t.n * 4 > t.mask + 1:
        if _grow(t) != 0:
            return -1
    return w


def tokenize_questions(bytes data not None):
    """Split an analogy file into sections and questions of interned word ids.

    Parameters
    ----------
    data : bytes
        The whole file (ASCII, or UTF-8 without non-ASCII whitespace; see the module docstring).

    Returns
    -------
    dict
        ``status`` (``OK``, ``QUESTION_BEFORE_SECTION`` or ``BAD_WORD_COUNT``); on success
        ``ids`` (int32, shape (questions, 4)), ``words`` (bytes: the distinct words in order of
        first appearance, each followed by ``\\n``), ``n_words``, and per section
        ``header_start``/``header_end`` (byte range of the header line, without its newline),
        ``header_line`` (1-based line number) and ``first_question`` (int64 arrays). On an error
        ``line`` (1-based), ``n_tokens`` (words on that line) and ``line_start``/``line_end``.
    """
    cdef const uint8_t* buf = <const uint8_t*>PyBytes_AS_STRING(data)
    cdef const uint8_t* end = buf + PyBytes_GET_SIZE(data)
    cdef int64_t n = PyBytes_GET_SIZE(data)
    # Capacities from the size alone (no counting pass): a question line takes at least 8
    # bytes ("a b c d\n"), a header at least 3 (": \n"); the last line may lack its newline.
    cdef int64_t q_cap = (n + 1) // 8 + 1
    cdef int64_t s_cap = (n + 1) // 3 + 1
    if 4 * q_cap > 0x7FFFFFFF:
        raise ValueError(f"analogy file of {n} bytes is too large (at most 2 GB)")

    ids_arr = np.empty((q_cap, 4), np.int32)
    starts_arr = np.empty(4 * q_cap, np.int64)
    lengths_arr = np.empty(4 * q_cap, np.int32)
    hashes_arr = np.empty(4 * q_cap, np.uint64)
    head_arr = np.empty(8 * q_cap, np.uint64)
    hs_arr = np.empty(s_cap, np.int64)
    he_arr = np.empty(s_cap, np.int64)
    hl_arr = np.empty(s_cap, np.int64)
    hq_arr = np.empty(s_cap, np.int64)
    cdef int32_t[:, ::1] ids = ids_arr
    cdef int64_t[::1] hs = hs_arr
    cdef int64_t[::1] he = he_arr
    cdef int64_t[::1] hl = hl_arr
    cdef int64_t[::1] hq = hq_arr
    cdef int64_t[::1] starts = starts_arr
    cdef int32_t[::1] lengths = lengths_arr
    cdef uint64_t[::1] hashes = hashes_arr
    cdef uint64_t[::1] head = head_arr

    cdef _Interner t
    t.slots = <int32_t*>malloc(_FIRST_TABLE * sizeof(int32_t))
    if t.slots == NULL:
        raise MemoryError("cannot allocate the analogy tokenizer's word table")
    t.mask = _FIRST_TABLE - 1
    t.start = &starts[0]
    t.length = &lengths[0]
    t.hashes = &hashes[0]
    t.head = &head[0]
    t.n = 0

    cdef int status = _OK
    cdef int64_t pos = 0, eol, i, line_no = 0, nq = 0, nsec = 0
    cdef int64_t err_line = 0, err_start = 0, err_end = 0
    cdef int64_t tok_s[4]
    cdef int32_t tok_l[4]
    cdef uint64_t sp, word_bits, first_bits, x, nl8, sp8, ct8, keep
    cdef int64_t off
    cdef bint fast
    cdef const uint8_t* nl
    cdef int32_t w
    cdef int ntok = 0, k, b
    with nogil:
        for i in range(_FIRST_TABLE):
            t.slots[i] = -1
        while True:
            line_no += 1
            if n - pos >= 2 and buf[pos] == 58 and buf[pos + 1] == 32:  # ": " header
                nl = <const uint8_t*>memchr(buf + pos, 10, n - pos)
                eol = n if nl == NULL else nl - buf
                hs[nsec] = pos
                he[nsec] = eol
                hl[nsec] = line_no
                hq[nsec] = nq
                nsec += 1
            elif pos < n and buf[pos] == 35:  # "#" comment: skipped like a blank line
                nl = <const uint8_t*>memchr(buf + pos, 10, n - pos)
                eol = n if nl == NULL else nl - buf
            else:
                # Scan the line 8 bytes at a time (SWAR) into sp: bit j = byte pos+j is a
                # space. Lines with other whitespace or control bytes, lines of 64 bytes or
                # more, and the last few bytes of the file take the byte loop below.
                sp = 0
                off = 0
                fast = False
                while n - (pos + off) >= 8 and off <= _SHORT_LINE - 7:
                    memcpy(&x, buf + pos + off, 8)
                    nl8 = _movemask(_eq_bytes(x, 0x0A0A0A0A0A0A0A0AULL))
                    sp8 = _movemask(_eq_bytes(x, 0x2020202020202020ULL))
                    ct8 = _movemask(_le_0x20(x)) & ~sp8 & ~nl8
                    if nl8 != 0:
                        keep = (nl8 & (~nl8 + 1)) - 1  # the bytes before the newline
                        if ct8 & keep == 0:
                            sp |= (sp8 & keep) << off
                            eol = pos + off + _ctz(nl8)
                            fast = True
                        break
                    if ct8 != 0:
                        break
                    sp |= sp8 << off
                    off += 8
                if fast:
                    word_bits = ~sp & ((<uint64_t>1 << (eol - pos)) - 1)
                    first_bits = word_bits & ~(word_bits << 1)  # first byte of each word
                    ntok = _popcount(first_bits)
                    for k in range(4 if ntok > 4 else ntok):
                        b = _ctz(first_bits)
                        tok_s[k] = pos + b
                        # eol - pos <= 63: bit 63 of word_bits is clear, so ~(word_bits >> b)
                        # has a set bit.
                        tok_l[k] = _ctz(~(word_bits >> b))
                        first_bits &= first_bits - 1
                else:
                    # Byte by byte (also counts every word, for the error message).
                    nl = <const uint8_t*>memchr(buf + pos, 10, n - pos)
                    eol = n if nl == NULL else nl - buf
                    ntok = 0
                    i = pos
                    while i < eol:
                        while i < eol and _SPACE[buf[i]]:
                            i += 1
                        if i == eol:
                            break
                        if ntok < 4:
                            tok_s[ntok] = i
                        while i < eol and not _SPACE[buf[i]]:
                            i += 1
                        if ntok < 4:
                            tok_l[ntok] = <int32_t>(i - tok_s[ntok])
                        ntok += 1
                if ntok == 4 and nsec > 0:
                    for k in range(4):
                        w = _intern(&t, buf, end, tok_s[k], tok_l[k])
                        if w < 0:
                            status = _NO_MEMORY
                            break
                        ids[nq, k] = w
                    nq += 1
                elif ntok != 0:
                    status = _BEFORE_SECTION if nsec == 0 else _BAD_COUNT
                if status != _OK:
                    err_line = line_no
                    err_start = pos
                    err_end = eol
                    break
            if eol >= n:
                break
            pos = eol + 1
    free(t.slots)
    if status == _NO_MEMORY:
        raise MemoryError("cannot grow the analogy tokenizer's word table")
    if status != _OK:
        return {
            "status": status,
            "line": err_line,
            "n_tokens": ntok,
            "line_start": err_start,
            "line_end": err_end,
        }

    # The distinct words as one newline-terminated blob: Python decodes and splits it in two
    # calls instead of slicing a thousand small bytes objects.
    cdef int64_t total = 0
    for k in range(t.n):
        total += lengths[k] + 1
    words = PyBytes_FromStringAndSize(NULL, total)
    cdef char* out = PyBytes_AS_STRING(words)
    cdef int64_t o = 0
    for k in range(t.n):
        memcpy(out + o, buf + starts[k], lengths[k])
        o += lengths[k]
        out[o] = 10
        o += 1
    return {
        "status": _OK,
        "ids": ids_arr[:nq],
        "words": words,
        "n_words": t.n,
        "header_start": hs_arr[:nsec],
        "header_end": he_arr[:nsec],
        "header_line": hl_arr[:nsec],
        "first_question": hq_arr[:nsec],
    }
