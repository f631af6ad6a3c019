"""Small helpers shared by the Python front ends."""

from __future__ import annotations

import operator
import os


def effective_n_threads(n_threads: int | None) -> int:
    """Turn a user's ``n_threads`` into a positive thread count.

    ``None`` means all cores OpenMP would use; a negative value counts back from there
    (``-1`` = all, ``-2`` = all but one, never below 1); ``0`` is an error. A count above
    the number of CPUs this process may run on is lowered to it: the kernels are CPU-bound,
    so more threads only add overhead, and a count like 10**6 would make the OpenMP runtime
    abort the process when it cannot create them. Without OpenMP the answer is always 1.

    Parameters
    ----------
    n_threads : int or None
        The requested number of threads.

    Returns
    -------
    int
        A thread count >= 1.
    """
    from embq._kernels_common import max_threads, openmp_enabled

    if n_threads is None:
        requested = max_threads()
    else:
        if isinstance(n_threads, bool):
            raise TypeError(f"n_threads must be an int or None, got bool ({n_threads})")
        try:
            requested = operator.index(n_threads)
        except TypeError:
            raise TypeError(
                f"n_threads must be an int or None, got {type(n_threads).__name__}"
            ) from None
        if requested == 0:
            raise ValueError("n_threads=0 is not a thread count; use None for all cores")
        if requested < 0:
            requested = max(1, max_threads() + 1 + requested)
    if not openmp_enabled():
        return 1
    most = max_threads()
    # the CPUs this process may use are asked of the system (a system call, tens of
    # microseconds from cold caches) only for a count above OpenMP's own
    return requested if requested <= most else min(requested, max(most, _usable_cpus()))


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on every platform
        return os.cpu_count() or 1


def human_bytes(n: float) -> str:
    """``1234567`` -> ``"1.2 MB"`` (powers of 1000)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"  # pragma: no cover


def size_ratio(before: float, after: float, than: str = "") -> str:
    """How ``after`` bytes compare with ``before``: ``"3.47x smaller"`` or ``"411x larger"``.

    Tiny inputs make stores larger than their source (the key index and HDF5 metadata have a
    fixed cost), and "0.00x smaller" says that badly.
    """
    than = f" than {than}" if than else ""
    if before <= 0 or after <= 0:
        return f"size not comparable{than}"
    r = before / after
    if r >= 1:
        return f"{r:.2f}x smaller{than}"
    inv = after / before
    return f"{inv:.3g}x larger{than}" if inv < 100 else f"{inv:,.0f}x larger{than}"
