"""``embq info STORE`` and ``embq info --config``."""

from __future__ import annotations

import argparse
import json
import math
import numbers
import os
import sys

from embq._utils import human_bytes, size_ratio


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="print a store's metadata, or the build configuration",
        description="Print a store's metadata and compression figures, or with --config the "
        "kernels, OpenMP and thread count this build uses.",
    )
    p.add_argument("store", nargs="?", help="path of an embq store")
    p.add_argument("--config", action="store_true", help="print the build configuration")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from embq.cli import CommandError

    if args.config:
        from embq._config import config, show_config

        if args.json:
            print(json.dumps(config(), indent=2))
        else:
            show_config()
        if args.store is None:
            return 0
    if args.store is None:
        raise CommandError("give a STORE path, or --config")

    import embq
    from embq._source import SOURCE_FORMAT, SOURCE_PATH, SOURCE_SIZE

    with embq.open(args.store) as store:
        attrs = store.attrs
        if args.json:
            print(json.dumps({"path": os.fspath(args.store), **attrs}, indent=2, default=str))
            return 0
        n, d = store.shape
        size = os.path.getsize(args.store)
        float_bytes = 4 * n * d
        keys = "with keys" if store.has_keys else "no keys"
        print(f"{args.store}: embq store, {n:,} rows x {d} ({keys}), "
              f"format {attrs.get('format_version')}, {attrs.get('scheme')}")
        ratio = f" ({size_ratio(float_bytes, size, 'float32')})" if size and float_bytes else ""
        print(f"  {'file size':<12s} {human_bytes(size)}{ratio}")
        if SOURCE_PATH in attrs:
            src = f"{attrs[SOURCE_PATH]} ({attrs.get(SOURCE_FORMAT, '?')}"
            src_size = _number(attrs.get(SOURCE_SIZE))
            if src_size is not None:
                src += f", {human_bytes(src_size)}"
            elif SOURCE_SIZE in attrs:
                src += f", size {attrs[SOURCE_SIZE]!r}"
            print(f"  {'source':<12s} {src})")
        err = _error_line(attrs)
        if err:
            print(f"  {'error':<12s} {err}")
        print("  attributes:")
        for name in sorted(attrs):
            print(f"    {name:<26s} {_shown(attrs[name])}")
    sys.stdout.flush()
    return 0


def _number(value: object) -> float | None:
    """``value`` as a finite float, or None when a store's attribute is not a number (a store
    may come from anywhere; ``info`` shows such a value as it is instead of failing)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _error_line(attrs: dict) -> str:
    mean, worst = (_number(attrs.get(k)) for k in ("error_mean_abs_over_scale",
                                                   "error_max_abs_over_scale"))
    if mean is None or worst is None:
        return ""
    err = f"|x - x_hat| / scale mean {mean:.4f}, max {worst:.4f}"
    rel, cos = _number(attrs.get("error_mean_rel_l2")), _number(attrs.get("error_mean_cosine"))
    if rel is not None:
        err += f"; relative L2 {rel:.5f}"
    if cos is not None:
        err += f"; cosine {cos:.6f}"
    return err


def _shown(value: object) -> str:
    # One line per attribute whatever it holds (a string attribute may contain newlines).
    text = value if isinstance(value, str) else repr(value) if isinstance(value, bytes) \
        else str(value)
    return text.replace("\n", "\\n").replace("\r", "\\r")
