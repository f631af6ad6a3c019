"""``embq compress INPUT OUTPUT``: stream an embedding file into a store."""

from __future__ import annotations

import argparse
import sys

from embq._utils import human_bytes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compress",
        help="compress an embedding file (word2vec, GloVe, fastText .vec, .npy, .npz, "
        "safetensors, Parquet, Arrow, Hugging Face datasets) into a store",
        description="Read an embedding file block by block, quantize each row to uint8 with its "
        "own scale, and write an embq store. The input format is detected from the content "
        "(word2vec text or binary, GloVe, fastText .vec, .npy; gzip/bz2/xz compressed too; "
        ".npz, safetensors with float32/float16/bfloat16/float64 tensors, Parquet, Arrow IPC "
        "and Feather files, Hugging Face save_to_disk folders, directories and globs of "
        "Parquet files). "
        "Ends with one summary line: rows, sizes, ratio, time and reconstruction error.",
    )
    p.add_argument("input", metavar="INPUT",
                   help="embedding file to read (a pipe works too; - for standard input)")
    p.add_argument("output", metavar="OUTPUT", help="store to write")
    p.add_argument("--format", choices=("word2vec", "glove", "word2vec-binary", "npy",
                                        "safetensors", "npz", "parquet", "arrow",
                                        "arrow-stream", "hf-dataset"),
                   help="input format (default: detected from the content)")
    p.add_argument("--keys", metavar="FILE",
                   help="for .npy, .npz and safetensors input: text file with one key per "
                   "line, one line per row (vocab.txt), or a Hugging Face tokenizer.json")
    p.add_argument("--tensor", metavar="NAME",
                   help="safetensors: the 2-D tensor to read (default: the only 2-D float one)")
    p.add_argument("--array", metavar="NAME",
                   help=".npz: the array to read (default: the only one)")
    p.add_argument("--vector-column", metavar="NAME",
                   help="Parquet/Arrow: the column of vectors (default: the only list-of-floats "
                   "column)")
    p.add_argument("--key-column", metavar="NAME",
                   help="Parquet/Arrow: the column of keys (default: the only string column, "
                   "or none); integer keys become their decimal strings")
    p.add_argument("--limit", type=int, metavar="N", help="read only the first N rows")
    p.add_argument("--encoding", default="utf8", help="text encoding of the keys (default utf8)")
    p.add_argument("--unicode-errors", choices=("strict", "replace", "ignore"), default="strict",
                   help="undecodable key bytes: fail (default), replace with U+FFFD, or drop")
    p.add_argument("--on-duplicate", choices=("warn", "error"), default="warn",
                   help="a repeated key: keep the first and warn with a count (default), or fail")
    p.add_argument("--normalize", action="store_true",
                   help="L2-normalize every row before quantizing")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="print no summary line and no warnings")
    p.add_argument("--progress", action="store_true",
                   help="show a progress bar even when stderr is not a terminal")
    p.add_argument("--block-rows", type=int, metavar="N",
                   help="rows per block (default: up to 8192, about 16 MB of floats)")
    p.set_defaults(func=run)


def summary_line(s: dict) -> str:
    """The one-line summary printed at the end of ``embq compress``."""
    return (
        f"{s['output']}: {s['rows']:,} rows x {s['dim']} from {s['format']} "
        f"{human_bytes(s['input_size'])} -> {human_bytes(s['output_size'])} "
        f"({s['ratio']:.2f}x smaller; {s['ratio_vs_float32']:.2f}x vs float32) in "
        f"{s['seconds']:.2f} s; error |x-x_hat|/scale mean {s['error_mean_abs_over_scale']:.4f} "
        f"max {s['error_max_abs_over_scale']:.4f}, relative L2 {s['error_mean_rel_l2']:.5f}"
    )


def run(args: argparse.Namespace) -> int:
    from embq.cli import CommandError
    from embq._compress import compress

    if args.limit is not None and args.limit < 1:
        raise CommandError(f"--limit must be a positive number of rows, got {args.limit}")
    if args.block_rows is not None and args.block_rows < 1:
        raise CommandError(f"--block-rows must be a positive number, got {args.block_rows}")

    def warn(msg: str) -> None:
        if not args.quiet:
            print(f"embq compress: warning: {msg}", file=sys.stderr)

    progress = args.progress or (not args.quiet and sys.stderr.isatty())
    summary = compress(
        args.input, args.output, format=args.format, keys=args.keys, limit=args.limit,
        encoding=args.encoding, unicode_errors=args.unicode_errors,
        on_duplicate=args.on_duplicate, normalize=args.normalize, overwrite=args.overwrite,
        block_rows=args.block_rows, progress=progress, warn=warn, tensor=args.tensor,
        array=args.array, vector_column=args.vector_column, key_column=args.key_column,
    )
    if not args.quiet:
        print(summary_line(summary))
    return 0
