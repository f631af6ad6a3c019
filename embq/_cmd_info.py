"""``embq info STORE`` and ``embq info --config``."""

from __future__ import annotations

import argparse
import json
import os
import sys

from embq._utils import human_bytes


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
        ratio = f" ({float_bytes / size:.2f}x smaller than float32)" if size and float_bytes else ""
        print(f"  {'file size':<12s} {human_bytes(size)}{ratio}")
        if "source_path" in attrs:
            src_size = attrs.get("source_size")
            src = f"{attrs['source_path']} ({attrs.get('source_format', '?')}"
            if src_size:
                src += f", {human_bytes(float(src_size))}"
            print(f"  {'source':<12s} {src})")
        if "error_mean_abs_over_scale" in attrs:
            err = (f"|x - x_hat| / scale mean {float(attrs['error_mean_abs_over_scale']):.4f}, "
                   f"max {float(attrs['error_max_abs_over_scale']):.4f}")
            if "error_mean_rel_l2" in attrs:
                err += f"; relative L2 {float(attrs['error_mean_rel_l2']):.5f}"
            if "error_mean_cosine" in attrs:
                err += f"; cosine {float(attrs['error_mean_cosine']):.6f}"
            print(f"  {'error':<12s} {err}")
        print("  attributes:")
        for name in sorted(attrs):
            print(f"    {name:<26s} {attrs[name]}")
    sys.stdout.flush()
    return 0
