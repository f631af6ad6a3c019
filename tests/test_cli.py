"""The ``embq`` command frame and ``embq info``: exit codes, messages, no tracebacks."""

from __future__ import annotations

import json

import numpy as np
import pytest

import embq
from embq.cli import main


@pytest.fixture()
def store_path(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "s.h5"
    embq.save(path, rng.standard_normal((5, 4)).astype(np.float32), ["a", "b", "c", "d", "é"],
              attrs={"source_path": "x.txt", "source_format": "word2vec", "source_size": 1234,
                     "error_mean_abs_over_scale": 0.25, "error_max_abs_over_scale": 0.5})
    return path


def test_info_prints_shape_and_attributes(store_path, capsys):
    assert main(["info", str(store_path)]) == 0
    out = capsys.readouterr().out
    assert "5 rows x 4 (with keys)" in out
    assert "format 1, uint8-per-row-symmetric" in out
    assert "source       x.txt (word2vec, 1.2 KB)" in out
    assert "mean 0.2500, max 0.5000" in out
    assert "embq_version" in out


def test_info_json(store_path, capsys):
    assert main(["info", str(store_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["n_rows"] == 5 and data["dim"] == 4 and data["format"] == "embq"


def test_info_config_names_kernels_openmp_and_threads(capsys):
    assert main(["info", "--config"]) == 0
    out = capsys.readouterr().out
    assert "openmp:" in out and "threads:" in out
    for family in ("quantize", "search_dot", "search_select", "parse", "store", "eval"):
        assert f"    {family}: " in out


def test_info_config_json_matches_show_config():
    from embq._config import config

    cfg = config()
    assert set(cfg["kernels"]) == {"quantize", "search_dot", "search_select", "parse", "store",
                                  "eval"}
    assert not any(str(v).startswith("unavailable") for v in cfg["kernels"].values())
    assert cfg["threads"] >= 1


def test_info_without_store_or_config_is_an_error(capsys):
    assert main(["info"]) == 2
    assert "give a STORE path" in capsys.readouterr().err


def test_info_on_a_file_that_is_not_a_store(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("embq info: error: ") and str(bad) in err
    assert "Traceback" not in err


def test_info_on_a_missing_file(tmp_path, capsys):
    missing = tmp_path / "nope.h5"
    assert main(["info", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err


def test_unknown_command_exits_2_from_argparse(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2


def test_ctrl_c_is_exit_130_without_traceback(monkeypatch, capsys):
    import embq._cmd_info as info

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(info, "run", interrupted)
    assert main(["info", "--config"]) == 130
    assert capsys.readouterr().err.strip() == "embq: interrupted"


def test_every_subcommand_is_registered():
    from embq.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == {"compress", "export", "info", "query", "evaluate", "shard", "merge"}


def test_module_entry_point_runs_in_a_subprocess(store_path, run_python):
    ok = run_python("-m", "embq", "info", str(store_path))
    assert ok.returncode == 0 and "5 rows x 4" in ok.stdout
    bad = run_python("-m", "embq", "info", str(store_path) + ".missing")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("embq info: error:")


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_termination_signals_are_a_clean_exit(monkeypatch, capsys, signame):
    import os
    import signal

    import embq._cmd_info as info

    if not hasattr(signal, signame):
        pytest.skip(f"no {signame} here")
    sig = getattr(signal, signame)
    cleaned = []

    def killed(args):
        try:
            os.kill(os.getpid(), sig)
            for _ in range(10_000_000):  # the handler raises at the next bytecode
                pass
            raise AssertionError("the signal did not interrupt")
        finally:
            cleaned.append(True)  # cleanup code runs, as the writers' aborts do

    monkeypatch.setattr(info, "run", killed)
    before = signal.getsignal(sig)
    assert main(["info", "--config"]) == 128 + sig
    assert capsys.readouterr().err == f"embq: terminated by {signame}\n"
    assert cleaned == [True]
    assert signal.getsignal(sig) == before and signal.getsignal(signal.SIGINT) is not \
        signal.SIG_IGN


def test_closed_stdout_pipe_is_not_an_error(tmp_path):
    """`embq query ... | head -1`: the reader goes away early; exit 0, no noise."""
    import os
    import subprocess
    import sys

    x = np.random.default_rng(0).standard_normal((20000, 8)).astype(np.float32)
    store = tmp_path / "s.h5"
    embq.save(store, x, [f"k{i}" for i in range(len(x))])
    root = os.path.dirname(os.path.dirname(os.path.abspath(embq.__file__)))
    env = {**os.environ, "PYTHONPATH": root}
    cmd = [sys.executable, "-m", "embq", "query", str(store), "k1", "-k", "19999"]
    proc = subprocess.Popen(cmd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=env)
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(120) == 0, err
    assert err == ""
