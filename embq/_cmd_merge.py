"""``embq merge SHARDED OUTPUT``: join a sharded store into one store file."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="join a sharded store into one store file",
        description="Copy the rows of every shard of a sharded store, in order, into one "
        "store file. Codes, scales, zero points, norms and keys are kept bit for bit, so the "
        "result equals one `embq compress` of the same rows. Every shard is checked against "
        "the manifest first.",
    )
    p.add_argument("sharded", metavar="SHARDED", help="sharded store (directory) to read")
    p.add_argument("output", metavar="OUTPUT", help="store file to write")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--quiet", "-q", action="store_true", help="print no summary line")
    p.add_argument("--progress", action="store_true",
                   help="show a progress bar even when stderr is not a terminal")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from embq._cmd_compress import _overwrite_hint
    from embq._reshard import merge
    from embq._utils import human_bytes

    progress = args.progress or (not args.quiet and sys.stderr.isatty())
    with _overwrite_hint():
        s = merge(args.sharded, args.output, overwrite=args.overwrite, progress=progress)
    if not args.quiet:
        print(f"{s['output']}: {s['rows']:,} rows x {s['dim']} from {s['shards']:,} shards, "
              f"{human_bytes(s['output_size'])} in {s['seconds']:.2f} s")
    return 0
