"""Sign-bit sketches of a store's rows, and the search that scans them before the exact int8 scan.

A sketch is one bit per dimension: bit j of row i is set when the dequantized value
``x_hat[i, j] = scales[i] * (codes[i, j] - zero_points[i])`` (float32, as
:func:`embq._quantize.dequantize` computes it) exceeds ``center[j]``, the column mean of the
dequantized rows. Bits are packed least significant first (numpy's
``packbits(..., bitorder="little")``), ``ceil(d / 8)`` bytes per row, padding bits 0; see
"Sketch" in docs/format.md.

The center needs every row before any bit can be set, so a sketch takes two passes over the
codes, block by block (:data:`BLOCK_BYTES` of float32 rows at a time): one summing the
dequantized columns in float64, one setting the bits. Block boundaries depend only on ``d``,
so the center (and every bit) is the same whoever computes it: the writer from its spooled
codes, or ``embq sketch`` from a finished store's memory-mapped codes.

Search with ``prefilter="sketch"``: each query's sketch (the query minus the center, by sign),
the ``K = k * oversample`` rows nearest it in Hamming distance (ties by lower row; selected by
counting, :func:`embq._kernels_sketch.nearest`), then the exact int32 scores of those rows only
(:func:`embq._kernels_sketch.score_candidates`, the int8 search's own dot and weight kernels),
then ``rescore`` as in the plain search.
"""

from __future__ import annotations

import builtins
import operator
import os
from typing import Any, NamedTuple

import numpy as np

__all__ = ["DEFAULT_OVERSAMPLE", "add_sketch", "compute_sketch", "sketch_blocks", "sketch_center"]

# Candidates per wanted neighbour when ``oversample`` is not given (the oversample tables of
# bench_search.py): on 1,000,000 x 384 clustered data 200 already matches the int8 scan's
# recall@10, but all-MiniLM-L6-v2's word pieces need 300 to stay within 0.0015 of it (0.9913
# against 0.9926; 200 gives 0.9897), and one query costs only about 0.1 ms more.
DEFAULT_OVERSAMPLE = 300
# Float32 bytes of dequantized rows per block of the two passes.
BLOCK_BYTES = 1 << 23
# A Hamming scan of fewer sketch bytes than this (rows x bytes per row x queries) runs on one
# thread: waking and joining a second one costs tens of microseconds on an idle machine, and
# on one whose other cores are busy the join can wait for a core. Larger scans are
# memory-bound and use the search's threads: one query over 1,000,000 x 384 (48 MB) takes
# the whole prefilter search from 3.8-4.0 ms on one thread to 2.6-2.8 ms on two (Zen 3,
# 2 cores, medians of interleaved runs; the int8 scan of that store takes 15 ms). The
# results do not depend on it.
SERIAL_SCAN_BYTES = 1 << 24


def _kernels():
    from embq import _kernels_sketch

    return _kernels_sketch


def _block_rows(d: int) -> int:
    return max(1, BLOCK_BYTES // (4 * max(d, 1)))


def sketch_center(codes: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None,
                  *, n_threads: int | None = None) -> np.ndarray:
    """Column mean of the dequantized rows, float32 (d,): float64 sums of float32 blocks.

    Zero rows give a zero center.
    """
    from embq._quantize import dequantize

    n, d = codes.shape
    total = np.zeros(d, np.float64)
    step = _block_rows(d)
    for a in range(0, n, step):
        b = min(n, a + step)
        x = dequantize(codes[a:b], scales[a:b], None if zero_points is None else zero_points[a:b],
                       n_threads=n_threads)
        total += x.sum(axis=0, dtype=np.float64)
    return (total / n).astype(np.float32) if n else np.zeros(d, np.float32)


def sketch_blocks(codes: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None,
                  center: np.ndarray, *, n_threads: int | None = None):
    """Yield ``(start, bits)``: the sketch of rows ``start .. start + len(bits)``, a block at
    a time."""
    from embq._quantize import dequantize
    from embq._utils import effective_n_threads

    n, d = codes.shape
    step = _block_rows(d)
    threads = effective_n_threads(n_threads)
    for a in range(0, n, step):
        b = min(n, a + step)
        x = dequantize(codes[a:b], scales[a:b], None if zero_points is None else zero_points[a:b],
                       n_threads=n_threads)
        yield a, _kernels().sign_bits(x, center, threads)


def compute_sketch(codes: Any, scales: Any, zero_points: Any = None, *,
                   n_threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The sketch of quantized rows, in memory: ``(sketch, center)``.

    Parameters
    ----------
    codes : ndarray of uint8, shape (n, d)
    scales : ndarray of float32, shape (n,)
    zero_points : ndarray of uint8, shape (n,), optional
        128 for every row when omitted.
    n_threads : int, optional

    Returns
    -------
    sketch : ndarray of uint8, shape (n, ceil(d / 8))
    center : ndarray of float32, shape (d,)
    """
    from embq._search import _check_codes, _check_vector

    codes = _check_codes(codes)
    n, d = codes.shape
    scales = _check_vector(scales, n, "scales", np.float32)
    if zero_points is not None:
        zero_points = _check_vector(zero_points, n, "zero_points", np.uint8)
    center = sketch_center(codes, scales, zero_points, n_threads=n_threads)
    out = np.zeros((n, (d + 7) // 8), np.uint8)
    for a, bits in sketch_blocks(codes, scales, zero_points, center, n_threads=n_threads):
        out[a:a + bits.shape[0]] = bits
    return out, center


def write_sketch(h5file: Any, codes: np.ndarray, scales: np.ndarray,
                 zero_points: np.ndarray | None, *, n_threads: int | None = None) -> None:
    """Create the ``sketch`` and ``sketch_center`` datasets of an open, writable HDF5 store
    (contiguous, like the codes), filling the sketch block by block: memory stays at one block."""
    n, d = codes.shape
    center = sketch_center(codes, scales, zero_points, n_threads=n_threads)
    ds = h5file.create_dataset("sketch", shape=(n, (d + 7) // 8), dtype=np.uint8)
    for a, bits in sketch_blocks(codes, scales, zero_points, center, n_threads=n_threads):
        ds[a:a + bits.shape[0]] = bits
    h5file.create_dataset("sketch_center", data=center)


def sketch_nbytes(n: int, d: int) -> int:
    """Bytes a sketch adds to a store of ``n`` rows of dimension ``d``: ``n * ceil(d/8) + 4d``."""
    return n * ((d + 7) // 8) + 4 * d


# -- search ----------------------------------------------------------------------------------

class SketchPlan(NamedTuple):
    """A checked ``prefilter="sketch"`` request: the rows' sketch (uint8 (n, ceil(d/8))), its
    center (float32 (d,)), the candidates per wanted neighbour, and the allow-list the scan is
    limited to (a checked :class:`embq._kernels_search.Rows`), or None for every row."""

    sketch: np.ndarray
    center: np.ndarray
    oversample: int
    rows: Any = None


def check_prefilter(prefilter: Any, oversample: Any, sketch: Any, sketch_center_: Any, d: int,
                    n: int) -> SketchPlan | None:
    """Validate ``prefilter``/``oversample`` and the sketch arrays.

    Returns None for the plain scan, else a :class:`SketchPlan` over every row (the caller
    sets ``rows`` for an allow-list).
    """
    if prefilter is None:
        if oversample is not None:
            raise ValueError("oversample is only used with prefilter='sketch', got "
                             f"oversample={oversample!r} and prefilter=None")
        return None
    if prefilter != "sketch":
        raise ValueError(f"prefilter must be None or 'sketch', got {prefilter!r}")
    if oversample is None:
        oversample = DEFAULT_OVERSAMPLE
    else:
        if isinstance(oversample, (bool, np.bool_)):
            raise TypeError(f"oversample must be an int, got bool {oversample!r}")
        try:
            oversample = operator.index(oversample)
        except TypeError:
            raise TypeError(f"oversample must be an int, got {type(oversample).__name__} "
                            f"{oversample!r}") from None
        if oversample < 1:
            raise ValueError(f"oversample must be >= 1, got {oversample}")
    if sketch is None or sketch_center_ is None:
        raise ValueError("prefilter='sketch' needs a sketch: pass sketch= and sketch_center= "
                         "(embq.compute_sketch), or add one to the store with `embq sketch "
                         "STORE`")
    sk = np.asarray(sketch)
    nb = (d + 7) // 8
    if sk.dtype != np.uint8 or sk.shape != (n, nb):
        raise ValueError(f"sketch must be uint8 of shape ({n}, {nb}) for {n} rows of dimension "
                         f"{d}, got {sk.dtype} {sk.shape}")
    center = np.asarray(sketch_center_)
    if center.shape != (d,) or center.dtype.kind != "f":
        raise ValueError(f"sketch_center must be float of shape ({d},), got {center.dtype} "
                         f"{center.shape}")
    center = np.ascontiguousarray(center, dtype=np.float32)
    if not np.isfinite(center).all():
        bad = int(np.flatnonzero(~np.isfinite(center))[0])
        raise ValueError(f"sketch_center must be finite, got {center[bad]} at column {bad}")
    return SketchPlan(np.ascontiguousarray(sk), center, oversample)


def prefilter_topk(codes: np.ndarray, scales: np.ndarray, zp: np.ndarray | None,
                   norms: np.ndarray | None, n_eff: int, qf: np.ndarray, qp: np.ndarray,
                   sumq: np.ndarray, wq: np.ndarray, kc: int, cosine: bool,
                   plan: SketchPlan, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``kc`` best rows by exact int32 score among each query's ``k * oversample`` nearest
    in Hamming distance (at least ``kc``, at most the rows scanned).

    The rows scanned are the first ``n_eff``, or with ``plan.rows`` (an allow-list within
    them) those rows, and then ``n_eff`` is their number. ``qp``, ``sumq`` and ``wq`` are the
    packed queries of the int8 search, so a score here has the bits the plain search gives
    that row. An allow-list gives what a store of the allowed rows alone (the same sketch
    rows, the same center) would: rows are compared by number, and the allowed rows keep
    their order.
    """
    from embq import _kernels_search
    from embq._kernels_common import VARIANTS

    sketch, center, oversample, rows = plan
    n_scan = n_eff if rows is None else len(rows)
    n_cand = min(n_scan, max(kc, k * oversample))
    m = qf.shape[0]
    if n_cand == n_scan:  # every row scanned is a candidate: nothing to choose
        every = np.arange(n_scan, dtype=np.int64) if rows is None else rows.array
        cand = np.ascontiguousarray(np.broadcast_to(every, (m, n_scan)))
    else:
        scan_threads = 1 if n_scan * sketch.shape[1] * m < SERIAL_SCAN_BYTES else threads
        qsk = _kernels().sign_bits(qf, center, threads)
        cand, _ = _kernels().nearest(sketch, sketch.shape[0] if rows is not None else n_eff,
                                     qsk, n_cand, scan_threads, rows=rows)
    sel = _kernels_search.selected_kernels()
    return _kernels().score_candidates(
        codes, scales, zp, norms if cosine else None, cand, qp, sumq, wq, kc, cosine,
        VARIANTS.index(sel["search_dot"]), VARIANTS.index(sel["search_select"]), threads)


# -- adding a sketch to a finished store -------------------------------------------------------

def add_sketch(path: str | os.PathLike, output: str | os.PathLike | None = None, *,
               overwrite: bool = False, n_threads: int | None = None) -> dict[str, Any]:
    """Write a copy of the store at ``path`` with a sketch, to ``output`` (default: in place).

    The copy is made in a temporary file next to the destination, the sketch computed from
    the store's memory-mapped codes in two passes (:func:`write_sketch`) and the file renamed
    into place (:func:`embq._publish.publish`): the destination is never half-written, and an
    interruption leaves the original as it was.

    Parameters
    ----------
    path : str or os.PathLike
        An embq store file.
    output : str or os.PathLike, optional
        Where to write; None replaces ``path`` itself.
    overwrite : bool, default False
        Replace an existing ``output`` (a different file from ``path``).
    n_threads : int, optional

    Returns
    -------
    dict
        ``output``, ``rows``, ``dim``, ``sketch_bytes``, ``seconds`` and ``added`` (False when
        the store already had a sketch and was written in place: then nothing is done).

    Raises
    ------
    embq._errors.StoreError
        ``path`` is not a valid store.
    embq._errors.OutputExistsError
        ``output`` exists and ``overwrite`` is false.
    """
    import shutil
    import time

    import h5py

    from embq._publish import AtomicFile
    from embq._store import open as open_store

    t0 = time.perf_counter()
    src = os.fspath(path)
    dest = src if output is None else os.fspath(output)
    in_place = output is None or os.path.abspath(dest) == os.path.abspath(src)
    with open_store(src) as store:
        n, d = store.shape
        result = {"output": dest, "rows": n, "dim": d, "sketch_bytes": sketch_nbytes(n, d),
                  "added": True}
        if in_place and store.sketch is not None:
            result.update(added=False, seconds=time.perf_counter() - t0)
            return result
        out = AtomicFile(dest, overwrite=True if in_place else overwrite, example="vectors.h5")
        try:
            with builtins.open(src, "rb") as fh:
                shutil.copyfileobj(fh, out.fh, 1 << 22)
            out.fh.close()
            with h5py.File(out.tmp, "r+") as f:
                for name in ("sketch", "sketch_center"):
                    if name in f:  # a copy to elsewhere of a sketched store: computed afresh
                        del f[name]
                write_sketch(f, store.codes, store.scales, store.zero_points,
                             n_threads=n_threads)
        except BaseException:
            out.abort()
            raise
    out.commit()
    result["seconds"] = time.perf_counter() - t0
    return result
