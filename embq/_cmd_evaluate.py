"""``embq evaluate STORE``: what compression lost, as a table or JSON."""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
from typing import Any

from embq._cmd_compress import add_cluster_arguments, open_searched
from embq._readers import FORMATS, UNICODE_ERRORS
from embq._source import READER_OPTIONS

# argparse details of compress's reader options; their names, help and defaults are
# embq._source.READER_OPTIONS, shared with compare_with_original.
_READER_ARGUMENTS: dict[str, dict[str, Any]] = {
    "format": {"choices": FORMATS},
    "keys": {"metavar": "FILE"},
    "limit": {"type": int, "metavar": "N"},
    "encoding": {},
    "unicode_errors": {"choices": UNICODE_ERRORS},
    "tensor": {"metavar": "NAME"},
    "array": {"metavar": "NAME"},
    "vector_column": {"metavar": "NAME"},
    "key_column": {"metavar": "NAME"},
}


def flag(name: str) -> str:
    """The command line's spelling of an option of the Python API (``--unicode-errors``)."""
    return "--against ORIGINAL" if name == "original" else "--" + name.replace("_", "-")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure a store on word-pair and analogy tests, and against the original",
        description="Evaluate a store: Spearman/Pearson on word-similarity files, analogy "
        "accuracy (3CosAdd, gensim's rules), and with --against the original file: "
        "reconstruction error, recall@k of the int8 search against exact float search, and "
        "the same test figures on the original floats side by side.",
    )
    p.add_argument("store", help="path of an embq store (a file, or a sharded store's "
                   "directory)")
    p.add_argument("--against", metavar="ORIGINAL",
                   help="the embedding file the store was made from (any format compress reads); "
                   "its first --limit rows are used, later duplicate keys dropped and rows "
                   "normalized as compress did")
    src = p.add_argument_group(
        "reading ORIGINAL",
        "compress's options, same names and meaning. Not given, they come from what the store "
        "records about its source: --limit from source_limit, and when ORIGINAL is the "
        "store's source file, --format, --keys, --encoding and --unicode-errors from "
        "source_format, source_keys_path, source_encoding and source_unicode_errors; "
        "otherwise the format is detected, UTF-8, strict.")
    for name, option in READER_OPTIONS.items():
        src.add_argument(flag(name), dest=name, help=option.help, **_READER_ARGUMENTS[name])
    p.add_argument("--pairs", metavar="FILE", action="append", default=[],
                   help="word-similarity file (word1<TAB>word2<TAB>score); repeatable")
    p.add_argument("--analogies", metavar="FILE",
                   help="analogy file in the questions-words.txt format")
    p.add_argument("--sample", type=int, default=1000, metavar="N",
                   help="rows used as queries for recall@k (default 1000; 0 skips it)")
    p.add_argument("-k", type=int, default=10,
                   help="k of recall@k (default 10; below the store's row count)")
    p.add_argument("--rescore", type=int, default=4, metavar="R",
                   help="also measure recall with rescore=R (default 4; 0 skips it)")
    p.add_argument("--restrict-vocab", type=int, default=300000, metavar="N",
                   help="only the first N keys count for pairs and analogies (default 300000; "
                   "a positive number)")
    p.add_argument("--case-sensitive", action="store_true",
                   help="match test words exactly (default: upper-cased, as gensim)")
    p.add_argument("--seed", type=int, default=0, help="seed of the recall query sample")
    p.add_argument("--threads", type=int, default=None,
                   help="search threads, a positive count (default: all cores)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_cluster_arguments(p, "search a sharded store's shards", "the shard files")
    p.set_defaults(func=run)


def _fmt(v: Any, spec: str = ".4f", signed: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v != v:
        return "nan"
    return format(v, ("+" if signed else "") + spec)


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def json_ready(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None, so that it prints as
    strict JSON (``null``) instead of Python's ``NaN``, which JSON parsers reject."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def _pct(v: Any, signed: bool = False) -> str:
    return "-" if v is None else format(100.0 * v, "+.1f" if signed else ".1f")


def render(result: dict) -> str:
    """The readable report of :func:`embq._evaluate.evaluate_store`'s or
    :func:`embq._compare.compare_with_original`'s result."""
    out: list[str] = []
    against = "original" in result
    out.append(f"store     {result['store']}  ({result['rows']:,} rows x {result['dim']})")
    if against:
        out.append(f"original  {result['original']}")
        for note in result.get("original_notes", []):
            out.append(f"          {note}")
    rec = result.get("reconstruction")
    if rec:
        out.append("")
        out.append("reconstruction error")
        out.append(f"  mean |x - x_hat| / scale   {rec['error_mean_abs_over_scale']:.4f}")
        out.append(f"  max  |x - x_hat| / scale   {rec['error_max_abs_over_scale']:.4f}")
        out.append(f"  mean relative L2 error     {rec['error_mean_rel_l2']:.6f}")
        out.append(f"  mean cosine(x, x_hat)      {rec['error_mean_cosine']:.6f}")
    recall = result.get("recall")
    if recall:
        out.append("")
        out.append(f"recall@{recall['k']} against exact float cosine search "
                   f"({recall['queries']:,} rows as queries)")
        out.append(f"  int8 search                {_fmt(recall['recall'])}")
        if recall.get("rescore"):
            out.append(f"  rescore={recall['rescore']:<18d} {_fmt(recall['recall_rescore'])}")
    if result.get("pairs"):
        out.append("")
        head = f"  {'word pairs':<28s} {'store':>8s}"
        if against:
            head += f" {'original':>9s} {'diff':>8s}"
        out.append(head + "   pairs used")
        for entry in result["pairs"]:
            name = os.path.basename(entry["file"])
            st = entry["store"]
            for metric in ("spearman", "pearson"):
                line = f"  {(name + ' ' + metric):<28s} {_fmt(st[metric]):>8s}"
                if against:
                    orig = entry["original"]
                    diff = entry.get("diff", {}).get(metric)
                    line += f" {_fmt(orig.get(metric)):>9s} {_fmt(diff, signed=True):>8s}"
                if metric == "spearman":
                    line += f"   {st['used']}/{st['pairs']}"
                out.append(line)
        if any(_is_nan(side.get(m)) for entry in result["pairs"]
               for side in (entry["store"], entry.get("original", {}))
               for m in ("spearman", "pearson")):
            out.append("  (nan: a correlation is undefined when the human scores or the "
                       "similarities are all equal)")
    ana = result.get("analogies")
    if ana:
        st = ana["store"]
        out.append("")
        head = f"  {'analogies ' + os.path.basename(ana['file']):<34s} {'store':>7s}"
        if against:
            head += f" {'original':>9s} {'diff':>7s}"
        out.append(head + "   answered")
        for sec in st["sections"]:
            line = f"  {sec['section'][:34]:<34s} {_pct(sec['accuracy']):>7s}"
            if against:
                o = sec.get("original_accuracy")
                d = None if o is None or sec["accuracy"] is None else sec["accuracy"] - o
                line += f" {_pct(o):>9s} {_pct(d, signed=True):>7s}"
            out.append(line + f"   {sec['correct']}/{sec['total']}")
        out.append(f"  ({st['questions'] - st['answered']} of {st['questions']} questions "
                   "skipped: a word outside the vocabulary)")
    if not (rec or recall or result.get("pairs") or ana):
        out.append("")
        out.append("nothing to evaluate: give --pairs, --analogies and/or --against")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    import warnings

    from scipy import stats as scipy_stats

    from embq._compare import compare_with_original
    from embq._evaluate import evaluate_store
    from embq._source import check_reader_options
    from embq.cli import CommandError

    try:
        check_reader_options({name: getattr(args, name) for name in READER_OPTIONS},
                             args.against, spell=flag)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    # ORIGINAL may be a glob of Parquet files, read as one input as compress reads it.
    if (args.against is not None and not os.path.exists(args.against)
            and not glob.glob(args.against)):
        raise CommandError(f"{args.against}: no such file (nor files matching it)")
    for path in [args.keys, args.analogies, *args.pairs]:
        if path is not None and not os.path.exists(path):
            raise CommandError(f"{path}: no such file")
    if args.sample < 0:
        raise CommandError(f"--sample must be >= 0, got {args.sample}")
    if args.k < 1:
        raise CommandError(f"-k must be >= 1, got {args.k}")
    if args.rescore < 0:
        raise CommandError(f"--rescore must be >= 0, got {args.rescore}")
    # gensim's API slices with restrict_vocab (negative = all but the last keys); on the
    # command line a count that is not positive is a mistake, so it is refused.
    if args.restrict_vocab < 1:
        raise CommandError(
            f"--restrict-vocab must be a positive number of keys, got {args.restrict_vocab}")
    # Checked here, not left to the search: its message speaks of the Python API (None).
    if args.threads is not None and args.threads < 1:
        raise CommandError(f"--threads must be a positive count, got {args.threads}; use a "
                           "positive count or omit --threads to use all cores")
    with open_searched(args) as store, warnings.catch_warnings():
        # scipy warns when a correlation is undefined (constant input); the report says so
        # in its own words (nan / null), so its warning would only repeat it as noise.
        warnings.simplefilter("ignore", getattr(scipy_stats, "ConstantInputWarning", Warning))
        if args.against is not None and args.sample and args.k >= len(store):
            raise CommandError(
                f"-k {args.k} is not below the store's {len(store):,} rows: recall@{args.k} "
                f"would count every row as a true neighbour; use -k below {len(store):,} or "
                "--sample 0 to skip recall")
        if args.against is None:
            result = evaluate_store(
                store,
                pairs=args.pairs,
                analogies=args.analogies,
                restrict_vocab=args.restrict_vocab,
                case_insensitive=not args.case_sensitive,
                n_threads=args.threads,
            )
        else:
            result = compare_with_original(
                store,
                args.against,
                pairs=args.pairs,
                analogies=args.analogies,
                sample=args.sample,
                rescore=args.rescore or None,
                k=args.k,
                restrict_vocab=args.restrict_vocab,
                case_insensitive=not args.case_sensitive,
                seed=args.seed,
                n_threads=args.threads,
                **{name: getattr(args, name) for name in READER_OPTIONS},
            )
        result["store"] = os.fspath(args.store)
    if args.json:
        # allow_nan=False: any non-finite float json_ready missed fails loudly here instead
        # of printing invalid JSON.
        print(json.dumps(json_ready(result), indent=2, allow_nan=False))
    else:
        print(render(result))
    sys.stdout.flush()
    return 0
