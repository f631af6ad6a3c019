"""Reconstruction error of per-row quantization, accumulated block by block.

Figures (all over the rows seen by :meth:`ReconstructionStats.update`):

* ``error_mean_abs_over_scale`` / ``error_max_abs_over_scale``: mean and max of
  ``|x - x_hat| / scale`` over every element of the rows with ``scale > 0`` (round-to-nearest
  quantization keeps this at most 0.5, plus float32 rounding);
* ``error_mean_rel_l2``: mean over rows with ``||x|| > 0`` of ``||x - x_hat|| / ||x||``;
* ``error_mean_cosine``: mean over rows with ``||x|| > 0`` and ``||x_hat|| > 0`` of the cosine
  between ``x`` and ``x_hat``.

``x_hat = (code - zero_point) * scale`` in float32, exactly what ``embq.dequantize`` returns.
Sums are kept in float64 (by ``embq._kernels_quant.recon_block``, no temporaries).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["ReconstructionStats"]


class ReconstructionStats:
    """Accumulate reconstruction-error figures over blocks of rows.

    Examples
    --------
    >>> stats = ReconstructionStats()
    >>> q = embq.quantize(x)
    >>> stats.update(x, q.codes, q.scales, q.zero_points)
    >>> stats.result()["error_max_abs_over_scale"] <= 0.5 + 1e-3
    True
    """

    def __init__(self) -> None:
        self.rows = 0
        self._elems = 0            # elements of rows with scale > 0
        self._sum_abs = 0.0
        self._max_abs = 0.0
        self._rel_rows = 0         # rows with ||x|| > 0
        self._sum_rel = 0.0
        self._cos_rows = 0
        self._sum_cos = 0.0

    def update(self, x: Any, codes: Any, scales: Any, zero_points: Any = None) -> None:
        """Add a block: original rows ``x`` and their quantization.

        Parameters
        ----------
        x : array_like, shape (b, d)
            The rows that were quantized (float32 or float64).
        codes : numpy.ndarray of uint8, shape (b, d)
        scales : array_like of float32, shape (b,)
        zero_points : array_like of uint8, shape (b,), optional
            128 for every row when omitted.
        """
        x = np.asarray(x)
        codes = np.asarray(codes)
        if x.dtype not in (np.float32, np.float64):
            raise TypeError(f"x must be a float32 or float64 array, got dtype {x.dtype}")
        if codes.dtype != np.uint8:
            raise TypeError(f"codes must be a uint8 array, got dtype {codes.dtype}")
        if x.ndim != 2 or codes.shape != x.shape:
            raise ValueError(f"x and codes must be 2-D of the same shape, got {x.shape} and "
                             f"{codes.shape}")
        b = x.shape[0]
        scales = np.asarray(scales, dtype=np.float32).reshape(-1)
        if scales.shape != (b,):
            raise ValueError(f"scales must have shape ({b},), got {scales.shape}")
        if zero_points is None:
            zp = np.full(b, 128, np.uint8)
        else:
            zp = np.asarray(zero_points).reshape(-1)
            if zp.dtype != np.uint8:
                raise TypeError(f"zero_points must be a uint8 array, got dtype {zp.dtype}")
            if zp.shape != (b,):
                raise ValueError(f"zero_points must have shape ({b},), got {zp.shape}")
        if b == 0:
            return
        from embq._kernels_quant import recon_block

        with np.errstate(over="ignore", invalid="ignore"):
            x32 = np.ascontiguousarray(x, dtype=np.float32)
        elems, sab, mx, rel_rows, srel, cos_rows, scos = recon_block(
            x32, np.ascontiguousarray(codes), np.ascontiguousarray(scales),
            np.ascontiguousarray(zp))
        self.rows += b
        self._elems += elems
        self._sum_abs += sab
        self._max_abs = max(self._max_abs, mx)
        self._rel_rows += rel_rows
        self._sum_rel += srel
        self._cos_rows += cos_rows
        self._sum_cos += scos

    def merge(self, other: ReconstructionStats) -> None:
        """Add the rows another accumulator has seen (shards built apart, one summary)."""
        self.rows += other.rows
        self._elems += other._elems
        self._sum_abs += other._sum_abs
        self._max_abs = max(self._max_abs, other._max_abs)
        self._rel_rows += other._rel_rows
        self._sum_rel += other._sum_rel
        self._cos_rows += other._cos_rows
        self._sum_cos += other._sum_cos

    def result(self) -> dict[str, float]:
        """The figures so far (NaN where no row qualified)."""
        return {
            "error_mean_abs_over_scale": self._sum_abs / self._elems if self._elems else math.nan,
            "error_max_abs_over_scale": self._max_abs if self._elems else math.nan,
            "error_mean_rel_l2": self._sum_rel / self._rel_rows if self._rel_rows else math.nan,
            "error_mean_cosine": self._sum_cos / self._cos_rows if self._cos_rows else math.nan,
        }
