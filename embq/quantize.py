"""Per-row symmetric uint8 quantization (first version: plain numpy; kernels replace the loops)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

ZERO_POINT = 128


class QuantizedRows(NamedTuple):
    codes: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray


def quantize_reference(matrix) -> QuantizedRows:
    """Plain-numpy definition of the quantization (see docs/quantization.md)."""
    x = np.asarray(matrix)
    if x.ndim != 2:
        raise ValueError(f"matrix must be 2-D (n, d), got shape {x.shape}")
    x = x.astype(np.float32, copy=False)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        raise ValueError(f"row {int(np.argmin(finite))} contains NaN or Inf")
    m = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(x.shape[0], np.float32)
    scales = (m / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        inv = np.where(scales > 0, np.float32(1) / scales, np.float32(0)).astype(np.float32)
        q = np.rint(x * inv[:, None])
    codes = np.clip(q + ZERO_POINT, 1, 255).astype(np.uint8)
    return QuantizedRows(codes, scales, np.full(x.shape[0], ZERO_POINT, np.uint8))


def quantize(matrix, *, n_threads=None) -> QuantizedRows:
    return quantize_reference(matrix)


def dequantize(codes, scales, zero_points=None, rows=None, *, out=None, n_threads=None) -> np.ndarray:
    codes = np.asarray(codes)
    scales = np.asarray(scales, dtype=np.float32)
    zp = (np.full(codes.shape[0], ZERO_POINT, np.uint8) if zero_points is None
          else np.asarray(zero_points))
    if rows is not None:
        rows = np.asarray(rows, dtype=np.intp)
        codes, scales, zp = codes[rows], scales[rows], zp[rows]
    res = ((codes.astype(np.int16) - zp[:, None].astype(np.int16)).astype(np.float32)
           * scales[:, None])
    if out is not None:
        out[...] = res
        return out
    return res


def row_norms(codes, scales, zero_points=None, *, n_threads=None) -> np.ndarray:
    codes = np.asarray(codes)
    zp = (np.full(codes.shape[0], ZERO_POINT, np.uint8) if zero_points is None
          else np.asarray(zero_points))
    c = codes.astype(np.int64) - zp[:, None].astype(np.int64)
    ss = (c * c).sum(axis=1).astype(np.float64)
    return (np.asarray(scales, np.float64) * np.sqrt(ss)).astype(np.float32)
