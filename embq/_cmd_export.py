"""``embq export STORE OUTPUT --format F``: write the dequantized vectors back out."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a store's dequantized vectors as word2vec, GloVe, word2vec binary or .npy",
        description="Stream the dequantized rows of a store into an embedding file that "
        "`embq compress` (and gensim) read back. Text values carry 9 significant digits, so "
        "they read back as the same float32. With --format npy the keys go to a text file, "
        "one per line (OUTPUT without .npy, plus .keys.txt, unless --keys is given).",
    )
    p.add_argument("store", metavar="STORE", help="embq store to read")
    p.add_argument("output", metavar="OUTPUT", help="file to write")
    p.add_argument("--format", required=True,
                   choices=("word2vec", "word2vec-binary", "glove", "npy"),
                   help="output format")
    p.add_argument("--keys", metavar="FILE", help="with --format npy: where to write the keys")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--quiet", "-q", action="store_true", help="print no summary line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from embq._export import export
    from embq._utils import human_bytes

    if args.keys is not None and args.format != "npy":
        from embq.cli import CommandError

        raise CommandError("--keys is only used with --format npy")
    s = export(args.store, args.output, format=args.format, overwrite=args.overwrite,
               keys_path=args.keys)
    if not args.quiet:
        extra = f" (keys in {s['keys_path']})" if s["keys_path"] else ""
        print(f"{s['output']}: {s['rows']:,} rows x {s['dim']} as {s['format']}, "
              f"{human_bytes(s['size'])}{extra}")
    return 0
