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
    p.add_argument("store", nargs="?", help="path of an embq store (a file, or a sharded "
                   "store's directory)")
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
        shards = _shards(store)
        if args.json:
            extra = {} if shards is None else {"shards": shards}
            print(json.dumps({"path": os.fspath(args.store), **attrs, **extra}, indent=2,
                             default=str))
            return 0
        n, d = store.shape
        size = (os.path.getsize(args.store) if shards is None
                else os.path.getsize(store.manifest.path) + sum(s["bytes"] for s in shards))
        float_bytes = 4 * n * d
        keys = "with keys" if store.has_keys else "no keys"
        print(f"{args.store}: embq store, {n:,} rows x {d} ({keys}), "
              f"format {attrs.get('format_version')}, {attrs.get('scheme')}")
        ratio = f" ({size_ratio(float_bytes, size, 'float32')})" if size and float_bytes else ""
        print(f"  {'file size' if shards is None else 'total size':<12s} "
              f"{human_bytes(size)}{ratio}")
        if shards is not None:
            print(f"  {'shards':<12s} {len(shards):,}")
            width = max(len(s["path"]) for s in shards)
            for s in shards:
                print(f"    {s['path']:<{width}s}  rows {s['offset']:,} to "
                      f"{s['offset'] + s['rows']:,} ({s['rows']:,} rows), "
                      f"{human_bytes(s['bytes'])}")
        if shards is not None:
            if store.manifest.sketch:
                from embq._reshard import sharded_sketch_nbytes

                nb = sharded_sketch_nbytes([s["rows"] for s in shards], d)
                print(f"  {'sketch':<12s} {human_bytes(nb)} ({(d + 7) // 8} bytes per row, "
                      "one center over all shards)")
            else:
                print(f"  {'sketch':<12s} none (`embq sketch {args.store}` adds one)")
        elif store.sketch is not None:
            print(f"  {'sketch':<12s} {human_bytes(store.sketch.nbytes + 4 * d)} "
                  f"({store.sketch.shape[1]} bytes per row)")
        else:
            print(f"  {'sketch':<12s} none (`embq sketch {args.store}` adds one)")
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


def _shards(store: object) -> list[dict] | None:
    """A sharded store's shards as its manifest lists them (path, rows, global row offset,
    bytes); None for a single store file."""
    manifest = getattr(store, "manifest", None)
    if manifest is None:
        return None
    return [{"path": e.path, "rows": e.rows, "offset": e.offset, "bytes": e.bytes}
            for e in manifest.shards]


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
