"""``embq export STORE OUTPUT --format F``: write the dequantized vectors back out."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a store's dequantized vectors as word2vec, GloVe, word2vec binary, .npy, "
        "Parquet or safetensors",
        description="Stream the dequantized rows of a store into an embedding file that "
        "`embq compress` (and gensim) read back. Text values carry 9 significant digits, so "
        "they read back as the same float32. With --format npy the keys go to a text file, "
        "one per line (OUTPUT without .npy, plus .keys.txt, unless --keys is given); with "
        "--format safetensors to vocab.txt beside OUTPUT. --format parquet writes a key "
        "column and a fixed_size_list<float32> vector column, in row groups.",
    )
    p.add_argument("store", metavar="STORE", help="embq store to read")
    p.add_argument("output", metavar="OUTPUT", help="file to write")
    p.add_argument("--format", required=True,
                   choices=("word2vec", "word2vec-binary", "glove", "npy", "parquet",
                            "safetensors"),
                   help="output format")
    p.add_argument("--keys", metavar="FILE",
                   help="with --format npy or safetensors: where to write the keys (default "
                   "OUTPUT.keys.txt for npy, vocab.txt beside OUTPUT for safetensors)")
    p.add_argument("--tensor-name", metavar="NAME", default="embeddings",
                   help="with --format safetensors: the name of the tensor (default embeddings)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--quiet", "-q", action="store_true", help="print no summary line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from embq._export import export
    from embq._utils import human_bytes

    if args.keys is not None and args.format not in ("npy", "safetensors"):
        from embq.cli import CommandError

        raise CommandError("--keys is only used with --format npy or safetensors")
    if args.tensor_name != "embeddings" and args.format != "safetensors":
        from embq.cli import CommandError

        raise CommandError("--tensor-name is only used with --format safetensors")
    s = export(args.store, args.output, format=args.format, overwrite=args.overwrite,
               keys_path=args.keys, tensor_name=args.tensor_name)
    if not args.quiet:
        extra = f" (keys in {s['keys_path']})" if s["keys_path"] else ""
        print(f"{s['output']}: {s['rows']:,} rows x {s['dim']} as {s['format']}, "
              f"{human_bytes(s['size'])}{extra}")
    return 0
