"""``embq compress INPUT [INPUT ...] OUTPUT``: stream embedding files into a store.

One input makes a single-file store. Several inputs, or ``--shard-rows``, make a sharded
store (a directory), built by the task functions of :mod:`embq._dist_compress`: in this
process one after the other, on a local Dask cluster (``--workers N``) or on a running one
(``--scheduler ADDRESS``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

from embq._utils import human_bytes, size_ratio

_CONNECT_SECONDS = 30  # how long --scheduler waits for the scheduler to answer


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
    p.add_argument("inputs", metavar="INPUT", nargs="+",
                   help="embedding file to read (a pipe works too; - for standard input); "
                   "several files make a sharded store of their rows in this order")
    p.add_argument("output", metavar="OUTPUT",
                   help="store to write (a directory when the store is sharded)")
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
    p.add_argument("--shard-rows", type=int, metavar="N",
                   help="write a sharded store with at most N rows per shard; uncompressed "
                   "text and .npy inputs larger than that are split and read in parallel")
    add_cluster_arguments(p, "build the sharded store", "the input and output paths")
    p.set_defaults(func=run)


def add_cluster_arguments(p: argparse.ArgumentParser, what: str, paths: str) -> None:
    """``--workers N`` and ``--scheduler ADDRESS`` (one or the other), which
    :func:`dask_client` reads: ``what`` the cluster does, ``paths`` its workers must see."""
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, metavar="N",
                       help=f"{what} on a local Dask cluster of N processes")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help=f"{what} on the Dask cluster at ADDRESS (every worker must see "
                       f"{paths})")


def summary_line(s: dict) -> str:
    """The one-line summary printed at the end of ``embq compress``."""
    shards = f" in {s['shards']:,} shard{'s' if s['shards'] != 1 else ''}" if "shards" in s \
        else ""
    return (
        f"{s['output']}: {s['rows']:,} rows x {s['dim']}{shards} from {s['format']} "
        f"{human_bytes(s['input_size'])} -> {human_bytes(s['output_size'])} "
        f"({size_ratio(s['input_size'], s['output_size'])}; "
        f"{size_ratio(4 * s['rows'] * s['dim'], s['output_size'], 'float32')}) in "
        f"{s['seconds']:.2f} s; error |x-x_hat|/scale mean {s['error_mean_abs_over_scale']:.4f} "
        f"max {s['error_max_abs_over_scale']:.4f}, relative L2 {s['error_mean_rel_l2']:.5f}"
    )


def run(args: argparse.Namespace) -> int:
    from embq._compress import compress
    from embq.cli import CommandError

    if args.limit is not None and args.limit < 1:
        raise CommandError(f"--limit must be a positive number of rows, got {args.limit}")
    if args.block_rows is not None and args.block_rows < 1:
        raise CommandError(f"--block-rows must be a positive number, got {args.block_rows}")
    if args.shard_rows is not None and args.shard_rows < 1:
        raise CommandError(f"--shard-rows must be a positive number of rows, got "
                           f"{args.shard_rows}")
    inputs = args.inputs[0] if len(args.inputs) == 1 else args.inputs
    if len(args.inputs) > 1 and args.keys is not None:
        raise CommandError("--keys names the keys of one .npy input; it cannot be used with "
                           "several inputs")

    def warn(msg: str) -> None:
        if not args.quiet:
            print(f"embq compress: warning: {msg}", file=sys.stderr)

    progress = args.progress or (not args.quiet and sys.stderr.isatty())
    with dask_client(args) as client, _overwrite_hint():
        summary = compress(
            inputs, args.output, format=args.format, keys=args.keys, limit=args.limit,
            encoding=args.encoding, unicode_errors=args.unicode_errors,
            on_duplicate=args.on_duplicate, normalize=args.normalize, overwrite=args.overwrite,
            block_rows=args.block_rows, progress=progress, warn=warn,
            shard_rows=args.shard_rows, client=client, tensor=args.tensor, array=args.array,
            vector_column=args.vector_column, key_column=args.key_column,
        )
    if not args.quiet:
        print(summary_line(summary))
    return 0


@contextlib.contextmanager
def _overwrite_hint() -> Iterator[None]:
    """Say ``--overwrite`` where the library says ``overwrite=True``."""
    from embq.cli import CommandError

    try:
        yield
    except FileExistsError as exc:
        raise CommandError(f"{exc.filename} already exists; pass --overwrite to replace it"
                           if exc.filename else str(exc)) from None


@contextlib.contextmanager
def dask_client(args: argparse.Namespace) -> Iterator[Any]:
    """The Dask client ``--workers`` or ``--scheduler`` asks for (None without either)."""
    from embq.cli import CommandError

    if args.workers is None and args.scheduler is None:
        yield None
        return
    if args.workers is not None and args.workers < 1:
        raise CommandError(f"--workers must be a positive number, got {args.workers}")
    flag = "--workers" if args.workers is not None else "--scheduler"
    try:
        import distributed
    except ImportError:
        raise CommandError(f"{flag} needs Dask's distributed package: pip install "
                           "'embq[distributed]'") from None
    # The cluster's own log lines would mix with the progress bar and the summary.
    logging.getLogger("distributed").setLevel(logging.ERROR)
    with contextlib.ExitStack() as stack:
        if args.workers is not None:
            cluster = stack.enter_context(distributed.LocalCluster(
                n_workers=args.workers, threads_per_worker=1, processes=True,
                dashboard_address=":0"))
            client = stack.enter_context(distributed.Client(cluster))
        else:
            try:
                client = stack.enter_context(distributed.Client(args.scheduler,
                                                                timeout=_CONNECT_SECONDS))
            except (OSError, ValueError) as exc:
                raise CommandError(f"cannot connect to the Dask scheduler at "
                                   f"{args.scheduler!r}: {exc}") from None
        yield client


@contextlib.contextmanager
def open_searched(args: argparse.Namespace) -> Iterator[Any]:
    """``embq.open(args.store)``, on the cluster ``--workers`` or ``--scheduler`` asks for
    (which only a sharded store can use: its shards are what the workers search)."""
    import embq
    from embq._manifest import is_sharded
    from embq.cli import CommandError

    if (args.workers is not None or args.scheduler is not None) and not is_sharded(args.store):
        flag = "--workers" if args.workers is not None else "--scheduler"
        raise CommandError(f"{flag} searches the shards of a sharded store on a cluster, but "
                           f"{args.store} is not a sharded store; omit {flag} to search it "
                           "here")
    with dask_client(args) as client, embq.open(args.store, client=client) as store:
        yield store
