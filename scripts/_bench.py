"""What every benchmark script times with: one definition of "the median of several runs".

The machine the figures come from is shared and noisy, so every figure is the median of
``repeats`` runs of ``time.perf_counter``, and ratios are taken between figures of one run.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def median_time(fn: Callable[[], T], repeats: int, *, number: int = 1,
                warmup: bool = False) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` runs of ``number`` calls each.

    ``warmup`` makes one untimed call first (page cache, lazy imports, thread pools).
    """
    return timed(fn, repeats, number=number, warmup=warmup)[0]


def timed(fn: Callable[[], T], repeats: int, *, number: int = 1,
          warmup: bool = False) -> tuple[float, T]:
    """Like :func:`median_time`, also returning the last call's result."""
    out = fn() if warmup else None
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            out = fn()
        times.append((time.perf_counter() - t0) / number)
    return statistics.median(times), out  # type: ignore[return-value]
