#!/usr/bin/env python
"""Coverage-guided fuzzing of every embq input reader, with atheris (libFuzzer for Python).

Targets (``--targets``, default all):

* ``word2vec``, ``glove``, ``vec`` (fastText), ``word2vec-binary``, ``npy``: the fuzzed bytes are
  written to a file and read with :func:`embq.load_embeddings`, once with format detection and
  once with the target's format forced;
* ``pairs``, ``analogies``: :func:`embq._evaluate.read_word_pairs` / ``read_analogies``;
* ``store``: :func:`embq.open` on the bytes, then the lookups a caller makes (length, keys,
  ``get_vector``, ``most_similar``);
* ``selftest`` (not in the default list): checks the harness itself; its seed raises an
  undocumented exception, which must be reported as a crash.

The first byte of an input chooses how the rest is used (so the fuzzer explores it too): bits
0-1 compress it (none, gzip, bz2, xz) before writing, so mutations reach the parsers behind a
valid compressed stream, while the seed corpus also holds raw compressed files, whose own
bytes then get mutated; the other bits pick options (small blocks, ``unicode_errors``, a keys
file for ``.npy``).

Allowed outcomes: a result that passes sanity checks (float32, finite, one non-empty key per
row), or the documented :class:`embq.FormatError` (``StoreError`` included) or ``OSError``.
Anything else is a crash: its first reproducer per (exception, place) is saved in
``--findings`` with its traceback; hard crashes and hangs (over ``--timeout`` seconds per
input) are saved by libFuzzer there too. The script prints executions and crashes per target
and exits with status 1 when anything crashed.

Usage::

    python scripts/fuzz_readers.py --runs 1000000 --jobs 2 --findings /tmp/findings
    python scripts/fuzz_readers.py --replay glove /tmp/findings/glove-*.bin

``--runs`` is the total number of executions, split evenly over the targets.
"""

from __future__ import annotations

import argparse
import bz2
import glob
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Fuzz the checkout this script belongs to when its extensions are built in place (a
# developer's tree); a fresh clone has none, and then the installed embq is the one to fuzz.
if glob.glob(os.path.join(ROOT, "embq", "_kernels_parse*.so")) or glob.glob(
        os.path.join(ROOT, "embq", "_kernels_parse*.pyd")):
    sys.path.insert(0, ROOT)
EMBEDDING_TARGETS = ("word2vec", "glove", "vec", "word2vec-binary", "npy")
TARGETS = (*EMBEDDING_TARGETS, "pairs", "analogies", "store")
_ALL_TARGETS = (*TARGETS, "selftest")
_PACK: tuple[Callable[[bytes], bytes], ...] = (
    lambda b: b,
    lambda b: gzip.compress(b, 6, mtime=0),
    lambda b: bz2.compress(b, 1),
    lambda b: lzma.compress(b, preset=0),
)
_NPY_KEYS = "".join(f"k{i}\n" for i in range(6))


# --------------------------------------------------------------------------------------------
# seeds


def _seeds(target: str, work: str) -> list[bytes]:
    """Valid inputs of a target (selector byte first), plain and compressed."""
    rng = np.random.default_rng(0)
    keys = ["the", "a", "café", "日本", "-1.5", "x"]
    X = rng.standard_normal((len(keys), 4)).astype(np.float32)
    if target in ("word2vec", "vec", "glove"):
        sep_end = " \n" if target == "vec" else "\n"
        rows = [k + " " + " ".join(f"{v:.6g}" for v in row) + sep_end for k, row in zip(keys, X)]
        header = "" if target == "glove" else f"{len(keys)} {X.shape[1]}\n"
        files = [(header + "".join(rows)).encode(), (header + rows[0]).encode()]
    elif target == "word2vec-binary":
        body = b"".join(k.encode() + b" " + r.astype("<f4").tobytes() + b"\n"
                        for k, r in zip(keys, X))
        files = [f"{len(keys)} {X.shape[1]}\n".encode() + body]
    elif target == "npy":
        files = []
        for arr in (X, np.asfortranarray(X.astype(np.float64)), X[:, :1].astype(np.float16)):
            buf = io.BytesIO()
            np.save(buf, arr)
            files.append(buf.getvalue())
        # A version 3.0 header, as numpy writes for non-latin-1 headers.
        files.append(files[0][:6] + b"\x03\x00" + len(files[0][10:]).to_bytes(4, "little")
                     + files[0][10:])
    elif target == "pairs":
        with open(os.path.join(ROOT, "data", "sample.pairs.tsv"), "rb") as f:
            files = [b"# c\ncat\tdog\t7.5\n\nA\tb\t1e-3\n", f.read()[:2000]]
    elif target == "analogies":
        with open(os.path.join(ROOT, "data", "sample.analogies.txt"), "rb") as f:
            files = [b": s\na b c d\n# x\n: t\n\xe6\x97\xa5 b c d\n", f.read()[:2000]]
    elif target == "selftest":
        return [b"\x00boom"]
    else:  # store
        import embq

        path = os.path.join(work, "seed.embq")
        embq.save(path, X, keys, overwrite=True)
        with open(path, "rb") as f:
            files = [f.read()]
        os.remove(path)
        return [b"\x00" + data for data in files]
    out = []
    for data in files:
        out.append(b"\x00" + data)
        for c in (1, 2, 3):
            out.append(bytes([c]) + data)  # compressed by the target
            out.append(b"\x00" + _PACK[c](data))  # compressed bytes to mutate
    return out


# --------------------------------------------------------------------------------------------
# targets


class WrongAnswer(AssertionError):
    """A reader returned a result that breaks its contract (no exception was raised)."""


def _check(keys, vectors: np.ndarray) -> None:
    if vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[1] < 1:
        raise WrongAnswer(f"vectors of dtype {vectors.dtype}, shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise WrongAnswer("non-finite values returned")
    if keys is not None:
        if len(keys) != len(vectors):
            raise WrongAnswer(f"{len(keys)} keys for {len(vectors)} rows")
        if not all(isinstance(k, str) and k for k in keys):
            raise WrongAnswer("an empty or non-str key")


def _write(work: str, name: str, data: bytes) -> str:
    path = os.path.join(work, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _embedding(fmt: str) -> Callable[[bytes, str], None]:
    forced = {"vec": "word2vec"}.get(fmt, fmt)

    def run(data: bytes, work: str) -> None:
        from embq._readers import load_embeddings

        sel = data[0] if data else 0
        path = _write(work, "in", _PACK[sel & 3](data[1:]))
        options = {"block_rows": 2 if sel & 4 else None,
                   "unicode_errors": "replace" if sel & 8 else "strict"}
        if fmt == "npy" and sel & 16:
            options["keys_path"] = _write(work, "keys", _NPY_KEYS.encode())
        for fmt_arg in (None, forced):
            _check(*load_embeddings(path, format=fmt_arg, **options))

    return run


def _pairs(data: bytes, work: str) -> None:
    from embq._evaluate import read_word_pairs

    sel = data[0] if data else 0
    path = _write(work, "in", _PACK[sel & 3](data[1:]))
    w1, w2, scores, lines = read_word_pairs(path, encoding="latin-1" if sel & 4 else "utf8")
    if not (len(w1) == len(w2) == len(scores) == len(lines) > 0):
        raise WrongAnswer("pair lists of different lengths")
    if not np.isfinite(scores).all() or not all(w1) or not all(w2):
        raise WrongAnswer("a non-finite score or an empty word")


def _analogies(data: bytes, work: str) -> None:
    from embq._evaluate import read_analogies

    sel = data[0] if data else 0
    path = _write(work, "in", _PACK[sel & 3](data[1:]))
    sections = read_analogies(path, encoding="latin-1" if sel & 4 else "utf8")
    if not sections or not any(words for _, words, _ in sections):
        raise WrongAnswer("no questions returned without an error")
    for _, words, _ in sections:
        if len(words) % 4 or not all(words):
            raise WrongAnswer("a question that is not four non-empty words")


def _store(data: bytes, work: str) -> None:
    import embq

    path = _write(work, "in.embq", data[1:])
    with embq.open(path) as store:
        n = len(store)
        rows, dim = store.shape
        if rows != n:
            raise WrongAnswer(f"len {n} but shape {store.shape}")
        if not n:
            return
        vector = store.get_vector(0)
        if vector.shape != (dim,):
            raise WrongAnswer(f"get_vector gives shape {vector.shape}")
        store.most_similar(positive=[vector], topn=3)
        keys = store.index_to_key
        if keys is not None:
            got = list(keys[: min(n, 8)])
            i = store.get_index(got[0])
            if keys[i] != got[0]:
                raise WrongAnswer(f"key {got[0]!r} found at row {i}, which holds {keys[i]!r}")
            store.most_similar(got[0], topn=3)


def _selftest(data: bytes, work: str) -> None:
    if data[1:5] == b"boom":
        raise KeyError("the harness must report this")


def target_function(target: str) -> Callable[[bytes, str], None]:
    if target in EMBEDDING_TARGETS:
        return _embedding(target)
    return {"pairs": _pairs, "analogies": _analogies, "store": _store,
            "selftest": _selftest}[target]


def allowed() -> tuple[type[BaseException], ...]:
    from embq._errors import FormatError

    return (FormatError, OSError)


# --------------------------------------------------------------------------------------------
# one target under atheris (a child process)


def _signature(exc: BaseException) -> str:
    """Exception type and the innermost embq frame: one reproducer is kept per signature."""
    frames = traceback.extract_tb(exc.__traceback__)
    place = next((f"{os.path.basename(f.filename)}:{f.lineno}" for f in reversed(frames)
                  if f"{os.sep}embq{os.sep}" in f.filename), None)
    if place is None and frames:
        place = f"{os.path.basename(frames[-1].filename)}:{frames[-1].lineno}"
    return f"{type(exc).__name__}@{place}"


def run_child(target: str, runs: int, findings: str, work: str, corpus: str, stats: str,
              timeout: int, max_len: int) -> None:
    import atheris

    with atheris.instrument_imports(include=["embq"]):
        import embq._evaluate
        import embq._input
        import embq._readers
        import embq._store  # noqa: F401

    func = target_function(target)
    ok = allowed()
    state = {"runs": 0, "crashes": 0, "signatures": {}}
    last_write = [0.0]

    def save_stats() -> None:
        tmp = stats + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, stats)
        last_write[0] = time.monotonic()

    def one_input(data: bytes) -> None:
        state["runs"] += 1
        try:
            func(data, work)
        except ok:
            pass
        except Exception as exc:  # the finding: anything undocumented
            state["crashes"] += 1
            sig = _signature(exc)
            seen = state["signatures"].setdefault(sig, {"count": 0, "reproducer": None})
            seen["count"] += 1
            if seen["reproducer"] is None:
                name = f"{target}-{hashlib.sha1(data).hexdigest()[:16]}"
                with open(os.path.join(findings, name + ".bin"), "wb") as f:
                    f.write(data)
                with open(os.path.join(findings, name + ".txt"), "w") as f:
                    f.write(f"target {target}, signature {sig}\n")
                    f.write("".join(traceback.format_exception(exc)))
                seen["reproducer"] = os.path.join(findings, name + ".bin")
            save_stats()
        if time.monotonic() - last_write[0] > 2 or state["runs"] >= runs:
            save_stats()

    argv = [sys.argv[0], f"-runs={runs}", f"-timeout={timeout}", f"-max_len={max_len}",
            f"-artifact_prefix={os.path.join(findings, target + '-libfuzzer-')}",
            "-rss_limit_mb=3072", "-print_final_stats=1", corpus]
    atheris.Setup(argv, one_input)
    save_stats()
    atheris.Fuzz()


# --------------------------------------------------------------------------------------------
# the driver


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=100_000,
                   help="executions in all, split over the targets (default 100000)")
    p.add_argument("--targets", default=",".join(TARGETS),
                   help=f"comma-separated, from {', '.join(_ALL_TARGETS)} (default: all but "
                   "selftest)")
    p.add_argument("--jobs", type=int, default=1, help="targets fuzzed at once (default 1)")
    p.add_argument("--findings", default="fuzz-findings",
                   help="directory for reproducers (default ./fuzz-findings)")
    p.add_argument("--timeout", type=int, default=30, help="seconds per input before a hang")
    p.add_argument("--max-len", type=int, default=1 << 16, help="largest input in bytes")
    p.add_argument("--replay", nargs="+", metavar=("TARGET", "FILE"),
                   help="run TARGET on saved inputs, print each outcome, no fuzzing")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    p.add_argument("--stats", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        run_child(args.child, args.runs, args.findings, args.work, args.corpus, args.stats,
                  args.timeout, args.max_len)
        return 0
    if args.replay:
        return replay(args.replay[0], args.replay[1:])
    targets = [t for t in args.targets.split(",") if t]
    bad = [t for t in targets if t not in _ALL_TARGETS]
    if bad or not targets:
        p.error(f"unknown targets {bad}; expected some of {', '.join(_ALL_TARGETS)}")
    if args.runs < len(targets):
        p.error(f"--runs {args.runs} is fewer than one run per target")
    findings = os.path.abspath(args.findings)
    os.makedirs(findings, exist_ok=True)
    base = tempfile.mkdtemp(prefix="embq-fuzz-",
                            dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        return _drive(targets, args, findings, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


_MAX_RESTARTS = 25  # per target, after hard crashes and hangs (libFuzzer stops at each)


def _drive(targets: list[str], args, findings: str, base: str) -> int:
    per_target = args.runs // len(targets)
    pending = list(targets)
    running: dict[str, tuple[subprocess.Popen, str, str]] = {}
    results = {t: {"runs": 0, "crashes": 0, "signatures": {}, "hard": [], "artifacts": [],
                   "seconds": 0.0, "starts": 0} for t in targets}
    started_at: dict[str, float] = {}

    def launch(t: str) -> None:
        r = results[t]
        work = os.path.join(base, t)
        corpus = os.path.join(work, "corpus")
        if not os.path.isdir(corpus):  # the corpus grown so far is kept across restarts
            os.makedirs(corpus)
            for i, seed in enumerate(_seeds(t, work)):
                _write(corpus, f"seed-{i}", seed)
        stats = os.path.join(work, f"stats-{r['starts']}.json")
        log = os.path.join(findings, f"{t}.log" if not r["starts"] else f"{t}.{r['starts']}.log")
        cmd = [sys.executable, os.path.abspath(__file__), "--child", t,
               "--runs", str(per_target - r["runs"]), "--findings", findings, "--work", work,
               "--corpus", corpus, "--stats", stats, "--timeout", str(args.timeout),
               "--max-len", str(args.max_len)]
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        r["starts"] += 1
        running[t] = (proc, stats, log)
        started_at[t] = time.monotonic()
        print(f"{t}: {'started' if r['starts'] == 1 else 'restarted'}, "
              f"{per_target - r['runs']:,} runs to go (log {log})", flush=True)

    while pending or running:
        while pending and len(running) < max(1, args.jobs):
            launch(pending.pop(0))
        time.sleep(1)
        for t, (proc, stats, log) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[t]
            r = results[t]
            _merge(r, proc.returncode, stats, log)
            r["seconds"] += time.monotonic() - started_at[t]
            if proc.returncode != 0 and r["runs"] < per_target and r["starts"] <= _MAX_RESTARTS:
                print(f"{t}: libFuzzer stopped with status {proc.returncode} after "
                      f"{r['runs']:,} runs; artifact {r['artifacts'][-1:] or 'none'}",
                      flush=True)
                pending.insert(0, t)
                continue
            _print_result(t, r)
    total = sum(r["runs"] for r in results.values())
    crashes = sum(r["crashes"] for r in results.values())
    hard = sum(len(r["hard"]) for r in results.values())
    print(f"total: {total:,} executions, {crashes:,} undocumented exceptions, "
          f"{hard} hard crashes or hangs", flush=True)
    return 1 if crashes or hard else 0


def _merge(r: dict, code: int, stats: str, log: str) -> None:
    """Add one child's counts (from its stats file and libFuzzer's log) to ``r``."""
    try:
        with open(stats) as f:
            state = json.load(f)
    except (OSError, ValueError):
        state = {"runs": 0, "crashes": 0, "signatures": {}}
    with open(log, errors="replace") as f:
        text = f.read()
    counts = [int(a or b) for a, b in
              re.findall(r"Done (\d+) runs in|number_of_executed_units: (\d+)", text)]
    r["runs"] += max([state["runs"], *counts])
    r["crashes"] += state["crashes"]
    for sig, seen in state["signatures"].items():
        old = r["signatures"].setdefault(sig, {"count": 0, "reproducer": seen["reproducer"]})
        old["count"] += seen["count"]
    artifacts = re.findall(r"Test unit written to (\S+)", text)
    r["artifacts"] += artifacts
    if code != 0:
        r["hard"].append((code, artifacts[-1] if artifacts else None))


def _print_result(target: str, r: dict) -> None:
    print(f"{target}: {r['runs']:,} executions in {r['seconds']:.0f} s, "
          f"{r['crashes']:,} undocumented exceptions, {len(r['hard'])} hard crashes or hangs",
          flush=True)
    for sig, seen in r["signatures"].items():
        print(f"  {sig}: {seen['count']:,} times, reproducer {seen['reproducer']}", flush=True)
    for code, artifact in r["hard"]:
        print(f"  libFuzzer status {code} (crash, hang or memory limit): {artifact}", flush=True)


def replay(target: str, files: list[str]) -> int:
    if target not in _ALL_TARGETS:
        print(f"unknown target {target!r}; expected one of {', '.join(_ALL_TARGETS)}")
        return 2
    func = target_function(target)
    ok = allowed()
    failed = 0
    work = tempfile.mkdtemp(prefix="embq-replay-")
    try:
        for name in files:
            with open(name, "rb") as f:
                data = f.read()
            try:
                func(data, work)
            except ok as exc:
                print(f"{name}: documented {type(exc).__name__}: {exc}")
            except Exception:
                failed += 1
                print(f"{name}: CRASH")
                traceback.print_exc()
            else:
                print(f"{name}: read fine")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
