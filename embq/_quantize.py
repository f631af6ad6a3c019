"""Per-row symmetric uint8 quantization of float matrices, and its inverse.

Every row ``x`` (converted to float32) becomes ``codes = 128 + q`` with ``q`` in [-127, 127],
``scale = max|x| / 127`` and zero point 128; ``x`` comes back as ``(codes - 128) * scale``
within ``scale / 2`` per element.  The exact definition, including all-zero rows and rows so
small that ``1 / scale`` would overflow, is in docs/quantization.md and in
:func:`quantize_reference`, which the compiled kernels match bit for bit.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from embq._utils import effective_n_threads

if TYPE_CHECKING:
    from embq._typing import ArrayLike

ZERO_POINT = 128
_F32_MAX = float(np.finfo(np.float32).max)
_F32_TINY = np.float32(np.finfo(np.float32).tiny)  # smallest normal float32, 2**-126

__all__ = [
    "ZERO_POINT", "QuantizedRows", "dequantize", "quantize", "quantize_reference", "row_norms",
]


class QuantizedRows(NamedTuple):
    """Result of :func:`quantize`.

    Attributes
    ----------
    codes : numpy.ndarray
        uint8, shape ``(n, d)``, C-contiguous.
    scales : numpy.ndarray
        float32, shape ``(n,)``.
    zero_points : numpy.ndarray
        uint8, shape ``(n,)``, always 128.
    """

    codes: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray


# --------------------------------------------------------------------------------------------
# Input checks shared by the kernel front end and the reference


def _as_float_matrix(matrix: Any) -> np.ndarray:
    """Return ``matrix`` as a 2-D float32 or float64 ndarray without copying when possible."""
    x = matrix if isinstance(matrix, np.ndarray) else np.asarray(matrix)
    if x.ndim != 2:
        raise ValueError(f"matrix must be 2-D (n_rows, dim), got an array of shape {x.shape}")
    if x.dtype.kind != "f":
        raise TypeError(
            f"matrix must hold float32 or float64 values, got dtype {x.dtype}; "
            "convert it with .astype(np.float32)"
        )
    if x.dtype == np.float16 or not x.dtype.isnative:
        x = x.astype(np.float32)  # exact for float16; byte-swapped input gets native order
    elif x.dtype not in (np.float32, np.float64):
        raise TypeError(f"matrix must hold float32 or float64 values, got dtype {x.dtype}")
    if x.shape[1] == 0:
        raise ValueError(
            f"matrix has shape {x.shape}: rows of dimension 0 cannot be quantized "
            "(dim must be >= 1)"
        )
    return x


def _bad_row_error(x: np.ndarray, row: int) -> ValueError:
    """Build the error for the first row that is not finite once converted to float32."""
    values = np.asarray(x[row])
    if np.isfinite(values).all():
        # Finite float64 values that overflow float32.
        with np.errstate(over="ignore"):
            col = int(np.flatnonzero(~np.isfinite(values.astype(np.float32)))[0])
        return ValueError(
            f"row {row}, column {col}: value {float(values[col])!r} is outside the float32 range "
            f"(|x| <= {_F32_MAX!r}); rows are converted to float32 before quantizing"
        )
    col = int(np.flatnonzero(~np.isfinite(values))[0])
    return ValueError(
        f"row {row} contains {float(values[col])} at column {col}; "
        "every value must be finite (this is the first such row)"
    )


# --------------------------------------------------------------------------------------------
# The definition


def quantize_reference(matrix: ArrayLike) -> QuantizedRows:
    """Quantize ``matrix`` with plain numpy; the definition the kernels match bit for bit.

    Per row, with ``x`` converted to float32 and all arithmetic in float32::

        m     = max |x|
        scale = m / 127                        (rounded to nearest)
        if scale >= 2**-126 (normal):          q = rint(x * (1 / scale))
        if 0 < scale < 2**-126 (subnormal):    scale = smallest float32 >= m / 127
                                               q = rint(x / scale)
        if float32(127 * scale) overflows:     scale = next float32 below, then as normal
        if m == 0:                             scale = 0, q = 0
        codes = 128 + clip(q, -127, 127)

    ``rint`` rounds half to even.  Slow (several temporaries per element): use
    :func:`quantize`.

    Parameters
    ----------
    matrix : array_like, shape (n, d)
        float32 or float64 values, d >= 1.

    Returns
    -------
    QuantizedRows
        ``codes`` uint8 (n, d), ``scales`` float32 (n,), ``zero_points`` uint8 (n,) = 128.

    Raises
    ------
    ValueError
        If a row holds NaN or Inf, or a float64 value beyond the float32 range (the message
        names the first such row), or if the matrix is not 2-D or has d = 0.
    TypeError
        If the values are not floating point.
    """
    x = _as_float_matrix(matrix)
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)
    finite = np.isfinite(x32).all(axis=1)
    if not finite.all():
        raise _bad_row_error(x, int(np.argmin(finite)))
    n = x32.shape[0]
    m = np.abs(x32).max(axis=1) if n else np.zeros(0, np.float32)
    scales = (m / np.float32(127)).astype(np.float32)
    tiny = (scales < _F32_TINY) & (m > 0)
    # Round the subnormal scales up, so that |x| / scale <= 127 and no code is clipped.
    up = tiny & (scales.astype(np.float64) * 127.0 < m.astype(np.float64))
    scales[up] = np.nextafter(scales[up], np.float32(np.inf))
    # Round the scales of rows near FLT_MAX down when 127 * scale would overflow, so that
    # dequantized values stay finite.
    with np.errstate(over="ignore"):
        huge = np.isinf(scales * np.float32(127))
    scales[huge] = np.nextafter(scales[huge], np.float32(0))
    normal = scales >= _F32_TINY
    inv = np.zeros(n, np.float32)
    inv[normal] = np.float32(1) / scales[normal]
    q = np.rint(x32 * inv[:, None])
    if tiny.any():
        q[tiny] = np.rint(x32[tiny] / scales[tiny, None])
    codes = (np.clip(q, -127, 127) + np.float32(ZERO_POINT)).astype(np.uint8)
    return QuantizedRows(codes, scales, np.full(n, ZERO_POINT, np.uint8))


# --------------------------------------------------------------------------------------------
# Kernel front ends


def quantize(matrix: ArrayLike, *, n_threads: int | None = None) -> QuantizedRows:
    """Quantize each row of ``matrix`` to uint8 with its own scale.

    The result equals :func:`quantize_reference` bit for bit.  Rows are processed in
    parallel with the GIL released; any memory layout (C or Fortran order, strided views,
    read-only memory maps) is read without a full copy.

    Parameters
    ----------
    matrix : array_like, shape (n, d)
        float32 or float64 values (float64 is rounded to float32 first), d >= 1; n may be 0.
    n_threads : int, optional
        Threads to use; None for all cores, negative to count back from all.

    Returns
    -------
    QuantizedRows
        ``codes`` uint8 (n, d), ``scales`` float32 (n,), ``zero_points`` uint8 (n,) = 128.

    Raises
    ------
    ValueError
        If a row holds NaN or Inf, or a float64 value beyond the float32 range (the message
        names the first such row and its column), or if the matrix is not 2-D or has d = 0.
    TypeError
        If the values are not floating point.

    Examples
    --------
    >>> import numpy as np, embq
    >>> q = embq.quantize(np.array([[0.5, -1.0, 0.25]], dtype=np.float32))
    >>> q.codes
    array([[192,   1, 160]], dtype=uint8)
    >>> embq.dequantize(*q)
    array([[ 0.5 , -1.  ,  0.25]], dtype=float32)
    """
    from embq import _kernels_quant

    nt = effective_n_threads(n_threads)
    x = _as_float_matrix(matrix)
    n, d = x.shape
    codes = np.empty((n, d), np.uint8)
    scales = np.empty(n, np.float32)
    status = _kernels_quant.quantize_into(x, codes, scales, nt)
    if status == -2:
        raise MemoryError("could not allocate the per-thread row buffers for quantize")
    if status >= 0:
        raise _bad_row_error(x, int(status))
    return QuantizedRows(codes, scales, np.full(n, ZERO_POINT, np.uint8))


def _check_codes(codes: Any) -> np.ndarray:
    c = codes if isinstance(codes, np.ndarray) else np.asarray(codes)
    if c.dtype != np.uint8:
        raise TypeError(f"codes must be a uint8 array, got dtype {c.dtype}")
    if c.ndim != 2:
        raise ValueError(f"codes must be 2-D (n_rows, dim), got shape {c.shape}")
    return c


def _check_per_row(values: Any, name: str, dtype: type, n: int) -> np.ndarray:
    v = values if isinstance(values, np.ndarray) else np.asarray(values)
    if v.dtype != dtype:
        raise TypeError(f"{name} must be a {np.dtype(dtype).name} array, got dtype {v.dtype}")
    if v.shape != (n,):
        raise ValueError(
            f"{name} must have shape ({n},) to match codes with {n} rows, got {v.shape}")
    return v


def _normalize_rows(rows: Any, n: int) -> tuple[np.ndarray, bool]:
    """Return ``rows`` as a contiguous intp array in [0, n) and whether it was a scalar."""
    if isinstance(rows, slice):
        return np.arange(*rows.indices(n), dtype=np.intp), False
    scalar = False
    if isinstance(rows, (int, np.integer)) and not isinstance(rows, (bool, np.bool_)):
        rows = [operator.index(rows)]
        scalar = True
    r = np.asarray(rows)
    if r.size == 0 and r.dtype.kind not in "iu":
        r = r.astype(np.intp)  # [] arrives as float64
    if r.dtype.kind not in "iu":
        raise TypeError(
            f"rows must be integer row indices, got dtype {r.dtype}"
            + ("; for a boolean mask use np.flatnonzero(mask)" if r.dtype.kind == "b" else "")
        )
    if r.ndim != 1:
        raise ValueError(f"rows must be 1-D, got shape {r.shape}")
    if r.size:
        lo, hi = r.min(), r.max()
        if lo < -n or hi >= n:
            bad = lo if lo < -n else hi
            raise IndexError(f"row index {int(bad)} is out of range for {n} rows")
    r = r.astype(np.intp, copy=True)
    r[r < 0] += n
    return r, scalar


def dequantize(
    codes: ArrayLike,
    scales: ArrayLike,
    zero_points: ArrayLike | None = None,
    rows: Sequence[int] | np.ndarray | int | slice | None = None,
    *,
    out: np.ndarray | None = None,
    n_threads: int | None = None,
) -> np.ndarray:
    """Return ``(codes - zero_points) * scales`` as float32, for all rows or only some.

    Parameters
    ----------
    codes : numpy.ndarray, shape (n, d)
        uint8 codes; a read-only :class:`numpy.memmap` is fine, and with ``rows`` only the
        requested rows are read.
    scales : numpy.ndarray, shape (n,)
        float32 per-row scales.
    zero_points : numpy.ndarray, shape (n,), optional
        uint8 per-row zero points; 128 for every row when omitted.
    rows : int, slice or sequence of int, optional
        Rows to return, in this order; repeats and negative indices allowed.  An int gives a
        1-D result, like ``codes[i]``.
    out : numpy.ndarray, optional
        C-contiguous writeable float32 array of the result's shape to fill and return.
    n_threads : int, optional
        Threads to use; None for all cores.

    Returns
    -------
    numpy.ndarray
        float32, shape ``(len(rows), d)`` (or ``(n, d)``, or ``(d,)`` for an int ``rows``).

    Raises
    ------
    IndexError
        If a row index is out of range (the message names it and the row count).
    TypeError, ValueError
        If an argument has the wrong dtype or shape.
    """
    from embq import _kernels_quant

    nt = effective_n_threads(n_threads)
    c = _check_codes(codes)
    n, d = c.shape
    s = _check_per_row(scales, "scales", np.float32, n)
    z = None if zero_points is None else _check_per_row(zero_points, "zero_points", np.uint8, n)
    scalar = False
    if rows is None:
        idx = None
        m = n
        s_rows = np.ascontiguousarray(s)
        z_rows = np.full(n, ZERO_POINT, np.uint8) if z is None else np.ascontiguousarray(z)
    else:
        idx, scalar = _normalize_rows(rows, n)
        m = idx.shape[0]
        s_rows = np.ascontiguousarray(s[idx])
        z_rows = np.full(m, ZERO_POINT, np.uint8) if z is None else np.ascontiguousarray(z[idx])
    shape = (d,) if scalar else (m, d)
    if out is None:
        result = np.empty((m, d), np.float32)
    else:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a numpy array, got {type(out).__name__}")
        if out.dtype != np.float32:
            raise TypeError(f"out must have dtype float32, got {out.dtype}")
        if out.shape != shape:
            raise ValueError(f"out must have shape {shape}, got {out.shape}")
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError("out must be a C-contiguous, writeable array")
        result = out.reshape(m, d)
    if m == 0 or d == 0:
        return result.reshape(shape) if out is None else out
    if c.strides[1] != 1:
        # Odd layouts (e.g. column-major codes): gather the needed rows once, then run the
        # kernel on that contiguous copy.
        c = np.ascontiguousarray(c if idx is None else c[idx])
        idx = None
    _kernels_quant.dequantize_into(c, idx, s_rows, z_rows, result, nt)
    return result.reshape(shape) if out is None else out


def row_norms(codes: ArrayLike, scales: ArrayLike, zero_points: ArrayLike | None = None, *,
              n_threads: int | None = None) -> np.ndarray:
    """Return the L2 norm of every dequantized row, as float32.

    Defined exactly (so that every reader of a store gets the same bits) as
    ``float32(float64(scale_i) * sqrt(float64(sum_j (code_ij - zp_i)**2)))`` with the sum
    computed exactly in integers.

    Parameters
    ----------
    codes : numpy.ndarray, shape (n, d)
        uint8 codes.
    scales : numpy.ndarray, shape (n,)
        float32 per-row scales.
    zero_points : numpy.ndarray, shape (n,), optional
        uint8 per-row zero points; 128 for every row when omitted.
    n_threads : int, optional
        Threads to use; None for all cores.

    Returns
    -------
    numpy.ndarray
        float32, shape ``(n,)``.
    """
    from embq import _kernels_quant

    nt = effective_n_threads(n_threads)
    c = _check_codes(codes)
    n = c.shape[0]
    s = np.ascontiguousarray(_check_per_row(scales, "scales", np.float32, n))
    if zero_points is None:
        z = np.full(n, ZERO_POINT, np.uint8)
    else:
        z = np.ascontiguousarray(_check_per_row(zero_points, "zero_points", np.uint8, n))
    if c.shape[1] and c.strides[1] != 1:
        c = np.ascontiguousarray(c)
    out = np.empty(n, np.float32)
    _kernels_quant.row_norms_into(c, s, z, out, nt)
    return out
