"""Reconstruction error of per-row quantization, accumulated block by block.

Figures (all over the rows seen by :meth:`ReconstructionStats.update`):

* ``error_mean_abs_over_scale`` / ``error_max_abs_over_scale``: mean and max of
  ``|x - x_hat| / scale`` over every element of the rows with ``scale > 0`` (round-to-nearest
  quantization keeps this at most 0.5, plus float32 rounding);
* ``error_mean_rel_l2``: mean over rows with ``||x|| > 0`` of ``||x - x_hat|| / ||x||``;
* ``error_mean_cosine``: mean over rows with ``||x|| > 0`` and ``||x_hat|| > 0`` of the cosine
  between ``x`` and ``x_hat``.

``x_hat = (code - zero_point) * scale`` in float32, exactly what ``embq.dequantize`` returns.
Sums are kept in float64.
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
        if x.ndim != 2 or codes.shape != x.shape:
            raise ValueError(f"x and codes must be 2-D of the same shape, got {x.shape} and "
                             f"{codes.shape}")
        b = x.shape[0]
        scales = np.asarray(scales, dtype=np.float32).reshape(-1)
        if scales.shape != (b,):
            raise ValueError(f"scales must have shape ({b},), got {scales.shape}")
        if zero_points is None:
            zp = np.full(b, 128, np.int16)
        else:
            zp = np.asarray(zero_points).astype(np.int16).reshape(-1)
            if zp.shape != (b,):
                raise ValueError(f"zero_points must have shape ({b},), got {zp.shape}")
        # float64 temporaries in slices, so a wide block does not multiply memory use.
        step = max(1, (4 << 20) // max(1, x.shape[1]))
        for i in range(0, b, step):
            self._update(x[i : i + step], codes[i : i + step], scales[i : i + step],
                         zp[i : i + step])

    def _update(self, x: np.ndarray, codes: np.ndarray, scales: np.ndarray,
                zp: np.ndarray) -> None:
        self.rows += x.shape[0]
        x64 = x.astype(np.float64)
        # x_hat exactly as dequantize computes it (float32), then widened.
        xh = ((codes.astype(np.int16) - zp[:, None]).astype(np.float32)
              * scales[:, None]).astype(np.float64)
        diff = x64 - xh
        pos = scales > 0
        if pos.any():
            rel = np.abs(diff[pos]) / scales[pos, None].astype(np.float64)
            self._elems += rel.size
            self._sum_abs += float(rel.sum())
            self._max_abs = max(self._max_abs, float(rel.max()) if rel.size else 0.0)
        xn = np.sqrt(np.einsum("ij,ij->i", x64, x64))
        nz = xn > 0
        if nz.any():
            dn = np.sqrt(np.einsum("ij,ij->i", diff[nz], diff[nz]))
            self._sum_rel += float((dn / xn[nz]).sum())
            self._rel_rows += int(nz.sum())
            hn = np.sqrt(np.einsum("ij,ij->i", xh, xh))
            both = nz & (hn > 0)
            if both.any():
                dots = np.einsum("ij,ij->i", x64[both], xh[both])
                self._sum_cos += float((dots / (xn[both] * hn[both])).sum())
                self._cos_rows += int(both.sum())

    def result(self) -> dict[str, float]:
        """The figures so far (NaN where no row qualified)."""
        return {
            "error_mean_abs_over_scale": self._sum_abs / self._elems if self._elems else math.nan,
            "error_max_abs_over_scale": self._max_abs if self._elems else math.nan,
            "error_mean_rel_l2": self._sum_rel / self._rel_rows if self._rel_rows else math.nan,
            "error_mean_cosine": self._sum_cos / self._cos_rows if self._cos_rows else math.nan,
        }
