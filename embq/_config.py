"""Report how embq was built, and list and force the kernel variants it runs.

Kernels come in families (``quantize``, ``search_dot``, ``search_select``, ``parse``,
``store``, ``eval``, ``sketch``), each with variants named after one instruction set (``portable``,
``avx2``, ``avxvnni``, ``avx512``, ``avx512vnni``, ``neon``, ``neondot``: the one table of names
and CPU checks is ``embq/_common.h``).  At import each family runs the best variant the CPU
supports, unless the environment variable ``EMBQ_KERNELS`` says otherwise:

* ``EMBQ_KERNELS=portable``: every family runs its portable C variant (a bare name applies to
  every family that has a variant of that name);
* ``EMBQ_KERNELS=search=avx2,quantize=portable``: per family (``search`` stands for both
  ``search_dot`` and ``search_select``); ``auto`` means the best variant.

A name that is unknown, or that this CPU cannot run, draws a ``RuntimeWarning`` naming the
variants available, and the family keeps its best variant.  :func:`set_kernels` does the same
from Python (raising ``ValueError`` instead), :func:`available_kernels` and
:func:`selected_kernels` list them.

Each kernel module covers its families with ``kernel_variants()`` (the variants this build has,
with whether the CPU runs each), ``selected_kernels()`` and ``_use_kernel(family, variant)``,
and calls :func:`_init_kernels` once at import.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Optional, TextIO

ENV_VAR = "EMBQ_KERNELS"

# Every kernel family and the module that implements it.
FAMILIES: dict[str, str] = {
    "quantize": "embq._kernels_quant",
    "search_dot": "embq._kernels_search",
    "search_select": "embq._kernels_search",
    "parse": "embq._kernels_parse",
    "store": "embq._kernels_store",
    "eval": "embq._kernels_eval",
    "sketch": "embq._kernels_sketch",
}

# One request of a spec: (families or None for a bare name, variant or "auto", exact family).
_Request = tuple[Optional[tuple[str, ...]], str, bool]
_Variants = Mapping[str, Mapping[str, bool]]

_env_requests: list[_Request] | None = None


def _modules() -> list[str]:
    return list(dict.fromkeys(FAMILIES.values()))


def _parse_spec(spec: str | Mapping[str, str]) -> tuple[list[_Request], list[str]]:
    """Split an ``EMBQ_KERNELS``-style spec into requests, and the errors of its bad items."""
    from embq._kernels_common import VARIANTS, variant_runs

    if isinstance(spec, Mapping):
        items = [f"{key}={name}" for key, name in spec.items()]
    elif isinstance(spec, str):
        items = spec.split(",")
    else:
        raise TypeError(f"kernels must be a str or a mapping of family to variant, got "
                        f"{type(spec).__name__} {spec!r}")
    requests: list[_Request] = []
    errors: list[str] = []
    for item in items:
        key, sep, name = (part.strip() for part in item.strip().lower().partition("="))
        if not sep:
            key, name = "", key
        if not name:
            if sep:
                errors.append(f"{item.strip()!r} names no variant (expected family=variant)")
            continue
        if name != "auto" and name not in VARIANTS:
            errors.append(f"unknown kernel variant {name!r}; the variants are auto, "
                          f"{', '.join(VARIANTS)}")
            continue
        if not sep:
            if name != "auto" and not variant_runs(name):
                runs = ", ".join(v for v in VARIANTS if variant_runs(v))
                errors.append(f"this CPU cannot run kernel variant {name!r}; it runs {runs}")
                continue
            requests.append((None, name, False))
            continue
        families = tuple(f for f in FAMILIES if f == key or f.startswith(key + "_"))
        if not families:
            errors.append(f"unknown kernel family {key!r}; the families are "
                          f"{', '.join(FAMILIES)} (search: both search families)")
            continue
        requests.append((families, name, key in FAMILIES))
    return requests, errors


def _runnable(variants: _Variants, family: str) -> list[str]:
    return [name for name, runs in variants[family].items() if runs]


def _choose(requests: list[_Request], variants: _Variants) -> tuple[dict[str, str], list[str]]:
    """The variants ``requests`` ask for in the families of ``variants`` (one module's), later
    requests winning, and the errors of the requests those families cannot honour."""
    choice: dict[str, str] = {}
    errors: list[str] = []
    for families, name, exact in requests:
        mine = list(variants) if families is None else [f for f in families if f in variants]
        taken = []
        for family in mine:
            runnable = _runnable(variants, family)
            if name == "auto" or name in runnable:
                choice[family] = runnable[-1] if name == "auto" else name
                taken.append(family)
        if families is not None and mine and not taken:
            if exact:
                what, avail = mine[0], ", ".join(_runnable(variants, mine[0]))
            else:
                what = "/".join(mine)
                avail = "; ".join(f"{f}: {', '.join(_runnable(variants, f))}" for f in mine)
            errors.append(f"{what} has no kernel variant {name!r} that this CPU and build can "
                          f"run (available: {avail})")
    return choice, errors


def _warn(errors: list[str]) -> None:
    spec = os.environ.get(ENV_VAR, "")
    for error in errors:
        warnings.warn(f"{ENV_VAR}={spec!r}: {error}; using the best variant instead",
                      RuntimeWarning, stacklevel=4)


def _defaults(variants: _Variants, warn: bool) -> dict[str, str]:
    """Best variant of each family, overridden by what ``EMBQ_KERNELS`` asks for."""
    global _env_requests
    if _env_requests is None:
        _env_requests, errors = _parse_spec(os.environ.get(ENV_VAR, ""))
        if warn:
            _warn(errors)
    choice = {family: _runnable(variants, family)[-1] for family in variants}
    forced, errors = _choose(_env_requests, variants)
    if warn:
        _warn(errors)
    choice.update(forced)
    return choice


def _init_kernels(variants: _Variants, use: Callable[[str, str], None]) -> None:
    """Select the kernels of one module at its import (best, or as ``EMBQ_KERNELS`` says)."""
    for family, name in _defaults(variants, warn=True).items():
        use(family, name)


def _portable_only(family: str) -> tuple[Callable[[], dict[str, dict[str, bool]]],
                                          Callable[[], dict[str, str]],
                                          Callable[[str, str], None]]:
    """``kernel_variants``, ``selected_kernels`` and ``_use_kernel`` of a module whose one
    family has only its portable variant; the module still calls :func:`_init_kernels`, so
    ``EMBQ_KERNELS`` asking it for another variant is reported."""

    def kernel_variants() -> dict[str, dict[str, bool]]:
        return {family: {"portable": True}}

    def selected_kernels() -> dict[str, str]:
        return {family: "portable"}

    def use_kernel(fam: str, name: str) -> None:
        if fam != family or name != "portable":
            raise ValueError(f"the {family} family has no variant {name!r}; it has portable")

    kernel_variants.__doc__ = f"Return ``{{{family!r}: {{'portable': True}}}}``: one variant."
    selected_kernels.__doc__ = f"Return the variant the {family} family runs (portable)."
    return kernel_variants, selected_kernels, use_kernel


def available_kernels() -> dict[str, list[str]]:
    """Return the kernel variants this CPU and build can run, per family (best last).

    Returns
    -------
    dict of str to list of str
        e.g. ``{"quantize": ["portable", "avx2"], "search_dot": ["portable", "avx2",
        "avx512vnni"], ...}``.
    """
    out: dict[str, list[str]] = {}
    for name in _modules():
        variants = importlib.import_module(name).kernel_variants()
        out.update({family: _runnable(variants, family) for family in variants})
    return out


def selected_kernels() -> dict[str, str]:
    """Return the kernel variant each family runs, e.g. ``{"quantize": "avx2", ...}``."""
    out: dict[str, str] = {}
    for name in _modules():
        out.update(importlib.import_module(name).selected_kernels())
    return out


def set_kernels(kernels: str | Mapping[str, str] | None = None) -> dict[str, str]:
    """Force kernel variants, as ``EMBQ_KERNELS`` does at import.

    Parameters
    ----------
    kernels : str, mapping or None
        ``"portable"`` (every family that has that variant), ``"search=avx2,quantize=portable"``
        or ``{"quantize": "portable"}`` (per family; ``search`` means both search families;
        ``"auto"`` is the best variant); families not named keep their variant.  ``None``
        restores the import-time choice (``EMBQ_KERNELS``, else the best variants).

    Returns
    -------
    dict of str to str
        The variants selected before the call, which ``set_kernels`` accepts to restore them.

    Raises
    ------
    ValueError
        For an unknown family or variant, or one this CPU or build cannot run; nothing is
        changed then.
    """
    previous = selected_kernels()
    modules = [importlib.import_module(name) for name in _modules()]
    plans = []
    if kernels is None:
        for mod in modules:
            plans.append((mod, _defaults(mod.kernel_variants(), warn=False)))
    else:
        requests, errors = _parse_spec(kernels)
        for mod in modules:
            choice, more = _choose(requests, mod.kernel_variants())
            errors += more
            plans.append((mod, choice))
        if errors:
            raise ValueError(f"set_kernels({kernels!r}): " + "; ".join(errors))
    for mod, choice in plans:
        for family, name in choice.items():
            mod._use_kernel(family, name)
    return previous


def config() -> dict[str, Any]:
    """Return build and run-time facts: version, OpenMP, threads, CPU features, kernels chosen."""
    from embq import __version__, _kernels_common

    kernels: dict[str, str] = {}
    available: dict[str, list[str]] = {}
    strtod = None
    for name in _modules():
        try:
            mod = importlib.import_module(name)
        except ImportError as exc:  # a broken build should be visible here, not fatal
            for family, owner in FAMILIES.items():
                if owner == name:
                    kernels[family] = f"unavailable ({exc})"
            continue
        kernels.update(mod.selected_kernels())
        if hasattr(mod, "strtod_fallback"):
            strtod = mod.strtod_fallback()
        variants = mod.kernel_variants()
        available.update({family: _runnable(variants, family) for family in variants})
    return {
        "embq": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "openmp": _kernels_common.openmp_enabled(),
        "threads": _kernels_common.max_threads(),
        "cpu_features": _kernels_common.cpu_features(),
        "kernels": kernels,
        "kernels_available": available,
        "kernels_env": os.environ.get(ENV_VAR),
        "parse_strtod": strtod,
    }


def show_config(file: TextIO | None = None) -> None:
    """Print the build configuration and the kernel variant each family runs on this CPU.

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
    feats_text = ", ".join(feats) if feats else "no SIMD extensions used"
    print(f"  cpu:     {cfg['machine']} with {feats_text}", file=out)
    env = cfg["kernels_env"]
    print(f"  kernels ({ENV_VAR}={env!r}):" if env is not None else
          f"  kernels (best for this CPU; {ENV_VAR} forces others):", file=out)
    for family, kernel in cfg["kernels"].items():
        avail = cfg["kernels_available"].get(family)
        tail = f"  (available: {', '.join(avail)})" if avail else ""
        print(f"    {family}: {kernel}{tail}", file=out)
    if cfg["parse_strtod"]:
        print(f"  parse:   numbers beyond the fast path go through {cfg['parse_strtod']}"
              f"{' (C locale)' if cfg['parse_strtod'] == 'strtod_l' else ''}", file=out)
