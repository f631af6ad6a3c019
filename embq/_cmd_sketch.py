"""``embq sketch STORE``: add the sign-bit sketch that ``prefilter="sketch"`` searches scan."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sketch",
        help="add a sign-bit sketch to a store, for fast prefiltered search",
        description="Compute the sign-bit sketch of a store's rows (one bit per dimension: the "
        "dequantized value above the column mean) and write it into the store, through a "
        "temporary file renamed into place. A store that already has one is left as it is.",
    )
    p.add_argument("store", metavar="STORE",
                   help="embq store file, or a sharded store's directory (every shard gets the "
                   "sketch, with one center over all shards)")
    p.add_argument("--output", "-o", metavar="FILE",
                   help="write the sketched copy here instead of replacing STORE")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    p.add_argument("--quiet", "-q", action="store_true", help="print no summary line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from embq._cmd_compress import _overwrite_hint
    from embq._manifest import is_sharded
    from embq._sketch import add_sketch
    from embq._utils import human_bytes
    from embq.cli import CommandError

    if is_sharded(args.store):
        if args.output is not None:
            raise CommandError(f"{args.store} is a sharded store, whose shards are sketched in "
                               "place (each through a temporary file); omit --output")
        from embq._reshard import sketch_sharded

        s = sketch_sharded(args.store)
    else:
        with _overwrite_hint():
            s = add_sketch(args.store, args.output, overwrite=args.overwrite)
    if not args.quiet:
        if s["added"]:
            print(f"{s['output']}: sketch of {s['rows']:,} rows x {s['dim']} added, "
                  f"{human_bytes(s['sketch_bytes'])} in {s['seconds']:.2f} s")
        else:
            print(f"{s['output']}: already has a sketch ({human_bytes(s['sketch_bytes'])}); "
                  "nothing to do")
    return 0
