"""``embq query STORE WORD... [-k 10] [--metric cosine|dot|l2] [--threshold T] [--allow-keys FILE]
[--cosmul] [--doesnt-match] [--prefilter sketch [--oversample N]] [--json]
[--vectors FILE.npy]``."""

from __future__ import annotations

import argparse
import json
import math
import sys

from embq._cmd_compress import add_cluster_arguments, open_searched


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "query",
        help="print the nearest neighbours of words or vectors in a store",
        description="Print the k nearest rows of a store for each WORD (the word itself left "
        "out) and/or each vector of a .npy file, searched on the quantized codes.",
    )
    p.add_argument("store", help="path of an embq store (a file, or a sharded store's "
                   "directory)")
    p.add_argument("words", nargs="*", metavar="WORD", help="keys to look up and search for")
    p.add_argument("-k", type=int, default=None,
                   help="neighbours per query (default 10; with --threshold, a cap)")
    p.add_argument("--metric", choices=("cosine", "dot", "l2"), default="cosine",
                   help="similarity, or l2 = squared Euclidean distance, smallest first "
                   "(default cosine)")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="every row scoring at least T (cosine, dot) or within squared "
                   "distance T (l2), instead of the top k")
    p.add_argument("--allow-keys", metavar="FILE",
                   help="return only these keys: a UTF-8 text file, one key per line")
    p.add_argument("--cosmul", action="store_true",
                   help="one query from all WORDs by 3CosMul (gensim's most_similar_cosmul)")
    p.add_argument("--doesnt-match", nargs="+", metavar="WORD", default=None,
                   help="print which of these words does not match the others (gensim's "
                   "doesnt_match)")
    p.add_argument("--vectors", metavar="FILE.npy",
                   help="also search for the vectors in this .npy file, shape (d,) or (m, d)")
    p.add_argument("--rescore", type=int, default=4, metavar="R",
                   help="re-rank the best k*R by float scores (default 4; 0 = int8 scores only)")
    p.add_argument("--restrict", type=int, default=None, metavar="N",
                   help="search only the first N rows (a positive number)")
    p.add_argument("--prefilter", choices=("sketch",), default=None,
                   help="scan the store's sign-bit sketch first, then score only the "
                   "k*OVERSAMPLE nearest rows exactly (top-k cosine or dot; the store needs "
                   "a sketch: embq compress writes one, embq sketch STORE adds one)")
    p.add_argument("--oversample", type=int, default=None, metavar="N",
                   help="candidates per neighbour with --prefilter sketch (default 300)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads (default: all cores; a negative count counts back from all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_cluster_arguments(p, "search a sharded store's shards", "the shard files")
    p.set_defaults(func=run)


def _load_vectors(path: str, dim: int):
    """Read the ``--vectors`` file: a numeric .npy array of shape (d,) or (m, d), as float32.

    Every way the file can be unusable is a :class:`~embq._errors.FormatError` naming the file
    (and the row, for a bad value), so the command prints one line and exits 2.
    """
    import numpy as np

    from embq._errors import FormatError

    expected = "expected a .npy array written by numpy.save"
    try:
        obj = np.load(path, allow_pickle=False)
    except OSError:
        raise  # missing file, a directory, no permission: the CLI names the file and the reason
    except Exception as exc:
        # np.load fails on damaged input with whatever its parser hits first (EOFError for an
        # empty file, ValueError for a bad header or short data, zipfile errors, MemoryError
        # for an absurd shape...); none of them is a bug of ours, all mean "not a .npy".
        reason = str(exc) or type(exc).__name__
        raise FormatError(f"cannot read it as a .npy array ({reason}); {expected}",
                          path=path) from None
    if isinstance(obj, np.lib.npyio.NpzFile):
        names = ", ".join(obj.files) or "none"
        obj.close()
        raise FormatError(f"is an .npz archive (arrays: {names}), {expected}; save one array "
                          "of the archive with numpy.save", path=path)
    arr = obj
    if arr.dtype.kind not in "fiu":
        raise FormatError(f"expected a float array, got dtype {arr.dtype}", path=path)
    single = arr.ndim == 1
    rows = arr[None, :] if single else arr
    if rows.ndim != 2 or rows.shape[1] != dim:
        raise FormatError(f"expected shape ({dim},) or (m, {dim}) to match the store, got "
                          f"{arr.shape}", path=path)
    # Check here, not in the search, so the message names this file and the row within it
    # (the search numbers queries after the WORDs). Casting first finds float64 values that
    # do not fit float32 as well as NaN and Inf, without numpy's overflow warning.
    with np.errstate(over="ignore", invalid="ignore"):
        out = rows.astype(np.float32)
    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        i = int(np.argmin(finite))
        where = "the vector" if single else f"row {i}"
        if np.isfinite(rows[i]).all():
            big = float(np.abs(rows[i]).max())
            why = (f"overflows float32: a value of magnitude {big:.6g}, expected at most "
                   f"{float(np.finfo(np.float32).max):.6g}")
        else:
            why = "contains NaN or Inf, expected finite values"
        raise FormatError(f"{where} {why}", path=path)
    return out


def _read_allow_keys(path: str, store, store_path: str):
    """Rows of the keys in ``path`` (one per line, UTF-8; blank lines skipped)."""
    import numpy as np

    from embq.cli import CommandError

    try:
        with open(path, encoding="utf-8", newline="") as fh:
            lines = fh.read().splitlines()
    except UnicodeDecodeError as exc:
        raise CommandError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                           "expected one key per line") from None
    numbered = [(lineno, key) for lineno, key in enumerate(lines, 1) if key]
    # one batch lookup (a file of 500,000 keys: 0.1 s, where one lookup per line took 0.6 s)
    rows = store._rows_of_keys([key for _, key in numbered])
    missing = np.flatnonzero(rows < 0)
    if missing.size:
        lineno, key = numbered[int(missing[0])]
        raise CommandError(f"{path} line {lineno}: key {key!r} is not in {store_path}")
    return rows


def _check_modes(args: argparse.Namespace) -> None:
    """Refuse combinations that have no meaning, in flag terms (exit 2, one line)."""
    from embq.cli import CommandError

    if args.oversample is not None and args.prefilter is None:
        raise CommandError("--oversample sets the candidates of --prefilter sketch; add "
                           "--prefilter sketch")
    if args.oversample is not None and args.oversample < 1:
        raise CommandError(f"--oversample must be >= 1, got {args.oversample}")
    if args.prefilter is not None:
        clash = [f for f, on in (("--threshold", args.threshold is not None),
                                 ("--metric l2", args.metric == "l2"),
                                 ("--cosmul", args.cosmul),
                                 ("--doesnt-match", args.doesnt_match)) if on]
        if clash:
            raise CommandError(f"--prefilter sketch ranks top-k cosine or dot neighbours by "
                               f"angle; it does not combine with {clash[0]}")
    if args.threshold is not None and not math.isfinite(args.threshold):
        raise CommandError(f"--threshold must be a finite number, got {args.threshold}")
    special = [f for f, on in (("--cosmul", args.cosmul), ("--doesnt-match", args.doesnt_match))
               if on]
    if len(special) == 2:
        raise CommandError("--cosmul and --doesnt-match are different questions; give one")
    if args.doesnt_match and args.words:
        raise CommandError("--doesnt-match takes its words after it "
                           "(embq query STORE --doesnt-match W1 W2 W3), not other WORDs")
    if special:
        flag = special[0]
        if args.cosmul and not args.words:
            raise CommandError("--cosmul needs WORDs")
        for name, on in (("--vectors", args.vectors), ("--threshold", args.threshold is not None),
                         ("--allow-keys", args.allow_keys),
                         ("--metric " + args.metric, args.metric != "cosine")):
            if on:
                raise CommandError(f"{flag} does not take {name}")


def _has_sketch(store) -> bool:
    """Whether ``store`` (a Store, or a ShardedStore with one sketch over all its shards)
    can answer a prefiltered search."""
    manifest = getattr(store, "manifest", None)
    return bool(manifest.sketch) if manifest is not None else store.sketch is not None


def _display_width(text: str) -> int:
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _display_width(text))


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from embq.cli import CommandError

    if not args.words and not args.vectors and not args.doesnt_match:
        raise CommandError("give at least one WORD or --vectors FILE.npy")
    if args.k is not None and args.k < 1:
        raise CommandError(f"-k must be >= 1, got {args.k}")
    _check_modes(args)
    cap = args.k if args.threshold is not None else None
    if args.k is None:
        args.k = 10
    if args.rescore < 0:
        raise CommandError(f"--rescore must be >= 0, got {args.rescore}")
    # Checked here, not left to the search, whose messages speak of the Python API
    # (restrict=, n_threads=).
    if args.restrict is not None and args.restrict < 1:
        raise CommandError(f"--restrict must be a positive number of rows, got {args.restrict}")
    if args.threads == 0:
        raise CommandError("--threads 0 is not a thread count; give a positive count, a "
                           "negative one to count back from all cores (-1 = all), or omit "
                           "--threads to use all cores")

    with open_searched(args) as store:
        if args.doesnt_match or args.cosmul:
            return _run_gensim_style(args, store)
        allow = None
        if args.allow_keys:
            allow = _read_allow_keys(args.allow_keys, store, args.store)
        if args.prefilter and not _has_sketch(store):
            raise CommandError(f"--prefilter sketch: {args.store} has no sketch; add one with "
                               f"embq sketch {args.store}")
        labels: list[str] = []
        own: list[int] = []
        parts = []
        if args.words:
            if store.has_keys:
                missing = [w for w in args.words if store.get_index(w, -1) < 0]
            else:
                missing = list(args.words)
            if missing:
                names = ", ".join(repr(w) for w in missing)
                plural = "s" if len(missing) > 1 else ""
                why = "" if store.has_keys else " (this store has no keys)"
                raise KeyError(f"word{plural} not in {args.store}{why}: {names}")
            rows = np.array([store.get_index(w) for w in args.words], dtype=np.int64)
            parts.append(np.asarray(store[rows], dtype=np.float32))
            labels += list(args.words)
            own += [int(r) for r in rows]
        if args.vectors:
            vecs = _load_vectors(args.vectors, store.dim)
            parts.append(vecs)
            labels += [f"{args.vectors}[{i}]" for i in range(len(vecs))]
            own += [-1] * len(vecs)
        queries = np.concatenate(parts, axis=0)
        if args.threshold is not None:
            # the query word's own row may pass the threshold: ask for one more, then drop it
            scores, found = store.search(
                queries, metric=args.metric, restrict=args.restrict, n_threads=args.threads,
                allow=allow, threshold=args.threshold,
                max_results=None if cap is None else cap + 1)
            if cap is None:
                args.k = max([len(f) for f in found] + [0])
        else:
            extra = {} if allow is None else {"allow": allow}
            if args.prefilter:
                extra.update(prefilter=args.prefilter, oversample=args.oversample)
            scores, found = store.search(queries, args.k + 1, metric=args.metric,
                                         rescore=args.rescore or None, restrict=args.restrict,
                                         n_threads=args.threads, **extra)
        keys = store.index_to_key
        results = []
        for qi, label in enumerate(labels):
            hits = [(int(r), float(s)) for s, r in zip(scores[qi], found[qi]) if int(r) != own[qi]]
            hits = hits[: args.k]
            results.append({
                "query": label,
                "results": [{"key": keys[r] if keys is not None else r, "index": r, "score": s}
                            for r, s in hits],
            })

    return _print_results(args, results)


def _run_gensim_style(args: argparse.Namespace, store) -> int:
    """``--doesnt-match`` and ``--cosmul``: one question about all the words together."""
    words = list(args.doesnt_match or args.words)
    missing = [w for w in words if store.get_index(w, -1) < 0] if store.has_keys else words
    if missing:
        names = ", ".join(repr(w) for w in missing)
        raise KeyError(f"word{'s' if len(missing) > 1 else ''} not in {args.store}: {names}")
    if args.doesnt_match:
        odd = store.doesnt_match(words)
        if args.json:
            json.dump({"store": args.store, "words": words, "doesnt_match": odd},
                      sys.stdout, ensure_ascii=False, indent=2)
            sys.stdout.write("\n")
        else:
            print(odd)
        return 0
    from embq._keyedvectors import most_similar_cosmul

    hits = most_similar_cosmul(store, positive=list(args.words), topn=args.k,
                               restrict_vocab=args.restrict, rescore=args.rescore or None,
                               n_threads=args.threads)
    results = [{"query": "cosmul(" + ", ".join(args.words) + ")",
                "results": [{"key": k, "index": store.get_index(k), "score": s}
                            for k, s in hits]}]
    args.metric = "cosmul"
    return _print_results(args, results)


def _print_results(args: argparse.Namespace, results: list) -> int:
    if args.json:
        json.dump({"store": args.store, "metric": args.metric, "k": args.k, "queries": results},
                  sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0
    what = (f"score >= {args.threshold:g}" if args.threshold is not None and args.metric != "l2"
            else f"distance <= {args.threshold:g}" if args.threshold is not None
            else f"top {args.k}")
    for i, res in enumerate(results):
        if i:
            print()
        print(f"{res['query']}  ({args.metric}, {what})")
        width = max([_display_width(str(h["key"])) for h in res["results"]] + [3])
        print(f"  {'rank':>4}  {_pad('key', width)}  {'score':>8}  {'row':>8}")
        for rank, h in enumerate(res["results"], 1):
            print(f"  {rank:>4}  {_pad(str(h['key']), width)}  {h['score']:>8.4f}  {h['index']:>8}")
    return 0
