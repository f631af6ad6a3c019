"""Kernels behind the embq store: key hashing, the on-disk key hash table, row gathers.

The hash table format is specified in docs/format.md.  In short: the key is hashed as its UTF-8
bytes with 64-bit FNV-1a followed by the MurmurHash3 64-bit finalizer; the table is an int64
array of power-of-two length holding row numbers (-1 = empty); a key starts at slot
``h & (size - 1)`` and probes linearly (``slot + 1`` modulo size) until it finds a row whose
key bytes are equal (hit) or an empty slot (miss).

Everything here trusts nothing on disk: row numbers and key offsets read from the file are
checked against the array bounds before they are used, and a corrupt table is reported as such
instead of being followed out of bounds.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_Check
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.string cimport memcmp, memcpy
from cython.parallel cimport prange

import numpy as np

cimport numpy as cnp

from embq._kernels_quant cimport dequant_row_fn, selected_dequant_row

from embq._config import _init_kernels, _portable_only

cnp.import_array()

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t* size) except NULL

cdef inline const char* _key_utf8(object key, Py_ssize_t* n) except? NULL:
    """UTF-8 bytes of a str key (subclasses such as numpy.str_ included), or NULL, with no
    error set, for a str that has no UTF-8 form (lone surrogates): no store holds such a
    key, so lookups treat it as absent.  A non-str raises TypeError."""
    if not PyUnicode_Check(key):
        raise TypeError(f"keys must be str, got {type(key).__name__} {key!r}")
    try:
        return PyUnicode_AsUTF8AndSize(key, n)
    except UnicodeEncodeError:
        return NULL


# Row-number sentinels returned by the probing loop.
cdef enum:
    _MISSING = -1
    _CORRUPT = -2
    # keys per stage of a batched lookup: a stage's reads were asked for a whole block ago,
    # and a block of 64 cheap steps was shorter than one read from memory
    _BLOCK = 256
    # str objects prefetched ahead of the one read: random keys of a large vocabulary sit
    # anywhere in the heap, and reading each one's header waited on memory in turn
    _OBJ_AHEAD = 16
    _AHEAD = 4    # rows prefetched ahead by a gather

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define EMBQ_STORE_PREFETCH(p) __builtin_prefetch((const void *)(p))
    #else
    #define EMBQ_STORE_PREFETCH(p) ((void)0)
    #endif
    """
    void _prefetch "EMBQ_STORE_PREFETCH"(const void* p) noexcept nogil

cdef extern from "Python.h":
    # the list's item as a plain pointer (no reference taken), to prefetch the object
    const void* _list_item "PyList_GET_ITEM"(object lst, Py_ssize_t i)

HASH_FUNCTION = "fnv1a64+fmix64"
PROBING = "linear"


# The store kernel family (key lookups) has one variant (see embq._config); row reads use the
# dequantize kernel of the quantize family.
kernel_variants, selected_kernels, _use_kernel = _portable_only("store")
_init_kernels(kernel_variants(), _use_kernel)


# Keys hashed so far by this process (every path goes through _hash_bytes): lets tests check
# that a lookup hashes each key once (see hashes_computed).  A plain counter: increments from
# threads running at once may be lost, which only matters to a test that runs none.
cdef uint64_t _hash_count = 0


def hashes_computed():
    """How many keys this process has hashed so far (a test hook; see hash_keys)."""
    return _hash_count


cdef inline uint64_t _hash_bytes(const uint8_t* s, Py_ssize_t n) noexcept nogil:
    # FNV-1a is simple to re-implement anywhere; its low bits are weak for short keys, so the
    # MurmurHash3 finalizer mixes the high bits down before the table takes ``h & mask``.
    global _hash_count
    cdef uint64_t h = 0xcbf29ce484222325ULL
    cdef Py_ssize_t i
    _hash_count += 1
    for i in range(n):
        h ^= s[i]
        h *= 0x100000001b3ULL
    h ^= h >> 33
    h *= 0xff51afd7ed558ccdULL
    h ^= h >> 33
    h *= 0xc4ceb9fe1a85ec53ULL
    h ^= h >> 33
    return h


def hash_key(key):
    """Hash one key (str, or its UTF-8 bytes) the way the store's hash table does.

    Parameters
    ----------
    key : str or bytes
        The key; a str is encoded as UTF-8.

    Returns
    -------
    int
        The unsigned 64-bit hash.
    """
    cdef Py_ssize_t n
    cdef const char* s
    if isinstance(key, str):
        s = PyUnicode_AsUTF8AndSize(key, &n)
    elif isinstance(key, bytes):
        s = PyBytes_AS_STRING(key)
        n = PyBytes_GET_SIZE(key)
    else:
        raise TypeError(f"key must be str or bytes, got {type(key).__name__}")
    return _hash_bytes(<const uint8_t*>s, n)


def hash_keys(keys):
    """Hash a list of str keys the way the store's hash table does, once each.

    For a lookup of the same keys in several stores (the shards of a sharded store): pass the
    result to each store index's ``find_many(keys, hashes)``.

    Parameters
    ----------
    keys : sequence of str

    Returns
    -------
    numpy.ndarray of uint64, shape (len(keys),)
        The hashes; 0 for a str that has no UTF-8 form (lone surrogates), which no store
        holds and every lookup reports absent whatever its hash.

    Raises
    ------
    TypeError
        An item is not a str (the message names its position).
    """
    # A tuple: the list could change while the GIL is released, and the tuple keeps every
    # key (and so its UTF-8 buffer) alive until the loop is done.
    cdef tuple ks = tuple(keys)
    cdef Py_ssize_t m = len(ks)
    cdef Py_ssize_t i
    cdef cnp.npy_intp mm = m
    cdef cnp.ndarray out = cnp.PyArray_ZEROS(1, &mm, cnp.NPY_UINT64, 0)
    cdef uint64_t* o = <uint64_t*>cnp.PyArray_DATA(out)
    cdef cnp.ndarray ptr_arr = np.zeros(m, np.uintp)
    cdef cnp.ndarray len_arr = np.zeros(m, np.intp)
    cdef size_t* ptrs = <size_t*>cnp.PyArray_DATA(ptr_arr)
    cdef Py_ssize_t* lens = <Py_ssize_t*>cnp.PyArray_DATA(len_arr)
    cdef const char* s
    for i in range(m):
        if not PyUnicode_Check(ks[i]):
            k = ks[i]
            raise TypeError(f"keys must be str; item {i} is {type(k).__name__} {k!r}")
        s = _key_utf8(ks[i], &lens[i])
        ptrs[i] = <size_t>s
    with nogil:
        for i in range(m):
            if ptrs[i] != 0:
                o[i] = _hash_bytes(<const uint8_t*>ptrs[i], lens[i])
    return out


cdef inline void _prefetch_row(const uint8_t* c, int64_t d) noexcept nogil:
    cdef int64_t j
    for j in range(0, d, 64):
        _prefetch(c + j)


cdef inline int64_t _probe(const int64_t* table, uint64_t mask, int64_t n_rows,
                           const int64_t* offsets, const uint8_t* blob, int64_t blob_len,
                           const uint8_t* s, Py_ssize_t n, uint64_t h) noexcept nogil:
    """Row holding key ``s[:n]``, _MISSING, or _CORRUPT when the table points out of bounds."""
    cdef uint64_t slot = h & mask
    cdef uint64_t probes
    cdef int64_t r, a, b
    for probes in range(mask + 1):
        r = table[slot]
        if r < 0:
            return _MISSING if r == -1 else _CORRUPT
        if r >= n_rows:
            return _CORRUPT
        a = offsets[r]
        b = offsets[r + 1]
        if a < 0 or b < a or b > blob_len:
            return _CORRUPT
        if b - a == n and memcmp(blob + a, s, n) == 0:
            return r
        slot = (slot + 1) & mask
    # A valid table always has an empty slot, so a full cycle means a damaged file.
    return _CORRUPT


cdef inline int _check_probe(const int64_t* table, uint64_t mask, int64_t n_rows,
                             const int64_t* offsets, const uint8_t* blob, int64_t blob_len,
                             uint64_t start, uint8_t* verified, int64_t max_key,
                             int64_t* bad) noexcept nogil:
    """Check the probe sequence from slot ``start`` up to its empty slot (a miss just ended
    there): every row met must sit in an unbroken run of occupied slots from its home slot.

    0: consistent.  1: not; ``bad`` = (slot, row, home slot, the empty slot between).
    2: the table points out of bounds.  ``verified`` has one bit per slot, set once the slot is
    found consistent: that is a property of the read-only table, so later misses over the same
    slots only read bits.  Keys longer than ``max_key`` bytes are not hashed (see
    Store._CHECK_MAX_KEY_BYTES); the check stops there, as if consistent.
    """
    cdef uint64_t s = start, t, home, probes
    cdef int64_t r, a, b
    for probes in range(mask + 1):
        r = table[s]
        if r == -1:
            return 0
        if not (verified[s >> 3] >> (s & 7)) & 1:
            if r < 0 or r >= n_rows:
                return 2
            a = offsets[r]
            b = offsets[r + 1]
            if a < 0 or b < a or b > blob_len:
                return 2
            if b - a > max_key:
                return 0
            home = _hash_bytes(blob + a, b - a) & mask
            if ((s - home) & mask) > ((s - start) & mask):
                # the row's home is before this probe's start: the slots between must be full
                t = home
                while t != start:
                    if table[t] == -1:
                        bad[0] = <int64_t>s
                        bad[1] = r
                        bad[2] = <int64_t>home
                        bad[3] = <int64_t>t
                        return 1
                    t = (t + 1) & mask
            verified[s >> 3] |= <uint8_t>(1 << (s & 7))
        s = (s + 1) & mask
    return 0  # a full cycle: the lookup has already reported the table as damaged


cdef class StoreIndex:
    """Read side: key lookups and dequantizing gathers over a store's memory-mapped arrays.

    Holds raw pointers into the arrays it is given and a reference to each array, so the
    mappings outlive every pointer.  Built once per open store by ``embq._store``, which has
    already checked shapes and dtypes.
    """

    cdef object _refs
    cdef const uint8_t* codes
    cdef const float* scales
    cdef const uint8_t* zps
    cdef const int64_t* offsets
    cdef const uint8_t* blob
    cdef const int64_t* table
    cdef int64_t n_rows
    cdef int64_t dim
    cdef int64_t blob_len
    cdef uint64_t mask
    cdef readonly bint has_keys
    cdef readonly object path
    cdef object _verified   # one bit per hash slot (check_miss), made on first use
    cdef uint8_t* _ver

    def __init__(self, codes, scales, zero_points, utf8=None, offsets=None, table=None,
                 path=None):
        cdef cnp.ndarray c = codes
        cdef cnp.ndarray sc = scales
        cdef cnp.ndarray zp = zero_points
        cdef cnp.ndarray o, u, t
        self.path = path
        if c.ndim != 2 or c.dtype != np.uint8 or not c.flags.c_contiguous:
            raise ValueError("codes must be a C-contiguous uint8 (n, d) array")
        self.n_rows = c.shape[0]
        self.dim = c.shape[1]
        if (sc.ndim != 1 or sc.dtype != np.float32 or not sc.flags.c_contiguous
                or sc.shape[0] != self.n_rows):
            raise ValueError(f"scales must be a C-contiguous float32 ({self.n_rows},) array")
        if (zp.ndim != 1 or zp.dtype != np.uint8 or not zp.flags.c_contiguous
                or zp.shape[0] != self.n_rows):
            raise ValueError(f"zero_points must be a C-contiguous uint8 ({self.n_rows},) array")
        self.codes = <const uint8_t*>cnp.PyArray_DATA(c)
        self.scales = <const float*>cnp.PyArray_DATA(sc)
        self.zps = <const uint8_t*>cnp.PyArray_DATA(zp)
        self.has_keys = table is not None
        self._refs = (codes, scales, zero_points, utf8, offsets, table)
        if self.has_keys:
            u = utf8
            o = offsets
            t = table
            if u.ndim != 1 or u.dtype != np.uint8 or not u.flags.c_contiguous:
                raise ValueError("key bytes must be a C-contiguous uint8 1-D array")
            if (o.ndim != 1 or o.dtype != np.int64 or not o.flags.c_contiguous
                    or o.shape[0] != self.n_rows + 1):
                raise ValueError(f"key offsets must be a C-contiguous int64 ({self.n_rows + 1},) array")
            if t.ndim != 1 or t.dtype != np.int64 or not t.flags.c_contiguous:
                raise ValueError("hash table must be a C-contiguous int64 1-D array")
            if t.shape[0] < 1 or (t.shape[0] & (t.shape[0] - 1)) != 0 or t.shape[0] <= self.n_rows:
                raise ValueError(
                    f"hash table length must be a power of two larger than the row count "
                    f"{self.n_rows}, got {t.shape[0]}")
            self.blob = <const uint8_t*>cnp.PyArray_DATA(u)
            self.blob_len = u.shape[0]
            self.offsets = <const int64_t*>cnp.PyArray_DATA(o)
            self.table = <const int64_t*>cnp.PyArray_DATA(t)
            self.mask = <uint64_t>(t.shape[0] - 1)

    cdef _corrupt(self):
        from embq._errors import StoreError
        return StoreError("the key hash table is damaged: it points outside the key arrays "
                          "or has no empty slot", path=self.path)

    cdef _missing(self, key):
        if not self.has_keys:
            return KeyError(f"Key '{key}' not present: this store has no keys (a matrix "
                            "without vocabulary); index it by row number")
        return KeyError(f"Key '{key}' not present")

    cdef int64_t _lookup(self, object key, uint64_t h, bint hashed) except? -3:
        # find and find_hashed: the row of a str key or -1; ``h`` is its hash when ``hashed``.
        cdef Py_ssize_t n
        cdef const char* s
        cdef int64_t r
        s = _key_utf8(key, &n)
        if s == NULL or not self.has_keys:
            return -1
        if not hashed:
            h = _hash_bytes(<const uint8_t*>s, n)
        r = _probe(self.table, self.mask, self.n_rows, self.offsets, self.blob,
                   self.blob_len, <const uint8_t*>s, n, h)
        if r == _CORRUPT:
            raise self._corrupt()
        return r

    cpdef int64_t find(self, object key) except? -3:
        """Row of ``key`` (a str, subclasses included), or -1 when absent (also for a store
        without keys, and for a str that has no UTF-8 form, which no store can hold)."""
        return self._lookup(key, 0, False)

    def find_hashed(self, object key, uint64_t h):
        """:meth:`find` with the key's hash already computed (``hash_key(key)``), so a key
        looked up in several stores is hashed once."""
        return self._lookup(key, h, True)

    def check_miss(self, object key, key_hash=None, int64_t max_key_bytes=1 << 16):
        """Check the hash table along the probe of ``key``, which a lookup just found absent.

        ``key_hash``: its hash when the caller has it.  Returns None when the probe is
        consistent (so "absent" is right), else ``(slot, row, home, empty)``: ``slot`` holds
        ``row``, whose key hashes to slot ``home``, but slot ``empty`` between them is empty,
        so the table does not match the keys.  Only misses need this: a hit is proven by the
        key bytes themselves.
        """
        cdef Py_ssize_t n
        cdef const char* s
        cdef uint64_t h
        cdef int64_t bad[4]
        cdef int rc
        if not self.has_keys:
            return None
        if key_hash is None:
            s = _key_utf8(key, &n)
            if s == NULL:
                return None  # no UTF-8 form (lone surrogates): no store holds it
            h = _hash_bytes(<const uint8_t*>s, n)
        else:
            h = key_hash
        if self._ver == NULL:
            self._verified = np.zeros((self.mask + 1 + 7) // 8, np.uint8)
            self._ver = <uint8_t*>cnp.PyArray_DATA(self._verified)
        rc = _check_probe(self.table, self.mask, self.n_rows, self.offsets, self.blob,
                          self.blob_len, h & self.mask, self._ver, max_key_bytes, bad)
        if rc == 2:
            raise self._corrupt()
        if rc == 1:
            return (bad[0], bad[1], bad[2], bad[3])
        return None

    def key_vector(self, object key):
        """Dequantized float32 row of ``key`` (a str); ``KeyError`` when absent."""
        cdef Py_ssize_t n
        cdef const char* s = _key_utf8(key, &n)
        cdef int64_t r = -1
        cdef uint64_t h
        if s != NULL and self.has_keys:
            h = _hash_bytes(<const uint8_t*>s, n)
            r = self.table[h & self.mask]
            if 0 <= r < self.n_rows:
                # The first candidate is almost always the answer: fetch its row while the
                # key bytes are being checked, so the cache misses overlap.
                _prefetch(self.offsets + r)
                _prefetch(self.scales + r)
                _prefetch(self.zps + r)
                _prefetch_row(self.codes + r * self.dim, self.dim)
            r = _probe(self.table, self.mask, self.n_rows, self.offsets, self.blob,
                       self.blob_len, <const uint8_t*>s, n, h)
        if r < 0:
            if r == _CORRUPT:
                raise self._corrupt()
            raise self._missing(key)
        return self._row(r)

    cdef object _row(self, int64_t r):
        cdef cnp.npy_intp d = self.dim
        cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, &d, cnp.NPY_FLOAT32, 0)
        # The selected dequantize kernel of _quant.h: the arithmetic of embq.dequantize, bit
        # for bit.
        selected_dequant_row()(self.codes + r * self.dim, self.dim, self.zps[r], self.scales[r],
                               <float*>cnp.PyArray_DATA(out))
        return out

    def row_vector(self, int64_t r):
        """Dequantized float32 row ``r`` (0 <= r < n, checked)."""
        if r < 0 or r >= self.n_rows:
            raise IndexError(f"row {r} out of range for a store of {self.n_rows} rows")
        return self._row(r)

    def find_many(self, keys, hashes=None):
        """Rows of a list of str keys as int64 (-1 where absent).

        ``hashes``, the keys' :func:`hash_keys` (uint64, one per key), saves hashing them
        again when the same keys are looked up in several stores.

        Raises ``TypeError`` naming the position of the first item that is not a str, and
        ``ValueError`` for ``hashes`` of another length or dtype.
        """
        cdef list ks = keys if type(keys) is list else list(keys)
        cdef Py_ssize_t m = len(ks)
        cdef cnp.npy_intp mm = m
        cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, &mm, cnp.NPY_INT64, 0)
        cdef int64_t* o = <int64_t*>cnp.PyArray_DATA(out)
        cdef Py_ssize_t i, j, n, nb
        cdef object k
        cdef const char* ptrs[_BLOCK]
        cdef Py_ssize_t lens[_BLOCK]
        cdef uint64_t hbuf[_BLOCK]
        cdef bint unencodable[_BLOCK]
        cdef cnp.ndarray hh
        cdef const uint64_t* given = NULL
        if hashes is not None:
            if not (isinstance(hashes, np.ndarray) and hashes.dtype == np.uint64
                    and hashes.shape == (m,) and hashes.flags.c_contiguous):
                got = (f"{hashes.dtype} array of shape {hashes.shape}"
                       if isinstance(hashes, np.ndarray) else type(hashes).__name__)
                raise ValueError(f"hashes must be a contiguous uint64 array of {m} values "
                                 f"(hash_keys of the keys), got {got}")
            hh = hashes
            given = <const uint64_t*>cnp.PyArray_DATA(hh)
        for i in range(m):
            if i + _OBJ_AHEAD < m:
                _prefetch(_list_item(ks, i + _OBJ_AHEAD))
            if not PyUnicode_Check(ks[i]):
                k = ks[i]
                raise TypeError(f"keys must be str; item {i} is {type(k).__name__} {k!r}")
        if not self.has_keys:
            out.fill(-1)
            return out
        # Blocks of keys go through the table in stages (hash + first slot, first row's
        # offsets, its key bytes, full probe), prefetching each stage's memory for the whole
        # block first: the random reads of a block overlap instead of queueing one by one.
        for i in range(0, m, _BLOCK):
            nb = min(_BLOCK, m - i)
            for j in range(nb):
                if i + j + _OBJ_AHEAD < m:
                    _prefetch(_list_item(ks, i + j + _OBJ_AHEAD))
                ptrs[j] = _key_utf8(ks[i + j], &lens[j])
                unencodable[j] = ptrs[j] == NULL
                if unencodable[j]:
                    ptrs[j] = b""
                    lens[j] = 0
            if given == NULL:
                self._find_block(ptrs, lens, hbuf, nb, o + i, NULL)
            else:
                self._find_block(ptrs, lens, hbuf, nb, o + i, given + i)
            for j in range(nb):
                if unencodable[j]:
                    o[i + j] = _MISSING
                elif o[i + j] == _CORRUPT:
                    raise self._corrupt()
        return out

    cdef void _find_block(self, const char** ptrs, const Py_ssize_t* lens, uint64_t* hashes,
                          Py_ssize_t nb, int64_t* out, const uint64_t* given) noexcept nogil:
        cdef Py_ssize_t j
        cdef int64_t r
        cdef uint64_t h
        for j in range(nb):
            h = given[j] if given != NULL else _hash_bytes(<const uint8_t*>ptrs[j], lens[j])
            hashes[j] = h
            _prefetch(self.table + (h & self.mask))
        for j in range(nb):
            r = self.table[hashes[j] & self.mask]
            out[j] = r
            if 0 <= r < self.n_rows:
                _prefetch(self.offsets + r)
        for j in range(nb):
            r = out[j]
            if 0 <= r < self.n_rows and 0 <= self.offsets[r] < self.blob_len:
                _prefetch(self.blob + self.offsets[r])
        for j in range(nb):
            out[j] = _probe(self.table, self.mask, self.n_rows, self.offsets, self.blob,
                            self.blob_len, <const uint8_t*>ptrs[j], lens[j], hashes[j])

    def gather(self, int n_threads, rows):
        """Dequantize rows (int64, each already checked in [0, n)) into a new (m, d) float32.

        Rows are visited in increasing order so a cold memory map is read forward, and the
        results are written back in the caller's order.
        """
        cdef cnp.ndarray rr = np.ascontiguousarray(rows, dtype=np.int64)
        cdef Py_ssize_t m = rr.shape[0]
        cdef cnp.ndarray order
        cdef cnp.npy_intp shape[2]
        shape[0] = m
        shape[1] = self.dim
        cdef cnp.ndarray out = cnp.PyArray_EMPTY(2, shape, cnp.NPY_FLOAT32, 0)
        if m == 0 or self.dim == 0:
            return out
        cdef const int64_t* rp = <const int64_t*>cnp.PyArray_DATA(rr)
        cdef Py_ssize_t i
        for i in range(m):
            # The caller checks; this guard keeps a bad caller from reading out of bounds.
            if rp[i] < 0 or rp[i] >= self.n_rows:
                raise IndexError(f"row {rp[i]} out of range for a store of {self.n_rows} rows")
        if m > 1:
            # Any order of equal rows will do: each result slot is written exactly once.
            order = np.argsort(rr, kind="quicksort")
        else:
            order = np.zeros(1, np.intp)
        order = np.ascontiguousarray(order, dtype=np.int64)
        # Threads only pay off once there is real work (about a million values).
        if n_threads < 1 or m * self.dim < (1 << 20):
            n_threads = 1
        self._gather(rp, <const int64_t*>cnp.PyArray_DATA(order), m,
                     <float*>cnp.PyArray_DATA(out), n_threads)
        return out

    cdef void _gather(self, const int64_t* rows, const int64_t* order, Py_ssize_t m,
                      float* out, int n_threads) noexcept:
        cdef Py_ssize_t i
        cdef int64_t dst, r
        cdef int64_t d = self.dim
        cdef const uint8_t* codes = self.codes
        cdef const float* scales = self.scales
        cdef const uint8_t* zps = self.zps
        cdef dequant_row_fn dequant = selected_dequant_row()
        with nogil:
            for i in prange(m, num_threads=n_threads, schedule="static"):
                if i + _AHEAD < m:
                    _prefetch_row(codes + rows[order[i + _AHEAD]] * d, d)
                dst = order[i]
                r = rows[dst]
                dequant(codes + r * d, d, zps[r], scales[r], out + dst * d)


# Row numbers in the in-memory table are int32 (-1 = empty).
cdef int64_t _MAX_KEYS = 2147483647


cdef class KeyTableBuilder:
    """Write side: collects unique keys (UTF-8 blob, offsets, hash table).

    The table it grows is the on-disk table (row numbers, -1 = empty, power-of-two length,
    linear probing) held as int32 to halve its memory; the writer widens it to the on-disk
    int64 block by block.  Memory is the key bytes plus 8 bytes of offset and 8 to 16 of table
    per key (before capacity growth); hashes are recomputed from the key bytes when the table
    grows rather than kept per key.
    """

    cdef object _blob       # uint8, capacity >= nbytes
    cdef object _offsets    # int64, capacity >= n + 1
    cdef object _table      # int32, power-of-two length
    cdef readonly int64_t n
    cdef readonly int64_t nbytes
    cdef double max_load

    def __init__(self, double max_load=0.5):
        if not (0.0 < max_load < 1.0):
            raise ValueError(f"max_load must be in (0, 1), got {max_load}")
        self.max_load = max_load
        self.n = 0
        self.nbytes = 0
        self._blob = np.empty(1024, np.uint8)
        self._offsets = np.zeros(1024, np.int64)
        self._table = np.full(8, -1, np.int32)

    def _table_size_for(self, int64_t n):
        cdef int64_t size = 8
        while size * self.max_load < n or size <= n:
            size *= 2
        return size

    cdef _reserve(self, int64_t n_more, int64_t bytes_more):
        cdef int64_t need = self.n + n_more
        cdef int64_t cap
        cdef int64_t size
        if need >= _MAX_KEYS:
            raise ValueError(f"a store holds at most {_MAX_KEYS - 1:,} keys; this batch would "
                             f"bring it to {need:,}")
        if need + 1 > self._offsets.shape[0]:
            # Grow by half, not double: the copy is transient peak memory.
            cap = max(need + 1, self._offsets.shape[0] + self._offsets.shape[0] // 2)
            new = np.empty(cap, np.int64)
            new[: self.n + 1] = self._offsets[: self.n + 1]
            self._offsets = new
        if self.nbytes + bytes_more > self._blob.shape[0]:
            cap = max(self.nbytes + bytes_more, self._blob.shape[0] + self._blob.shape[0] // 2)
            newb = np.empty(cap, np.uint8)
            newb[: self.nbytes] = self._blob[: self.nbytes]
            self._blob = newb
        size = self._table_size_for(need)
        if size > self._table.shape[0]:
            self._rehash(size)

    cdef _rehash(self, int64_t size):
        cdef cnp.ndarray t = np.full(size, -1, np.int32)
        cdef int32_t* tp = <int32_t*>cnp.PyArray_DATA(t)
        cdef const int64_t* op = <const int64_t*>cnp.PyArray_DATA(self._offsets)
        cdef const uint8_t* bp = <const uint8_t*>cnp.PyArray_DATA(self._blob)
        cdef uint64_t mask = <uint64_t>(size - 1)
        cdef uint64_t slot
        cdef int64_t i
        with nogil:
            for i in range(self.n):
                slot = _hash_bytes(bp + op[i], op[i + 1] - op[i]) & mask
                while tp[slot] != -1:
                    slot = (slot + 1) & mask
                tp[slot] = <int32_t>i
        self._table = t

    def add(self, keys, bint skip_duplicates):
        """Add a batch of keys; return (kept mask, duplicate position, first row) .

        Every item must be a non-empty str encodable as UTF-8.  A key already present (earlier
        or in this batch) is a duplicate: with ``skip_duplicates`` its mask entry is False and
        it is not added; otherwise nothing of the batch is added and the result names the
        first duplicate as (None, position in batch, row already holding it).  On any error
        (bad item) the builder is left as before the batch.
        """
        cdef list ks = keys if type(keys) is list else list(keys)
        cdef Py_ssize_t m = len(ks)
        cdef Py_ssize_t i, n, total = 0
        cdef object k
        cdef const char* s
        # First pass: validate and size, so the second pass cannot fail half-way.
        for i in range(m):
            k = ks[i]
            if not PyUnicode_Check(k):
                raise TypeError(f"keys must be str; item {i} of the batch is "
                                f"{type(k).__name__} {k!r}")
            try:
                s = PyUnicode_AsUTF8AndSize(k, &n)
            except UnicodeEncodeError as exc:
                raise ValueError(f"key {k!r} (item {i} of the batch) cannot be encoded as "
                                 f"UTF-8: {exc.reason}") from None
            if n == 0:
                raise ValueError(f"key at item {i} of the batch is empty; keys must be "
                                 "non-empty strings")
            total += n
        self._reserve(m, total)

        cdef cnp.ndarray mask_arr = np.ones(m, np.bool_)
        cdef uint8_t* keep = <uint8_t*>cnp.PyArray_DATA(mask_arr)
        cdef cnp.ndarray placed = np.empty(m, np.int64)
        cdef int64_t* pl = <int64_t*>cnp.PyArray_DATA(placed)
        cdef int32_t* tp = <int32_t*>cnp.PyArray_DATA(self._table)
        cdef uint64_t tmask = <uint64_t>(self._table.shape[0] - 1)
        cdef int64_t* op = <int64_t*>cnp.PyArray_DATA(self._offsets)
        cdef uint8_t* bp = <uint8_t*>cnp.PyArray_DATA(self._blob)
        cdef int64_t n0 = self.n, b0 = self.nbytes
        cdef int64_t row, a, b
        cdef uint64_t h, slot
        cdef Py_ssize_t n_placed = 0
        for i in range(m):
            s = PyUnicode_AsUTF8AndSize(ks[i], &n)
            h = _hash_bytes(<const uint8_t*>s, n)
            slot = h & tmask
            while True:
                row = tp[slot]
                if row == -1:
                    break
                a = op[row]
                b = op[row + 1]
                if b - a == n and memcmp(bp + a, s, n) == 0:
                    break
                slot = (slot + 1) & tmask
            if row != -1:
                if skip_duplicates:
                    keep[i] = 0
                    continue
                # Undo this batch: removing the newest entries in reverse order restores the
                # linear-probing table exactly (no rehash happened, space was reserved).
                while n_placed > 0:
                    n_placed -= 1
                    tp[pl[n_placed]] = -1
                self.n = n0
                self.nbytes = b0
                return None, i, row
            row = self.n
            memcpy(bp + self.nbytes, s, n)
            self.nbytes += n
            op[row + 1] = self.nbytes
            tp[slot] = <int32_t>row
            pl[n_placed] = <int64_t>slot
            n_placed += 1
            self.n += 1
        return mask_arr, -1, -1

    def arrays(self):
        """(utf8 bytes, offsets (n+1,), int32 hash table) views of the collected keys."""
        return (self._blob[: self.nbytes], self._offsets[: self.n + 1], self._table)


def build_table(offsets, utf8, double max_load=0.5):
    """Build a hash table for keys given as a UTF-8 blob and offsets (used by tests/tools).

    Duplicates are not detected here; use ``KeyTableBuilder`` for that.
    """
    cdef cnp.ndarray o = np.ascontiguousarray(offsets, dtype=np.int64)
    cdef cnp.ndarray u = np.ascontiguousarray(utf8, dtype=np.uint8)
    cdef int64_t n = o.shape[0] - 1
    cdef KeyTableBuilder tmp = KeyTableBuilder(max_load)
    cdef int64_t size = tmp._table_size_for(n)
    cdef cnp.ndarray t = np.full(size, -1, np.int64)
    cdef int64_t* tp = <int64_t*>cnp.PyArray_DATA(t)
    cdef const int64_t* op = <const int64_t*>cnp.PyArray_DATA(o)
    cdef const uint8_t* up = <const uint8_t*>cnp.PyArray_DATA(u)
    cdef uint64_t mask = <uint64_t>(size - 1)
    cdef uint64_t slot
    cdef int64_t i
    if n < 0:
        raise ValueError("offsets must have at least one element")
    for i in range(n):
        if op[i] < 0 or op[i + 1] < op[i] or op[i + 1] > u.shape[0]:
            raise ValueError(f"offsets[{i}:{i + 2}] = {o[i:i + 2]!r} is outside the key bytes")
    with nogil:
        for i in range(n):
            slot = _hash_bytes(up + op[i], op[i + 1] - op[i]) & mask
            while tp[slot] != -1:
                slot = (slot + 1) & mask
            tp[slot] = i
    return t
