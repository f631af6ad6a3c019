"""Tests for `embq compress` and `embq export` on the command line."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import embq
from embq.cli import main

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(HERE, "data", "sample.w2v.txt")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_compress_sample_summary(tmp_path, capsys):
    out = tmp_path / "s.embq"
    code, stdout, stderr = run(capsys, "compress", SAMPLE, out)
    assert code == 0 and stderr == ""
    line = stdout.strip()
    assert "\n" not in line
    for part in ("3,162 rows x 64", "word2vec", "smaller", " s;", "mean", "max", "relative L2"):
        assert part in line
    with embq.open(str(out)) as st:
        assert "cat" in st and st["cat"].shape == (64,)
    code, stdout, _ = run(capsys, "compress", SAMPLE, out, "--quiet", "--overwrite")
    assert code == 0 and stdout == ""


def test_export_cli(tmp_path, capsys):
    s = tmp_path / "s.embq"
    assert run(capsys, "compress", SAMPLE, s, "-q")[0] == 0
    code, stdout, _ = run(capsys, "export", s, tmp_path / "o.npy", "--format", "npy")
    assert code == 0 and "keys in" in stdout
    code, _, err = run(capsys, "export", s, tmp_path / "o.npy", "--format", "npy")
    assert code == 2 and "already exists" in err and "Traceback" not in err
    code, _, err = run(capsys, "export", tmp_path / "nope.embq", tmp_path / "p.txt",
                       "--format", "glove")
    assert code == 2 and "nope.embq" in err and not (tmp_path / "p.txt").exists()


def flip(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at] ^= 0xFF
    return bytes(b)


BAD = {
    "too_few": ("2 3\na 1 2 3\nb 1 2\n", "line 3", "expected 3 values after the key, found 2"),
    "too_many": ("2 3\na 1 2 3 4\nb 1 2 3\n", "line 2", "found 4"),
    "non_numeric": ("2 3\na 1 2 3\nb 1 two 3\n", "line 3", "'two' is not a number"),
    "nan": ("2 3\na 1 2 3\nb 1 NaN 3\n", "line 3", "not finite"),
    "inf": ("2 3\na inf 2 3\nb 1 2 3\n", "line 2", "not finite"),
    "count_too_big": ("3 3\na 1 2 3\nb 1 2 3\n", "line 4", "--limit 2"),
    "count_too_small": ("1 3\na 1 2 3\nb 1 2 3\n", "line 3", "more rows"),
    "dim_mismatch": ("2 5\na 1 2 3\nb 1 2 3\n", "line 2", "gives dim 5"),
    "empty": ("", "", "empty"),
    "bad_key_bytes": (b"1 2\n\xc3\x28x 1 2\n", "line 2", "not valid utf8"),
    "empty_key": ("a 1 2\n 3 4\n", "line 2", "starts with a space"),
    "binary_cut": (b"2 2\na " + np.ones(2, "<f4").tobytes() + b"\nb " + b"\0\0\0", "byte",
                   "middle of record 2"),
    "duplicate_error": ("2 2\na 1 2\na 3 4\n", "line 3", "first seen on line 2"),
    "fasttext": (b"\xba\x16\x4f\x2f" + b"\0" * 64, "", "export"),
    "comma_on_first_row": ("2 2\nab 1,5 2,5\ncd 3,5 4,5\n", "line 2, byte 7",
                           "value '1,5' is not a number"),
    "word_on_first_row": ("2 1\na null\nbb 2.0\n", "line 2, byte 6", "'null' is not a number"),
    "huge_dim": ("1 99999999999\na 1 2 3\n", "line 1", "at most 1,048,576 values"),
    "huge_dim_binary": (b"1 99999999999\na \x00\x01\x02", "line 1", "at most 1,048,576"),
    "negative_count": ("-3 3\na 1 2 3\nb 1 2 3\n", "line 1", "count -3"),
    "float_header": ("2.0 3\na 1 2 3\nb 1 2 3\n", "line 1", "not an integer"),
    "header_only": ("5 3\n", "line 2", "no complete row"),
    "damaged_gzip": (flip(gzip.compress(b"2 2\na 1 2\nb 3 4\n" * 50), 20), "",
                     "compressed data is damaged near byte"),
    "gzip_trailing_junk": (gzip.compress(b"1 2\na 1 2\n") + b"junk", "",
                           "follows the end of the compressed stream"),
    "binary_dim_mismatch": (b"2 3\na " + np.arange(4, dtype="<f4").tobytes() + b"\nb "
                            + np.arange(4, dtype="<f4").tobytes() + b"\n", "byte",
                            "the header's dim"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exit_2_no_output(tmp_path, capsys, case):
    content, where, what = BAD[case]
    src = tmp_path / "in.vec"
    src.write_bytes(content.encode() if isinstance(content, str) else content)
    out = tmp_path / "out.embq"
    extra = ["--on-duplicate", "error"] if case == "duplicate_error" else []
    code, _, stderr = run(capsys, "compress", src, out, *extra)
    assert code == 2
    assert stderr.startswith("embq compress: error: ") and "Traceback" not in stderr
    assert str(src) in stderr and where in stderr and what in stderr
    assert not out.exists()
    # An existing OUTPUT is left untouched.
    out.write_bytes(b"old")
    code, _, _ = run(capsys, "compress", src, out, "--overwrite", *extra)
    assert code == 2 and out.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["in.vec", "out.embq"]


def test_missing_input_and_output_dir(tmp_path, capsys):
    code, _, err = run(capsys, "compress", tmp_path / "none.txt", tmp_path / "o.embq")
    assert code == 2 and "none.txt" in err and "No such file" in err
    code, _, err = run(capsys, "compress", SAMPLE, tmp_path / "nodir" / "o.embq")
    assert code == 2 and "does not exist" in err
    (tmp_path / "o.embq").write_bytes(b"x")
    code, _, err = run(capsys, "compress", SAMPLE, tmp_path / "o.embq")
    assert code == 2 and "--overwrite" in err and (tmp_path / "o.embq").read_bytes() == b"x"


def test_unreadable_input(tmp_path, capsys, monkeypatch):
    import embq._input as input_layer  # every input file is opened there

    p = tmp_path / "locked.txt"
    p.write_text("1 1\na 1\n")
    if os.geteuid() != 0:  # root reads files without read permission
        p.chmod(0)
        code, _, err = run(capsys, "compress", p, tmp_path / "o.embq")
        assert code == 2 and "locked.txt" in err and "Permission denied" in err
        p.chmod(0o644)

    # The same failure in-process, so that it is tested whoever runs the tests.
    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(input_layer, "open", refuse, raising=False)
    code, _, err = run(capsys, "compress", p, tmp_path / "o.embq")
    assert code == 2 and err == f"embq compress: error: {p}: Permission denied\n"
    assert sorted(os.listdir(tmp_path)) == ["locked.txt"]


def test_read_error_names_the_file(tmp_path, capsys, monkeypatch):
    import embq._input as input_layer  # every input file is opened there

    p = tmp_path / "a.txt"
    p.write_text("1 1\na 1\n")
    real_open = open

    class Failing:
        def __init__(self, f):
            self.f = f

        def read(self, n=-1):
            raise OSError(5, "Input/output error")

        readinto = read

        def close(self):
            self.f.close()

    monkeypatch.setattr(input_layer, "open", lambda *a, **k: Failing(real_open(*a, **k)),
                        raising=False)
    code, _, err = run(capsys, "compress", p, tmp_path / "o.embq")
    assert code == 2 and err == f"embq compress: error: {p}: Input/output error\n"


def test_output_is_a_directory(tmp_path, capsys):
    (tmp_path / "d.h5").mkdir()
    code, _, err = run(capsys, "compress", SAMPLE, tmp_path / "d.h5", "--overwrite")
    assert code == 2 and "d.h5: is a directory" in err and "--overwrite" not in err
    s = tmp_path / "s.h5"
    assert run(capsys, "compress", SAMPLE, s, "-q")[0] == 0
    code, _, err = run(capsys, "export", s, tmp_path / "d.h5", "--format", "glove")
    assert code == 2 and "is a directory" in err and "--overwrite" not in err
    assert sorted(os.listdir(tmp_path)) == ["d.h5", "s.h5"]


def test_unreadable_input_is_a_directory(tmp_path, capsys):
    code, _, err = run(capsys, "compress", tmp_path, tmp_path / "o.embq")
    assert code == 2 and str(tmp_path) in err


def test_duplicates_warn_and_quiet(tmp_path, capsys):
    src = tmp_path / "d.txt"
    src.write_text("3 2\na 1 2\na 3 4\nb 5 6\n")
    code, out, err = run(capsys, "compress", src, tmp_path / "o.embq")
    assert code == 0 and "embq compress: warning: 1 duplicate key" in err and "'a'" in err
    assert "2 rows x 2" in out
    code, out, err = run(capsys, "compress", src, tmp_path / "o.embq", "--overwrite", "-q")
    assert code == 0 and out == "" and err == ""


def test_unicode_options_limit_format(tmp_path, capsys):
    src = tmp_path / "u.txt"
    src.write_bytes(b"2 2\nab\xff 1 2\ncd 3 4\n")
    code, _, err = run(capsys, "compress", src, tmp_path / "o.embq")
    assert code == 2 and "line 2" in err and "byte 6" in err
    assert run(capsys, "compress", src, tmp_path / "o.embq", "--unicode-errors", "replace")[0] == 0
    with embq.open(str(tmp_path / "o.embq")) as st:
        assert st.index_to_key[0] == "ab\ufffd"
    assert run(capsys, "compress", src, tmp_path / "l.embq", "--unicode-errors", "ignore",
               "--limit", "1", "--format", "word2vec", "--normalize", "--block-rows", "1")[0] == 0
    with embq.open(str(tmp_path / "l.embq")) as st:
        assert len(st) == 1 and abs(np.linalg.norm(st[0]) - 1) < 0.01


def test_progress_flag_writes_to_stderr(tmp_path, capsys):
    code, out, err = run(capsys, "compress", SAMPLE, tmp_path / "p.embq", "--progress")
    assert code == 0 and "rows" in out
    assert "B/s" in err or "%" in err


def test_subprocess_end_to_end(tmp_path, run_python):
    r = run_python("-m", "embq", "compress", SAMPLE, str(tmp_path / "s.embq"))
    assert r.returncode == 0 and "3,162 rows" in r.stdout and r.stderr == ""
    bad = tmp_path / "bad.txt"
    bad.write_text("2 2\na 1 2\nb 1\n")
    r = run_python("-m", "embq", "compress", str(bad), str(tmp_path / "b.embq"))
    assert r.returncode == 2 and "line 3: expected 2 values after the key, found 1" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "b.embq").exists()
    r = run_python("-m", "embq", "export", str(tmp_path / "s.embq"), str(tmp_path / "s.vec"),
                   "--format", "word2vec")
    assert r.returncode == 0 and (tmp_path / "s.vec").read_text().startswith("3162 64\n")


def test_pipe_input(tmp_path):
    with open(SAMPLE, "rb") as f:
        r = subprocess.run([sys.executable, "-m", "embq", "compress", "/dev/stdin",
                            str(tmp_path / "p.embq")], stdin=f, capture_output=True, text=True,
                           cwd=tmp_path, env=_env(), timeout=60, check=False)
    assert r.returncode == 0 and "3,162 rows x 64" in r.stdout, r.stderr
    gz = tmp_path / "s.txt.gz"
    gz.write_bytes(gzip.compress(open(SAMPLE, "rb").read()))
    with open(gz, "rb") as f:
        r = subprocess.run([sys.executable, "-m", "embq", "compress", "-",
                            str(tmp_path / "d.embq")], stdin=f, capture_output=True, text=True,
                           cwd=tmp_path, env=_env(), timeout=60, check=False)
    assert r.returncode == 0 and f"from word2vec {gz.stat().st_size / 1000:.1f} KB" in r.stdout
    with embq.open(str(tmp_path / "p.embq")) as a, embq.open(str(tmp_path / "d.embq")) as b:
        assert np.array_equal(np.asarray(a.codes), np.asarray(b.codes))
        assert b.attrs["source_path"] == "<stdin>"


def _env() -> dict:
    # The child imports the embq under test (see the run_python fixture in conftest.py).
    root = os.path.dirname(os.path.dirname(os.path.abspath(embq.__file__)))
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_terminating_signal_mid_compress_leaves_nothing(tmp_path, signame):
    # The input is a pipe that stops delivering after the first rows, so the command is
    # surely in the middle of its work (temporary spool directory created) when the signal
    # comes, however fast or slow the machine is.
    sig = getattr(signal, signame)
    out = tmp_path / "o.embq"
    proc = subprocess.Popen([sys.executable, "-m", "embq", "compress", "-", str(out)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path, env=_env())
    try:
        row = b" ".join([b"0.25"] * 8)
        proc.stdin.write(b"100000 8\n" + b"".join(b"k%d %s\n" % (i, row)
                                                 for i in range(20000)))
        proc.stdin.flush()
        deadline = time.monotonic() + 30
        while not [f for f in os.listdir(tmp_path) if "embq-tmp" in f]:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.005)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig
    assert err.decode() == f"embq: terminated by {signame}\n"
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="needs SIGTERM")
def test_sigterm_mid_export_leaves_no_temporary_file(tmp_path, capsys, monkeypatch):
    import embq._store

    s = tmp_path / "s.embq"
    assert run(capsys, "compress", SAMPLE, s, "-q")[0] == 0
    real = embq._store.Store._drop_resident_pages
    blocks = []

    def kill_after_first_block(self):
        blocks.append(1)
        if len(blocks) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # handled at the next bytecode
        return real(self)

    monkeypatch.setattr(embq._store.Store, "_drop_resident_pages", kill_after_first_block)
    before = signal.getsignal(signal.SIGTERM)
    code, _, err = run(capsys, "export", s, tmp_path / "t.txt", "--format", "word2vec")
    assert code == 128 + signal.SIGTERM and err == "embq: terminated by SIGTERM\n"
    assert len(blocks) == 1  # stopped in the middle, not at the end
    assert sorted(os.listdir(tmp_path)) == ["s.embq"]
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored after main()
