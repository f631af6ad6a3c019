"""``embq shard STORE OUTPUT --shard-rows N``: split a store into a sharded store."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "shard",
        help="split a store into a sharded store (a directory of shards and a manifest)",
        description="Copy the rows of a store into shards of N rows each (the last fewer), "
        "written with a manifest.json into the directory OUTPUT. The rows keep their codes, "
        "scales, zero points, norms and keys bit for bit: `embq merge` gives the store back.",
    )
    p.add_argument("store", metavar="STORE", help="embq store to split")
    p.add_argument("output", metavar="OUTPUT", help="sharded store (directory) to write")
    p.add_argument("--shard-rows", type=int, metavar="N", required=True,
                   help="rows per shard")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUTPUT if it is a sharded store (or a file)")
    p.add_argument("--quiet", "-q", action="store_true", help="print no summary line")
    p.add_argument("--progress", action="store_true",
                   help="show a progress bar even when stderr is not a terminal")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from embq._cmd_compress import _overwrite_hint
    from embq._reshard import shard
    from embq._utils import human_bytes
    from embq.cli import CommandError

    if args.shard_rows < 1:
        raise CommandError(f"--shard-rows must be a positive number of rows, got "
                           f"{args.shard_rows}")
    progress = args.progress or (not args.quiet and sys.stderr.isatty())
    with _overwrite_hint():
        s = shard(args.store, args.output, shard_rows=args.shard_rows, overwrite=args.overwrite,
                  progress=progress)
    if not args.quiet:
        print(f"{s['output']}: {s['rows']:,} rows x {s['dim']} in {s['shards']:,} shards, "
              f"{human_bytes(s['output_size'])} in {s['seconds']:.2f} s")
    return 0
