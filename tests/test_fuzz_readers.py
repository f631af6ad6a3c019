"""Fuzz tests: every reader on hostile bytes.

hypothesis mutates valid files of each kind (word2vec text, GloVe, fastText ``.vec``, word2vec
binary, ``.npy``, word-pair and analogy files) with bit flips, truncations, deletions,
duplications and inserted bytes (random bytes, NUL runs, line breaks, lines of 100,000
bytes, huge and non-finite numbers), and compresses them with gzip, bz2 or xz before or after
the damage. The only outcomes allowed are a result that keeps the reader's contract (float32,
finite, one non-empty ``str`` key per row) or the errors ``open_embeddings`` documents,
:class:`FormatError` and ``OSError``; never another exception, never a hang (a watchdog ends
the run with a traceback after two minutes). An unmutated file must be read exactly.

Runs are derandomized and use no example database, so CI sees the same examples every time;
``scripts/fuzz_readers.py`` is the coverage-guided, open-ended counterpart.
"""

from __future__ import annotations

import bz2
import faulthandler
import gzip
import io
import lzma
import os
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embq import _evaluate as ev
from embq._errors import FormatError
from embq._readers import detect_format, load_embeddings, open_embeddings

ALLOWED = (FormatError, OSError)
SETTINGS = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PACK = {None: lambda b: b, "gzip": lambda b: gzip.compress(b, mtime=0),
        "bz2": lambda b: bz2.compress(b, 1), "xz": lzma.compress}

KEYS = ["the", "café", "日本", "-1.5", "x"]
X = np.random.default_rng(3).standard_normal((len(KEYS), 4)).astype(np.float32)


def _text(header: bool, trailing: str = "") -> bytes:
    rows = [k + " " + " ".join(repr(float(v)) for v in row) + trailing + "\n"
            for k, row in zip(KEYS, X)]
    return ((f"{len(KEYS)} {X.shape[1]}\n" if header else "") + "".join(rows)).encode()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


# (bytes, format to force, keys read back)
EMBEDDINGS = {
    "word2vec": (_text(True), "word2vec", KEYS),
    "glove": (_text(False), "glove", KEYS),
    "vec": (_text(True, " "), "word2vec", KEYS),  # fastText ends rows with a space
    "word2vec-binary": (f"{len(KEYS)} {X.shape[1]}\n".encode() + b"".join(
        k.encode() + b" " + row.astype("<f4").tobytes() + b"\n" for k, row in zip(KEYS, X)),
        "word2vec-binary", KEYS),
    "npy": (_npy(X), "npy", None),
    "npy-fortran-f8": (_npy(np.asfortranarray(X.astype(np.float64))), "npy", None),
}
PAIRS = b"# comment\ncat\tdog\t7.5\nsun\tmoon\t3\n\nA\tb\t-1e-3\n"
QUESTIONS = b": capitals\nathens greece paris france\n# c\n: other\n\xe6\x97\xa5 b c d\n"

INSERTS = st.one_of(
    st.binary(min_size=1, max_size=12),
    st.sampled_from([b"\0", b"\0" * 300, b"\n", b"\r\n", b" ", b"\t", b"\n\n\n", b"\xef\xbb\xbf",
                     b"1e999", b"-1e999", b"nan", b"inf", b"9" * 400, b"3.5e38", b"1e-50",
                     b"0x1p3", b"99999999999999999999", b"-5", b"0", b"1048577",
                     b"\xff\xfe", b"\x93NUMPY", b"BZh91AY&SY", b"\x1f\x8b\x08",
                     b"(" * 200, b"{'descr': '<f4'}"]),
    st.integers(1, 100_000).map(lambda n: b"x" * n),  # a long line
    st.integers(1, 50_000).map(lambda n: b" 1" * n),  # a long row of values
)
OPS = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("insert"), st.floats(0, 1), INSERTS),
    st.tuples(st.just("replace"), st.floats(0, 1), INSERTS),
    st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 64)),
    st.tuples(st.just("duplicate"), st.floats(0, 1), st.integers(1, 64)),
)


def mutate(data: bytes, ops) -> bytes:
    out = bytearray(data)
    for op in ops:
        at = min(int(op[1] * len(out)), max(len(out) - 1, 0))
        if op[0] == "flip" and out:
            out[at] ^= 1 << op[2]
        elif op[0] == "truncate":
            del out[at:]
        elif op[0] == "insert":
            out[at:at] = op[2]
        elif op[0] == "replace":
            out[at : at + len(op[2])] = op[2]
        elif op[0] == "delete":
            del out[at : at + op[2]]
        elif op[0] == "duplicate":
            out[at:at] = out[at : at + op[2]]
    return bytes(out)


@st.composite
def hostile(draw, base: bytes) -> tuple[bytes, bool]:
    """``(file bytes, intact)``: ``base`` damaged and maybe compressed (before or after)."""
    ops = draw(st.lists(OPS, max_size=4))
    comp = draw(st.sampled_from(list(PACK)))
    if draw(st.booleans()):  # damage the compressed bytes themselves
        return mutate(PACK[comp](base), ops), not ops
    return PACK[comp](mutate(base, ops)), not ops


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="embq-fuzz-") as d:
        yield d


@pytest.fixture(autouse=True)
def watchdog():
    # A hang would otherwise stall CI silently: dump every thread and exit instead.
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def write(workdir: str, data: bytes) -> str:
    path = os.path.join(workdir, "input")
    with open(path, "wb") as f:
        f.write(data)
    return path


def check_embeddings(keys, vectors: np.ndarray, expected_keys) -> None:
    assert vectors.dtype == np.float32 and vectors.ndim == 2 and vectors.shape[1] >= 1
    assert np.isfinite(vectors).all()
    if expected_keys is None:
        assert keys is None
    else:
        assert len(keys) == len(vectors)
        assert all(isinstance(k, str) and k for k in keys)


def outcome(fn, *args, **kw):
    """The result of ``fn``, or None when it raised a documented error."""
    try:
        return fn(*args, **kw)
    except ALLOWED:
        return None


@pytest.mark.parametrize("name", list(EMBEDDINGS))
@SETTINGS
@given(data=st.data())
def test_embedding_readers_survive_hostile_files(workdir, name, data):
    base, forced, keys = EMBEDDINGS[name]
    content, intact = data.draw(hostile(base))
    path = write(workdir, content)
    block_rows = data.draw(st.sampled_from([None, 1, 2]))
    for fmt in (None, forced):
        got = outcome(load_embeddings, path, format=fmt, block_rows=block_rows,
                      unicode_errors=data.draw(st.sampled_from(["strict", "replace"])))
        if intact:
            assert got is not None
            assert got[0] == keys and np.array_equal(got[1], X)
        if got is not None:
            check_embeddings(*got, keys)
    fmt = outcome(detect_format, path)
    assert fmt is None or fmt in ("word2vec", "glove", "word2vec-binary", "npy")
    # Stopping early (a limit, or closing mid-way) is as safe as reading to the end.
    reader = outcome(open_embeddings, path, limit=2, block_rows=1)
    if reader is not None:
        with reader:
            outcome(next, iter(reader), None)


@pytest.mark.parametrize("with_keys", [False, True])
@SETTINGS
@given(data=st.data())
def test_npy_with_a_keys_file_survives_hostile_files(workdir, with_keys, data):
    # The keys file is the hostile one here (and the array, when with_keys is False).
    keys_text = "".join(k + "\n" for k in KEYS).encode()
    if with_keys:
        array, keys_content = _npy(X), data.draw(hostile(keys_text))[0]
    else:
        array, keys_content = data.draw(hostile(_npy(X)))[0], keys_text
    path = write(workdir, array)
    keys_path = os.path.join(workdir, "keys")
    with open(keys_path, "wb") as f:
        f.write(keys_content)
    got = outcome(load_embeddings, path, keys_path=keys_path)
    if got is not None:
        check_embeddings(*got, KEYS)


@SETTINGS
@given(data=st.data())
def test_word_pair_reader_survives_hostile_files(workdir, data):
    content, intact = data.draw(hostile(PAIRS))
    path = write(workdir, content)
    got = outcome(ev.read_word_pairs, path, encoding=data.draw(st.sampled_from(["utf8",
                                                                                "latin-1"])))
    if intact:
        assert got is not None and got[0] == ["cat", "sun", "A"]
    if got is not None:
        w1, w2, scores, lines = got
        assert len(w1) == len(w2) == len(scores) == len(lines) > 0
        assert all(w1) and all(w2) and np.isfinite(scores).all()
        assert scores.dtype == np.float64 and lines.dtype == np.int64


@SETTINGS
@given(data=st.data())
def test_analogy_reader_survives_hostile_files(workdir, data):
    content, intact = data.draw(hostile(QUESTIONS))
    path = write(workdir, content)
    got = outcome(ev.read_analogies, path, encoding=data.draw(st.sampled_from(["utf8",
                                                                               "latin-1"])))
    if intact:
        assert got is not None and [name for name, _, _ in got] == ["capitals", "other"]
    if got is not None:
        assert got and sum(len(words) for _, words, _ in got) > 0
        for section, words, line in got:
            assert isinstance(section, str) and line >= 1
            assert len(words) % 4 == 0 and all(isinstance(w, str) and w for w in words)


def test_the_mutations_reach_every_outcome(workdir):
    # The strategies are not toothless: some damage is refused, some is read.
    refused = read = 0
    for ops in ([("truncate", 0.5)], [("insert", 0.0, b"\0" * 300)], [("flip", 0.9, 0)],
                [("insert", 0.99, b"\n\n")], [("replace", 0.3, b"1e999")]):
        got = outcome(load_embeddings, write(workdir, mutate(EMBEDDINGS["word2vec"][0], ops)))
        refused += got is None
        read += got is not None
    assert refused and read


def test_atheris_fuzzer_counts_runs_and_reports_crashes(tmp_path):
    # scripts/fuzz_readers.py end to end, briefly: a real target runs clean, and the harness's
    # self-test target (whose seed raises KeyError) is reported with its reproducer and exit 1.
    pytest.importorskip("atheris")
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "scripts", "fuzz_readers.py")
    run = subprocess.run([sys.executable, script, "--runs", "40", "--jobs", "2", "--targets",
                          "glove,selftest", "--findings", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    out = run.stdout
    assert run.returncode == 1, out + run.stderr
    assert "glove: 20 executions" in out and "selftest: 20 executions" in out, out
    assert "total: 40 executions, 1 undocumented exceptions, 0 hard crashes" in out, out
    [reproducer] = [f for f in os.listdir(tmp_path) if f.endswith(".bin")]
    assert "KeyError@fuzz_readers.py" in out and reproducer in out
    replay = subprocess.run([sys.executable, script, "--replay", "selftest",
                             str(tmp_path / reproducer)], capture_output=True, text=True,
                            timeout=120)
    assert replay.returncode == 1 and "CRASH" in replay.stdout
