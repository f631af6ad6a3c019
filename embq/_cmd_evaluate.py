"""``embq evaluate STORE``: what compression lost, as a table or JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure a store on word-pair and analogy tests, and against the original",
        description="Evaluate a store: Spearman/Pearson on word-similarity files, analogy "
        "accuracy (3CosAdd, gensim's rules), and with --against the original file: "
        "reconstruction error, recall@k of the int8 search against exact float search, and "
        "the same test figures on the original floats side by side.",
    )
    p.add_argument("store", help="path of an embq store")
    p.add_argument("--against", metavar="ORIGINAL",
                   help="the embedding file the store was made from (any format compress reads)")
    p.add_argument("--pairs", metavar="FILE", action="append", default=[],
                   help="word-similarity file (word1<TAB>word2<TAB>score); repeatable")
    p.add_argument("--analogies", metavar="FILE",
                   help="analogy file in the questions-words.txt format")
    p.add_argument("--sample", type=int, default=1000, metavar="N",
                   help="rows used as queries for recall@k (default 1000; 0 skips it)")
    p.add_argument("-k", type=int, default=10, help="k of recall@k (default 10)")
    p.add_argument("--rescore", type=int, default=4, metavar="R",
                   help="also measure recall with rescore=R (default 4; 0 skips it)")
    p.add_argument("--restrict-vocab", type=int, default=300000, metavar="N",
                   help="only the first N keys count for pairs and analogies (default 300000)")
    p.add_argument("--case-sensitive", action="store_true",
                   help="match test words exactly (default: upper-cased, as gensim)")
    p.add_argument("--seed", type=int, default=0, help="seed of the recall query sample")
    p.add_argument("--threads", type=int, default=None, help="search threads (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def _fmt(v: Any, spec: str = ".4f", signed: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v != v:
        return "nan"
    return format(v, ("+" if signed else "") + spec)


def _pct(v: Any, signed: bool = False) -> str:
    return "-" if v is None else format(100.0 * v, "+.1f" if signed else ".1f")


def render(result: dict) -> str:
    """The readable report of :func:`embq.evaluate.evaluate_store`'s result."""
    out: list[str] = []
    against = "original" in result
    out.append(f"store     {result['store']}  ({result['rows']:,} rows x {result['dim']})")
    if against:
        out.append(f"original  {result['original']}")
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
            if "error" in st:
                out.append(f"  {name}: {st['error']}")
                continue
            for metric in ("spearman", "pearson"):
                line = f"  {(name + ' ' + metric):<28s} {_fmt(st[metric]):>8s}"
                if against:
                    orig = entry["original"]
                    diff = entry.get("diff", {}).get(metric)
                    line += f" {_fmt(orig.get(metric)):>9s} {_fmt(diff, signed=True):>8s}"
                if metric == "spearman":
                    line += f"   {st['used']}/{st['pairs']}"
                out.append(line)
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
    import embq
    from embq.cli import CommandError
    from embq.evaluate import evaluate_store

    for path in [args.against, args.analogies, *args.pairs]:
        if path is not None and not os.path.exists(path):
            raise CommandError(f"{path}: no such file")
    if args.sample < 0:
        raise CommandError(f"--sample must be >= 0, got {args.sample}")
    if args.k < 1:
        raise CommandError(f"-k must be >= 1, got {args.k}")
    if args.rescore < 0:
        raise CommandError(f"--rescore must be >= 0, got {args.rescore}")
    with embq.open(args.store) as store:
        result = evaluate_store(
            store,
            original=args.against,
            pairs=args.pairs,
            analogies=args.analogies,
            sample=args.sample,
            rescore=args.rescore or None,
            k=args.k,
            restrict_vocab=args.restrict_vocab,
            case_insensitive=not args.case_sensitive,
            seed=args.seed,
            n_threads=args.threads,
        )
        result["store"] = os.fspath(args.store)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(render(result))
    sys.stdout.flush()
    return 0
