"""Report how embq was built and which kernels it picked on this machine."""

from __future__ import annotations

import importlib
import platform
import sys
from typing import Any, TextIO

# Kernel modules that report the SIMD variant they dispatch to, as ``selected_kernels()``.
_KERNEL_MODULES = (
    "embq._kernels_quant", "embq._kernels_search", "embq._kernels_parse", "embq._kernels_store",
    "embq._kernels_eval",
)


def config() -> dict[str, Any]:
    """Return build and run-time facts: version, OpenMP, threads, CPU features, kernels chosen."""
    from embq import __version__, _kernels_common

    kernels: dict[str, str] = {}
    for name in _KERNEL_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError as exc:  # a broken build should be visible here, not fatal
            kernels[name.rsplit(".", 1)[-1]] = f"unavailable ({exc})"
            continue
        selected = getattr(mod, "selected_kernels", None)
        if selected is not None:
            kernels.update(selected())
    return {
        "embq": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "openmp": _kernels_common.openmp_enabled(),
        "threads": _kernels_common.max_threads(),
        "cpu_features": _kernels_common.cpu_features(),
        "kernels": kernels,
    }


def show_config(file: TextIO | None = None) -> None:
    """Print the build configuration and the kernels chosen on this CPU.

    Parameters
    ----------
    file : file-like, optional
        Where to print; standard output by default.
    """
    cfg = config()
    out = file if file is not None else sys.stdout
    print(f"embq {cfg['embq']} (Python {cfg['python']}, {cfg['platform']})", file=out)
    print(f"  openmp:  {'on' if cfg['openmp'] else 'off (single-threaded build)'}", file=out)
    print(f"  threads: {cfg['threads']}", file=out)
    feats = [name for name, on in cfg["cpu_features"].items() if on]
    print(f"  cpu:     {cfg['machine']} with {', '.join(feats) if feats else 'no SIMD extensions used'}",
          file=out)
    for what, kernel in cfg["kernels"].items():
        print(f"  {what + ':':<20s} {kernel}", file=out)
