"""Drivers of the per-row uint8 quantization kernels (OpenMP over rows, GIL released).

The Python front end (embq/_quantize.py) validates every argument and builds the clear error
messages; the drivers here repeat the cheap shape and index checks so that no call, however
made, can read or write out of bounds.  The row kernels live in _quant.h (portable C, AVX2 on
x86-64, NEON on AArch64): the ``quantize`` kernel family, whose variant is chosen at import and
forced with ``EMBQ_KERNELS`` or ``embq._config.set_kernels`` (see embq/_config.py), which is
how the tests check that every variant gives identical results.  :func:`recon_block`, the
reconstruction error, dequantizes with the same one definition (``embq_dequant_value``).
"""

import numpy as np

from cython.parallel cimport parallel, prange
from libc.math cimport fabs, sqrt
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport free, malloc

from embq._kernels_common cimport EMBQ_V_COUNT, embq_variant_runs

from embq._config import _init_kernels
from embq._kernels_common import VARIANTS

# Row kernels of the selected variant (see _use_kernel).
cdef quant_row_fn _quant_row = NULL
cdef dequant_row_fn _dequant_row = NULL
cdef sumsq_row_fn _sumsq_row = NULL
_selected = None

# Below this many elements the threads cost more than they save.
cdef Py_ssize_t _MIN_PARALLEL_ELEMENTS = 1 << 16

# Status codes of a block of rows, besides a bad row's index (>= 0).
cdef int64_t _BLOCK_OK = -1
cdef int64_t _BLOCK_NO_MEMORY = -2


def kernel_variants():
    """Return ``{"quantize": {variant: runs_on_this_cpu}}`` for the variants this build has."""
    cdef int v
    return {"quantize": {VARIANTS[v]: bool(embq_variant_runs(v)) for v in range(EMBQ_V_COUNT)
                         if embq_quant_get(v).quant != NULL}}


def selected_kernels():
    """Return the variant the quantize family runs (quantize, dequantize, row norms)."""
    return {"quantize": _selected}


def _use_kernel(family, name):
    """Run variant ``name`` of the quantize family (embq._config validates the request)."""
    global _quant_row, _dequant_row, _sumsq_row, _selected
    if family != "quantize" or not kernel_variants()["quantize"].get(name, False):
        raise ValueError(f"the quantize family has no variant {name!r} this CPU can run")
    cdef embq_quant_kernels k = embq_quant_get(VARIANTS.index(name))
    _quant_row = k.quant
    _dequant_row = k.dequant
    _sumsq_row = k.sumsq
    _selected = name


cdef dequant_row_fn selected_dequant_row() noexcept nogil:
    return _dequant_row


cdef quant_row_fn selected_quant_row() noexcept nogil:
    return _quant_row


_init_kernels(kernel_variants(), _use_kernel)


cdef inline int _threads_for(Py_ssize_t n, Py_ssize_t d, int n_threads) noexcept nogil:
    if n * d < _MIN_PARALLEL_ELEMENTS or n < 2:
        return 1
    return n_threads if n_threads < n else <int>n


cdef int64_t _quant_block(const char *base, Py_ssize_t s0, Py_ssize_t s1, int mode,
                          Py_ssize_t r0, Py_ssize_t nr, Py_ssize_t d, float *buf,
                          uint8_t *codes, float *scales, quant_row_fn kernel) noexcept nogil:
    """Quantize rows [r0, r0 + nr); return the first bad row, or _BLOCK_OK."""
    cdef Py_ssize_t r
    cdef const float *row
    if mode != 0 and buf == NULL:
        return _BLOCK_NO_MEMORY
    if mode == 2 or mode == 3:
        embq_gather_rows(base, s0, s1, mode == 3, r0, nr, d, buf)
    for r in range(r0, r0 + nr):
        if mode == 0:
            row = <const float *>(base + r * s0)
        elif mode == 1:
            embq_f64_row_to_f32(<const double *>(base + r * s0), d, buf)
            row = buf
        else:
            row = buf + (r - r0) * d
        if kernel(row, d, codes + r * d, scales + r) != 0:
            return r
    return _BLOCK_OK


def quantize_into(x, uint8_t[:, ::1] codes, float[::1] scales, int n_threads):
    """Quantize the float32 or float64 matrix ``x`` (any strides) into ``codes`` and ``scales``.

    Returns the index of the first row holding a NaN or an infinity (after conversion to
    float32), or -1 when every row is finite; -2 when a scratch buffer could not be allocated.
    """
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1]
    if codes.shape[0] != n or codes.shape[1] != d or scales.shape[0] != n:
        raise ValueError(
            f"codes {tuple(codes.shape)[:2]} and scales ({scales.shape[0]},) do not fit a "
            f"matrix of shape ({n}, {d})"
        )
    if n == 0 or d == 0:
        return -1
    cdef const float[:, :] x32
    cdef const double[:, :] x64
    cdef const char *base
    cdef Py_ssize_t s0, s1
    cdef int is_f64 = x.dtype == np.float64
    if is_f64:
        x64 = x
        base = <const char *>&x64[0, 0]
        s0 = x64.strides[0]
        s1 = x64.strides[1]
    else:
        x32 = x
        base = <const char *>&x32[0, 0]
        s0 = x32.strides[0]
        s1 = x32.strides[1]
    # mode 0: float32 rows read in place; 1: float64 rows converted one at a time;
    # 2/3: float32/float64 blocks of rows gathered (any strides, e.g. column-major).
    cdef int mode
    cdef Py_ssize_t block_rows = 64
    cdef size_t buf_floats = 0
    if not is_f64 and s1 == 4:
        mode = 0
    elif is_f64 and s1 == 8:
        mode = 1
        buf_floats = d
    else:
        mode = 3 if is_f64 else 2
        block_rows = max(8, min(256, 65536 // d))
        buf_floats = block_rows * d
    cdef Py_ssize_t nblocks = (n + block_rows - 1) // block_rows
    status_arr = np.empty(nblocks, dtype=np.int64)
    cdef int64_t[::1] status = status_arr
    cdef int nt = _threads_for(n, d, n_threads)
    cdef quant_row_fn kernel = _quant_row
    cdef uint8_t *cp = &codes[0, 0]
    cdef float *sp = &scales[0]
    cdef float *buf = NULL
    cdef Py_ssize_t b, r0, nr
    with nogil, parallel(num_threads=nt):
        buf = NULL
        if buf_floats:
            buf = <float *>malloc(buf_floats * sizeof(float))
        for b in prange(nblocks, schedule="dynamic"):
            r0 = b * block_rows
            nr = min(block_rows, n - r0)
            status[b] = _quant_block(base, s0, s1, mode, r0, nr, d, buf, cp, sp, kernel)
        free(buf)
    for b in range(nblocks):
        if status[b] == _BLOCK_NO_MEMORY:
            return -2
    for b in range(nblocks):
        if status[b] >= 0:
            return status[b]
    return -1


def dequantize_into(const uint8_t[:, :] codes, rows, const float[::1] scales,
                    const uint8_t[::1] zero_points, float[:, ::1] out, int n_threads):
    """Fill ``out[i] = (codes[rows[i]] - zero_points[i]) * scales[i]`` (float32).

    ``codes`` must have unit element stride; ``rows`` is None (row i of codes) or a validated
    intp array; ``scales`` and ``zero_points`` are already gathered, one per output row.
    """
    cdef Py_ssize_t m = out.shape[0], d = out.shape[1], n = codes.shape[0]
    if codes.shape[1] != d or scales.shape[0] != m or zero_points.shape[0] != m:
        raise ValueError("dequantize_into: codes, scales, zero_points and out do not agree in shape")
    if rows is None and n < m:
        raise ValueError(f"dequantize_into: {m} output rows but codes has {n}")
    if m == 0 or d == 0:
        return
    if codes.strides[1] != 1:
        raise ValueError("dequantize_into: codes rows must be contiguous")
    cdef const Py_ssize_t[::1] rv
    cdef const Py_ssize_t *rp = NULL
    cdef Py_ssize_t k
    if rows is not None:
        rv = rows
        if rv.shape[0] != m:
            raise ValueError(f"dequantize_into: {rv.shape[0]} rows for {m} output rows")
        for k in range(m):
            if rv[k] < 0 or rv[k] >= n:
                raise IndexError(f"row index {rv[k]} is out of range for {n} rows")
        rp = &rv[0]
    cdef const char *base = <const char *>&codes[0, 0]
    cdef Py_ssize_t s0 = codes.strides[0]
    cdef dequant_row_fn kernel = _dequant_row
    cdef int nt = _threads_for(m, d, n_threads)
    cdef Py_ssize_t i, r
    cdef const float *sp = &scales[0]
    cdef const uint8_t *zp = &zero_points[0]
    cdef float *op = &out[0, 0]
    # The first row pointer came from codes[0, 0]; rows index from it with the row stride.
    with nogil:
        for i in prange(m, num_threads=nt, schedule="static", chunksize=64):
            r = rp[i] if rp != NULL else i
            kernel(<const uint8_t *>(base + r * s0), d, zp[i], sp[i], op + i * d)


def row_norms_into(const uint8_t[:, :] codes, const float[::1] scales,
                   const uint8_t[::1] zero_points, float[::1] out, int n_threads):
    """Fill ``out[i] = float32(float64(scales[i]) * sqrt(float64(sum_j (codes[i, j] - zp[i])**2)))``.

    ``codes`` must have unit element stride; the integer sum is exact (int64).
    """
    cdef Py_ssize_t n = codes.shape[0], d = codes.shape[1]
    if scales.shape[0] != n or zero_points.shape[0] != n or out.shape[0] != n:
        raise ValueError("row_norms_into: codes, scales, zero_points and out do not agree in length")
    if n == 0:
        return
    if d == 0:
        out[:] = 0
        return
    if codes.strides[1] != 1:
        raise ValueError("row_norms_into: codes rows must be contiguous")
    cdef const char *base = <const char *>&codes[0, 0]
    cdef Py_ssize_t s0 = codes.strides[0]
    cdef sumsq_row_fn kernel = _sumsq_row
    cdef int nt = _threads_for(n, d, n_threads)
    cdef Py_ssize_t i
    cdef int64_t ss
    with nogil:
        for i in prange(n, num_threads=nt, schedule="static", chunksize=256):
            ss = kernel(<const uint8_t *>(base + i * s0), d, zero_points[i])
            out[i] = <float>(<double>scales[i] * sqrt(<double>ss))


def recon_block(const float[:, ::1] x not None, const uint8_t[:, ::1] codes not None,
                const float[::1] scales not None, const uint8_t[::1] zero_points not None):
    """Reconstruction-error sums of one block (see ``embq._recon``), in double precision.

    ``x_hat`` is ``embq_dequant_value(code, zp, scale)``, the definition ``dequantize`` uses.
    The caller (``embq._recon.ReconstructionStats.update``) validates its arguments; the
    shapes are checked again here so that no call can read out of bounds.

    Returns
    -------
    tuple
        ``(elems, sum_abs_over_scale, max_abs_over_scale, rel_rows, sum_rel_l2, cos_rows,
        sum_cos)``.
    """
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1]
    cdef Py_ssize_t i, j
    cdef double s, e, xv, hv, diff, sab, mx, xx, hh, xh, dd
    cdef double sum_abs = 0.0, max_abs = 0.0, sum_rel = 0.0, sum_cos = 0.0
    cdef Py_ssize_t elems = 0, rel_rows = 0, cos_rows = 0
    cdef float sf
    cdef int zp
    if codes.shape[0] != n or codes.shape[1] != d:
        raise ValueError(f"codes shape {(codes.shape[0], codes.shape[1])} differs from x {(n, d)}")
    if scales.shape[0] != n or zero_points.shape[0] != n:
        raise ValueError(f"scales and zero_points must hold {n} entries")
    with nogil:
        for i in range(n):
            sf = scales[i]
            zp = zero_points[i]
            s = sf
            sab = 0.0
            mx = 0.0
            xx = 0.0
            hh = 0.0
            xh = 0.0
            dd = 0.0
            for j in range(d):
                xv = x[i, j]
                hv = embq_dequant_value(codes[i, j], zp, sf)
                diff = xv - hv
                e = fabs(diff)
                sab += e
                if e > mx:
                    mx = e
                xx += xv * xv
                hh += hv * hv
                xh += xv * hv
                dd += diff * diff
            if s > 0:
                elems += d
                sum_abs += sab / s
                if mx / s > max_abs:
                    max_abs = mx / s
            if xx > 0:
                rel_rows += 1
                sum_rel += sqrt(dd) / sqrt(xx)
                if hh > 0:
                    cos_rows += 1
                    sum_cos += xh / (sqrt(xx) * sqrt(hh))
    return elems, sum_abs, max_abs, rel_rows, sum_rel, cos_rows, sum_cos
